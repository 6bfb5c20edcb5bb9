//! What one server process claims for itself on the host before it touches anything: its
//! database (an exclusive lock held for the process's life, so a second server on the same
//! `DATABASE_URL` stops at once instead of "recovering" the first one's running jobs), its
//! scratch folder (created by it and marked as its own, so start-up clean-up can never delete
//! what it did not make), and the access modes of the database's files.
//!
//! It never opens the database itself (the store does, after the lock is held) and never
//! changes the mode of a folder it did not create: where a database file is readable by
//! others it tightens that one file and says so.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why this server may not start on this host as configured; each message names the setting.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error("DATABASE_URL={0} names neither a SQLite file nor a PostgreSQL database (use sqlite://PATH or postgres://…)")]
    NotAFileUrl(String),
    #[error("DATABASE_URL: cannot create the database folder {path}: {source}")]
    CreateDatabaseFolder {
        path: String,
        source: std::io::Error,
    },
    #[error("DATABASE_URL: cannot open the lock file {path}: {source}")]
    OpenLock {
        path: String,
        source: std::io::Error,
    },
    #[error("DATABASE_URL: another server ({holder}) already uses the database {database}; stop it first, or give this one a DATABASE_URL of its own")]
    DatabaseInUse { database: String, holder: String },
    #[error("SCRATCH_DIR={scratch} {problem}")]
    Scratch { scratch: String, problem: String },
}

/// The file a `sqlite://PATH` (or `sqlite:PATH`) URL names; options after `?` are ignored.
pub fn database_file(url: &str) -> Result<PathBuf, InstanceError> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| InstanceError::NotAFileUrl(url.to_string()))?;
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Err(InstanceError::NotAFileUrl(url.to_string()));
    }
    Ok(PathBuf::from(path))
}

/// The exclusive claim on one database, held until the process exits (the kernel drops it
/// then, even after kill -9). The lock is a POSIX record lock (`fcntl(F_SETLK)`) on
/// `<database>.lock`: it belongs to this process alone, so a child caught between fork and
/// exec when the server is killed does not keep it held (as it would a `flock`), and
/// `F_GETLK` names its holder. It is independent of SQLite's own locks on the database file,
/// which is never opened here (closing a descriptor of a file drops this process's POSIX
/// locks on it, so only this module may ever open the lock file).
#[derive(Debug)]
pub struct DatabaseLock {
    _file: File,
    path: PathBuf,
}

impl DatabaseLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A write lock on the whole file, for `fcntl`.
fn whole_file_lock() -> libc::flock {
    // SAFETY: `flock` is plain data; zero is a valid value for each field.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock
}

/// Takes the database's lock, creating its folder (mode 0700) when missing; a database that
/// another live process holds is refused, naming that process.
pub fn lock_database(database: &Path) -> Result<DatabaseLock, InstanceError> {
    if let Some(folder) = database
        .parent()
        .filter(|folder| !folder.as_os_str().is_empty())
    {
        if !folder.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(folder)
                .map_err(|source| InstanceError::CreateDatabaseFolder {
                    path: folder.display().to_string(),
                    source,
                })?;
            tracing::info!(
                "created the database folder {} (mode 0700: only the server's user may enter it)",
                folder.display()
            );
        }
    }
    let mut name = database.as_os_str().to_owned();
    name.push(".lock");
    let path = PathBuf::from(name);
    let open_error = |source| InstanceError::OpenLock {
        path: path.display().to_string(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(&path)
        .map_err(open_error)?;
    let lock = whole_file_lock();
    // libc, not rustix: rustix can take this lock but has no F_GETLK, which names the holder.
    // SAFETY: fcntl on a descriptor this function owns, with a valid `flock`.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &lock) } != 0 {
        let err = std::io::Error::last_os_error();
        if !matches!(err.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) {
            return Err(open_error(err));
        }
        let mut holder = whole_file_lock();
        // SAFETY: as above; F_GETLK fills `holder` with the conflicting lock.
        let asked = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut holder) };
        let mut written = String::new();
        let _ = file.read_to_string(&mut written);
        let holder = if asked == 0 && holder.l_type != libc::F_UNLCK as libc::c_short {
            format!("pid {}", holder.l_pid)
        } else {
            match written.trim().parse::<u32>() {
                Ok(pid) => format!("pid {pid}"),
                Err(_) => "a process that did not say its pid".to_string(),
            }
        };
        return Err(InstanceError::DatabaseInUse {
            database: database.display().to_string(),
            holder,
        });
    }
    // Held: say who holds it, for people who look.
    let written = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()));
    if let Err(err) = written {
        tracing::warn!(
            "cannot write this server's pid into {}: {err}",
            path.display()
        );
    }
    Ok(DatabaseLock { _file: file, path })
}

/// The database's own files: the database, SQLite's WAL and shared-memory files, the lock.
fn database_files(database: &Path) -> Vec<PathBuf> {
    ["", "-wal", "-shm", ".lock"]
        .iter()
        .map(|suffix| {
            let mut name = database.as_os_str().to_owned();
            name.push(suffix);
            PathBuf::from(name)
        })
        .collect()
}

/// Makes each of the database's files that others may read or write private to the server's
/// user (mode 0600), saying so: learners' code runs as other users (or, for a server that is
/// not root, behind a mount namespace that hides these files) and must never read them. The
/// folder is left as it is (it may hold what children must run, such as `.venv`).
pub fn make_database_private(database: &Path) {
    for file in database_files(database) {
        let Ok(meta) = std::fs::symlink_metadata(&file) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o7777;
        if !meta.is_file() || mode & 0o077 == 0 {
            continue;
        }
        match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
            Ok(()) => tracing::warn!(
                "DATABASE_URL: {} was mode {mode:04o} (other users could read it); set it to 0600 so learners' code cannot read the database",
                file.display()
            ),
            Err(err) => tracing::warn!(
                "DATABASE_URL: {} is mode {mode:04o} (other users can read it) and cannot be made private: {err}",
                file.display()
            ),
        }
    }
}

/// The name of the file that marks a folder as this service's scratch folder.
const SCRATCH_MARKER: &str = ".metta-learner-scratch";

/// Prefixes of the folders the service makes in its scratch folder (children's working
/// directories); a default scratch folder from a build before the marker holds only these.
pub const WORK_DIR_PREFIXES: [&str; 2] = ["engine-", "python-"];

/// The folder that holds children's working directories: created by this server (or found
/// empty, or marked by an earlier run of it), emptied at start-up and removed at a clean stop.
#[derive(Debug)]
pub struct ScratchFolder {
    root: PathBuf,
}

impl ScratchFolder {
    /// Claims `root` as the scratch folder. Refused, naming SCRATCH_DIR, when it holds the
    /// database or files this service did not make; `legacy_ok` (the default folder in the
    /// temp dir) also accepts one holding only children's folders left by an older build.
    /// Call it only with the database's lock held: two servers never share a scratch folder.
    pub fn claim(root: &Path, database: &Path, legacy_ok: bool) -> Result<Self, InstanceError> {
        let refuse = |problem: String| InstanceError::Scratch {
            scratch: root.display().to_string(),
            problem,
        };
        let root =
            std::path::absolute(root).map_err(|err| refuse(format!("is unusable: {err}")))?;
        if root.parent().is_none() {
            return Err(refuse(
                "is the root folder; name a folder of its own".into(),
            ));
        }
        let database = std::path::absolute(database)
            .ok()
            .and_then(|path| {
                let folder = path.parent()?.canonicalize().ok()?;
                Some(folder.join(path.file_name()?))
            })
            .unwrap_or_else(|| database.to_path_buf());
        match std::fs::symlink_metadata(&root) {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let parent = root.parent().unwrap_or(Path::new("/"));
                if !parent.is_dir() {
                    return Err(refuse(format!(
                        "cannot be created: its parent {} is not an existing folder",
                        parent.display()
                    )));
                }
                Self::check_not_holding(&root, &database).map_err(refuse)?;
                std::fs::DirBuilder::new()
                    .mode(0o711)
                    .create(&root)
                    .map_err(|err| refuse(format!("cannot be created: {err}")))?;
            }
            Err(err) => return Err(refuse(format!("is unusable: {err}"))),
            Ok(meta) if !meta.is_dir() => {
                return Err(refuse(
                    "is not a folder (a symbolic link or a file); name a folder of its own".into(),
                ))
            }
            Ok(_) => {
                Self::check_not_holding(&root, &database).map_err(refuse)?;
                let foreign = Self::foreign_entries(&root, legacy_ok)
                    .map_err(|err| refuse(format!("cannot be read: {err}")))?;
                if !foreign.is_empty() {
                    return Err(refuse(format!(
                        "holds files this service did not create ({}); name an empty or new folder for it",
                        foreign.join(", ")
                    )));
                }
            }
        }
        let scratch = ScratchFolder { root };
        scratch.mark().map_err(refuse)?;
        scratch
            .empty()
            .map_err(|err| refuse(format!("cannot be emptied: {err}")))?;
        Ok(scratch)
    }

    /// Refuses a scratch folder that is, or holds, the database's folder.
    fn check_not_holding(root: &Path, database: &Path) -> Result<(), String> {
        let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
        if database.starts_with(&root) {
            return Err(format!(
                "holds the database {} (DATABASE_URL); the scratch folder is emptied at every start, so name a folder of its own",
                database.display()
            ));
        }
        Ok(())
    }

    /// The entries of an existing folder that are not this service's.
    fn foreign_entries(root: &Path, legacy_ok: bool) -> std::io::Result<Vec<String>> {
        let names: Vec<String> = std::fs::read_dir(root)?
            .map(|entry| entry.map(|entry| entry.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()?;
        if names.iter().any(|name| name == SCRATCH_MARKER) {
            return Ok(Vec::new());
        }
        let foreign: Vec<String> = names
            .into_iter()
            .filter(|name| {
                !(legacy_ok
                    && WORK_DIR_PREFIXES
                        .iter()
                        .any(|prefix| name.starts_with(prefix)))
            })
            .take(5)
            .collect();
        Ok(foreign)
    }

    fn mark(&self) -> Result<(), String> {
        let marker = self.root.join(SCRATCH_MARKER);
        std::fs::write(
            &marker,
            "This folder is the scratch folder of a metta-learner-backend server: it empties it at every start and removes it at a clean stop.\n",
        )
        .map_err(|err| format!("cannot be marked as this service's ({}): {err}", marker.display()))?;
        // Children pass through to their own folder but may not list the others.
        std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o711))
            .map_err(|err| format!("cannot be set to mode 0711: {err}"))
    }

    /// Removes everything in the folder but its marker (what a killed server left).
    fn empty(&self) -> std::io::Result<()> {
        for entry in std::fs::read_dir(&self.root)? {
            let entry = entry?;
            if entry.file_name() == SCRATCH_MARKER {
                continue;
            }
            if entry.file_type()?.is_dir() {
                std::fs::remove_dir_all(entry.path())?;
            } else {
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Removes the folder and all in it (at a clean stop, once no child runs).
    pub fn remove(self) {
        if let Err(err) = std::fs::remove_dir_all(&self.root) {
            tracing::warn!(
                "cannot remove the scratch folder {}: {err}",
                self.root.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_file() {
        assert_eq!(
            database_file("sqlite://data/x.db?mode=rwc").unwrap(),
            PathBuf::from("data/x.db")
        );
        assert_eq!(
            database_file("sqlite:/srv/x.db").unwrap(),
            PathBuf::from("/srv/x.db")
        );
        assert!(database_file("postgres://x").is_err());
        assert!(database_file("sqlite::memory:").is_err());
    }

    #[test]
    fn the_lock_file_is_made_beside_the_database_with_the_holders_pid() {
        // A second claim is refused only from another process (POSIX locks are per
        // process); the misconfiguration suite starts a second server for that.
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("db/x.db");
        let lock = lock_database(&database).expect("lock");
        assert_eq!(lock.path(), dir.path().join("db/x.db.lock"));
        let written = std::fs::read_to_string(lock.path()).unwrap();
        assert_eq!(written.trim(), std::process::id().to_string());
    }

    #[test]
    fn a_scratch_folder_holding_the_database_or_foreign_files_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("app/x.db");
        std::fs::create_dir_all(dir.path().join("app")).unwrap();
        std::fs::write(&database, b"data").unwrap();
        for scratch in [dir.path().join("app"), dir.path().to_path_buf()] {
            let err = ScratchFolder::claim(&scratch, &database, false).expect_err("refused");
            assert!(err.to_string().contains("SCRATCH_DIR"), "{err}");
        }
        assert_eq!(std::fs::read(&database).unwrap(), b"data");

        let other = dir.path().join("other");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join("notes.txt"), b"mine").unwrap();
        let err = ScratchFolder::claim(&other, &database, true).expect_err("refused");
        assert!(err.to_string().contains("notes.txt"), "{err}");
        assert!(other.join("notes.txt").exists());
    }

    #[test]
    fn a_marked_scratch_folder_is_emptied_and_removed_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("x.db");
        let root = dir.path().join("scratch");
        let scratch = ScratchFolder::claim(&root, &database, false).expect("new folder");
        std::fs::create_dir(root.join("python-abc")).unwrap();
        std::fs::write(root.join("python-abc/left"), b"x").unwrap();
        drop(scratch);
        let scratch = ScratchFolder::claim(&root, &database, false).expect("marked folder");
        assert!(!root.join("python-abc").exists());
        scratch.remove();
        assert!(!root.exists());
    }
}
