//! The server's side of the engine: spawns the engine child (contained like any child that
//! runs learners' code), sends it one run at a time, captures its output, enforces the hard
//! deadline (kill the child's whole process group at deadline + grace) and respawns it after
//! any death. Owned by the worker, so there is never more than one request in flight.
//!
//! It never touches the database: the worker gives it history when the child asks for it.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::unix::pipe;
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use super::child::RESPONSE_FD;
use super::protocol::{EngineResponse, ResponseOutcome, RunRequest};
use crate::capture::{CapturedOutput, MarkedCapture};
use crate::domain::{JobId, SessionId};
use crate::sandbox::{
    child_work_dir, children_of, cloexec_pipe, contained_command, describe_signal, kill_group,
    pass_fd_as, Containment,
};

/// How long a new engine child may take to import hyperon and say it is ready.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long to wait for the end markers once the child has answered.
const MARKER_WAIT: Duration = Duration::from_secs(2);
/// How long to keep reading output of a child that died or was killed.
const DRAIN_AFTER_DEATH: Duration = Duration::from_millis(500);

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
    /// Where the engine's working directory goes (see `sandbox::prepare_scratch`).
    pub scratch: PathBuf,
}

/// One MeTTa run as the worker asks for it.
#[derive(Debug, Clone)]
pub struct MettaRequest<'a> {
    pub job_id: JobId,
    pub session: &'a SessionId,
    pub generation: i64,
    pub history: Option<&'a [String]>,
    pub code: &'a str,
    pub after: &'a [String],
    pub timeout: Duration,
    pub success_generation: i64,
}

/// How a run through the engine ended.
#[derive(Debug)]
pub enum MettaRunOutcome {
    /// The child answered (succeeded, failed, timed out at a step boundary, replay failed).
    Answered {
        response: EngineResponse,
        stdout: CapturedOutput,
        stderr: CapturedOutput,
    },
    /// The child does not hold the session at that generation: send the history.
    NeedHistory,
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

/// The child died before it said it got the job (it was killed from outside while idle): the
/// job did not run, so `run` sends it once more to a new child.
struct NotReceived(String);

/// A live engine child and its pipes. Dropping it kills the child's whole process group.
struct EngineProcess {
    child: Child,
    leader: u32,
    requests: ChildStdin,
    responses: Lines<BufReader<pipe::Receiver>>,
    stdout: mpsc::Receiver<Vec<u8>>,
    stderr: mpsc::Receiver<Vec<u8>>,
    /// The child's working directory and home, removed with it.
    _work_dir: tempfile::TempDir,
}

impl Drop for EngineProcess {
    fn drop(&mut self) {
        kill_group(self.leader);
    }
}

impl EngineProcess {
    /// Kills what the last job started and left running (a background process), keeping the
    /// engine itself; their own orphans come to the server, whose worker reaps them.
    /// Cheap when there is nothing: one look at the engine's children.
    fn kill_leftovers(&self) {
        for pid in children_of(self.leader) {
            // SAFETY: signalling a process; no memory effects.
            unsafe {
                libc::kill(-(pid as i32), libc::SIGKILL);
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
    }
}

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
    pub async fn ensure_started(&mut self) -> Result<(), String> {
        if self.process.is_none() {
            let spawned = self.spawn().await;
            self.start_failing = spawned.is_err();
            self.process = Some(spawned?);
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
        let line = serde_json::json!({"op": "drop", "id": "drop", "session": session.as_str()});
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
            self.process = None;
        }
    }

    /// Runs one MeTTa request, starting a child first when needed.
    pub async fn run(&mut self, request: &MettaRequest<'_>) -> MettaRunOutcome {
        // A child that died while idle (killed from outside, a leftover thread's crash) is
        // replaced before the job, which must not be blamed for it.
        if let Some(process) = self.process.as_mut() {
            if !matches!(process.child.try_wait(), Ok(None)) {
                tracing::warn!("the MeTTa engine had died while idle; starting a new one");
                self.process = None;
                self.start_failing = false;
            }
        }
        if let Err(reason) = self.ensure_started().await {
            return MettaRunOutcome::Unavailable(reason);
        }
        let outcome = match self.exchange(request).await {
            Ok(outcome) => outcome,
            Err(NotReceived(cause)) => {
                tracing::warn!(
                    "the MeTTa engine died before it got a job ({cause}); sending the job to a new one"
                );
                self.process = None;
                match self.ensure_started().await {
                    Ok(()) => self
                        .exchange(request)
                        .await
                        .unwrap_or_else(|NotReceived(cause)| MettaRunOutcome::Died {
                            cause,
                            stdout: CapturedOutput::default(),
                            stderr: CapturedOutput::default(),
                        }),
                    Err(reason) => MettaRunOutcome::Unavailable(reason),
                }
            }
        };
        let replace = match &outcome {
            MettaRunOutcome::KilledAtDeadline { .. } | MettaRunOutcome::Died { .. } => true,
            MettaRunOutcome::Answered { response, .. } => response.recycle,
            _ => false,
        };
        if replace {
            // The worker starts the next child once this job's result is stored
            // (`start_replacement`), so the learner does not wait for the respawn.
            if let Some(old) = self.process.take() {
                kill_group(old.leader);
                self.retiring = Some(old);
            }
        }
        outcome
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

    async fn exchange(
        &mut self,
        request: &MettaRequest<'_>,
    ) -> Result<MettaRunOutcome, NotReceived> {
        let nonce = Uuid::new_v4().simple().to_string();
        let marker_start = format!("\u{1}mlb:{nonce}:start\u{1}");
        let marker_end = format!("\u{1}mlb:{nonce}:end\u{1}");
        let request_id = request.job_id.to_string();
        let wire = RunRequest {
            op: "run",
            id: request_id.clone(),
            session: request.session.as_str(),
            generation: request.generation,
            history: request.history,
            code: request.code,
            after: request.after,
            timeout_ms: request.timeout.as_millis() as u64,
            replay_timeout_ms: self.settings.replay_timeout.as_millis() as u64,
            success_generation: request.success_generation,
            marker_start: &marker_start,
            marker_end: &marker_end,
        };
        let mut line = match serde_json::to_string(&wire) {
            Ok(line) => line,
            Err(err) => {
                return Ok(MettaRunOutcome::Unavailable(format!(
                    "cannot encode request: {err}"
                )))
            }
        };
        line.push('\n');

        // The hard deadline covers the current phase only: the replay of the history (its own
        // budget), the job's code (the job's budget), then the replay of later cells.
        let grace = self.settings.kill_grace;
        let replay_timeout = self.settings.replay_timeout;
        let mut hard_deadline = Instant::now()
            + grace
            + if request.history.is_some() {
                replay_timeout
            } else {
                request.timeout
            };
        let cap = self.settings.max_output_bytes;
        let mut stdout = MarkedCapture::new(marker_start.as_bytes(), marker_end.as_bytes(), cap);
        let mut stderr = MarkedCapture::new(marker_start.as_bytes(), marker_end.as_bytes(), cap);

        let Some(process) = self.process.as_mut() else {
            return Ok(MettaRunOutcome::Unavailable(
                "the MeTTa engine is not running".into(),
            ));
        };
        let EngineProcess {
            child,
            leader,
            requests,
            responses,
            stdout: stdout_chunks,
            stderr: stderr_chunks,
            ..
        } = process;

        let write = async {
            requests.write_all(line.as_bytes()).await?;
            requests.flush().await
        };
        let mut stdout_open = true;
        let mut stderr_open = true;
        let mut written = false;
        // Whether the child said it got the job: a death before that is not the job's doing.
        let mut received = false;
        tokio::pin!(write);

        // Send the request and wait for its answer, reading output all along so the child
        // never blocks on a full pipe.
        let answer: Result<EngineResponse, String> = loop {
            tokio::select! {
                result = &mut write, if !written => {
                    written = true;
                    if let Err(err) = result {
                        break Err(format!("could not send the job to the engine: {err}"));
                    }
                }
                chunk = stdout_chunks.recv(), if stdout_open => match chunk {
                    Some(chunk) => stdout.feed(&chunk),
                    None => stdout_open = false,
                },
                chunk = stderr_chunks.recv(), if stderr_open => match chunk {
                    Some(chunk) => stderr.feed(&chunk),
                    None => stderr_open = false,
                },
                line = responses.next_line() => match line {
                    Ok(Some(line)) => match serde_json::from_str::<EngineResponse>(&line) {
                        Ok(response) if response.id.as_deref() != Some(request_id.as_str()) => continue,
                        Ok(response) if response.outcome == ResponseOutcome::Progress => {
                            received = true;
                            let budget = match response.phase.as_deref() {
                                Some("received") => continue,
                                Some("code") => request.timeout,
                                _ => replay_timeout,
                            };
                            hard_deadline = Instant::now() + budget + grace;
                        }
                        Ok(response) => break Ok(response),
                        Err(err) => break Err(format!("unreadable answer from the engine: {err}")),
                    },
                    Ok(None) | Err(_) => break Err("the engine closed its answer channel".into()),
                },
                status = child.wait() => {
                    break Err(match status {
                        Ok(status) => describe_exit(status),
                        Err(err) => format!("lost the engine process: {err}"),
                    });
                }
                _ = tokio::time::sleep_until(hard_deadline) => {
                    kill_group(*leader);
                    let stdout = drain_after_death(stdout, stdout_chunks).await;
                    let stderr = drain_after_death(stderr, stderr_chunks).await;
                    return Ok(MettaRunOutcome::KilledAtDeadline { stdout, stderr });
                }
            }
        };

        Ok(match answer {
            Ok(response) if response.outcome == ResponseOutcome::NeedHistory => {
                MettaRunOutcome::NeedHistory
            }
            Ok(response) => {
                let collect = async {
                    while !(stdout.is_done() && stderr.is_done()) {
                        tokio::select! {
                            chunk = stdout_chunks.recv(), if stdout_open && !stdout.is_done() => match chunk {
                                Some(chunk) => stdout.feed(&chunk),
                                None => stdout_open = false,
                            },
                            chunk = stderr_chunks.recv(), if stderr_open && !stderr.is_done() => match chunk {
                                Some(chunk) => stderr.feed(&chunk),
                                None => stderr_open = false,
                            },
                            else => break,
                        }
                    }
                };
                let _ = tokio::time::timeout(MARKER_WAIT, collect).await;
                process.kill_leftovers();
                MettaRunOutcome::Answered {
                    response,
                    stdout: stdout.finish(),
                    stderr: stderr.finish(),
                }
            }
            Err(cause) if !received => {
                kill_group(*leader);
                return Err(NotReceived(cause));
            }
            Err(cause) => {
                kill_group(*leader);
                let stdout = drain_after_death(stdout, stdout_chunks).await;
                let stderr = drain_after_death(stderr, stderr_chunks).await;
                // Prefer the exit status (it says how the child died) over the symptom.
                let cause = match tokio::time::timeout(DRAIN_AFTER_DEATH, child.wait()).await {
                    Ok(Ok(status)) => describe_exit(status),
                    _ => cause,
                };
                MettaRunOutcome::Died {
                    cause,
                    stdout,
                    stderr,
                }
            }
        })
    }

    async fn spawn(&mut self) -> Result<EngineProcess, String> {
        let containment = self.settings.containment;
        let work_dir = child_work_dir(&self.settings.scratch, "engine-", containment.identity)
            .map_err(|err| format!("cannot create the engine's working directory: {err}"))?;
        let (response_reader, response_writer) = cloexec_pipe()
            .map_err(|err| format!("cannot create the engine's answer pipe: {err}"))?;
        let sys_path =
            serde_json::to_string(&self.settings.sys_path).unwrap_or_else(|_| "[]".into());
        let mut command =
            contained_command(&self.settings.executable, work_dir.path(), containment);
        command
            .arg("engine")
            .arg("--max-live-sessions")
            .arg(self.settings.max_live_sessions.to_string())
            .arg("--memory-budget-mb")
            .arg(self.settings.memory_budget_mb.to_string())
            .arg("--sys-path")
            .arg(sys_path)
            .stdin(Stdio::piped());
        pass_fd_as(&mut command, &response_writer, RESPONSE_FD);
        let mut child = command.spawn().map_err(|err| {
            format!(
                "cannot start the engine process {}: {err}",
                self.settings.executable.display()
            )
        })?;
        drop(response_writer);
        let leader = child.id().unwrap_or(0);
        let requests = child.stdin.take().ok_or("the engine has no stdin")?;
        let stdout = forward_chunks(child.stdout.take().ok_or("the engine has no stdout")?);
        let stderr = forward_chunks(child.stderr.take().ok_or("the engine has no stderr")?);
        let receiver = pipe::Receiver::from_owned_fd(response_reader)
            .map_err(|err| format!("cannot read the engine's answer pipe: {err}"))?;
        let mut process = EngineProcess {
            child,
            leader,
            requests,
            responses: BufReader::new(receiver).lines(),
            stdout,
            stderr,
            _work_dir: work_dir,
        };

        let greeting = tokio::time::timeout(START_TIMEOUT, process.responses.next_line()).await;
        let line = match greeting {
            Ok(Ok(Some(line))) => line,
            Ok(_) => {
                let status = process.child.wait().await.map(describe_exit);
                let mut stderr_text = Vec::new();
                while let Ok(Some(chunk)) =
                    tokio::time::timeout(DRAIN_AFTER_DEATH, process.stderr.recv()).await
                {
                    stderr_text.extend_from_slice(&chunk);
                }
                return Err(format!(
                    "the engine stopped before it was ready ({}): {}",
                    status.unwrap_or_else(|err| err.to_string()),
                    String::from_utf8_lossy(&stderr_text).trim()
                ));
            }
            Err(_) => return Err("the engine did not become ready within 60 s".into()),
        };
        let greeting: EngineResponse = serde_json::from_str(&line)
            .map_err(|err| format!("unreadable greeting from the engine: {err}"))?;
        match greeting.outcome {
            ResponseOutcome::Ready => {
                let version = greeting.hyperon.unwrap_or_else(|| "unknown".into());
                if self.hyperon_version.as_deref() != Some(version.as_str()) {
                    tracing::info!(hyperon = %version, "MeTTa engine ready");
                }
                self.hyperon_version = Some(version);
                Ok(process)
            }
            _ => Err(greeting
                .error
                .unwrap_or_else(|| "the engine refused to start".into())),
        }
    }
}

/// Reads a child's output pipe in the background and forwards it in chunks. The channel is
/// bounded: a child printing between jobs fills it and then blocks, it cannot grow memory.
fn forward_chunks<R: AsyncRead + Unpin + Send + 'static>(mut reader: R) -> mpsc::Receiver<Vec<u8>> {
    let (sender, receiver) = mpsc::channel(32);
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sender.send(buffer[..n].to_vec()).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    receiver
}

async fn drain_after_death(
    mut capture: MarkedCapture,
    chunks: &mut mpsc::Receiver<Vec<u8>>,
) -> CapturedOutput {
    let drain = async {
        while let Some(chunk) = chunks.recv().await {
            capture.feed(&chunk);
        }
    };
    let _ = tokio::time::timeout(DRAIN_AFTER_DEATH, drain).await;
    capture.finish()
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("the engine exited with status {code}"),
        (_, Some(signal)) => format!("the engine was killed by {}", describe_signal(signal)),
        _ => "the engine exited".into(),
    }
}
