//! The engine child: `metta-learner-backend engine`. It embeds Python through pyo3, loads
//! `driver.py` (which imports hyperon), then answers JSON requests, one per line read from
//! fd 4, with JSON lines on fd 3 (a batch gets one answer per job, as each finishes). fds 1
//! and 2 stay free for hyperon's and learners' output, which the supervisor captures; fd 0 is
//! each job's own stdin (empty between jobs). It never opens the database and exits at the
//! end of its requests.
//!
//! Both control pipes are moved off 3 and 4 and marked close-on-exec, and no learner's code
//! runs in this process: the driver forks a zygote before the first request, and the zygote a
//! contained process per live session (see `driver.py`), which closes every descriptor but its
//! own pipes and fds 0–2. All forks happen on the engine thread while the main thread only
//! waits for it, so each forked process starts with one thread.

use std::ffi::CString;
use std::fs::File;
use std::io::{BufRead, Write};
use std::os::fd::FromRawFd;
use std::process::ExitCode;

use pyo3::prelude::*;
use pyo3::types::PyList;

use super::protocol::EngineAnswer;

/// The descriptor the supervisor reads responses from.
pub const RESPONSE_FD: i32 = 3;
/// The descriptor the supervisor writes requests to.
pub const REQUEST_FD: i32 = 4;

/// Lowest descriptor the control pipes move to (away from the small numbers code expects).
const CONTROL_FD_FLOOR: i32 = 10;

/// Moves `fd` to a close-on-exec descriptor of at least `CONTROL_FD_FLOOR`, closing `fd`.
fn move_out_of_reach(fd: i32) -> std::io::Result<i32> {
    // SAFETY: fcntl and close on descriptors the supervisor opened for this process.
    unsafe {
        let moved = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, CONTROL_FD_FLOOR);
        if moved < 0 {
            return Err(std::io::Error::last_os_error());
        }
        libc::close(fd);
        Ok(moved)
    }
}

const DRIVER_SOURCE: &str = include_str!("driver.py");

/// Arguments of the `engine` subcommand (set by the supervisor, not by people).
#[derive(Debug, Clone, clap::Args)]
pub struct EngineArgs {
    /// Live sessions kept before the least recently used is evicted.
    #[arg(long, default_value_t = 64)]
    pub max_live_sessions: usize,
    /// Resident memory, in MiB, past which a run is stopped.
    #[arg(long, default_value_t = 4096)]
    pub memory_budget_mb: u64,
    /// `sys.path` of the project's Python environment, as a JSON list of folders.
    #[arg(long, default_value = "[]")]
    pub sys_path: String,
    /// A root server's first uid of the pool its session processes run under (one uid per
    /// live session, the spare and one being ended); -1: every session keeps the engine's.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub session_uid_base: i64,
    /// The gid of the session processes (with `session_uid_base`).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub session_gid: i64,
    /// The open-files limit of each session process (`CHILD_OPEN_FILES`); the engine itself
    /// holds four pipes per live session and may have a higher one. 0: the engine's.
    #[arg(long, default_value_t = 0)]
    pub session_open_files: u64,
}

/// Stack of the thread that runs hyperon. hyperon 0.2.10 frees a long-running evaluation
/// recursively: dropping the state of ~1M steps of `(loop)` overflows the default 8 MiB
/// stack and aborts the process. The stack is reserved, not committed, so its cost is
/// address space (counted against ENGINE_MEMORY_MB), not memory.
const ENGINE_STACK_BYTES: usize = 512 * 1024 * 1024;

/// Runs the engine child until stdin ends, on a thread with a deep stack (see above).
pub fn run_engine(args: EngineArgs) -> ExitCode {
    let engine = std::thread::Builder::new()
        .name("engine".into())
        .stack_size(ENGINE_STACK_BYTES)
        .spawn(move || serve_requests(args));
    match engine.map(|thread| thread.join()) {
        Ok(Ok(code)) => code,
        _ => ExitCode::FAILURE,
    }
}

fn serve_requests(args: EngineArgs) -> ExitCode {
    let (Ok(response_fd), Ok(request_fd)) = (
        move_out_of_reach(RESPONSE_FD),
        move_out_of_reach(REQUEST_FD),
    ) else {
        eprintln!("the engine was started without its control pipes (fds 3 and 4)");
        return ExitCode::FAILURE;
    };
    // SAFETY: both descriptors were just made by `move_out_of_reach`; nothing else owns them.
    let (mut responses, requests) = unsafe {
        (
            File::from_raw_fd(response_fd),
            File::from_raw_fd(request_fd),
        )
    };
    let driver = match load_driver(&args, response_fd) {
        Ok((driver, ready)) => {
            if write_line(&mut responses, &answer_line(&ready)).is_err() {
                return ExitCode::FAILURE;
            }
            driver
        }
        Err(message) => {
            let refusal = EngineAnswer::Unavailable {
                id: None,
                error: message,
            };
            let _ = write_line(&mut responses, &answer_line(&refusal));
            return ExitCode::from(3);
        }
    };
    let _ = responses.flush();

    for line in std::io::BufReader::new(requests).lines() {
        let Ok(line) = line else { break };
        // `None`: the driver wrote the answers itself (a batch answers job by job).
        let response = Python::attach(|py| {
            driver
                .bind(py)
                .call_method1("handle", (line.as_str(),))
                .and_then(|value| value.extract::<Option<String>>())
                .unwrap_or_else(|err| Some(engine_error(&line, &err.to_string())))
        });
        if let Some(response) = response {
            if write_line(&mut responses, &response).is_err() || responses.flush().is_err() {
                break;
            }
        }
    }
    ExitCode::SUCCESS
}

/// Writes `text` and its newline in one `write` (atomic on a pipe up to `PIPE_BUF` bytes), so
/// a child killed mid-answer never leaves the supervisor a fragment such as a lone `{`
/// (`writeln!` of a JSON value issues one write per token).
fn write_line(responses: &mut File, text: &str) -> std::io::Result<()> {
    let mut line = String::with_capacity(text.len() + 1);
    line.push_str(text);
    line.push('\n');
    responses.write_all(line.as_bytes())
}

/// Puts the project environment on `sys.path`, imports the driver (and so hyperon), which
/// starts the zygote and the first session process; returns the driver and the `ready` line
/// (hyperon's version, the walls that session process got and how runs are stepped).
fn load_driver(
    args: &EngineArgs,
    response_fd: i32,
) -> Result<(Py<PyModule>, EngineAnswer), String> {
    let folders: Vec<String> = serde_json::from_str(&args.sys_path)
        .map_err(|err| format!("--sys-path is not a JSON list of folders: {err}"))?;
    Python::attach(|py| {
        let driver = load_engine_driver(py, &folders)
            .map_err(|err| format!("cannot import hyperon in the engine: {err}"))?;
        let cwd = std::env::current_dir()
            .map(|dir| dir.display().to_string())
            .unwrap_or_else(|_| ".".into());
        let configured = driver.call_method1(
            "configure",
            (
                args.max_live_sessions,
                cwd,
                args.memory_budget_mb,
                response_fd,
                args.session_uid_base,
                args.session_gid,
                args.session_open_files,
            ),
        );
        let version: String = configured
            .and_then(|version| version.extract())
            .map_err(|err| format!("cannot configure the engine's driver: {err}"))?;
        // A failure here is the first session process's (a wall the host refuses, or the
        // process killed before it was ready), not hyperon's.
        let walls: Vec<String> = driver
            .call_method0("start_session_processes")
            .and_then(|walls| walls.extract())
            .map_err(|err| format!("the engine's first session process did not start: {err}"))?;
        let steps: String = driver
            .call_method0("step_loop")
            .and_then(|steps| steps.extract())
            .map_err(|err| format!("cannot ask the engine's driver how it steps: {err}"))?;
        let ready = EngineAnswer::Ready {
            hyperon: Some(version),
            walls,
            steps: Some(steps),
        };
        Ok((driver.unbind(), ready))
    })
}

/// Loads `driver.py` (which imports hyperon) with `folders` (the project environment's
/// `sys.path`, as the server's probe of `PYTHON` reports it) as the interpreter's `sys.path`.
/// Also used by the benchmark, to time hyperon and the driver in its own process.
pub fn load_engine_driver<'py>(
    py: Python<'py>,
    folders: &[String],
) -> PyResult<Bound<'py, PyModule>> {
    use_sys_path(py, folders)?;
    super::native_steps::register(py)?;
    let source = CString::new(DRIVER_SOURCE)?;
    PyModule::from_code(py, source.as_c_str(), c"driver.py", c"mlb_driver")
}

/// Makes `folders` the embedded interpreter's `sys.path`, so `import hyperon` finds `.venv`'s
/// packages; an empty list keeps the embedded default.
fn use_sys_path(py: Python<'_>, folders: &[String]) -> PyResult<()> {
    if !folders.is_empty() {
        py.import("sys")?
            .setattr("path", PyList::new(py, folders)?)?;
    }
    Ok(())
}

fn engine_error(request_line: &str, message: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Identified {
        id: Option<String>,
    }
    let id = serde_json::from_str::<Identified>(request_line)
        .ok()
        .and_then(|request| request.id);
    answer_line(&EngineAnswer::engine_error(id, message))
}

/// One answer as its JSON line (without the newline).
fn answer_line(answer: &EngineAnswer) -> String {
    serde_json::to_string(answer).unwrap_or_else(|_| {
        r#"{"outcome": "unavailable", "error": "the engine cannot encode its answer"}"#.into()
    })
}
