//! Finding what a job left running: every process on the machine from `/proc`, uids no other
//! test uses (so a test finds its children by uid), markers for command lines, and the
//! files a job wrote.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::support::{send_signal, Signal};

static NEXT_UID: AtomicU32 = AtomicU32::new(0);

/// A pair of uids no other test (of this run or of a concurrent one) uses, so a test can find
/// its children by uid and a fork bomb's RLIMIT_NPROC counts only its own processes.
pub fn fresh_uids() -> ([u32; 2], u32) {
    let slot = NEXT_UID.fetch_add(3, Ordering::SeqCst) % 99;
    let base = 40_000 + (std::process::id() % 250) * 100 + slot;
    ([base, base + 1], base + 2)
}

/// A number no other process on this machine has in its command line.
pub fn unique_number() -> u64 {
    800_000_000 + (uuid::Uuid::new_v4().as_u128() % 100_000_000) as u64
}

#[derive(Debug)]
pub struct ProcessInfo {
    pub pid: u32,
    pub uid: u32,
    pub ppid: u32,
    pub state: String,
    pub cmdline: String,
    /// Its working directory (`… (deleted)` once removed).
    pub cwd: PathBuf,
}

impl ProcessInfo {
    pub fn is_running(&self) -> bool {
        !(self.state.starts_with('Z') || self.state.starts_with('X'))
    }
}

/// Every process on the machine, from /proc.
pub fn processes() -> Vec<ProcessInfo> {
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
pub fn kill_all(leftovers: &[ProcessInfo]) {
    for process in leftovers {
        send_signal(process.pid, Signal::KILL);
    }
}

pub fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .expect("VmRSS")
}

/// Waits until `pids` are gone (or zombies); returns those still running after `limit`.
pub async fn survivors(pids: &[u32], limit: Duration) -> Vec<ProcessInfo> {
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

pub fn walk(dir: &Path) -> Vec<PathBuf> {
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
