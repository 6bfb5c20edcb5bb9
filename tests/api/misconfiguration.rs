//! Misconfiguration: the real binary started with each bad setting either refuses to start
//! (non-zero exit, a message naming the setting) or runs safely with nothing lost: a scratch
//! folder that holds the database, a second server on one database, settings out of range,
//! and walls (unprivileged uid, network namespace) the host or a setting does not allow.

use std::io::Read;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{id_of, project_python, python, wait_until_running, TestServer, BINARY};

/// How long a refused start may take (the refusal comes before any engine starts).
const REFUSAL_LIMIT: Duration = Duration::from_secs(60);

/// How a start that should be refused ended.
struct Refusal {
    status: ExitStatus,
    log: String,
}

/// Starts the binary with the tests' usual environment plus `env`, in `dir`, and waits for
/// it to exit; a server that starts listening instead fails the test.
fn start_expecting_refusal(dir: &Path, database: &Path, env: &[(&str, &str)]) -> Refusal {
    let mut command = Command::new(BINARY);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PORT", "0")
        .env("HOST", "127.0.0.1")
        .env("DATABASE_URL", format!("sqlite://{}", database.display()))
        .env("PYTHON", project_python())
        .env("RUST_LOG", "info")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("start the server binary");
    let mut stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the server") {
            break status;
        }
        if started.elapsed() > REFUSAL_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            let log = reader.join().unwrap_or_default();
            panic!("the server did not refuse {env:?} within {REFUSAL_LIMIT:?}; its log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let log = reader.join().unwrap_or_default();
    assert!(
        !log.contains("listening on"),
        "the server started listening with {env:?}: {log}"
    );
    Refusal { status, log }
}

/// Asserts a refusal: a non-zero exit and a log naming `setting`.
fn assert_refused(refusal: &Refusal, setting: &str) {
    assert!(
        !refusal.status.success(),
        "the server exited successfully; its log:\n{}",
        refusal.log
    );
    assert!(
        refusal.log.contains(setting),
        "the refusal does not name {setting}:\n{}",
        refusal.log
    );
}

/// A server that ran one job and stopped cleanly, and the bytes of its database file.
async fn stopped_server_with_one_job() -> (TestServer, String, Vec<u8>) {
    let mut server = TestServer::start().await;
    let job = server.run(python("print('kept')")).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    server.terminate(Duration::from_secs(30));
    let bytes = std::fs::read(server.database_path()).expect("the database file");
    (server, id_of(&job), bytes)
}

// ----- the scratch folder ---------------------------------------------------------------------

#[tokio::test]
async fn scratch_dir_that_holds_the_database_is_refused_and_the_database_is_untouched() {
    // Arrange
    let (mut server, job_id, before) = stopped_server_with_one_job().await;
    let database = server.database_path();
    let folder = database
        .parent()
        .expect("the database's folder")
        .to_path_buf();
    std::fs::write(folder.join("notes.txt"), b"an operator's file").expect("a file of theirs");

    for scratch in [&folder, server.dir.path()] {
        // Act
        let scratch_text = scratch.display().to_string();
        let refusal = start_expecting_refusal(
            server.dir.path(),
            &database,
            &[("SCRATCH_DIR", &scratch_text)],
        );

        // Assert
        assert_refused(&refusal, "SCRATCH_DIR");
        assert!(refusal.log.contains("database"), "{}", refusal.log);
        assert_eq!(
            std::fs::read(&database).expect("the database is still there"),
            before,
            "the database file changed"
        );
        assert_eq!(
            std::fs::read(folder.join("notes.txt")).expect("the operator's file"),
            b"an operator's file"
        );
    }
    server.restart();
    let job = server.wait_final(&job_id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["output"], "kept\n", "{job}");
}

#[tokio::test]
async fn scratch_dir_holding_files_the_server_did_not_make_is_refused_and_they_remain() {
    // Arrange
    let (server, _, _) = stopped_server_with_one_job().await;
    let scratch = tempfile::tempdir().expect("a folder of the operator's");
    std::fs::write(scratch.path().join("report.pdf"), b"keep me").expect("their file");
    let scratch_text = scratch.path().display().to_string();

    // Act
    let refusal = start_expecting_refusal(
        server.dir.path(),
        &server.database_path(),
        &[("SCRATCH_DIR", &scratch_text)],
    );

    // Assert
    assert_refused(&refusal, "SCRATCH_DIR");
    assert!(refusal.log.contains("report.pdf"), "{}", refusal.log);
    assert_eq!(
        std::fs::read(scratch.path().join("report.pdf")).expect("still there"),
        b"keep me"
    );
}

#[tokio::test]
async fn the_scratch_folder_is_made_by_the_server_and_removed_at_a_clean_stop() {
    // Arrange
    let parent = tempfile::tempdir().expect("parent");
    let scratch = parent.path().join("scratch");
    let scratch_text = scratch.display().to_string();
    let mut server = TestServer::start_with(&[("SCRATCH_DIR", &scratch_text)]).await;

    // Act
    let job = server.run(python("print('x')")).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert!(scratch.is_dir(), "the server made SCRATCH_DIR");
    let status = server.terminate(Duration::from_secs(30));

    // Assert
    assert!(status.is_some_and(|status| status.success()), "{status:?}");
    assert!(
        !scratch.exists(),
        "the scratch folder outlived a clean stop: {:?}",
        std::fs::read_dir(&scratch).map(|entries| entries.count())
    );
}

// ----- one server per database ----------------------------------------------------------------

#[tokio::test]
async fn a_second_server_on_the_same_database_is_refused_and_the_first_keeps_its_running_job() {
    // Arrange: the first server runs a job.
    let server = TestServer::start().await;
    let slow = server
        .submit(python("import time; time.sleep(3); print('once')"))
        .await;
    let slow_id = id_of(&slow);
    wait_until_running(&server, &slow_id).await;

    // Act
    let refusal = start_expecting_refusal(server.dir.path(), &server.database_path(), &[]);

    // Assert: refused, naming the first server; the first one's job runs once, undisturbed.
    assert_refused(&refusal, "DATABASE_URL");
    assert!(
        refusal.log.contains(&format!("pid {}", server.pid())),
        "the refusal does not name the first server's pid {}:\n{}",
        server.pid(),
        refusal.log
    );
    let job = server.wait_final(&slow_id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 1, "the running job was re-queued: {job}");
    assert_eq!(job["output"], "once\n", "{job}");
    let after = server
        .run(json!({"language": "python", "code": "print(2)"}))
        .await;
    assert_eq!(
        after["status"], "succeeded",
        "the first server still works: {after}"
    );
}

// ----- settings out of range ------------------------------------------------------------------

#[tokio::test]
async fn each_setting_out_of_its_range_is_refused_naming_it_before_anything_is_touched() {
    let cases: &[(&str, &str)] = &[
        ("RUN_TIMEOUT_SECS", "1000000000000000000"),
        ("RUN_TIMEOUT_SECS", "18446744073709551614"),
        ("RUN_TIMEOUT_SECS", "0"),
        ("LEGACY_WAIT_SECS", "0"),
        ("INSTRUCTOR_TOKEN", " secret "),
        ("INSTRUCTOR_TOKEN", ""),
        ("CHILD_MEMORY_MB", "1"),
        ("CHILD_MEMORY_MB", "30"),
        ("CHILD_MAX_PROCESSES", "0"),
        ("CHILD_OPEN_FILES", "3"),
        ("ENGINE_MEMORY_MB", "100"),
        ("MAX_HEADERS", "0"),
        ("MAX_BATCH_JOBS", "0"),
        ("CHILD_UID", "0"),
        ("CHILD_GID", "4294967295"),
        ("FRONTEND_URL", "example.com"),
        ("HOST", " 127.0.0.1"),
    ];
    for (setting, value) in cases {
        // Arrange
        let dir = tempfile::tempdir().expect("dir");
        let database = dir.path().join("data/x.db");

        // Act
        let refusal = start_expecting_refusal(dir.path(), &database, &[(setting, value)]);

        // Assert
        assert_refused(&refusal, setting);
        assert!(
            !database.parent().expect("folder").exists(),
            "{setting}={value:?}: the refused server made the database folder"
        );
        if *setting == "INSTRUCTOR_TOKEN" && !value.trim().is_empty() {
            assert!(
                !refusal.log.contains(value.trim()),
                "the refusal shows the token: {}",
                refusal.log
            );
        }
    }
}

#[tokio::test]
async fn host_takes_a_name() {
    // Arrange, Act
    let server = TestServer::start_with(&[("HOST", "localhost")]).await;

    // Assert
    let (status, health) = server.get("/health").await;
    assert_eq!(status, 200, "{health}");
}

// ----- fail closed ----------------------------------------------------------------------------

/// A Python job that says who it runs as and whether it can read /etc/shadow.
const WHO_AM_I: &str = "import os
print('uid', os.getuid())
try:
    open('/etc/shadow').read()
    print('read /etc/shadow')
except OSError as e:
    print('shadow refused', type(e).__name__)";

#[tokio::test]
async fn a_python_the_child_uid_cannot_reach_fails_closed_naming_the_setting() {
    // Arrange: PYTHON behind a folder only root may enter.
    let hidden = tempfile::tempdir().expect("a root-only folder");
    std::fs::set_permissions(
        hidden.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .expect("chmod 0700");
    let python = hidden.path().join("python");
    std::os::unix::fs::symlink(project_python(), &python).expect("symlink");
    let python_text = python.display().to_string();

    // Act
    let server = TestServer::start_with(&[("PYTHON", &python_text)]).await;
    let (status, health) = server.get("/health").await;
    let python_job = server.run(python_job(WHO_AM_I)).await;
    let metta_job = server.metta("closed", "!(+ 1 2)").await;

    // Assert: it starts, says why it runs no code, and runs none (never as root).
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "degraded", "{health}");
    let reason = health["reason"].as_str().unwrap_or_default().to_string();
    assert!(
        reason.contains("CHILD_UID") && reason.contains(&python_text),
        "the reason names the setting and the path: {reason}"
    );
    assert!(
        reason.contains("os error 13") || reason.contains("Permission denied"),
        "the reason says the error: {reason}"
    );
    for job in [&python_job, &metta_job] {
        assert_eq!(job["status"], "failed", "{job}");
        assert_eq!(job["errorKind"], "service", "{job}");
        assert!(
            job["error"]
                .as_str()
                .unwrap_or_default()
                .contains("CHILD_UID"),
            "the job says why: {job}"
        );
        assert!(
            !job["output"].as_str().unwrap_or_default().contains("uid 0"),
            "{job}"
        );
    }
    assert!(
        server.logs().contains("learners' code will NOT run"),
        "{}",
        server.logs()
    );
}

#[tokio::test]
async fn a_python_without_hyperon_still_runs_jobs_under_the_unprivileged_uid() {
    // Arrange: a system interpreter without hyperon (the engine cannot start with it).
    let system_python = ["/usr/bin/python3.11", "/usr/bin/python3"]
        .into_iter()
        .find(|path| Path::new(path).exists())
        .expect("a system python3");

    // Act
    let server = TestServer::start_with(&[("PYTHON", system_python)]).await;
    let job = server.run(python_job(WHO_AM_I)).await;

    // Assert: the missing hyperon is not taken for a wall that cannot be built.
    assert_eq!(job["status"], "succeeded", "{job}\n{}", server.logs());
    let output = job["output"].as_str().unwrap_or_default();
    assert!(output.contains("uid 65534"), "{job}");
    assert!(output.contains("shadow refused"), "{job}");
    let (_, health) = server.get("/health").await;
    assert_eq!(health["status"], "ok", "{health}");
}

#[tokio::test]
async fn opting_out_of_dropping_privileges_is_explicit_and_said() {
    // Arrange, Act
    let server = TestServer::start_with(&[("CHILD_DROP_PRIVILEGES", "false")]).await;
    let (_, health) = server.get("/health").await;

    // Assert
    assert_eq!(health["status"], "ok", "{health}");
    assert!(
        server.logs().contains("CHILD_DROP_PRIVILEGES=false"),
        "the operator's choice is said at start-up: {}",
        server.logs()
    );
}

fn python_job(code: &str) -> serde_json::Value {
    json!({"language": "python", "code": code})
}

#[tokio::test]
async fn a_database_path_that_cannot_be_used_is_refused_naming_it_with_its_cause_said_once() {
    // Arrange: the database's "folder" is a file.
    let dir = tempfile::tempdir().expect("dir");
    let not_a_folder = dir.path().join("plain-file");
    std::fs::write(&not_a_folder, b"").expect("a file");
    let database = not_a_folder.join("x.db");

    // Act
    let refusal = start_expecting_refusal(dir.path(), &database, &[]);

    // Assert
    assert_refused(&refusal, "DATABASE_URL");
    assert_eq!(
        refusal.log.matches("os error 20").count(),
        1,
        "the cause is said once: {}",
        refusal.log
    );
}

// ----- permissions ----------------------------------------------------------------------------

#[tokio::test]
async fn a_database_beside_what_children_run_leaves_that_folder_open_to_them() {
    // Arrange: a folder (like a checkout's root) that holds the database and the interpreter
    // children run.
    let system_python = ["/usr/bin/python3.11", "/usr/bin/python3"]
        .into_iter()
        .find(|path| Path::new(path).exists())
        .expect("a system python3");
    let checkout = tempfile::tempdir().expect("checkout");
    std::fs::set_permissions(
        checkout.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod 0755");
    let python = checkout.path().join("python");
    std::os::unix::fs::symlink(system_python, &python).expect("symlink");
    let database = checkout.path().join("metta.db");
    let url = format!("sqlite://{}", database.display());
    let python_text = python.display().to_string();

    // Act
    let server = TestServer::start_with(&[("DATABASE_URL", &url), ("PYTHON", &python_text)]).await;
    let job = server.run(python_job(WHO_AM_I)).await;

    // Assert: the folder keeps its mode, children still run from it, unprivileged; the
    // database itself is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &Path| {
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(
        mode(checkout.path()),
        0o755,
        "the folder's mode was changed"
    );
    assert_eq!(mode(&database), 0o600, "the database is private");
    assert_eq!(job["status"], "succeeded", "{job}\n{}", server.logs());
    assert!(
        job["output"]
            .as_str()
            .unwrap_or_default()
            .contains("uid 65534"),
        "{job}"
    );
}

#[tokio::test]
async fn a_process_limit_too_small_for_the_child_uid_fails_closed_naming_that_limit() {
    // Arrange: the Python uid already has ten processes, more than CHILD_MAX_PROCESSES allows.
    let base = 50_000 + (uuid::Uuid::new_v4().as_u128() % 3_000) as u32 * 3;
    let mut sleepers: Vec<std::process::Child> = (0..10)
        .map(|_| {
            use std::os::unix::process::CommandExt;
            Command::new("sleep")
                .arg("120")
                .uid(base)
                .gid(65534)
                .spawn()
                .expect("a process of the Python uid")
        })
        .collect();
    let uids = [base, base + 1, base + 2].map(|uid| uid.to_string());

    // Act
    let server = TestServer::start_with(&[
        ("CHILD_UID", &uids[0]),
        ("CHILD_ALT_UID", &uids[1]),
        ("ENGINE_UID", &uids[2]),
        ("CHILD_MAX_PROCESSES", "8"),
    ])
    .await;
    let (_, health) = server.get("/health").await;
    let job = server.run(python_job(WHO_AM_I)).await;
    for sleeper in &mut sleepers {
        let _ = sleeper.kill();
        let _ = sleeper.wait();
    }

    // Assert: blamed on the limit (the probe passes with the server's own limits), not on
    // the uid or the host.
    assert_eq!(health["status"], "degraded", "{health}");
    let reason = health["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("CHILD_MAX_PROCESSES=8 is too small"),
        "the reason names the limit: {reason}"
    );
    assert_eq!(job["status"], "failed", "{job}");
    assert!(
        job["error"]
            .as_str()
            .unwrap_or_default()
            .contains("CHILD_MAX_PROCESSES"),
        "{job}"
    );
}
