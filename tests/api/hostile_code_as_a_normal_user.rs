//! Hostile code once more, with the server run as a normal (non-root) user, as a deployment
//! without root runs it: children then share the server's uid, so only the user, mount and
//! PID namespaces keep learners' code from signalling the server, reading the database and
//! reading the server's environment. The suite runs as root (as CI does) and starts the
//! server under the user `mlb-server`, made here when missing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::support::hostile::normal_user::{
    assert_fails_closed, assert_still_serving, metta, normal_user_server, python,
    server_on_a_refusing_host, server_user,
};
use crate::support::hostile::probes::{
    assert_database_unread, assert_no_connection, assert_secret_unseen, database_probe,
    environment_probe, metta_exec, network_probe, py_str,
};
use crate::support::{assert_status, text, TestServer};

/// Python that tries to signal the server (and every process it may signal).
fn signal_probe(server_pid: u32) -> String {
    format!(
        "import os, signal
print('UID', os.getuid())
for sig in (0, signal.SIGTERM, signal.SIGKILL):
    try:
        os.kill({server_pid}, sig)
        print('SIGNALLED', int(sig))
    except OSError as e:
        print('REFUSED', int(sig), type(e).__name__)
try:
    os.kill(-1, signal.SIGTERM)
    print('BROADCAST sent')
except OSError as e:
    print('BROADCAST', type(e).__name__)
print('VISIBLE', sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))
print('probe done')"
    )
}

fn assert_server_unsignalled(server: &TestServer, job: &Value, what: &str) {
    let output = text(job, "output");
    assert!(
        output.contains("probe done"),
        "{what}: the probe ran to its end: {job}"
    );
    assert!(
        !output.contains("SIGNALLED"),
        "{what}: the job could signal the server: {job}"
    );
    let (uid, _) = server_user();
    assert!(
        output.contains(&format!("UID {uid}")),
        "{what}: the child runs as the server's own uid (the point of this suite): {job}"
    );
    assert!(
        std::path::Path::new(&format!("/proc/{}", server.pid())).exists(),
        "{what}: the server is gone"
    );
}

#[tokio::test]
async fn as_a_normal_user_python_cannot_signal_the_server() {
    // Arrange
    let server = normal_user_server(&[]).await;

    // Act
    let job = python(&server, &signal_probe(server.pid())).await;

    // Assert
    assert_status(&job, "succeeded", "the signal probe");
    assert_server_unsignalled(&server, &job, "a Python job");
    assert_still_serving(&server).await;
}

#[tokio::test]
async fn as_a_normal_user_metta_cannot_signal_the_server() {
    // Arrange
    let server = normal_user_server(&[]).await;

    // Act
    let job = metta(&server, &metta_exec(&signal_probe(server.pid()))).await;

    // Assert
    assert_status(&job, "succeeded", "the signal probe in the engine");
    assert_server_unsignalled(&server, &job, "MeTTa code");
    assert_still_serving(&server).await;
}

/// Python that tries to change the database behind the server's back.
fn database_write_probe(database: &Path) -> String {
    let folder = database.parent().expect("folder").display().to_string();
    format!(
        "import os
for name in ('test.db', 'test.db-wal', 'intruder.db'):
    path = os.path.join({folder}, name)
    try:
        with open(path, 'ab') as f:
            f.write(b'x')
        print('WROTE', path)
    except OSError as e:
        print('DENIED', path, type(e).__name__)
try:
    os.rename({folder}, {folder} + '-moved')
    print('MOVED')
except OSError as e:
    print('DENIED rename', type(e).__name__)
print('probe done')",
        folder = py_str(&folder),
    )
}

#[tokio::test]
async fn as_a_normal_user_learners_code_cannot_read_or_change_the_database() {
    // Arrange
    let server = normal_user_server(&[]).await;
    let database = server.database_path();
    let (uid, _) = server_user();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&database).expect("database")),
        uid,
        "the database belongs to the server's user, so only the walls keep children out"
    );

    // Act
    let python_read = python(&server, &database_probe(&database)).await;
    let metta_read = metta(&server, &metta_exec(&database_probe(&database))).await;
    let python_write = python(&server, &database_write_probe(&database)).await;
    let metta_write = metta(&server, &metta_exec(&database_write_probe(&database))).await;

    // Assert
    assert_database_unread(&python_read, &database, "a Python job");
    assert_database_unread(&metta_read, &database, "MeTTa code");
    for (job, what) in [
        (&python_write, "a Python job"),
        (&metta_write, "MeTTa code"),
    ] {
        let output = text(job, "output");
        assert!(output.contains("probe done"), "{what}: {job}");
        assert!(
            !output.contains("WROTE") && !output.contains("MOVED"),
            "{what} changed the database or its folder: {job}"
        );
    }
    assert!(database.exists(), "the database is where it was");
    assert!(!database.with_file_name("intruder.db").exists());
    assert_still_serving(&server).await;
}

#[tokio::test]
async fn as_a_normal_user_learners_code_cannot_read_the_server_environment() {
    // Arrange
    let secret = format!("some-secret-value-{}", uuid::Uuid::new_v4().simple());
    let server = normal_user_server(&[("INSTRUCTOR_TOKEN", &secret)]).await;
    let probe = environment_probe(server.pid());

    // Act
    let python_job = python(&server, &probe).await;
    let metta_job = metta(&server, &metta_exec(&probe)).await;

    // Assert
    assert_status(&python_job, "succeeded", "the environment probe");
    assert_secret_unseen(&python_job, &secret, "a Python job");
    assert_status(
        &metta_job,
        "succeeded",
        "the environment probe in the engine",
    );
    assert_secret_unseen(&metta_job, &secret, "MeTTa code");
}

#[tokio::test]
async fn as_a_normal_user_learners_code_cannot_open_network_connections() {
    // Arrange
    let server = normal_user_server(&[]).await;
    let port: u16 = server
        .base
        .rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .expect("port");

    // Act
    let python_job = python(&server, &network_probe(port)).await;
    let metta_job = metta(&server, &metta_exec(&network_probe(port))).await;

    // Assert
    assert_no_connection(&python_job, "a Python job");
    assert_no_connection(&metta_job, "MeTTa code");
}

// ----- a host that refuses the namespaces -------------------------------------------------------

#[tokio::test]
async fn as_a_normal_user_on_a_host_refusing_namespaces_the_network_wall_fails_closed() {
    // Arrange, Act
    let (server, _wrapper) = server_on_a_refusing_host(&[]).await;

    // Assert: the host's refusal (errno 28, ENOSPC) is told apart from a bad setting.
    assert_fails_closed(
        &server,
        &["CHILD_NETWORK_ISOLATION", "refuses", "os error 28"],
    )
    .await;
}

#[tokio::test]
async fn as_a_normal_user_on_a_host_refusing_namespaces_the_uid_wall_fails_closed() {
    // Arrange, Act: the network wall switched off; the namespaces that stand in for another
    // uid cannot be built either.
    let (server, _wrapper) =
        server_on_a_refusing_host(&[("CHILD_NETWORK_ISOLATION", "false")]).await;

    // Assert
    assert_fails_closed(
        &server,
        &[
            "CHILD_DROP_PRIVILEGES",
            "not root",
            "refuses",
            "os error 28",
        ],
    )
    .await;
}

// ----- a fork bomb ----------------------------------------------------------------------------

/// The processes working in each folder of `scratch`, by folder (the server gives each child
/// a folder of its own, and a child's processes keep that folder as their working directory).
fn processes_by_folder(scratch: &Path) -> HashMap<PathBuf, Vec<u32>> {
    let mut by_folder: HashMap<PathBuf, Vec<u32>> = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return by_folder;
    };
    for pid in entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_string_lossy().parse::<u32>().ok())
    {
        let Ok(cwd) = std::fs::read_link(format!("/proc/{pid}/cwd")) else {
            continue;
        };
        // A process still working in a removed folder shows it as `<path> (deleted)`.
        if let Some(folder) = cwd
            .strip_prefix(scratch)
            .ok()
            .and_then(|inside| inside.components().next())
        {
            let name = folder.as_os_str().to_string_lossy();
            let name = name.trim_end_matches(" (deleted)");
            by_folder.entry(scratch.join(name)).or_default().push(pid);
        }
    }
    by_folder
}

/// Each process as `pid ppid cwd: command line`, one a line, for a failure's message.
fn describe(pids: &[u32]) -> String {
    pids.iter()
        .map(|pid| {
            let read =
                |what: &str| std::fs::read(format!("/proc/{pid}/{what}")).unwrap_or_default();
            let stat = String::from_utf8_lossy(&read("stat")).into_owned();
            let parent = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .nth(1)
                .unwrap_or("?")
                .to_owned();
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
            let command = String::from_utf8_lossy(&read("cmdline")).replace('\0', " ");
            format!("{pid} {parent} {}: {command}", cwd.display())
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn as_a_normal_user_a_fork_bomb_is_bounded_and_leaves_nothing() {
    // Arrange
    let server =
        normal_user_server(&[("CHILD_MAX_PROCESSES", "40"), ("RUN_TIMEOUT_SECS", "3")]).await;
    let scratch = server.dir.path().join("scratch");
    let code =
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n";

    // Act
    let submitted = server
        .submit(json!({"language": "python", "code": code}))
        .await;
    // the folder the bomb works in is the one with the most processes.
    let (mut bomb_folder, mut most) = (PathBuf::new(), 0);
    let watch_until = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while std::time::Instant::now() < watch_until {
        for (folder, pids) in processes_by_folder(&scratch) {
            if pids.len() > most {
                (bomb_folder, most) = (folder, pids.len());
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let job = server
        .wait_final(submitted["id"].as_str().expect("id"))
        .await;

    // Assert: the bomb was seen (so the check below means something) and bounded by
    // CHILD_MAX_PROCESSES (plus the few processes of the server's other children);
    assert!(
        (7..=40 + 6).contains(&most),
        "while the fork bomb ran, at most {most} processes worked in one scratch folder"
    );
    // it meets its deadline, and soon afterwards nothing works in its folder any more.
    assert_status(&job, "timed_out", "a fork bomb");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let left = processes_by_folder(&scratch)
            .remove(&bomb_folder)
            .unwrap_or_default();
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "10 s after the fork bomb, {} processes still work in its folder {}:\n{}",
            left.len(),
            bomb_folder.display(),
            describe(&left)
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_still_serving(&server).await;
}
