//! Runs one Python job in a fresh, contained interpreter: its own process group and temporary
//! directory, stdin from the job, stdout and stderr drained concurrently and capped, the whole
//! group killed at the deadline and again after exit (so nothing it started in the background
//! survives). It never touches the database.
//!
//! The next interpreter is started before it is needed (`prepare_next`): it starts up while
//! the worker is idle or busy with other jobs and then blocks reading its code from fd 3, so a
//! learner never waits for interpreter start-up. Each interpreter still runs exactly one job.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::process::Child;
use tokio_util::sync::CancellationToken;

use crate::capture::{read_capped_until, CapturedOutput};
use crate::sandbox::{
    child_work_dir, cloexec_pipe, contained_command, kill_group, pass_fd_as, Containment, Identity,
};

/// How long to keep draining output after the child is gone (a grandchild that escaped the
/// group may hold the pipe open; its output is not waited for).
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);

/// The descriptor a waiting interpreter reads its code from.
const CODE_FD: i32 = 3;

/// Runs the code read from fd 3 as `python -I -c <code>` would: in a fresh `__main__`, with
/// the same traceback (the bootstrap's own frame is left out) and exit status.
const BOOTSTRAP: &str = r#"
import os, sys, types
def _mlb_run():
    chunks = []
    while True:
        chunk = os.read(3, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(3)
    source = b"".join(chunks).decode("utf-8", "surrogateescape")
    main = types.ModuleType("__main__")
    sys.modules["__main__"] = main
    try:
        code = compile(source, "<string>", "exec")
    except SyntaxError as error:
        import traceback
        traceback.print_exception(type(error), error, None)
        sys.exit(1)
    try:
        exec(code, main.__dict__)
    except SystemExit:
        raise
    except BaseException as error:
        import traceback
        traceback.print_exception(type(error), error, error.__traceback__.tb_next)
        sys.exit(1)
_mlb_run()
"#;

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
}

/// An interpreter started ahead of its job, blocked reading its code.
struct WaitingInterpreter {
    child: Child,
    leader: u32,
    /// The write end of its fd 3, until the code is sent.
    code: Option<OwnedFd>,
    /// Its working directory, removed with it.
    _work_dir: tempfile::TempDir,
}

/// Kills the interpreter's whole group when dropped: an unused interpreter, and a job abandoned
/// mid-run (shutdown grace expired) alike.
impl Drop for WaitingInterpreter {
    fn drop(&mut self) {
        kill_group(self.leader);
    }
}

/// Starts contained Python interpreters, one per job, the next one ahead of time.
pub struct PythonRunner {
    pub python: PathBuf,
    pub containment: Containment,
    /// Where the per-job working directories go (see `sandbox::prepare_scratch`).
    pub scratch: PathBuf,
    pub max_output_bytes: usize,
    /// The identity of every other interpreter (see `ContainmentPlan::python_alternate`).
    alternate: Option<Identity>,
    /// How many interpreters were started, to alternate identities.
    started: u64,
    waiting: Option<WaitingInterpreter>,
    /// Whether the last start failed (then none is started ahead until a job asks).
    start_failing: bool,
}

impl PythonRunner {
    pub fn new(
        python: PathBuf,
        containment: Containment,
        alternate: Option<Identity>,
        scratch: PathBuf,
        max_output_bytes: usize,
    ) -> Self {
        PythonRunner {
            python,
            containment,
            scratch,
            max_output_bytes,
            alternate,
            started: 0,
            waiting: None,
            start_failing: false,
        }
    }

    /// The pid of the interpreter waiting for the next job, if any.
    pub fn waiting_pid(&self) -> Option<u32> {
        self.waiting.as_ref().map(|waiting| waiting.leader)
    }

    /// Starts the next job's interpreter now, unless one is waiting or starting fails.
    pub fn prepare_next(&mut self) {
        if self.waiting.is_none() && !self.start_failing {
            match self.start_interpreter() {
                Ok(waiting) => self.waiting = Some(waiting),
                Err(err) => {
                    tracing::warn!("cannot start a Python interpreter ahead of time: {err}");
                    self.start_failing = true;
                }
            }
        }
    }

    fn start_interpreter(&mut self) -> Result<WaitingInterpreter, String> {
        let mut containment = self.containment;
        self.started += 1;
        if self.started % 2 == 0 && self.alternate.is_some() {
            containment.identity = self.alternate;
        }
        let work_dir = child_work_dir(&self.scratch, "python-", containment.identity)
            .map_err(|err| format!("cannot create a working directory: {err}"))?;
        let (code_reader, code_writer) =
            cloexec_pipe().map_err(|err| format!("cannot create a pipe: {err}"))?;
        let mut command = contained_command(&self.python, work_dir.path(), containment);
        command.arg("-I").arg("-c").arg(BOOTSTRAP);
        pass_fd_as(&mut command, &code_reader, CODE_FD);
        let child = command.spawn().map_err(|err| {
            format!(
                "cannot start the Python interpreter {}: {err}",
                self.python.display()
            )
        })?;
        drop(code_reader);
        Ok(WaitingInterpreter {
            leader: child.id().unwrap_or(0),
            child,
            code: Some(code_writer),
            _work_dir: work_dir,
        })
    }

    /// Runs `code` with `stdin` until it exits or `timeout` passes.
    pub async fn run(&mut self, code: &str, stdin: Option<&str>, timeout: Duration) -> PythonRun {
        let waiting = match self.waiting.take() {
            Some(waiting) => Ok(waiting),
            None => self.start_interpreter(),
        };
        self.start_failing = waiting.is_err();
        let mut waiting = match waiting {
            Ok(waiting) => waiting,
            Err(message) => {
                return PythonRun {
                    exit: PythonExit::SpawnFailed(message),
                    stdout: CapturedOutput::default(),
                    stderr: CapturedOutput::default(),
                }
            }
        };
        let child = &mut waiting.child;

        // Output is read from the start, so a child printing before it reads stdin never blocks.
        let stop_reading = CancellationToken::new();
        let cap = self.max_output_bytes;
        let stdout = child
            .stdout
            .take()
            .map(|pipe| tokio::spawn(read_capped_until(pipe, cap, stop_reading.clone())));
        let stderr = child
            .stderr
            .take()
            .map(|pipe| tokio::spawn(read_capped_until(pipe, cap, stop_reading.clone())));

        // Code, then stdin, in the background: a child that reads neither must not block the
        // job, and one that died early makes these writes fail harmlessly.
        let code_pipe = waiting
            .code
            .take()
            .and_then(|fd| pipe::Sender::from_owned_fd(fd).ok());
        let code_bytes = code.as_bytes().to_vec();
        let stdin_bytes = stdin.unwrap_or_default().as_bytes().to_vec();
        let stdin_pipe = child.stdin.take();
        tokio::spawn(async move {
            if let Some(mut pipe) = code_pipe {
                let _ = pipe.write_all(&code_bytes).await;
            }
            if let Some(mut pipe) = stdin_pipe {
                let _ = pipe.write_all(&stdin_bytes).await;
                let _ = pipe.shutdown().await;
            }
        });

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
        kill_group(waiting.leader);
        let _ = child.wait().await;

        let stdout = collect(stdout, &stop_reading).await;
        let stderr = collect(stderr, &stop_reading).await;
        drop(waiting);
        PythonRun {
            exit,
            stdout,
            stderr,
        }
    }
}

/// The output of a reader task; after `DRAIN_AFTER_EXIT` it is told to stop (a process that
/// escaped the group may hold the pipe open) and returns what it has.
async fn collect(
    task: Option<tokio::task::JoinHandle<CapturedOutput>>,
    stop: &CancellationToken,
) -> CapturedOutput {
    let Some(mut task) = task else {
        return CapturedOutput::default();
    };
    if let Ok(Ok(output)) = tokio::time::timeout(DRAIN_AFTER_EXIT, &mut task).await {
        return output;
    }
    stop.cancel();
    task.await.unwrap_or_default()
}
