//! The last few minutes of the queue's work, kept in memory for the instructors' live queue
//! view: when each job finished, how long it waited, whether it failed or timed out. Every
//! final state passes through `JobSignals::job_finished`, which records it here; the dashboard
//! reads a summary per time bucket.
//!
//! Memory only and bounded (`WINDOW`, `MAX_ENTRIES`): it starts empty at each start and is
//! never the truth about a job (the database is). It never reads the database.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::domain::JobStatus;
use crate::store::JobRecord;

/// How far back the view looks.
pub const WINDOW: Duration = Duration::from_secs(300);
/// Most finished jobs remembered (older ones are dropped first).
const MAX_ENTRIES: usize = 20_000;

#[derive(Debug, Clone, Copy)]
struct Finished {
    at: Instant,
    wait_secs: Option<f64>,
    problem: bool,
}

/// A std `Mutex`: held only to push or to scan a few thousand entries, never across an await.
#[derive(Debug, Default)]
pub struct RecentActivity {
    finished: Mutex<VecDeque<Finished>>,
}

/// One time bucket of the summary.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActivityBucket {
    /// Age of the bucket's newer edge, in seconds (the newest bucket is 0).
    pub seconds_ago: u64,
    /// Jobs that finished in it.
    pub finished: u64,
    /// Of those, failed or timed out.
    pub problems: u64,
    /// Mean and longest time those jobs waited in the queue, in milliseconds.
    pub mean_wait_ms: Option<f64>,
    pub max_wait_ms: Option<f64>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    finished: u64,
    problems: u64,
    waits: u64,
    wait_sum_ms: f64,
    wait_max_ms: f64,
}

impl RecentActivity {
    /// Records a job that reached its final state just now.
    pub fn record_finished(&self, job: &JobRecord) {
        self.record_at(
            Instant::now(),
            crate::service_metrics::queue_wait_seconds(job),
            matches!(job.status, JobStatus::Failed | JobStatus::TimedOut),
        );
    }

    fn record_at(&self, at: Instant, wait_secs: Option<f64>, problem: bool) {
        let mut finished = self.lock();
        while finished.len() >= MAX_ENTRIES
            || finished
                .front()
                .is_some_and(|oldest| at.saturating_duration_since(oldest.at) > WINDOW)
        {
            finished.pop_front();
        }
        finished.push_back(Finished {
            at,
            wait_secs,
            problem,
        });
    }

    /// The window as buckets of `bucket` length, oldest first.
    pub fn summary(&self, bucket: Duration) -> Vec<ActivityBucket> {
        self.summary_at(Instant::now(), bucket)
    }

    fn summary_at(&self, now: Instant, bucket: Duration) -> Vec<ActivityBucket> {
        let width = bucket.as_secs().max(1);
        let count = (WINDOW.as_secs() / width).max(1) as usize;
        let mut tallies = vec![Tally::default(); count];
        for entry in self.lock().iter() {
            let age = now.saturating_duration_since(entry.at).as_secs_f64();
            let Some(tally) = tallies.get_mut((age / width as f64) as usize) else {
                continue;
            };
            tally.finished += 1;
            tally.problems += u64::from(entry.problem);
            if let Some(wait) = entry.wait_secs {
                tally.waits += 1;
                tally.wait_sum_ms += wait * 1000.0;
                tally.wait_max_ms = tally.wait_max_ms.max(wait * 1000.0);
            }
        }
        tallies
            .into_iter()
            .enumerate()
            .rev()
            .map(|(index, tally)| ActivityBucket {
                seconds_ago: index as u64 * width,
                finished: tally.finished,
                problems: tally.problems,
                mean_wait_ms: (tally.waits > 0).then(|| tally.wait_sum_ms / tally.waits as f64),
                max_wait_ms: (tally.waits > 0).then_some(tally.wait_max_ms),
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Finished>> {
        self.finished.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_fall_into_their_bucket_and_old_ones_leave_the_window() {
        // Arrange
        let activity = RecentActivity::default();
        let start = Instant::now();
        activity.record_at(start, Some(0.010), false);
        activity.record_at(start + Duration::from_secs(200), Some(0.030), true);
        activity.record_at(start + Duration::from_secs(295), Some(0.002), false);
        activity.record_at(start + Duration::from_secs(298), None, false);

        // Act
        let now = start + Duration::from_secs(300);
        let buckets = activity.summary_at(now, Duration::from_secs(10));

        // Assert
        assert_eq!(buckets.len(), 30);
        let newest = buckets.last().expect("newest");
        assert_eq!((newest.seconds_ago, newest.finished), (0, 2));
        assert_eq!(newest.max_wait_ms, Some(2.0));
        let at_100 = &buckets[buckets.len() - 11];
        assert_eq!(
            (at_100.seconds_ago, at_100.finished, at_100.problems),
            (100, 1, 1)
        );
        assert_eq!(at_100.mean_wait_ms, Some(30.0));
        let total: u64 = buckets.iter().map(|bucket| bucket.finished).sum();
        assert_eq!(total, 3, "the job 300 s old has left the window");
        activity.record_at(start + Duration::from_secs(400), None, false);
        let later = activity.summary_at(start + Duration::from_secs(400), Duration::from_secs(10));
        let total: u64 = later.iter().map(|bucket| bucket.finished).sum();
        assert_eq!(
            total, 4,
            "the first job was dropped, the three after it stay"
        );
    }
}
