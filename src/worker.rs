//! The one worker: claims the oldest queued job (or a batch of MeTTa jobs right behind each
//! other in the queue), runs it, stores outcomes, announces them.
//!
//! Exactly one worker task exists, so at most one job executes and job order is acceptance
//! order (a batch runs its jobs one after another in queue order). It owns the Python runner
//! and the engine supervisor. With an empty queue it sleeps until the API signals an accepted
//! job (no polling). On shutdown it stops claiming, gives the running jobs the grace period,
//! then abandons them (their rows stay `running`, and start-up recovery re-queues them).
//!
//! Its log lines about a job sit in a `job` span naming the job and the request that
//! submitted it (`job_span`), so a request's id finds its jobs' lines here too: one `info`
//! line when a job finishes (status, run time), `debug` when it starts (the hot path logs
//! little: each line costs the server a few microseconds per job).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::capture::CapturedOutput;
use crate::domain::{ErrorKind, JobId, JobKind, JobStatus, Language, SessionId};
use crate::engine::protocol::RunEnd;
use crate::engine::{BatchEnd, EngineSupervisor, MettaRequest, MettaRunOutcome};
use crate::job_signals::JobSignals;
use crate::python_runner::{PythonExit, PythonRunner};
use crate::sandbox::{describe_signal, reap_orphans};
use crate::store::{ClaimedJob, CutOutcome, JobOutcome, JobRecord, OldestClaim, Store, StoreError};

/// The message of a successful reset, as the original service answered it.
pub const RESET_MESSAGE: &str = "AtomSpace and code history completely reset.";

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
            let claimed = match claim_next_jobs(&self.store, self.max_batch).await {
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
                    "the job names no language",
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

    async fn run_python(&mut self, job: &JobRecord) -> Result<Option<JobRecord>, StoreError> {
        let timeout = job_timeout(job);
        let run = self
            .python
            .run(&job.code, job.stdin.as_deref(), timeout)
            .await;
        let stdout = run.stdout.text();
        let stderr = run.stderr.text();
        let spawn_failed = matches!(run.exit, PythonExit::SpawnFailed(_));
        let (status, error) = match run.exit {
            PythonExit::Exited(0) => (JobStatus::Succeeded, None),
            PythonExit::Exited(code) => (
                JobStatus::Failed,
                Some(if stderr.trim().is_empty() {
                    format!("Python exited with status {code}")
                } else {
                    stderr.clone()
                }),
            ),
            PythonExit::Signalled(signal) => (
                JobStatus::Failed,
                Some(killed_python_message(signal, &stderr)),
            ),
            PythonExit::TimedOut => (
                JobStatus::TimedOut,
                Some(format!(
                    "the Python run exceeded its time limit of {} and was stopped",
                    describe_duration(timeout)
                )),
            ),
            PythonExit::SpawnFailed(message) => (JobStatus::Failed, Some(message)),
        };
        let error_kind = match (status, spawn_failed) {
            (JobStatus::Succeeded, _) => None,
            (_, true) => Some(ErrorKind::Service),
            (_, false) => Some(ErrorKind::Code),
        };
        let outcome = JobOutcome {
            status,
            result: Some(stdout.clone()),
            results: None,
            stdout: Some(stdout),
            stderr: Some(stderr),
            output_truncated: run.stdout.truncated || run.stderr.truncated,
            error,
            error_kind,
        };
        self.store.finish_job(job.id, &outcome).await
    }

    /// Runs claimed MeTTa jobs in the engine, one after another in queue order, storing
    /// and announcing each group of outcomes as the engine answers (a batch is stored while
    /// its later jobs still run). A job whose session the engine lacks is sent again with
    /// its history; jobs the engine did not get to are sent again.
    async fn run_metta(&mut self, claimed: Vec<ClaimedJob>) {
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
                            "internal error: the engine asked for a history it was just given",
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

    async fn reset_session(&mut self, job: &JobRecord) -> Result<Option<JobRecord>, StoreError> {
        let session = job
            .session_id
            .clone()
            .unwrap_or_else(SessionId::default_session);
        // The trigger `reset_recorded_in_history` empties the history as the success is stored.
        let outcome = JobOutcome::succeeded_with(RESET_MESSAGE);
        let record = self.store.finish_job(job.id, &outcome).await?;
        self.engine.forget_session(&session).await;
        Ok(record)
    }

    async fn cut_history(&mut self, job: &JobRecord) -> Result<Option<JobRecord>, StoreError> {
        let session = job
            .session_id
            .clone()
            .unwrap_or_else(SessionId::default_session);
        let Some(code_id) = job.code_id.clone() else {
            let outcome =
                JobOutcome::with_error(JobStatus::Failed, ErrorKind::Service, "codeId is required");
            return self.store.finish_job(job.id, &outcome).await;
        };
        let removing = job.kind == JobKind::RemoveCell;
        let (cut, record) = self
            .store
            .finish_history_cut(job.id, &session, &code_id, |cut| match cut {
                CutOutcome::Cut { remaining } => JobOutcome::succeeded_with(if removing {
                    format!("Removed code '{code_id}' and everything after it; {remaining} entries remain.")
                } else {
                    format!("Reset to before code '{code_id}'; {remaining} entries remain.")
                }),
                CutOutcome::EmptyHistory => {
                    JobOutcome::succeeded_with("The history is empty; nothing to change.")
                }
                CutOutcome::NotFound => JobOutcome::with_error(
                    JobStatus::Failed,
                    ErrorKind::NotFound,
                    format!("codeId '{code_id}' is not in the history of session '{session}'"),
                ),
            })
            .await?;
        if matches!(cut, CutOutcome::Cut { .. }) {
            self.engine.forget_session(&session).await;
        }
        Ok(record)
    }
}

/// Lines of stderr a learner is shown when Python was killed by a signal.
const STDERR_LINES_SHOWN: usize = 10;

/// What a learner reads when their Python was killed by a signal: the signal, then the last
/// lines the interpreter wrote to stderr (an abort's reason, hyperon's panic message), with
/// the frames of a Rust backtrace left out (they are in `stderr` for whoever wants them).
fn killed_python_message(signal: i32, stderr: &str) -> String {
    let said = |line: &&str| {
        let trimmed = line.trim_start();
        let frame = trimmed.starts_with("at ")
            || trimmed
                .split_once(": ")
                .is_some_and(|(number, _)| number.parse::<u32>().is_ok());
        !trimmed.is_empty() && !frame && !trimmed.starts_with("note: run with `RUST_BACKTRACE")
    };
    let lines: Vec<&str> = stderr.lines().filter(said).collect();
    let last = &lines[lines.len().saturating_sub(STDERR_LINES_SHOWN)..];
    let mut message = format!("Python was killed by {}", describe_signal(signal));
    if !last.is_empty() {
        message.push_str(". Its last words on stderr:\n");
        message.push_str(&last.join("\n"));
    }
    message
}

/// Claims the oldest queued job and, when it can lead a batch, the queued jobs right behind
/// it that can join it (`max_batch` in all), in queue order; none when the queue is empty.
///
/// A batch is a prefix of the queue of jobs that `can_share_a_batch`, one per session. Only
/// this worker claims, so the jobs read behind the first are still queued when they are
/// claimed unless a client cancelled one in between (then it is left out).
///
/// Also says whether the queue may still hold jobs afterwards (when it surely does not, the
/// worker waits for the next accepted job instead of asking the database again).
async fn claim_next_jobs(
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
    let mut sessions: std::collections::HashSet<SessionId> =
        first.job.session_id.iter().cloned().collect();
    let followers: Vec<ClaimedJob> = store
        .oldest_queued_jobs(max_batch - 1)
        .await?
        .into_iter()
        .take_while(|next| {
            can_share_a_batch(next)
                && next
                    .job
                    .session_id
                    .as_ref()
                    .is_some_and(|session| sessions.insert(session.clone()))
        })
        .collect();
    let started_at = first.job.started_at.clone().unwrap_or_default();
    let mut batch = vec![first];
    batch.extend(store.claim_queued_jobs(followers, &started_at).await?);
    Ok((batch, true))
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

fn is_metta_run(job: &JobRecord) -> bool {
    job.kind == JobKind::Run && job.language == Some(Language::Metta)
}

/// What the engine needs for one claimed MeTTa job. Re-running an existing cell rebuilds the
/// session with the new code in its place (its history before, the cells after).
async fn metta_request(store: &Store, claimed: &ClaimedJob) -> Result<MettaRequest, StoreError> {
    let job = &claimed.job;
    let session = job
        .session_id
        .clone()
        .unwrap_or_else(SessionId::default_session);
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
        "internal error: the service could not store this job's result",
    );
    store.finish_job(id, &outcome).await.unwrap_or_else(|err| {
        tracing::error!(job = %id, "cannot mark the job failed either: {err}");
        None
    })
}

/// The index in `history` (position order) of the cell at `position`.
fn cells_before(history: &[String], position: i64) -> usize {
    // Positions are 1-based and dense after every cut, but do not rely on it: clamp.
    usize::try_from(position - 1)
        .unwrap_or(0)
        .min(history.len().saturating_sub(1))
}

fn job_timeout(job: &JobRecord) -> Duration {
    Duration::from_millis(job.timeout_ms.max(1) as u64)
}

/// What `metta-py` prints: the printed output, then one line per `!` expression.
pub fn metta_result_text(stdout: &str, lines: &[String]) -> String {
    let mut text = stdout.to_string();
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    text
}

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
                    Some(answer.error.clone().unwrap_or_else(|| "MeTTa error".into())),
                ),
                RunEnd::TimedOut => (
                    JobStatus::TimedOut,
                    Some(ErrorKind::Code),
                    Some(format!(
                        "the MeTTa run reached its time limit of {} and was stopped; the results found so far are kept",
                        describe_duration(timeout)
                    )),
                ),
                RunEnd::MemoryExceeded => (
                    JobStatus::Failed,
                    Some(ErrorKind::Code),
                    Some(
                        "the MeTTa run used more memory than the engine allows (ENGINE_MEMORY_MB) and was stopped; the results found so far are kept"
                            .to_string(),
                    ),
                ),
                RunEnd::ReplayFailed => (
                    JobStatus::Failed,
                    Some(ErrorKind::Service),
                    Some(format!(
                        "could not rebuild session '{session}' from its history: {}",
                        answer.error.clone().unwrap_or_default()
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
            format!(
                "a MeTTa step did not return within the time limit of {}; the engine was restarted and the session will be rebuilt from its history",
                describe_duration(timeout)
            ),
        ),
        MettaRunOutcome::Died {
            cause,
            stdout,
            stderr,
        } => {
            let tail = last_lines(&stderr.text(), 5);
            let mut error = format!(
                "the MeTTa engine died while running this job ({cause}); it was restarted and the session will be rebuilt from its history"
            );
            if !tail.is_empty() {
                error.push_str(":\n");
                error.push_str(&tail);
            }
            with_output(JobStatus::Failed, stdout, stderr, error)
        }
        MettaRunOutcome::Unavailable(reason) => JobOutcome::with_error(
            JobStatus::Failed,
            ErrorKind::Service,
            format!("MeTTa engine not available: {reason}"),
        ),
    }
}

fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

fn describe_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis % 1000 == 0 {
        format!("{} s", millis / 1000)
    } else {
        format!("{:.1} s", duration.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_killed_python_shows_its_signal_and_last_words_without_backtrace_frames() {
        let stderr = "thread '<unnamed>' panicked at lib/src/space/grounding.rs:229:9:\n\
                      assertion failed: matches!(x, Some(_))\n\
                      stack backtrace:\n   0: rust_begin_unwind\n             at /rustc/abc/std.rs:1\n\
                      note: run with `RUST_BACKTRACE=full` for a verbose backtrace.\n\
                      fatal runtime error: failed to initiate panic, error 5\n";
        let message = super::killed_python_message(libc::SIGABRT, stderr);
        assert!(
            message.starts_with("Python was killed by SIGABRT"),
            "{message}"
        );
        assert!(
            message.contains("assertion failed: matches!(x, Some(_))"),
            "{message}"
        );
        assert!(
            message.contains("panicked at lib/src/space/grounding.rs:229:9"),
            "{message}"
        );
        assert!(
            !message.contains("rust_begin_unwind") && !message.contains("/rustc/"),
            "{message}"
        );
        assert_eq!(
            super::killed_python_message(libc::SIGKILL, ""),
            format!(
                "Python was killed by {}",
                crate::sandbox::describe_signal(libc::SIGKILL)
            )
        );
    }
}
