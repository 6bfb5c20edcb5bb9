//! Server processes: the real binary started on its own database with the benchmark's
//! settings (`PORT=0`, no rate limit, its scratch folder in the benchmark's temporary folder),
//! its address read from its log, stopped by SIGTERM; and what the benchmark reads of a
//! running server from `/proc` (its engine child, CPU time) or does to it (kill the engine).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};

use crate::setup::Setup;
use crate::{SERVER_START_LIMIT, SERVER_STOP_LIMIT};

/// A running server: the release binary on its own database, its address from its log.
pub(crate) struct Server {
    child: Option<Child>,
    pub(crate) address: String,
    pub(crate) spawned_at: Instant,
    /// Until the address appeared.
    pub(crate) listening_after: Duration,
    logs: Arc<Mutex<VecDeque<String>>>,
}

impl Server {
    /// Starts the server on `database`, its children's scratch folder next to the database's
    /// folder (inside the benchmark's temporary folder, so it goes with it).
    pub(crate) async fn start(setup: &Setup, database: &Path) -> Result<Server> {
        let folder = database.parent().unwrap_or(setup.work.path());
        Self::start_on(
            setup,
            &format!("sqlite://{}", database.display()),
            folder,
            &[],
        )
        .await
    }

    /// Starts the server on the database `url`, in `folder` (its scratch folder next to it),
    /// with extra environment variables.
    pub(crate) async fn start_on(
        setup: &Setup,
        url: &str,
        folder: &Path,
        env: &[(&str, &str)],
    ) -> Result<Server> {
        let scratch = format!("{}-scratch", folder.display());
        let mut command = Command::new(&setup.server_binary);
        command
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("PORT", "0")
            .env("HOST", "127.0.0.1")
            .env("DATABASE_URL", url)
            .env("PYTHON", &setup.python)
            .env("RATE_LIMIT_PER_MINUTE", "0")
            .env("SCRATCH_DIR", scratch)
            .env("RUST_LOG", "info")
            .current_dir(folder)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let spawned_at = Instant::now();
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {}", setup.server_binary.display()))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| anyhow!("the server has no stderr"))?;
        let logs = Arc::new(Mutex::new(VecDeque::new()));
        let (address_sender, address) = tokio::sync::oneshot::channel();
        let log_lines = logs.clone();
        std::thread::spawn(move || follow_log(stderr, address_sender, log_lines));
        let mut server = Server {
            child: Some(child),
            address: String::new(),
            spawned_at,
            listening_after: Duration::ZERO,
            logs,
        };
        match tokio::time::timeout(SERVER_START_LIMIT, address).await {
            Ok(Ok(address)) => server.address = address,
            _ => bail!(
                "the server did not start listening; its log:\n{}",
                server.log_tail()
            ),
        }
        server.listening_after = spawned_at.elapsed();
        Ok(server)
    }

    fn log_tail(&self) -> String {
        self.logs
            .lock()
            .map(|lines| lines.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }

    pub(crate) fn pid(&self) -> Result<u32> {
        self.child
            .as_ref()
            .map(Child::id)
            .ok_or_else(|| anyhow!("the server is not running"))
    }

    /// SIGTERM, then waits for a clean exit.
    pub(crate) async fn stop(mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        signal(child.id(), libc::SIGTERM)?;
        let deadline = Instant::now() + SERVER_STOP_LIMIT;
        loop {
            if let Some(status) = child.try_wait().context("cannot wait for the server")? {
                ensure!(status.success(), "the server stopped with {status}");
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the server did not stop within {SERVER_STOP_LIMIT:?} of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Reads the server's log: sends the address of its "listening on http://…" line and keeps
/// the last lines for error messages.
fn follow_log(
    stderr: std::process::ChildStderr,
    address: tokio::sync::oneshot::Sender<String>,
    logs: Arc<Mutex<VecDeque<String>>>,
) {
    let mut address = Some(address);
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        if let Some(at) = line.find("listening on http://") {
            if let Some(sender) = address.take() {
                let _ = sender.send(line[at + "listening on ".len()..].trim().to_string());
            }
        }
        if let Ok(mut logs) = logs.lock() {
            if logs.len() == 40 {
                logs.pop_front();
            }
            logs.push_back(line);
        }
    }
}

fn signal(pid: u32, signal: i32) -> Result<()> {
    let pid = libc::pid_t::try_from(pid).context("process id out of range")?;
    // SAFETY: sending a signal to a process we started; no memory effects.
    if unsafe { libc::kill(pid, signal) } < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot signal process {pid}"));
    }
    Ok(())
}

/// User + system CPU seconds a process has used so far (0 when it is gone).
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<f64>().ok())
        .sum();
    // SAFETY: sysconf has no memory effects.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// kill -9 the server's engine child and waits until it is dead (a zombie or gone).
pub(crate) async fn kill_engine_child(server: u32) -> Result<()> {
    let engine = engine_child_of(server)
        .ok_or_else(|| anyhow!("the server (pid {server}) has no engine child"))?;
    signal(engine, libc::SIGKILL)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while process_alive(engine) {
        ensure!(
            Instant::now() < deadline,
            "the engine {engine} survived SIGKILL"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// The child of `server` whose command line has the argument `engine`, from /proc.
pub(crate) fn engine_child_of(server: u32) -> Option<u32> {
    let server = server.to_string();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Field 4 of /proc/PID/stat (after the parenthesised name) is the parent pid.
            let parent = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let is_engine = cmdline.split(|byte| *byte == 0).any(|arg| arg == b"engine");
            (parent == server && is_engine).then_some(pid)
        })
}

/// Whether `pid` still runs: it exists and is not a zombie whose threads have all exited. (A
/// killed multi-threaded process shows `Z` as soon as its main thread is gone, but its parent
/// cannot reap it until the other threads are gone too.)
fn process_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or("");
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, Iterator::count);
    !(matches!(state, "Z" | "X") && threads <= 1)
}
