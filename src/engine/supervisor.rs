//! The server's side of the engine: spawns the engine child (contained like any child that
//! runs learners' code), sends it batches of runs (one message; the child runs them one after
//! another and answers each), captures each run's output, enforces each run's hard deadline
//! (kill the child's whole process group at deadline + grace) and respawns it after any death.
//! Owned by the worker, so there is never more than one batch in flight.
//!
//! It never touches the database: the worker gives it history when the child asks for it.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::time::Instant;
use uuid::Uuid;

use super::batch_output::BatchOutputs;
use super::exchange::{AfterLine, BatchExchange, Death, RunPlan, DRAIN_AFTER_DEATH};
use super::protocol::{EngineAnswer, EngineRequest, Phase, RunAnswer, RunEnd, RunRequest};
use super::spawn::{spawn, EngineProcess, StartFailure};
use crate::capture::CapturedOutput;
use crate::domain::{JobId, SessionId};
use crate::sandbox::{kill_group, Containment};

/// Everything the supervisor needs to start and bound engine children.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// The server's own executable; the child is its `engine` subcommand.
    pub executable: PathBuf,
    /// `sys.path` of the project's Python environment (empty: the embedded default).
    pub sys_path: Vec<String>,
    pub max_live_sessions: usize,
    /// Resident memory (MiB) past which the child stops a run.
    pub memory_budget_mb: u64,
    pub kill_grace: Duration,
    pub replay_timeout: Duration,
    pub max_output_bytes: usize,
    pub containment: Containment,
    /// Why no learner's code may run here (a wall cannot be built): the engine is not
    /// started and every MeTTa job fails with it.
    pub refusal: Option<String>,
    /// Where the engine's working directory goes (see `instance::ScratchFolder`).
    pub scratch: PathBuf,
    /// A root server's first uid of the pool its session processes run under (the engine
    /// itself then stays root to set them; it runs no learner's code); `None`: sessions keep
    /// the engine's uid.
    pub session_uid_base: Option<u32>,
    /// The gid of the session processes.
    pub session_gid: Option<u32>,
    /// The open-files limit of each session process (the engine's own is higher: it holds
    /// four pipes per live session, see `engine_open_files`).
    pub session_open_files: u64,
}

/// The open-files limit the engine process needs: its router holds four pipes (requests,
/// answers, stdout, stderr) to each live session process and the spare, besides its own.
pub fn engine_open_files(max_live_sessions: usize, child_open_files: u64) -> u64 {
    let per_session = 4 * (max_live_sessions as u64 + 2);
    child_open_files.max(per_session + 64)
}

/// One MeTTa run as the worker asks for it.
#[derive(Debug, Clone)]
pub struct MettaRequest {
    pub job_id: JobId,
    pub session: SessionId,
    pub generation: i64,
    /// When present: build the session afresh by running these cells first.
    pub history: Option<Vec<String>>,
    pub code: String,
    /// The job's standard input (`None`: an empty one).
    pub stdin: Option<String>,
    /// Cells to run after `code` (re-running an edited cell in the middle of the history).
    pub after: Vec<String>,
    pub timeout: Duration,
    pub success_generation: i64,
}

impl MettaRequest {
    /// The budget of the run's first phase: replaying the history when it has one.
    fn first_phase_budget(&self, replay_timeout: Duration) -> Duration {
        if self.history.is_some() {
            replay_timeout
        } else {
            self.timeout
        }
    }
}

/// How a run through the engine ended.
#[derive(Debug)]
pub enum MettaRunOutcome {
    /// The child answered (succeeded, failed, timed out at a step boundary, replay failed).
    Answered {
        end: RunEnd,
        answer: RunAnswer,
        stdout: CapturedOutput,
        stderr: CapturedOutput,
    },
    /// A step did not return by deadline + grace; the child was killed.
    KilledAtDeadline {
        stdout: CapturedOutput,
        stderr: CapturedOutput,
    },
    /// The child died while running the job.
    Died {
        cause: String,
        stdout: CapturedOutput,
        stderr: CapturedOutput,
    },
    /// No engine could be started (hyperon missing, …).
    Unavailable(String),
}

/// How a batch ended. Outcomes went to the `deliver` callback of `run_batch` as they came.
#[derive(Debug, PartialEq, Eq)]
pub enum BatchEnd {
    /// Every run's outcome was delivered.
    Completed,
    /// The runs from this index on did not run (the engine stopped after the run before,
    /// or died in it): send them again.
    Resume(usize),
    /// The engine lacks the session of the run at this index at its generation: send it
    /// again with the history. Nothing was delivered for it, and later runs did not run.
    NeedHistory(usize),
}

/// Receives runs' outcomes, by index in the batch, in index order, as the engine answers
/// (several at once when several answers were waiting).
pub trait DeliverOutcomes {
    fn deliver(
        &mut self,
        outcomes: Vec<(usize, MettaRunOutcome)>,
    ) -> impl Future<Output = ()> + Send;
}

impl<F, Fut> DeliverOutcomes for F
where
    F: FnMut(Vec<(usize, MettaRunOutcome)>) -> Fut,
    Fut: Future<Output = ()> + Send,
{
    fn deliver(
        &mut self,
        outcomes: Vec<(usize, MettaRunOutcome)>,
    ) -> impl Future<Output = ()> + Send {
        self(outcomes)
    }
}

/// The child died before it said it got the job (it was killed from outside while idle): the
/// job did not run, so `run` sends it once more to a new child.
struct NotReceived(String);

/// Supervises at most one engine child at a time.
pub struct EngineSupervisor {
    settings: EngineSettings,
    process: Option<EngineProcess>,
    hyperon_version: Option<String>,
    /// Whether the last attempt to start a child failed.
    start_failing: bool,
    /// A killed child not yet reaped.
    retiring: Option<EngineProcess>,
}

impl EngineSupervisor {
    pub fn new(settings: EngineSettings) -> Self {
        EngineSupervisor {
            settings,
            process: None,
            hyperon_version: None,
            start_failing: false,
            retiring: None,
        }
    }

    /// The engine child's pid, while one runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(|process| process.leader)
    }

    /// Starts a child now if none is running, so the next job does not wait for the import.
    /// A child killed from outside before it was ready (SIGKILL: an operator, the OOM killer)
    /// says nothing about the host, so it is started once more before the jobs are failed.
    pub async fn ensure_started(&mut self) -> Result<(), String> {
        if self.process.is_none() {
            let known = self.hyperon_version.as_deref();
            let mut spawned = spawn(&self.settings, known).await;
            if let Err(StartFailure::KilledWhileStarting(reason)) = &spawned {
                tracing::warn!("{reason}; starting another");
                spawned = spawn(&self.settings, known).await;
            }
            self.start_failing = spawned.is_err();
            let (process, version) = spawned.map_err(StartFailure::into_reason)?;
            self.hyperon_version = Some(version);
            self.process = Some(process);
        }
        Ok(())
    }

    /// Kills the current child (used at shutdown; the next run starts a new one).
    pub fn stop(&mut self) {
        self.process = None;
    }

    /// Asks the child to forget a session's live atomspace (best effort: a stale atomspace
    /// is never used anyway, because its generation no longer matches).
    pub async fn forget_session(&mut self, session: &SessionId) {
        let Some(process) = self.process.as_mut() else {
            return;
        };
        let request = EngineRequest::Drop {
            id: "drop",
            session: session.as_str(),
        };
        let Ok(line) = serde_json::to_string(&request) else {
            return;
        };
        let exchange = async {
            process
                .requests
                .write_all(format!("{line}\n").as_bytes())
                .await
                .ok()?;
            process.requests.flush().await.ok()?;
            process.responses.next_line().await.ok()?
        };
        if tokio::time::timeout(Duration::from_secs(5), exchange)
            .await
            .ok()
            .flatten()
            .is_none()
        {
            tracing::warn!(
                session = session.as_str(),
                "the MeTTa engine did not answer a request to forget a session; killing it (a new one starts for the next job)"
            );
            self.process = None;
        }
    }

    /// Runs MeTTa requests one after another in the engine (one message for all, one answer
    /// per run), starting a child first when needed, and hands each run's outcome to
    /// `deliver` as soon as it is known, so results are stored while later runs still run.
    pub async fn run_batch(
        &mut self,
        requests: &[MettaRequest],
        deliver: &mut impl DeliverOutcomes,
    ) -> BatchEnd {
        if requests.is_empty() {
            return BatchEnd::Completed;
        }
        // A child that died while idle (killed from outside, a leftover thread's crash) is
        // replaced before the jobs, which must not be blamed for it.
        if let Some(process) = self.process.as_mut() {
            if !matches!(process.child.try_wait(), Ok(None)) {
                tracing::warn!(
                    job_id = %requests[0].job_id,
                    "the MeTTa engine had died while idle; starting a new one for the job"
                );
                self.process = None;
                self.start_failing = false;
            }
        }
        if !self.start_or_fail_all(requests, deliver).await {
            return BatchEnd::Completed;
        }
        let (end, replace) = match self.exchange(requests, deliver).await {
            Ok(ended) => ended,
            Err(NotReceived(cause)) => {
                tracing::warn!(
                    job_id = %requests[0].job_id,
                    jobs = requests.len(),
                    "the MeTTa engine died before it read the job ({cause}); sending it to a new one"
                );
                self.process = None;
                if !self.start_or_fail_all(requests, deliver).await {
                    return BatchEnd::Completed;
                }
                match self.exchange(requests, deliver).await {
                    Ok(ended) => ended,
                    Err(NotReceived(cause)) => {
                        // Twice dead before it read the jobs: the engine, not their code, is
                        // at fault.
                        tracing::warn!(
                            job_id = %requests[0].job_id,
                            jobs = requests.len(),
                            "the new MeTTa engine died before it read the job too ({cause}); the jobs fail as the service's fault"
                        );
                        let reason = crate::learner_messages::engine_died_before_reading(&cause);
                        let unavailable = |_| MettaRunOutcome::Unavailable(reason.clone());
                        deliver.deliver(every_run(requests, unavailable)).await;
                        (BatchEnd::Completed, true)
                    }
                }
            }
        };
        if replace {
            // The worker starts the next child once the results are stored
            // (`start_replacement`), so learners do not wait for the respawn.
            let last_run = match end {
                BatchEnd::Completed => requests.len(),
                BatchEnd::Resume(run) | BatchEnd::NeedHistory(run) => run,
            };
            if let Some(request) = requests.get(last_run.saturating_sub(1)) {
                tracing::warn!(
                    job_id = %request.job_id,
                    "restarting the MeTTa engine after the job (it died, was killed at a deadline or asked to be replaced); every live session is rebuilt from its history on its next run"
                );
            }
            if let Some(old) = self.process.take() {
                kill_group(old.leader);
                self.retiring = Some(old);
            }
        }
        end
    }

    /// Starts a child when none runs; when that fails, every run of the batch is answered
    /// `Unavailable` with the reason, and this returns false.
    async fn start_or_fail_all(
        &mut self,
        requests: &[MettaRequest],
        deliver: &mut impl DeliverOutcomes,
    ) -> bool {
        match self.ensure_started().await {
            Ok(()) => true,
            Err(reason) => {
                let unavailable = |_| MettaRunOutcome::Unavailable(reason.clone());
                deliver.deliver(every_run(requests, unavailable)).await;
                false
            }
        }
    }

    /// Starts a child if the last one was replaced, unless starting has been failing (then
    /// the next MeTTa job tries again and reports why).
    pub async fn start_replacement(&mut self) {
        if let Some(mut old) = self.retiring.take() {
            // Reap the killed child (freeing gigabytes can take a moment), so it is not
            // mistaken for something a job left behind.
            let _ = tokio::time::timeout(Duration::from_secs(5), old.child.wait()).await;
        }
        if self.process.is_none() && !self.start_failing {
            if let Err(reason) = self.ensure_started().await {
                tracing::error!("the MeTTa engine could not be restarted: {reason}");
            }
        }
    }

    /// Sends one batch and follows it to its end; returns how it ended and whether the child
    /// must be replaced (it died, was killed, or asked for it). The I/O is here; what each
    /// event means is `BatchExchange`'s to say.
    async fn exchange(
        &mut self,
        requests: &[MettaRequest],
        deliver: &mut impl DeliverOutcomes,
    ) -> Result<(BatchEnd, bool), NotReceived> {
        let nonce = Uuid::new_v4().simple().to_string();
        let batch_id = format!("batch-{nonce}");
        let markers: Vec<(String, String)> = (0..requests.len())
            .map(|run| {
                (
                    format!("\u{1}mlb:{nonce}:{run}:start\u{1}"),
                    format!("\u{1}mlb:{nonce}:{run}:end\u{1}"),
                )
            })
            .collect();
        let run_ids: Vec<String> = requests.iter().map(|run| run.job_id.to_string()).collect();
        let replay_timeout = self.settings.replay_timeout;
        crate::service_metrics::sessions_replayed(
            requests.iter().filter(|run| run.history.is_some()).count(),
        );
        let wire = EngineRequest::Batch {
            id: &batch_id,
            runs: requests
                .iter()
                .zip(&markers)
                .zip(&run_ids)
                .map(|((run, (start, end)), id)| RunRequest {
                    id: id.clone(),
                    session: run.session.as_str(),
                    generation: run.generation,
                    history: run.history.as_deref(),
                    code: &run.code,
                    stdin: run.stdin.as_deref(),
                    after: &run.after,
                    timeout_ms: run.timeout.as_millis() as u64,
                    replay_timeout_ms: replay_timeout.as_millis() as u64,
                    success_generation: run.success_generation,
                    marker_start: start,
                    marker_end: end,
                })
                .collect(),
        };
        let mut line = match serde_json::to_string(&wire) {
            Ok(line) => line,
            Err(err) => {
                let reason = format!("cannot encode request: {err}");
                deliver
                    .deliver(every_run(requests, |_| {
                        MettaRunOutcome::Unavailable(reason.clone())
                    }))
                    .await;
                return Ok((BatchEnd::Completed, false));
            }
        };
        line.push('\n');

        // The hard deadline covers the running job's current phase only: the replay of its
        // history (its own budget), its code (the job's budget), then the replay of later
        // cells; each answer starts the next job's clock.
        let plans = requests
            .iter()
            .zip(run_ids)
            .map(|(run, id)| RunPlan {
                id,
                first_phase: run.first_phase_budget(replay_timeout),
                code: run.timeout,
            })
            .collect();
        let mut state = BatchExchange::new(
            batch_id,
            plans,
            replay_timeout,
            self.settings.kill_grace,
            Instant::now(),
        );
        let mut outputs = BatchOutputs::new(&markers, self.settings.max_output_bytes);

        let Some(process) = self.process.as_mut() else {
            deliver
                .deliver(every_run(requests, |_| {
                    MettaRunOutcome::Unavailable("the MeTTa engine is not running".into())
                }))
                .await;
            return Ok((BatchEnd::Completed, false));
        };
        let EngineProcess {
            child,
            leader,
            requests: request_pipe,
            responses,
            stdout: stdout_chunks,
            stderr: stderr_chunks,
            ..
        } = process;

        let write = async {
            request_pipe.write_all(line.as_bytes()).await?;
            request_pipe.flush().await
        };
        tokio::pin!(write);
        let mut written = false;
        // Outcomes not yet delivered.
        let mut pending: Vec<(usize, MettaRunOutcome)> = Vec::new();

        enum Event {
            Deadline,
            Exited(std::io::Result<std::process::ExitStatus>),
            Written(std::io::Result<()>),
            Line(std::io::Result<Option<String>>),
            Stdout(Option<Vec<u8>>),
            Stderr(Option<Vec<u8>>),
            MarkersLate,
            Idle,
        }

        // One timer for the whole exchange, moved when the deadline moves.
        let deadline = tokio::time::sleep_until(state.deadline());
        tokio::pin!(deadline);
        let end = loop {
            // The running job's answer is complete once its end markers arrived on both
            // streams (or took too long): it becomes an outcome, and the next job runs.
            if state.answer_complete(outputs.done(state.running()), Instant::now()) {
                if let Some((run, answered)) = state.take_answered() {
                    let replace = answered.asks_for_replacement();
                    pending.push((run, outputs.outcome(run, answered)));
                    if let Some(end) = state.end_after_answer(replace) {
                        break (end, replace);
                    }
                }
                continue;
            }
            if deadline.deadline() != state.deadline() {
                deadline.as_mut().reset(state.deadline());
            }
            let markers_due = state.markers_due();
            let from = state.running();
            let event = tokio::select! {
                biased;
                _ = &mut deadline => Event::Deadline,
                status = child.wait(), if !state.has_exited() => Event::Exited(status),
                result = &mut write, if !written => Event::Written(result),
                line = responses.next_line(), if state.awaits_line() => Event::Line(line),
                chunk = stdout_chunks.recv(), if outputs.stdout_open => Event::Stdout(chunk),
                chunk = stderr_chunks.recv(), if outputs.stderr_open => Event::Stderr(chunk),
                _ = tokio::time::sleep_until(markers_due.unwrap_or_else(Instant::now)), if markers_due.is_some() => Event::MarkersLate,
                _ = std::future::ready(()), if !pending.is_empty() => Event::Idle,
            };
            let death = match event {
                Event::Idle => {
                    // Nothing else is ready: store what is answered while the engine runs on.
                    deliver.deliver(std::mem::take(&mut pending)).await;
                    continue;
                }
                Event::Stdout(chunk) => {
                    outputs.feed_stdout(from, chunk);
                    continue;
                }
                Event::Stderr(chunk) => {
                    outputs.feed_stderr(from, chunk);
                    continue;
                }
                Event::MarkersLate => {
                    state.markers_late(Instant::now());
                    continue;
                }
                Event::Written(Ok(())) => {
                    written = true;
                    continue;
                }
                Event::Written(Err(err)) => {
                    format!("could not send the job to the engine: {err}")
                }
                Event::Deadline => match state.on_deadline() {
                    // Reading what the dead child wrote took too long (something else holds
                    // its pipes open).
                    Err(cause) => cause,
                    Ok(()) => {
                        kill_group(*leader);
                        crate::service_metrics::engine_killed("deadline");
                        if let Some((run, answered)) = state.take_answered() {
                            pending.push((run, outputs.outcome(run, answered)));
                        }
                        if let Some(run) = state.take_running() {
                            let (stdout, stderr) =
                                outputs.drain(run, stdout_chunks, stderr_chunks).await;
                            pending
                                .push((run, MettaRunOutcome::KilledAtDeadline { stdout, stderr }));
                        }
                        break (state.end_after_death(), true);
                    }
                },
                Event::Exited(status) => {
                    // Before deciding who is to blame, read what the child wrote before it
                    // died: its "received", answers of runs it finished. The pipes end once
                    // its group is gone.
                    kill_group(*leader);
                    let cause = match status {
                        Ok(status) => describe_exit(status),
                        Err(err) => format!("lost the engine process: {err}"),
                    };
                    state.on_exit(cause, Instant::now());
                    continue;
                }
                Event::Line(Ok(Some(line))) => match serde_json::from_str::<EngineAnswer>(&line) {
                    Err(err) => format!("unreadable answer from the engine: {err}"),
                    Ok(answer) => match state
                        .on_line(log_lost_session(answer, requests, from), Instant::now())
                    {
                        AfterLine::Continue => continue,
                        AfterLine::NeedHistory(run) => break (BatchEnd::NeedHistory(run), false),
                    },
                },
                Event::Line(Ok(None) | Err(_)) => {
                    state.on_answers_closed("the engine closed its answer channel")
                }
            };
            // The child died (or can no longer be talked to).
            kill_group(*leader);
            crate::service_metrics::engine_killed("died");
            let death = match state.blame(death) {
                Death::NotReceived(cause) => return Err(NotReceived(cause)),
                Death::DuringBatch(cause) => cause,
            };
            if let Some((run, answered)) = state.take_answered() {
                pending.push((run, outputs.outcome(run, answered)));
            }
            if let Some(run) = state.take_running() {
                let (stdout, stderr) = outputs.drain(run, stdout_chunks, stderr_chunks).await;
                // Prefer the exit status (it says how the child died) over the symptom.
                let cause = match tokio::time::timeout(DRAIN_AFTER_DEATH, child.wait()).await {
                    Ok(Ok(status)) => describe_exit(status),
                    _ => death,
                };
                pending.push((
                    run,
                    MettaRunOutcome::Died {
                        cause,
                        stdout,
                        stderr,
                    },
                ));
            }
            break (state.end_after_death(), true);
        };
        if !pending.is_empty() {
            deliver.deliver(pending).await;
        }
        Ok(end)
    }
}

/// The same outcome for every run of a batch.
fn every_run(
    requests: &[MettaRequest],
    outcome: impl Fn(usize) -> MettaRunOutcome,
) -> Vec<(usize, MettaRunOutcome)> {
    (0..requests.len()).map(|run| (run, outcome(run))).collect()
}

pub(super) fn describe_exit(status: std::process::ExitStatus) -> String {
    crate::learner_messages::engine_exit(status)
}

/// Logs a line saying that the running run's session process had ended before it read the
/// run (which is rebuilt or retried in a fresh process, not blamed); returns the line.
fn log_lost_session(
    answer: EngineAnswer,
    requests: &[MettaRequest],
    running: usize,
) -> EngineAnswer {
    let running = requests.get(running);
    match (&answer, running) {
        (
            EngineAnswer::Progress {
                id,
                phase: Phase::Retry,
                error: Some(lost),
            },
            Some(run),
        ) if id.as_deref() == Some(run.job_id.to_string().as_str()) => {
            tracing::warn!(job_id = %run.job_id, "{lost}; sending the job to a fresh one");
        }
        (
            EngineAnswer::NeedHistory {
                id,
                error: Some(lost),
            },
            Some(run),
        ) if id.as_deref() == Some(run.job_id.to_string().as_str()) => {
            tracing::warn!(job_id = %run.job_id, "{lost}; rebuilding the session for the job");
        }
        _ => {}
    }
    answer
}
