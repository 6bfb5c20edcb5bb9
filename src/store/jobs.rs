//! A job's life in the database: enqueue (with the queue cap and scoped idempotency keys),
//! read, cancel, claim, finish, recover after a crash, and the counts by state.
//!
//! Every statement that returns jobs names the same columns, written once in `query_jobs!`.

use sqlx::types::Json;

use super::group_commit::PendingInsert;
use super::records::{HeadRow, OutcomeRow};
use super::{
    now_timestamp, ClaimedJob, JobOutcome, JobRecord, NewJob, OldestClaim, QueueCounts, SqliteStore,
};
use super::{StoreError, StoreResult};
use crate::domain::{CodeId, ErrorKind, JobId, JobKind, JobStatus, Language, SessionId};

/// `sqlx::query_as!` into `$record` for a statement whose result columns are a job's columns
/// (between the literals `$head` and `$tail`), so every job query names them the same way.
/// The type annotations tell sqlx the domain type of each column and whether it may be NULL.
macro_rules! query_jobs {
    ($record:ty, $head:tt, $tail:tt $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            $record,
            $head
                + r#"seq AS "seq!", id AS "id!: JobId", kind AS "kind!: JobKind",
                     language AS "language?: Language", session_id AS "session_id?: SessionId",
                     code_id AS "code_id?: CodeId", code AS "code!", stdin AS "stdin?",
                     timeout_ms AS "timeout_ms!", status AS "status!: JobStatus",
                     attempts AS "attempts!", result AS "result?",
                     results_json AS "results?: Json<Vec<Vec<String>>>", stdout AS "stdout?",
                     stderr AS "stderr?", output_truncated AS "output_truncated!: bool",
                     error AS "error?", error_kind AS "error_kind?: ErrorKind",
                     created_at AS "created_at!", started_at AS "started_at?",
                     finished_at AS "finished_at?", duration_ms AS "duration_ms?""#
                + $tail
            $(, $arg)*
        )
    };
}
pub(super) use query_jobs;

/// What `enqueue_job` did.
#[derive(Debug)]
pub enum EnqueueOutcome {
    /// The job is stored and queued.
    Accepted(JobRecord),
    /// The client's idempotency key names an earlier job of the same request; that job.
    Duplicate(JobRecord),
    /// The client's idempotency key names an earlier job of a different request; nothing
    /// was stored, and nothing of that job may be shown.
    KeyReused,
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

/// Start-up recovery of jobs that were running when the previous process died.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    pub requeued: u64,
    pub failed: u64,
}

impl SqliteStore {
    /// Stores a new queued job, unless the queue is full or the client's idempotency key is
    /// known. One statement decides and inserts, so the cap holds under concurrent submitters.
    ///
    /// Group commit: the job joins the inserts waiting for the writer, and a task stores all
    /// of them in one transaction (each still its own statement, with its own cap check and
    /// position), so concurrent submitters share one commit. Each caller is answered only
    /// once that commit is done.
    pub async fn enqueue_job(&self, job: &NewJob, max_queued: u64) -> StoreResult<EnqueueOutcome> {
        if let Some(outcome) = self.earlier_job_with_key(job).await? {
            return Ok(outcome);
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        let start_flush = self.waiting_inserts.push(PendingInsert {
            job: job.clone(),
            max_queued,
            reply,
        });
        // A task of its own, so a submitter that goes away (its client hung up) cannot cut
        // short a commit that other submitters wait for.
        if start_flush {
            let store = self.clone();
            tokio::spawn(async move { store.store_waiting_inserts().await });
        }
        let inserted = answer
            .await
            .map_err(|_| StoreError::Shared("the insert was abandoned".into()))??;
        if let Some(record) = inserted {
            return Ok(EnqueueOutcome::Accepted(record));
        }
        // Either the queue is full or a concurrent request won the idempotency key.
        Ok(self
            .earlier_job_with_key(job)
            .await?
            .unwrap_or(EnqueueOutcome::QueueFull))
    }

    /// The earlier job the client's idempotency key names, as `Duplicate` (same request) or
    /// `KeyReused` (another request).
    async fn earlier_job_with_key(&self, job: &NewJob) -> StoreResult<Option<EnqueueOutcome>> {
        let (Some(key), Some(scope)) = (&job.idempotency_key, &job.idempotency_scope) else {
            return Ok(None);
        };
        let mut reader = self.reader().await?;
        let earlier = query_jobs!(
            JobRecord,
            "SELECT ",
            r#", CASE WHEN status = 'queued' THEN
                     (SELECT COUNT(*) FROM jobs AS ahead
                      WHERE ahead.status = 'queued' AND ahead.seq < jobs.seq) + 1
                 END AS "position?: i64"
               FROM jobs WHERE idempotency_scope = ? AND idempotency_key = ?"#,
            scope,
            key,
        )
        .fetch_optional(&mut *reader)
        .await?;
        Ok(earlier.map(|earlier| {
            if job.asks_for_the_same_as(&earlier) {
                EnqueueOutcome::Duplicate(earlier)
            } else {
                EnqueueOutcome::KeyReused
            }
        }))
    }

    /// One job with its queue position (when queued).
    pub async fn get_job(&self, id: JobId) -> StoreResult<Option<JobRecord>> {
        let mut reader = self.reader().await?;
        Ok(query_jobs!(
            JobRecord,
            "SELECT ",
            r#", CASE WHEN status = 'queued' THEN
                     (SELECT COUNT(*) FROM jobs AS ahead
                      WHERE ahead.status = 'queued' AND ahead.seq < jobs.seq) + 1
                 END AS "position?: i64"
               FROM jobs WHERE id = ?"#,
            id,
        )
        .fetch_optional(&mut *reader)
        .await?)
    }

    /// Cancels a job that is still queued.
    pub async fn cancel_job(&self, id: JobId) -> StoreResult<CancelOutcome> {
        let now = now_timestamp();
        let cancelled = {
            let mut writer = self.writer().await?;
            query_jobs!(
                JobRecord,
                "UPDATE jobs SET status = 'cancelled', finished_at = ?, \
                     error = 'cancelled by client' \
                 WHERE id = ? AND status = 'queued' RETURNING ",
                r#", NULL AS "position?: i64""#,
                now,
                id,
            )
            .fetch_optional(&mut *writer)
            .await?
        };
        if let Some(record) = cancelled {
            return Ok(CancelOutcome::Cancelled(record));
        }
        Ok(match self.get_job(id).await? {
            Some(record) => CancelOutcome::NotQueued(record),
            None => CancelOutcome::NotFound,
        })
    }

    /// Moves the oldest queued job to `running` (one statement) and returns it with its
    /// session's generation and its cell's position, and whether more jobs are queued behind
    /// it; `None` when the queue is empty.
    pub async fn claim_oldest_job(&self) -> StoreResult<Option<OldestClaim>> {
        let now = now_timestamp();
        let mut writer = self.writer().await?;
        let row = query_jobs!(
            HeadRow,
            "UPDATE jobs SET status = 'running', started_at = ?, attempts = attempts + 1 \
             WHERE seq = (SELECT seq FROM jobs WHERE status = 'queued' ORDER BY seq LIMIT 1) \
             RETURNING ",
            r#", NULL AS "position?: i64",
                 (SELECT generation FROM sessions WHERE sessions.id = jobs.session_id)
                     AS "session_generation?: i64",
                 (SELECT position FROM history WHERE history.session_id = jobs.session_id
                      AND history.code_id = COALESCE(jobs.code_id, jobs.id))
                     AS "cell_position?: i64",
                 EXISTS (SELECT 1 FROM jobs AS behind
                         WHERE behind.status = 'queued' AND behind.seq > jobs.seq)
                     AS "more_queued?: bool""#,
            now,
        )
        .fetch_optional(&mut *writer)
        .await?;
        Ok(row.map(|row| OldestClaim {
            more_queued: row.more_queued.unwrap_or(true),
            claimed: ClaimedJob::from(row),
        }))
    }

    /// The oldest `limit` queued jobs, with their sessions' generations and cells' positions
    /// (candidates for the batch of a job just claimed).
    pub async fn oldest_queued_jobs(&self, limit: usize) -> StoreResult<Vec<ClaimedJob>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut writer = self.writer().await?;
        let rows = query_jobs!(
            HeadRow,
            "SELECT ",
            r#", NULL AS "position?: i64",
                 (SELECT generation FROM sessions WHERE sessions.id = jobs.session_id)
                     AS "session_generation?: i64",
                 (SELECT position FROM history WHERE history.session_id = jobs.session_id
                      AND history.code_id = COALESCE(jobs.code_id, jobs.id))
                     AS "cell_position?: i64",
                 NULL AS "more_queued?: bool"
               FROM jobs WHERE status = 'queued' ORDER BY seq LIMIT ?"#,
            limit,
        )
        .fetch_all(&mut *writer)
        .await?;
        Ok(rows.into_iter().map(ClaimedJob::from).collect())
    }

    /// Moves queued jobs read by `oldest_queued_jobs` to `running` (one statement), stamped
    /// as claimed at `started_at` (the time of their batch), and returns those it moved (a
    /// job cancelled in between stays cancelled and is left out).
    pub async fn claim_queued_jobs(
        &self,
        jobs: Vec<ClaimedJob>,
        started_at: &str,
    ) -> StoreResult<Vec<ClaimedJob>> {
        if jobs.is_empty() {
            return Ok(jobs);
        }
        let seqs = Json(
            jobs.iter()
                .map(|claimed| claimed.job.seq)
                .collect::<Vec<_>>(),
        );
        let claimed: std::collections::HashSet<i64> = {
            let mut writer = self.writer().await?;
            sqlx::query_scalar!(
                r#"UPDATE jobs SET status = 'running', started_at = ?, attempts = attempts + 1
                   WHERE status = 'queued' AND seq IN (SELECT value FROM json_each(?))
                   RETURNING seq AS "seq!: i64""#,
                started_at,
                seqs,
            )
            .fetch_all(&mut *writer)
            .await?
            .into_iter()
            .collect()
        };
        Ok(jobs
            .into_iter()
            .filter(|candidate| claimed.contains(&candidate.job.seq))
            .map(|mut candidate| {
                candidate.job.status = JobStatus::Running;
                candidate.job.started_at = Some(started_at.to_string());
                candidate.job.attempts += 1;
                candidate
            })
            .collect())
    }

    /// Stores the final state of a running job (one statement) and returns its final record.
    /// A job that changes a session's history (a MeTTa run, a reset, a cut that succeeded)
    /// changes it in the same statement, by the triggers of `migrations/`.
    pub async fn finish_job(
        &self,
        id: JobId,
        outcome: &JobOutcome,
    ) -> StoreResult<Option<JobRecord>> {
        let mut records = self.finish_jobs(&[(id, outcome)]).await?;
        Ok(records.pop())
    }

    /// `finish_job` for several running jobs at once: one statement (the outcomes bound as
    /// one JSON array), one commit. Returns the final records of the jobs that were running
    /// (in no particular order): a stale worker must not overwrite anything.
    pub async fn finish_jobs(
        &self,
        outcomes: &[(JobId, &JobOutcome)],
    ) -> StoreResult<Vec<JobRecord>> {
        if outcomes.is_empty() {
            return Ok(Vec::new());
        }
        let rows = Json(
            outcomes
                .iter()
                .map(|(id, outcome)| OutcomeRow::new(*id, outcome))
                .collect::<Vec<_>>(),
        );
        let now = now_timestamp();
        let mut writer = self.writer().await?;
        Ok(query_jobs!(
            JobRecord,
            "UPDATE jobs SET status = o.status, result = o.result, results_json = o.results, \
                 stdout = o.stdout, stderr = o.stderr, output_truncated = o.output_truncated, \
                 error = o.error, error_kind = o.error_kind, finished_at = ?1, \
                 duration_ms = CAST(ROUND((julianday(?1) - julianday(started_at)) * 86400000) \
                                    AS INTEGER) \
             FROM (SELECT value ->> 'id' AS id, value ->> 'status' AS status, \
                          value ->> 'result' AS result, json_extract(value, '$.results') AS results, \
                          value ->> 'stdout' AS stdout, value ->> 'stderr' AS stderr, \
                          value ->> 'output_truncated' AS output_truncated, \
                          value ->> 'error' AS error, value ->> 'error_kind' AS error_kind \
                   FROM json_each(?2)) AS o \
             WHERE jobs.id = o.id AND jobs.status = 'running' \
             RETURNING ",
            r#", NULL AS "position?: i64""#,
            now,
            rows,
        )
        .fetch_all(&mut *writer)
        .await?)
    }

    /// Re-queues jobs interrupted by the death of the previous process (first interruption)
    /// and fails those interrupted twice, so a job that kills the service cannot loop forever.
    pub async fn recover_interrupted_jobs(&self) -> StoreResult<Recovery> {
        let now = now_timestamp();
        let mut writer = self.writer().await?;
        let mut tx = sqlx::Connection::begin(&mut *writer).await?;
        let failed = sqlx::query!(
            "UPDATE jobs SET status = 'failed', finished_at = ?, \
                 error = 'interrupted by restart (twice); not run again' \
             WHERE status = 'running' AND attempts >= 2",
            now,
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let requeued = sqlx::query!(
            "UPDATE jobs SET status = 'queued', started_at = NULL WHERE status = 'running'"
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(Recovery { requeued, failed })
    }

    /// Counts of jobs by state and the running job's id.
    pub async fn queue_counts(&self) -> StoreResult<QueueCounts> {
        let mut reader = self.reader().await?;
        let by_status = sqlx::query!(
            r#"SELECT status AS "status!: JobStatus", n AS "n!: i64" FROM job_counts"#
        )
        .fetch_all(&mut *reader)
        .await?
        .into_iter()
        .map(|row| (row.status, row.n))
        .collect();
        let running_job = sqlx::query_scalar!(
            r#"SELECT id AS "id!: JobId" FROM jobs WHERE status = 'running' ORDER BY seq LIMIT 1"#
        )
        .fetch_optional(&mut *reader)
        .await?;
        Ok(QueueCounts {
            by_status,
            running_job,
        })
    }
}

/// One statement: the cap check, the insert, the session's row (a trigger) and the job's
/// queue position, all or nothing. `None`: the queue is full or the idempotency key is taken.
pub(super) async fn insert_job(
    connection: &mut sqlx::SqliteConnection,
    job: &NewJob,
    max_queued: u64,
) -> StoreResult<Option<JobRecord>> {
    let timeout_ms = i64::try_from(job.timeout_ms).unwrap_or(i64::MAX);
    let max_queued = i64::try_from(max_queued).unwrap_or(i64::MAX);
    let now = now_timestamp();
    Ok(query_jobs!(
        JobRecord,
        "INSERT INTO jobs (id, kind, language, session_id, code_id, code, stdin, timeout_ms, \
                           status, idempotency_key, idempotency_scope, created_at) \
         SELECT ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ? \
         WHERE (SELECT n FROM job_counts WHERE status = 'queued') < ? \
         ON CONFLICT DO NOTHING \
         RETURNING ",
        r#", (SELECT COUNT(*) FROM jobs AS ahead
              WHERE ahead.status = 'queued' AND ahead.seq < jobs.seq) + 1 AS "position?: i64""#,
        job.id,
        job.kind,
        job.language,
        job.session_id,
        job.code_id,
        job.code,
        job.stdin,
        timeout_ms,
        job.idempotency_key,
        job.idempotency_scope,
        now,
        max_queued,
    )
    .fetch_optional(connection)
    .await?)
}
