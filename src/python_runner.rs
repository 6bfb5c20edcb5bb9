//! Runs one Python job in a fresh, contained interpreter: `python -I -c <code>` in its own
//! process group and temporary directory, stdin from the job, stdout and stderr drained
//! concurrently and capped, the whole group killed at the deadline and again after exit (so
//! nothing it started in the background survives). It never touches the database.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::capture::{read_capped, CapturedOutput};
use crate::sandbox::{child_work_dir, contained_command, kill_group, Containment, GroupGuard};

/// How long to keep draining output after the child is gone (a grandchild that escaped the
/// group may hold the pipe open; its output is not waited for).
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);

/// How a Python job ended.
#[derive(Debug)]
pub enum PythonExit {
    /// The interpreter exited with this code.
    Exited(i32),
    /// The interpreter was killed by this signal (an rlimit, the OOM killer, …).
    Signalled(i32),
    /// The deadline passed; the group was killed.
    TimedOut,
    /// The interpreter could not be started.
    SpawnFailed(String),
}

/// The result of one Python job.
#[derive(Debug)]
pub struct PythonRun {
    pub exit: PythonExit,
    pub stdout: CapturedOutput,
    pub stderr: CapturedOutput,
    pub elapsed: Duration,
}

/// Starts contained Python interpreters.
#[derive(Debug, Clone)]
pub struct PythonRunner {
    pub python: PathBuf,
    pub containment: Containment,
    /// Where the per-job working directories go (see `sandbox::prepare_scratch`).
    pub scratch: PathBuf,
    pub max_output_bytes: usize,
}

impl PythonRunner {
    /// Runs `code` with `stdin` until it exits or `timeout` passes.
    pub async fn run(&self, code: &str, stdin: Option<&str>, timeout: Duration) -> PythonRun {
        let started = Instant::now();
        let failed = |message: String| PythonRun {
            exit: PythonExit::SpawnFailed(message),
            stdout: CapturedOutput::default(),
            stderr: CapturedOutput::default(),
            elapsed: started.elapsed(),
        };
        let work_dir = match child_work_dir(&self.scratch, "python-", self.containment.identity) {
            Ok(dir) => dir,
            Err(err) => return failed(format!("cannot create a working directory: {err}")),
        };
        let mut containment = self.containment;
        // CPU time a little above the wall-clock deadline: a busy loop dies by the deadline
        // first, and a child that forks CPU burners still cannot outlive its budget.
        containment.limits.cpu_secs = Some(timeout.as_secs() + 2);
        let mut command = contained_command(&self.python, work_dir.path(), containment);
        command.arg("-I").arg("-c").arg(code);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(err) => {
                return failed(format!(
                    "cannot start the Python interpreter {}: {err}",
                    self.python.display()
                ))
            }
        };
        let leader = child.id().unwrap_or(0);
        let _group = GroupGuard(leader);

        let stdin_bytes = stdin.unwrap_or_default().as_bytes().to_vec();
        if let Some(mut pipe) = child.stdin.take() {
            // A child that never reads its stdin must not block the job: write in the background.
            tokio::spawn(async move {
                let _ = pipe.write_all(&stdin_bytes).await;
                let _ = pipe.shutdown().await;
            });
        }
        let cap = self.max_output_bytes;
        let stdout = child
            .stdout
            .take()
            .map(|pipe| tokio::spawn(read_capped(pipe, cap)));
        let stderr = child
            .stderr
            .take()
            .map(|pipe| tokio::spawn(read_capped(pipe, cap)));

        let exit = match tokio::time::timeout(timeout, child.wait()).await {
            Ok(Ok(status)) => {
                use std::os::unix::process::ExitStatusExt;
                match (status.code(), status.signal()) {
                    (Some(code), _) => PythonExit::Exited(code),
                    (None, Some(signal)) => PythonExit::Signalled(signal),
                    (None, None) => PythonExit::Exited(-1),
                }
            }
            Ok(Err(err)) => PythonExit::SpawnFailed(format!("lost the Python interpreter: {err}")),
            Err(_) => PythonExit::TimedOut,
        };
        // Kill whatever is left of the group: the interpreter at the deadline, and anything it
        // left running in the background after a normal exit.
        kill_group(leader);
        let _ = child.wait().await;

        let stdout = collect(stdout).await;
        let stderr = collect(stderr).await;
        drop(work_dir);
        PythonRun {
            exit,
            stdout,
            stderr,
            elapsed: started.elapsed(),
        }
    }
}

async fn collect(task: Option<tokio::task::JoinHandle<CapturedOutput>>) -> CapturedOutput {
    let Some(task) = task else {
        return CapturedOutput::default();
    };
    let abort = task.abort_handle();
    match tokio::time::timeout(DRAIN_AFTER_EXIT, task).await {
        Ok(Ok(output)) => output,
        _ => {
            abort.abort();
            CapturedOutput {
                bytes: Vec::new(),
                truncated: true,
            }
        }
    }
}
