//! The durable state of the service: jobs, sessions and their history in one SQLite file.
//!
//! Every SQL statement of the crate lives in this module; handlers and the worker call the
//! named operations below (`enqueue_job`, `claim_next_jobs`, `finish_jobs`, …).
//! Each operation is one statement or one transaction, so a crash at any point leaves either
//! the old state or the new one, never half of a change. This module never runs code and never
//! decides policy (limits, who may do what): callers pass those in.

mod records;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, SqliteConnection, Transaction};

use crate::domain::{CodeId, ErrorKind, JobId, JobStatus, Language, SessionId};
pub use records::{
    CellRecord, ClaimedJob, JobOutcome, JobRecord, NewJob, QueueCounts, SessionSummary, SessionView,
};

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("cannot create the database folder {path}: {source}")]
    CreateFolder {
        path: String,
        source: std::io::Error,
    },
    #[error("the database holds a value this version cannot read: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

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
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
    /// The database file (for `restrict_file_access`).
    path: std::path::PathBuf,
}

/// The current time as stored: RFC 3339 in UTC with milliseconds, so text order is time order.
pub fn now_timestamp() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

const JOB_COLUMNS: &str = "seq, id, kind, language, session_id, code_id, code, stdin, \
     timeout_ms, status, attempts, result, results_json, stdout, stderr, output_truncated, \
     error, error_kind, idempotency_key, created_at, started_at, finished_at, duration_ms";

impl Store {
    /// Opens (creating when missing) the database at `url` and applies pending migrations.
    pub async fn open(url: &str, durability: Durability) -> StoreResult<Store> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match durability {
                Durability::Normal => SqliteSynchronous::Normal,
                Durability::Full => SqliteSynchronous::Full,
            })
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let path = options.get_filename().to_path_buf();
        if let Some(folder) = options.get_filename().parent() {
            if !folder.as_os_str().is_empty() && !Path::new(folder).exists() {
                std::fs::create_dir_all(folder).map_err(|source| StoreError::CreateFolder {
                    path: folder.display().to_string(),
                    source,
                })?;
            }
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            // A connection to a local file does not go stale; pinging it before every
            // statement would double the cost of each one.
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Store { pool, path })
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

    /// Closes every connection (checkpointing the WAL).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    // ----- jobs -------------------------------------------------------------------------

    /// Stores a new queued job, unless the queue is full or the idempotency key is known.
    /// One statement decides and inserts, so the cap holds under concurrent submitters.
    pub async fn enqueue_job(&self, job: &NewJob, max_queued: u64) -> StoreResult<EnqueueOutcome> {
        if let Some(key) = &job.idempotency_key {
            if let Some(existing) = self.job_by_idempotency_key(key).await? {
                return Ok(EnqueueOutcome::Duplicate(existing));
            }
        }
        // One statement: the cap check, the insert, the session's row (a trigger) and the
        // job's queue position, all or nothing.
        let sql = format!(
            "INSERT INTO jobs (id, kind, language, session_id, code_id, code, stdin, timeout_ms, \
                               status, idempotency_key, created_at) \
             SELECT ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ? \
             WHERE (SELECT n FROM job_counts WHERE status = 'queued') < ? \
             ON CONFLICT (idempotency_key) DO NOTHING \
             RETURNING {JOB_COLUMNS}, \
                 (SELECT COUNT(*) FROM jobs AS ahead \
                  WHERE ahead.status = 'queued' AND ahead.seq < jobs.seq) + 1 AS position"
        );
        let inserted = sqlx::query(&sql)
            .bind(job.id.to_string())
            .bind(job.kind.as_str())
            .bind(job.language.map(Language::as_str))
            .bind(job.session_id.as_ref().map(SessionId::as_str))
            .bind(job.code_id.as_ref().map(CodeId::as_str))
            .bind(&job.code)
            .bind(&job.stdin)
            .bind(job.timeout_ms as i64)
            .bind(&job.idempotency_key)
            .bind(now_timestamp())
            .bind(max_queued as i64)
            .fetch_optional(&self.pool)
            .await?;
        if let Some(row) = inserted {
            let mut record = JobRecord::from_row(&row)?;
            record.position = Some(row.try_get("position")?);
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
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE idempotency_key = ?");
        let row = sqlx::query(&sql)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => Ok(Some(self.with_position(JobRecord::from_row(&row)?).await?)),
            None => Ok(None),
        }
    }

    /// One job with its queue position (when queued).
    pub async fn get_job(&self, id: JobId) -> StoreResult<Option<JobRecord>> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?");
        let row = sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => Ok(Some(self.with_position(JobRecord::from_row(&row)?).await?)),
            None => Ok(None),
        }
    }

    /// Fills in `position`: 1 for the next job to run, 2 for the one after, ….
    async fn with_position(&self, mut record: JobRecord) -> StoreResult<JobRecord> {
        if record.status == JobStatus::Queued {
            let ahead: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND seq < ?")
                    .bind(record.seq)
                    .fetch_one(&self.pool)
                    .await?;
            record.position = Some(ahead + 1);
        }
        Ok(record)
    }

    /// Cancels a job that is still queued.
    pub async fn cancel_job(&self, id: JobId) -> StoreResult<CancelOutcome> {
        let now = now_timestamp();
        let changed = sqlx::query(
            "UPDATE jobs SET status = 'cancelled', finished_at = ?, error = 'cancelled by client' \
             WHERE id = ? AND status = 'queued'",
        )
        .bind(&now)
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        let Some(record) = self.get_job(id).await? else {
            return Ok(CancelOutcome::NotFound);
        };
        Ok(if changed.rows_affected() == 1 {
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
    /// A batch is a prefix of the queue: it stops at the first job that is not a fresh MeTTa
    /// run (`attempts = 0`: a job re-queued by start-up recovery runs alone, so a second
    /// interruption is its own) in a session of its own within the batch that appends a new
    /// cell. Jobs of a batch run one after another in queue order, so FIFO holds.
    pub async fn claim_next_jobs(&self, max_batch: usize) -> StoreResult<Vec<ClaimedJob>> {
        let sql = format!(
            "WITH head AS ( \
                 SELECT seq, kind, language, attempts, session_id, code_id, \
                        ROW_NUMBER() OVER (PARTITION BY session_id ORDER BY seq) AS nth \
                 FROM (SELECT seq, kind, language, attempts, session_id, code_id FROM jobs \
                       WHERE status = 'queued' ORDER BY seq LIMIT ?1)), \
             batch_end AS ( \
                 SELECT MIN(seq) AS seq FROM head \
                 WHERE NOT (kind = 'run' AND language = 'metta' AND attempts = 0 AND nth = 1 \
                            AND session_id IS NOT NULL \
                            AND NOT EXISTS (SELECT 1 FROM history \
                                            WHERE history.session_id = head.session_id \
                                              AND history.code_id = head.code_id))) \
             UPDATE jobs SET status = 'running', started_at = ?2, attempts = attempts + 1 \
             WHERE status = 'queued' AND seq IN ( \
                 SELECT seq FROM head \
                 WHERE seq = (SELECT MIN(seq) FROM head) \
                    OR seq < COALESCE((SELECT seq FROM batch_end), 9223372036854775807)) \
             RETURNING {JOB_COLUMNS}, \
                 (SELECT generation FROM sessions WHERE id = jobs.session_id) AS session_generation, \
                 (SELECT position FROM history WHERE history.session_id = jobs.session_id \
                  AND history.code_id = COALESCE(jobs.code_id, jobs.id)) AS cell_position"
        );
        let rows = sqlx::query(&sql)
            .bind(max_batch.max(1) as i64)
            .bind(now_timestamp())
            .fetch_all(&self.pool)
            .await?;
        let mut claimed = rows
            .iter()
            .map(|row| {
                let generation: Option<i64> = column(row, "session_generation")?;
                Ok(ClaimedJob {
                    job: JobRecord::from_row(row)?,
                    generation: generation.unwrap_or(0),
                    cell_position: column(row, "cell_position")?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        // RETURNING gives rows in no promised order.
        claimed.sort_by_key(|claimed| claimed.job.seq);
        Ok(claimed)
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
        let mut connection = self.pool.acquire().await?;
        write_job_outcomes(&mut connection, outcomes).await
    }

    /// Re-queues jobs interrupted by the death of the previous process (first interruption)
    /// and fails those interrupted twice, so a job that kills the service cannot loop forever.
    pub async fn recover_interrupted_jobs(&self) -> StoreResult<Recovery> {
        let mut tx = self.pool.begin().await?;
        let failed = sqlx::query(
            "UPDATE jobs SET status = 'failed', finished_at = ?, \
                 error = 'interrupted by restart (twice); not run again' \
             WHERE status = 'running' AND attempts >= 2",
        )
        .bind(now_timestamp())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let requeued = sqlx::query(
            "UPDATE jobs SET status = 'queued', started_at = NULL WHERE status = 'running'",
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(Recovery { requeued, failed })
    }

    /// Counts of jobs by state and the running job's id.
    pub async fn queue_counts(&self) -> StoreResult<QueueCounts> {
        let rows = sqlx::query("SELECT status, n FROM job_counts")
            .fetch_all(&self.pool)
            .await?;
        let mut counts = QueueCounts::default();
        for row in rows {
            let status: String = row.try_get("status")?;
            let n: i64 = row.try_get("n")?;
            counts.by_status.insert(status, n);
        }
        let running: Option<String> =
            sqlx::query_scalar("SELECT id FROM jobs WHERE status = 'running' ORDER BY seq LIMIT 1")
                .fetch_optional(&self.pool)
                .await?;
        counts.running_job = running.map(|id| parse_job_id(&id)).transpose()?;
        Ok(counts)
    }

    // ----- sessions and history ---------------------------------------------------------

    /// The cells of a session, in position order (empty for an unknown session).
    pub async fn load_history(&self, session: &SessionId) -> StoreResult<Vec<CellRecord>> {
        let rows = sqlx::query(
            "SELECT position, code_id, code, created_at, updated_at, last_job_id, last_result \
             FROM history WHERE session_id = ? ORDER BY position",
        )
        .bind(session.as_str())
        .fetch_all(&self.pool)
        .await?;
        let cells = rows
            .iter()
            .map(CellRecord::from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(cells)
    }

    /// Finishes a reset job: the session's history is emptied and its generation bumped.
    pub async fn finish_reset_session(
        &self,
        id: JobId,
        outcome: &JobOutcome,
        session: &SessionId,
    ) -> StoreResult<Option<JobRecord>> {
        let mut tx = self.pool.begin().await?;
        let now = now_timestamp();
        touch_session(&mut tx, session, &now).await?;
        sqlx::query("DELETE FROM history WHERE session_id = ?")
            .bind(session.as_str())
            .execute(&mut *tx)
            .await?;
        let record = write_job_outcomes(&mut tx, &[(id, outcome)]).await?.pop();
        tx.commit().await?;
        Ok(record)
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
        let mut tx = self.pool.begin().await?;
        let target: Option<i64> =
            sqlx::query_scalar("SELECT position FROM history WHERE session_id = ? AND code_id = ?")
                .bind(session.as_str())
                .bind(code_id.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        let cut = match target {
            Some(position) => {
                let now = now_timestamp();
                touch_session(&mut tx, session, &now).await?;
                sqlx::query("DELETE FROM history WHERE session_id = ? AND position >= ?")
                    .bind(session.as_str())
                    .bind(position)
                    .execute(&mut *tx)
                    .await?;
                let remaining: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM history WHERE session_id = ?")
                        .bind(session.as_str())
                        .fetch_one(&mut *tx)
                        .await?;
                CutOutcome::Cut { remaining }
            }
            None => {
                let cells: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM history WHERE session_id = ?")
                        .bind(session.as_str())
                        .fetch_one(&mut *tx)
                        .await?;
                if cells == 0 {
                    CutOutcome::EmptyHistory
                } else {
                    CutOutcome::NotFound
                }
            }
        };
        let record = write_job_outcomes(&mut tx, &[(id, &decide(&cut))])
            .await?
            .pop();
        tx.commit().await?;
        Ok((cut, record))
    }

    /// A session's cells and summary, or `None` when the session has never been used.
    pub async fn session_view(&self, session: &SessionId) -> StoreResult<Option<SessionView>> {
        let row = sqlx::query("SELECT id, created_at, updated_at FROM sessions WHERE id = ?")
            .bind(session.as_str())
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let cells = self.load_history(session).await?;
        Ok(Some(SessionView {
            id: session.clone(),
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            cells,
        }))
    }

    /// The number of cells in a session's history.
    pub async fn history_length(&self, session: &SessionId) -> StoreResult<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM history WHERE session_id = ?")
                .bind(session.as_str())
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Creates an empty session (for `POST /api/v1/sessions`).
    pub async fn create_session(&self, session: &SessionId) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let now = now_timestamp();
        sqlx::query(
            "INSERT INTO sessions (id, generation, created_at, updated_at) VALUES (?, 0, ?, ?) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(session.as_str())
        .bind(&now)
        .bind(&now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every session with its cell and job counts, newest activity first.
    pub async fn list_sessions(&self, limit: i64, offset: i64) -> StoreResult<Vec<SessionSummary>> {
        let rows = sqlx::query(
            "SELECT s.id, s.created_at, s.updated_at, \
                    (SELECT COUNT(*) FROM history h WHERE h.session_id = s.id) AS cells, \
                    (SELECT COUNT(*) FROM jobs j WHERE j.session_id = s.id) AS jobs, \
                    (SELECT MIN(created_at) FROM jobs j WHERE j.session_id = s.id) AS first_job, \
                    (SELECT MAX(created_at) FROM jobs j WHERE j.session_id = s.id) AS last_job \
             FROM sessions s ORDER BY COALESCE(last_job, s.updated_at) DESC, s.id \
             LIMIT ? OFFSET ?",
        )
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(SessionSummary::from_row).collect()
    }

    /// The number of sessions, for pagination.
    pub async fn count_sessions(&self) -> StoreResult<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM sessions")
            .fetch_one(&self.pool)
            .await?)
    }

    /// A session's job log in acceptance order.
    pub async fn session_jobs(
        &self,
        session: &SessionId,
        limit: i64,
        offset: i64,
    ) -> StoreResult<Vec<JobRecord>> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE session_id = ? ORDER BY seq LIMIT ? OFFSET ?"
        );
        let rows = sqlx::query(&sql)
            .bind(session.as_str())
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(JobRecord::from_row).collect()
    }
}

/// Creates the session row when missing and bumps its generation.
async fn touch_session(
    tx: &mut Transaction<'_, Sqlite>,
    session: &SessionId,
    now: &str,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO sessions (id, generation, created_at, updated_at) VALUES (?, 1, ?, ?) \
         ON CONFLICT (id) DO UPDATE SET generation = generation + 1, updated_at = excluded.updated_at",
    )
    .bind(session.as_str())
    .bind(now)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Stores running jobs' final states in one statement and returns their final records
/// (only of jobs that were running: a stale worker must not overwrite anything).
async fn write_job_outcomes(
    connection: &mut SqliteConnection,
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
    let mut query = sqlx::query(&sql);
    for (id, outcome) in outcomes {
        let results_json = outcome
            .results
            .as_ref()
            .map(|results| serde_json::to_string(results).unwrap_or_else(|_| "[]".into()));
        query = query
            .bind(id.to_string())
            .bind(outcome.status.as_str())
            .bind(outcome.result.clone())
            .bind(results_json)
            .bind(outcome.stdout.clone())
            .bind(outcome.stderr.clone())
            .bind(outcome.output_truncated)
            .bind(outcome.error.clone())
            .bind(outcome.error_kind.map(ErrorKind::as_str));
    }
    let now = now_timestamp();
    let rows = query
        .bind(now.clone())
        .bind(now)
        .fetch_all(connection)
        .await?;
    rows.iter().map(JobRecord::from_row).collect()
}

fn parse_job_id(text: &str) -> StoreResult<JobId> {
    JobId::from_str(text).map_err(StoreError::Corrupt)
}

fn column<T>(row: &SqliteRow, name: &str) -> StoreResult<T>
where
    T: for<'r> sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>,
{
    Ok(row.try_get(name)?)
}

fn parse_column<T>(
    row: &SqliteRow,
    name: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> StoreResult<T> {
    let text: String = column(row, name)?;
    parse(&text).ok_or_else(|| StoreError::Corrupt(format!("{name} = '{text}'")))
}

fn optional_column<T>(
    row: &SqliteRow,
    name: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> StoreResult<Option<T>> {
    let text: Option<String> = column(row, name)?;
    text.map(|text| parse(&text).map_err(StoreError::Corrupt))
        .transpose()
}
