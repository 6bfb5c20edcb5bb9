//! The job queue as the API sees it: submit a job (durable before anyone is told its id),
//! wake the worker, and wait for a job to reach a final state. Both API layers (v1 and the
//! legacy playground endpoints) go through here; neither talks to the worker directly.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::domain::JobId;
use crate::job_signals::{wait_for_finish, FinishWait, Finished, JobSignals};
use crate::store::{EnqueueOutcome, JobRecord, NewJob, Store, StoreError};

/// What a submission did.
#[derive(Debug)]
pub enum Submission {
    /// A new job, queued.
    Accepted(JobRecord),
    /// The idempotency key named an earlier job; that job, in its current state.
    Existing(JobRecord),
    /// The queue is at its cap; nothing was stored.
    QueueFull,
}

/// Submits and waits for jobs; cheap to clone.
#[derive(Debug, Clone)]
pub struct JobQueue {
    store: Store,
    signals: Arc<JobSignals>,
    max_queued: u64,
    /// Long waits end early at shutdown, so the server can stop promptly.
    shutdown: CancellationToken,
}

impl JobQueue {
    pub fn new(
        store: Store,
        signals: Arc<JobSignals>,
        max_queued: u64,
        shutdown: CancellationToken,
    ) -> Self {
        JobQueue {
            store,
            signals,
            max_queued,
            shutdown,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Stores the job (or finds the earlier one with its idempotency key) and wakes the worker.
    pub async fn submit(&self, job: NewJob) -> Result<Submission, StoreError> {
        Ok(match self.store.enqueue_job(&job, self.max_queued).await? {
            EnqueueOutcome::Accepted(record) => {
                self.signals.job_accepted();
                Submission::Accepted(record)
            }
            EnqueueOutcome::Duplicate(record) => Submission::Existing(record),
            EnqueueOutcome::QueueFull => Submission::QueueFull,
        })
    }

    /// Submits `job` and, with a `limit`, waits for it to be final (or for the limit). The
    /// subscription to "finished" comes first, so the job cannot finish unseen in between.
    pub async fn submit_and_wait(
        &self,
        job: NewJob,
        limit: Option<Duration>,
    ) -> Result<Submission, StoreError> {
        let mut finished = self.signals.subscribe_finished();
        let submission = self.submit(job).await?;
        let Some(limit) = limit else {
            return Ok(submission);
        };
        Ok(match submission {
            Submission::Accepted(job) => {
                Submission::Accepted(self.wait_with(&mut finished, job, limit).await?)
            }
            Submission::Existing(job) => {
                Submission::Existing(self.wait_with(&mut finished, job, limit).await?)
            }
            Submission::QueueFull => Submission::QueueFull,
        })
    }

    /// The job once it is final, or its state when `limit` passes (or the server stops).
    /// Woken by the worker's announcement, never by polling; `None` for an unknown id.
    pub async fn wait_until_final(
        &self,
        id: JobId,
        limit: Duration,
    ) -> Result<Option<JobRecord>, StoreError> {
        let mut finished = self.signals.subscribe_finished();
        let Some(job) = self.store.get_job(id).await? else {
            return Ok(None);
        };
        Ok(Some(self.wait_with(&mut finished, job, limit).await?))
    }

    /// Waits from `job` (read after `finished` was subscribed) until it is final, `limit`
    /// passes or the server stops, re-reading it after each announcement.
    async fn wait_with(
        &self,
        finished: &mut broadcast::Receiver<Finished>,
        mut job: JobRecord,
        limit: Duration,
    ) -> Result<JobRecord, StoreError> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if job.status.is_final() || left.is_zero() || self.shutdown.is_cancelled() {
                return Ok(job);
            }
            tokio::select! {
                waited = wait_for_finish(finished, job.id, left) => {
                    if let FinishWait::Finished(Some(record)) = waited {
                        return Ok(record.as_ref().clone());
                    }
                }
                _ = self.shutdown.cancelled() => {}
            }
            match self.store.get_job(job.id).await? {
                Some(latest) => job = latest,
                None => return Ok(job),
            }
        }
    }
}
