//! Unit tests of `plan`.

use super::*;

fn walls(scratch: &Path) -> NamespaceWalls {
    NamespaceWalls {
        hidden_folders: Vec::new(),
        hidden_files: Vec::new(),
        scratch: scratch.to_path_buf(),
    }
}

#[test]
fn a_database_folder_of_its_own_is_hidden_whole() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let mut walls = walls(&dir.path().join("scratch"));
    hide_database(
        &mut walls,
        &data.join("x.db"),
        &[&dir.path().join("venv/python")],
    );
    assert_eq!(walls.hidden_folders, vec![data.canonicalize().unwrap()]);
    assert!(walls.hidden_files.is_empty());
}

#[test]
fn a_database_beside_what_children_run_is_hidden_file_by_file() {
    let dir = tempfile::tempdir().unwrap();
    let checkout = dir.path().to_path_buf();
    let mut walls = walls(&dir.path().join("elsewhere/scratch"));
    let database = checkout.join("metta.db");
    hide_database(&mut walls, &database, &[&checkout.join(".venv/bin/python")]);
    assert!(walls.hidden_folders.is_empty());
    assert!(walls.hidden_files.contains(&database));
    assert!(walls.hidden_files.contains(&checkout.join("metta.db-wal")));
    assert!(walls.hidden_files.contains(&checkout.join("metta.db.lock")));
}

// ----- the plan's decisions, with a fake host ---------------------------------------

const PYTHON: &str = "/venv/bin/python";

fn settings(scratch: &Path, drop_privileges: bool, isolate_network: bool) -> ContainmentSettings {
    ContainmentSettings {
        limits: ChildLimits {
            memory_bytes: 64 << 20,
            cpu_secs: Some(5),
            max_processes: 32,
            file_size_bytes: 1 << 20,
            open_files: 64,
        },
        python_identity: Identity {
            uid: 65534,
            gid: 65534,
        },
        python_alternate_identity: Identity {
            uid: 65533,
            gid: 65534,
        },
        engine_identity: Identity {
            uid: 65532,
            gid: 65534,
        },
        drop_privileges,
        isolate_network,
        database: scratch.join("data/metta.db"),
        scratch: scratch.join("scratch"),
    }
}

const ROOT: Host = Host {
    is_root: true,
    uid: 0,
    gid: 0,
};
const USER: Host = Host {
    is_root: false,
    uid: 1000,
    gid: 1000,
};

/// Plans with a fake host on which a child runs unless `fails` says why not.
fn plan_on(
    settings: &ContainmentSettings,
    host: Host,
    fails: impl Fn(&Path, &Containment) -> Option<ProbeFailure>,
) -> ContainmentPlan {
    let probes = [Probe {
        setting: "PYTHON",
        program: Path::new(PYTHON),
        args: &["-c", "import hyperon"],
    }];
    decide_plan(
        settings,
        &probes,
        &[Path::new(PYTHON)],
        host,
        &mut |program, _args, containment| match fails(program, containment) {
            Some(failure) => Err(failure),
            None => Ok(()),
        },
    )
}

fn refused_by_kernel() -> ProbeFailure {
    ProbeFailure::Start(io::Error::from_raw_os_error(libc::EPERM))
}

fn refusal(plan: &ContainmentPlan) -> &str {
    plan.refusal.as_deref().expect("a refusal")
}

#[test]
fn a_root_server_on_a_capable_host_gets_every_wall() {
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path(), true, true);
    let plan = plan_on(&settings, ROOT, |_, _| None);
    assert_eq!(plan.refusal, None);
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
    assert_eq!(plan.python.identity, Some(settings.python_identity));
    assert_eq!(
        plan.python_alternate,
        Some(settings.python_alternate_identity)
    );
    assert_eq!(plan.engine.identity, Some(settings.engine_identity));
    assert!(plan.python.new_network && plan.engine.new_network);
    assert!(
        plan.python.namespaces.is_none(),
        "root uses uids, not namespaces"
    );
    assert_eq!(
        plan.python.limits.memory_bytes,
        settings.limits.memory_bytes
    );
}

#[test]
fn a_normal_user_gets_namespaces_that_hide_the_database_instead_of_uids() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let settings = settings(dir.path(), true, true);
    let plan = plan_on(&settings, USER, |_, _| None);
    assert_eq!(plan.refusal, None);
    assert_eq!(plan.python.identity, None);
    assert_eq!(plan.python_alternate, None);
    let namespaces = plan.python.namespaces.as_ref().expect("namespaces");
    assert_eq!((namespaces.uid, namespaces.gid), (1000, 1000));
    let walls = namespaces.walls.as_ref().expect("walls");
    assert_eq!(
        walls.hidden_folders,
        vec![dir.path().join("data").canonicalize().unwrap()]
    );
    assert!(plan.engine.namespaces.is_some() && plan.python.new_network);
}

#[test]
fn walls_switched_off_are_warnings_not_refusals() {
    let dir = tempfile::tempdir().unwrap();
    for host in [ROOT, USER] {
        let plan = plan_on(&settings(dir.path(), false, false), host, |_, _| None);
        assert_eq!(plan.refusal, None);
        assert_eq!(plan.warnings.len(), 2, "{:?}", plan.warnings);
        assert!(plan.warnings[0].contains("CHILD_NETWORK_ISOLATION=false"));
        assert!(plan.warnings[1].contains("CHILD_DROP_PRIVILEGES=false"));
        assert_eq!(plan.python.identity, None);
        assert!(plan.python.namespaces.is_none());
        assert!(!plan.python.new_network);
    }
}

#[test]
fn a_normal_user_without_network_isolation_still_gets_the_uid_walls() {
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_on(&settings(dir.path(), true, false), USER, |_, _| None);
    assert_eq!(plan.refusal, None);
    assert_eq!(plan.warnings.len(), 1);
    let namespaces = plan.python.namespaces.as_ref().expect("namespaces");
    assert!(namespaces.walls.is_some());
    assert!(!plan.python.new_network);
}

#[test]
fn only_the_network_wall_off_keeps_a_normal_users_network_namespace_in_a_user_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_on(&settings(dir.path(), false, true), USER, |_, _| None);
    assert_eq!(plan.refusal, None);
    assert!(plan.python.new_network);
    let namespaces = plan
        .python
        .namespaces
        .as_ref()
        .expect("a user namespace for it");
    assert!(
        namespaces.walls.is_none(),
        "no walls: privileges are not dropped"
    );
}

#[test]
fn a_host_that_refuses_network_namespaces_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    for host in [ROOT, USER] {
        let plan = plan_on(&settings(dir.path(), true, true), host, |_, containment| {
            containment.new_network.then(refused_by_kernel)
        });
        let refusal = refusal(&plan);
        assert!(
            refusal.starts_with("CHILD_NETWORK_ISOLATION is on"),
            "{refusal}"
        );
        assert!(
            refusal.contains("CHILD_NETWORK_ISOLATION=false"),
            "{refusal}"
        );
        assert_eq!(
            refusal.contains("unprivileged user namespaces"),
            !host.is_root,
            "{refusal}"
        );
        assert!(
            !plan.python.new_network,
            "a wall that failed is not planned"
        );
    }
}

#[test]
fn a_host_that_refuses_user_namespaces_to_a_normal_user_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_on(
        &settings(dir.path(), true, false),
        USER,
        |_, containment| containment.namespaces.is_some().then(refused_by_kernel),
    );
    let refusal = refusal(&plan);
    assert!(
        refusal.starts_with("the server runs as uid 1000, not root"),
        "{refusal}"
    );
    assert!(refusal.contains("this host refuses the user, mount and PID namespaces"));
    assert!(plan.python.namespaces.is_none());
}

#[test]
fn namespaces_that_fail_for_another_reason_also_fail_closed() {
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_on(
        &settings(dir.path(), true, false),
        USER,
        |_, containment| {
            containment
                .namespaces
                .is_some()
                .then(|| ProbeFailure::Exit("mount: no such folder".into()))
        },
    );
    let refusal = refusal(&plan);
    assert!(refusal.contains("cannot build the namespaces"), "{refusal}");
    assert!(refusal.contains("mount: no such folder"), "{refusal}");
}

#[test]
fn the_first_refusal_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_on(&settings(dir.path(), true, true), USER, |_, _| {
        Some(refused_by_kernel())
    });
    assert!(refusal(&plan).starts_with("CHILD_NETWORK_ISOLATION is on"));
}

#[test]
fn a_program_that_fails_only_under_the_configured_limits_blames_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path(), true, true);
    let small = settings.limits.open_files;
    let plan = plan_on(&settings, ROOT, |program, containment| {
        (program == Path::new(PYTHON) && containment.limits.open_files == small)
            .then(|| ProbeFailure::Exit("Too many open files".into()))
    });
    let refusal = refusal(&plan);
    assert!(
        refusal.starts_with(&format!(
            "CHILD_OPEN_FILES={small} is too small: PYTHON={PYTHON} cannot start under it"
        )),
        "{refusal}"
    );
    assert!(refusal.ends_with("raise CHILD_OPEN_FILES"), "{refusal}");
}

#[test]
fn a_program_that_fails_under_limits_together_blames_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path(), true, true);
    let configured = settings.limits;
    let plan = plan_on(&settings, ROOT, |program, containment| {
        let limits = containment.limits;
        let any_configured = limits.memory_bytes == configured.memory_bytes
            || limits.open_files == configured.open_files;
        (program == Path::new(PYTHON) && any_configured)
            .then(|| ProbeFailure::Exit("MemoryError".into()))
    });
    assert!(
        refusal(&plan).contains("cannot start under the configured CHILD_* limits"),
        "{}",
        refusal(&plan)
    );
}

#[test]
fn a_uid_that_cannot_reach_the_program_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path(), true, true);
    let alternate = settings.python_alternate_identity;
    let plan = plan_on(&settings, ROOT, |program, containment| {
        (program == Path::new(PYTHON) && containment.identity == Some(alternate))
            .then(|| ProbeFailure::Exit("Permission denied".into()))
    });
    let refusal = refusal(&plan);
    assert!(
        refusal.starts_with(&format!(
            "CHILD_ALT_UID={} cannot run PYTHON={PYTHON}",
            alternate.uid
        )),
        "{refusal}"
    );
}

#[test]
fn a_program_that_fails_even_uncontained_is_blamed_on_its_setting() {
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_on(&settings(dir.path(), true, true), ROOT, |program, _| {
        (program == Path::new(PYTHON))
            .then(|| ProbeFailure::Exit("No module named 'hyperon'".into()))
    });
    let refusal = refusal(&plan);
    assert!(
        refusal.contains("does not run even as the server itself"),
        "{refusal}"
    );
    assert!(refusal.ends_with("fix PYTHON"), "{refusal}");
}

#[test]
fn a_program_that_fails_only_in_a_normal_users_namespaces_blames_them() {
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_on(
        &settings(dir.path(), true, true),
        USER,
        |program, containment| {
            (program == Path::new(PYTHON) && containment.namespaces.is_some())
                .then(|| ProbeFailure::Exit("cannot open shared object".into()))
        },
    );
    let refusal = refusal(&plan);
    assert!(
        refusal.contains("cannot run inside the children's namespaces"),
        "{refusal}"
    );
}
