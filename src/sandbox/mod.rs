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
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;

use namespaces::PreparedNamespaces;

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
        let current = |resource| {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit fills the struct we pass.
            if unsafe { libc::getrlimit(resource, &mut limit) } == 0 {
                limit.rlim_cur
            } else {
                u64::MAX
            }
        };
        ChildLimits {
            memory_bytes: current(libc::RLIMIT_AS),
            cpu_secs: None,
            max_processes: current(libc::RLIMIT_NPROC),
            file_size_bytes: current(libc::RLIMIT_FSIZE),
            open_files: current(libc::RLIMIT_NOFILE),
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
    parent: libc::pid_t,
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
            parent: std::process::id() as libc::pid_t,
        })
    }

    fn apply(&self) -> io::Result<()> {
        // A new session makes the child the leader of a new process group whose id is its
        // pid, so `kill_group(pid)` reaches everything it starts (unless that calls setsid).
        // SAFETY: setsid and unshare change only this forked process.
        check(unsafe { libc::setsid() })?;
        match &self.namespaces {
            Some(prepared) => namespaces::enter(prepared, self.new_network)?,
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
        set_limit(libc::RLIMIT_AS, limits.memory_bytes)?;
        if let Some(cpu) = limits.cpu_secs {
            set_limit(libc::RLIMIT_CPU, cpu)?;
        }
        set_limit(libc::RLIMIT_NPROC, limits.max_processes)?;
        set_limit(libc::RLIMIT_FSIZE, limits.file_size_bytes)?;
        set_limit(libc::RLIMIT_NOFILE, limits.open_files)?;
        set_limit(libc::RLIMIT_CORE, 0)?;
        if let Some(identity) = self.identity {
            // SAFETY: as above; the order (groups, gid, then uid) is the one that can succeed.
            unsafe {
                check(libc::setgroups(0, std::ptr::null()))?;
                check(libc::setgid(identity.gid))?;
                check(libc::setuid(identity.uid))?;
            }
        }
        if in_pid_namespace {
            // Our parent is the stub (outside the namespace, so getppid says 0).
            // SAFETY: prctl on this process's own state.
            check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) })
        } else {
            die_with_parent(self.parent)
        }
    }
}

/// If the server dies (even by kill -9), the child dies with it instead of running on. Set
/// after any change of credentials (which clears it). If the server died before this point,
/// the child already has another parent and stops here.
fn die_with_parent(parent: libc::pid_t) -> io::Result<()> {
    // SAFETY: prctl and getppid on the child's own process state.
    unsafe {
        check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL))?;
        if libc::getppid() != parent {
            return Err(io::Error::other("the server went away"));
        }
    }
    Ok(())
}

fn set_limit(resource: libc::__rlimit_resource_t, value: u64) -> io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: value as libc::rlim_t,
        rlim_max: value as libc::rlim_t,
    };
    // SAFETY: setrlimit reads the struct we pass.
    check(unsafe { libc::setrlimit(resource, &limit) })
}

/// Names a signal that ends children, with the limit it usually means (worded with the
/// other sentences learners read).
pub use crate::learner_messages::describe_signal;

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

/// Makes this process the reaper of its descendants' orphans: a process that a child left
/// behind (a double fork, a daemon that called setsid) becomes our child instead of init's,
/// so `reap_orphans` can find and end it. Called once by the server at start-up.
pub fn become_subreaper() {
    // SAFETY: prctl on this process's own attributes.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1);
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
        for pid in orphans {
            // SAFETY: signalling and reaping our own child, which no one else waits for
            // (tokio waits only for the children it spawned, which `keep` names).
            unsafe {
                libc::kill(-(pid as i32), libc::SIGKILL);
                libc::kill(pid as i32, libc::SIGKILL);
                let mut status = 0;
                libc::waitpid(pid as i32, &mut status, 0);
            }
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
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fresh descriptors, which the OwnedFds then own.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
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
