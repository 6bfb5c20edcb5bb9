//! The walls of a server that is not root: it cannot give children another uid, so each child
//! gets new user, mount and PID namespaces (as unprivileged sandboxes such as bubblewrap do)
//! where the kernel allows them.
//!
//! - **mount**: the whole file system read-only but the child's own working directory; the
//!   database's files (or its folder) covered; the scratch folder covered by an empty tmpfs,
//!   so the other children's folders are out of sight; a fresh `/proc`.
//! - **PID**: the child is PID 1 of a namespace of its own, so it cannot name (signal, trace,
//!   read `/proc` of) the server or any other child; when it ends, all it started ends too.
//!   A namespace's first process must be forked after `unshare`, so the forked child stays
//!   behind as a stub that waits for it and exits the same way (and holds nothing else).
//! - **user**: the child's uid maps to itself, so files keep their owners; it gets no
//!   capability on the host.
//!
//! Everything here runs in the forked child before exec: only system calls, no allocation
//! (every path and map line is prepared before the fork, in `PreparedNamespaces::new`).

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{mkdir, open, Mode, OFlags};
use rustix::io::write;
use rustix::mount::{mount, mount_bind, mount_change, MountFlags, MountPropagationFlags};
use rustix::process::{set_dumpable_behavior, DumpableBehavior};

/// What the namespaces hide, decided once at start-up (see `plan::plan_containment`).
#[derive(Debug, Clone)]
pub struct NamespaceWalls {
    /// Folders covered by an empty tmpfs that nobody may enter (the database's folder when
    /// nothing children run lives in it).
    pub hidden_folders: Vec<PathBuf>,
    /// Files covered by a file nobody may open (the database's files when its folder also
    /// holds what children run, such as a checkout with `.venv`).
    pub hidden_files: Vec<PathBuf>,
    /// The scratch folder: covered by an empty tmpfs, the child's own folder bound back.
    pub scratch: PathBuf,
}

/// A user namespace (always, for a server that is not root) and, with `walls`, mount and
/// PID namespaces too.
#[derive(Debug, Clone)]
pub struct Namespaces {
    /// The uid and gid the child has inside (the server's own).
    pub uid: u32,
    pub gid: u32,
    pub walls: Option<NamespaceWalls>,
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path holds a NUL byte"))
}

/// Everything the child needs, as C strings made before the fork.
#[derive(Debug)]
pub struct PreparedNamespaces {
    uid_map: CString,
    gid_map: CString,
    walls: Option<PreparedWalls>,
}

#[derive(Debug)]
struct PreparedWalls {
    hidden_folders: Vec<CString>,
    hidden_files: Vec<CString>,
    scratch: CString,
    work_dir: CString,
    /// A file nobody may open, in the scratch cover, bound over each hidden file.
    file_cover: CString,
}

impl PreparedNamespaces {
    /// Prepares `namespaces` for a child working in `work_dir` (which must be in the scratch
    /// folder); database files that do not exist now are left out (there is nothing to cover).
    pub fn new(namespaces: &Namespaces, work_dir: &Path) -> io::Result<Self> {
        let walls = match &namespaces.walls {
            None => None,
            Some(walls) => Some(PreparedWalls {
                hidden_folders: walls
                    .hidden_folders
                    .iter()
                    .filter(|folder| folder.is_dir())
                    .map(|folder| c_path(folder))
                    .collect::<io::Result<_>>()?,
                hidden_files: walls
                    .hidden_files
                    .iter()
                    .filter(|file| file.exists())
                    .map(|file| c_path(file))
                    .collect::<io::Result<_>>()?,
                scratch: c_path(&walls.scratch)?,
                work_dir: c_path(work_dir)?,
                file_cover: c_path(&walls.scratch.join(".hidden"))?,
            }),
        };
        let line = |id: u32| {
            CString::new(format!("{id} {id} 1\n")).map_err(|_| io::Error::other("unreachable"))
        };
        Ok(PreparedNamespaces {
            uid_map: line(namespaces.uid)?,
            gid_map: line(namespaces.gid)?,
            walls,
        })
    }

    /// Whether the child needs the fork that puts it into its PID namespace.
    pub fn has_pid_namespace(&self) -> bool {
        self.walls.is_some()
    }
}

fn check(result: libc::c_int) -> io::Result<()> {
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `mount_setattr(2)`'s argument (not in every libc).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;

fn mount_setattr(path: &CStr, recursive: bool, set: u64, clear: u64) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = if recursive { libc::AT_RECURSIVE } else { 0 };
    // SAFETY: the kernel reads `attr` (of the size we pass) and the path string.
    let result = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            flags as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn write_file(path: &CStr, content: &CStr) -> io::Result<()> {
    let file = open(path, OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty())?;
    let bytes = content.to_bytes();
    if write(&file, bytes)? != bytes.len() {
        return Err(io::Error::other("a short write"));
    }
    Ok(())
}

/// Writes `/proc/thread-self/fd/<fd>` into `buffer` without allocating.
fn fd_path(fd: libc::c_int, buffer: &mut [u8; 64]) -> &CStr {
    const PREFIX: &[u8] = b"/proc/thread-self/fd/";
    buffer[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 12];
    let mut count = 0;
    let mut value = fd.max(0) as u32;
    loop {
        digits[count] = b'0' + (value % 10) as u8;
        count += 1;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    for index in 0..count {
        buffer[PREFIX.len() + index] = digits[count - 1 - index];
    }
    buffer[PREFIX.len() + count] = 0;
    CStr::from_bytes_until_nul(&buffer[..]).unwrap_or(c"/")
}

/// In the forked child: enters a new user namespace (and, with walls, mount and PID
/// namespaces too; a network namespace when `new_network`) and builds the walls. The PID
/// namespace takes effect for the next fork (`enter_pid_namespace`).
pub fn enter(prepared: &PreparedNamespaces, new_network: bool) -> io::Result<()> {
    let mut flags = libc::CLONE_NEWUSER;
    if new_network {
        flags |= libc::CLONE_NEWNET;
    }
    if prepared.walls.is_some() {
        flags |= libc::CLONE_NEWNS | libc::CLONE_NEWPID;
    }
    // SAFETY: unshare changes only this (single-threaded, forked) process.
    check(unsafe { libc::unshare(flags) })?;
    // The server is not dumpable (its /proc files belong to root then), which the fork
    // inherited; our own map files must be ours to write. exec resets it anyway, and no
    // process that could read this copy of the server can see it from inside a namespace.
    set_dumpable_behavior(DumpableBehavior::Dumpable)?;
    write_file(c"/proc/self/setgroups", c"deny")?;
    write_file(c"/proc/self/uid_map", &prepared.uid_map)?;
    write_file(c"/proc/self/gid_map", &prepared.gid_map)?;
    match &prepared.walls {
        Some(walls) => build_walls(walls),
        None => Ok(()),
    }
}

/// In the namespace's first process: a `/proc` of the new PID namespace over the old one, so
/// the child sees only its own processes.
pub fn mount_own_proc() -> io::Result<()> {
    let flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    Ok(mount(c"proc", c"/proc", c"proc", flags, None::<&CStr>)?)
}

fn build_walls(walls: &PreparedWalls) -> io::Result<()> {
    // Every call below works in this process's own new mount namespace, with strings
    // prepared before the fork (rustix passes a `&CStr` as it is: nothing is allocated).
    mount_change(
        c"/",
        MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
    )?;
    // Keep a handle on the child's own folder, cover the scratch folder (the other children's
    // folders) with an empty tmpfs, and bind the folder back in it.
    let own = open(
        &*walls.work_dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let tmpfs = MountFlags::NOSUID | MountFlags::NODEV;
    mount(
        c"tmpfs",
        &*walls.scratch,
        c"tmpfs",
        tmpfs,
        c"mode=0755,size=64k",
    )?;
    mkdir(&*walls.work_dir, Mode::RWXU)?;
    let mut buffer = [0u8; 64];
    mount_bind(fd_path(own.as_raw_fd(), &mut buffer), &*walls.work_dir)?;
    drop(own);
    // A database folder goes under a tmpfs nobody may enter (mode 0); single database files
    // under a file nobody may open, made in the scratch cover.
    for folder in &walls.hidden_folders {
        mount(c"tmpfs", &**folder, c"tmpfs", tmpfs, c"mode=0000,size=4k")?;
    }
    if !walls.hidden_files.is_empty() {
        open(
            &*walls.file_cover,
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
    }
    for file in &walls.hidden_files {
        mount_bind(&*walls.file_cover, &**file)?;
    }
    // Everything read-only (and no set-uid programs), then the own folder writable again.
    mount_setattr(c"/", true, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID, 0)?;
    mount_setattr(&walls.work_dir, false, 0, MOUNT_ATTR_RDONLY)
}

/// Forks the PID namespace's first process, which returns `Ok` and goes on to exec; the
/// caller stays behind as the stub, which waits for it and ends as it ended (the same exit
/// code, or killed by the same signal), and never returns.
pub fn enter_pid_namespace() -> io::Result<()> {
    // SAFETY: fork in a single-threaded process; the stub only waits and exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        return Ok(());
    }
    // SAFETY: close_range, waitpid, signal, kill and _exit on this process and its child.
    unsafe {
        // The stub holds no descriptor beyond stdio: the spawner's error pipe in particular
        // must close when the child execs, or the server would wait for the stub's end.
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        // The stub is a copy of the server's memory: it must never dump it (it re-raises the
        // signal that killed the child, which may be one that dumps core).
        libc::prctl(libc::PR_SET_DUMPABLE, 0);
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &no_core);
        let mut status = 0;
        loop {
            let waited = libc::waitpid(pid, &mut status, 0);
            if waited == pid {
                break;
            }
            if waited < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                libc::_exit(127);
            }
        }
        if libc::WIFEXITED(status) {
            libc::_exit(libc::WEXITSTATUS(status));
        }
        let signal = libc::WTERMSIG(status);
        libc::signal(signal, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::kill(libc::getpid(), signal);
        libc::_exit(128 + signal);
    }
}

#[cfg(test)]
mod tests {
    use super::fd_path;

    #[test]
    fn descriptor_paths_are_written_without_allocating() {
        let mut buffer = [0u8; 64];
        assert_eq!(
            fd_path(1234, &mut buffer).to_str().unwrap(),
            "/proc/thread-self/fd/1234"
        );
        assert_eq!(
            fd_path(0, &mut buffer).to_str().unwrap(),
            "/proc/thread-self/fd/0"
        );
    }
}
