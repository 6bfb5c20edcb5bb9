//! In-process wake-ups between the API and the worker: "a job was accepted" (wakes the worker)
//! and "job X reached a final state" (wakes long-waiting requests). Both are edges only; the
//! database stays the truth, so a missed or lagged signal costs a re-read, never a wrong answer.

use std::time::Duration;

use std::sync::Arc;

use tokio::sync::{broadcast, Notify};

use crate::domain::JobId;
use crate::store::JobRecord;

/// The announcement of a finished job: its id and, when the worker has it, its final record
/// (so a waiting request answers without reading it again).
#[derive(Debug, Clone)]
pub struct Finished {
    pub id: JobId,
    pub record: Option<Arc<JobRecord>>,
}

/// How a wait for one job's announcement ended.
#[derive(Debug)]
pub enum FinishWait {
    /// Announced, with the final record when the worker had it.
    Finished(Option<Arc<JobRecord>>),
    /// Some announcements were missed, or the channel closed: read the database.
    Missed,
    /// The limit passed.
    TimedOut,
}

/// Shared by the HTTP layer (sends `job_accepted`, waits on `finished`) and the worker
/// (waits on `job_accepted`, sends `finished`).
#[derive(Debug)]
pub struct JobSignals {
    /// `notify_one` stores a permit when the worker is busy, so an acceptance that happens
    /// between the worker's empty claim and its wait is never lost.
    accepted: Notify,
    finished: broadcast::Sender<Finished>,
}

impl Default for JobSignals {
    fn default() -> Self {
        Self::new()
    }
}

impl JobSignals {
    pub fn new() -> Self {
        let (finished, _) = broadcast::channel(1024);
        JobSignals {
            accepted: Notify::new(),
            finished,
        }
    }

    /// Called after a job is durably queued.
    pub fn job_accepted(&self) {
        self.accepted.notify_one();
    }

    /// The worker sleeps here while the queue is empty.
    pub async fn wait_for_accepted_job(&self) {
        self.accepted.notified().await;
    }

    /// Called after a job's final state is committed.
    pub fn job_finished(&self, id: JobId, record: Option<JobRecord>) {
        // No receivers is fine: nobody is waiting.
        let _ = self.finished.send(Finished {
            id,
            record: record.map(Arc::new),
        });
    }

    /// Subscribe before reading the job's state, then wait with `wait_for_finish`.
    pub fn subscribe_finished(&self) -> broadcast::Receiver<Finished> {
        self.finished.subscribe()
    }
}

/// Waits until `id` is announced as finished or `limit` passes.
pub async fn wait_for_finish(
    receiver: &mut broadcast::Receiver<Finished>,
    id: JobId,
    limit: Duration,
) -> FinishWait {
    let wait = async {
        loop {
            match receiver.recv().await {
                Ok(finished) if finished.id == id => return FinishWait::Finished(finished.record),
                Ok(_) => continue,
                Err(_) => return FinishWait::Missed,
            }
        }
    };
    tokio::time::timeout(limit, wait)
        .await
        .unwrap_or(FinishWait::TimedOut)
}
