//! The schema: `sqlx::migrate!` applies what `migrations/` has and the database lacks, at
//! start-up, each migration in its own transaction. Never edit an applied migration: evolve
//! the schema with a new file.
//!
//! Databases made by the builds that used a hand-written runner counted their migrations in
//! `PRAGMA user_version` instead of sqlx's `_sqlx_migrations` table; `adopt_user_version`
//! records those migrations in sqlx's table as applied (sqlx's own `skip`, with the checksums
//! of the same files), so sqlx goes on from there and nothing is applied twice or lost.
//! (sqlx's macros cannot describe `PRAGMA user_version`, so the adoption recognises those
//! databases by their tables instead.)

use sqlx::migrate::Migrator;
use sqlx::SqliteConnection;

use super::StoreResult;

static MIGRATOR: Migrator = sqlx::migrate!();

/// Brings the database to the current schema.
pub(super) async fn migrate(connection: &mut SqliteConnection) -> StoreResult<()> {
    adopt_user_version(connection).await?;
    MIGRATOR.run(&mut *connection).await?;
    Ok(())
}

/// The last migration of the builds that counted migrations in `PRAGMA user_version` (their
/// runner knew `0001_initial` only).
const LAST_USER_VERSION_MIGRATION: i64 = 1;

/// Records in `_sqlx_migrations` the migrations that a database of those builds applied: one
/// with the service's tables but no sqlx table was made by them, at their last migration.
async fn adopt_user_version(connection: &mut SqliteConnection) -> StoreResult<()> {
    let tables = sqlx::query!(
        r#"SELECT EXISTS (SELECT 1 FROM sqlite_master
                          WHERE type = 'table' AND name = '_sqlx_migrations') AS "sqlx!: bool",
                  EXISTS (SELECT 1 FROM sqlite_master
                          WHERE type = 'table' AND name = 'jobs') AS "service!: bool""#
    )
    .fetch_one(&mut *connection)
    .await?;
    if tables.sqlx || !tables.service {
        return Ok(());
    }
    tracing::info!("adopting a database whose migrations were counted in PRAGMA user_version");
    MIGRATOR
        .skip(&mut *connection, Some(LAST_USER_VERSION_MIGRATION))
        .await?;
    Ok(())
}
