//! The job queue as the API sees it: submit a job (durable before anyone is told its id),
//! wake the worker, and wait for a job to reach a final state. Both API layers (v1 and the
//! legacy playground endpoints) go through here; neither talks to the worker directly.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::domain::JobId;
use crate::job_signals::{FinishWaiter, JobSignals};
use crate::request_context::RequestId;
use crate::store::{CancelOutcome, EnqueueOutcome, JobRecord, NewJob, Store, StoreError};

/// What a submission did.
#[derive(Debug)]
pub enum Submission {
    /// A new job, queued.
    Accepted(JobRecord),
    /// The idempotency key named an earlier job; that job, in its current state.
    Existing(JobRecord),
    /// The client's idempotency key names an earlier job of a different request; nothing
    /// was stored, and nothing of that job may be shown.
    KeyReused,
    /// A request with the same client and idempotency key is still being accepted.
    KeyInFlight,
    /// The queue is at its cap; nothing was stored.
    QueueFull,
}

/// Submits and waits for jobs; cheap to clone.
#[derive(Debug, Clone)]
pub struct JobQueue {
    store: Store,
    signals: Arc<JobSignals>,
    max_queued: u64,
    /// Long waits end early at shutdown, so the server can stop promptly (a running job's
    /// waiters wait on for its grace period).
    shutdown: CancellationToken,
    /// The (scope, idempotency key) pairs of submissions being accepted right now: a second
    /// request with the same pair is answered `KeyInFlight` instead of racing the first.
    keys_in_flight: Arc<std::sync::Mutex<HashSet<(String, String)>>>,
    /// How long the worker lets a running job finish after shutdown begins.
    shutdown_grace: Duration,
}

impl JobQueue {
    pub fn new(
        store: Store,
        signals: Arc<JobSignals>,
        max_queued: u64,
        shutdown: CancellationToken,
        shutdown_grace: Duration,
    ) -> Self {
        JobQueue {
            store,
            signals,
            max_queued,
            shutdown,
            keys_in_flight: Arc::default(),
            shutdown_grace,
        }
    }

    /// Whether the server is stopping (a job not final now will not be run before it stops,
    /// unless it is running and finishes within the grace period).
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Jobs finished in the last minutes (for the live queue view).
    pub fn recent_activity(&self) -> &crate::recent_activity::RecentActivity {
        self.signals.recent_activity()
    }

    /// Stores the job (or finds the earlier one with its idempotency key) and wakes the worker.
    /// The request being served (if any) is noted as the job's origin for the worker's logs.
    pub async fn submit(&self, job: NewJob) -> Result<Submission, StoreError> {
        let _in_flight = match KeyInFlight::claim(&self.keys_in_flight, &job) {
            Ok(guard) => guard,
            Err(()) => return Ok(Submission::KeyInFlight),
        };
        // Noted before the job is stored: the worker may claim it the moment it is committed.
        let origin = RequestId::current();
        if let Some(origin) = &origin {
            self.signals.note_origin(job.id, origin.clone());
        }
        let outcome = self.store.enqueue_job(&job, self.max_queued).await;
        if origin.is_some() && !matches!(outcome, Ok(EnqueueOutcome::Accepted(_))) {
            self.signals.forget_origin(job.id);
        }
        Ok(match outcome? {
            EnqueueOutcome::Accepted(record) => {
                tracing::debug!(job_id = %record.id, kind = record.kind.as_str(), "job accepted");
                crate::service_metrics::job_accepted(record.kind, record.language);
                self.signals.job_accepted();
                Submission::Accepted(record)
            }
            EnqueueOutcome::Duplicate(record) => Submission::Existing(record),
            EnqueueOutcome::KeyReused => Submission::KeyReused,
            EnqueueOutcome::QueueFull => Submission::QueueFull,
        })
    }

    /// Submits `job` and, with a `limit`, waits for it to be final (or for the limit). The
    /// wait for its announcement starts first, so the job cannot finish unseen in between.
    pub async fn submit_and_wait(
        &self,
        job: NewJob,
        limit: Option<Duration>,
    ) -> Result<Submission, StoreError> {
        let waiter = self.signals.watch(job.id);
        let submission = self.submit(job).await?;
        let Some(limit) = limit else {
            return Ok(submission);
        };
        Ok(match submission {
            Submission::Accepted(job) => {
                Submission::Accepted(self.wait_with(waiter, job, limit).await?)
            }
            Submission::Existing(job) => {
                // An earlier job with the same idempotency key: wait for that one instead.
                drop(waiter);
                let id = job.id;
                Submission::Existing(self.wait_until_final(id, limit).await?.unwrap_or(job))
            }
            other => other,
        })
    }

    /// The job once it is final, or its state when `limit` passes (or the server stops).
    /// Woken by the job's announcement, never by polling; `None` for an unknown id.
    pub async fn wait_until_final(
        &self,
        id: JobId,
        limit: Duration,
    ) -> Result<Option<JobRecord>, StoreError> {
        let waiter = self.signals.watch(id);
        let Some(job) = self.store.get_job(id).await? else {
            return Ok(None);
        };
        Ok(Some(self.wait_with(waiter, job, limit).await?))
    }

    /// Cancels a queued job and announces it, so requests waiting for it answer at once.
    pub async fn cancel(&self, id: JobId) -> Result<CancelOutcome, StoreError> {
        let outcome = self.store.cancel_job(id).await?;
        if let CancelOutcome::Cancelled(job) = &outcome {
            crate::service_metrics::job_finished(job);
            self.signals.job_finished(id, Some(job.clone()));
        }
        Ok(outcome)
    }

    /// Waits from `job` (read after `waiter` started) until it is final, `limit` passes or
    /// the server stops (a job running then is waited for through the grace period the
    /// worker gives it, within `limit`); then answers with the announced record, or reads the
    /// job again.
    async fn wait_with(
        &self,
        mut waiter: FinishWaiter,
        job: JobRecord,
        limit: Duration,
    ) -> Result<JobRecord, StoreError> {
        if job.status.is_final() || limit.is_zero() {
            return Ok(job);
        }
        let deadline = tokio::time::Instant::now() + limit;
        if !self.shutdown.is_cancelled() {
            tokio::select! {
                finished = tokio::time::timeout_at(deadline, waiter.finished()) => {
                    if let Ok(Some(record)) = finished {
                        return Ok(record.as_ref().clone());
                    }
                    return Ok(self.store.get_job(job.id).await?.unwrap_or(job));
                }
                _ = self.shutdown.cancelled() => {}
            }
        }
        let current = self.store.get_job(job.id).await?.unwrap_or(job);
        if current.status != crate::domain::JobStatus::Running {
            return Ok(current);
        }
        let grace_end = deadline.min(tokio::time::Instant::now() + self.shutdown_grace);
        if let Ok(Some(record)) = tokio::time::timeout_at(grace_end, waiter.finished()).await {
            return Ok(record.as_ref().clone());
        }
        Ok(self.store.get_job(current.id).await?.unwrap_or(current))
    }
}

/// A submission's (scope, idempotency key) pair marked as being accepted, unmarked on drop.
struct KeyInFlight {
    keys: Arc<std::sync::Mutex<HashSet<(String, String)>>>,
    pair: (String, String),
}

impl KeyInFlight {
    /// Marks the job's pair; `Err` when another submission holds it. `Ok(None)`: no key.
    fn claim(
        keys: &Arc<std::sync::Mutex<HashSet<(String, String)>>>,
        job: &NewJob,
    ) -> Result<Option<KeyInFlight>, ()> {
        let (Some(key), Some(scope)) = (&job.idempotency_key, &job.idempotency_scope) else {
            return Ok(None);
        };
        let pair = (scope.clone(), key.clone());
        let mut held = keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !held.insert(pair.clone()) {
            return Err(());
        }
        Ok(Some(KeyInFlight {
            keys: keys.clone(),
            pair,
        }))
    }
}

impl Drop for KeyInFlight {
    fn drop(&mut self) {
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.pair);
    }
}
