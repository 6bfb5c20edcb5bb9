//! Session changes: a reset (the history emptied) and the history cuts (reset-to, remove).
//! The history itself changes only in the store's triggers, in the statement that stores the
//! job's success; this module words the answer (`cut_outcome`) from what the cut found and
//! makes the engine forget the session's live atomspace. It never runs code.

use crate::domain::{ErrorKind, JobKind, JobStatus};
use crate::learner_messages;
use crate::store::{CutOutcome, JobOutcome, JobRecord, StoreError};

use super::{session_of, Worker};

impl Worker {
    pub(super) async fn reset_session(
        &mut self,
        job: &JobRecord,
    ) -> Result<Option<JobRecord>, StoreError> {
        let session = session_of(job);
        // The trigger `reset_recorded_in_history` empties the history as the success is stored.
        let outcome = JobOutcome::succeeded_with(learner_messages::RESET_DONE);
        let record = self.store.finish_job(job.id, &outcome).await?;
        self.engine.forget_session(&session).await;
        Ok(record)
    }

    pub(super) async fn cut_history(
        &mut self,
        job: &JobRecord,
    ) -> Result<Option<JobRecord>, StoreError> {
        let session = session_of(job);
        let Some(code_id) = job.code_id.clone() else {
            let outcome = JobOutcome::with_error(
                JobStatus::Failed,
                ErrorKind::Service,
                learner_messages::CODE_ID_REQUIRED,
            );
            return self.store.finish_job(job.id, &outcome).await;
        };
        let removing = job.kind == JobKind::RemoveCell;
        let (cut, record) = self
            .store
            .finish_history_cut(job.id, &session, &code_id, |cut| {
                cut_outcome(cut, removing, code_id.as_str(), session.as_str())
            })
            .await?;
        if matches!(cut, CutOutcome::Cut { .. }) {
            self.engine.forget_session(&session).await;
        }
        Ok(record)
    }
}

/// A history cut's final state from what it found: a cut or an empty history succeed (the
/// legacy API answers both with success), a target not in the history is not found.
fn cut_outcome(cut: &CutOutcome, removing: bool, code_id: &str, session: &str) -> JobOutcome {
    match cut {
        CutOutcome::Cut { remaining } => {
            JobOutcome::succeeded_with(learner_messages::history_cut(removing, code_id, *remaining))
        }
        CutOutcome::EmptyHistory => {
            JobOutcome::succeeded_with(learner_messages::HISTORY_ALREADY_EMPTY)
        }
        CutOutcome::NotFound => JobOutcome::with_error(
            JobStatus::Failed,
            ErrorKind::NotFound,
            learner_messages::code_id_not_in_history(code_id, session),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_and_an_empty_history_succeed_a_missing_target_is_not_found() {
        let removed = cut_outcome(&CutOutcome::Cut { remaining: 2 }, true, "c3", "alice");
        let reset = cut_outcome(&CutOutcome::Cut { remaining: 0 }, false, "c1", "alice");
        let empty = cut_outcome(&CutOutcome::EmptyHistory, true, "c1", "alice");
        let missing = cut_outcome(&CutOutcome::NotFound, false, "c9", "alice");

        assert_eq!(removed.status, JobStatus::Succeeded);
        assert_eq!(
            removed.result,
            Some(learner_messages::history_cut(true, "c3", 2))
        );
        assert_eq!(
            reset.result,
            Some(learner_messages::history_cut(false, "c1", 0))
        );
        assert_eq!(empty.status, JobStatus::Succeeded);
        assert_eq!(
            empty.result.as_deref(),
            Some(learner_messages::HISTORY_ALREADY_EMPTY)
        );
        assert_eq!(missing.status, JobStatus::Failed);
        assert_eq!(missing.error_kind, Some(ErrorKind::NotFound));
        assert_eq!(
            missing.error,
            Some(learner_messages::code_id_not_in_history("c9", "alice"))
        );
    }
}
