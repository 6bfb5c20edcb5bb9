//! Opening the database: its folder, the three connections and their
//! pragmas (WAL, the chosen durability, foreign keys, a busy timeout), and closing it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, SqliteConnection};
use tokio::sync::Mutex;

use super::{migrations, SqliteStore, StoreError, StoreResult};

/// How hard SQLite works to keep a commit: `Normal` survives a crash of the process (kill -9),
/// `Full` also survives a crash of the machine, at the price of an fsync per commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Durability {
    Normal,
    Full,
}

/// How long a statement waits for another connection's write lock before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

async fn connect(path: &Path, durability: Durability) -> StoreResult<SqliteConnection> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(match durability {
            Durability::Normal => SqliteSynchronous::Normal,
            Durability::Full => SqliteSynchronous::Full,
        })
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT)
        .log_statements(tracing::log::LevelFilter::Trace);
    Ok(options.connect().await?)
}

impl SqliteStore {
    /// Opens (creating when missing) the SQLite file `path` (`instance::database_file` reads
    /// it from `DATABASE_URL`) and applies pending migrations.
    pub async fn open(path: &Path, durability: Durability) -> StoreResult<SqliteStore> {
        if let Some(folder) = path.parent() {
            if !folder.as_os_str().is_empty() && !folder.exists() {
                std::fs::create_dir_all(folder).map_err(|source| StoreError::CreateFolder {
                    path: folder.display().to_string(),
                    source,
                })?;
            }
        }
        let mut writer = connect(path, durability).await?;
        migrations::migrate(&mut writer).await?;
        let reader = connect(path, durability).await?;
        let listings = connect(path, durability).await?;
        Ok(SqliteStore {
            writer: Arc::new(Mutex::new(Some(writer))),
            reader: Arc::new(Mutex::new(Some(reader))),
            listings: Arc::new(Mutex::new(Some(listings))),
            waiting_inserts: Arc::default(),
        })
    }

    /// Closes the three connections (at shutdown, once the worker is done). Closing the
    /// last one moves the WAL's content into the database file, so the file alone holds
    /// everything. Every operation after this answers `StoreError::Closed`.
    pub async fn close(&self) {
        for connection in [&self.listings, &self.reader, &self.writer] {
            let taken = connection.lock().await.take();
            if let Some(connection) = taken {
                if let Err(err) = connection.close().await {
                    tracing::warn!("cannot close the database cleanly: {err}");
                }
            }
        }
    }
}
