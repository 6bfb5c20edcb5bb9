//! Batches: queued MeTTa jobs of different sessions that the worker claims together and sends
//! to the engine in one message. Each test holds the worker with a sleeping Python job, queues
//! MeTTa jobs behind it, and checks what a batch must keep: queue order, each job's own output,
//! results and deadline, and that a job killing the engine (or passing its deadline) fails
//! alone while the rest of its batch runs.

use std::time::Duration;

use metta_learner_backend::learner_messages::ENGINE_DIED;
use serde_json::{json, Value};

use crate::support::{id_of, python, wait_until_running, TestServer};

/// Starts a Python job that keeps the one worker busy for `seconds`, and waits until it runs,
/// so that jobs submitted now queue up behind it.
async fn hold_worker(server: &TestServer, seconds: f64) -> String {
    let hold = server
        .submit(python(&format!("import time\ntime.sleep({seconds})")))
        .await;
    let id = id_of(&hold);
    wait_until_running(server, &id).await;
    id
}

/// Queues each job (without waiting), then waits for all of them; answers in the same order.
async fn queue_then_wait(server: &TestServer, jobs: Vec<Value>) -> Vec<Value> {
    let mut ids = Vec::new();
    for job in jobs {
        let queued = server.submit(job).await;
        assert_eq!(queued["status"], "queued", "the worker is held: {queued}");
        ids.push(id_of(&queued));
    }
    let mut finished = Vec::new();
    for id in ids {
        finished.push(server.wait_final(&id).await);
    }
    finished
}

fn metta(session: &str, code: &str) -> Value {
    json!({"language": "metta", "code": code, "sessionId": session})
}

fn text<'a>(job: &'a Value, field: &str) -> &'a str {
    job[field].as_str().unwrap_or_default()
}

fn assert_succeeded(job: &Value) {
    assert_eq!(job["status"], "succeeded", "{job:#}");
}

/// Defines `(who)` in each session, so the engine holds them live.
async fn prepare_sessions(server: &TestServer, sessions: &[String]) {
    for session in sessions {
        let job = server.metta(session, &format!("(= (who) {session})")).await;
        assert_succeeded(&job);
    }
}

#[tokio::test]
async fn queued_metta_jobs_of_different_sessions_run_as_one_batch_in_queue_order() {
    // Arrange
    let server = TestServer::start().await;
    let sessions: Vec<String> = (0..4).map(|i| format!("batch{i}")).collect();
    prepare_sessions(&server, &sessions).await;
    let hold = hold_worker(&server, 1.5).await;

    // Act: one job per session, then a second job in the first session (which ends the
    // batch: a batch holds one job per session), then one more.
    let mut jobs: Vec<Value> = sessions
        .iter()
        .enumerate()
        .map(|(i, session)| metta(session, &format!("!(println! \"out-{i}\")\n!(who)")))
        .collect();
    jobs.push(metta(&sessions[0], "(= (later) yes)\n!(who)"));
    jobs.push(metta(&sessions[3], "!(later)\n!(+ 1 2)"));
    let finished = queue_then_wait(&server, jobs).await;

    // Assert
    assert_succeeded(&server.wait_final(&hold).await);
    for (i, job) in finished[..4].iter().enumerate() {
        assert_succeeded(job);
        assert_eq!(
            text(job, "output"),
            format!("out-{i}\n"),
            "each job has its own output only: {job:#}"
        );
        assert_eq!(job["results"][1], json!([sessions[i]]), "{job:#}");
        assert_eq!(
            job["startedAt"], finished[0]["startedAt"],
            "the four jobs were claimed together, as one batch: {finished:#?}"
        );
    }
    let batch_done = finished[..4]
        .iter()
        .map(|job| text(job, "finishedAt"))
        .max()
        .expect("four jobs");
    for job in &finished[4..] {
        assert_succeeded(job);
        assert!(
            text(job, "startedAt") >= batch_done,
            "a job behind the batch starts once the batch is stored: {job:#} (batch done at {batch_done})"
        );
    }
    assert_eq!(
        finished[4]["results"][0],
        json!([sessions[0]]),
        "{:#}",
        finished[4]
    );
    assert_eq!(
        finished[5]["results"],
        json!([["(later)"], ["3"]]),
        "sessions stay apart: `later` is defined in another session: {:#}",
        finished[5]
    );
    for pair in finished.windows(2) {
        assert!(
            text(&pair[0], "finishedAt") <= text(&pair[1], "finishedAt"),
            "jobs finish in queue order: {pair:#?}"
        );
    }
}

#[tokio::test]
async fn a_job_that_kills_the_engine_fails_alone_and_the_rest_of_its_batch_runs() {
    // Arrange
    let server = TestServer::start().await;
    let sessions: Vec<String> = (0..3).map(|i| format!("crash{i}")).collect();
    prepare_sessions(&server, &sessions).await;
    let hold = hold_worker(&server, 1.5).await;

    // Act
    let finished = queue_then_wait(
        &server,
        vec![
            metta(&sessions[0], "!(println! \"first\")\n!(who)"),
            metta(&sessions[1], "(= (crashdef) yes)\n!((py-atom os._exit) 1)"),
            metta(&sessions[2], "!(println! \"after\")\n!(who)"),
        ],
    )
    .await;

    // Assert
    assert_succeeded(&server.wait_final(&hold).await);
    let (first, crash, after) = (&finished[0], &finished[1], &finished[2]);
    assert_eq!(
        first["startedAt"], crash["startedAt"],
        "one batch: {finished:#?}"
    );
    assert_eq!(
        crash["startedAt"], after["startedAt"],
        "one batch: {finished:#?}"
    );
    assert_succeeded(first);
    assert_eq!(text(first, "output"), "first\n", "{first:#}");
    assert_eq!(first["results"][1], json!([sessions[0]]), "{first:#}");
    assert_eq!(crash["status"], "failed", "{crash:#}");
    assert!(
        text(crash, "error").starts_with(ENGINE_DIED),
        "the error must say the engine died: {crash:#}"
    );
    assert_succeeded(after);
    assert_eq!(text(after, "output"), "after\n", "{after:#}");
    assert_eq!(
        after["results"][1],
        json!([sessions[2]]),
        "the job after the crash runs in a new engine, its session rebuilt from its history: {after:#}"
    );
    let probe = server.metta(&sessions[1], "!(crashdef)\n!(who)").await;
    assert_eq!(
        probe["results"],
        json!([["(crashdef)"], [sessions[1]]]),
        "the crashing job did not enter its session's history: {probe:#}"
    );
}

#[tokio::test]
async fn a_job_past_its_deadline_in_a_batch_is_stopped_and_the_next_one_gets_its_own_time() {
    // Arrange: fresh sessions (the engine must build each from its empty history first).
    let server = TestServer::start_with(&[("ENGINE_KILL_GRACE_MS", "500")]).await;
    let hold = hold_worker(&server, 1.5).await;

    // Act
    let mut stuck = metta("deadline1", "!(+ 1 1)\n!((py-atom time.sleep) 30)");
    stuck["timeoutSecs"] = json!(1);
    let finished = queue_then_wait(
        &server,
        vec![
            metta("deadline0", "!(+ 1 1)"),
            stuck,
            metta("deadline2", "!((py-atom time.sleep) 0.8)\n!(+ 2 2)"),
        ],
    )
    .await;

    // Assert
    assert_succeeded(&server.wait_final(&hold).await);
    assert_eq!(
        finished[0]["startedAt"], finished[2]["startedAt"],
        "one batch: {finished:#?}"
    );
    assert_succeeded(&finished[0]);
    assert_eq!(finished[0]["results"], json!([["2"]]), "{:#}", finished[0]);
    let stuck = &finished[1];
    assert_eq!(stuck["status"], "timed_out", "{stuck:#}");
    let ran = Duration::from_millis(stuck["durationMs"].as_u64().unwrap_or(u64::MAX));
    assert!(
        ran < Duration::from_secs(10),
        "the stuck job is stopped near its 1 s limit, not the batch's: ran {ran:?}: {stuck:#}"
    );
    let last = &finished[2];
    assert_succeeded(last);
    assert_eq!(
        last["results"],
        json!([["()"], ["4"]]),
        "the job after the stuck one runs in a new engine with its own time: {last:#}"
    );
}

#[tokio::test]
async fn a_job_run_ahead_behind_a_slow_one_keeps_its_whole_output_and_its_own_time() {
    // Arrange: two live sessions, the worker held so that both jobs join one batch, and an
    // output cap above what the second job prints.
    let server = TestServer::start_with(&[("MAX_OUTPUT_BYTES", "1048576")]).await;
    let sessions: Vec<String> = (0..2).map(|i| format!("ahead{i}")).collect();
    prepare_sessions(&server, &sessions).await;
    let hold = hold_worker(&server, 1.5).await;
    let mut slow = metta(&sessions[0], "!((py-atom time.sleep) 2.5)\n!(who)");
    slow["timeoutSecs"] = json!(10);
    // 30 lines of 10,000 bytes, over many MeTTa steps (0.1 s in all): far more than a pipe
    // holds, so while the slow job runs, this one (sent ahead to its own process) would stop
    // on its full pipe and its clock (1 s) would run out, unless the router keeps what it
    // prints.
    let mut loud = metta(
        &sessions[1],
        "(= (spam $n) (if (> $n 0) (let $_ ((py-atom exec) \"print(chr(120) * 9999)\") (spam (- $n 1))) done))\n\
         !(spam 30)",
    );
    loud["timeoutSecs"] = json!(1);

    // Act
    let finished = queue_then_wait(&server, vec![slow, loud]).await;

    // Assert
    assert_succeeded(&server.wait_final(&hold).await);
    let (slow, loud) = (&finished[0], &finished[1]);
    assert_eq!(
        slow["startedAt"], loud["startedAt"],
        "one batch: {finished:#?}"
    );
    assert_succeeded(slow);
    assert_eq!(slow["results"][1], json!([sessions[0]]), "{slow:#}");
    assert_eq!(loud["status"], "succeeded", "{}", text(loud, "error"));
    assert_eq!(loud["results"], json!([["done"]]));
    assert_eq!(
        text(loud, "output"),
        format!("{}\n", "x".repeat(9999)).repeat(30),
        "the whole output, and only it"
    );
    assert_eq!(loud["outputTruncated"], false);
}
