//! The one worker: claims the oldest queued job (or a batch of MeTTa jobs right behind each
//! other in the queue), runs it by kind, stores outcomes, announces them.
//!
//! Exactly one worker task exists, so claims happen one at a time and job order is acceptance
//! order (a batch holds one job per session; the engine answers them in queue order, running
//! those of live sessions side by side in their own processes). It owns the Python runner
//! and the engine supervisor. With an empty queue it sleeps until the API signals an accepted
//! job (no polling). On shutdown it stops claiming, gives the running jobs the grace period,
//! then abandons them (their rows stay `running`, and start-up recovery re-queues them).
//!
//! This file is the claim loop and what every job kind shares (storing, announcing, the
//! chores between jobs). The rest, one file per reason to change:
//!
//! ```text
//!  run() ── claim::claim_next_jobs ──▶ execute() ──┬─ metta_run      MeTTa runs, batched, in the engine
//!    ▲                                              ├─ python_run     one Python run in its interpreter
//!    └── reap leftovers, replace engine, ◀──────────┴─ session_change reset, reset-to, remove
//!        start interpreters ahead
//! ```
//!
//! The words a learner reads are `crate::learner_messages`'; the decisions (what an
//! outcome means for the job's final state, which jobs share a batch) are plain functions
//! with unit tests beside them. The worker never answers HTTP and writes no SQL.
//!
//! Its log lines about a job sit in a `job` span naming the job and the request that
//! submitted it (`job_span`), so a request's id finds its jobs' lines here too: one `info`
//! line when a job finishes (status, run time), `debug` when it starts (the hot path logs
//! little: each line costs the server a few microseconds per job).

mod claim;
mod metta_run;
mod python_run;
mod session_change;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::domain::{ErrorKind, JobId, JobKind, JobStatus, Language, SessionId};
use crate::engine::EngineSupervisor;
use crate::job_signals::JobSignals;
use crate::learner_messages;
use crate::python_runner::PythonRunner;
use crate::sandbox::reap_orphans;
use crate::store::{ClaimedJob, JobOutcome, JobRecord, Store};

/// The worker and everything it runs jobs with.
pub struct Worker {
    pub store: Store,
    pub signals: Arc<JobSignals>,
    pub python: PythonRunner,
    pub engine: EngineSupervisor,
    /// Most MeTTa jobs claimed and sent to the engine together (`MAX_BATCH_JOBS`).
    pub max_batch: usize,
}

impl Worker {
    /// Runs jobs until `shutdown` fires; a job running then gets `grace` to finish.
    pub async fn run(mut self, shutdown: CancellationToken, grace: Duration) {
        if let Err(reason) = self.engine.ensure_started().await {
            tracing::warn!("MeTTa engine not available: {reason}");
        }
        self.python.prepare_next();
        // Whether the queue may hold jobs: at start-up it may (recovered jobs); after a claim
        // the database says. An accepted job's signal (which waits for the worker if it is
        // busy) sets it again.
        let mut queue_may_hold_jobs = true;
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            if !queue_may_hold_jobs {
                tokio::select! {
                    _ = self.signals.wait_for_accepted_job() => {}
                    _ = shutdown.cancelled() => break,
                }
            }
            let claimed = match claim::claim_next_jobs(&self.store, self.max_batch).await {
                Ok((claimed, more)) => {
                    queue_may_hold_jobs = more;
                    if claimed.is_empty() {
                        continue;
                    }
                    claimed
                }
                Err(err) => {
                    tracing::error!("cannot claim the next job: {err}");
                    queue_may_hold_jobs = true;
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = shutdown.cancelled() => break,
                    }
                }
            };
            let first = claimed[0].job.id;
            let batch_size = claimed.len();
            for claimed in &claimed {
                job_span(&self.signals, &claimed.job).in_scope(|| {
                    tracing::debug!(batch_size, "job started");
                });
            }
            let batch_span = tracing::info_span!("batch", first_job_id = %first, jobs = batch_size);
            let finished = {
                let execute = self.execute(claimed).instrument(batch_span);
                tokio::pin!(execute);
                tokio::select! {
                    () = &mut execute => true,
                    _ = shutdown.cancelled() => {
                        tokio::select! {
                            () = &mut execute => true,
                            _ = tokio::time::sleep(grace) => false,
                        }
                    }
                }
            };
            if !finished {
                tracing::warn!(job = %first, "the running jobs did not finish within the shutdown grace; they are re-queued at the next start");
                break;
            }
            // Let the woken long-waits answer before the chores below: forking the next
            // child stalls this thread for a moment, and a woken task waits for it.
            tokio::task::yield_now().await;
            // Leftovers first: nothing the jobs left may meet the next child it could reach.
            // (Interpreters still being spawned are waited for, so they are not taken for
            // leftovers.)
            self.python.settle().await;
            self.reap_leftovers(first);
            self.engine.start_replacement().await;
            self.python.prepare_next();
        }
        self.engine.stop();
        tracing::info!("worker stopped");
    }

    /// Ends what the job left running: every child of the server (its subreaper) but the
    /// live engine and the waiting Python interpreter.
    fn reap_leftovers(&self, job: JobId) {
        let keep: Vec<u32> = self
            .engine
            .pid()
            .into_iter()
            .chain(self.python.waiting_pids())
            .collect();
        let reaped = reap_orphans(&keep);
        if reaped > 0 {
            tracing::info!(job = %job, reaped, "ended processes the job left behind");
        }
    }

    /// Runs claimed jobs (one, or a batch of MeTTa jobs), stores their outcomes and
    /// announces them.
    async fn execute(&mut self, mut claimed: Vec<ClaimedJob>) {
        if claimed.len() > 1 || is_metta_run(&claimed[0].job) {
            return self.run_metta(claimed).await;
        }
        let job = claimed.remove(0).job;
        let stored = match (job.kind, job.language) {
            (JobKind::Run, Some(Language::Python)) => self.run_python(&job).await,
            (JobKind::Run, _) => {
                let outcome = JobOutcome::with_error(
                    JobStatus::Failed,
                    ErrorKind::Service,
                    learner_messages::NO_LANGUAGE,
                );
                self.store.finish_job(job.id, &outcome).await
            }
            (JobKind::ResetSession, _) => self.reset_session(&job).await,
            (JobKind::ResetTo | JobKind::RemoveCell, _) => self.cut_history(&job).await,
        };
        let record = match stored {
            Ok(record) => record,
            Err(err) => {
                tracing::error!(job = %job.id, "cannot store the job's outcome: {err}");
                store_failure(&self.store, job.id).await
            }
        };
        announce(&self.signals, job.id, record);
    }
}

/// The session a job belongs to (a job stored without one belongs to the shared `default`).
fn session_of(job: &JobRecord) -> SessionId {
    job.session_id
        .clone()
        .unwrap_or_else(SessionId::default_session)
}

fn is_metta_run(job: &JobRecord) -> bool {
    job.kind == JobKind::Run && job.language == Some(Language::Metta)
}

/// Stores outcomes in one statement and announces the final records; when that fails, marks
/// each job failed on its own (so no job stays `running`).
async fn store_and_announce(store: &Store, signals: &JobSignals, outcomes: &[(JobId, JobOutcome)]) {
    let rows: Vec<(JobId, &JobOutcome)> = outcomes
        .iter()
        .map(|(id, outcome)| (*id, outcome))
        .collect();
    match store.finish_jobs(&rows).await {
        Ok(records) => {
            let mut records: HashMap<JobId, JobRecord> = records
                .into_iter()
                .map(|record| (record.id, record))
                .collect();
            for (id, _) in outcomes {
                announce(signals, *id, records.remove(id));
            }
        }
        Err(err) => {
            tracing::error!("cannot store {} jobs' outcomes: {err}", outcomes.len());
            for (id, _) in outcomes {
                let record = store_failure(store, *id).await;
                announce(signals, *id, record);
            }
        }
    }
}

/// The span of the worker's lines about `job`: its id, kind, and the request that submitted
/// it (`-` when unknown, e.g. a job recovered after a restart).
fn job_span(signals: &JobSignals, job: &JobRecord) -> tracing::Span {
    let origin = signals.origin_of(job.id);
    tracing::info_span!(
        "job",
        job_id = %job.id,
        kind = job.kind.as_str(),
        request_id = origin.as_ref().map_or("-", |id| id.as_str()),
    )
}

/// Logs a job's end (in its span) and wakes the requests waiting for it.
fn announce(signals: &JobSignals, id: JobId, record: Option<JobRecord>) {
    match &record {
        Some(job) => job_span(signals, job).in_scope(|| {
            crate::service_metrics::job_finished(job);
            tracing::info!(
                status = job.status.as_str(),
                duration_ms = job.duration_ms,
                "job finished"
            );
        }),
        None => tracing::warn!(job_id = %id, "job finished without a stored record"),
    }
    signals.job_finished(id, record);
}

/// Marks a running job failed because its outcome could not be stored.
async fn store_failure(store: &Store, id: JobId) -> Option<JobRecord> {
    let outcome = JobOutcome::with_error(
        JobStatus::Failed,
        ErrorKind::Service,
        learner_messages::OUTCOME_NOT_STORED,
    );
    store.finish_job(id, &outcome).await.unwrap_or_else(|err| {
        tracing::error!(job = %id, "cannot mark the job failed either: {err}");
        None
    })
}

fn job_timeout(job: &JobRecord) -> Duration {
    Duration::from_millis(job.timeout_ms.max(1) as u64)
}

/// A job record for the unit tests of the worker's decisions.
#[cfg(test)]
fn test_job(kind: JobKind, language: Option<Language>, session: Option<&str>) -> JobRecord {
    JobRecord {
        seq: 1,
        id: JobId::new(),
        kind,
        language,
        session_id: session.map(|name| crate::domain::SessionId::parse(name).expect("valid")),
        code_id: None,
        code: String::new(),
        stdin: None,
        timeout_ms: 1000,
        status: JobStatus::Running,
        attempts: 1,
        position: None,
        result: None,
        results: None,
        stdout: None,
        stderr: None,
        output_truncated: false,
        error: None,
        error_kind: None,
        created_at: String::new(),
        started_at: None,
        finished_at: None,
        duration_ms: None,
    }
}
