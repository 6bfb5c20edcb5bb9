//! Learners' code that tries to reach what it must not (the server's environment, the
//! database, the network), the checks of what it printed, and how to run Python from MeTTa.

use std::path::Path;

use serde_json::Value;

use crate::support::text;

/// A MeTTa program that runs `python` with `exec` inside the engine.
pub fn metta_exec(python: &str) -> String {
    assert!(
        !python.contains('\\'),
        "keep backslashes out of Python run through MeTTa strings"
    );
    let escaped = python.replace('"', "\\\"").replace('\n', "\\n");
    format!("!((py-atom exec) \"{escaped}\")")
}

/// A Python string literal (a JSON string is one, for the plain paths and words used here).
pub fn py_str(text: &str) -> String {
    serde_json::to_string(text).expect("string literal")
}

/// Python that prints what a child can learn of the server's environment.
pub fn environment_probe(server_pid: u32) -> String {
    format!(
        "import json, os
print('KEYS', json.dumps(sorted(os.environ)))
print('VALUES', json.dumps(dict(os.environ)))
for name, pid in (('parent', os.getppid()), ('init', 1), ('server', {server_pid})):
    path = '/proc/%d/environ' % pid
    try:
        with open(path, 'rb') as f:
            print('READ', name, path, f.read())
    except OSError as e:
        print('DENIED', name, path, type(e).__name__)
me = os.getpid()
for entry in os.listdir('/proc'):
    if entry.isdigit() and int(entry) != me:
        try:
            with open('/proc/%s/environ' % entry, 'rb') as f:
                print('READABLE', entry, f.read())
        except OSError:
            pass
print('probe done')"
    )
}

const ALLOWED_ENV: [&str; 6] = [
    "HOME",
    "LANG",
    "PATH",
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONIOENCODING",
    "TMPDIR",
];

pub fn assert_secret_unseen(job: &Value, secret: &str, what: &str) {
    let output = text(job, "output");
    assert!(
        output.contains("probe done"),
        "{what}: the probe ran to its end: {job}"
    );
    let everything = job.to_string();
    assert!(
        !everything.contains(secret),
        "{what}: the job saw the server's INSTRUCTOR_TOKEN: {job}"
    );
    for name in ["INSTRUCTOR_TOKEN", "DATABASE_URL", "sqlite://"] {
        assert!(
            !everything.contains(name),
            "{what}: the job saw {name} of the server's environment: {job}"
        );
    }
    let keys_line = output
        .lines()
        .find_map(|line| line.strip_prefix("KEYS "))
        .unwrap_or_else(|| panic!("{what}: no KEYS line: {job}"));
    let keys: Vec<String> = serde_json::from_str(keys_line).expect("keys JSON");
    for key in &keys {
        assert!(
            ALLOWED_ENV.contains(&key.as_str()),
            "{what}: the child's environment has {key}, beyond {ALLOWED_ENV:?}: {job}"
        );
    }
    for name in ["parent", "server"] {
        assert!(
            output
                .lines()
                .any(|line| line.starts_with(&format!("DENIED {name} "))),
            "{what}: reading the {name}'s /proc/PID/environ must be refused: {job}"
        );
    }
}

/// Python that tries to read the database file, its journal files and its folder.
pub fn database_probe(database: &Path) -> String {
    let file = database.display().to_string();
    let folder = database.parent().expect("folder").display().to_string();
    format!(
        "import os
for path in ({file}, {file} + '-wal', {file} + '-shm'):
    try:
        with open(path, 'rb') as f:
            print('READ', path, f.read(16))
    except OSError as e:
        print('DENIED', path, type(e).__name__)
try:
    print('READ', {folder}, os.listdir({folder}))
except OSError as e:
    print('DENIED', {folder}, type(e).__name__)
print('probe done')",
        file = py_str(&file),
        folder = py_str(&folder),
    )
}

pub fn assert_database_unread(job: &Value, database: &Path, what: &str) {
    let output = text(job, "output");
    assert!(
        output.contains("probe done"),
        "{what}: the probe ran to its end: {job}"
    );
    assert!(
        !output.lines().any(|line| line.starts_with("READ")),
        "{what}: the job read the database or its folder: {job}"
    );
    // A MeTTa session's process has a private /tmp, so a database under /tmp (the tests')
    // is not even there for it.
    let errors: &[&str] = if what.starts_with("MeTTa") {
        &["PermissionError", "FileNotFoundError"]
    } else {
        &["PermissionError"]
    };
    let denied = errors
        .iter()
        .any(|error| output.contains(&format!("DENIED {} {error}", database.display())));
    assert!(
        denied,
        "{what}: opening the database file must raise PermissionError (or, from a private /tmp, FileNotFoundError): {job}"
    );
}

/// Python that tries to connect to the server's own port and to other addresses.
pub fn network_probe(port: u16) -> String {
    format!(
        "import socket
targets = [('127.0.0.1', {port}), ('localhost', {port}), ('127.0.0.1', 22), ('1.1.1.1', 53)]
for host, port in targets:
    try:
        s = socket.create_connection((host, port), timeout=2)
        print('CONNECTED', host, port)
        s.close()
    except OSError as e:
        print('BLOCKED', host, port, type(e).__name__, e)
print('probe done')"
    )
}

pub fn assert_no_connection(job: &Value, what: &str) {
    let output = text(job, "output");
    assert!(
        output.contains("probe done"),
        "{what}: the probe ran to its end: {job}"
    );
    assert!(
        !output.contains("CONNECTED"),
        "{what}: the job opened a connection: {job}"
    );
    assert_eq!(
        output
            .lines()
            .filter(|line| line.starts_with("BLOCKED"))
            .count(),
        4,
        "{what}: every connection is refused or unreachable: {job}"
    );
}
