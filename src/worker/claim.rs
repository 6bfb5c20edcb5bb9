//! Claiming: the oldest queued job and, when it can lead a batch, the queued MeTTa jobs right
//! behind it that can join it. Owns the batch policy (`can_share_a_batch`, `batch_followers`);
//! the claim statements themselves are the store's. Never runs a job.

use std::collections::HashSet;

use crate::domain::{JobStatus, SessionId};
use crate::store::{ClaimedJob, OldestClaim, Store, StoreError};

use super::is_metta_run;

/// Claims the oldest queued job and, when it can lead a batch, the queued jobs right behind
/// it that can join it (`max_batch` in all), in queue order; none when the queue is empty.
///
/// Only this worker claims, so the jobs read behind the first are still queued when they are
/// claimed unless a client cancelled one in between (then it is left out).
///
/// Also says whether the queue may still hold jobs afterwards (when it surely does not, the
/// worker waits for the next accepted job instead of asking the database again).
pub(super) async fn claim_next_jobs(
    store: &Store,
    max_batch: usize,
) -> Result<(Vec<ClaimedJob>, bool), StoreError> {
    let Some(OldestClaim {
        claimed: first,
        more_queued,
    }) = store.claim_oldest_job().await?
    else {
        return Ok((Vec::new(), false));
    };
    if max_batch <= 1 || !more_queued || !can_share_a_batch(&first) {
        return Ok((vec![first], more_queued));
    }
    let queued = store.oldest_queued_jobs(max_batch - 1).await?;
    let followers = batch_followers(&first, queued);
    let started_at = first.job.started_at.clone().unwrap_or_default();
    let mut batch = vec![first];
    batch.extend(store.claim_queued_jobs(followers, &started_at).await?);
    Ok((batch, true))
}

/// Which of the jobs queued right behind `first` (in queue order) join its batch: a prefix of
/// them that `can_share_a_batch`, one job per session (the first's session included), so no
/// session has two runs in one batch.
fn batch_followers(first: &ClaimedJob, queued: Vec<ClaimedJob>) -> Vec<ClaimedJob> {
    let mut sessions: HashSet<SessionId> = first.job.session_id.iter().cloned().collect();
    queued
        .into_iter()
        .take_while(|next| {
            can_share_a_batch(next)
                && next
                    .job
                    .session_id
                    .as_ref()
                    .is_some_and(|session| sessions.insert(session.clone()))
        })
        .collect()
}

/// Whether a job may run in a batch with others: a fresh MeTTa run (a job re-queued by
/// start-up recovery runs alone, so a second interruption is its own) in a named session that
/// appends a new cell (re-running an existing cell rebuilds the session).
fn can_share_a_batch(claimed: &ClaimedJob) -> bool {
    // Attempts count the claim: a job just claimed has one more than when it was queued.
    let earlier_attempts = match claimed.job.status {
        JobStatus::Running => claimed.job.attempts - 1,
        _ => claimed.job.attempts,
    };
    is_metta_run(&claimed.job)
        && earlier_attempts == 0
        && claimed.job.session_id.is_some()
        && claimed.cell_position.is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{JobKind, Language};
    use crate::worker::test_job;

    fn metta(session: &str) -> ClaimedJob {
        let mut job = test_job(JobKind::Run, Some(Language::Metta), Some(session));
        job.status = JobStatus::Queued;
        job.attempts = 0;
        ClaimedJob {
            job,
            generation: 0,
            cell_position: None,
        }
    }

    fn claimed(mut queued: ClaimedJob) -> ClaimedJob {
        queued.job.status = JobStatus::Running;
        queued.job.attempts += 1;
        queued
    }

    #[test]
    fn a_fresh_metta_run_appending_a_cell_in_a_named_session_can_share_a_batch() {
        assert!(can_share_a_batch(&metta("alice")));
        assert!(can_share_a_batch(&claimed(metta("alice"))));
    }

    #[test]
    fn other_jobs_run_alone() {
        let python = ClaimedJob {
            job: test_job(JobKind::Run, Some(Language::Python), Some("alice")),
            generation: 0,
            cell_position: None,
        };
        let mut rerun = metta("alice");
        rerun.cell_position = Some(2);
        let mut recovered = claimed(metta("alice"));
        recovered.job.attempts = 2;
        let mut no_session = metta("alice");
        no_session.job.session_id = None;
        let mut reset = metta("alice");
        reset.job.kind = JobKind::ResetSession;

        for (job, why) in [
            (python, "a Python run"),
            (rerun, "a re-run of an existing cell rebuilds its session"),
            (recovered, "a job interrupted once runs alone"),
            (no_session, "a run without a session"),
            (reset, "a session change"),
        ] {
            assert!(!can_share_a_batch(&job), "{why}");
        }
    }

    #[test]
    fn a_batch_takes_a_prefix_of_the_queue_one_job_per_session() {
        let first = claimed(metta("alice"));
        let sessions = |jobs: &[ClaimedJob]| -> Vec<String> {
            jobs.iter()
                .map(|job| {
                    job.job
                        .session_id
                        .as_ref()
                        .map_or("-", |s| s.as_str())
                        .to_string()
                })
                .collect()
        };

        let joined = batch_followers(
            &first,
            vec![metta("bob"), metta("carol"), metta("bob"), metta("dave")],
        );
        assert_eq!(
            sessions(&joined),
            ["bob", "carol"],
            "stops at bob's second run"
        );

        let joined = batch_followers(&first, vec![metta("bob"), metta("alice"), metta("carol")]);
        assert_eq!(
            sessions(&joined),
            ["bob"],
            "stops at the first job's session"
        );

        let mut rerun = metta("carol");
        rerun.cell_position = Some(1);
        let joined = batch_followers(&first, vec![metta("bob"), rerun, metta("dave")]);
        assert_eq!(
            sessions(&joined),
            ["bob"],
            "stops at a job that must run alone"
        );
    }
}
