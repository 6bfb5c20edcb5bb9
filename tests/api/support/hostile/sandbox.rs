//! `Sandbox`: a server whose children run under uids of their own and in a scratch folder the
//! test chose, so a test can tell what a job left behind and that the next jobs still run.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::processes::{fresh_uids, kill_all, processes, ProcessInfo};
use crate::support::TestServer;

/// The deadline of every job in these tests, in seconds.
pub const RUN_TIMEOUT_SECS: u64 = 2;

/// How long to wait for the service to end what a job left behind.
const CLEANUP_LIMIT: Duration = Duration::from_secs(10);

/// The file by which the server marks its scratch folder as its own.
const SCRATCH_MARKER: &str = ".metta-learner-scratch";

/// A server whose children run under uids of their own and whose scratch folder the test
/// chose, so it can tell what a job left behind.
pub struct Sandbox {
    // Declared first: dropped (killed) before its scratch folder is removed.
    pub server: TestServer,
    pub scratch: PathBuf,
    /// Python jobs alternate between CHILD_UID and CHILD_ALT_UID.
    pub python_uids: [u32; 2],
    pub engine_uid: u32,
    _scratch_parent: tempfile::TempDir,
}

impl Sandbox {
    pub async fn start(extra: &[(&str, &str)]) -> Sandbox {
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
    pub async fn wait_for_engine(&self) -> u32 {
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

    pub async fn python(&self, code: &str) -> Value {
        self.server
            .run(json!({"language": "python", "code": code}))
            .await
    }

    pub async fn metta(&self, code: &str) -> Value {
        self.server.metta("hostile", code).await
    }

    /// Runs a job and says how long the client waited for its final state.
    pub async fn timed(&self, body: Value) -> (Value, Duration) {
        let started = Instant::now();
        let job = self.server.run(body).await;
        (job, started.elapsed())
    }

    /// The next jobs of both languages run normally.
    pub async fn assert_next_jobs_run(&self) {
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
    pub fn is_waiting_interpreter(&self, process: &ProcessInfo, markers: &[&str]) -> bool {
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
    pub fn leftovers(&self, markers: &[&str]) -> (Vec<ProcessInfo>, Vec<String>) {
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
    pub async fn assert_nothing_left(&self, markers: &[&str], job: &Value) {
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

    pub fn server_port(&self) -> u16 {
        self.server
            .base
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .expect("port in base")
    }
}
