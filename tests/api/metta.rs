//! MeTTa jobs against the real hyperon engine: sessions and their isolation, the replay
//! invariant (a session's state equals replaying its history in order in a fresh `MeTTa()`),
//! editing cells in place, recovery after a server restart, an engine kill and an engine crash,
//! deadlines (stepwise and the hard backstop), output capture, parse errors, and fidelity: a
//! job's `result` is exactly what hyperon's `metta-py` prints for the same program.
//!
//! The reference is always `direct_hyperon_run`, hyperon run directly outside the service.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use metta_learner_backend::learner_messages::{
    ENGINE_DIED, ENGINE_UNAVAILABLE, HYPERON_PANICKED, SESSION_REBUILT,
};
use serde_json::{json, Value};

use crate::support::{
    bang_count, direct_hyperon_run, last_lines, send_signal, Rng, Signal, TestServer,
};

// ----- helpers ----------------------------------------------------------------------------

/// Runs `code` as the cell `code_id` of `session` and returns the final job.
async fn run_cell(server: &TestServer, session: &str, code_id: &str, code: &str) -> Value {
    server
        .run(json!({
            "language": "metta",
            "code": code,
            "sessionId": session,
            "codeId": code_id,
        }))
        .await
}

fn assert_succeeded(job: &Value) {
    assert_eq!(
        job["status"], "succeeded",
        "the job did not succeed: {job:#}"
    );
}

/// The job's `results` as lists of atom strings (panics, printing the job, when absent).
fn results_of(job: &Value) -> Vec<Vec<String>> {
    serde_json::from_value(job["results"].clone())
        .unwrap_or_else(|err| panic!("the job has no list of results ({err}): {job:#}"))
}

/// `results` in the shape a test writes them: `&[&["2"], &["a", "b"]]`.
fn expected(results: &[&[&str]]) -> Vec<Vec<String>> {
    results
        .iter()
        .map(|atoms| atoms.iter().map(|atom| atom.to_string()).collect())
        .collect()
}

fn text<'a>(job: &'a Value, field: &str) -> &'a str {
    job[field]
        .as_str()
        .unwrap_or_else(|| panic!("the job has no text field {field}: {job:#}"))
}

/// What `code` prints for its own `!` expressions when run directly in hyperon after `cells`
/// (the session's history), in one fresh `MeTTa()`. `code` must not print (`println!`):
/// printed output would come before every result line.
fn direct_result_after(cells: &[String], code: &str) -> String {
    let mut program = cells.join("\n");
    program.push('\n');
    program.push_str(code);
    last_lines(&direct_hyperon_run(&program), bang_count(code))
}

/// The session's history as the service shows it (`GET /api/v1/sessions/{id}`), in order:
/// (codeId, code). A session never used has none.
async fn stored_history(server: &TestServer, session: &str) -> Vec<(String, String)> {
    let (status, body) = server.get(&format!("/api/v1/sessions/{session}")).await;
    if status == 404 {
        return Vec::new();
    }
    assert_eq!(status, 200, "{body}");
    body["cells"]
        .as_array()
        .expect("cells")
        .iter()
        .map(|cell| {
            (
                cell["codeId"].as_str().expect("codeId").to_string(),
                cell["code"].as_str().expect("code").to_string(),
            )
        })
        .collect()
}

/// `history` as a list of (codeId, code) with borrowed strings, for assertions.
fn cells(history: &[(&str, &str)]) -> Vec<(String, String)> {
    history
        .iter()
        .map(|(id, code)| (id.to_string(), code.to_string()))
        .collect()
}

/// Sends SIGKILL to the server's engine child and waits until it is gone; returns its pid.
async fn kill_engine(server: &TestServer) -> u32 {
    let pid = wait_for_engine(server, None).await;
    assert!(
        send_signal(pid, Signal::KILL),
        "could not kill the engine {pid}"
    );
    let started = Instant::now();
    while server.engine_pid() == Some(pid) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the engine {pid} did not die"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pid
}

/// Waits (up to 30 s) for an engine child other than `not`, and returns its pid.
async fn wait_for_engine(server: &TestServer, not: Option<u32>) -> u32 {
    let started = Instant::now();
    loop {
        if let Some(pid) = server.engine_pid() {
            if Some(pid) != not {
                return pid;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no engine child (other than {not:?}) appeared; server log:\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ----- sessions -----------------------------------------------------------------------------

#[tokio::test]
async fn metta_sessions_are_isolated() {
    // Arrange
    let server = TestServer::start().await;
    let alpha = server.metta("alpha", "(= (f) 1)").await;
    let beta = server.metta("beta", "(= (f) 2)").await;
    assert_succeeded(&alpha);
    assert_succeeded(&beta);

    // Act
    let in_alpha = server.metta("alpha", "!(f)").await;
    let in_beta = server.metta("beta", "!(f)").await;
    let in_default = server
        .run(json!({"language": "metta", "code": "!(f)"}))
        .await;

    // Assert
    assert_succeeded(&in_alpha);
    assert_eq!(results_of(&in_alpha), expected(&[&["1"]]), "{in_alpha:#}");
    assert_eq!(in_alpha["result"], "[1]\n", "{in_alpha:#}");
    assert_succeeded(&in_beta);
    assert_eq!(results_of(&in_beta), expected(&[&["2"]]), "{in_beta:#}");
    assert_eq!(in_beta["result"], "[2]\n", "{in_beta:#}");
    assert_succeeded(&in_default);
    assert_eq!(in_default["sessionId"], "default", "{in_default:#}");
    assert_eq!(
        results_of(&in_default),
        expected(&[&["(f)"]]),
        "the default session must not see other sessions' definitions: {in_default:#}"
    );
}

// ----- the replay invariant -------------------------------------------------------------------

/// One random cell that always succeeds and never prints: definitions, facts, additions to
/// the space and calls.
fn random_cell(rng: &mut Rng) -> String {
    let parts = 1 + rng.below(2);
    (0..parts)
        .map(|_| match rng.below(5) {
            0 => format!("(= (g {}) {})", 1 + rng.below(3), rng.below(100)),
            1 => format!("(fact {})\n(fact {})", rng.below(50), rng.below(50)),
            2 => format!("!(add-atom &self (k {}))", rng.below(100)),
            3 => format!(
                "(= (g {}) (collapse (match &self (fact $x) $x)))",
                4 + rng.below(2)
            ),
            _ => format!("!(collapse (g {}))", 1 + rng.below(5)),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

const REPLAY_PROBE: &str = "!(collapse (match &self (k $x) $x))\n\
     !(collapse (match &self (fact $x) $x))\n\
     !(collapse (g 1))\n\
     !(collapse (g 2))\n\
     !(collapse (g 3))\n\
     !(collapse (g 4))\n\
     !(collapse (g 5))";

#[tokio::test]
async fn metta_session_state_equals_replaying_its_history() {
    // Arrange: one live atomspace at most, so switching sessions evicts and rebuilds them.
    let mut server = TestServer::start_with(&[("MAX_LIVE_SESSIONS", "1")]).await;
    let sessions = ["replay-a", "replay-b"];
    let mut model: HashMap<&str, Vec<(String, String)>> = HashMap::new();
    let mut rng = Rng(0x5EED_F00D);
    let mut next_id = 0;
    let mut fresh_id = |prefix: &str| {
        next_id += 1;
        format!("{prefix}-{next_id}")
    };
    let mut probes = 0;
    let mut restarts = 0;
    let mut edits = 0;

    for step in 0..25 {
        let session = sessions[rng.below(2) as usize];
        let history = model.entry(session).or_default();

        // Act: one operation.
        if step % 9 == 8 {
            server.kill9();
            server.restart();
            restarts += 1;
        } else if !history.is_empty() && rng.below(3) == 0 {
            let at = rng.below(history.len() as u64) as usize;
            let code_id = history[at].0.clone();
            let code = random_cell(&mut rng);
            let job = run_cell(&server, session, &code_id, &code).await;
            // Assert: the edited cell's own results are those of the cells before it, then it.
            let before: Vec<String> = history[..at].iter().map(|(_, c)| c.clone()).collect();
            let expected_result = direct_result_after(&before, &code);
            assert_succeeded(&job);
            assert_eq!(
                job["result"], expected_result,
                "step {step}: editing cell {code_id} of {session} (at {at}) to:\n{code}\njob: {job:#}"
            );
            history[at].1 = code;
            edits += 1;
        } else {
            let code_id = fresh_id("cell");
            let code = random_cell(&mut rng);
            let job = run_cell(&server, session, &code_id, &code).await;
            let before: Vec<String> = history.iter().map(|(_, c)| c.clone()).collect();
            let expected_result = direct_result_after(&before, &code);
            assert_succeeded(&job);
            assert_eq!(
                job["result"], expected_result,
                "step {step}: new cell {code_id} of {session}:\n{code}\njob: {job:#}"
            );
            history.push((code_id, code));
        }

        // Assert: at checkpoints, probe both sessions against a direct replay of the model.
        if step % 5 == 4 || step == 24 {
            for session in sessions {
                let history = model.entry(session).or_default();
                let code_id = fresh_id("probe");
                let job = run_cell(&server, session, &code_id, REPLAY_PROBE).await;
                let replay: Vec<String> = history.iter().map(|(_, c)| c.clone()).collect();
                let expected_result = direct_result_after(&replay, REPLAY_PROBE);
                assert_succeeded(&job);
                assert_eq!(
                    job["result"], expected_result,
                    "step {step}: probe of {session} differs from replaying its history:\n{}\njob: {job:#}",
                    replay.join("\n")
                );
                history.push((code_id, REPLAY_PROBE.to_string()));
                probes += 1;
            }
        }
    }

    // Assert: the stored histories are the model's, and the run exercised every operation.
    for session in sessions {
        assert_eq!(
            stored_history(&server, session).await,
            model[session],
            "the stored history of {session} differs from the model"
        );
    }
    assert!(
        restarts >= 2 && edits >= 3 && probes >= 10,
        "the sequence exercised too little: {restarts} restarts, {edits} edits, {probes} probes"
    );
}

// ----- editing a cell in place ---------------------------------------------------------------

#[tokio::test]
async fn metta_rerunning_a_cell_replaces_it_in_place() {
    // Arrange
    let mut server = TestServer::start().await;
    let session = "edit";
    let a = run_cell(&server, session, "a", "(= (h) 1)").await;
    let b = run_cell(&server, session, "b", "!(h)").await;
    assert_succeeded(&a);
    assert_succeeded(&b);
    assert_eq!(results_of(&b), expected(&[&["1"]]), "{b:#}");

    // Act
    let edited = run_cell(&server, session, "a", "(= (h) 2)").await;
    let probe = run_cell(&server, session, "probe", "!(h)").await;

    // Assert
    assert_succeeded(&edited);
    assert_eq!(edited["codeId"], "a", "{edited:#}");
    assert_succeeded(&probe);
    assert_eq!(
        results_of(&probe),
        expected(&[&["2"]]),
        "the old definition must be gone, not kept beside the new one: {probe:#}"
    );
    assert_eq!(probe["result"], "[2]\n", "{probe:#}");
    assert_eq!(
        stored_history(&server, session).await,
        cells(&[("a", "(= (h) 2)"), ("b", "!(h)"), ("probe", "!(h)")]),
        "the edited cell keeps its place"
    );

    // Act: the same after a restart, when the session is rebuilt from the stored history.
    server.kill9();
    server.restart();
    let after_restart = run_cell(&server, session, "probe-2", "!(h)").await;

    // Assert
    assert_succeeded(&after_restart);
    assert_eq!(
        results_of(&after_restart),
        expected(&[&["2"]]),
        "{after_restart:#}"
    );
}

// ----- recovery -------------------------------------------------------------------------------

#[tokio::test]
async fn metta_session_survives_a_server_restart() {
    // Arrange
    let mut server = TestServer::start().await;
    let session = "persist";
    let define = server.metta(session, "(= (persist) 42)").await;
    let add = server
        .metta(session, "!(add-atom &self (stored thing))")
        .await;
    assert_succeeded(&define);
    assert_succeeded(&add);

    // Act
    server.kill9();
    server.restart();
    let probe_code = "!(persist)\n!(match &self (stored $x) $x)";
    let probe = server.metta(session, probe_code).await;

    // Assert
    assert_succeeded(&probe);
    assert_eq!(
        results_of(&probe),
        expected(&[&["42"], &["thing"]]),
        "the restarted server must rebuild the session from its history: {probe:#}"
    );
    let history = ["(= (persist) 42)", "!(add-atom &self (stored thing))"].map(String::from);
    assert_eq!(
        probe["result"],
        direct_result_after(&history, probe_code),
        "{probe:#}"
    );
}

#[tokio::test]
async fn metta_session_survives_an_engine_kill() {
    // Arrange
    let server = TestServer::start().await;
    let session = "survivor";
    let define = server.metta(session, "(= (survivor) here)").await;
    let print = server
        .metta(session, "!(println! \"printed-by-history\")")
        .await;
    assert_succeeded(&define);
    assert_succeeded(&print);

    // Act
    let killed = kill_engine(&server).await;
    let next = server.metta(session, "!(survivor)").await;

    // Assert
    assert_succeeded(&next);
    assert_eq!(
        results_of(&next),
        expected(&[&["here"]]),
        "the session must be rebuilt from its history after the engine {killed} was killed: {next:#}"
    );
    assert!(
        !text(&next, "output").contains("printed-by-history"),
        "output of the history replay must not be in the job's output: {next:#}"
    );
    let other = server.metta("elsewhere", "!(+ 20 22)").await;
    assert_succeeded(&other);
    assert_eq!(results_of(&other), expected(&[&["42"]]), "{other:#}");
}

#[tokio::test]
async fn metta_engine_crash_fails_the_job_and_the_session_recovers() {
    // Arrange
    let server = TestServer::start().await;
    let session = "crashy";
    let define = run_cell(&server, session, "stable", "(= (stable) 1)").await;
    assert_succeeded(&define);
    let crash_code = "(= (crashdef) yes)\n!((py-atom os._exit) 1)";

    // Act
    let crash = run_cell(&server, session, "crash", crash_code).await;
    let next = run_cell(&server, session, "next", "!(stable)\n!(crashdef)").await;

    // Assert
    assert_eq!(crash["status"], "failed", "{crash:#}");
    let error = text(&crash, "error");
    assert!(
        error.starts_with(ENGINE_DIED) && error.contains(SESSION_REBUILT),
        "the error must say the engine died and the session is rebuilt: {crash:#}"
    );
    assert_succeeded(&next);
    assert_eq!(
        results_of(&next),
        expected(&[&["1"], &["(crashdef)"]]),
        "earlier definitions stay, the crashing cell's do not: {next:#}"
    );
    assert_eq!(
        stored_history(&server, session).await,
        cells(&[
            ("stable", "(= (stable) 1)"),
            ("next", "!(stable)\n!(crashdef)")
        ]),
        "the crashing cell must not enter the history"
    );
}

/// The server's `WARN` lines that name `job_id`.
fn warnings_about(server: &TestServer, job_id: &str) -> Vec<String> {
    server
        .logs()
        .lines()
        .filter(|line| line.contains(" WARN ") && line.contains(job_id))
        .map(String::from)
        .collect()
}

#[tokio::test]
async fn a_hyperon_panic_names_its_message_and_the_rebuild_without_backtrace_frames() {
    // Arrange
    let server = TestServer::start().await;
    let session = "panicky";
    assert_succeeded(&run_cell(&server, session, "kept", "(= (kept) 1)").await);
    // hyperon 0.2.10's `%` divides by zero without checking, and its panic cannot unwind
    // through the C API: the session's process aborts after printing a full backtrace.
    let panicking = "!(% 1 0)";

    // Act
    let crash = run_cell(&server, session, "panic", panicking).await;
    let next = run_cell(&server, session, "next", "!(kept)").await;

    // Assert
    assert_eq!(crash["status"], "failed", "{crash:#}");
    assert_eq!(crash["errorKind"], "code", "{crash:#}");
    let error = text(&crash, "error");
    assert!(error.starts_with(ENGINE_DIED), "{error}");
    assert!(
        error.contains(&format!(
            "{HYPERON_PANICKED} at lib/src/metta/runner/stdlib/arithmetics.rs:"
        )) && error.contains("attempt to calculate the remainder with a divisor of zero"),
        "the panic's message and where it is: {error}"
    );
    assert!(error.contains(SESSION_REBUILT), "{error}");
    for frame in [
        "stack backtrace",
        "non-unwinding",
        "0x",
        "rust_begin_unwind",
        "__libc",
    ] {
        assert!(!error.contains(frame), "no backtrace ({frame:?}): {error}");
    }
    assert!(
        error
            .lines()
            .all(|line| !line.trim_start().starts_with(|c: char| c.is_ascii_digit())),
        "no numbered frames: {error}"
    );
    assert!(
        text(&crash, "stderr").contains("stack backtrace"),
        "the job's stderr keeps the whole report: {crash:#}"
    );
    assert_succeeded(&next);
    assert_eq!(results_of(&next), expected(&[&["1"]]), "{next:#}");
    let logged = warnings_about(&server, text(&crash, "id"));
    assert!(
        logged.iter().any(|line| line.contains("hyperon panicked")),
        "the death is logged at warn with the job's id:\n{}",
        server.logs()
    );
}

#[tokio::test]
async fn a_session_process_that_died_while_idle_is_not_blamed_on_the_next_job() {
    // Arrange
    let server = TestServer::start().await;
    let session = "idle-death";
    assert_succeeded(&run_cell(&server, session, "kept", "(= (kept) 1)").await);
    let pid_job = run_cell(&server, session, "pid", "!((py-atom os.getpid))").await;
    assert_succeeded(&pid_job);
    let pid: i32 = results_of(&pid_job)[0][0]
        .parse()
        .unwrap_or_else(|err| panic!("no pid ({err}): {pid_job:#}"));
    // SAFETY: sending a signal to a session process of this test's server.
    let sent = unsafe { libc::kill(pid, libc::SIGKILL) };
    assert_eq!(sent, 0, "could not kill the session's process {pid}");
    let started = Instant::now();
    while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.starts_with(" Z"))
    }) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{pid} did not die"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Act
    let next = run_cell(&server, session, "next", "!(kept)").await;

    // Assert
    assert_succeeded(&next);
    assert_eq!(
        results_of(&next),
        expected(&[&["1"]]),
        "the session is rebuilt from its history: {next:#}"
    );
    let logged = warnings_about(&server, text(&next, "id"));
    assert!(
        logged
            .iter()
            .any(|line| line.contains("ended before it read the job")),
        "the death is logged at warn with the job's id:\n{}",
        server.logs()
    );
}

/// The children of process `pid` (of all its threads).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|children| {
            children
                .split_whitespace()
                .filter_map(|child| child.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

#[tokio::test]
async fn a_spare_session_process_that_died_before_its_first_run_is_not_blamed_on_it() {
    // Arrange: before any MeTTa run, the engine's zygote has one child, the spare session
    // process the next session takes.
    let server = TestServer::start().await;
    let engine = wait_for_engine(&server, None).await;
    let started = Instant::now();
    // Ready once its first spare is (a spare killed before that fails the engine's start).
    while !server.logs().contains("MeTTa engine ready") {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let spare = loop {
        let zygotes = children_of(engine);
        let forked: Vec<u32> = zygotes
            .iter()
            .flat_map(|zygote| children_of(*zygote))
            .collect();
        if let [spare] = forked[..] {
            break spare;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no spare under the zygote {zygotes:?}: {forked:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // SAFETY: sending a signal to a session process of this test's server.
    let sent = unsafe { libc::kill(spare as i32, libc::SIGKILL) };
    assert_eq!(sent, 0, "could not kill the spare {spare}");

    // Act
    let job = server.metta("fresh", "!(+ 1 2)").await;

    // Assert
    assert_succeeded(&job);
    assert_eq!(results_of(&job), expected(&[&["3"]]), "{job:#}");
    let logged = warnings_about(&server, text(&job, "id"));
    assert!(
        logged
            .iter()
            .any(|line| line.contains("ended before it read the job")),
        "the death is logged at warn with the job's id:\n{}",
        server.logs()
    );
}

#[tokio::test]
async fn a_scratch_folder_the_sessions_cannot_reach_never_fails_a_job_as_the_learners_fault() {
    // Arrange: the scratch folder under a folder only its owner may enter (session processes
    // run under other uids). Such a server once failed every MeTTa job as "died while running",
    // the learner's fault, and logged nothing.
    let parent = tempfile::tempdir().expect("parent");
    let closed = parent.path().join("closed");
    std::fs::create_dir(&closed).expect("closed folder");
    std::fs::set_permissions(&closed, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .expect("0700");
    let scratch = closed.join("scratch").display().to_string();
    let server = TestServer::start_with(&[("SCRATCH_DIR", &scratch)]).await;

    // Act
    let first = server.metta("scratchy", "(= (kept) 1)").await;
    let second = server.metta("scratchy", "!(kept)").await;

    // Assert: the jobs run; where one cannot, it is the service's fault, said as such.
    for job in [&first, &second] {
        if job["status"] != "succeeded" {
            assert_eq!(job["errorKind"], "service", "{job:#}");
            assert!(!text(job, "error").starts_with(ENGINE_DIED), "{job:#}");
        }
    }
}

#[tokio::test]
async fn an_engine_killed_at_a_deadline_and_its_restart_are_logged_with_the_job() {
    // Arrange
    let server = TestServer::start_with(&[("RUN_TIMEOUT_SECS", "1")]).await;

    // Act
    let stuck = run_cell(&server, "stuck", "sleep", "!((py-atom time.sleep) 30)").await;
    let next = run_cell(&server, "stuck", "next", "!(+ 1 1)").await;

    // Assert
    assert_eq!(stuck["status"], "timed_out", "{stuck:#}");
    assert!(text(&stuck, "error").contains(SESSION_REBUILT), "{stuck:#}");
    assert_succeeded(&next);
    let logged = warnings_about(&server, text(&stuck, "id"));
    for said in ["the engine was killed", "restarting the MeTTa engine"] {
        assert!(
            logged.iter().any(|line| line.contains(said)),
            "{said:?} at warn with the job's id:\n{}",
            server.logs()
        );
    }
}

// ----- deadlines ------------------------------------------------------------------------------

#[tokio::test]
async fn metta_infinite_loop_times_out_with_the_results_so_far() {
    // Arrange
    let server = TestServer::start_with(&[("RUN_TIMEOUT_SECS", "2")]).await;
    let session = "looping";
    let before = run_cell(&server, session, "before", "(= (before) ok)").await;
    assert_succeeded(&before);
    let loop_code = "(= (marker) visible)\n(= (loop) (loop))\n!(+ 1 1)\n!(loop)";

    // Act
    let started = Instant::now();
    let looping = run_cell(&server, session, "loop", loop_code).await;
    let elapsed = started.elapsed();
    let next = run_cell(&server, session, "next", "!(before)\n!(marker)\n!(+ 2 2)").await;

    // Assert
    // The loop ran in the engine's native step loop (`native_steps.rs`), which the engine
    // uses once a forked process checked it against the pinned hyperon at start-up.
    let logs = server.logs();
    let ready = logs
        .lines()
        .find(|line| line.contains("MeTTa engine ready"))
        .unwrap_or_default();
    assert!(
        ready.contains("native"),
        "the engine steps runs natively with the pinned hyperon: {ready}"
    );
    assert_eq!(looping["status"], "timed_out", "{looping:#}");
    let so_far = results_of(&looping);
    assert_eq!(
        so_far.first(),
        Some(&vec!["2".to_string()]),
        "the results found before the deadline are kept: {looping:#}"
    );
    assert!(
        elapsed < Duration::from_secs(15),
        "the loop ran {elapsed:?} past a 2 s deadline: {looping:#}"
    );
    assert_succeeded(&next);
    assert_eq!(
        results_of(&next),
        expected(&[&["ok"], &["(marker)"], &["4"]]),
        "the timed-out cell's definitions must not be visible: {next:#}"
    );
    assert_eq!(
        stored_history(&server, session).await,
        cells(&[
            ("before", "(= (before) ok)"),
            ("next", "!(before)\n!(marker)\n!(+ 2 2)")
        ]),
        "the timed-out cell must not enter the history"
    );
}

/// A longer deadline lets the loop run millions of steps, so its interpreter state grows deep;
/// the run must still end `timed_out` with its results so far, not take the engine down when
/// that state is thrown away.
#[tokio::test]
async fn metta_long_infinite_loop_times_out_without_killing_the_engine() {
    // Arrange
    let server = TestServer::start_with(&[("RUN_TIMEOUT_SECS", "5")]).await;
    let session = "long-loop";
    let before = run_cell(&server, session, "before", "(= (before) ok)").await;
    assert_succeeded(&before);
    let loop_code = "(= (loop) (loop))\n!(+ 1 1)\n!(loop)";

    // Act
    let looping = run_cell(&server, session, "loop", loop_code).await;
    let next = run_cell(&server, session, "next", "!(before)").await;

    // Assert
    assert_eq!(looping["status"], "timed_out", "{looping:#}");
    assert_eq!(
        results_of(&looping).first(),
        Some(&vec!["2".to_string()]),
        "the results found before the deadline are kept: {looping:#}"
    );
    assert_succeeded(&next);
    assert_eq!(results_of(&next), expected(&[&["ok"]]), "{next:#}");
}

#[tokio::test]
async fn metta_step_that_never_returns_is_ended_by_killing_the_engine() {
    // Arrange
    let server = TestServer::start().await;
    let session = "sleepy";
    let define = run_cell(&server, session, "kept", "(= (kept) yes)").await;
    assert_succeeded(&define);
    let engine_before = wait_for_engine(&server, None).await;

    // Act
    let started = Instant::now();
    let sleeping = server
        .run(json!({
            "language": "metta",
            "code": "!((py-atom time.sleep) 3600)",
            "sessionId": session,
            "codeId": "sleep",
            "timeoutSecs": 1,
        }))
        .await;
    let elapsed = started.elapsed();
    let engine_after = wait_for_engine(&server, Some(engine_before)).await;
    let other = server.metta("awake", "!(+ 1 2)").await;
    let same = run_cell(&server, session, "after", "!(kept)").await;

    // Assert
    assert_eq!(sleeping["status"], "timed_out", "{sleeping:#}");
    assert!(
        elapsed < Duration::from_secs(20),
        "the hung step was not ended in time ({elapsed:?}): {sleeping:#}"
    );
    assert_ne!(engine_before, engine_after, "the engine must be replaced");
    assert_succeeded(&other);
    assert_eq!(results_of(&other), expected(&[&["3"]]), "{other:#}");
    assert_succeeded(&same);
    assert_eq!(
        results_of(&same),
        expected(&[&["yes"]]),
        "the session keeps its earlier definitions: {same:#}"
    );
    assert_eq!(
        stored_history(&server, session).await,
        cells(&[("kept", "(= (kept) yes)"), ("after", "!(kept)")]),
        "the killed cell must not enter the history"
    );
}

// ----- output ---------------------------------------------------------------------------------

#[tokio::test]
async fn metta_output_is_captured_per_job() {
    // Arrange: one live session at most (so a replay can be forced) and a small output cap.
    let server =
        TestServer::start_with(&[("MAX_LIVE_SESSIONS", "1"), ("MAX_OUTPUT_BYTES", "256")]).await;
    let session = "speaker";
    let hello_code = "!(println! \"hello\")";
    let trace_code = "!(trace! \"tracing-message\" 42)";

    // Act: println! and trace!.
    let hello = run_cell(&server, session, "hello", hello_code).await;
    let traced = run_cell(&server, session, "trace", trace_code).await;

    // Assert
    assert_succeeded(&hello);
    assert!(text(&hello, "output").contains("hello"), "{hello:#}");
    assert_eq!(hello["result"], direct_hyperon_run(hello_code), "{hello:#}");
    assert_eq!(hello["outputTruncated"], false, "{hello:#}");
    assert_succeeded(&traced);
    assert!(
        text(&traced, "stderr").contains("tracing-message"),
        "trace! writes to stderr: {traced:#}"
    );
    assert!(
        !text(&traced, "output").contains("tracing-message"),
        "{traced:#}"
    );
    assert_eq!(results_of(&traced), expected(&[&["42"]]), "{traced:#}");
    assert_eq!(
        traced["result"],
        direct_hyperon_run(trace_code),
        "{traced:#}"
    );

    // Act: evict the session, so its next job replays the printing cells first.
    let elsewhere = server.metta("evictor", "!(+ 1 1)").await;
    let replayed = run_cell(&server, session, "quiet", "!(+ 3 4)").await;

    // Assert
    assert_succeeded(&elsewhere);
    assert_succeeded(&replayed);
    assert_eq!(results_of(&replayed), expected(&[&["7"]]), "{replayed:#}");
    assert_eq!(
        replayed["output"], "",
        "output of the history replay must not be in the job's output: {replayed:#}"
    );
    assert!(
        !text(&replayed, "stderr").contains("tracing-message"),
        "stderr of the history replay must not be in the job's stderr: {replayed:#}"
    );
    assert_eq!(replayed["result"], "[7]\n", "{replayed:#}");

    // Act: edit a cell that has a printing cell after it.
    let first = run_cell(&server, "editor", "first", "!(println! \"first\")").await;
    let second = run_cell(&server, "editor", "second", "!(println! \"second\")").await;
    let edited_code = "!(println! \"first-edited\")";
    let edited = run_cell(&server, "editor", "first", edited_code).await;

    // Assert
    assert_succeeded(&first);
    assert_succeeded(&second);
    assert_succeeded(&edited);
    assert_eq!(
        edited["output"], "first-edited\n",
        "only the edited cell's own output, not the replay of the cells after it: {edited:#}"
    );
    assert_eq!(
        edited["result"],
        direct_hyperon_run(edited_code),
        "{edited:#}"
    );

    // Act: print far more than MAX_OUTPUT_BYTES.
    let line = "0123456789".repeat(4);
    let loud_code = format!(
        "(= (spam $n) (if (== $n 0) done (let $_ (println! \"{line}\") (spam (- $n 1)))))\n!(spam 50)"
    );
    let loud = run_cell(&server, "loud", "loud", &loud_code).await;

    // Assert
    assert_succeeded(&loud);
    assert_eq!(loud["outputTruncated"], true, "{loud:#}");
    assert!(
        text(&loud, "output").len() <= 256,
        "the output is capped at MAX_OUTPUT_BYTES: {loud:#}"
    );
    assert!(text(&loud, "output").starts_with(&line), "{loud:#}");
    assert_eq!(results_of(&loud), expected(&[&["done"]]), "{loud:#}");
}

// ----- errors ---------------------------------------------------------------------------------

#[tokio::test]
async fn metta_parse_error_fails_the_job_and_leaves_the_session_alone() {
    // Arrange
    let server = TestServer::start().await;
    let session = "parsing";
    let define = run_cell(&server, session, "ok", "(= (ok) fine)").await;
    assert_succeeded(&define);

    // Act
    let broken = run_cell(&server, session, "broken", "!(+ 1 2) (oops").await;
    let next = run_cell(&server, session, "next", "!(ok)\n!(+ 1 2)").await;

    // Assert
    assert_eq!(broken["status"], "failed", "{broken:#}");
    assert!(
        text(&broken, "error").contains("Unexpected end of expression"),
        "the error must be hyperon's parse error: {broken:#}"
    );
    assert_succeeded(&next);
    assert_eq!(
        results_of(&next),
        expected(&[&["fine"], &["3"]]),
        "{next:#}"
    );
    assert_eq!(
        stored_history(&server, session).await,
        cells(&[("ok", "(= (ok) fine)"), ("next", "!(ok)\n!(+ 1 2)")]),
        "the broken cell must not enter the history"
    );
}

// ----- fidelity -------------------------------------------------------------------------------

/// Programs in the style of hyperon's documentation, each run in a fresh session.
const FIDELITY_PROGRAMS: &[&str] = &[
    // Recursion with if.
    "(= (fact $n) (if (== $n 0) 1 (* $n (fact (- $n 1)))))\n!(fact 5)\n!(fact 0)",
    "(= (fib $n) (if (< $n 2) $n (+ (fib (- $n 1)) (fib (- $n 2)))))\n!(fib 10)",
    // Nondeterminism.
    "!(superpose (1 2 3))\n!(collapse (superpose (a b c)))",
    "(= (color) red)\n(= (color) green)\n(= (color) blue)\n!(color)\n!(collapse (color))",
    "(= (only-even $x) (if (== (% $x 2) 0) $x (empty)))\n!(collapse (only-even (superpose (1 2 3 4))))",
    // Spaces.
    "!(bind! &people (new-space))\n!(add-atom &people (likes alice bob))\n\
     !(add-atom &people (likes bob carol))\n!(match &people (likes $x $y) ($x $y))\n\
     !(match &self (likes $x $y) $x)",
    "!(add-atom &self (item 1))\n!(add-atom &self (item 2))\n!(remove-atom &self (item 1))\n\
     !(match &self (item $x) $x)",
    "(Parent Tom Bob)\n(Parent Bob Ann)\n\
     (= (grandparent $x) (match &self (Parent $x $y) (match &self (Parent $y $z) $z)))\n\
     !(grandparent Tom)",
    // Types and type errors.
    "(: f (-> Number Number))\n(= (f $x) (+ $x 1))\n!(f 2)\n!(f \"a\")",
    "(: Cat Type)\n(: tom Cat)\n!(get-type tom)\n!(get-type 5)\n!(get-metatype (a b))\n\
     !(get-metatype $x)",
    // if, let, let*, case, chain.
    "!(if (> 3 2) yes no)\n!(let $x (+ 1 2) (* $x $x))\n\
     !(let* (($a 2) ($b (+ $a 3))) (* $a $b))\n!(let ($a $b) (1 2) (+ $a $b))",
    "!(case (+ 1 1) ((1 one) (2 two) ($_ other)))\n!(case 5 ((1 one) ($_ other)))\n\
     !(chain (+ 1 2) $x (* $x 10))",
    // An error result ends the run, as in metta-py.
    "!(+ 1 1)\n!(Error foo \"bad\")\n!(+ 2 2)",
    "!(+ 1 \"a\")",
    // Strings and printing.
    "!(println! \"hi there\")\n!(repr (a b))\n!(format-args \"{} and {}\" (1 2))\n\
     !(println! (result is (+ 1 2)))",
    // Unification and expressions as lists.
    "!(unify (a $x) (a 5) $x none)\n!(unify (a $x) (b 5) $x none)\n!(car-atom (1 2 3))\n\
     !(cdr-atom (1 2 3))\n!(cons-atom a (b c))",
    "(= (len $l) (if (== $l ()) 0 (+ 1 (len (cdr-atom $l)))))\n!(len (a b c))\n\
     !(map-atom (1 2 3) $x (+ $x 1))\n!(foldl-atom (1 2 3) 0 $a $b (+ $a $b))",
    // Booleans and equality.
    "!(== (a b) (a b))\n!(and True False)\n!(or True False)\n!(not False)\n\
     !(assertEqual (+ 1 1) 2)",
];

#[tokio::test]
async fn metta_results_equal_metta_py_output() {
    // Arrange
    let server = TestServer::start().await;

    for (index, program) in FIDELITY_PROGRAMS.iter().enumerate() {
        // Act
        let job = server.metta(&format!("fidelity-{index}"), program).await;
        let reference = direct_hyperon_run(program);

        // Assert
        assert_succeeded(&job);
        assert_eq!(
            text(&job, "result"),
            reference,
            "program {index} differs from metta-py:\n{program}\njob: {job:#}"
        );
        let lines = reference
            .lines()
            .filter(|line| line.starts_with('['))
            .count();
        assert_eq!(
            results_of(&job).len(),
            lines,
            "one list of results per printed result line:\n{program}\njob: {job:#}"
        );
    }
}

/// Without hyperon the server still starts, says so in one log line naming the fix, runs
/// Python jobs, and fails MeTTa jobs with a clear error (a fault of the service, not the code).
#[tokio::test]
async fn metta_without_hyperon_fails_clearly_and_python_still_runs() {
    // Debian's own interpreter has no hyperon installed.
    let server = TestServer::start_with(&[("PYTHON", "/usr/bin/python3.11")]).await;

    let metta = server.metta("no-engine", "!(+ 1 2)").await;
    let python = server
        .run(json!({"language": "python", "code": "print('still here')"}))
        .await;

    let logs = server.logs();
    let warning = logs
        .lines()
        .find(|line| line.contains("MeTTa engine unavailable"))
        .unwrap_or_else(|| panic!("no start-up line about the engine:\n{logs}"));
    assert!(warning.contains("hyperon"), "{warning}");
    assert!(warning.contains("scripts/setup.sh"), "{warning}");
    assert_eq!(metta["status"], "failed", "{metta}");
    assert_eq!(metta["errorKind"], "service", "{metta}");
    let error = metta["error"].as_str().unwrap_or_default();
    assert!(error.starts_with(ENGINE_UNAVAILABLE), "{metta}");
    assert_eq!(python["status"], "succeeded", "{python}");
    assert_eq!(python["result"], "still here\n", "{python}");
}

// ----- stdin ------------------------------------------------------------------------------

#[tokio::test]
async fn metta_input_reads_the_jobs_own_stdin_then_end_of_file() {
    // Arrange
    let server = TestServer::start().await;

    // Act
    let job = server
        .run(json!({
            "language": "metta",
            "sessionId": "stdin-reader",
            "code": "!((py-atom input))\n!((py-atom input))\n!((py-atom input))",
            "stdin": "first line\nsecond\n",
        }))
        .await;
    let next = server
        .run(json!({
            "language": "metta",
            "sessionId": "stdin-reader",
            "code": "!((py-atom input))",
        }))
        .await;

    // Assert: the job's two lines, then end of file (not the engine's requests, no hang).
    assert_succeeded(&job);
    let results = job["results"].as_array().expect("results");
    assert_eq!(results[0][0], "\"first line\"", "{job}");
    assert_eq!(results[1][0], "\"second\"", "{job}");
    assert!(
        results[2][0].as_str().unwrap_or("").contains("EOFError"),
        "the third input() must meet the end of the job's stdin: {job}"
    );
    assert_succeeded(&next);
    assert!(
        next["results"][0][0]
            .as_str()
            .unwrap_or("")
            .contains("EOFError"),
        "a job without stdin reads an empty one, not the last job's: {next}"
    );
}

#[tokio::test]
async fn metta_input_without_stdin_ends_at_once_and_keeps_the_engine() {
    // Arrange
    let server = TestServer::start().await;
    let warm = server.metta("input-warm", "!(+ 1 1)").await;
    assert_succeeded(&warm);
    let engine = server.engine_pid().expect("an engine runs");

    // Act: a legacy request (no stdin at all) whose code reads stdin.
    let (status, body) = server
        .post(
            "/run-metta",
            json!({"code": "!((py-atom input))", "sessionId": "input-legacy"}),
        )
        .await;

    // Assert: answered with the end-of-file error by the same engine, not by the kill backstop.
    assert_eq!(status, 200, "{body}");
    assert!(
        body["result"].as_str().unwrap_or("").contains("EOFError"),
        "{body}"
    );
    assert_eq!(
        server.engine_pid(),
        Some(engine),
        "reading stdin must not cost the engine (and every session) its life"
    );
}

#[tokio::test]
async fn a_project_in_a_temporary_folder_still_runs_metta_behind_the_private_tmp() {
    // Arrange: the Python environment under /tmp (a checkout in a `mktemp -d` folder, as CI
    // makes), which each session's private /tmp would otherwise hide.
    let project = tempfile::Builder::new()
        .prefix("mlb-project-")
        .tempdir_in("/tmp")
        .expect("a folder under /tmp");
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(
            crate::support::project_python()
                .parent()
                .and_then(|bin| bin.parent())
                .expect(".venv"),
        )
        .arg(project.path())
        .status()
        .expect("cp");
    assert!(copied.success(), "copy .venv under /tmp");
    std::fs::set_permissions(
        project.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("let the session uids in");
    let python = project.path().join(".venv/bin/python");
    let server = TestServer::start_with(&[("PYTHON", python.to_str().expect("a path"))]).await;

    // Act
    let job = server.metta("tmp-project", "!(+ 2 3)").await;

    // Assert
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["result"], "[5]\n", "{job}");
}

#[tokio::test]
async fn every_live_session_keeps_its_process_even_with_few_open_files_per_child() {
    // Arrange: room for 24 live sessions; each child (a session's process too) may open only
    // 32 files, fewer than the engine's pipes to 24 sessions.
    let server =
        TestServer::start_with(&[("MAX_LIVE_SESSIONS", "24"), ("CHILD_OPEN_FILES", "32")]).await;

    // Act: every session becomes live, then runs again; then a session opens files.
    let mut rounds = Vec::new();
    for round in 0..2 {
        for learner in 0..24 {
            let job = server
                .metta(&format!("fd-{learner}"), &format!("!(+ {round} {learner})"))
                .await;
            rounds.push((round, learner, job, server.engine_pid()));
        }
    }
    let opening = server
        .metta(
            "fd-0",
            &format!(
                "!((py-atom exec) {:?})",
                "import os\nfds = []\ntry:\n    while True:\n        fds.append(os.open('/dev/null', os.O_RDONLY))\nexcept OSError:\n    print('opened', len(fds))"
            ),
        )
        .await;

    // Assert: no run failed and the engine never died (its pid is the first one throughout);
    let first_engine = rounds[0].3;
    for (round, learner, job, engine) in &rounds {
        assert_succeeded(job);
        assert_eq!(
            results_of(job),
            expected(&[&[&(round + learner).to_string()]]),
            "round {round}, learner {learner}: {job:#}"
        );
        assert_eq!(
            *engine, first_engine,
            "round {round}, learner {learner}: the engine was restarted"
        );
    }
    // a session's process still gets CHILD_OPEN_FILES, not the engine's limit.
    assert_succeeded(&opening);
    let opened: u64 = text(&opening, "output")
        .trim()
        .strip_prefix("opened ")
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("{opening:#}"));
    assert!(opened < 32, "a session opened {opened} files: {opening:#}");
}
