//! Containment of the children that run learners' code (Python jobs and the MeTTa engine).
//!
//! Every child starts in its own session and process group (so it is killed whole), with a
//! cleared environment (no secret the server was given), a private temporary working directory
//! and resource limits. When the server runs as root, children also run under an unprivileged
//! uid (so they cannot read the database or the server's `/proc` entries); when it does not,
//! they run in new user, mount and PID namespaces instead (`namespaces`). Either way they get a
//! new network namespace (no network). `plan` finds out at start-up what this host allows; a
//! wall the operator did not switch off that cannot be built stops learners' code from running
//! at all (fail closed), with the reason.
//!
//! This module builds such commands and kills such processes; it never decides deadlines or
//! reads output (the runners do).

pub mod namespaces;
pub mod plan;

pub use namespaces::{NamespaceWalls, Namespaces};
pub use plan::{plan_containment, ContainmentPlan, ContainmentSettings};

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;

use namespaces::PreparedNamespaces;
use rustix::pipe::{pipe_with, PipeFlags};
use rustix::process::{
    getpid, getppid, getrlimit, kill_process, kill_process_group, set_child_subreaper,
    set_parent_process_death_signal, setrlimit, setsid, waitpid, Pid, Resource, Rlimit, Signal,
    WaitOptions,
};

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

impl ChildLimits {
    /// The server's own (soft) limits: what a probe uses to tell a limit's fault apart from
    /// another wall's.
    pub fn of_this_process() -> ChildLimits {
        // `None` is unlimited (RLIM_INFINITY), which setrlimit takes back as u64::MAX.
        let current = |resource| getrlimit(resource).current.unwrap_or(u64::MAX);
        ChildLimits {
            memory_bytes: current(Resource::As),
            cpu_secs: None,
            max_processes: current(Resource::Nproc),
            file_size_bytes: current(Resource::Fsize),
            open_files: current(Resource::Nofile),
        }
    }
}

/// An unprivileged identity for children.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
}

/// How one kind of child is contained.
#[derive(Debug, Clone)]
pub struct Containment {
    pub limits: ChildLimits,
    /// A root server's children: the unprivileged uid they run under (`None`: they keep the
    /// server's uid; the operator switched that off, or the server is not root).
    pub identity: Option<Identity>,
    /// Whether the child gets a new, empty network namespace.
    pub new_network: bool,
    /// A server that is not root: the namespaces its children run in.
    pub namespaces: Option<Arc<Namespaces>>,
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
/// as its working directory and home, piped stdio, limits, identity, namespaces and network
/// as planned, and killed when dropped. Fails only when the namespaces' paths cannot be
/// prepared.
pub fn contained_command(
    program: &Path,
    work_dir: &Path,
    containment: &Containment,
) -> io::Result<Command> {
    let mut command = Command::new(program);
    command
        .env_clear()
        .envs(child_environment(work_dir))
        .current_dir(work_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let in_child = ChildSetup::new(containment, work_dir)?;
    // SAFETY: the closure runs in the forked child before exec and makes only system calls
    // (setsid, unshare, mount, fork, prctl, setrlimit, setgroups, setgid, setuid) on data
    // prepared before the fork.
    unsafe {
        command.pre_exec(move || in_child.apply());
    }
    Ok(command)
}

fn check(result: libc::c_int) -> io::Result<()> {
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// What the forked child does before exec, with everything it needs prepared beforehand.
struct ChildSetup {
    limits: ChildLimits,
    identity: Option<Identity>,
    new_network: bool,
    namespaces: Option<PreparedNamespaces>,
    /// The server, which the child checks is still its parent.
    parent: Pid,
}

impl ChildSetup {
    fn new(containment: &Containment, work_dir: &Path) -> io::Result<Self> {
        let namespaces = containment
            .namespaces
            .as_deref()
            .map(|namespaces| PreparedNamespaces::new(namespaces, work_dir))
            .transpose()?;
        Ok(ChildSetup {
            limits: containment.limits,
            identity: containment.identity,
            new_network: containment.new_network,
            namespaces,
            parent: getpid(),
        })
    }

    fn apply(&self) -> io::Result<()> {
        // A new session makes the child the leader of a new process group whose id is its
        // pid, so `kill_group(pid)` reaches everything it starts (unless that calls setsid).
        setsid()?;
        match &self.namespaces {
            Some(prepared) => namespaces::enter(prepared, self.new_network)?,
            // SAFETY: unshare changes only this forked process.
            None if self.new_network => check(unsafe { libc::unshare(libc::CLONE_NEWNET) })?,
            None => {}
        }
        let in_pid_namespace = self
            .namespaces
            .as_ref()
            .is_some_and(PreparedNamespaces::has_pid_namespace);
        if in_pid_namespace {
            // This process stays behind as the stub: it dies with the server too.
            die_with_parent(self.parent)?;
            namespaces::enter_pid_namespace()?;
            namespaces::mount_own_proc()?;
        }
        let limits = self.limits;
        set_limit(Resource::As, limits.memory_bytes)?;
        if let Some(cpu) = limits.cpu_secs {
            set_limit(Resource::Cpu, cpu)?;
        }
        set_limit(Resource::Nproc, limits.max_processes)?;
        set_limit(Resource::Fsize, limits.file_size_bytes)?;
        set_limit(Resource::Nofile, limits.open_files)?;
        set_limit(Resource::Core, 0)?;
        if let Some(identity) = self.identity {
            // libc's, not rustix's per-thread calls: they change the process's credentials.
            // SAFETY: they change only this forked process; the order (groups, gid, then uid)
            // is the one that can succeed.
            unsafe {
                check(libc::setgroups(0, std::ptr::null()))?;
                check(libc::setgid(identity.gid))?;
                check(libc::setuid(identity.uid))?;
            }
        }
        if in_pid_namespace {
            // Our parent is the stub (outside the namespace, so getppid says 0).
            Ok(set_parent_process_death_signal(Some(Signal::KILL))?)
        } else {
            die_with_parent(self.parent)
        }
    }
}

/// If the server dies (even by kill -9), the child dies with it instead of running on. Set
/// after any change of credentials (which clears it). If the server died before this point,
/// the child already has another parent and stops here.
fn die_with_parent(parent: Pid) -> io::Result<()> {
    set_parent_process_death_signal(Some(Signal::KILL))?;
    if getppid() != Some(parent) {
        return Err(io::Error::other("the server went away"));
    }
    Ok(())
}

/// Sets both the soft and the hard limit (`u64::MAX`: unlimited).
fn set_limit(resource: Resource, value: u64) -> io::Result<()> {
    let value = (value != u64::MAX).then_some(value);
    setrlimit(
        resource,
        Rlimit {
            current: value,
            maximum: value,
        },
    )?;
    Ok(())
}

/// Names a signal that ends children, with the limit it usually means (worded with the
/// other sentences learners read).
pub use crate::learner_messages::describe_signal;

/// Sends SIGKILL to the whole process group led by `leader_pid` (no effect when it is gone).
pub fn kill_group(leader_pid: u32) {
    if let Some(leader) = pid_of(leader_pid) {
        let _ = kill_process_group(leader, Signal::KILL);
    }
}

/// A pid as the kernel takes it (`None` for 0 or one out of range).
fn pid_of(pid: u32) -> Option<Pid> {
    Pid::from_raw(i32::try_from(pid).ok()?)
}

/// Makes this process the reaper of its descendants' orphans: a process that a child left
/// behind (a double fork, a daemon that called setsid) becomes our child instead of init's,
/// so `reap_orphans` can find and end it. Called once by the server at start-up.
pub fn become_subreaper() {
    if let Err(err) = set_child_subreaper(Some(getpid())) {
        tracing::warn!("cannot become the reaper of children's orphans: {err}");
    }
}

/// Kills and reaps every child of this process except `keep` (the live engine): what
/// learners' code left running after its job, found because we are its subreaper. Cheap when
/// there is nothing: a look at our threads' child lists. Repeats while a fork bomb still
/// hands us new orphans, up to a bound.
pub fn reap_orphans(keep: &[u32]) -> usize {
    let me = std::process::id();
    let mut reaped = 0;
    for _ in 0..50 {
        let orphans: Vec<u32> = children_of(me)
            .into_iter()
            .filter(|pid| !keep.contains(pid))
            .collect();
        if orphans.is_empty() {
            break;
        }
        for pid in orphans.into_iter().filter_map(pid_of) {
            // Our own child, which no one else waits for (tokio waits only for the children
            // it spawned, which `keep` names).
            let _ = kill_process_group(pid, Signal::KILL);
            let _ = kill_process(pid, Signal::KILL);
            let _ = waitpid(Some(pid), WaitOptions::empty());
            reaped += 1;
        }
    }
    reaped
}

/// The direct children of `pid` (all its threads'), from /proc.
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// A pipe (read end, write end), both close-on-exec.
pub fn cloexec_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(pipe_with(PipeFlags::CLOEXEC)?)
}

/// Makes `fd` (an end of a `cloexec_pipe`) the child's descriptor `target`; the parent keeps
/// its own copy, which it must drop after spawning.
pub fn pass_fd_as(command: &mut Command, fd: &OwnedFd, target: RawFd) {
    let fd = fd.as_raw_fd();
    // SAFETY: runs in the forked child before exec; dup2 and fcntl are async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            if fd == target {
                // dup2 onto itself keeps close-on-exec set: clear it instead.
                let flags = libc::fcntl(fd, libc::F_GETFD);
                check(flags)?;
                check(libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC))
            } else {
                check(libc::dup2(fd, target))
            }
        });
    }
}

/// Makes a private temporary working directory for one child, owned by the child's identity
/// (when it has one) and removed when dropped.
pub fn child_work_dir(
    scratch: &Path,
    prefix: &str,
    identity: Option<Identity>,
) -> io::Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(scratch)?;
    if let Some(identity) = identity {
        std::os::unix::fs::chown(dir.path(), Some(identity.uid), Some(identity.gid))?;
    }
    Ok(dir)
}
