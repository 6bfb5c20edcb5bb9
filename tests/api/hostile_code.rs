//! Hostile learner code, as Python jobs and as MeTTa through `py-atom`: fork bombs, memory
//! bombs, endless output, huge files, background processes and daemons, reading the server's
//! secrets and database, opening connections, sleeping past the deadline, killing the engine,
//! deep recursion. Each job must end with a clear status and message, the next jobs must run
//! normally, and nothing may be left behind: no process of the job (found by its children's
//! uid, which each test chooses apart, and by unique markers in command lines) and no working
//! directory in the scratch folder (SCRATCH_DIR, chosen by each test) but those of the live
//! engine and of the interpreter the server starts ahead of the next Python job.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use metta_learner_backend::learner_messages::{ENGINE_DIED, TIME_LIMIT};
use serde_json::{json, Value};

use crate::support::{wait_until_running, TestServer};

/// The deadline of every job in these tests, in seconds.
const RUN_TIMEOUT_SECS: u64 = 2;

/// How long to wait for the service to end what a job left behind.
const CLEANUP_LIMIT: Duration = Duration::from_secs(10);

// ----- local helpers ------------------------------------------------------------------------

static NEXT_UID: AtomicU32 = AtomicU32::new(0);

/// The file by which the server marks its scratch folder as its own.
const SCRATCH_MARKER: &str = ".metta-learner-scratch";

/// A pair of uids no other test (of this run or of a concurrent one) uses, so a test can find
/// its children by uid and a fork bomb's RLIMIT_NPROC counts only its own processes.
pub(crate) fn fresh_uids() -> ([u32; 2], u32) {
    let slot = NEXT_UID.fetch_add(3, Ordering::SeqCst) % 99;
    let base = 40_000 + (std::process::id() % 250) * 100 + slot;
    ([base, base + 1], base + 2)
}

/// A number no other process on this machine has in its command line.
fn unique_number() -> u64 {
    800_000_000 + (uuid::Uuid::new_v4().as_u128() % 100_000_000) as u64
}

/// A MeTTa program that runs `python` with `exec` inside the engine.
pub(crate) fn metta_exec(python: &str) -> String {
    assert!(
        !python.contains('\\'),
        "keep backslashes out of Python run through MeTTa strings"
    );
    let escaped = python.replace('"', "\\\"").replace('\n', "\\n");
    format!("!((py-atom exec) \"{escaped}\")")
}

/// A Python string literal (a JSON string is one, for the plain paths and words used here).
pub(crate) fn py_str(text: &str) -> String {
    serde_json::to_string(text).expect("string literal")
}

#[derive(Debug)]
struct ProcessInfo {
    pid: u32,
    uid: u32,
    ppid: u32,
    state: String,
    cmdline: String,
    /// Its working directory (`… (deleted)` once removed).
    cwd: PathBuf,
}

impl ProcessInfo {
    fn is_running(&self) -> bool {
        !(self.state.starts_with('Z') || self.state.starts_with('X'))
    }
}

/// Every process on the machine, from /proc.
fn processes() -> Vec<ProcessInfo> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|line| line.strip_prefix(name))
                    .map(|value| value.trim().to_string())
            };
            let uid = field("Uid:")?.split_whitespace().next()?.parse().ok()?;
            let ppid = field("PPid:")?.parse().ok()?;
            let state = field("State:")?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|bytes| String::from_utf8_lossy(&bytes).replace('\0', " "))
                .unwrap_or_default();
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
            Some(ProcessInfo {
                pid,
                uid,
                ppid,
                state,
                cmdline,
                cwd,
            })
        })
        .collect()
}

/// Kills processes a test caused and found left over (so a failing test does not leave them
/// running for the next ones), by pid.
fn kill_all(leftovers: &[ProcessInfo]) {
    for process in leftovers {
        // SAFETY: signalling a process; no memory effects.
        unsafe {
            libc::kill(process.pid as i32, libc::SIGKILL);
        }
    }
}

fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .expect("VmRSS")
}

/// A server whose children run under uids of their own and whose scratch folder the test
/// chose, so it can tell what a job left behind.
struct Sandbox {
    // Declared first: dropped (killed) before its scratch folder is removed.
    server: TestServer,
    scratch: PathBuf,
    /// Python jobs alternate between CHILD_UID and CHILD_ALT_UID.
    python_uids: [u32; 2],
    engine_uid: u32,
    _scratch_parent: tempfile::TempDir,
}

impl Sandbox {
    async fn start(extra: &[(&str, &str)]) -> Sandbox {
        use std::os::unix::fs::PermissionsExt;
        let parent = tempfile::Builder::new()
            .prefix("mlb-hostile-")
            .tempdir()
            .expect("scratch parent");
        // Children must be able to pass through to their own folder in the scratch folder.
        std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o711))
            .expect("chmod scratch parent");
        let scratch = parent.path().join("scratch");
        let (python_uids, engine_uid) = fresh_uids();
        let scratch_text = scratch.display().to_string();
        let python_uid_text = python_uids[0].to_string();
        let python_alt_uid_text = python_uids[1].to_string();
        let engine_uid_text = engine_uid.to_string();
        let timeout_text = RUN_TIMEOUT_SECS.to_string();
        let mut env: Vec<(&str, &str)> = vec![
            ("RUN_TIMEOUT_SECS", &timeout_text),
            ("SCRATCH_DIR", &scratch_text),
            ("CHILD_UID", &python_uid_text),
            ("CHILD_ALT_UID", &python_alt_uid_text),
            ("ENGINE_UID", &engine_uid_text),
            ("ENGINE_KILL_GRACE_MS", "500"),
        ];
        env.extend_from_slice(extra);
        let server = TestServer::start_with(&env).await;
        let logs = server.logs();
        let containment_warnings: Vec<&str> = logs
            .lines()
            .filter(|line| line.contains("containment:"))
            .collect();
        assert!(
            containment_warnings.is_empty(),
            "these tests run as root, where every measure applies; the server warned:\n{}",
            containment_warnings.join("\n")
        );
        let sandbox = Sandbox {
            server,
            scratch,
            python_uids,
            engine_uid,
            _scratch_parent: parent,
        };
        sandbox.wait_for_engine().await;
        sandbox
    }

    /// Waits until the engine runs in its folder in the scratch folder (which proves the
    /// server uses SCRATCH_DIR, so the scratch checks are not vacuous); returns its pid.
    async fn wait_for_engine(&self) -> u32 {
        let started = Instant::now();
        loop {
            if let Some(pid) = self.server.engine_pid() {
                let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
                if cwd.parent() == Some(self.scratch.as_path()) {
                    return pid;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no engine runs in a folder of SCRATCH_DIR={}; server log:\n{}",
                self.scratch.display(),
                self.server.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn python(&self, code: &str) -> Value {
        self.server
            .run(json!({"language": "python", "code": code}))
            .await
    }

    async fn metta(&self, code: &str) -> Value {
        self.server.metta("hostile", code).await
    }

    /// Runs a job and says how long the client waited for its final state.
    async fn timed(&self, body: Value) -> (Value, Duration) {
        let started = Instant::now();
        let job = self.server.run(body).await;
        (job, started.elapsed())
    }

    /// The next jobs of both languages run normally.
    async fn assert_next_jobs_run(&self) {
        let job = self.python("print(6 * 7)").await;
        assert_eq!(
            job["status"], "succeeded",
            "the next Python job must run normally: {job}"
        );
        assert_eq!(job["result"], "42\n", "the next Python job's output: {job}");
        let job = self.metta("!(+ 40 2)").await;
        assert_eq!(
            job["status"], "succeeded",
            "the next MeTTa job must run normally: {job}"
        );
        assert_eq!(
            job["result"], "[42]\n",
            "the next MeTTa job's result: {job}"
        );
    }

    /// Whether `process` looks like the interpreter the server starts ahead of the next
    /// Python job: a child of the server, of the Python uid, working in a live folder of the
    /// scratch folder, with no marker of a test's job in its command line.
    fn is_waiting_interpreter(&self, process: &ProcessInfo, markers: &[&str]) -> bool {
        self.python_uids.contains(&process.uid)
            && process.ppid == self.server.pid()
            && process.cwd.parent() == Some(self.scratch.as_path())
            && process.cwd.is_dir()
            && !markers
                .iter()
                .any(|marker| process.cmdline.contains(marker))
    }

    /// What this server's children left: running processes of the Python uids (but the
    /// interpreters waiting for the next jobs: at most two, under different uids), of the
    /// engine uid (but the live engine), or with one of `markers` in their command line; and
    /// entries of the scratch folder other than the working directories of the live engine
    /// and of the waiting interpreters.
    fn leftovers(&self, markers: &[&str]) -> (Vec<ProcessInfo>, Vec<String>) {
        let engine = self.server.engine_pid();
        let running: Vec<ProcessInfo> = processes()
            .into_iter()
            .filter(ProcessInfo::is_running)
            .collect();
        let waiting: Vec<&ProcessInfo> = running
            .iter()
            .filter(|process| self.is_waiting_interpreter(process, markers))
            .collect();
        // The server keeps two interpreters started ahead, and they alternate uids: two
        // waiting under one uid would let a job reach the next learner's interpreter.
        let waiting: Vec<(u32, std::path::PathBuf)> = match waiting.as_slice() {
            [one] => vec![(one.pid, one.cwd.clone())],
            [one, two] if one.uid != two.uid => {
                vec![(one.pid, one.cwd.clone()), (two.pid, two.cwd.clone())]
            }
            _ => Vec::new(),
        };
        let waiting_pids: Vec<u32> = waiting.iter().map(|(pid, _)| *pid).collect();
        let stray: Vec<ProcessInfo> = running
            .into_iter()
            .filter(|process| {
                (self.python_uids.contains(&process.uid) && !waiting_pids.contains(&process.pid))
                    || (process.uid == self.engine_uid && Some(process.pid) != engine)
                    || markers
                        .iter()
                        .any(|marker| process.cmdline.contains(marker))
            })
            .collect();
        let engine_dir = engine.and_then(|pid| std::fs::read_link(format!("/proc/{pid}/cwd")).ok());
        let kept: Vec<String> = engine_dir
            .into_iter()
            .chain(waiting.into_iter().map(|(_, cwd)| cwd))
            .filter_map(|dir| {
                dir.file_name()
                    .map(|name| name.to_string_lossy().into_owned())
            })
            .collect();
        let entries: Vec<String> = std::fs::read_dir(&self.scratch)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        // The marker that says the folder is the server's own stays for the server's life.
        let extra_entries = entries
            .into_iter()
            .filter(|name| !kept.contains(name) && name != SCRATCH_MARKER)
            .collect();
        (stray, extra_entries)
    }

    /// Waits (a bounded while: the worker ends leftovers just after the job's result is
    /// stored) until the job left nothing behind; kills what is still there and fails if not.
    async fn assert_nothing_left(&self, markers: &[&str], job: &Value) {
        let started = Instant::now();
        loop {
            let (stray, entries) = self.leftovers(markers);
            if stray.is_empty() && entries.is_empty() {
                return;
            }
            if started.elapsed() > CLEANUP_LIMIT {
                kill_all(&stray);
                panic!(
                    "{CLEANUP_LIMIT:?} after the job, it left processes {stray:#?} and scratch entries {entries:?} in {} (only the folders of the live engine and of the two interpreters waiting for the next jobs, under different uids, may remain); the job: {job}",
                    self.scratch.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn server_port(&self) -> u16 {
        self.server
            .base
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .expect("port in base")
    }
}

pub(crate) fn text(job: &Value, field: &str) -> String {
    job[field].as_str().unwrap_or_default().to_string()
}

pub(crate) fn assert_status(job: &Value, status: &str, what: &str) {
    assert_eq!(job["status"], status, "{what}: {job}");
    if status != "succeeded" {
        assert!(
            !text(job, "error").trim().is_empty(),
            "{what}: a {status} job must say why: {job}"
        );
        assert_eq!(
            job["errorKind"], "code",
            "{what}: the learner's code is at fault: {job}"
        );
    }
}

// ----- fork bombs ---------------------------------------------------------------------------

#[tokio::test]
async fn python_fork_bomb_times_out_and_leaves_no_process() {
    // Arrange
    let sandbox = Sandbox::start(&[("CHILD_MAX_PROCESSES", "40")]).await;
    let marker = format!("fork-bomb-{}", unique_number());
    let code = format!(
        "import os  # {marker}\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    );

    // Act
    let (job, waited) = sandbox
        .timed(json!({"language": "python", "code": code}))
        .await;

    // Assert
    assert_status(&job, "timed_out", "a Python fork bomb");
    assert!(
        text(&job, "error").contains(TIME_LIMIT),
        "the error names the time limit: {job}"
    );
    assert!(
        waited < Duration::from_secs(RUN_TIMEOUT_SECS + 8),
        "the fork bomb took {waited:?} to end: {job}"
    );
    sandbox.assert_nothing_left(&[&marker], &job).await;
    sandbox.assert_next_jobs_run().await;
}

#[tokio::test]
async fn metta_fork_bomb_times_out_and_leaves_no_process() {
    // Arrange
    let sandbox = Sandbox::start(&[("CHILD_MAX_PROCESSES", "40")]).await;
    let code = metta_exec(
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
    );

    // Act
    let (job, waited) = sandbox
        .timed(json!({"language": "metta", "code": code, "sessionId": "hostile"}))
        .await;

    // Assert
    assert_status(&job, "timed_out", "a fork bomb in the engine");
    assert!(
        waited < Duration::from_secs(RUN_TIMEOUT_SECS + 10),
        "the fork bomb took {waited:?} to end: {job}"
    );
    sandbox.assert_nothing_left(&[], &job).await;
    sandbox.assert_next_jobs_run().await;
}

#[tokio::test]
async fn metta_forking_the_engine_once_leaves_one_engine() {
    // Arrange
    let sandbox = Sandbox::start(&[]).await;

    // Act
    let job = sandbox.metta("!((py-atom os.fork))").await;

    // Assert
    assert!(
        matches!(job["status"].as_str(), Some("succeeded" | "failed")),
        "forking the engine ends the job at once: {job}"
    );
    if job["status"] == "failed" {
        assert!(
            !text(&job, "error").trim().is_empty(),
            "a failed job says why: {job}"
        );
    }
    sandbox.assert_nothing_left(&[], &job).await;
    sandbox.assert_next_jobs_run().await;
}

// ----- memory bombs -------------------------------------------------------------------------

#[tokio::test]
async fn python_memory_bomb_fails_with_memory_error() {
    // Arrange
    let sandbox = Sandbox::start(&[]).await;

    // Act
    let job = sandbox
        .python("x = bytearray(10**10)\nprint('allocated')")
        .await;

    // Assert
    assert_status(&job, "failed", "a 10 GB allocation");
    assert!(
        text(&job, "error").contains("MemoryError"),
        "the error is Python's MemoryError: {job}"
    );
    assert!(
        !text(&job, "output").contains("allocated"),
        "the allocation must not succeed: {job}"
    );
    sandbox.assert_nothing_left(&[], &job).await;
    sandbox.assert_next_jobs_run().await;
}

#[tokio::test]
async fn metta_memory_bomb_is_refused_and_the_engine_goes_on() {
    // Arrange
    let sandbox = Sandbox::start(&[]).await;
    let code = metta_exec("x = bytearray(10**10)\nprint('allocated')");

    // Act
    let job = sandbox.metta(&code).await;

    // Assert: either the engine reports Python's MemoryError as an error atom, or the job
    // fails with a message; never does the allocation succeed.
    let everything = format!("{} {}", text(&job, "result"), text(&job, "error"));
    assert!(
        is_final_status(&job),
        "a memory bomb in the engine ends: {job}"
    );
    assert!(
        !text(&job, "output").contains("allocated"),
        "10 GB must not be allocated: {job}"
    );
    assert!(
        everything.contains("MemoryError") || everything.to_lowercase().contains("memory"),
        "the job says it ran out of memory: {job}"
    );
    sandbox.assert_nothing_left(&[], &job).await;
    sandbox.assert_next_jobs_run().await;
}

fn is_final_status(job: &Value) -> bool {
    matches!(
        job["status"].as_str(),
        Some("succeeded" | "failed" | "timed_out")
    )
}

// ----- endless output -----------------------------------------------------------------------

const OUTPUT_CAP: usize = 10_000;

#[tokio::test]
async fn python_endless_output_is_capped_and_times_out() {
    // Arrange
    let cap = OUTPUT_CAP.to_string();
    let sandbox = Sandbox::start(&[("MAX_OUTPUT_BYTES", &cap)]).await;
    let before = resident_kib(sandbox.server.pid());

    // Act
    let job = sandbox
        .python(
            "import sys\nwhile True:\n    print('x' * 1000)\n    print('e' * 1000, file=sys.stderr)",
        )
        .await;

    // Assert
    assert_status(&job, "timed_out", "endless output");
    assert_eq!(
        job["outputTruncated"], true,
        "the job says its output was cut: {job}"
    );
    let output = text(&job, "output");
    let stderr = text(&job, "stderr");
    assert!(
        output.len() <= OUTPUT_CAP && stderr.len() <= OUTPUT_CAP,
        "stdout ({}) and stderr ({}) are capped at MAX_OUTPUT_BYTES={OUTPUT_CAP}",
        output.len(),
        stderr.len()
    );
    assert!(
        output.starts_with("xxxx") && output.len() >= OUTPUT_CAP / 2,
        "the first part of the output is kept: {job}"
    );
    let after = resident_kib(sandbox.server.pid());
    assert!(
        after < before + 64 * 1024,
        "the server's memory grew from {before} KiB to {after} KiB while the job printed without end"
    );
    sandbox.assert_nothing_left(&[], &job).await;
    sandbox.assert_next_jobs_run().await;
}

#[tokio::test]
async fn metta_endless_python_output_is_capped_and_times_out() {
    // Arrange
    let cap = OUTPUT_CAP.to_string();
    let sandbox = Sandbox::start(&[("MAX_OUTPUT_BYTES", &cap)]).await;
    let before = resident_kib(sandbox.server.pid());

    // Act
    let job = sandbox
        .metta(&metta_exec("while True:\n    print('y' * 1000)"))
        .await;

    // Assert
    assert_status(&job, "timed_out", "endless output in the engine");
    assert_eq!(
        job["outputTruncated"], true,
        "the job says its output was cut: {job}"
    );
    let output = text(&job, "output");
    assert!(
        output.len() <= OUTPUT_CAP,
        "output ({} bytes) is capped at MAX_OUTPUT_BYTES={OUTPUT_CAP}: {}",
        output.len(),
        &output[..output.len().min(200)]
    );
    assert!(
        output.starts_with("yyyy"),
        "the first part of the output is kept: {job}"
    );
    assert!(
        text(&job, "result").len() <= OUTPUT_CAP + 1000,
        "the result is capped too: {job}"
    );
    let after = resident_kib(sandbox.server.pid());
    assert!(
        after < before + 64 * 1024,
        "the server's memory grew from {before} KiB to {after} KiB while the engine printed without end"
    );
    sandbox.assert_nothing_left(&[], &job).await;
    sandbox.assert_next_jobs_run().await;
}

#[tokio::test]
async fn metta_endless_println_is_capped_and_times_out() {
    // Arrange
    let cap = OUTPUT_CAP.to_string();
    let sandbox = Sandbox::start(&[("MAX_OUTPUT_BYTES", &cap)]).await;
    let code = "(= (spam $n) (let $x (println! (spam-line $n)) (spam (+ $n 1))))\n!(spam 0)";

    // Act
    let job = sandbox.metta(code).await;

    // Assert
    assert_status(&job, "timed_out", "endless println! in MeTTa");
    let output = text(&job, "output");
    assert!(
        output.len() <= OUTPUT_CAP,
        "output ({} bytes) is capped at MAX_OUTPUT_BYTES={OUTPUT_CAP}",
        output.len()
    );
    assert!(
        output.starts_with("(spam-line 0)"),
        "the first lines are kept: {job}"
    );
    if output.len() >= OUTPUT_CAP - 100 {
        assert_eq!(
            job["outputTruncated"], true,
            "output at the cap says it was cut: {job}"
        );
    }
    sandbox.assert_nothing_left(&[], &job).await;
    sandbox.assert_next_jobs_run().await;
}

// ----- huge files ---------------------------------------------------------------------------

const WRITE_100_MB: &str = "f = open('big.bin', 'wb')\nfor i in range(100):\n    f.write(b'x' * 1048576)\n    f.flush()\nprint('wrote 100 MB')";

#[tokio::test]
async fn python_huge_file_fails_with_file_too_large() {
    // Arrange
    let sandbox = Sandbox::start(&[("CHILD_FILE_SIZE_MB", "1")]).await;

    // Act
    let job = sandbox.python(WRITE_100_MB).await;

    // Assert
    assert_status(&job, "failed", "writing a 100 MB file with a 1 MB limit");
    let error = text(&job, "error");
    assert!(
        error.contains("File too large") || error.contains("SIGXFSZ"),
        "the error names the file size limit: {job}"
    );
    assert!(
        !text(&job, "output").contains("wrote 100 MB"),
        "the file must not be written whole: {job}"
    );
    sandbox.assert_nothing_left(&[], &job).await;
    sandbox.assert_next_jobs_run().await;
}

#[tokio::test]
async fn metta_huge_file_is_stopped() {
    // Arrange
    let sandbox = Sandbox::start(&[("CHILD_FILE_SIZE_MB", "1")]).await;

    // Act
    let job = sandbox.metta(&metta_exec(WRITE_100_MB)).await;

    // Assert: the engine reports the OSError as an error atom, or dies of SIGXFSZ and the job
    // fails saying so; never is the file written whole.
    assert!(is_final_status(&job), "the job ends: {job}");
    assert!(
        !text(&job, "output").contains("wrote 100 MB"),
        "the file must not be written whole: {job}"
    );
    let everything = format!("{} {}", text(&job, "result"), text(&job, "error"));
    assert!(
        job["status"] == "failed" || everything.contains("File too large"),
        "the job fails or reports the file size error: {job}"
    );
    if job["status"] == "failed" {
        assert!(
            !text(&job, "error").trim().is_empty(),
            "a failed job says why: {job}"
        );
    }
    let big_files: Vec<PathBuf> = walk(&sandbox.scratch)
        .into_iter()
        .filter(|path| path.metadata().map(|m| m.len() > 1 << 20).unwrap_or(false))
        .collect();
    assert!(
        big_files.is_empty(),
        "files over the 1 MB limit were written: {big_files:?}"
    );
    sandbox.assert_nothing_left(&[], &job).await;
    sandbox.assert_next_jobs_run().await;
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                found.extend(walk(&path));
            } else {
                found.push(path);
            }
        }
    }
    found
}

// ----- background processes -----------------------------------------------------------------

#[tokio::test]
async fn python_background_processes_do_not_survive_the_job() {
    // Arrange
    let sandbox = Sandbox::start(&[]).await;
    let (daemon, nohup, session) = (unique_number(), unique_number(), unique_number());
    let code = format!(
        "import os, subprocess, time
devnull = os.open(os.devnull, os.O_RDWR)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.execvp('sleep', ['sleep', '{daemon}'])
    os._exit(0)
os.wait()
os.system('nohup sleep {nohup} >/dev/null 2>&1 &')
subprocess.Popen(['sleep', '{session}'], start_new_session=True,
                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(0.3)
print('spawned')
"
    );
    let markers = [
        format!("sleep {daemon}"),
        format!("sleep {nohup}"),
        format!("sleep {session}"),
    ];
    let markers: Vec<&str> = markers.iter().map(String::as_str).collect();

    // Act
    let job = sandbox.python(&code).await;

    // Assert
    assert_status(&job, "succeeded", "starting background processes");
    assert_eq!(job["output"], "spawned\n", "the job's own output: {job}");
    sandbox.assert_nothing_left(&markers, &job).await;
    sandbox.assert_next_jobs_run().await;
}

#[tokio::test]
async fn python_output_is_kept_when_a_background_process_holds_the_pipe() {
    // Arrange: the background process inherits stdout and keeps it open after the job ends.
    let sandbox = Sandbox::start(&[]).await;
    let marker = unique_number();
    let code = format!(
        "import subprocess
print('before the daemon', flush=True)
subprocess.Popen(['sleep', '{marker}'], start_new_session=True)
"
    );

    // Act
    let job = sandbox.python(&code).await;

    // Assert
    assert_status(
        &job,
        "succeeded",
        "a job that leaves a process holding its stdout",
    );
    assert!(
        text(&job, "output").contains("before the daemon"),
        "what the job printed before it exited must be kept, even though a background process kept the pipe open: {job}"
    );
    sandbox
        .assert_nothing_left(&[&format!("sleep {marker}")], &job)
        .await;
    sandbox.assert_next_jobs_run().await;
}

#[tokio::test]
async fn metta_background_processes_do_not_survive_the_job() {
    // Arrange
    let sandbox = Sandbox::start(&[]).await;
    let (shell, popen, daemon) = (unique_number(), unique_number(), unique_number());
    let daemon_code = metta_exec(&format!(
        "import os
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execvp('sleep', ['sleep', '{daemon}'])
    os._exit(0)
os.wait()"
    ));
    let code = format!(
        "!((py-atom os.system) \"sleep {shell} &\")\n!((py-atom subprocess.Popen) (py-list (\"sleep\" \"{popen}\")))\n{daemon_code}"
    );
    let markers = [
        format!("sleep {shell}"),
        format!("sleep {popen}"),
        format!("sleep {daemon}"),
    ];
    let markers: Vec<&str> = markers.iter().map(String::as_str).collect();

    // Act
    let job = sandbox.metta(&code).await;

    // Assert
    assert_status(
        &job,
        "succeeded",
        "starting background processes from MeTTa",
    );
    sandbox.assert_nothing_left(&markers, &job).await;
    sandbox.assert_next_jobs_run().await;
}

/// Hostile jobs each killer-daemon test runs (the harm it looks for is a race, hit in about
/// half of the rounds).
const ROUNDS: u32 = 10;

/// Python that leaves a daemon behind which kills every process it may signal (all of its
/// uid's), over and over, until the service ends it.
const KILLER_DAEMON: &str = "import os, signal, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        for fd in (0, 1, 2):
            os.close(fd)
        while True:
            try:
                os.kill(-1, signal.SIGKILL)
            except OSError:
                pass
    os._exit(0)
os.wait()
time.sleep(0.5)";

#[tokio::test]
async fn python_daemon_killing_every_process_it_can_does_not_break_the_next_job() {
    // Arrange
    let sandbox = Sandbox::start(&[]).await;

    for round in 1..=ROUNDS {
        // Act: the hostile job (its own interpreter dies by its daemon), then an innocent one.
        let hostile = sandbox.python(KILLER_DAEMON).await;
        assert!(
            is_final_status(&hostile),
            "round {round}: the hostile job ends: {hostile}"
        );
        let next = sandbox.python("print('innocent')").await;

        // Assert: the next learner's job is not hurt by what the last one left behind.
        assert_eq!(
            next["status"], "succeeded",
            "round {round}: a job after one whose daemon kills every process of CHILD_UID must run normally (the hostile job: {hostile}): {next}"
        );
        assert_eq!(next["output"], "innocent\n", "round {round}: {next}");
    }
    let last = json!({"after": "every round"});
    sandbox.assert_nothing_left(&[], &last).await;
    sandbox.assert_next_jobs_run().await;
}

#[tokio::test]
async fn metta_daemon_killing_every_process_it_can_does_not_break_the_next_job() {
    // Arrange
    let sandbox = Sandbox::start(&[]).await;
    let code = metta_exec(KILLER_DAEMON);

    for round in 1..=ROUNDS {
        // Act: the hostile job (the engine dies by its daemon), then an innocent one.
        let hostile = sandbox.metta(&code).await;
        assert!(
            is_final_status(&hostile),
            "round {round}: the hostile job ends: {hostile}"
        );
        if hostile["status"] != "succeeded" {
            assert!(
                !text(&hostile, "error").trim().is_empty(),
                "round {round}: the hostile job says why it ended: {hostile}"
            );
        }
        let next = sandbox.metta("!(+ 20 22)").await;

        // Assert
        assert_eq!(
            next["status"], "succeeded",
            "round {round}: a MeTTa job after one whose daemon kills every process of ENGINE_UID must run normally (the hostile job: {hostile}): {next}"
        );
        assert_eq!(next["result"], "[42]\n", "round {round}: {next}");
    }
    let last = json!({"after": "every round"});
    sandbox.assert_nothing_left(&[], &last).await;
    sandbox.assert_next_jobs_run().await;
}

// ----- the server's secrets -----------------------------------------------------------------

/// Python that prints what a child can learn of the server's environment.
pub(crate) fn environment_probe(server_pid: u32) -> String {
    format!(
        "import json, os
print('KEYS', json.dumps(sorted(os.environ)))
print('VALUES', json.dumps(dict(os.environ)))
for name, pid in (('parent', os.getppid()), ('init', 1), ('server', {server_pid})):
    path = '/proc/%d/environ' % pid
    try:
        with open(path, 'rb') as f:
            print('READ', name, path, f.read())
    except OSError as e:
        print('DENIED', name, path, type(e).__name__)
me = os.getpid()
for entry in os.listdir('/proc'):
    if entry.isdigit() and int(entry) != me:
        try:
            with open('/proc/%s/environ' % entry, 'rb') as f:
                print('READABLE', entry, f.read())
        except OSError:
            pass
print('probe done')"
    )
}

const ALLOWED_ENV: [&str; 6] = [
    "HOME",
    "LANG",
    "PATH",
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONIOENCODING",
    "TMPDIR",
];

pub(crate) fn assert_secret_unseen(job: &Value, secret: &str, what: &str) {
    let output = text(job, "output");
    assert!(
        output.contains("probe done"),
        "{what}: the probe ran to its end: {job}"
    );
    let everything = job.to_string();
    assert!(
        !everything.contains(secret),
        "{what}: the job saw the server's INSTRUCTOR_TOKEN: {job}"
    );
    for name in ["INSTRUCTOR_TOKEN", "DATABASE_URL", "sqlite://"] {
        assert!(
            !everything.contains(name),
            "{what}: the job saw {name} of the server's environment: {job}"
        );
    }
    let keys_line = output
        .lines()
        .find_map(|line| line.strip_prefix("KEYS "))
        .unwrap_or_else(|| panic!("{what}: no KEYS line: {job}"));
    let keys: Vec<String> = serde_json::from_str(keys_line).expect("keys JSON");
    for key in &keys {
        assert!(
            ALLOWED_ENV.contains(&key.as_str()),
            "{what}: the child's environment has {key}, beyond {ALLOWED_ENV:?}: {job}"
        );
    }
    for name in ["parent", "server"] {
        assert!(
            output
                .lines()
                .any(|line| line.starts_with(&format!("DENIED {name} "))),
            "{what}: reading the {name}'s /proc/PID/environ must be refused: {job}"
        );
    }
}

#[tokio::test]
async fn python_cannot_read_the_server_environment() {
    // Arrange
    let secret = format!("some-secret-value-{}", uuid::Uuid::new_v4().simple());
    let sandbox = Sandbox::start(&[("INSTRUCTOR_TOKEN", &secret)]).await;
    let code = environment_probe(sandbox.server.pid());

    // Act
    let job = sandbox.python(&code).await;

    // Assert
    assert_status(&job, "succeeded", "the environment probe");
    assert_secret_unseen(&job, &secret, "a Python job");
    sandbox.assert_nothing_left(&[], &job).await;
    sandbox.assert_next_jobs_run().await;
}

#[tokio::test]
async fn metta_cannot_read_the_server_environment() {
    // Arrange
    let secret = format!("some-secret-value-{}", uuid::Uuid::new_v4().simple());
    let sandbox = Sandbox::start(&[("INSTRUCTOR_TOKEN", &secret)]).await;
    let code = metta_exec(&environment_probe(sandbox.server.pid()));

    // Act
    let job = sandbox.metta(&code).await;

    // Assert
    assert_status(&job, "succeeded", "the environment probe in the engine");
    assert_secret_unseen(&job, &secret, "MeTTa code");
    sandbox.assert_nothing_left(&[], &job).await;
    sandbox.assert_next_jobs_run().await;
}

/// Python that tries to read the database file, its journal files and its folder.
pub(crate) fn database_probe(database: &Path) -> String {
    let file = database.display().to_string();
    let folder = database.parent().expect("folder").display().to_string();
    format!(
        "import os
for path in ({file}, {file} + '-wal', {file} + '-shm'):
    try:
        with open(path, 'rb') as f:
            print('READ', path, f.read(16))
    except OSError as e:
        print('DENIED', path, type(e).__name__)
try:
    print('READ', {folder}, os.listdir({folder}))
except OSError as e:
    print('DENIED', {folder}, type(e).__name__)
print('probe done')",
        file = py_str(&file),
        folder = py_str(&folder),
    )
}

pub(crate) fn assert_database_unread(job: &Value, database: &Path, what: &str) {
    let output = text(job, "output");
    assert!(
        output.contains("probe done"),
        "{what}: the probe ran to its end: {job}"
    );
    assert!(
        !output.lines().any(|line| line.starts_with("READ")),
        "{what}: the job read the database or its folder: {job}"
    );
    // A MeTTa session's process has a private /tmp, so a database under /tmp (the tests')
    // is not even there for it.
    let errors: &[&str] = if what.starts_with("MeTTa") {
        &["PermissionError", "FileNotFoundError"]
    } else {
        &["PermissionError"]
    };
    let denied = errors
        .iter()
        .any(|error| output.contains(&format!("DENIED {} {error}", database.display())));
    assert!(
        denied,
        "{what}: opening the database file must raise PermissionError (or, from a private /tmp, FileNotFoundError): {job}"
    );
}

#[tokio::test]
async fn python_cannot_read_the_database() {
    // Arrange
    let sandbox = Sandbox::start(&[]).await;
    let database = sandbox.server.database_path();
    assert!(database.exists(), "the database exists");

    // Act
    let job = sandbox.python(&database_probe(&database)).await;

    // Assert
    assert_status(&job, "succeeded", "the database probe");
    assert_database_unread(&job, &database, "a Python job");
    sandbox.assert_nothing_left(&[], &job).await;
    sandbox.assert_next_jobs_run().await;
}

#[tokio::test]
async fn metta_cannot_read_the_database() {
    // Arrange
    let sandbox = Sandbox::start(&[]).await;
    let database = sandbox.server.database_path();

    // Act
    let job = sandbox.metta(&metta_exec(&database_probe(&database))).await;

    // Assert
    assert_status(&job, "succeeded", "the database probe in the engine");
    assert_database_unread(&job, &database, "MeTTa code");
    sandbox.assert_nothing_left(&[], &job).await;
    sandbox.assert_next_jobs_run().await;
}

// ----- network ------------------------------------------------------------------------------

/// Python that tries to connect to the server's own port and to other addresses.
pub(crate) fn network_probe(port: u16) -> String {
    format!(
        "import socket
targets = [('127.0.0.1', {port}), ('localhost', {port}), ('127.0.0.1', 22), ('1.1.1.1', 53)]
for host, port in targets:
    try:
        s = socket.create_connection((host, port), timeout=2)
        print('CONNECTED', host, port)
        s.close()
    except OSError as e:
        print('BLOCKED', host, port, type(e).__name__, e)
print('probe done')"
    )
}

pub(crate) fn assert_no_connection(job: &Value, what: &str) {
    let output = text(job, "output");
    assert!(
        output.contains("probe done"),
        "{what}: the probe ran to its end: {job}"
    );
    assert!(
        !output.contains("CONNECTED"),
        "{what}: the job opened a connection: {job}"
    );
    assert_eq!(
        output
            .lines()
            .filter(|line| line.starts_with("BLOCKED"))
            .count(),
        4,
        "{what}: every connection is refused or unreachable: {job}"
    );
}

#[tokio::test]
async fn python_cannot_open_network_connections() {
    // Arrange
    let sandbox = Sandbox::start(&[]).await;
    let (status, _) = sandbox.server.get("/health").await;
    assert_eq!(status, 200, "the server's port is open to the test itself");

    // Act
    let job = sandbox.python(&network_probe(sandbox.server_port())).await;

    // Assert
    assert_status(&job, "succeeded", "the network probe");
    assert_no_connection(&job, "a Python job");
    sandbox.assert_nothing_left(&[], &job).await;
    sandbox.assert_next_jobs_run().await;
}

#[tokio::test]
async fn metta_cannot_open_network_connections() {
    // Arrange
    let sandbox = Sandbox::start(&[]).await;

    // Act
    let job = sandbox
        .metta(&metta_exec(&network_probe(sandbox.server_port())))
        .await;

    // Assert
    assert_status(&job, "succeeded", "the network probe in the engine");
    assert_no_connection(&job, "MeTTa code");
    sandbox.assert_nothing_left(&[], &job).await;
    sandbox.assert_next_jobs_run().await;
}

// ----- deadlines ----------------------------------------------------------------------------

#[tokio::test]
async fn python_sleeping_past_the_deadline_times_out() {
    // Arrange
    let sandbox = Sandbox::start(&[]).await;
    let marker = unique_number();

    // Act
    let (job, waited) = sandbox
        .timed(json!({"language": "python", "code": format!("import time\ntime.sleep({marker})")}))
        .await;

    // Assert
    assert_status(&job, "timed_out", "sleeping past the deadline");
    assert!(
        text(&job, "error").contains(TIME_LIMIT),
        "the error names the time limit: {job}"
    );
    let deadline = Duration::from_secs(RUN_TIMEOUT_SECS);
    assert!(
        waited >= deadline && waited < deadline + Duration::from_secs(4),
        "the job ended {waited:?} after it was submitted; the deadline is {deadline:?}: {job}"
    );
    let ran_ms = job["durationMs"].as_u64().unwrap_or(0);
    assert!(
        (RUN_TIMEOUT_SECS * 1000..RUN_TIMEOUT_SECS * 1000 + 2000).contains(&ran_ms),
        "the job ran {ran_ms} ms; it must stop at its {RUN_TIMEOUT_SECS} s deadline: {job}"
    );
    sandbox
        .assert_nothing_left(&[&format!("sleep({marker})")], &job)
        .await;
    sandbox.assert_next_jobs_run().await;
}

#[tokio::test]
async fn metta_sleeping_past_the_deadline_times_out() {
    // Arrange
    let sandbox = Sandbox::start(&[]).await;

    // Act
    let (job, waited) = sandbox
        .timed(json!({"language": "metta", "code": "!((py-atom time.sleep) 1000)", "sessionId": "hostile"}))
        .await;

    // Assert
    assert_status(
        &job,
        "timed_out",
        "sleeping past the deadline in the engine",
    );
    let deadline = Duration::from_secs(RUN_TIMEOUT_SECS);
    // The engine is killed at the deadline plus ENGINE_KILL_GRACE_MS (500 ms here).
    assert!(
        waited >= deadline && waited < deadline + Duration::from_secs(4),
        "the job ended {waited:?} after it was submitted; the deadline is {deadline:?}: {job}"
    );
    sandbox.assert_nothing_left(&[], &job).await;
    sandbox.assert_next_jobs_run().await;
}

// ----- killing the engine -------------------------------------------------------------------

#[tokio::test]
async fn metta_os_exit_fails_the_job_and_the_session_goes_on() {
    // Arrange
    let sandbox = Sandbox::start(&[]).await;
    let defined = sandbox.metta("(= (kept-fact) 42)").await;
    assert_status(&defined, "succeeded", "a definition before the exit");
    let engine_before = sandbox.server.engine_pid();

    // Act
    let job = sandbox.metta("!((py-atom os._exit) 1)").await;

    // Assert
    assert_status(&job, "failed", "os._exit in the engine");
    assert!(
        text(&job, "error").starts_with(ENGINE_DIED),
        "the error says the engine ended: {job}"
    );
    let after = sandbox.metta("!(kept-fact)").await;
    assert_status(&after, "succeeded", "the session after the engine died");
    assert_eq!(
        after["result"], "[42]\n",
        "the session is rebuilt from its history: {after}"
    );
    assert_eq!(
        sandbox.server.engine_pid(),
        engine_before,
        "only the session's own process ended: the engine (and every other session) goes on"
    );
    sandbox.assert_nothing_left(&[], &job).await;
    sandbox.assert_next_jobs_run().await;
}

// ----- deep recursion -----------------------------------------------------------------------

#[tokio::test]
async fn python_deep_recursion_fails_with_recursion_error() {
    // Arrange
    let sandbox = Sandbox::start(&[]).await;

    // Act
    let job = sandbox.python("def f(n):\n    return f(n + 1)\nf(0)").await;

    // Assert
    assert_status(&job, "failed", "endless recursion");
    assert!(
        text(&job, "error").contains("RecursionError"),
        "the error is Python's RecursionError: {job}"
    );
    sandbox.assert_nothing_left(&[], &job).await;
    sandbox.assert_next_jobs_run().await;
}

#[tokio::test]
async fn metta_deep_recursion_ends_with_a_clear_status() {
    // Arrange
    let sandbox = Sandbox::start(&[]).await;
    let code = "(= (depth $n) (if (== $n 0) 0 (+ 1 (depth (- $n 1)))))\n!(depth 10000000)";

    // Act
    let (job, waited) = sandbox
        .timed(json!({"language": "metta", "code": code, "sessionId": "hostile"}))
        .await;

    // Assert
    assert!(
        matches!(job["status"].as_str(), Some("timed_out" | "failed")),
        "ten million nested calls end by the deadline or with an error: {job}"
    );
    assert!(
        !text(&job, "error").trim().is_empty(),
        "the job says why it ended: {job}"
    );
    assert!(
        waited < Duration::from_secs(RUN_TIMEOUT_SECS + 8),
        "the job took {waited:?}: {job}"
    );
    sandbox.assert_nothing_left(&[], &job).await;
    sandbox.assert_next_jobs_run().await;
}

#[tokio::test]
async fn metta_python_recursion_past_the_c_stack_ends_with_a_clear_status() {
    // Arrange: a raised recursion limit and calls through C (map) can overflow the C stack.
    let sandbox = Sandbox::start(&[]).await;
    let code = metta_exec(
        "import sys\nsys.setrecursionlimit(10**7)\nf = lambda g, n: list(map(lambda x: g(g, x), [n + 1]))\nf(f, 0)",
    );

    // Act
    let job = sandbox.metta(&code).await;

    // Assert
    let clear = match job["status"].as_str() {
        Some("timed_out" | "failed") => !text(&job, "error").trim().is_empty(),
        Some("succeeded") => {
            let result = text(&job, "result");
            result.contains("RecursionError") || result.contains("MemoryError")
        }
        _ => false,
    };
    assert!(
        clear,
        "deep recursion in the engine ends with a clear status and message: {job}"
    );
    sandbox.assert_nothing_left(&[], &job).await;
    sandbox.assert_next_jobs_run().await;
}

// ----- the server dies ----------------------------------------------------------------------

/// Waits until `pids` are gone (or zombies); returns those still running after `limit`.
async fn survivors(pids: &[u32], limit: Duration) -> Vec<ProcessInfo> {
    let started = Instant::now();
    loop {
        let alive: Vec<ProcessInfo> = processes()
            .into_iter()
            .filter(|process| process.is_running() && pids.contains(&process.pid))
            .collect();
        if alive.is_empty() || started.elapsed() > limit {
            return alive;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_running_python_job_dies_with_the_server() {
    // Arrange: a job that would sleep for minutes, running.
    let mut sandbox = Sandbox::start(&[]).await;
    let marker = unique_number();
    let job = sandbox
        .server
        .submit(json!({"language": "python", "code": format!("import time\ntime.sleep({marker})")}))
        .await;
    wait_until_running(&sandbox.server, job["id"].as_str().expect("id")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let children: Vec<ProcessInfo> = processes()
        .into_iter()
        .filter(|process| process.is_running() && sandbox.python_uids.contains(&process.uid))
        .collect();
    assert!(
        !children.is_empty(),
        "the job's interpreter runs under CHILD_UID or CHILD_ALT_UID ({:?})",
        sandbox.python_uids
    );

    // Act
    sandbox.server.kill9();

    // Assert (PR_SET_PDEATHSIG)
    let pids: Vec<u32> = children.iter().map(|process| process.pid).collect();
    let alive = survivors(&pids, Duration::from_secs(3)).await;
    kill_all(&alive);
    assert!(
        alive.is_empty(),
        "3 s after the server was killed, the job's interpreter still runs: {alive:#?}"
    );
}

#[tokio::test]
async fn a_busy_engine_dies_with_the_server() {
    // Arrange: the engine busy in a long call, so it does not notice its stdin closing.
    let mut sandbox = Sandbox::start(&[("RUN_TIMEOUT_SECS", "30")]).await;
    let engine = sandbox.wait_for_engine().await;
    let job = sandbox
        .server
        .submit(json!({"language": "metta", "code": "!((py-atom time.sleep) 25)", "sessionId": "hostile"}))
        .await;
    wait_until_running(&sandbox.server, job["id"].as_str().expect("id")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Act
    sandbox.server.kill9();

    // Assert (PR_SET_PDEATHSIG)
    let alive = survivors(&[engine], Duration::from_secs(3)).await;
    kill_all(&alive);
    assert!(
        alive.is_empty(),
        "3 s after the server was killed, its busy engine still runs: {alive:#?}"
    );
}

#[tokio::test]
async fn python_jobs_alternate_uids_and_get_the_configured_cpu_limit() {
    // Arrange
    let sandbox = Sandbox::start(&[("CHILD_CPU_SECS", "7")]).await;
    let code =
        "import os, resource\nprint(os.getuid(), resource.getrlimit(resource.RLIMIT_CPU)[0])";

    // Act: two jobs in a row (the second one's interpreter was started during the first).
    let first = sandbox
        .server
        .run(json!({"language": "python", "code": code}))
        .await;
    let second = sandbox
        .server
        .run(json!({"language": "python", "code": code}))
        .await;

    // Assert
    let fields = |job: &Value| -> (u32, u64) {
        let text = job["result"].as_str().unwrap_or_default();
        let mut parts = text.split_whitespace();
        let uid = parts.next().and_then(|uid| uid.parse().ok());
        let cpu = parts.next().and_then(|cpu| cpu.parse().ok());
        uid.zip(cpu)
            .unwrap_or_else(|| panic!("unexpected output: {job}"))
    };
    let (first_uid, first_cpu) = fields(&first);
    let (second_uid, second_cpu) = fields(&second);
    assert_eq!((first_cpu, second_cpu), (7, 7), "{first} {second}");
    assert_ne!(
        first_uid, second_uid,
        "consecutive Python jobs must not share a uid: {first} {second}"
    );
    for uid in [first_uid, second_uid] {
        assert!(
            sandbox.python_uids.contains(&uid),
            "uid {uid} is neither CHILD_UID nor CHILD_ALT_UID ({:?})",
            sandbox.python_uids
        );
    }
}
