//! Runs one Python job in a fresh, contained interpreter: its own process group and temporary
//! directory, stdin from the job, stdout and stderr drained concurrently and capped, the whole
//! group killed at the deadline and again after exit (so nothing it started in the background
//! survives). It never touches the database.
//!
//! The next interpreters are started before they are needed (`prepare_next`): they start up
//! while the worker is idle or busy with other jobs and then block reading their code from
//! fd 3, so a learner does not wait for interpreter start-up. Two wait at a time, so jobs
//! arriving back to back find one ready while the next starts up on the other core. Each
//! interpreter still runs exactly one job.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::process::Child;
use tokio::sync::oneshot;
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
def _mlb_exit():
    # After a normal end, what the interpreter does at exit, less its teardown of every
    # module (about half of a short job's time): wait for non-daemon threads, run atexit
    # callbacks, drop __main__'s globals as teardown would (underscore names first, then the
    # rest, __builtins__ last, so __del__ methods run and can still print), collect cycles,
    # flush. Anything unusual (a flush that fails, ...) leaves it to the normal exit.
    try:
        if "threading" in sys.modules:
            sys.modules["threading"]._shutdown()
        import atexit, gc
        atexit._run_exitfuncs()
        names = sys.modules["__main__"].__dict__
        for private in (True, False):
            for name in list(names):
                if name != "__builtins__" and name.startswith("_") == private:
                    names[name] = None
        gc.collect()
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        return
    os._exit(0)
_mlb_run()
_mlb_exit()
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

/// An interpreter started ahead: still being spawned (off the worker's thread: a fork of the
/// server takes a moment), or spawned and waiting for its code.
enum ReadyInterpreter {
    Starting(oneshot::Receiver<Result<WaitingInterpreter, String>>),
    Started(Box<WaitingInterpreter>),
}

type SpawnRequest = (
    InterpreterStart,
    oneshot::Sender<Result<WaitingInterpreter, String>>,
);

/// The thread that spawns interpreters, off the worker's thread (forking the server takes a
/// moment). It lives as long as the runner: `PR_SET_PDEATHSIG` fires when the *thread* that
/// forked a child exits, so a pool thread that retires after idling would take the
/// interpreters it started with it.
struct Spawner {
    requests: std::sync::mpsc::Sender<SpawnRequest>,
}

impl Spawner {
    fn start() -> Result<Spawner, String> {
        let runtime = tokio::runtime::Handle::current();
        let (requests, incoming) = std::sync::mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("python-spawner".into())
            .spawn(move || {
                let _runtime = runtime.enter();
                for (start, reply) in incoming {
                    let _ = reply.send(start_interpreter(start));
                }
            })
            .map_err(|err| format!("cannot start the interpreter-spawning thread: {err}"))?;
        Ok(Spawner { requests })
    }

    fn spawn(
        &self,
        start: InterpreterStart,
    ) -> oneshot::Receiver<Result<WaitingInterpreter, String>> {
        let (reply, answer) = oneshot::channel();
        if let Err(std::sync::mpsc::SendError((_, reply))) = self.requests.send((start, reply)) {
            let _ = reply.send(Err("the interpreter-spawning thread is gone".into()));
        }
        answer
    }
}

/// What starting one interpreter needs, so it can be done on a blocking thread.
struct InterpreterStart {
    python: PathBuf,
    containment: Containment,
    scratch: PathBuf,
}

/// Kills the interpreter's whole group when dropped: an unused interpreter, and a job abandoned
/// mid-run (shutdown grace expired) alike.
impl Drop for WaitingInterpreter {
    fn drop(&mut self) {
        kill_group(self.leader);
    }
}

/// Interpreters kept started ahead of their jobs. Two at most: identities alternate between
/// interpreters in start order and jobs take them in that order, so the one waiting while a
/// job runs always has the other identity (a third would share the running job's).
const READY_INTERPRETERS: usize = 2;

/// Starts contained Python interpreters, one per job, the next ones ahead of time.
pub struct PythonRunner {
    pub python: PathBuf,
    pub containment: Containment,
    /// Where the per-job working directories go (see `instance::ScratchFolder`).
    pub scratch: PathBuf,
    pub max_output_bytes: usize,
    /// The identity of every other interpreter (see `ContainmentPlan::python_alternate`).
    alternate: Option<Identity>,
    /// How many interpreters were started, to alternate identities.
    started: u64,
    /// In start order: the next job takes the first.
    waiting: std::collections::VecDeque<ReadyInterpreter>,
    /// Started at the first interpreter (it needs the runtime).
    spawner: Option<Spawner>,
    /// Whether the last start failed (then none is started ahead until a job asks).
    start_failing: bool,
    /// Why no learner's code may run here (a wall cannot be built): every job fails with it.
    refusal: Option<String>,
}

impl PythonRunner {
    pub fn new(
        python: PathBuf,
        containment: Containment,
        alternate: Option<Identity>,
        scratch: PathBuf,
        max_output_bytes: usize,
        refusal: Option<String>,
    ) -> Self {
        PythonRunner {
            python,
            containment,
            scratch,
            max_output_bytes,
            alternate,
            started: 0,
            waiting: std::collections::VecDeque::new(),
            spawner: None,
            start_failing: false,
            refusal,
        }
    }

    /// The pids of the interpreters waiting for jobs (call `settle` first to include those
    /// still being spawned).
    pub fn waiting_pids(&self) -> impl Iterator<Item = u32> + '_ {
        self.waiting.iter().filter_map(|ready| match ready {
            ReadyInterpreter::Started(waiting) => Some(waiting.leader),
            ReadyInterpreter::Starting(_) => None,
        })
    }

    /// Starts interpreters for the next jobs, until `READY_INTERPRETERS` wait, unless
    /// starting fails. The spawns happen on the spawner thread; this returns at once.
    pub fn prepare_next(&mut self) {
        while self.waiting.len() < READY_INTERPRETERS
            && !self.start_failing
            && self.refusal.is_none()
        {
            let starting = self.start_next();
            self.waiting.push_back(starting);
        }
    }

    /// Asks the spawner for the next interpreter.
    fn start_next(&mut self) -> ReadyInterpreter {
        let start = self.next_start();
        if self.spawner.is_none() {
            match Spawner::start() {
                Ok(spawner) => self.spawner = Some(spawner),
                Err(err) => {
                    let (reply, answer) = oneshot::channel();
                    let _ = reply.send(Err(err));
                    return ReadyInterpreter::Starting(answer);
                }
            }
        }
        let spawner = self.spawner.as_ref().expect("started above");
        ReadyInterpreter::Starting(spawner.spawn(start))
    }

    /// Waits until every interpreter being spawned is spawned (so `waiting_pids` knows them
    /// all); one that could not be started is dropped and stops starting ahead.
    pub async fn settle(&mut self) {
        for ready in std::mem::take(&mut self.waiting) {
            match settle(ready).await {
                Ok(waiting) => self
                    .waiting
                    .push_back(ReadyInterpreter::Started(Box::new(waiting))),
                Err(err) => {
                    tracing::warn!("cannot start a Python interpreter ahead of time: {err}");
                    self.start_failing = true;
                }
            }
        }
    }

    /// The next interpreter's start: identities alternate in start order.
    fn next_start(&mut self) -> InterpreterStart {
        let mut containment = self.containment.clone();
        self.started += 1;
        if self.started % 2 == 0 && self.alternate.is_some() {
            containment.identity = self.alternate;
        }
        InterpreterStart {
            python: self.python.clone(),
            containment,
            scratch: self.scratch.clone(),
        }
    }

    /// Runs `code` with `stdin` until it exits or `timeout` passes.
    pub async fn run(&mut self, code: &str, stdin: Option<&str>, timeout: Duration) -> PythonRun {
        if let Some(reason) = &self.refusal {
            return PythonRun {
                exit: PythonExit::SpawnFailed(format!(
                    "this server runs no learner's code until its operator fixes its containment: {reason}"
                )),
                stdout: CapturedOutput::default(),
                stderr: CapturedOutput::default(),
            };
        }
        let ready = match self.waiting.pop_front() {
            Some(ready) => ready,
            None => self.start_next(),
        };
        let waiting = settle(ready).await;
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

/// Spawns an interpreter that waits for its code on fd 3.
fn start_interpreter(start: InterpreterStart) -> Result<WaitingInterpreter, String> {
    let work_dir = child_work_dir(&start.scratch, "python-", start.containment.identity)
        .map_err(|err| format!("cannot create a working directory: {err}"))?;
    let (code_reader, code_writer) =
        cloexec_pipe().map_err(|err| format!("cannot create a pipe: {err}"))?;
    let mut command = interpreter_command(&start, work_dir.path())
        .map_err(|err| format!("cannot prepare the interpreter's containment: {err}"))?;
    pass_fd_as(&mut command, &code_reader, CODE_FD);
    let child = command.spawn().map_err(|err| {
        format!(
            "cannot start the Python interpreter {}: {err}",
            start.python.display()
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

/// The interpreter's command line: `python -I -c BOOTSTRAP`, contained as planned.
fn interpreter_command(
    start: &InterpreterStart,
    work_dir: &std::path::Path,
) -> std::io::Result<tokio::process::Command> {
    let mut command = contained_command(&start.python, work_dir, &start.containment)?;
    command.arg("-I").arg("-c").arg(BOOTSTRAP);
    Ok(command)
}

async fn settle(ready: ReadyInterpreter) -> Result<WaitingInterpreter, String> {
    match ready {
        ReadyInterpreter::Started(waiting) => Ok(*waiting),
        ReadyInterpreter::Starting(spawning) => spawning
            .await
            .unwrap_or_else(|_| Err("the interpreter-spawning thread is gone".into())),
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

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::path::Path;

    use super::*;
    use crate::sandbox::ChildLimits;

    const PLANNED: Identity = Identity {
        uid: 65534,
        gid: 65534,
    };
    const ALTERNATE: Identity = Identity {
        uid: 65533,
        gid: 65534,
    };

    fn containment() -> Containment {
        Containment {
            limits: ChildLimits {
                memory_bytes: 256 << 20,
                cpu_secs: Some(7),
                max_processes: 16,
                file_size_bytes: 1 << 20,
                open_files: 32,
            },
            identity: Some(PLANNED),
            new_network: true,
            namespaces: None,
        }
    }

    fn runner(alternate: Option<Identity>, refusal: Option<String>) -> PythonRunner {
        PythonRunner::new(
            PathBuf::from("/venv/bin/python"),
            containment(),
            alternate,
            PathBuf::from("/scratch"),
            1024,
            refusal,
        )
    }

    #[test]
    fn interpreters_alternate_identities_in_start_order_and_keep_the_planned_limits() {
        let mut runner = runner(Some(ALTERNATE), None);
        let starts: Vec<InterpreterStart> = (0..4).map(|_| runner.next_start()).collect();
        let identities: Vec<_> = starts.iter().map(|s| s.containment.identity).collect();
        assert_eq!(
            identities,
            [
                Some(PLANNED),
                Some(ALTERNATE),
                Some(PLANNED),
                Some(ALTERNATE)
            ]
        );
        for start in &starts {
            let limits = start.containment.limits;
            assert_eq!(limits.memory_bytes, 256 << 20);
            assert_eq!(limits.cpu_secs, Some(7));
            assert_eq!(limits.max_processes, 16);
            assert_eq!(limits.file_size_bytes, 1 << 20);
            assert_eq!(limits.open_files, 32);
            assert!(start.containment.new_network);
            assert_eq!(start.python, Path::new("/venv/bin/python"));
            assert_eq!(start.scratch, Path::new("/scratch"));
        }
    }

    #[test]
    fn without_an_alternate_every_interpreter_keeps_the_planned_identity() {
        let mut runner = runner(None, None);
        for _ in 0..3 {
            assert_eq!(runner.next_start().containment.identity, Some(PLANNED));
        }
    }

    #[test]
    fn the_interpreter_runs_the_bootstrap_isolated_in_its_own_folder_with_a_cleared_environment() {
        let start = runner(None, None).next_start();
        let work_dir = Path::new("/scratch/python-1");
        let command = interpreter_command(&start, work_dir).expect("no namespaces to prepare");
        let command = command.as_std();
        assert_eq!(command.get_program(), OsStr::new("/venv/bin/python"));
        let args: Vec<&OsStr> = command.get_args().collect();
        assert_eq!(
            args,
            [OsStr::new("-I"), OsStr::new("-c"), OsStr::new(BOOTSTRAP)]
        );
        assert_eq!(command.get_current_dir(), Some(work_dir));
        let envs: Vec<(&OsStr, Option<&OsStr>)> = command.get_envs().collect();
        assert!(envs.contains(&(OsStr::new("HOME"), Some(work_dir.as_os_str()))));
        assert!(
            envs.iter()
                .all(|(name, _)| *name != OsStr::new("DATABASE_URL")),
            "only the child's own variables are set: {envs:?}"
        );
    }

    #[test]
    fn the_bootstrap_reads_its_code_from_the_descriptor_the_runner_passes() {
        assert_eq!(CODE_FD, 3);
        assert!(BOOTSTRAP.contains("os.read(3, "));
        assert!(BOOTSTRAP.contains("os.close(3)"));
        assert!(
            BOOTSTRAP.contains(r#"compile(source, "<string>", "exec")"#),
            "tracebacks name <string>, as `python -c` does"
        );
    }

    #[tokio::test]
    async fn a_refused_containment_starts_no_interpreter_and_fails_every_job_with_the_reason() {
        let mut runner = runner(Some(ALTERNATE), Some("CHILD_UID=1 cannot run".into()));
        runner.prepare_next();
        assert!(runner.waiting.is_empty() && runner.spawner.is_none());
        let run = runner.run("print(1)", None, Duration::from_secs(1)).await;
        let PythonExit::SpawnFailed(message) = run.exit else {
            panic!("expected a refusal, got {:?}", run.exit);
        };
        assert!(message.ends_with(": CHILD_UID=1 cannot run"), "{message}");
        assert!(message.starts_with("this server runs no learner's code"));
        assert!(run.stdout.bytes.is_empty() && run.stderr.bytes.is_empty());
        assert_eq!(runner.started, 0);
    }
}
