//! Opening the database: the `sqlite://PATH` URL, the folder, the three connections and their
//! pragmas (WAL, the chosen durability, foreign keys, a busy timeout), and closing it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, SqliteConnection};
use tokio::sync::Mutex;

use super::{migrations, Store, StoreError, StoreResult};

/// How hard SQLite works to keep a commit: `Normal` survives a crash of the process (kill -9),
/// `Full` also survives a crash of the machine, at the price of an fsync per commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Durability {
    Normal,
    Full,
}

/// How long a statement waits for another connection's write lock before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The file a `sqlite://PATH` (or `sqlite:PATH`) URL names; options after `?` are ignored.
fn database_file(url: &str) -> StoreResult<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| StoreError::NotAFileUrl(url.to_string()))?;
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Err(StoreError::NotAFileUrl(url.to_string()));
    }
    Ok(PathBuf::from(path))
}

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

impl Store {
    /// Opens (creating when missing) the database at `url` (`sqlite://PATH`) and applies
    /// pending migrations.
    pub async fn open(url: &str, durability: Durability) -> StoreResult<Store> {
        let path = database_file(url)?;
        if let Some(folder) = path.parent() {
            if !folder.as_os_str().is_empty() && !folder.exists() {
                std::fs::create_dir_all(folder).map_err(|source| StoreError::CreateFolder {
                    path: folder.display().to_string(),
                    source,
                })?;
            }
        }
        let mut writer = connect(&path, durability).await?;
        migrations::migrate(&mut writer).await?;
        let reader = connect(&path, durability).await?;
        let listings = connect(&path, durability).await?;
        Ok(Store {
            writer: Arc::new(Mutex::new(Some(writer))),
            reader: Arc::new(Mutex::new(Some(reader))),
            listings: Arc::new(Mutex::new(Some(listings))),
            waiting_inserts: Arc::default(),
            path,
        })
    }

    /// Makes the database file (and its WAL files) readable by the server's user only, and
    /// its folder too unless it is a shared one (sticky, like /tmp): children that run under
    /// another uid can then neither read nor list it.
    pub fn restrict_file_access(&self) {
        use std::os::unix::fs::PermissionsExt;
        let set = |path: &Path, mode: u32| {
            if path.exists() {
                if let Err(err) =
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                {
                    tracing::warn!("cannot restrict access to {}: {err}", path.display());
                }
            }
        };
        let file = self.path.as_os_str().to_string_lossy().into_owned();
        for suffix in ["", "-wal", "-shm"] {
            set(Path::new(&format!("{file}{suffix}")), 0o600);
        }
        if let Some(folder) = self
            .path
            .parent()
            .filter(|folder| !folder.as_os_str().is_empty())
        {
            let sticky = std::fs::metadata(folder)
                .map(|meta| meta.permissions().mode() & 0o1000 != 0)
                .unwrap_or(true);
            if !sticky {
                set(folder, 0o700);
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sqlite_file_urls_name_a_database() {
        assert_eq!(
            database_file("sqlite://data/x.db?mode=rwc").expect("a file"),
            PathBuf::from("data/x.db")
        );
        assert_eq!(
            database_file("sqlite:///srv/x.db").expect("a file"),
            PathBuf::from("/srv/x.db")
        );
        assert!(database_file("sqlite::memory:").is_err());
        assert!(database_file("postgres://host/db").is_err());
    }
}
