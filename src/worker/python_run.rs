//! Python runs: one job in a fresh contained interpreter (`crate::python_runner`), and what
//! the way it ended means for the job (`python_outcome`). Never touches the engine.

use std::time::Duration;

use crate::domain::{ErrorKind, JobStatus};
use crate::learner_messages;
use crate::python_runner::{PythonExit, PythonRun};
use crate::store::{JobOutcome, JobRecord, StoreError};

use super::{job_timeout, Worker};

impl Worker {
    pub(super) async fn run_python(
        &mut self,
        job: &JobRecord,
    ) -> Result<Option<JobRecord>, StoreError> {
        let timeout = job_timeout(job);
        let run = self
            .python
            .run(&job.code, job.stdin.as_deref(), timeout)
            .await;
        let outcome = python_outcome(run, timeout);
        self.store.finish_job(job.id, &outcome).await
    }
}

/// A Python run's final state: exit status 0 succeeds; a failure status shows stderr as
/// `python -I -c` would (or the status, when stderr is empty); a signal, the deadline and an
/// interpreter that could not be started fail with a sentence of their own. Only the last is
/// the service's fault. The result is what the run printed.
fn python_outcome(run: PythonRun, timeout: Duration) -> JobOutcome {
    let stdout = run.stdout.text();
    let stderr = run.stderr.text();
    let (status, kind, error) = match run.exit {
        PythonExit::Exited(0) => (JobStatus::Succeeded, None, None),
        PythonExit::Exited(code) => (
            JobStatus::Failed,
            Some(ErrorKind::Code),
            Some(if stderr.trim().is_empty() {
                learner_messages::python_exited(code)
            } else {
                stderr.clone()
            }),
        ),
        PythonExit::Signalled(signal) => (
            JobStatus::Failed,
            Some(ErrorKind::Code),
            Some(learner_messages::python_killed(signal, &stderr)),
        ),
        PythonExit::TimedOut => (
            JobStatus::TimedOut,
            Some(ErrorKind::Code),
            Some(learner_messages::python_timed_out(timeout)),
        ),
        PythonExit::SpawnFailed(message) => {
            (JobStatus::Failed, Some(ErrorKind::Service), Some(message))
        }
    };
    JobOutcome {
        status,
        result: Some(stdout.clone()),
        results: None,
        stdout: Some(stdout),
        stderr: Some(stderr),
        output_truncated: run.stdout.truncated || run.stderr.truncated,
        error,
        error_kind: kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::CapturedOutput;

    fn run(exit: PythonExit, stdout: &str, stderr: &str) -> PythonRun {
        let output = |text: &str| CapturedOutput {
            bytes: text.as_bytes().to_vec(),
            truncated: false,
        };
        PythonRun {
            exit,
            stdout: output(stdout),
            stderr: output(stderr),
        }
    }

    const LIMIT: Duration = Duration::from_secs(5);

    #[test]
    fn status_zero_succeeds_with_what_it_printed() {
        let outcome = python_outcome(run(PythonExit::Exited(0), "hi\n", "warning\n"), LIMIT);

        assert_eq!(outcome.status, JobStatus::Succeeded);
        assert_eq!(outcome.result.as_deref(), Some("hi\n"));
        assert_eq!(outcome.stderr.as_deref(), Some("warning\n"));
        assert_eq!((outcome.error, outcome.error_kind), (None, None));
    }

    #[test]
    fn a_failure_status_shows_stderr_or_else_the_status() {
        let traceback = "Traceback (most recent call last):\nValueError: boom\n";
        let with_stderr = python_outcome(run(PythonExit::Exited(1), "", traceback), LIMIT);
        let silent = python_outcome(run(PythonExit::Exited(3), "partial", ""), LIMIT);

        assert_eq!(with_stderr.status, JobStatus::Failed);
        assert_eq!(with_stderr.error.as_deref(), Some(traceback));
        assert_eq!(with_stderr.error_kind, Some(ErrorKind::Code));
        assert_eq!(silent.error, Some(learner_messages::python_exited(3)));
        assert_eq!(silent.result.as_deref(), Some("partial"));
    }

    #[test]
    fn a_signal_a_deadline_and_a_failed_start_say_so() {
        let killed = python_outcome(
            run(PythonExit::Signalled(libc::SIGABRT), "", "why\n"),
            LIMIT,
        );
        let late = python_outcome(run(PythonExit::TimedOut, "", ""), LIMIT);
        let unstarted = python_outcome(
            run(PythonExit::SpawnFailed("no interpreter".into()), "", ""),
            LIMIT,
        );

        assert_eq!(killed.status, JobStatus::Failed);
        assert_eq!(
            killed.error,
            Some(learner_messages::python_killed(libc::SIGABRT, "why\n"))
        );
        assert_eq!(killed.error_kind, Some(ErrorKind::Code));
        assert_eq!(late.status, JobStatus::TimedOut);
        assert_eq!(late.error, Some(learner_messages::python_timed_out(LIMIT)));
        assert_eq!(late.error_kind, Some(ErrorKind::Code));
        assert_eq!(unstarted.status, JobStatus::Failed);
        assert_eq!(
            unstarted.error_kind,
            Some(ErrorKind::Service),
            "not the learner's doing"
        );
    }
}
