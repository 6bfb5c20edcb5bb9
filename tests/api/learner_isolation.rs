//! Learners never see or touch each other's work: from one MeTTa session (through `py-atom`)
//! and from Python jobs, hostile code tries to find another learner's live session — in the
//! Python heap, by walking /proc (environment, command line, memory, descriptors), by tracing
//! or killing its process, and through files left in /tmp and /dev/shm. Every attempt fails,
//! and the victim's next results are exactly what its history gives, from the same process.
//!
//! The victim's secret is a symbol `Q7Z` + 12 digits that only the victim's code holds; the
//! probes know only its SHA-256, so a probe's own memory never holds the secret.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::hostile_code::{assert_status, fresh_uids, text};
use crate::support::TestServer;

/// A server whose Python jobs and engine run under uids no other test uses: the attacks below
/// kill and trace whatever their uid may reach, which must be this server's children only.
async fn start_server() -> TestServer {
    let ([python, python_alt], engine) = fresh_uids();
    let (python, python_alt, engine) = (
        python.to_string(),
        python_alt.to_string(),
        engine.to_string(),
    );
    TestServer::start_with(&[
        ("CHILD_UID", python.as_str()),
        ("CHILD_ALT_UID", python_alt.as_str()),
        ("ENGINE_UID", engine.as_str()),
    ])
    .await
}

/// A secret no other process on the machine holds, and its SHA-256 (hex).
fn fresh_secret() -> (String, String) {
    let digits: u64 = rand_digits();
    let secret = format!("Q7Z{digits:012}");
    let hash = hex(&Sha256::digest(secret.as_bytes()));
    (secret, hash)
}

fn rand_digits() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default();
    ((nanos as u64) ^ (u64::from(std::process::id()) << 20)) % 1_000_000_000_000
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// MeTTa that runs `python` through `py-atom`, as a module of its own (`exec` with one
/// globals dict, so its functions see its names).
fn metta_exec(python: &str) -> String {
    let literal = |text: &str| serde_json::to_string(text).expect("string literal");
    format!(
        "!((py-atom exec) {})",
        literal(&format!("exec({}, {{}})", literal(python)))
    )
}

/// The victim: a session whose space holds the secret; returns its process id.
async fn start_victim(server: &TestServer, secret: &str) -> String {
    let defined = server
        .metta("victim", &format!("(= (secret) {secret})"))
        .await;
    assert_status(&defined, "succeeded", "the victim's definition");
    victim_state(server, secret).await
}

/// The victim's next results: exactly what its history gives; returns the pid of the process
/// that holds its session (the same before and after an attack means nothing ended it).
async fn victim_state(server: &TestServer, secret: &str) -> String {
    let job = server
        .metta("victim", "!(secret)\n!((py-atom os.getpid))")
        .await;
    assert_status(&job, "succeeded", "the victim's run");
    let result = text(&job, "result");
    let mut lines = result.lines();
    assert_eq!(
        lines.next(),
        Some(format!("[{secret}]").as_str()),
        "the victim's space is exactly its history: {job}"
    );
    lines.next().expect("the victim's pid").to_string()
}

/// Python that hunts for the secret: it scans every readable memory of every process it can
/// open (its own included: a session living in the same process is found there), reads
/// environments and command lines, opens the descriptors of and tries to trace every MeTTa
/// engine process (other learners' Python jobs on the host are not its concern), and asks every
/// hyperon `MeTTa()` in its own heap for `(secret)`, then plants another. Prints `LEAK ...`
/// for each success and `probe done` at its end.
fn hunting_probe(hash: &str) -> String {
    format!(
        r#"import ctypes, gc, hashlib, os, re, time
target = {hash:?}
pattern = re.compile(rb"Q7Z[0-9]{{12}}")
def check(where, data):
    for match in pattern.finditer(data):
        if hashlib.sha256(match.group(0)).hexdigest() == target:
            print("LEAK", where)
            return True
    return False
me = os.getpid()
budget = time.monotonic() + 6
libc = ctypes.CDLL(None, use_errno=True)
for name in os.listdir("/proc"):
    if not name.isdigit() or time.monotonic() > budget:
        continue
    pid = int(name)
    for part in ("environ", "cmdline"):
        try:
            with open("/proc/%d/%s" % (pid, part), "rb") as f:
                check("%s of %d" % (part, pid), f.read())
        except OSError:
            pass
    try:
        engine = b"engine" in open("/proc/%d/cmdline" % pid, "rb").read().split(b"\0")
    except OSError:
        engine = False
    if pid != me and engine:
        try:
            for fd in os.listdir("/proc/%d/fd" % pid):
                try:
                    os.close(os.open("/proc/%d/fd/%s" % (pid, fd), os.O_RDONLY | os.O_NONBLOCK))
                    print("LEAK opened fd", fd, "of", pid)
                except OSError:
                    pass
        except OSError:
            pass
        if libc.ptrace(16, pid, None, None) == 0:
            print("LEAK traced", pid)
            libc.ptrace(17, pid, None, None)
    try:
        maps = open("/proc/%d/maps" % pid).read().splitlines()
        mem = open("/proc/%d/mem" % pid, "rb", buffering=0)
    except OSError:
        continue
    found = False
    for line in maps:
        fields = line.split()
        if found or len(fields) < 2 or not fields[1].startswith("rw") or time.monotonic() > budget:
            continue
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if end - start > (64 << 20):
            continue
        try:
            mem.seek(start)
            found = check("memory of %d" % pid, mem.read(end - start))
        except (OSError, ValueError, OverflowError):
            pass
    mem.close()
try:
    import hyperon
    for space in [o for o in gc.get_objects() if isinstance(o, hyperon.MeTTa)]:
        try:
            if check("a MeTTa() in the heap", str(space.run("!(secret)")).encode()):
                space.run("(= (secret) hacked)")
        except Exception:
            pass
except ImportError:
    pass
print("probe done")
"#
    )
}

fn assert_no_leak(job: &Value, what: &str) {
    let output = text(job, "output");
    assert!(
        output.contains("probe done"),
        "{what}: the probe ran to its end: {job}"
    );
    let leaks: Vec<&str> = output
        .lines()
        .filter(|line| line.starts_with("LEAK"))
        .collect();
    assert!(
        leaks.is_empty(),
        "{what} reached another learner's session: {leaks:?}"
    );
}

/// The probe finds what it can reach: without this, a probe that found nothing anywhere
/// would pass the tests below.
#[tokio::test]
async fn the_hunting_probe_finds_a_secret_within_its_reach() {
    // Arrange
    let server = start_server().await;
    let (secret, hash) = fresh_secret();
    let (start, digits) = secret.split_at(3);
    // The secret in the Python job's own memory (built at run time, so only there), and in
    // the probing session's own space.
    let holding = format!("held = ''.join([{start:?}, {digits:?}])\n");
    let defined = server
        .metta("self-prober", &format!("(= (secret) {secret})"))
        .await;
    assert_status(&defined, "succeeded", "the prober's own definition");

    // Act
    let from_python = server
        .run(serde_json::json!({
            "language": "python",
            "code": format!("{holding}{}", hunting_probe(&hash)),
        }))
        .await;
    let from_session = server
        .metta("self-prober", &metta_exec(&hunting_probe(&hash)))
        .await;

    // Assert
    for (job, what) in [(&from_python, "a Python job"), (&from_session, "a session")] {
        let output = text(job, "output");
        assert!(
            output.contains("probe done") && output.lines().any(|line| line.starts_with("LEAK")),
            "{what}: the probe must find the secret it holds itself: {job}"
        );
    }
}

#[tokio::test]
async fn a_session_cannot_find_another_learners_session_in_its_heap_memory_or_proc() {
    // Arrange
    let server = start_server().await;
    let (secret, hash) = fresh_secret();
    let victim_pid = start_victim(&server, &secret).await;

    // Act: another learner's session hunts for it.
    let hunt = server
        .metta("attacker", &metta_exec(&hunting_probe(&hash)))
        .await;

    // Assert
    assert_status(&hunt, "succeeded", "the hunt from a session");
    assert_no_leak(&hunt, "a MeTTa session");
    assert_eq!(
        victim_state(&server, &secret).await,
        victim_pid,
        "the victim's session goes on in the same process"
    );
}

#[tokio::test]
async fn a_python_job_cannot_find_a_learners_session() {
    // Arrange
    let server = start_server().await;
    let (secret, hash) = fresh_secret();
    let victim_pid = start_victim(&server, &secret).await;

    // Act
    let hunt = server
        .run(serde_json::json!({"language": "python", "code": hunting_probe(&hash)}))
        .await;

    // Assert
    assert_status(&hunt, "succeeded", "the hunt from a Python job");
    assert_no_leak(&hunt, "a Python job");
    assert_eq!(
        victim_state(&server, &secret).await,
        victim_pid,
        "the victim's session goes on in the same process"
    );
}

/// Python that sends SIGKILL to every process it may signal (`kill(-1)`: all of its uid),
/// then to its own process, which must hold no other learner's session; prints what it
/// killed.
const KILL_EVERYTHING: &str = r#"import os, signal, sys
if os.getuid() == 0:
    print("ROOT: a learner's code runs as root; not killing the host's processes")
    sys.exit(1)
me = os.getpid()
for name in os.listdir("/proc"):
    if name.isdigit() and int(name) not in (me, os.getppid()):
        try:
            os.kill(int(name), signal.SIGKILL)
            print("KILLED", name)
        except OSError:
            pass
print("kill done", flush=True)
try:
    os.kill(-1, signal.SIGKILL)
except OSError:
    pass
os.kill(os.getpid(), signal.SIGKILL)
"#;

#[tokio::test]
async fn a_session_or_python_job_killing_every_process_it_can_leaves_other_sessions_alone() {
    // Arrange
    let server = start_server().await;
    let (secret, _) = fresh_secret();
    let victim_pid = start_victim(&server, &secret).await;

    // Act: a learner's session and a learner's Python job each kill whatever they can.
    let from_session = server.metta("attacker", &metta_exec(KILL_EVERYTHING)).await;
    let from_python = server
        .run(serde_json::json!({"language": "python", "code": KILL_EVERYTHING}))
        .await;

    // Assert: whatever became of the attackers, the victim's process and space are intact.
    for job in [&from_session, &from_python] {
        assert!(
            !text(job, "output").contains("ROOT"),
            "learners' code must never run as root: {job}"
        );
        assert!(
            text(job, "output").contains("kill done"),
            "the attack ran: {job}"
        );
    }
    assert_eq!(
        victim_state(&server, &secret).await,
        victim_pid,
        "the victim's session was not ended (its process is the same)"
    );
    let attacker = server.metta("attacker", "!(+ 1 2)").await;
    assert_eq!(
        attacker["result"], "[3]\n",
        "the attacker's session goes on: {attacker}"
    );
}

/// Python that leaves a file in /tmp and one in /dev/shm.
fn leave_files(name: &str) -> String {
    format!(
        r#"for folder in ("/tmp", "/dev/shm"):
    with open(folder + "/{name}", "w") as f:
        f.write("left by another learner")
print("left")"#
    )
}

/// Python that tries to read those files; prints `FOUND <path>` for each it can read.
fn look_for_files(name: &str) -> String {
    format!(
        r#"import os
for folder in ("/tmp", "/dev/shm"):
    try:
        with open(folder + "/{name}") as f:
            print("FOUND", folder, f.read())
    except OSError as e:
        print("MISSING", folder, type(e).__name__)
print("look done")"#
    )
}

fn assert_files_unseen(job: &Value, what: &str) {
    assert_status(job, "succeeded", what);
    let output = text(job, "output");
    assert!(output.contains("look done"), "{what}: {job}");
    assert!(
        !output.contains("FOUND"),
        "{what} read a file another learner left: {job}"
    );
}

#[tokio::test]
async fn files_left_in_tmp_or_dev_shm_by_one_learner_are_not_seen_by_another() {
    // Arrange
    let server = start_server().await;
    let by_session = format!("mlb-left-by-session-{}", rand_digits());
    let by_python = format!("mlb-left-by-python-{}", rand_digits());
    let python = |code: String| {
        let server = &server;
        async move {
            server
                .run(serde_json::json!({"language": "python", "code": code}))
                .await
        }
    };

    // Act: a session and a Python job each leave files; other sessions and a Python job look.
    let left = server
        .metta("first", &metta_exec(&leave_files(&by_session)))
        .await;
    assert!(text(&left, "output").contains("left"), "{left}");
    let left = python(leave_files(&by_python)).await;
    assert!(text(&left, "output").contains("left"), "{left}");
    let other_session_sees_session = server
        .metta("second", &metta_exec(&look_for_files(&by_session)))
        .await;
    let session_sees_python = server
        .metta("second", &metta_exec(&look_for_files(&by_python)))
        .await;
    let python_sees_session = python(look_for_files(&by_session)).await;

    // Assert
    assert_files_unseen(&other_session_sees_session, "another session");
    assert_files_unseen(&session_sees_python, "a session (a Python job's files)");
    assert_files_unseen(&python_sees_session, "a Python job (a session's files)");
    let own = server
        .metta("first", &metta_exec(&look_for_files(&by_session)))
        .await;
    assert!(
        text(&own, "output").contains("FOUND /tmp"),
        "the session that left them still reads its own files (the probe works): {own}"
    );
    for folder in ["/tmp", "/dev/shm"] {
        let _ = std::fs::remove_file(format!("{folder}/{by_python}"));
    }
}

/// Python that leaves a thread printing in the background of its session's process, and a
/// second learner's run that starts while it prints.
const BACKGROUND_PRINTER: &str = r#"import os, sys, threading, time
def shout():
    while True:
        os.write(1, b"INJECTED-OUT\n")
        os.write(2, b"INJECTED-ERR\n")
        print("INJECTED-PRINT", flush=True)
        time.sleep(0.002)
threading.Thread(target=shout, daemon=True).start()
print("printer started")
"#;

#[tokio::test]
async fn a_thread_left_printing_by_one_learner_never_reaches_anothers_output() {
    // Arrange
    let server = start_server().await;
    let started = server
        .metta("printer", &metta_exec(BACKGROUND_PRINTER))
        .await;
    assert_status(&started, "succeeded", "the printer's run");

    // Act: another learner's runs while the thread prints.
    let mut runs = Vec::new();
    for round in 0..20 {
        runs.push(
            server
                .metta(
                    "quiet",
                    &format!("!(+ {round} 1)\n!((py-atom time.sleep) 0.01)"),
                )
                .await,
        );
    }

    // Assert
    for (round, job) in runs.iter().enumerate() {
        assert_status(job, "succeeded", "the quiet learner's run");
        for field in ["output", "stdout", "stderr", "result"] {
            let Some(value) = job.get(field).and_then(Value::as_str) else {
                continue;
            };
            assert!(
                !value.contains("INJECTED"),
                "round {round}: another learner's thread wrote into this job's {field}: {job}"
            );
        }
        assert!(
            text(job, "result").starts_with(&format!("[{}]", round + 1)),
            "round {round}: {job}"
        );
    }
}
