//! Starting an engine child: its contained command, its pipes (requests on fd 4, answers on
//! fd 3, stdout and stderr), and its greeting (`ready` with hyperon's version and the walls a
//! session process got, or why it cannot start).

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::net::unix::pipe;
use tokio::process::Child;

use super::batch_output::OutputPipe;
use super::child::{REQUEST_FD, RESPONSE_FD};
use super::exchange::DRAIN_AFTER_DEATH;
use super::protocol::EngineAnswer;
use super::supervisor::{describe_exit, EngineSettings};
use crate::sandbox::{child_work_dir, cloexec_pipe, contained_command, kill_group, pass_fd_as};

/// How long a new engine child may take to import hyperon and say it is ready.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A live engine child and its pipes. Dropping it kills the child's whole process group.
pub(super) struct EngineProcess {
    pub(super) child: Child,
    pub(super) leader: u32,
    pub(super) requests: pipe::Sender,
    pub(super) responses: Lines<BufReader<pipe::Receiver>>,
    pub(super) stdout: OutputPipe,
    pub(super) stderr: OutputPipe,
    /// The child's working directory and home, removed with it.
    _work_dir: tempfile::TempDir,
}

impl Drop for EngineProcess {
    fn drop(&mut self) {
        kill_group(self.leader);
    }
}

/// Why no engine child could be started.
pub(super) enum StartFailure {
    /// It was killed (SIGKILL) before it said it was ready: worth one more try.
    KilledWhileStarting(String),
    /// Anything else (hyperon missing, a wall refused, a bad setting): said to the jobs.
    Refused(String),
}

impl StartFailure {
    pub(super) fn into_reason(self) -> String {
        match self {
            StartFailure::KilledWhileStarting(reason) | StartFailure::Refused(reason) => reason,
        }
    }
}

impl From<String> for StartFailure {
    fn from(reason: String) -> Self {
        StartFailure::Refused(reason)
    }
}

impl From<&str> for StartFailure {
    fn from(reason: &str) -> Self {
        StartFailure::Refused(reason.to_string())
    }
}

/// Starts an engine child and waits for its greeting; returns it with hyperon's version
/// (`known_version`: the last child's, so the walls are logged only when something changed).
pub(super) async fn spawn(
    settings: &EngineSettings,
    known_version: Option<&str>,
) -> Result<(EngineProcess, String), StartFailure> {
    if let Some(reason) = &settings.refusal {
        return Err(format!(
            "this server runs no learner's code until its operator fixes its containment: {reason}"
        )
        .into());
    }
    let containment = settings.containment.clone();
    let work_dir = child_work_dir(&settings.scratch, "engine-", containment.identity)
        .map_err(|err| format!("cannot create the engine's working directory: {err}"))?;
    let (response_reader, response_writer) =
        cloexec_pipe().map_err(|err| format!("cannot create the engine's answer pipe: {err}"))?;
    let (request_reader, request_writer) =
        cloexec_pipe().map_err(|err| format!("cannot create the engine's request pipe: {err}"))?;
    let sys_path = serde_json::to_string(&settings.sys_path).unwrap_or_else(|_| "[]".into());
    let mut command = contained_command(&settings.executable, work_dir.path(), &containment)
        .map_err(|err| format!("cannot prepare the engine's containment: {err}"))?;
    command
        .arg("engine")
        .arg("--max-live-sessions")
        .arg(settings.max_live_sessions.to_string())
        .arg("--memory-budget-mb")
        .arg(settings.memory_budget_mb.to_string())
        .arg("--sys-path")
        .arg(sys_path)
        .arg("--session-uid-base")
        .arg(settings.session_uid_base.map_or(-1, i64::from).to_string())
        .arg("--session-gid")
        .arg(settings.session_gid.map_or(-1, i64::from).to_string())
        .arg("--session-open-files")
        .arg(settings.session_open_files.to_string())
        // The engine's own stdin is empty: a job's stdin comes with the job, and no
        // learner's `input()` can read the engine's requests.
        .stdin(Stdio::null());
    pass_fd_as(&mut command, &response_writer, RESPONSE_FD);
    pass_fd_as(&mut command, &request_reader, REQUEST_FD);
    let mut child = command.spawn().map_err(|err| {
        format!(
            "cannot start the engine process {}: {err}",
            settings.executable.display()
        )
    })?;
    drop(response_writer);
    drop(request_reader);
    let leader = child.id().unwrap_or(0);
    let requests = pipe::Sender::from_owned_fd(request_writer)
        .map_err(|err| format!("cannot write to the engine's request pipe: {err}"))?;
    let stdout = OutputPipe::new(child.stdout.take().ok_or("the engine has no stdout")?);
    let stderr = OutputPipe::new(child.stderr.take().ok_or("the engine has no stderr")?);
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
            let status = process.child.wait().await;
            let killed = matches!(
                &status,
                Ok(status) if std::os::unix::process::ExitStatusExt::signal(status) == Some(libc::SIGKILL)
            );
            let status = status.map(describe_exit);
            let mut stderr_text = Vec::new();
            while let Ok(Some(chunk)) =
                tokio::time::timeout(DRAIN_AFTER_DEATH, process.stderr.recv()).await
            {
                stderr_text.extend_from_slice(&chunk);
            }
            let reason = format!(
                "the engine stopped before it was ready ({}): {}",
                status.unwrap_or_else(|err| err.to_string()),
                String::from_utf8_lossy(&stderr_text).trim()
            );
            return Err(if killed {
                StartFailure::KilledWhileStarting(reason)
            } else {
                StartFailure::Refused(reason)
            });
        }
        Err(_) => return Err("the engine did not become ready within 60 s".into()),
    };
    let greeting: EngineAnswer = serde_json::from_str(&line)
        .map_err(|err| format!("unreadable greeting from the engine: {err}"))?;
    match greeting {
        EngineAnswer::Ready {
            hyperon,
            walls,
            steps,
        } => {
            crate::service_metrics::engine_started();
            let version = hyperon.unwrap_or_else(|| "unknown".into());
            if known_version != Some(version.as_str()) {
                let walls = walls.join(", ");
                let steps = steps.unwrap_or_else(|| "unknown".into());
                tracing::info!(hyperon = %version, steps = %steps, "MeTTa engine ready");
                if walls.contains("NO ") {
                    tracing::warn!("containment: each live MeTTa session runs in a process of its own with: {walls}");
                } else {
                    tracing::info!(
                        "each live MeTTa session runs in a process of its own with: {walls}"
                    );
                }
            }
            Ok((process, version))
        }
        EngineAnswer::Unavailable { error, .. } => Err(error.into()),
        other => Err(format!("the engine greeted with {other:?} instead of `ready`").into()),
    }
}
