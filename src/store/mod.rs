//! The durable state of the service: jobs, sessions and their history in one SQLite file.
//!
//! Every SQL statement of the crate lives in this module; handlers and the worker call the
//! named operations below (`enqueue_job`, `claim_next_jobs`, `finish_jobs`, …).
//! Each operation is one statement or one transaction, so a crash at any point leaves either
//! the old state or the new one, never half of a change. This module never runs code and never
//! decides policy (limits, who may do what): callers pass those in.

mod records;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use rusqlite::types::{FromSql, Value};
use rusqlite::{params, Connection, OptionalExtension, Row, RowIndex};
use tokio::sync::Mutex;

use crate::domain::{CodeId, JobId, JobStatus, Language, SessionId};
pub use records::{
    CellRecord, ClaimedJob, JobOutcome, JobRecord, NewJob, QueueCounts, SessionSummary, SessionView,
};

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("database migration {name} failed: {source}")]
    Migration {
        name: &'static str,
        source: rusqlite::Error,
    },
    #[error(
        "the database was written by a newer version of this service (schema {found}, this \
         version knows {known}); run that version or restore a backup"
    )]
    NewerSchema { found: i64, known: usize },
    #[error("DATABASE_URL '{0}' is not a SQLite file URL: use sqlite://PATH (e.g. sqlite://data/metta-learner.db)")]
    NotAFileUrl(String),
    #[error("cannot create the database folder {path}: {source}")]
    CreateFolder {
        path: String,
        source: std::io::Error,
    },
    #[error("the database holds a value this version cannot read: {0}")]
    Corrupt(String),
    /// A database error met by a group commit, reported to each submission in the group.
    #[error("database error: {0}")]
    Shared(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The schema's migrations, in order; `PRAGMA user_version` counts those applied. Never edit
/// an applied one: evolve the schema with a new file.
const MIGRATIONS: &[(&str, &str)] = &[(
    "0001_initial",
    include_str!("../../migrations/0001_initial.sql"),
)];

/// What `enqueue_job` did.
#[derive(Debug)]
pub enum EnqueueOutcome {
    /// The job is stored and queued.
    Accepted(JobRecord),
    /// A job with the same idempotency key exists; it is returned instead of a new one.
    Duplicate(JobRecord),
    /// The queue holds `max_queued` jobs already; nothing was stored.
    QueueFull,
}

/// What `cancel_job` did.
#[derive(Debug)]
pub enum CancelOutcome {
    Cancelled(JobRecord),
    /// The job already left the queue; its current record is returned.
    NotQueued(JobRecord),
    NotFound,
}

/// What a history cut (reset-to, remove) did.
#[derive(Debug, PartialEq, Eq)]
pub enum CutOutcome {
    /// The target and every cell after it are gone; this many cells remain.
    Cut { remaining: i64 },
    /// The history is empty: nothing to cut, which the legacy API answers with success.
    EmptyHistory,
    /// The history has cells but none with that codeId.
    NotFound,
}

/// Start-up recovery of jobs that were running when the previous process died.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    pub requeued: u64,
    pub failed: u64,
}

/// How hard SQLite works to keep a commit: `Normal` survives a crash of the process (kill -9),
/// `Full` also survives a crash of the machine, at the price of an fsync per commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Durability {
    Normal,
    Full,
}

/// The handle to the database; cheap to clone.
///
/// Two connections to one SQLite file in WAL mode: `writer` for every change, `reader` for
/// reads (a long read never holds up a write). Each operation runs on the calling task, under
/// the connection's async lock: SQLite's work per operation is tens of microseconds, less
/// than handing it to another thread and waking the caller again (which is what a
/// thread-per-connection driver does for every statement; see docs/PERFORMANCE.md).
#[derive(Debug, Clone)]
pub struct Store {
    writer: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
    waiting_inserts: Arc<WaitingInserts>,
    /// The database file (for `restrict_file_access`).
    path: PathBuf,
}

/// The current time as stored: RFC 3339 in UTC with milliseconds, so text order is time order.
pub fn now_timestamp() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A statement built once from `JOB_COLUMNS` (the hot ones run for every job; building the
/// text each time would cost an allocation and a longer cache lookup).
macro_rules! job_statement {
    ($name:ident, $($format:tt)+) => {
        static $name: std::sync::LazyLock<String> =
            std::sync::LazyLock::new(|| format!($($format)+));
    };
}

const JOB_COLUMNS: &str = "seq, id, kind, language, session_id, code_id, code, stdin, timeout_ms, \
     status, attempts, result, results_json, stdout, stderr, output_truncated, error, \
     error_kind, idempotency_key, created_at, started_at, finished_at, duration_ms";

/// The file a `sqlite://PATH` (or `sqlite:PATH`) URL names; sqlx-style options after `?` are
/// ignored.
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

fn open_connection(path: &Path, durability: Durability) -> StoreResult<Connection> {
    let connection = Connection::open(path)?;
    connection.busy_timeout(Duration::from_secs(10))?;
    connection.execute_batch(match durability {
        Durability::Normal => {
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;"
        }
        Durability::Full => {
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;"
        }
    })?;
    connection.set_prepared_statement_cache_capacity(64);
    Ok(connection)
}

/// Applies the migrations the database lacks, each in its own transaction.
fn migrate(connection: &mut Connection) -> StoreResult<()> {
    let mut applied: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if applied == 0 {
        // A database made by the first builds, which applied the same migrations through
        // sqlx and recorded them in its own table.
        let made_by_sqlx: bool = connection.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master \
                            WHERE type = 'table' AND name = '_sqlx_migrations')",
            [],
            |row| row.get(0),
        )?;
        let by_sqlx: Option<i64> = if made_by_sqlx {
            connection.query_row(
                "SELECT MAX(version) FROM _sqlx_migrations WHERE success",
                [],
                |row| row.get(0),
            )?
        } else {
            None
        };
        if let Some(version) = by_sqlx {
            connection.pragma_update(None, "user_version", version)?;
            applied = version;
        }
    }
    if applied > MIGRATIONS.len() as i64 {
        return Err(StoreError::NewerSchema {
            found: applied,
            known: MIGRATIONS.len(),
        });
    }
    for (index, (name, sql)) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
        let apply = |connection: &mut Connection| -> rusqlite::Result<()> {
            let tx = connection.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (index + 1) as i64)?;
            tx.commit()
        };
        apply(connection).map_err(|source| StoreError::Migration { name, source })?;
    }
    Ok(())
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
        let mut writer = open_connection(&path, durability)?;
        migrate(&mut writer)?;
        let reader = open_connection(&path, durability)?;
        Ok(Store {
            writer: Arc::new(Mutex::new(writer)),
            reader: Arc::new(Mutex::new(reader)),
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

    /// Moves the WAL's content into the database file (at shutdown; closing the last
    /// connection, when the store is dropped, does the same).
    pub async fn close(&self) {
        let writer = self.writer.lock().await;
        if let Err(err) = writer.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
            tracing::warn!("cannot checkpoint the database at shutdown: {err}");
        }
    }

    /// Runs a change on the writer connection.
    async fn write<T>(
        &self,
        change: impl FnOnce(&mut Connection) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let mut writer = self.writer.lock().await;
        change(&mut writer)
    }

    /// Runs a read on the reader connection.
    async fn read<T>(&self, read: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
        let reader = self.reader.lock().await;
        read(&reader)
    }

    /// A read that may take long (instructors' listings over the whole log): on the
    /// multi-threaded runtime it tells the runtime to move other tasks off this thread.
    async fn read_long<T>(
        &self,
        read: impl FnOnce(&Connection) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let reader = self.reader.lock().await;
        match tokio::runtime::Handle::current().runtime_flavor() {
            tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| read(&reader))
            }
            _ => read(&reader),
        }
    }

    // ----- jobs -------------------------------------------------------------------------

    /// Stores a new queued job, unless the queue is full or the idempotency key is known.
    /// One statement decides and inserts, so the cap holds under concurrent submitters.
    ///
    /// Group commit: the job joins the inserts waiting for the writer, and whoever gets the
    /// writer stores all of them in one transaction (each still its own statement, with its
    /// own cap check and position), so concurrent submitters share one commit. Each caller
    /// is answered only once that commit is done.
    pub async fn enqueue_job(&self, job: &NewJob, max_queued: u64) -> StoreResult<EnqueueOutcome> {
        if let Some(key) = &job.idempotency_key {
            if let Some(existing) = self.job_by_idempotency_key(key).await? {
                return Ok(EnqueueOutcome::Duplicate(existing));
            }
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.waiting_inserts.push(PendingInsert {
            job: job.clone(),
            max_queued,
            reply,
        });
        {
            let mut writer = self.writer.lock().await;
            let batch = self.waiting_inserts.take();
            if !batch.is_empty() {
                insert_jobs(&mut writer, batch);
            }
        }
        let inserted = answer
            .await
            .map_err(|_| StoreError::Shared("the insert was abandoned".into()))??;
        if let Some(record) = inserted {
            return Ok(EnqueueOutcome::Accepted(record));
        }
        // Either the queue is full or a concurrent request won the idempotency key.
        if let Some(key) = &job.idempotency_key {
            if let Some(existing) = self.job_by_idempotency_key(key).await? {
                return Ok(EnqueueOutcome::Duplicate(existing));
            }
        }
        Ok(EnqueueOutcome::QueueFull)
    }

    async fn job_by_idempotency_key(&self, key: &str) -> StoreResult<Option<JobRecord>> {
        self.read(|connection| {
            job_statement!(
                SQL,
                "SELECT {JOB_COLUMNS} FROM jobs WHERE idempotency_key = ?"
            );
            let record = one_job(connection, &SQL, params![key])?;
            record
                .map(|record| with_position(connection, record))
                .transpose()
        })
        .await
    }

    /// One job with its queue position (when queued).
    pub async fn get_job(&self, id: JobId) -> StoreResult<Option<JobRecord>> {
        self.read(|connection| {
            job_statement!(SQL, "SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?");
            let record = one_job(connection, &SQL, params![id.to_string()])?;
            record
                .map(|record| with_position(connection, record))
                .transpose()
        })
        .await
    }

    /// Cancels a job that is still queued.
    pub async fn cancel_job(&self, id: JobId) -> StoreResult<CancelOutcome> {
        let changed = self
            .write(|connection| {
                Ok(connection
                    .prepare_cached(
                        "UPDATE jobs SET status = 'cancelled', finished_at = ?, \
                             error = 'cancelled by client' \
                         WHERE id = ? AND status = 'queued'",
                    )?
                    .execute(params![now_timestamp(), id.to_string()])?)
            })
            .await?;
        let Some(record) = self.get_job(id).await? else {
            return Ok(CancelOutcome::NotFound);
        };
        Ok(if changed == 1 {
            CancelOutcome::Cancelled(record)
        } else {
            CancelOutcome::NotQueued(record)
        })
    }

    /// Atomically moves the oldest queued job to `running`, and with it the queued jobs right
    /// behind it that can share its engine round trip (at most `max_batch` in all), and
    /// returns them in queue order, each with its session's generation and the position of
    /// its cell in the history (for a re-run of an existing cell).
    ///
    /// A batch is a prefix of the queue of jobs that `ClaimedJob::can_share_a_batch` (fresh
    /// MeTTa runs that append a cell), one per session. Jobs of a batch run one after another
    /// in queue order, so FIFO holds. One transaction: the oldest job is claimed by one
    /// statement; only when it can share a batch is the rest of the queue's head read and
    /// claimed.
    pub async fn claim_next_jobs(&self, max_batch: usize) -> StoreResult<Vec<ClaimedJob>> {
        self.write(|connection| {
            // Inserts take the writer too, so this count holds until the claim is done.
            let queued: i64 = connection
                .prepare_cached("SELECT n FROM job_counts WHERE status = 'queued'")?
                .query_row([], |row| row.get(0))?;
            let now = now_timestamp();
            if queued == 0 {
                return Ok(Vec::new());
            }
            if queued == 1 || max_batch <= 1 {
                return Ok(claim_oldest(connection, &now)?.into_iter().collect());
            }
            let tx = connection.transaction()?;
            let Some(first) = claim_oldest(&tx, &now)? else {
                return Ok(Vec::new());
            };
            let mut batch = vec![first];
            if max_batch > 1 && batch[0].can_share_a_batch() {
                let mut sessions: std::collections::HashSet<SessionId> =
                    batch[0].job.session_id.iter().cloned().collect();
                for next in queued_head(&tx, max_batch - 1)? {
                    let own_session = next
                        .job
                        .session_id
                        .as_ref()
                        .is_some_and(|session| sessions.insert(session.clone()));
                    if !(next.can_share_a_batch() && own_session) {
                        break;
                    }
                    batch.push(next);
                }
                if batch.len() > 1 {
                    mark_running(&tx, &mut batch[1..], &now)?;
                }
            }
            tx.commit()?;
            Ok(batch)
        })
        .await
    }

    /// Stores the final state of a running job (one statement) and returns its final record.
    /// A MeTTa run that succeeded enters its session's history in the same statement (the
    /// trigger `metta_success_recorded_in_history` in the first migration).
    pub async fn finish_job(
        &self,
        id: JobId,
        outcome: &JobOutcome,
    ) -> StoreResult<Option<JobRecord>> {
        let mut records = self.finish_jobs(&[(id, outcome)]).await?;
        Ok(records.pop())
    }

    /// `finish_job` for several running jobs at once: one statement, one commit. Returns the
    /// final records of the jobs that were running (in no particular order).
    pub async fn finish_jobs(
        &self,
        outcomes: &[(JobId, &JobOutcome)],
    ) -> StoreResult<Vec<JobRecord>> {
        self.write(|connection| write_job_outcomes(connection, outcomes))
            .await
    }

    /// Re-queues jobs interrupted by the death of the previous process (first interruption)
    /// and fails those interrupted twice, so a job that kills the service cannot loop forever.
    pub async fn recover_interrupted_jobs(&self) -> StoreResult<Recovery> {
        self.write(|connection| {
            let tx = connection.transaction()?;
            let failed = tx.execute(
                "UPDATE jobs SET status = 'failed', finished_at = ?, \
                     error = 'interrupted by restart (twice); not run again' \
                 WHERE status = 'running' AND attempts >= 2",
                params![now_timestamp()],
            )?;
            let requeued = tx.execute(
                "UPDATE jobs SET status = 'queued', started_at = NULL WHERE status = 'running'",
                [],
            )?;
            tx.commit()?;
            Ok(Recovery {
                requeued: requeued as u64,
                failed: failed as u64,
            })
        })
        .await
    }

    /// Counts of jobs by state and the running job's id.
    pub async fn queue_counts(&self) -> StoreResult<QueueCounts> {
        self.read(|connection| {
            let mut counts = QueueCounts::default();
            let mut statement = connection.prepare_cached("SELECT status, n FROM job_counts")?;
            let mut rows = statement.query([])?;
            while let Some(row) = rows.next()? {
                counts
                    .by_status
                    .insert(column(row, "status")?, column(row, "n")?);
            }
            let running: Option<String> = connection
                .prepare_cached(
                    "SELECT id FROM jobs WHERE status = 'running' ORDER BY seq LIMIT 1",
                )?
                .query_row([], |row| row.get(0))
                .optional()?;
            counts.running_job = running.map(|id| parse_job_id(&id)).transpose()?;
            Ok(counts)
        })
        .await
    }

    // ----- sessions and history ---------------------------------------------------------

    /// The cells of a session, in position order (empty for an unknown session).
    pub async fn load_history(&self, session: &SessionId) -> StoreResult<Vec<CellRecord>> {
        self.read(|connection| history_cells(connection, session))
            .await
    }

    /// Finishes a reset job: the session's history is emptied and its generation bumped.
    pub async fn finish_reset_session(
        &self,
        id: JobId,
        outcome: &JobOutcome,
        session: &SessionId,
    ) -> StoreResult<Option<JobRecord>> {
        self.write(|connection| {
            let tx = connection.transaction()?;
            touch_session(&tx, session, &now_timestamp())?;
            tx.execute(
                "DELETE FROM history WHERE session_id = ?",
                params![session.as_str()],
            )?;
            let record = write_job_outcomes(&tx, &[(id, outcome)])?.pop();
            tx.commit()?;
            Ok(record)
        })
        .await
    }

    /// Cuts a session's history at `code_id` (the target and every later cell go) and
    /// finishes the job with the outcome `decide` builds from what the cut did, in one
    /// transaction.
    pub async fn finish_history_cut(
        &self,
        id: JobId,
        session: &SessionId,
        code_id: &CodeId,
        decide: impl FnOnce(&CutOutcome) -> JobOutcome,
    ) -> StoreResult<(CutOutcome, Option<JobRecord>)> {
        self.write(|connection| {
            let tx = connection.transaction()?;
            let target: Option<i64> = tx
                .query_row(
                    "SELECT position FROM history WHERE session_id = ? AND code_id = ?",
                    params![session.as_str(), code_id.as_str()],
                    |row| row.get(0),
                )
                .optional()?;
            let count_cells = |tx: &rusqlite::Transaction<'_>| -> rusqlite::Result<i64> {
                tx.query_row(
                    "SELECT COUNT(*) FROM history WHERE session_id = ?",
                    params![session.as_str()],
                    |row| row.get(0),
                )
            };
            let cut = match target {
                Some(position) => {
                    touch_session(&tx, session, &now_timestamp())?;
                    tx.execute(
                        "DELETE FROM history WHERE session_id = ? AND position >= ?",
                        params![session.as_str(), position],
                    )?;
                    CutOutcome::Cut {
                        remaining: count_cells(&tx)?,
                    }
                }
                None if count_cells(&tx)? == 0 => CutOutcome::EmptyHistory,
                None => CutOutcome::NotFound,
            };
            let record = write_job_outcomes(&tx, &[(id, &decide(&cut))])?.pop();
            tx.commit()?;
            Ok((cut, record))
        })
        .await
    }

    /// A session's cells and summary, or `None` when the session has never been used.
    pub async fn session_view(&self, session: &SessionId) -> StoreResult<Option<SessionView>> {
        self.read(|connection| {
            let row = connection
                .prepare_cached("SELECT created_at, updated_at FROM sessions WHERE id = ?")?
                .query_row(params![session.as_str()], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
                })
                .optional()?;
            let Some((created_at, updated_at)) = row else {
                return Ok(None);
            };
            Ok(Some(SessionView {
                id: session.clone(),
                created_at,
                updated_at,
                cells: history_cells(connection, session)?,
            }))
        })
        .await
    }

    /// The number of cells in a session's history. Positions are always 1..=n (cells are
    /// appended at the end, replaced in place, and removed only as a suffix or all at once),
    /// so this is the last position: one index lookup instead of counting the cells.
    pub async fn history_length(&self, session: &SessionId) -> StoreResult<i64> {
        self.read(|connection| {
            Ok(connection
                .prepare_cached(
                    "SELECT COALESCE(MAX(position), 0) FROM history WHERE session_id = ?",
                )?
                .query_row(params![session.as_str()], |row| row.get(0))?)
        })
        .await
    }

    /// Creates an empty session (for `POST /api/v1/sessions`).
    pub async fn create_session(&self, session: &SessionId) -> StoreResult<()> {
        self.write(|connection| {
            let now = now_timestamp();
            connection
                .prepare_cached(
                    "INSERT INTO sessions (id, generation, created_at, updated_at) \
                     VALUES (?, 0, ?, ?) ON CONFLICT (id) DO NOTHING",
                )?
                .execute(params![session.as_str(), now, now])?;
            Ok(())
        })
        .await
    }

    /// Every session with its cell and job counts, newest activity first.
    pub async fn list_sessions(&self, limit: i64, offset: i64) -> StoreResult<Vec<SessionSummary>> {
        self.read_long(|connection| {
            let mut statement = connection.prepare_cached(
                "SELECT s.id, s.created_at, s.updated_at, \
                        (SELECT COUNT(*) FROM history h WHERE h.session_id = s.id) AS cells, \
                        (SELECT COUNT(*) FROM jobs j WHERE j.session_id = s.id) AS jobs, \
                        (SELECT MIN(created_at) FROM jobs j WHERE j.session_id = s.id) AS first_job, \
                        (SELECT MAX(created_at) FROM jobs j WHERE j.session_id = s.id) AS last_job \
                 FROM sessions s ORDER BY COALESCE(last_job, s.updated_at) DESC, s.id \
                 LIMIT ? OFFSET ?",
            )?;
            let mut rows = statement.query(params![limit, offset])?;
            let mut sessions = Vec::new();
            while let Some(row) = rows.next()? {
                sessions.push(SessionSummary::from_row(row)?);
            }
            Ok(sessions)
        })
        .await
    }

    /// The number of sessions, for pagination.
    pub async fn count_sessions(&self) -> StoreResult<i64> {
        self.read(|connection| {
            Ok(connection
                .prepare_cached("SELECT COUNT(*) FROM sessions")?
                .query_row([], |row| row.get(0))?)
        })
        .await
    }

    /// A session's job log in acceptance order.
    pub async fn session_jobs(
        &self,
        session: &SessionId,
        limit: i64,
        offset: i64,
    ) -> StoreResult<Vec<JobRecord>> {
        self.read_long(|connection| {
            let sql = format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE session_id = ? ORDER BY seq LIMIT ? OFFSET ?"
            );
            let mut statement = connection.prepare_cached(&sql)?;
            let mut rows = statement.query(params![session.as_str(), limit, offset])?;
            let mut jobs = Vec::new();
            while let Some(row) = rows.next()? {
                jobs.push(JobRecord::from_row(row)?);
            }
            Ok(jobs)
        })
        .await
    }
}

/// A submission waiting for the writer connection (see `Store::enqueue_job`).
struct PendingInsert {
    job: NewJob,
    max_queued: u64,
    reply: tokio::sync::oneshot::Sender<StoreResult<Option<JobRecord>>>,
}

/// The submissions waiting for the writer, in arrival order.
#[derive(Default)]
struct WaitingInserts(std::sync::Mutex<Vec<PendingInsert>>);

impl std::fmt::Debug for WaitingInserts {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("WaitingInserts")
    }
}

impl WaitingInserts {
    fn push(&self, insert: PendingInsert) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(insert);
    }

    fn take(&self) -> Vec<PendingInsert> {
        std::mem::take(
            &mut *self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// Stores waiting submissions: alone, or several in one transaction; answers each once its
/// insert is committed (a failed commit answers every one of them with the error).
fn insert_jobs(connection: &mut Connection, batch: Vec<PendingInsert>) {
    if batch.len() == 1 {
        let [insert] = <[PendingInsert; 1]>::try_from(batch).unwrap_or_else(|_| unreachable!());
        let inserted = insert_job(connection, &insert.job, insert.max_queued);
        let _ = insert.reply.send(inserted);
        return;
    }
    tracing::trace!(inserts = batch.len(), "group commit");
    let stored = connection.transaction().and_then(|tx| {
        let results: Vec<StoreResult<Option<JobRecord>>> = batch
            .iter()
            .map(|insert| insert_job(&tx, &insert.job, insert.max_queued))
            .collect();
        tx.commit().map(|()| results)
    });
    match stored {
        Ok(results) => {
            for (insert, result) in batch.into_iter().zip(results) {
                let _ = insert.reply.send(result);
            }
        }
        Err(err) => {
            for insert in batch {
                let _ = insert.reply.send(Err(StoreError::Shared(err.to_string())));
            }
        }
    }
}

/// One statement: the cap check, the insert, the session's row (a trigger) and the job's
/// queue position, all or nothing. `None`: the queue is full or the idempotency key is taken.
fn insert_job(
    connection: &Connection,
    job: &NewJob,
    max_queued: u64,
) -> StoreResult<Option<JobRecord>> {
    job_statement!(
        SQL,
        "INSERT INTO jobs (id, kind, language, session_id, code_id, code, stdin, timeout_ms, \
                           status, idempotency_key, created_at) \
         SELECT ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ? \
         WHERE (SELECT n FROM job_counts WHERE status = 'queued') < ? \
         ON CONFLICT (idempotency_key) DO NOTHING \
         RETURNING {JOB_COLUMNS}, \
             (SELECT COUNT(*) FROM jobs AS ahead \
              WHERE ahead.status = 'queued' AND ahead.seq < jobs.seq) + 1 AS position"
    );
    let mut statement = connection.prepare_cached(&SQL)?;
    let mut rows = statement.query(params![
        job.id.to_string(),
        job.kind.as_str(),
        job.language.map(Language::as_str),
        job.session_id.as_ref().map(SessionId::as_str),
        job.code_id.as_ref().map(CodeId::as_str),
        job.code,
        job.stdin,
        job.timeout_ms as i64,
        job.idempotency_key,
        now_timestamp(),
        max_queued as i64,
    ])?;
    match rows.next()? {
        Some(row) => {
            let mut record = JobRecord::from_row(row)?;
            record.position = Some(column(row, "position")?);
            Ok(Some(record))
        }
        None => Ok(None),
    }
}

/// Moves the oldest queued job to `running`; with its session's generation and its cell's
/// position.
fn claim_oldest(connection: &Connection, now: &str) -> StoreResult<Option<ClaimedJob>> {
    job_statement!(
        SQL,
        "UPDATE jobs SET status = 'running', started_at = ?, attempts = attempts + 1 \
         WHERE seq = (SELECT seq FROM jobs WHERE status = 'queued' ORDER BY seq LIMIT 1) \
         RETURNING {JOB_COLUMNS}, \
             (SELECT generation FROM sessions WHERE id = jobs.session_id) AS session_generation, \
             (SELECT position FROM history WHERE history.session_id = jobs.session_id \
              AND history.code_id = COALESCE(jobs.code_id, jobs.id)) AS cell_position"
    );
    let mut statement = connection.prepare_cached(&SQL)?;
    let mut rows = statement.query(params![now])?;
    rows.next()?.map(ClaimedJob::from_row).transpose()
}

/// The oldest `limit` queued jobs, with their sessions' generations and cells' positions.
fn queued_head(connection: &Connection, limit: usize) -> StoreResult<Vec<ClaimedJob>> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let columns = JOB_COLUMNS
            .split(',')
            .map(|column| format!("jobs.{}", column.trim()))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "SELECT {columns}, sessions.generation AS session_generation, \
                history.position AS cell_position \
         FROM (SELECT * FROM jobs WHERE status = 'queued' ORDER BY seq LIMIT ?) AS jobs \
         LEFT JOIN sessions ON sessions.id = jobs.session_id \
         LEFT JOIN history ON history.session_id = jobs.session_id \
              AND history.code_id = COALESCE(jobs.code_id, jobs.id) \
         ORDER BY jobs.seq"
        )
    });
    let mut statement = connection.prepare_cached(&SQL)?;
    let mut rows = statement.query(params![limit as i64])?;
    let mut head = Vec::new();
    while let Some(row) = rows.next()? {
        head.push(ClaimedJob::from_row(row)?);
    }
    Ok(head)
}

/// Moves queued jobs read in the same transaction to `running`, stamping them as claimed at
/// `now` (the time of their batch).
fn mark_running(connection: &Connection, jobs: &mut [ClaimedJob], now: &str) -> StoreResult<()> {
    let seqs = serde_json::to_string(
        &jobs
            .iter()
            .map(|claimed| claimed.job.seq)
            .collect::<Vec<_>>(),
    )
    .map_err(|err| StoreError::Corrupt(err.to_string()))?;
    let changed = connection
        .prepare_cached(
            "UPDATE jobs SET status = 'running', started_at = ?, attempts = attempts + 1 \
             WHERE status = 'queued' AND seq IN (SELECT value FROM json_each(?))",
        )?
        .execute(params![now, seqs])?;
    if changed != jobs.len() {
        return Err(StoreError::Corrupt(format!(
            "claimed {changed} of {} queued jobs read in the same transaction",
            jobs.len()
        )));
    }
    for claimed in jobs {
        claimed.job.status = JobStatus::Running;
        claimed.job.started_at = Some(now.to_string());
        claimed.job.attempts += 1;
    }
    Ok(())
}

/// The first job `sql` selects.
fn one_job(
    connection: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> StoreResult<Option<JobRecord>> {
    let mut statement = connection.prepare_cached(sql)?;
    let mut rows = statement.query(params)?;
    match rows.next()? {
        Some(row) => Ok(Some(JobRecord::from_row(row)?)),
        None => Ok(None),
    }
}

/// Fills in `position`: 1 for the next job to run, 2 for the one after, ….
fn with_position(connection: &Connection, mut record: JobRecord) -> StoreResult<JobRecord> {
    if record.status == JobStatus::Queued {
        let ahead: i64 = connection
            .prepare_cached("SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND seq < ?")?
            .query_row(params![record.seq], |row| row.get(0))?;
        record.position = Some(ahead + 1);
    }
    Ok(record)
}

fn history_cells(connection: &Connection, session: &SessionId) -> StoreResult<Vec<CellRecord>> {
    let mut statement = connection.prepare_cached(
        "SELECT position, code_id, code, created_at, updated_at, last_job_id, last_result \
         FROM history WHERE session_id = ? ORDER BY position",
    )?;
    let mut rows = statement.query(params![session.as_str()])?;
    let mut cells = Vec::new();
    while let Some(row) = rows.next()? {
        cells.push(CellRecord::from_row(row)?);
    }
    Ok(cells)
}

/// Creates the session row when missing and bumps its generation.
fn touch_session(connection: &Connection, session: &SessionId, now: &str) -> StoreResult<()> {
    connection
        .prepare_cached(
            "INSERT INTO sessions (id, generation, created_at, updated_at) VALUES (?, 1, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET generation = generation + 1, \
                 updated_at = excluded.updated_at",
        )?
        .execute(params![session.as_str(), now, now])?;
    Ok(())
}

/// Stores running jobs' final states in one statement and returns their final records
/// (only of jobs that were running: a stale worker must not overwrite anything).
fn write_job_outcomes(
    connection: &Connection,
    outcomes: &[(JobId, &JobOutcome)],
) -> StoreResult<Vec<JobRecord>> {
    if outcomes.is_empty() {
        return Ok(Vec::new());
    }
    let row = "(?, ?, ?, ?, ?, ?, ?, ?, ?)";
    let sql = format!(
        "WITH outcome (o_id, o_status, o_result, o_results_json, o_stdout, o_stderr, \
                       o_output_truncated, o_error, o_error_kind) AS (VALUES {}) \
         UPDATE jobs SET status = o_status, result = o_result, results_json = o_results_json, \
             stdout = o_stdout, stderr = o_stderr, output_truncated = o_output_truncated, \
             error = o_error, error_kind = o_error_kind, finished_at = ?, \
             duration_ms = CAST(ROUND((julianday(?) - julianday(started_at)) * 86400000) AS INTEGER) \
         FROM outcome WHERE jobs.id = outcome.o_id AND jobs.status = 'running' \
         RETURNING {JOB_COLUMNS}",
        vec![row; outcomes.len()].join(", ")
    );
    let text = |value: Option<String>| value.map_or(Value::Null, Value::Text);
    let mut values = Vec::with_capacity(outcomes.len() * 9 + 2);
    for (id, outcome) in outcomes {
        let results_json = outcome
            .results
            .as_ref()
            .map(|results| serde_json::to_string(results).unwrap_or_else(|_| "[]".into()));
        values.extend([
            Value::Text(id.to_string()),
            Value::Text(outcome.status.as_str().into()),
            text(outcome.result.clone()),
            text(results_json),
            text(outcome.stdout.clone()),
            text(outcome.stderr.clone()),
            Value::Integer(i64::from(outcome.output_truncated)),
            text(outcome.error.clone()),
            text(outcome.error_kind.map(|kind| kind.as_str().to_string())),
        ]);
    }
    let now = now_timestamp();
    values.push(Value::Text(now.clone()));
    values.push(Value::Text(now));
    let mut statement = connection.prepare_cached(&sql)?;
    let mut rows = statement.query(rusqlite::params_from_iter(values))?;
    let mut records = Vec::new();
    while let Some(row) = rows.next()? {
        records.push(JobRecord::from_row(row)?);
    }
    Ok(records)
}

fn parse_job_id(text: &str) -> StoreResult<JobId> {
    text.parse().map_err(StoreError::Corrupt)
}

/// A column of a row, by name or (for job rows) by position.
trait ColumnAt: Copy + std::fmt::Display {
    type Index: RowIndex;
    fn index(self) -> Self::Index;
}

impl ColumnAt for &str {
    type Index = Self;
    fn index(self) -> Self {
        self
    }
}

fn column<T: FromSql>(row: &Row<'_>, at: impl ColumnAt) -> StoreResult<T> {
    Ok(row.get(at.index())?)
}

fn parse_column<T>(
    row: &Row<'_>,
    at: impl ColumnAt,
    parse: impl Fn(&str) -> Option<T>,
) -> StoreResult<T> {
    let text: String = column(row, at)?;
    parse(&text).ok_or_else(|| StoreError::Corrupt(format!("{at} = '{text}'")))
}

fn optional_column<T>(
    row: &Row<'_>,
    at: impl ColumnAt,
    parse: impl Fn(&str) -> Result<T, String>,
) -> StoreResult<Option<T>> {
    let text: Option<String> = column(row, at)?;
    text.map(|text| parse(&text).map_err(StoreError::Corrupt))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::JobKind;

    fn python_job(code: &str) -> NewJob {
        NewJob {
            id: JobId::new(),
            kind: JobKind::Run,
            language: Some(Language::Python),
            session_id: None,
            code_id: None,
            code: code.into(),
            stdin: None,
            timeout_ms: 1000,
            idempotency_key: None,
        }
    }

    #[tokio::test]
    async fn the_history_length_is_the_number_of_cells_after_appends_edits_and_cuts() {
        // Arrange
        let folder = tempfile::tempdir().expect("temporary folder");
        let url = format!("sqlite://{}/jobs.db", folder.path().display());
        let store = Store::open(&url, Durability::Normal).await.expect("open");
        let session = SessionId::parse("s").expect("session id");
        let run_cell = |code_id: &str| NewJob {
            language: Some(Language::Metta),
            session_id: Some(session.clone()),
            code_id: Some(CodeId::parse(code_id).expect("code id")),
            ..python_job("!(+ 1 1)")
        };
        let cells = |store: Store, session: SessionId| async move {
            let count = store.load_history(&session).await.expect("history").len() as i64;
            (store.history_length(&session).await.expect("length"), count)
        };

        // Act and assert: append four cells, edit the second, cut at the third.
        for code_id in ["a", "b", "c", "d", "b"] {
            store
                .enqueue_job(&run_cell(code_id), 10)
                .await
                .expect("enqueue");
            let claimed = store.claim_next_jobs(1).await.expect("claim");
            let done = JobOutcome::succeeded_with("[2]\n");
            store
                .finish_job(claimed[0].job.id, &done)
                .await
                .expect("finish");
            let (length, count) = cells(store.clone(), session.clone()).await;
            assert_eq!(length, count, "after running cell {code_id}");
        }
        assert_eq!(cells(store.clone(), session.clone()).await, (4, 4));
        let cut = NewJob::session_change(
            JobKind::RemoveCell,
            session.clone(),
            CodeId::parse("c").ok(),
        );
        store.enqueue_job(&cut, 10).await.expect("enqueue");
        let claimed = store.claim_next_jobs(1).await.expect("claim");
        let code_id = CodeId::parse("c").expect("code id");
        store
            .finish_history_cut(claimed[0].job.id, &session, &code_id, |_| {
                JobOutcome::succeeded_with("cut")
            })
            .await
            .expect("cut");
        assert_eq!(cells(store.clone(), session.clone()).await, (2, 2));
    }

    #[test]
    fn job_rows_are_read_by_the_positions_of_job_columns() {
        let listed: Vec<&str> = JOB_COLUMNS.split(',').map(str::trim).collect();
        let positional: Vec<&str> = records::job_column::ALL
            .iter()
            .map(|column| column.name())
            .collect();
        assert_eq!(listed, positional);
    }

    #[tokio::test]
    async fn a_group_commit_keeps_each_insert_its_own_cap_check_and_position() {
        // Arrange: a real database file; four submissions wait for the writer, the cap is 3.
        let folder = tempfile::tempdir().expect("temporary folder");
        let url = format!("sqlite://{}/jobs.db", folder.path().display());
        let store = Store::open(&url, Durability::Normal).await.expect("open");
        let mut answers = Vec::new();
        let mut batch = Vec::new();
        for i in 0..4 {
            let (reply, answer) = tokio::sync::oneshot::channel();
            batch.push(PendingInsert {
                job: python_job(&format!("print({i})")),
                max_queued: 3,
                reply,
            });
            answers.push(answer);
        }

        // Act
        insert_jobs(&mut *store.writer.lock().await, batch);

        // Assert
        let mut positions = Vec::new();
        for answer in answers {
            let inserted = answer.await.expect("answered").expect("no database error");
            positions.push(inserted.map(|record| record.position));
        }
        assert_eq!(
            positions,
            vec![Some(Some(1)), Some(Some(2)), Some(Some(3)), None]
        );
        let counts = store.queue_counts().await.expect("counts");
        assert_eq!(counts.count(JobStatus::Queued), 3, "{counts:?}");
    }
}
