//! In-process wake-ups between the API and the worker: "a job was accepted" (wakes the worker)
//! and "job X reached a final state" (wakes the requests long-waiting for X, and only them).
//! Both are edges only; the database stays the truth, so a missed signal costs a re-read,
//! never a wrong answer. Beside them, which request submitted each job still in flight, so the
//! worker's log lines about a job carry that request's id (memory only, for logs only), and
//! the last minutes of finished jobs for the instructors' live queue view (`RecentActivity`):
//! every final state passes through `job_finished`, from the worker or a cancellation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{oneshot, Notify};

use crate::domain::JobId;
use crate::recent_activity::RecentActivity;
use crate::request_context::RequestId;
use crate::store::JobRecord;

/// What a waiter gets when its job is announced: the final record, when the announcer had
/// it (so a waiting request answers without reading it again).
pub type FinalRecord = Option<Arc<JobRecord>>;

/// The requests waiting for each job, each by a key of its own (to leave when dropped).
type Waiting = HashMap<JobId, Vec<(u64, oneshot::Sender<FinalRecord>)>>;

/// Shared by the HTTP layer (sends `job_accepted`, waits with `watch`) and the worker (waits
/// on `job_accepted`, sends `job_finished`).
#[derive(Debug, Default)]
pub struct JobSignals {
    /// `notify_one` stores a permit when the worker is busy, so an acceptance that happens
    /// between the worker's empty claim and its wait is never lost.
    accepted: Notify,
    waiting: Mutex<Waiting>,
    next_key: std::sync::atomic::AtomicU64,
    /// The request that submitted each job not yet announced finished. Entries leave at the
    /// announcement; jobs a restart recovered have none.
    origins: Mutex<HashMap<JobId, RequestId>>,
    /// Jobs finished in the last minutes (the live queue view).
    activity: RecentActivity,
}

/// Origins kept at most; past it the map is cleared (only log lines lose their request id).
const MAX_TRACKED_ORIGINS: usize = 100_000;

impl JobSignals {
    pub fn new() -> Self {
        Self::default()
    }

    /// Called after a job is durably queued.
    pub fn job_accepted(&self) {
        self.accepted.notify_one();
    }

    /// Notes which request submits job `id` (before it is stored).
    pub fn note_origin(&self, id: JobId, origin: RequestId) {
        let mut origins = self.origins.lock().unwrap_or_else(PoisonError::into_inner);
        if origins.len() >= MAX_TRACKED_ORIGINS {
            origins.clear();
        }
        origins.insert(id, origin);
    }

    /// Drops the origin of a job that was not stored after all.
    pub fn forget_origin(&self, id: JobId) {
        self.origins
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }

    /// The request that submitted job `id`, while the job is in flight in this process.
    pub fn origin_of(&self, id: JobId) -> Option<RequestId> {
        self.origins
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
    }

    /// Jobs finished in the last minutes.
    pub fn recent_activity(&self) -> &RecentActivity {
        &self.activity
    }

    /// The worker sleeps here while the queue is empty.
    pub async fn wait_for_accepted_job(&self) {
        self.accepted.notified().await;
    }

    /// Called after a job's final state is committed: wakes the requests waiting for it.
    pub fn job_finished(&self, id: JobId, record: Option<JobRecord>) {
        self.origins
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        if let Some(job) = &record {
            self.activity.record_finished(job);
        }
        let waiters = self.lock().remove(&id);
        let record = record.map(Arc::new);
        for (_, waiter) in waiters.into_iter().flatten() {
            // A waiter that has gone away is fine.
            let _ = waiter.send(record.clone());
        }
    }

    /// Starts waiting for job `id`; call it before reading the job's state (or submitting
    /// it), so its announcement cannot slip in between. Dropping the waiter leaves.
    pub fn watch(self: &Arc<Self>, id: JobId) -> FinishWaiter {
        let key = self
            .next_key
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (sender, receiver) = oneshot::channel();
        self.lock().entry(id).or_default().push((key, sender));
        FinishWaiter {
            signals: self.clone(),
            id,
            key,
            receiver,
        }
    }

    /// Requests waiting now.
    #[cfg(test)]
    fn waiting_requests(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One request's wait for one job's announcement (see `JobSignals::watch`).
#[derive(Debug)]
pub struct FinishWaiter {
    signals: Arc<JobSignals>,
    id: JobId,
    key: u64,
    receiver: oneshot::Receiver<FinalRecord>,
}

impl FinishWaiter {
    /// Waits for the announcement: `Some(record)` when it came with the final record, `None`
    /// when the record must be read (announced without one).
    pub async fn finished(&mut self) -> FinalRecord {
        (&mut self.receiver).await.ok().flatten()
    }
}

impl Drop for FinishWaiter {
    fn drop(&mut self) {
        let mut waiting = self.signals.lock();
        if let Some(waiters) = waiting.get_mut(&self.id) {
            waiters.retain(|(key, _)| *key != self.key);
            if waiters.is_empty() {
                waiting.remove(&self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_announcement_wakes_only_the_waiters_of_that_job_and_dropped_waiters_leave() {
        // Arrange
        let signals = Arc::new(JobSignals::new());
        let (first, second) = (JobId::new(), JobId::new());
        let mut waiting_first = signals.watch(first);
        let mut also_first = signals.watch(first);
        let mut waiting_second = signals.watch(second);
        let gone = signals.watch(second);
        drop(gone);
        assert_eq!(signals.waiting_requests(), 3);

        // Act
        signals.job_finished(first, None);

        // Assert
        assert!(waiting_first.finished().await.is_none());
        assert!(also_first.finished().await.is_none());
        let second_still_waits = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            waiting_second.finished(),
        )
        .await;
        assert!(
            second_still_waits.is_err(),
            "job {second} was not announced"
        );
        drop((waiting_first, also_first, waiting_second));
        assert_eq!(signals.waiting_requests(), 0, "nothing is left behind");
    }
}
