//! The store on PostgreSQL: the same operations as the SQLite store, with the same records,
//! over the statements of the crate `metta-learner-store-postgres` (where the SQL and the
//! schema live, checked against PostgreSQL).
//!
//! Several server processes ("hosts") may share one PostgreSQL database. What that adds:
//! - each host has an id (`HOST_ID`, default `<hostname>:<port>`), beats every third of the
//!   lease (`HOST_LEASE_SECS`), and marks the jobs it claims with it;
//! - a claim takes the oldest queued job whose session has nothing running and nothing older
//!   queued (so a session's jobs never run on two hosts at once and keep acceptance order),
//!   leaving a job of a session that another live host ran last to that host until the job
//!   has been queued for `SESSION_AFFINITY_MS` (so the session stays live there instead of
//!   being replayed);
//! - at start-up a host rescues its own previous life's running jobs, and every beat it
//!   rescues those of hosts whose beat is older than the lease (re-queued once, failed when
//!   interrupted twice);
//! - `PgWakeups` LISTENs for jobs accepted and finished on any host, so a long-wait on one
//!   host answers when another host finishes the job, and an idle worker wakes for a job
//!   accepted elsewhere.

use std::sync::Arc;
use std::time::Duration;

use metta_learner_store_postgres as pg;
use metta_learner_store_postgres::sqlx::postgres::PgListener;
use metta_learner_store_postgres::sqlx::PgPool;
use sqlx::types::Json;

use super::jobs::{CancelOutcome, EnqueueOutcome, Recovery};
use super::records::OutcomeRow;
use super::sessions::CutOutcome;
use super::{
    now_timestamp, CellRecord, ClaimedJob, JobOutcome, JobRecord, NewJob, OldestClaim, QueueCounts,
    SessionSummary, SessionView, StoreError, StoreResult,
};
use crate::domain::{CodeId, ErrorKind, JobId, JobKind, JobStatus, Language, SessionId};
use crate::job_signals::JobSignals;

/// The PostgreSQL store; cheap to clone.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    url: Arc<str>,
    host: Arc<str>,
    lease: Duration,
    affinity: Duration,
}

fn corrupt(what: &str, value: &str, err: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what} '{value}': {err}"))
}

fn parse<T: std::str::FromStr>(what: &str, value: &str) -> StoreResult<T>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|err| corrupt(what, value, err))
}

fn session(value: Option<String>) -> StoreResult<Option<SessionId>> {
    value
        .map(|v| SessionId::parse(&v).map_err(|err| corrupt("session id", &v, err)))
        .transpose()
}

fn code_id(value: Option<String>) -> StoreResult<Option<CodeId>> {
    value
        .map(|v| CodeId::parse(&v).map_err(|err| corrupt("code id", &v, err)))
        .transpose()
}

fn job_record(row: pg::JobRow) -> StoreResult<JobRecord> {
    Ok(JobRecord {
        seq: row.seq,
        id: parse("job id", &row.id)?,
        kind: parse::<JobKind>("job kind", &row.kind)?,
        language: row
            .language
            .map(|v| parse::<Language>("language", &v))
            .transpose()?,
        session_id: session(row.session_id)?,
        code_id: code_id(row.code_id)?,
        code: row.code,
        stdin: row.stdin,
        timeout_ms: row.timeout_ms,
        status: parse::<JobStatus>("job status", &row.status)?,
        attempts: row.attempts,
        position: row.position,
        result: row.result,
        results: row
            .results_json
            .map(|v| {
                serde_json::from_str(&v)
                    .map(Json)
                    .map_err(|err| corrupt("results", &v, err))
            })
            .transpose()?,
        stdout: row.stdout,
        stderr: row.stderr,
        output_truncated: row.output_truncated,
        error: row.error,
        error_kind: row
            .error_kind
            .map(|v| parse::<ErrorKind>("error kind", &v))
            .transpose()?,
        created_at: row.created_at,
        started_at: row.started_at,
        finished_at: row.finished_at,
        duration_ms: row.duration_ms,
    })
}

fn job_records(rows: Vec<pg::JobRow>) -> StoreResult<Vec<JobRecord>> {
    rows.into_iter().map(job_record).collect()
}

impl PgStore {
    /// Connects to `url`, applies pending migrations, records this host's first beat and
    /// rescues its own previous life's running jobs (see `recover_interrupted_jobs`).
    pub async fn open(
        url: &str,
        host: String,
        lease: Duration,
        affinity: Duration,
    ) -> StoreResult<PgStore> {
        let pool = pg::connect(url, 16).await?;
        pg::MIGRATOR.run(&pool).await?;
        pg::heartbeat(&pool, &host).await?;
        Ok(PgStore {
            pool,
            url: url.into(),
            host: host.into(),
            lease,
            affinity,
        })
    }

    fn lease_ms(&self) -> i64 {
        i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX)
    }

    pub(super) async fn enqueue_job(
        &self,
        job: &NewJob,
        max_queued: u64,
    ) -> StoreResult<EnqueueOutcome> {
        if let Some(outcome) = self.earlier_job_with_key(job).await? {
            return Ok(outcome);
        }
        let id = job.id.to_string();
        let row = pg::NewJobRow {
            id: &id,
            kind: <&'static str>::from(job.kind),
            language: job.language.map(Language::as_str),
            session_id: job.session_id.as_ref().map(|s| s.as_str()),
            code_id: job.code_id.as_ref().map(CodeId::as_str),
            code: &job.code,
            stdin: job.stdin.as_deref(),
            timeout_ms: i64::try_from(job.timeout_ms).unwrap_or(i64::MAX),
            idempotency_key: job.idempotency_key.as_deref(),
            idempotency_scope: job.idempotency_scope.as_deref(),
        };
        let max_queued = i64::try_from(max_queued).unwrap_or(i64::MAX);
        if let Some(row) = pg::insert_job(&self.pool, row, &now_timestamp(), max_queued).await? {
            return Ok(EnqueueOutcome::Accepted(job_record(row)?));
        }
        Ok(self
            .earlier_job_with_key(job)
            .await?
            .unwrap_or(EnqueueOutcome::QueueFull))
    }

    async fn earlier_job_with_key(&self, job: &NewJob) -> StoreResult<Option<EnqueueOutcome>> {
        let (Some(key), Some(scope)) = (&job.idempotency_key, &job.idempotency_scope) else {
            return Ok(None);
        };
        let Some(row) = pg::job_with_key(&self.pool, scope, key).await? else {
            return Ok(None);
        };
        let earlier = job_record(row)?;
        Ok(Some(if job.asks_for_the_same_as(&earlier) {
            EnqueueOutcome::Duplicate(earlier)
        } else {
            EnqueueOutcome::KeyReused
        }))
    }

    pub(super) async fn get_job(&self, id: JobId) -> StoreResult<Option<JobRecord>> {
        pg::get_job(&self.pool, &id.to_string())
            .await?
            .map(job_record)
            .transpose()
    }

    pub(super) async fn cancel_job(&self, id: JobId) -> StoreResult<CancelOutcome> {
        if let Some(row) = pg::cancel_job(&self.pool, &id.to_string(), &now_timestamp()).await? {
            return Ok(CancelOutcome::Cancelled(job_record(row)?));
        }
        Ok(match self.get_job(id).await? {
            Some(record) => CancelOutcome::NotQueued(record),
            None => CancelOutcome::NotFound,
        })
    }

    pub(super) async fn claim_oldest_job(&self) -> StoreResult<Option<OldestClaim>> {
        let now = chrono::Utc::now();
        let cutoff = (now - chrono::Duration::from_std(self.affinity).unwrap_or_default())
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let now = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let Some(row) =
            pg::claim_next_job(&self.pool, &self.host, &now, &cutoff, self.lease_ms()).await?
        else {
            return Ok(None);
        };
        Ok(Some(OldestClaim {
            more_queued: row.more_queued,
            claimed: ClaimedJob {
                generation: row.session_generation.unwrap_or(0),
                cell_position: row.cell_position,
                job: job_record(row.job)?,
            },
        }))
    }

    /// No batches on PostgreSQL: each job is claimed by the claim rule of its own (a batch
    /// read here could hold a job another host claims in between).
    pub(super) async fn oldest_queued_jobs(&self, _limit: usize) -> StoreResult<Vec<ClaimedJob>> {
        Ok(Vec::new())
    }

    pub(super) async fn claim_queued_jobs(
        &self,
        _jobs: Vec<ClaimedJob>,
        _started_at: &str,
    ) -> StoreResult<Vec<ClaimedJob>> {
        Ok(Vec::new())
    }

    pub(super) async fn finish_jobs(
        &self,
        outcomes: &[(JobId, &JobOutcome)],
    ) -> StoreResult<Vec<JobRecord>> {
        if outcomes.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<OutcomeRow<'_>> = outcomes
            .iter()
            .map(|(id, outcome)| OutcomeRow::new(*id, outcome))
            .collect();
        let json = serde_json::to_string(&rows)
            .map_err(|err| StoreError::Corrupt(format!("cannot encode outcomes: {err}")))?;
        job_records(pg::finish_jobs(&self.pool, &self.host, &now_timestamp(), &json).await?)
    }

    /// Rescues this host's own running jobs (its previous life died) and those of hosts
    /// whose beat is older than the lease.
    pub(super) async fn recover_interrupted_jobs(&self) -> StoreResult<Recovery> {
        let rescued = pg::rescue_jobs(
            &self.pool,
            &self.host,
            true,
            self.lease_ms(),
            &now_timestamp(),
        )
        .await?;
        Ok(Recovery {
            requeued: rescued.requeued,
            failed: rescued.failed,
        })
    }

    /// One beat: this host is alive; and the jobs of hosts whose lease ran out are rescued.
    /// (This host's own running jobs are not touched: they are live.)
    pub async fn beat(&self) -> StoreResult<Recovery> {
        pg::heartbeat(&self.pool, &self.host).await?;
        let rescued = pg::rescue_jobs(
            &self.pool,
            &self.host,
            false,
            self.lease_ms(),
            &now_timestamp(),
        )
        .await?;
        Ok(Recovery {
            requeued: rescued.requeued,
            failed: rescued.failed,
        })
    }

    pub(super) async fn queue_counts(&self) -> StoreResult<QueueCounts> {
        let (counts, running) = pg::queue_counts(&self.pool).await?;
        let mut by_status = std::collections::BTreeMap::new();
        for (status, n) in counts {
            by_status.insert(parse::<JobStatus>("job status", &status)?, n);
        }
        Ok(QueueCounts {
            by_status,
            running_job: running.map(|id| parse("job id", &id)).transpose()?,
        })
    }

    pub(super) async fn load_history(&self, session: &SessionId) -> StoreResult<Vec<CellRecord>> {
        pg::history(&self.pool, session.as_str())
            .await?
            .into_iter()
            .map(|row| {
                Ok(CellRecord {
                    position: row.position,
                    code_id: CodeId::parse(&row.code_id)
                        .map_err(|err| corrupt("code id", &row.code_id, err))?,
                    code: row.code,
                    created_at: row.created_at,
                    updated_at: row.updated_at,
                    last_job_id: row.last_job_id.map(|v| parse("job id", &v)).transpose()?,
                    last_result: row.last_result,
                })
            })
            .collect()
    }

    /// A cut: no other job of the session runs meanwhile on any host (the claim rule), so
    /// the history read here is the one the stored success cuts.
    pub(super) async fn finish_history_cut(
        &self,
        id: JobId,
        session: &SessionId,
        code_id: &CodeId,
        decide: impl FnOnce(&CutOutcome) -> JobOutcome,
    ) -> StoreResult<(CutOutcome, Option<JobRecord>)> {
        let (target, cells) =
            pg::cut_target(&self.pool, session.as_str(), code_id.as_str()).await?;
        let cut = match target {
            Some(position) => CutOutcome::Cut {
                remaining: position - 1,
            },
            None if cells == 0 => CutOutcome::EmptyHistory,
            None => CutOutcome::NotFound,
        };
        let outcome = decide(&cut);
        let mut records = self.finish_jobs(&[(id, &outcome)]).await?;
        Ok((cut, records.pop()))
    }

    pub(super) async fn session_view(
        &self,
        session: &SessionId,
    ) -> StoreResult<Option<SessionView>> {
        let Some((created_at, updated_at)) =
            pg::session_times(&self.pool, session.as_str()).await?
        else {
            return Ok(None);
        };
        Ok(Some(SessionView {
            id: session.clone(),
            created_at,
            updated_at,
            cells: self.load_history(session).await?,
        }))
    }

    pub(super) async fn history_length(&self, session: &SessionId) -> StoreResult<i64> {
        Ok(pg::history_length(&self.pool, session.as_str()).await?)
    }

    pub(super) async fn create_session(&self, session: &SessionId) -> StoreResult<()> {
        Ok(pg::create_session(&self.pool, session.as_str(), &now_timestamp()).await?)
    }

    pub(super) async fn session_jobs(
        &self,
        session: &SessionId,
        limit: i64,
        offset: i64,
    ) -> StoreResult<Vec<JobRecord>> {
        job_records(pg::session_jobs(&self.pool, session.as_str(), limit, offset).await?)
    }

    pub(super) async fn list_sessions(
        &self,
        limit: i64,
        offset: i64,
    ) -> StoreResult<Vec<SessionSummary>> {
        pg::list_sessions(&self.pool, limit, offset)
            .await?
            .into_iter()
            .map(|row| {
                Ok(SessionSummary {
                    id: SessionId::parse(&row.id)
                        .map_err(|err| corrupt("session id", &row.id, err))?,
                    created_at: row.created_at,
                    updated_at: row.updated_at,
                    cells: row.cells,
                    jobs: row.jobs,
                    first_activity: row.first_activity,
                    last_activity: row.last_activity,
                })
            })
            .collect()
    }

    pub(super) async fn count_sessions(&self) -> StoreResult<i64> {
        Ok(pg::count_sessions(&self.pool).await?)
    }

    pub(super) async fn server_secret(&self, name: &str, fresh: &[u8]) -> StoreResult<Vec<u8>> {
        Ok(pg::server_secret(&self.pool, name, fresh).await?)
    }

    pub(super) async fn close(&self) {
        self.pool.close().await;
    }

    /// Starts the tasks a host on a shared database runs: the beat (and rescue of dead
    /// hosts' jobs) every third of the lease, and the LISTEN of `PgWakeups`.
    pub fn start_host_tasks(
        &self,
        signals: Arc<JobSignals>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> PgWakeups {
        let beat = {
            let store = self.clone();
            let shutdown = shutdown.clone();
            let signals = signals.clone();
            tokio::spawn(async move {
                let every = (store.lease / 3).max(Duration::from_millis(100));
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(every) => {}
                        _ = shutdown.cancelled() => break,
                    }
                    match store.beat().await {
                        Ok(rescued) if rescued.requeued > 0 || rescued.failed > 0 => {
                            tracing::warn!(
                                requeued = rescued.requeued,
                                failed = rescued.failed,
                                "rescued the running jobs of a host whose lease ran out"
                            );
                            signals.job_accepted();
                        }
                        // A job held for a busy host's session may have outwaited the
                        // affinity window meanwhile: look once a beat.
                        Ok(_) => signals.job_accepted(),
                        Err(err) => tracing::error!("cannot beat: {err}"),
                    }
                }
            })
        };
        let listen = {
            let store = self.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = store.listen(&signals) => {}
                        _ = shutdown.cancelled() => break,
                    }
                    // The connection broke: a wake-up may have been missed, so wake the
                    // worker, and listen again after a pause.
                    signals.job_accepted();
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.cancelled() => break,
                    }
                }
            })
        };
        PgWakeups {
            tasks: vec![beat, listen],
        }
    }

    /// LISTENs until the connection breaks. `jobs_queued` wakes the worker when the job's
    /// session has no owner or is this host's (its owner gets it first; for another host's
    /// session the worker looks once the affinity window has passed, see `look_later`).
    /// `jobs_finished` of a job another host ran (or a cancelled one) wakes its long-waits
    /// on this host, which read its final record; the host that ran a job claims its
    /// session's next job itself, so no worker wakes for it.
    async fn listen(&self, signals: &Arc<JobSignals>) {
        let mut listener = match PgListener::connect(&self.url).await {
            Ok(listener) => listener,
            Err(err) => {
                tracing::error!("cannot LISTEN on PostgreSQL: {err}");
                return;
            }
        };
        if let Err(err) = listener.listen_all(["jobs_queued", "jobs_finished"]).await {
            tracing::error!("cannot LISTEN on PostgreSQL: {err}");
            return;
        }
        // Whatever happened before the LISTEN took effect is not missed: look once.
        signals.job_accepted();
        let look_later = LookLater::default();
        loop {
            let notification = match listener.recv().await {
                Ok(notification) => notification,
                Err(err) => {
                    tracing::warn!("the LISTEN connection broke: {err}");
                    return;
                }
            };
            // "<job id> <host>" (see migrations/0003 of the PostgreSQL store).
            let (id, host) = notification
                .payload()
                .split_once(' ')
                .unwrap_or((notification.payload(), ""));
            if notification.channel() == "jobs_queued" {
                if host.is_empty() || host == &*self.host {
                    signals.job_accepted();
                } else {
                    look_later.schedule(signals, self.affinity);
                }
                continue;
            }
            if host == &*self.host {
                continue;
            }
            if let Ok(id) = id.parse::<JobId>() {
                signals.job_finished(id, None);
            }
        }
    }
}

/// One wake-up of the worker scheduled for later (a job of another host's session may be
/// claimable once the affinity window has passed); notices meanwhile share it, so an idle
/// host looks once per window, not once per notice.
#[derive(Default)]
struct LookLater {
    scheduled: Arc<std::sync::atomic::AtomicBool>,
}

impl LookLater {
    fn schedule(&self, signals: &Arc<JobSignals>, after: Duration) {
        use std::sync::atomic::Ordering;
        if self.scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let (scheduled, signals) = (self.scheduled.clone(), signals.clone());
        tokio::spawn(async move {
            // A beat past the window: the session's wait is measured from its last job's
            // end, which was before the notice.
            tokio::time::sleep(after + Duration::from_millis(50)).await;
            scheduled.store(false, Ordering::Release);
            signals.job_accepted();
        });
    }
}

/// The background tasks of a host on PostgreSQL; stopped when dropped.
#[derive(Debug)]
pub struct PgWakeups {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for PgWakeups {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
