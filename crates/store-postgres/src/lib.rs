//! The PostgreSQL store of metta-learner-backend: its schema (`migrations/`) and every
//! statement the server runs on PostgreSQL, each a compile-time checked sqlx macro (checked
//! against the database `PG_DATABASE_URL` names, see `sqlx.toml`; offline data in the
//! workspace's `.sqlx/`).
//!
//! This crate holds SQL and nothing else: rows come back as plain column values
//! (`JobRow`, `CellRow`, …) and the server's `store::postgres` turns them into its domain
//! records, so the two stores answer with the same records. Times are RFC 3339 text in UTC
//! (as on SQLite), passed in by the caller.
//!
//! The rules that let several server processes share one database live here too (see
//! `claim_next_job`, `rescue_jobs`, `heartbeat`); docs/ARCHITECTURE.md states them.

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

pub use sqlx;

/// The schema, applied at start-up (each migration in its own transaction; a second host
/// starting at the same time waits for sqlx's migration lock).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// Key of the advisory lock that serialises claims (`claim_next_job`).
const CLAIM_LOCK: i64 = 0x6d65_7474_615f_636c; // "metta_cl"

/// A job's columns as stored, with what some statements add.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub seq: i64,
    pub id: String,
    pub kind: String,
    pub language: Option<String>,
    pub session_id: Option<String>,
    pub code_id: Option<String>,
    pub code: String,
    pub stdin: Option<String>,
    pub timeout_ms: i64,
    pub status: String,
    pub attempts: i64,
    pub result: Option<String>,
    pub results_json: Option<String>,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    pub output_truncated: bool,
    pub error: Option<String>,
    pub error_kind: Option<String>,
    pub idempotency_key: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: Option<i64>,
    /// 1 for the next job to run; only for queued jobs, and only where the statement says.
    pub position: Option<i64>,
}

/// A claimed job with its session's generation, its cell's position and whether more jobs
/// are queued.
#[derive(Debug, Clone)]
pub struct ClaimRow {
    pub job: JobRow,
    pub session_generation: Option<i64>,
    pub cell_position: Option<i64>,
    pub more_queued: bool,
}

/// A new job as `insert_job` stores it.
#[derive(Debug, Clone, Copy)]
pub struct NewJobRow<'a> {
    pub id: &'a str,
    pub kind: &'a str,
    pub language: Option<&'a str>,
    pub session_id: Option<&'a str>,
    pub code_id: Option<&'a str>,
    pub code: &'a str,
    pub stdin: Option<&'a str>,
    pub timeout_ms: i64,
    pub idempotency_key: Option<&'a str>,
    pub idempotency_scope: Option<&'a str>,
}

#[derive(Debug, Clone)]
pub struct CellRow {
    pub position: i64,
    pub code_id: String,
    pub code: String,
    pub created_at: String,
    pub updated_at: String,
    pub last_job_id: Option<String>,
    pub last_result: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SessionRow {
    pub id: String,
    pub created_at: String,
    pub updated_at: String,
    pub cells: i64,
    pub jobs: i64,
    pub first_activity: Option<String>,
    pub last_activity: Option<String>,
}

/// What `rescue_jobs` did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rescued {
    pub requeued: u64,
    pub failed: u64,
}

/// `sqlx::query_as!` into `$record` for a statement whose result columns are a job's columns
/// (between `$head` and `$tail`), so every job statement names them the same way.
macro_rules! query_jobs {
    ($record:ty, $head:tt, $tail:tt $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            $record,
            $head
                + r#"seq AS "seq!", id AS "id!", kind AS "kind!", language AS "language?",
                     session_id AS "session_id?", code_id AS "code_id?", code AS "code!",
                     stdin AS "stdin?", timeout_ms AS "timeout_ms!", status AS "status!",
                     attempts AS "attempts!", result AS "result?",
                     results_json AS "results_json?", stdout AS "stdout?", stderr AS "stderr?",
                     output_truncated AS "output_truncated!", error AS "error?",
                     error_kind AS "error_kind?", idempotency_key AS "idempotency_key?",
                     created_at AS "created_at!", started_at AS "started_at?",
                     finished_at AS "finished_at?", duration_ms AS "duration_ms?""#
                + $tail
            $(, $arg)*
        )
    };
}

/// A pooled connection idle longer than this is pinged before it is used again.
const PING_WHEN_IDLE_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// Connects a pool of `max_connections` to `url`.
///
/// sqlx pings every connection as it goes back to the pool, and by default again before it
/// is handed out: a round trip before each statement, in the worker's path between two jobs
/// and on the database's CPU. A connection used within `PING_WHEN_IDLE_FOR` was checked
/// when it came back, so only one that sat idle longer (which a server restart or a cut
/// network may have broken since) is pinged before use.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    PgPoolOptions::new()
        .max_connections(max_connections)
        .test_before_acquire(false)
        .before_acquire(|connection, meta| {
            Box::pin(async move {
                if meta.idle_for > PING_WHEN_IDLE_FOR {
                    connection.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_with(options)
        .await
}

/// One connection of its own (for LISTEN).
pub async fn connect_one(url: &str) -> Result<PgConnection, sqlx::Error> {
    PgConnection::connect(url).await
}

/// Stores a new queued job unless the queue holds `max_queued` jobs or the client's key is
/// taken (`None` then): one call of the database function `enqueue_job` (migrations/0003),
/// which locks the queue's count row first, so inserts on every host take turns: the cap
/// holds globally, and the insert reads its true position.
pub async fn insert_job(
    pool: &PgPool,
    job: NewJobRow<'_>,
    now: &str,
    max_queued: i64,
) -> Result<Option<JobRow>, sqlx::Error> {
    query_jobs!(
        JobRow,
        "SELECT ",
        r#", queue_position AS "position?"
           FROM (SELECT (c.job).*, c.queue_position
                 FROM enqueue_job($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) AS c)
                AS inserted"#,
        job.id,
        job.kind,
        job.language,
        job.session_id,
        job.code_id,
        job.code,
        job.stdin,
        job.timeout_ms,
        job.idempotency_key,
        job.idempotency_scope,
        now,
        max_queued,
    )
    .fetch_optional(pool)
    .await
}

/// The job a client's idempotency key names, with its position when queued.
pub async fn job_with_key(
    pool: &PgPool,
    scope: &str,
    key: &str,
) -> Result<Option<JobRow>, sqlx::Error> {
    query_jobs!(
        JobRow,
        "SELECT ",
        r#", CASE WHEN status = 'queued' THEN
                 (SELECT COUNT(*) FROM jobs AS ahead
                  WHERE ahead.status = 'queued' AND ahead.seq < jobs.seq) + 1
             END AS "position?"
           FROM jobs WHERE idempotency_scope = $1 AND idempotency_key = $2"#,
        scope,
        key,
    )
    .fetch_optional(pool)
    .await
}

/// One job with its position when queued.
pub async fn get_job(pool: &PgPool, id: &str) -> Result<Option<JobRow>, sqlx::Error> {
    query_jobs!(
        JobRow,
        "SELECT ",
        r#", CASE WHEN status = 'queued' THEN
                 (SELECT COUNT(*) FROM jobs AS ahead
                  WHERE ahead.status = 'queued' AND ahead.seq < jobs.seq) + 1
             END AS "position?"
           FROM jobs WHERE id = $1"#,
        id,
    )
    .fetch_optional(pool)
    .await
}

/// Cancels a job that is still queued.
pub async fn cancel_job(pool: &PgPool, id: &str, now: &str) -> Result<Option<JobRow>, sqlx::Error> {
    query_jobs!(
        JobRow,
        "UPDATE jobs SET status = 'cancelled', finished_at = $1, error = 'cancelled by client' \
         WHERE id = $2 AND status = 'queued' RETURNING ",
        r#", NULL::BIGINT AS "position?""#,
        now,
        id,
    )
    .fetch_optional(pool)
    .await
}

/// Claims the next job for `host`, under three rules:
/// - order: the oldest queued job goes first, among those the next two rules allow;
/// - one at a time per session: a job is claimable only when its session has no running job
///   and no older queued job, so a session's jobs run one after another in acceptance order
///   whichever hosts run them;
/// - affinity: a session belongs to the host that ran its last job (`sessions.host`, which
///   has it live in its engine), however long ago; another host takes one of its jobs only
///   once that job has been queued for the affinity window (`affinity_cutoff` is now minus
///   the window: its owner is busy), or when the owner's lease ran out (it is dead).
///
/// Claims run one at a time across hosts (a transaction-scoped advisory lock: "no running
/// job of this session" and the claim must not interleave with another host's claim), and
/// `FOR UPDATE SKIP LOCKED` passes over rows another transaction holds (a cancel, a finish).
/// The lock, the claim and the session's new owner are one call of the database function
/// `claim_next_job` (migrations/0003, its affinity rule from 0004), one round trip.
pub async fn claim_next_job(
    pool: &PgPool,
    host: &str,
    now: &str,
    affinity_cutoff: &str,
    lease_ms: i64,
) -> Result<Option<ClaimRow>, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT (c.job).seq AS "seq!", (c.job).id AS "id!", (c.job).kind AS "kind!",
                  (c.job).language AS "language?", (c.job).session_id AS "session_id?",
                  (c.job).code_id AS "code_id?", (c.job).code AS "code!",
                  (c.job).stdin AS "stdin?", (c.job).timeout_ms AS "timeout_ms!",
                  (c.job).status AS "status!", (c.job).attempts AS "attempts!",
                  (c.job).result AS "result?", (c.job).results_json AS "results_json?",
                  (c.job).stdout AS "stdout?", (c.job).stderr AS "stderr?",
                  (c.job).output_truncated AS "output_truncated!", (c.job).error AS "error?",
                  (c.job).error_kind AS "error_kind?",
                  (c.job).idempotency_key AS "idempotency_key?",
                  (c.job).created_at AS "created_at!", (c.job).started_at AS "started_at?",
                  (c.job).finished_at AS "finished_at?", (c.job).duration_ms AS "duration_ms?",
                  c.session_generation AS "session_generation?",
                  c.cell_position AS "cell_position?", c.more_queued AS "more_queued!"
           FROM claim_next_job($1, $2, $3, $4, $5) AS c"#,
        CLAIM_LOCK,
        host,
        now,
        affinity_cutoff,
        lease_ms,
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|row| ClaimRow {
        job: JobRow {
            seq: row.seq,
            id: row.id,
            kind: row.kind,
            language: row.language,
            session_id: row.session_id,
            code_id: row.code_id,
            code: row.code,
            stdin: row.stdin,
            timeout_ms: row.timeout_ms,
            status: row.status,
            attempts: row.attempts,
            result: row.result,
            results_json: row.results_json,
            stdout: row.stdout,
            stderr: row.stderr,
            output_truncated: row.output_truncated,
            error: row.error,
            error_kind: row.error_kind,
            idempotency_key: row.idempotency_key,
            created_at: row.created_at,
            started_at: row.started_at,
            finished_at: row.finished_at,
            duration_ms: row.duration_ms,
            position: None,
        },
        session_generation: row.session_generation,
        cell_position: row.cell_position,
        more_queued: row.more_queued,
    }))
}

/// Stores the final states of running jobs that `host` runs (one statement; the outcomes
/// bound as one JSON array of objects with the job's outcome columns). A job rescued from
/// this host meanwhile (it was thought dead) is not overwritten.
pub async fn finish_jobs(
    pool: &PgPool,
    host: &str,
    now: &str,
    outcomes_json: &str,
) -> Result<Vec<JobRow>, sqlx::Error> {
    query_jobs!(
        JobRow,
        "UPDATE jobs SET status = o.new_status, result = o.new_result, \
             results_json = o.new_results, stdout = o.new_stdout, stderr = o.new_stderr, \
             output_truncated = o.new_output_truncated, error = o.new_error, \
             error_kind = o.new_error_kind, finished_at = $1::TEXT, \
             duration_ms = ROUND(EXTRACT(EPOCH FROM ($1::TEXT::TIMESTAMPTZ - started_at::TIMESTAMPTZ)) \
                                 * 1000)::BIGINT \
         FROM (SELECT value ->> 'id' AS new_id, value ->> 'status' AS new_status, \
                      value ->> 'result' AS new_result, \
                      CASE WHEN jsonb_typeof(value -> 'results') = 'array' \
                           THEN (value -> 'results')::TEXT END AS new_results, \
                      value ->> 'stdout' AS new_stdout, value ->> 'stderr' AS new_stderr, \
                      (value ->> 'output_truncated')::BOOLEAN AS new_output_truncated, \
                      value ->> 'error' AS new_error, value ->> 'error_kind' AS new_error_kind \
               FROM jsonb_array_elements($3::TEXT::JSONB) AS value) AS o \
         WHERE jobs.id = o.new_id AND jobs.status = 'running' AND jobs.host = $2 \
         RETURNING ",
        r#", NULL::BIGINT AS "position?""#,
        now,
        host,
        outcomes_json,
    )
    .fetch_all(pool)
    .await
}

/// Records that `host` is alive (at start-up and every beat).
pub async fn heartbeat(pool: &PgPool, host: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO hosts (id) VALUES ($1) \
         ON CONFLICT (id) DO UPDATE SET beat_at = now()",
        host
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Rescues the running jobs of hosts that are gone: with `own`, `host`'s own (it just
/// started, so whatever its previous life ran was interrupted), and those of every host whose last beat is
/// older than `lease_ms`. A job interrupted for the first time is queued again (keeping its
/// `seq`, so its place in its session's order), one interrupted twice fails.
pub async fn rescue_jobs(
    pool: &PgPool,
    host: &str,
    own: bool,
    lease_ms: i64,
    now: &str,
) -> Result<Rescued, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query_scalar!("SELECT pg_advisory_xact_lock($1)", CLAIM_LOCK)
        .fetch_one(&mut *tx)
        .await?;
    let failed = sqlx::query!(
        "UPDATE jobs SET status = 'failed', finished_at = $1, \
             error = 'interrupted by restart (twice); not run again' \
         WHERE status = 'running' AND attempts >= 2 \
           AND (host IS NULL OR (host = $2 AND $4) OR host NOT IN ( \
                SELECT id FROM hosts \
                WHERE beat_at > now() - make_interval(secs => $3::BIGINT / 1000.0)))",
        now,
        host,
        lease_ms,
        own,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let requeued = sqlx::query!(
        "UPDATE jobs SET status = 'queued', started_at = NULL, host = NULL \
         WHERE status = 'running' \
           AND (host IS NULL OR (host = $1 AND $3) OR host NOT IN ( \
                SELECT id FROM hosts \
                WHERE beat_at > now() - make_interval(secs => $2::BIGINT / 1000.0)))",
        host,
        lease_ms,
        own,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(Rescued { requeued, failed })
}

/// Counts of jobs by state, and the oldest running job.
pub async fn queue_counts(
    pool: &PgPool,
) -> Result<(Vec<(String, i64)>, Option<String>), sqlx::Error> {
    let counts = sqlx::query!(r#"SELECT status AS "status!", n AS "n!" FROM job_counts"#)
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|row| (row.status, row.n))
        .collect();
    let running = sqlx::query_scalar!(
        r#"SELECT id AS "id!" FROM jobs WHERE status = 'running' ORDER BY seq LIMIT 1"#
    )
    .fetch_optional(pool)
    .await?;
    Ok((counts, running))
}

/// A session's cells in position order.
pub async fn history(pool: &PgPool, session: &str) -> Result<Vec<CellRow>, sqlx::Error> {
    sqlx::query_as!(
        CellRow,
        r#"SELECT position AS "position!", code_id AS "code_id!", code AS "code!",
                  created_at AS "created_at!", updated_at AS "updated_at!",
                  last_job_id AS "last_job_id?", last_result AS "last_result?"
           FROM history WHERE session_id = $1 ORDER BY position"#,
        session
    )
    .fetch_all(pool)
    .await
}

/// A cut's target position and the number of cells of the session.
pub async fn cut_target(
    pool: &PgPool,
    session: &str,
    code_id: &str,
) -> Result<(Option<i64>, i64), sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT (SELECT position FROM history WHERE session_id = $1 AND code_id = $2)
                      AS "target?",
                  (SELECT COUNT(*) FROM history WHERE session_id = $1) AS "cells!""#,
        session,
        code_id,
    )
    .fetch_one(pool)
    .await?;
    Ok((row.target, row.cells))
}

/// A session's creation and last change, when it exists.
pub async fn session_times(
    pool: &PgPool,
    session: &str,
) -> Result<Option<(String, String)>, sqlx::Error> {
    Ok(sqlx::query!(
        "SELECT created_at, updated_at FROM sessions WHERE id = $1",
        session
    )
    .fetch_optional(pool)
    .await?
    .map(|row| (row.created_at, row.updated_at)))
}

/// The number of cells (the last position).
pub async fn history_length(pool: &PgPool, session: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT COALESCE(MAX(position), 0) AS "length!" FROM history WHERE session_id = $1"#,
        session
    )
    .fetch_one(pool)
    .await
}

/// Creates an empty session when missing.
pub async fn create_session(pool: &PgPool, session: &str, now: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO sessions (id, generation, created_at, updated_at) \
         VALUES ($1, 0, $2, $2) ON CONFLICT (id) DO NOTHING",
        session,
        now,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// A session's job log in acceptance order.
pub async fn session_jobs(
    pool: &PgPool,
    session: &str,
    limit: i64,
    offset: i64,
) -> Result<Vec<JobRow>, sqlx::Error> {
    query_jobs!(
        JobRow,
        "SELECT ",
        r#", NULL::BIGINT AS "position?"
           FROM jobs WHERE session_id = $1 ORDER BY seq LIMIT $2 OFFSET $3"#,
        session,
        limit,
        offset,
    )
    .fetch_all(pool)
    .await
}

/// Every session with its counts, newest activity first.
pub async fn list_sessions(
    pool: &PgPool,
    limit: i64,
    offset: i64,
) -> Result<Vec<SessionRow>, sqlx::Error> {
    sqlx::query_as!(
        SessionRow,
        r#"SELECT s.id AS "id!", s.created_at AS "created_at!", s.updated_at AS "updated_at!",
                  (SELECT COUNT(*) FROM history h WHERE h.session_id = s.id) AS "cells!",
                  (SELECT COUNT(*) FROM jobs j WHERE j.session_id = s.id) AS "jobs!",
                  (SELECT MIN(created_at) FROM jobs j WHERE j.session_id = s.id)
                      AS "first_activity?",
                  (SELECT MAX(created_at) FROM jobs j WHERE j.session_id = s.id)
                      AS "last_activity?"
           FROM sessions s
           ORDER BY COALESCE((SELECT MAX(created_at) FROM jobs j WHERE j.session_id = s.id),
                    s.updated_at) DESC, s.id
           LIMIT $1 OFFSET $2"#,
        limit,
        offset,
    )
    .fetch_all(pool)
    .await
}

/// The number of sessions.
pub async fn count_sessions(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT COUNT(*) AS "count!" FROM sessions"#)
        .fetch_one(pool)
        .await
}

/// The server's secret `name`, made from `fresh` the first time (the same for every host).
pub async fn server_secret(
    pool: &PgPool,
    name: &str,
    fresh: &[u8],
) -> Result<Vec<u8>, sqlx::Error> {
    sqlx::query!(
        "INSERT INTO server_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        name,
        fresh,
    )
    .execute(pool)
    .await?;
    sqlx::query_scalar!("SELECT value FROM server_secrets WHERE name = $1", name)
        .fetch_one(pool)
        .await
}
