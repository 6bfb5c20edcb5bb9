//! The start-up plan of how children are contained on this host, found by trying each wall on
//! throw-away children that run the very programs the real children run.
//!
//! Fail closed: a wall the operator did not switch off (`CHILD_DROP_PRIVILEGES`,
//! `CHILD_NETWORK_ISOLATION`) that cannot be built is never dropped quietly. The plan then
//! carries a `refusal` that says which setting, which path and which error; the server still
//! starts, but runs no learner's code (jobs fail with that reason, `/health` says degraded).
//! Walls the operator switched off become warnings. A failed probe is blamed on what caused
//! it: the host (it refuses a namespace), a limit (the same probe passes with the server's own
//! limits), a uid that cannot reach the program, or the program itself (it fails even
//! uncontained).

use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use super::{
    child_environment, child_work_dir, ChildLimits, ChildSetup, Containment, Identity,
    NamespaceWalls, Namespaces,
};

/// What the host allows, decided once at start-up.
#[derive(Debug, Clone)]
pub struct ContainmentPlan {
    pub python: Containment,
    /// The identity of every other Python job (when privileges are dropped): the job running
    /// and the interpreter waiting for the next one never share a uid, so the first cannot
    /// signal or trace the second.
    pub python_alternate: Option<Identity>,
    pub engine: Containment,
    /// One line each for a wall the operator switched off.
    pub warnings: Vec<String>,
    /// Why learners' code must not run at all: a wall the operator did not switch off cannot
    /// be built here.
    pub refusal: Option<String>,
}

/// Settings that shape the plan (from `Config`).
#[derive(Debug, Clone)]
pub struct ContainmentSettings {
    pub limits: ChildLimits,
    pub python_identity: Identity,
    pub python_alternate_identity: Identity,
    pub engine_identity: Identity,
    /// Whether children get other uids (root) or namespaces (not root) at all.
    pub drop_privileges: bool,
    /// Whether to give children a new network namespace.
    pub isolate_network: bool,
    /// The database's file: hidden from the children of a server that is not root.
    pub database: PathBuf,
    /// The scratch folder (children's working directories).
    pub scratch: PathBuf,
}

/// A program children run, tried under the walls; `setting` names where it comes from.
#[derive(Debug, Clone, Copy)]
pub struct Probe<'a> {
    pub setting: &'static str,
    pub program: &'a Path,
    pub args: &'a [&'a str],
}

/// Errors by which a kernel says it does not allow a namespace (to anyone of our kind).
fn is_host_refusal(err: &ProbeFailure) -> bool {
    matches!(
        err,
        ProbeFailure::Start(err) if matches!(
            err.raw_os_error(),
            Some(libc::EPERM | libc::ENOSPC | libc::EINVAL | libc::ENOSYS | libc::EUSERS | libc::EACCES)
        )
    )
}

/// How a probe child failed.
#[derive(Debug)]
enum ProbeFailure {
    /// It could not be set up or started (the error of the step that failed, or of exec).
    Start(io::Error),
    /// It started and failed; the last line it wrote on stderr.
    Exit(String),
}

impl std::fmt::Display for ProbeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeFailure::Start(err) => write!(f, "{err}"),
            ProbeFailure::Exit(text) => write!(f, "it failed: {text}"),
        }
    }
}

/// Finds out what this host allows (see the module's header). `keep_visible` lists what
/// children must reach (the programs and the engine's `sys.path`), so the walls of a server
/// that is not root never hide it.
pub fn plan_containment(
    settings: &ContainmentSettings,
    probes: &[Probe<'_>],
    keep_visible: &[&Path],
) -> ContainmentPlan {
    let host = Host {
        is_root: rustix::process::geteuid().is_root(),
        uid: rustix::process::getuid().as_raw(),
        gid: rustix::process::getgid().as_raw(),
    };
    decide_plan(
        settings,
        probes,
        keep_visible,
        host,
        &mut |program, args, containment| probe_run(&settings.scratch, program, args, containment),
    )
}

/// Who the server runs as.
#[derive(Debug, Clone, Copy)]
struct Host {
    is_root: bool,
    uid: u32,
    gid: u32,
}

/// Runs a program once under a containment (`probe_run`; a fake in the unit tests).
type TryRun<'t> = dyn FnMut(&Path, &[&str], &Containment) -> Result<(), ProbeFailure> + 't;

/// The plan's decisions, given who the server is and a way to try a child.
fn decide_plan(
    settings: &ContainmentSettings,
    probes: &[Probe<'_>],
    keep_visible: &[&Path],
    host: Host,
    try_run: &mut TryRun<'_>,
) -> ContainmentPlan {
    let Host { is_root, uid, gid } = host;
    let mut warnings = Vec::new();
    let mut refusal = None;
    let generous = ChildLimits::of_this_process();

    let walls = (!is_root && settings.drop_privileges).then(|| NamespaceWalls {
        hidden_folders: Vec::new(),
        hidden_files: Vec::new(),
        scratch: settings.scratch.clone(),
    });
    let namespaces = |walls: Option<NamespaceWalls>| Some(Arc::new(Namespaces { uid, gid, walls }));
    let mut base = Containment {
        limits: generous,
        identity: None,
        new_network: false,
        namespaces: None,
    };

    // The network wall.
    if settings.isolate_network {
        let probe = Containment {
            new_network: true,
            namespaces: if is_root { None } else { namespaces(None) },
            ..base.clone()
        };
        match try_run(Path::new("/bin/true"), &[], &probe) {
            Ok(()) => base.new_network = true,
            Err(err) => {
                refusal = Some(format!(
                    "CHILD_NETWORK_ISOLATION is on, but this host refuses children a new network namespace ({err}{}); learners' code would reach the network. Run the server where that is allowed, or set CHILD_NETWORK_ISOLATION=false to run learners' code with network access",
                    if is_root { "" } else { "; a server that is not root needs unprivileged user namespaces for it" }
                ));
            }
        }
    } else {
        warnings.push(
            "children are NOT cut off from the network (CHILD_NETWORK_ISOLATION=false)".into(),
        );
    }

    // The uid wall: other uids (root), or namespaces standing in for them (not root).
    if !settings.drop_privileges {
        warnings.push(if is_root {
            "children run as root (CHILD_DROP_PRIVILEGES=false): learners' code can read the database and signal the server".into()
        } else {
            "children run as the server's own user (CHILD_DROP_PRIVILEGES=false): learners' code can read the database and signal the server".into()
        });
        if !is_root && base.new_network {
            base.namespaces = namespaces(None);
        }
    } else if !is_root {
        let walls = walls.map(|mut walls| {
            hide_database(&mut walls, &settings.database, keep_visible);
            walls
        });
        let probe = Containment {
            namespaces: namespaces(walls.clone()),
            ..base.clone()
        };
        match try_run(Path::new("/bin/true"), &[], &probe) {
            Ok(()) => base.namespaces = probe.namespaces,
            Err(err) if is_host_refusal(&err) && refusal.is_none() => {
                refusal = Some(format!(
                    "the server runs as uid {uid}, not root, so children cannot get uids of their own, and this host refuses the user, mount and PID namespaces that stand in for them ({err}); learners' code could read the database and signal the server. Run the server as root, allow unprivileged user namespaces (user.max_user_namespaces, kernel.unprivileged_userns_clone), or set CHILD_DROP_PRIVILEGES=false to run learners' code as the server's user anyway"
                ));
            }
            Err(err) if refusal.is_none() => {
                refusal = Some(format!(
                    "the server runs as uid {uid}, not root, and cannot build the namespaces that keep children from the database and the server ({err}); set CHILD_DROP_PRIVILEGES=false to run learners' code as the server's user anyway"
                ));
            }
            Err(_) => {}
        }
    }

    let drop_identity = is_root && settings.drop_privileges;
    let identities: Vec<(&str, Option<Identity>)> = if drop_identity {
        vec![
            ("CHILD_UID", Some(settings.python_identity)),
            ("CHILD_ALT_UID", Some(settings.python_alternate_identity)),
            ("ENGINE_UID", Some(settings.engine_identity)),
        ]
    } else {
        vec![("", None)]
    };
    if refusal.is_none() {
        'identities: for (identity_setting, identity) in &identities {
            for probe in probes {
                let configured = Containment {
                    limits: settings.limits,
                    identity: *identity,
                    ..base.clone()
                };
                let Err(err) = try_run(probe.program, probe.args, &configured) else {
                    continue;
                };
                refusal = Some(blame(
                    settings,
                    probe,
                    &configured,
                    identity_setting,
                    err,
                    try_run,
                ));
                break 'identities;
            }
        }
    }

    let containment = |identity: Identity| Containment {
        limits: settings.limits,
        identity: drop_identity.then_some(identity),
        ..base.clone()
    };
    ContainmentPlan {
        python: containment(settings.python_identity),
        python_alternate: drop_identity.then_some(settings.python_alternate_identity),
        engine: containment(settings.engine_identity),
        warnings,
        refusal,
    }
}

/// Says why `probe` fails under `configured`: a limit (it passes with the server's own
/// limits; which one is found by lifting each in turn), the program itself (it fails even
/// uncontained), or the uid or namespaces (neither of those).
fn blame(
    settings: &ContainmentSettings,
    probe: &Probe<'_>,
    configured: &Containment,
    identity_setting: &str,
    err: ProbeFailure,
    try_run: &mut TryRun<'_>,
) -> String {
    let program = format!("{}={}", probe.setting, probe.program.display());
    let generous = ChildLimits::of_this_process();
    let with_limits = |limits: ChildLimits| Containment {
        limits,
        ..configured.clone()
    };
    let mut passes =
        |containment: &Containment| try_run(probe.program, probe.args, containment).is_ok();
    if passes(&with_limits(generous)) {
        let limits = settings.limits;
        let candidates = [
            (
                "CHILD_MEMORY_MB",
                limits.memory_bytes >> 20,
                ChildLimits {
                    memory_bytes: generous.memory_bytes,
                    ..limits
                },
            ),
            (
                "CHILD_MAX_PROCESSES",
                limits.max_processes,
                ChildLimits {
                    max_processes: generous.max_processes,
                    ..limits
                },
            ),
            (
                "CHILD_OPEN_FILES",
                limits.open_files,
                ChildLimits {
                    open_files: generous.open_files,
                    ..limits
                },
            ),
            (
                "CHILD_FILE_SIZE_MB",
                limits.file_size_bytes >> 20,
                ChildLimits {
                    file_size_bytes: generous.file_size_bytes,
                    ..limits
                },
            ),
        ];
        for (setting, value, lifted) in candidates {
            if passes(&with_limits(lifted)) {
                return format!(
                    "{setting}={value} is too small: {program} cannot start under it ({err}); raise {setting}"
                );
            }
        }
        return format!(
            "{program} cannot start under the configured CHILD_* limits ({err}); raise them"
        );
    }
    let uncontained = Containment {
        limits: generous,
        identity: None,
        new_network: false,
        namespaces: None,
    };
    if !passes(&uncontained) {
        return format!(
            "{program} does not run even as the server itself ({err}); fix {}",
            probe.setting
        );
    }
    match configured.identity {
        Some(identity) => format!(
            "{identity_setting}={} cannot run {program} ({err}): let that user enter every folder above it and read it (scripts/setup.sh does so for the checkout), choose another {}, or set CHILD_DROP_PRIVILEGES=false to run learners' code as root",
            identity.uid, probe.setting
        ),
        None => format!(
            "{program} cannot run inside the children's namespaces ({err}); set CHILD_DROP_PRIVILEGES=false to run learners' code without them"
        ),
    }
}

/// Covers the database from children of a server that is not root: its whole folder when
/// nothing children must reach lives in it, else its files one by one.
fn hide_database(walls: &mut NamespaceWalls, database: &Path, keep_visible: &[&Path]) {
    let database = std::path::absolute(database).unwrap_or_else(|_| database.to_path_buf());
    let folder = database.parent().map(|folder| {
        folder
            .canonicalize()
            .unwrap_or_else(|_| folder.to_path_buf())
    });
    let reaches_into = |folder: &Path| {
        std::iter::once(walls.scratch.as_path())
            .chain(keep_visible.iter().copied())
            .any(|path| {
                let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
                path.starts_with(folder) || folder.starts_with(&path)
            })
    };
    match folder {
        Some(folder) if folder.parent().is_some() && !reaches_into(&folder) => {
            walls.hidden_folders.push(folder);
        }
        _ => {
            let name = database.as_os_str().to_owned();
            for suffix in ["", "-wal", "-shm", "-journal", ".lock"] {
                let mut file = name.clone();
                file.push(suffix);
                walls.hidden_files.push(PathBuf::from(file));
            }
        }
    }
}

/// Runs `program args` once under `containment`, in a working directory in `scratch`.
fn probe_run(
    scratch: &Path,
    program: &Path,
    args: &[&str],
    containment: &Containment,
) -> Result<(), ProbeFailure> {
    let dir =
        child_work_dir(scratch, "probe-", containment.identity).map_err(ProbeFailure::Start)?;
    let setup = ChildSetup::new(containment, dir.path()).map_err(ProbeFailure::Start)?;
    let mut command = std::process::Command::new(program);
    command
        .args(args)
        .env_clear()
        .envs(child_environment(dir.path()))
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: as in `contained_command`.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, move || setup.apply());
    }
    let output = command.output().map_err(ProbeFailure::Start)?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.trim().lines().last().map(str::to_string);
    Err(ProbeFailure::Exit(last.unwrap_or_else(|| {
        use std::os::unix::process::ExitStatusExt;
        match output.status.signal() {
            Some(signal) => format!("killed by {}", super::describe_signal(signal)),
            None => format!("exit status {}", output.status.code().unwrap_or(-1)),
        }
    })))
}

#[cfg(test)]
mod tests;
