//! Containment of the children that run learners' code (Python jobs and the MeTTa engine).
//!
//! Every child starts in its own session and process group (so it is killed whole), with a
//! cleared environment (no secret the server was given), a private temporary working directory
//! and resource limits. This module builds such commands and kills such groups; it never decides
//! deadlines or reads output (the runners do).

use std::io;
use std::path::Path;
use std::process::Stdio;

use tokio::process::Command;

/// Resource limits applied to each child with `setrlimit` before it execs.
#[derive(Debug, Clone, Copy)]
pub struct ChildLimits {
    /// Address space (RLIMIT_AS), bytes.
    pub memory_bytes: u64,
    /// CPU time (RLIMIT_CPU), seconds; `None` leaves it unlimited (the engine lives long and
    /// is supervised by deadlines instead).
    pub cpu_secs: Option<u64>,
    /// Processes of the child's user (RLIMIT_NPROC). The kernel does not apply it to root.
    pub max_processes: u64,
    /// Largest file the child may write (RLIMIT_FSIZE), bytes.
    pub file_size_bytes: u64,
    /// Open file descriptors (RLIMIT_NOFILE).
    pub open_files: u64,
}

/// Environment variables a child gets; nothing else of the server's environment passes.
fn child_environment(work_dir: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("PATH", "/usr/local/bin:/usr/bin:/bin".to_string()),
        ("HOME", work_dir.display().to_string()),
        ("TMPDIR", work_dir.display().to_string()),
        ("LANG", "C.UTF-8".to_string()),
        ("PYTHONIOENCODING", "utf-8".to_string()),
        ("PYTHONDONTWRITEBYTECODE", "1".to_string()),
    ]
}

/// A command for `program` that runs contained: own session, cleared environment, `work_dir`
/// as its working directory and home, piped stdio, the given limits, and killed when dropped.
pub fn contained_command(program: &Path, work_dir: &Path, limits: ChildLimits) -> Command {
    let mut command = Command::new(program);
    command
        .env_clear()
        .envs(child_environment(work_dir))
        .current_dir(work_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: the closure runs in the forked child before exec and calls only
    // async-signal-safe functions (setsid, prctl, setrlimit).
    unsafe {
        command.pre_exec(move || apply_in_child(limits));
    }
    command
}

fn apply_in_child(limits: ChildLimits) -> io::Result<()> {
    // A new session makes the child the leader of a new process group whose id is its pid,
    // so `kill_group(pid)` reaches everything it starts (unless that calls setsid itself).
    if unsafe { libc::setsid() } < 0 {
        return Err(io::Error::last_os_error());
    }
    // If the server dies (even by kill -9), the child dies with it instead of running on.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } < 0 {
        return Err(io::Error::last_os_error());
    }
    set_limit(libc::RLIMIT_AS, limits.memory_bytes)?;
    if let Some(cpu) = limits.cpu_secs {
        set_limit(libc::RLIMIT_CPU, cpu)?;
    }
    set_limit(libc::RLIMIT_NPROC, limits.max_processes)?;
    set_limit(libc::RLIMIT_FSIZE, limits.file_size_bytes)?;
    set_limit(libc::RLIMIT_NOFILE, limits.open_files)?;
    set_limit(libc::RLIMIT_CORE, 0)?;
    Ok(())
}

fn set_limit(resource: libc::__rlimit_resource_t, value: u64) -> io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: value as libc::rlim_t,
        rlim_max: value as libc::rlim_t,
    };
    if unsafe { libc::setrlimit(resource, &limit) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends SIGKILL to the whole process group led by `leader_pid` (no effect when it is gone).
pub fn kill_group(leader_pid: u32) {
    if leader_pid == 0 || leader_pid > i32::MAX as u32 {
        return;
    }
    // SAFETY: kill with a negative pid signals a process group; it has no memory effects.
    unsafe {
        libc::kill(-(leader_pid as i32), libc::SIGKILL);
    }
}

/// Makes a private temporary working directory for one child, removed when dropped.
pub fn child_work_dir(prefix: &str) -> io::Result<tempfile::TempDir> {
    tempfile::Builder::new().prefix(prefix).tempdir()
}

/// Kills a child's process group when dropped, so a job abandoned mid-run (shutdown, a
/// cancelled future) leaves nothing running.
#[derive(Debug)]
pub struct GroupGuard(pub u32);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        kill_group(self.0);
    }
}
