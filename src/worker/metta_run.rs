//! MeTTa runs: claimed MeTTa jobs go to the engine supervisor as one batch, with what each
//! needs (its session's generation, and its history when the session must be rebuilt); each
//! group of outcomes is stored and announced as the engine answers, while later runs still
//! run. `metta_outcome` decides what each way a run can end means for the job (its status,
//! whose fault, what the learner reads). Never talks to the engine's pipes itself.

use std::time::Duration;

use crate::capture::CapturedOutput;
use crate::domain::{ErrorKind, JobId, JobStatus, SessionId};
use crate::engine::protocol::RunEnd;
use crate::engine::{BatchEnd, MettaRequest, MettaRunOutcome};
use crate::learner_messages;
use crate::store::{ClaimedJob, JobOutcome, Store, StoreError};

use super::{announce, job_timeout, session_of, store_and_announce, store_failure, Worker};

impl Worker {
    /// Runs claimed MeTTa jobs in the engine, one after another in queue order, storing
    /// and announcing each group of outcomes as the engine answers (a batch is stored while
    /// its later jobs still run). A job whose session the engine lacks is sent again with
    /// its history; jobs the engine did not get to are sent again.
    pub(super) async fn run_metta(&mut self, claimed: Vec<ClaimedJob>) {
        let Worker {
            store,
            signals,
            engine,
            ..
        } = self;
        let mut requests = Vec::with_capacity(claimed.len());
        let mut failed_to_prepare = Vec::new();
        for claimed in &claimed {
            match metta_request(store, claimed).await {
                Ok(request) => requests.push(request),
                Err(err) => {
                    tracing::error!(job = %claimed.job.id, "cannot read the session's history: {err}");
                    failed_to_prepare.push(claimed.job.id);
                }
            }
        }
        for id in failed_to_prepare {
            let record = store_failure(store, id).await;
            announce(signals, id, record);
        }

        let mut next = 0;
        while next < requests.len() {
            let offset = next;
            let batch = &requests[offset..];
            let (store_ref, signals_ref) = (&*store, &**signals);
            let mut deliver = |outcomes: Vec<(usize, MettaRunOutcome)>| {
                let outcomes: Vec<(JobId, JobOutcome)> = outcomes
                    .into_iter()
                    .map(|(run, outcome)| {
                        let request = &batch[run];
                        log_engine_death(request.job_id, &outcome);
                        let outcome = metta_outcome(outcome, request.timeout, &request.session);
                        (request.job_id, outcome)
                    })
                    .collect();
                async move { store_and_announce(store_ref, signals_ref, &outcomes).await }
            };
            match engine.run_batch(batch, &mut deliver).await {
                BatchEnd::Completed => break,
                BatchEnd::Resume(run) => next = offset + run,
                BatchEnd::NeedHistory(run) => {
                    let at = offset + run;
                    let request = &mut requests[at];
                    if request.history.is_some() {
                        let outcome = JobOutcome::with_error(
                            JobStatus::Failed,
                            ErrorKind::Service,
                            learner_messages::HISTORY_ASKED_TWICE,
                        );
                        store_and_announce(store, signals, &[(request.job_id, outcome)]).await;
                        next = at + 1;
                        continue;
                    }
                    match store.load_history(&request.session).await {
                        Ok(cells) => {
                            request.history =
                                Some(cells.into_iter().map(|cell| cell.code).collect());
                            next = at;
                        }
                        Err(err) => {
                            tracing::error!(job = %request.job_id, "cannot read the session's history: {err}");
                            let record = store_failure(store, request.job_id).await;
                            announce(signals, request.job_id, record);
                            next = at + 1;
                        }
                    }
                }
            }
        }
    }
}

/// What the engine needs for one claimed MeTTa job. Re-running an existing cell rebuilds the
/// session with the new code in its place (its history before, the cells after).
async fn metta_request(store: &Store, claimed: &ClaimedJob) -> Result<MettaRequest, StoreError> {
    let job = &claimed.job;
    let session = session_of(job);
    let mut request = MettaRequest {
        job_id: job.id,
        session,
        generation: claimed.generation,
        history: None,
        code: job.code.clone(),
        stdin: job.stdin.clone(),
        after: Vec::new(),
        timeout: job_timeout(job),
        success_generation: claimed.generation + 1,
    };
    if let Some(position) = claimed.cell_position {
        let mut history: Vec<String> = store
            .load_history(&request.session)
            .await?
            .into_iter()
            .map(|cell| cell.code)
            .collect();
        let at = cells_before(&history, position);
        request.after = history.split_off((at + 1).min(history.len()));
        history.truncate(at);
        request.history = Some(history);
    }
    Ok(request)
}

/// Logs at `warn`, with the job's id, an engine (or session process) that died under a job
/// or was killed at its deadline: the operator's trace of what the learner was told.
fn log_engine_death(job: JobId, outcome: &MettaRunOutcome) {
    match outcome {
        MettaRunOutcome::KilledAtDeadline { .. } => tracing::warn!(
            job_id = %job,
            "a MeTTa step did not return by the job's deadline; the engine was killed"
        ),
        MettaRunOutcome::Died { cause, stderr, .. } => {
            match learner_messages::RustPanic::find(&stderr.text()) {
                Some(panic) => tracing::warn!(
                    job_id = %job,
                    cause,
                    "the MeTTa engine died while running the job: hyperon panicked at {}: {}",
                    panic.location,
                    panic.message
                ),
                None => tracing::warn!(
                    job_id = %job,
                    cause,
                    "the MeTTa engine died while running the job"
                ),
            }
        }
        MettaRunOutcome::Answered { .. } | MettaRunOutcome::Unavailable(_) => {}
    }
}

/// The index in `history` (position order) of the cell at `position`.
fn cells_before(history: &[String], position: i64) -> usize {
    // Positions are 1-based and dense after every cut, but do not rely on it: clamp.
    usize::try_from(position - 1)
        .unwrap_or(0)
        .min(history.len().saturating_sub(1))
}

/// What `metta-py` prints: the printed output, then one line per `!` expression.
fn metta_result_text(stdout: &str, lines: &[String]) -> String {
    let mut text = stdout.to_string();
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    text
}

/// A MeTTa run's final state from how it ended. The learner's code is to blame for an
/// error, a deadline, the memory budget, and a death or kill while their code ran; the
/// service for a history that no longer replays, an engine that cannot start, and an answer
/// the engine should not give. Only a success enters the history (the store's trigger).
fn metta_outcome(outcome: MettaRunOutcome, timeout: Duration, session: &SessionId) -> JobOutcome {
    let with_output = |status, stdout: CapturedOutput, stderr: CapturedOutput, error| JobOutcome {
        status,
        result: Some(stdout.text()),
        results: None,
        stdout: Some(stdout.text()),
        stderr: Some(stderr.text()),
        output_truncated: stdout.truncated || stderr.truncated,
        error: Some(error),
        error_kind: Some(ErrorKind::Code),
    };
    match outcome {
        MettaRunOutcome::Answered {
            end,
            answer,
            stdout,
            stderr,
        } => {
            let (status, kind, error) = match end {
                RunEnd::Succeeded => (JobStatus::Succeeded, None, None),
                RunEnd::Failed => (
                    JobStatus::Failed,
                    Some(ErrorKind::Code),
                    Some(
                        answer
                            .error
                            .clone()
                            .unwrap_or_else(|| learner_messages::METTA_ERROR.into()),
                    ),
                ),
                RunEnd::TimedOut => (
                    JobStatus::TimedOut,
                    Some(ErrorKind::Code),
                    Some(learner_messages::metta_timed_out(timeout)),
                ),
                RunEnd::MemoryExceeded => (
                    JobStatus::Failed,
                    Some(ErrorKind::Code),
                    Some(learner_messages::METTA_MEMORY_EXCEEDED.to_string()),
                ),
                RunEnd::ReplayFailed => (
                    JobStatus::Failed,
                    Some(ErrorKind::Service),
                    Some(learner_messages::replay_failed(
                        session.as_str(),
                        answer.error.as_deref().unwrap_or_default(),
                    )),
                ),
            };
            let stdout_text = stdout.text();
            JobOutcome {
                status,
                result: Some(metta_result_text(&stdout_text, &answer.lines)),
                results: Some(answer.results),
                stdout: Some(stdout_text),
                stderr: Some(stderr.text()),
                output_truncated: stdout.truncated || stderr.truncated,
                error,
                error_kind: kind,
            }
        }
        MettaRunOutcome::KilledAtDeadline { stdout, stderr } => with_output(
            JobStatus::TimedOut,
            stdout,
            stderr,
            learner_messages::metta_step_killed_at_deadline(timeout),
        ),
        MettaRunOutcome::Died {
            cause,
            stdout,
            stderr,
        } => {
            let error = learner_messages::engine_died(&cause, &stderr.text());
            with_output(JobStatus::Failed, stdout, stderr, error)
        }
        MettaRunOutcome::Unavailable(reason) => JobOutcome::with_error(
            JobStatus::Failed,
            ErrorKind::Service,
            learner_messages::engine_unavailable(&reason),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::protocol::EngineAnswer;

    const LIMIT: Duration = Duration::from_secs(2);

    fn session() -> SessionId {
        SessionId::parse("alice").expect("valid")
    }

    fn output(text: &str) -> CapturedOutput {
        CapturedOutput {
            bytes: text.as_bytes().to_vec(),
            truncated: false,
        }
    }

    fn answered(answer: serde_json::Value, stdout: &str) -> MettaRunOutcome {
        let line: EngineAnswer = serde_json::from_value(answer).expect("an engine answer");
        let (end, answer) = line.into_run().expect("a run's answer");
        MettaRunOutcome::Answered {
            end,
            answer,
            stdout: output(stdout),
            stderr: output(""),
        }
    }

    #[test]
    fn a_success_prints_as_metta_py_with_its_results() {
        let outcome = metta_outcome(
            answered(
                serde_json::json!({"id": "j", "outcome": "succeeded", "results": [["3"]], "lines": ["[3]"]}),
                "hello\n",
            ),
            LIMIT,
            &session(),
        );

        assert_eq!(outcome.status, JobStatus::Succeeded);
        assert_eq!(outcome.result.as_deref(), Some("hello\n[3]\n"));
        assert_eq!(outcome.results, Some(vec![vec!["3".to_string()]]));
        assert_eq!((outcome.error, outcome.error_kind), (None, None));
    }

    #[test]
    fn errors_deadlines_memory_and_deaths_are_the_code_s_doing() {
        let cases = [
            (
                answered(
                    serde_json::json!({"outcome": "failed", "error": "Unexpected end of expression"}),
                    "",
                ),
                JobStatus::Failed,
                "Unexpected end of expression".to_string(),
            ),
            (
                answered(
                    serde_json::json!({"outcome": "timedOut", "results": [["1"]], "lines": ["[1]"]}),
                    "",
                ),
                JobStatus::TimedOut,
                learner_messages::metta_timed_out(LIMIT),
            ),
            (
                answered(serde_json::json!({"outcome": "memoryExceeded"}), ""),
                JobStatus::Failed,
                learner_messages::METTA_MEMORY_EXCEEDED.to_string(),
            ),
            (
                MettaRunOutcome::KilledAtDeadline {
                    stdout: output("so far"),
                    stderr: output(""),
                },
                JobStatus::TimedOut,
                learner_messages::metta_step_killed_at_deadline(LIMIT),
            ),
            (
                MettaRunOutcome::Died {
                    cause: "the session's process was killed by SIGABRT".into(),
                    stdout: output(""),
                    stderr: output("thread '<unnamed>' panicked at lib/x.rs:1:2:\nboom\n"),
                },
                JobStatus::Failed,
                learner_messages::engine_died(
                    "the session's process was killed by SIGABRT",
                    "thread '<unnamed>' panicked at lib/x.rs:1:2:\nboom\n",
                ),
            ),
        ];
        for (ended, status, error) in cases {
            let described = format!("{ended:?}");

            let outcome = metta_outcome(ended, LIMIT, &session());

            assert_eq!(outcome.status, status, "{described}");
            assert_eq!(outcome.error, Some(error), "{described}");
            assert_eq!(outcome.error_kind, Some(ErrorKind::Code), "{described}");
        }
    }

    #[test]
    fn a_history_that_does_not_replay_and_a_missing_engine_are_the_service_s_doing() {
        let cases = [
            (
                answered(
                    serde_json::json!({"outcome": "replayFailed", "error": "deadline"}),
                    "",
                ),
                learner_messages::replay_failed("alice", "deadline"),
            ),
            (
                MettaRunOutcome::Unavailable("hyperon missing".into()),
                learner_messages::engine_unavailable("hyperon missing"),
            ),
        ];
        for (ended, error) in cases {
            let described = format!("{ended:?}");

            let outcome = metta_outcome(ended, LIMIT, &session());

            assert_eq!(outcome.status, JobStatus::Failed, "{described}");
            assert_eq!(outcome.error, Some(error), "{described}");
            assert_eq!(outcome.error_kind, Some(ErrorKind::Service), "{described}");
        }
    }

    #[test]
    fn a_re_run_cell_is_replaced_in_place() {
        let history: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();

        assert_eq!(cells_before(&history, 1), 0);
        assert_eq!(cells_before(&history, 3), 2);
        assert_eq!(cells_before(&history, 9), 2, "clamped to the last cell");
        assert_eq!(cells_before(&history, 0), 0, "clamped to the first cell");
    }
}
