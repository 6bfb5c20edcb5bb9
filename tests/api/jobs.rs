//! The v1 jobs API: submit, poll, long-wait, idempotency, cancel, FIFO order.

use std::time::{Duration, Instant};

use metta_learner_backend::learner_messages::{
    describe_signal, LAST_WORDS, PYTHON_KILLED, TIME_LIMIT,
};
use serde_json::{json, Value};

use crate::support::{
    id_of, is_final, python, read, stored_job_count, wait_until_running, TestServer,
};

#[tokio::test]
async fn python_job_runs_and_its_output_is_stored() {
    let server = TestServer::start().await;
    let job = server
        .run(json!({"language": "python", "code": "print(6 * 7)"}))
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["result"], "42\n");
}

// ----- local helpers ------------------------------------------------------------------------

/// POSTs a job with an `Idempotency-Key` header; returns status and JSON body.
async fn post_with_key(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    body: &Value,
) -> (u16, Value) {
    let response = client
        .post(format!("{base}/api/v1/jobs"))
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .expect("POST with Idempotency-Key");
    read(response).await
}

// ----- FIFO -----------------------------------------------------------------------------------

#[tokio::test]
async fn fifty_concurrent_submitters_run_in_acceptance_order() {
    // Arrange
    let server = TestServer::start().await;

    // Act: 50 submitters at once.
    let mut tasks = Vec::new();
    for i in 0..50 {
        let client = server.client.clone();
        let url = server.url("/api/v1/jobs");
        tasks.push(tokio::spawn(async move {
            let response = client
                .post(url)
                .json(&json!({"language": "python", "code": format!("print({i})")}))
                .send()
                .await
                .expect("POST");
            let (status, job) = read(response).await;
            assert!(status == 200 || status == 202, "submit {i}: {status} {job}");
            (i, id_of(&job))
        }));
    }
    let mut jobs = Vec::new();
    for task in tasks {
        let (i, id) = task.await.expect("submitter task");
        jobs.push((i, server.wait_final(&id).await));
    }

    // Assert
    jobs.sort_by_key(|(_, job)| job["seq"].as_i64().expect("seq"));
    for (i, job) in &jobs {
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["attempts"], 1, "{job}");
        assert_eq!(
            job["output"],
            format!("{i}\n"),
            "job {i} has its own output: {job}"
        );
    }
    for pair in jobs.windows(2) {
        let (earlier, later) = (&pair[0].1, &pair[1].1);
        assert!(
            earlier["seq"].as_i64() < later["seq"].as_i64(),
            "seq values are distinct:\n{earlier}\n{later}"
        );
        let (a, b) = (
            earlier["startedAt"].as_str().expect("startedAt"),
            later["startedAt"].as_str().expect("startedAt"),
        );
        assert!(
            a < b,
            "a job with a lower seq must start first:\n{earlier}\n{later}"
        );
        let finished = earlier["finishedAt"].as_str().expect("finishedAt");
        assert!(
            finished <= b,
            "one job at a time: the next starts after the previous finished:\n{earlier}\n{later}"
        );
    }
    assert_eq!(stored_job_count(&server).await, 50);
}

// ----- long-wait -----------------------------------------------------------------------------

#[tokio::test]
async fn long_wait_returns_promptly_when_the_job_finishes() {
    // Arrange: a job that sleeps 1.5 s.
    let server = TestServer::start().await;
    let job = server
        .submit(
            json!({"language": "python", "code": "import time; time.sleep(1.5); print('done')"}),
        )
        .await;
    let id = id_of(&job);

    // Act
    let started = Instant::now();
    let (status, job) = server.get(&format!("/api/v1/jobs/{id}?wait=30")).await;
    let elapsed = started.elapsed();

    // Assert
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["output"], "done\n", "{job}");
    assert!(
        elapsed >= Duration::from_secs(1),
        "the wait answered before the job could finish ({elapsed:?}): {job}"
    );
    assert!(
        elapsed < Duration::from_secs(10),
        "the wait did not return promptly when the job finished ({elapsed:?}): {job}"
    );
}

#[tokio::test]
async fn post_with_wait_returns_the_finished_job() {
    // Arrange
    let server = TestServer::start().await;

    // Act
    let (status, job) = server
        .post(
            "/api/v1/jobs?wait=30",
            json!({"language": "python", "code": "print('waited')"}),
        )
        .await;

    // Assert
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["output"], "waited\n", "{job}");
    assert!(
        job.get("position").is_none(),
        "a final job has no position: {job}"
    );
    assert!(job["finishedAt"].is_string(), "{job}");
    assert!(job["durationMs"].is_i64(), "{job}");
}

#[tokio::test]
async fn post_with_wait_zero_answers_202_with_a_queue_position() {
    // Arrange: a sleeping job ahead keeps the next one queued.
    let server = TestServer::start().await;
    let first = server
        .submit(json!({"language": "python", "code": "import time; time.sleep(1.5)"}))
        .await;

    // Act
    let (status, job) = server
        .post(
            "/api/v1/jobs?wait=0",
            json!({"language": "python", "code": "print('next')"}),
        )
        .await;

    // Assert
    assert_eq!(status, 202, "{job}");
    assert_eq!(job["status"], "queued", "{job}");
    let position = job["position"].as_i64();
    assert!(
        matches!(position, Some(1 | 2)),
        "a queued job shows its position (1 or 2 behind the sleeper): {job}"
    );
    assert_eq!(job["attempts"], 0, "{job}");
    assert!(job["startedAt"].is_null(), "{job}");
    assert!(
        job["seq"].as_i64() > first["seq"].as_i64(),
        "later submission, larger seq:\n{first}\n{job}"
    );
}

#[tokio::test]
async fn expired_wait_returns_the_job_not_yet_final() {
    // Arrange: a job that sleeps far longer than the waits below.
    let server = TestServer::start().await;
    let job = server
        .submit(json!({"language": "python", "code": "import time; time.sleep(30)"}))
        .await;
    let id = id_of(&job);

    // Act
    let started = Instant::now();
    let (get_status, get_job) = server.get(&format!("/api/v1/jobs/{id}?wait=1")).await;
    let get_elapsed = started.elapsed();
    let (post_status, post_job) = server
        .post(
            "/api/v1/jobs?wait=1",
            json!({"language": "python", "code": "print(1)"}),
        )
        .await;

    // Assert
    assert!(
        get_status == 200 || get_status == 202,
        "GET ?wait=1 answered {get_status}: {get_job}"
    );
    assert!(
        matches!(get_job["status"].as_str(), Some("queued" | "running")),
        "an expired wait returns the job as it is: {get_job}"
    );
    assert!(
        get_elapsed >= Duration::from_millis(900) && get_elapsed < Duration::from_secs(10),
        "GET ?wait=1 should wait about 1 s, took {get_elapsed:?}: {get_job}"
    );
    assert_eq!(post_status, 202, "{post_job}");
    assert_eq!(
        post_job["status"], "queued",
        "the job behind the sleeper is still queued: {post_job}"
    );
}

// ----- idempotency ---------------------------------------------------------------------------

#[tokio::test]
async fn the_same_idempotency_key_names_one_job() {
    // Arrange
    let server = TestServer::start().await;
    let body = json!({"language": "python", "code": "print('once')"});

    // Act: the same key twice in a row, then another key from 10 submitters at once.
    let (first_status, first) =
        post_with_key(&server.client, &server.base, "key-seq-1", &body).await;
    let (second_status, second) =
        post_with_key(&server.client, &server.base, "key-seq-1", &body).await;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let client = server.client.clone();
        let base = server.base.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            post_with_key(&client, &base, "key-concurrent-2", &body).await
        }));
    }
    let mut concurrent = Vec::new();
    for task in tasks {
        concurrent.push(task.await.expect("submitter task"));
    }

    // Assert
    assert!(matches!(first_status, 200 | 202), "{first}");
    assert!(matches!(second_status, 200 | 202), "{second}");
    assert_eq!(
        first["id"], second["id"],
        "the repeated key returns the first job:\n{first}\n{second}"
    );
    // A duplicate that arrives while the first is still being accepted answers 409 (the
    // client retries); every other answer is the one job.
    let accepted: Vec<&Value> = concurrent
        .iter()
        .filter(|(status, _)| *status != 409)
        .map(|(_, job)| job)
        .collect();
    assert!(
        !accepted.is_empty(),
        "one submission was accepted: {concurrent:?}"
    );
    let concurrent_id = &accepted[0]["id"];
    for (status, job) in &concurrent {
        assert!(matches!(status, 200 | 202 | 409), "{status}: {job}");
        if *status == 409 {
            assert!(
                job["error"]
                    .as_str()
                    .is_some_and(|error| error.contains("Idempotency-Key")),
                "{job}"
            );
        } else {
            assert_eq!(
                &job["id"], concurrent_id,
                "concurrent submissions with one key return one job: {job}"
            );
        }
    }
    assert_ne!(
        &first["id"], concurrent_id,
        "different keys, different jobs"
    );
    assert_eq!(
        stored_job_count(&server).await,
        2,
        "exactly one job per key is stored"
    );
    let job = server.wait_final(&id_of(&first)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 1, "{job}");
}

/// POSTs a job with an `Idempotency-Key` as the client at `address` (the server trusts
/// `X-Forwarded-For`); returns status and JSON body.
async fn post_with_key_as(
    server: &TestServer,
    address: &str,
    key: &str,
    body: &Value,
) -> (u16, Value) {
    let response = server
        .client
        .post(server.url("/api/v1/jobs"))
        .header("Idempotency-Key", key)
        .header("X-Forwarded-For", address)
        .json(body)
        .send()
        .await
        .expect("POST with Idempotency-Key");
    read(response).await
}

#[tokio::test]
async fn an_idempotency_key_belongs_to_its_client_and_its_request() {
    // Arrange: two clients at different addresses use the README's example key.
    let server = TestServer::start_with(&[("TRUST_FORWARDED_FOR", "true")]).await;
    let alice_body = json!({"language": "python", "code": "print('alice secret 7')"});
    let bob_body = json!({"language": "python", "code": "print('bob')"});
    let (alice_status, alice) =
        post_with_key_as(&server, "10.0.0.1", "lesson3-run7", &alice_body).await;

    // Act: Bob sends the same key with his own request; Alice sends hers again, then the
    // same key with another body; a session-scoped key in Alice's session.
    let (bob_status, bob) = post_with_key_as(&server, "10.0.0.2", "lesson3-run7", &bob_body).await;
    let (again_status, again) =
        post_with_key_as(&server, "10.0.0.1", "lesson3-run7", &alice_body).await;
    let (changed_status, changed) =
        post_with_key_as(&server, "10.0.0.1", "lesson3-run7", &bob_body).await;

    // Assert
    assert!(matches!(alice_status, 200 | 202), "{alice}");
    assert!(
        matches!(bob_status, 200 | 202),
        "Bob's own job is accepted: {bob}"
    );
    assert_ne!(alice["id"], bob["id"], "two clients, two jobs");
    assert!(
        !bob.to_string().contains("alice secret"),
        "Bob sees nothing of Alice's job: {bob}"
    );
    assert!(matches!(again_status, 200 | 202), "{again}");
    assert_eq!(
        again["id"], alice["id"],
        "Alice's retry names her first job"
    );
    assert_eq!(
        changed_status, 422,
        "the same key for another request: {changed}"
    );
    assert!(
        changed["error"]
            .as_str()
            .is_some_and(|error| error.contains("Idempotency-Key")),
        "the error names the header: {changed}"
    );
    assert!(
        !changed.to_string().contains("alice secret") && changed.get("id").is_none(),
        "a refusal reveals nothing of the first job: {changed}"
    );
    assert_eq!(
        stored_job_count(&server).await,
        2,
        "only Alice's and Bob's jobs are stored"
    );
    let bob_final = server.wait_final(&id_of(&bob)).await;
    assert_eq!(bob_final["result"], "bob\n", "{bob_final}");
}

// ----- cancel --------------------------------------------------------------------------------

#[tokio::test]
async fn only_queued_jobs_can_be_cancelled() {
    // Arrange: a sleeping job running, two jobs queued behind it.
    let server = TestServer::start().await;
    let running = server
        .submit(json!({"language": "python", "code": "import time; time.sleep(2)"}))
        .await;
    let running_id = id_of(&running);
    let doomed = server
        .submit(json!({"language": "python", "code": "print('must not run')"}))
        .await;
    let doomed_id = id_of(&doomed);
    let after = server
        .submit(json!({"language": "python", "code": "print('after')"}))
        .await;
    let after_id = id_of(&after);
    wait_until_running(&server, &running_id).await;

    // Act + Assert: cancel the queued job.
    let (status, cancelled) = server.delete(&format!("/api/v1/jobs/{doomed_id}")).await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert!(cancelled["startedAt"].is_null(), "{cancelled}");

    // The running job cannot be cancelled.
    let (status, body) = server.delete(&format!("/api/v1/jobs/{running_id}")).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("running"),
        "{body}"
    );

    // The queue goes on past the cancelled job.
    let finished = server.wait_final(&after_id).await;
    assert_eq!(finished["status"], "succeeded", "{finished}");
    assert_eq!(finished["output"], "after\n", "{finished}");
    let first = server.wait_final(&running_id).await;
    assert_eq!(first["status"], "succeeded", "{first}");

    // Finished and already-cancelled jobs cannot be cancelled.
    let (status, body) = server.delete(&format!("/api/v1/jobs/{after_id}")).await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = server.delete(&format!("/api/v1/jobs/{doomed_id}")).await;
    assert_eq!(status, 409, "{body}");

    // The cancelled job never ran.
    let (status, doomed) = server.get(&format!("/api/v1/jobs/{doomed_id}")).await;
    assert_eq!(status, 200, "{doomed}");
    assert_eq!(doomed["status"], "cancelled", "{doomed}");
    assert!(doomed["startedAt"].is_null(), "{doomed}");
    assert_eq!(doomed["attempts"], 0, "{doomed}");
    assert!(doomed["output"].is_null(), "{doomed}");

    // Unknown and malformed ids.
    let (status, body) = server
        .delete("/api/v1/jobs/00000000-0000-7000-8000-000000000000")
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].is_string(), "{body}");
    let (status, body) = server.delete("/api/v1/jobs/not-a-job-id").await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].is_string(), "{body}");
}

// ----- Python ----------------------------------------------------------------------------------

#[tokio::test]
async fn python_jobs_get_stdin_report_failures_and_time_out() {
    // Arrange
    let server = TestServer::start().await;

    // Act
    let echoed = server
        .run(json!({
            "language": "python",
            "code": "import sys; print(sys.stdin.read().upper())",
            "stdin": "hello stdin",
        }))
        .await;
    let failed = server
        .run(json!({
            "language": "python",
            "code": "import sys; print('partial'); sys.stderr.write('boom: bad thing\\n'); sys.exit(3)",
        }))
        .await;
    let started = Instant::now();
    let slow = server
        .run(json!({
            "language": "python",
            "code": "import time; time.sleep(30)",
            "timeoutSecs": 1,
        }))
        .await;
    let slow_elapsed = started.elapsed();

    // Assert: stdin reaches the program.
    assert_eq!(echoed["status"], "succeeded", "{echoed}");
    assert_eq!(echoed["output"], "HELLO STDIN\n", "{echoed}");
    assert_eq!(echoed["result"], "HELLO STDIN\n", "{echoed}");
    assert!(echoed["error"].is_null(), "{echoed}");

    // A non-zero exit fails with stderr as the error; stdout is kept.
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["stderr"], "boom: bad thing\n", "{failed}");
    assert!(
        failed["error"]
            .as_str()
            .unwrap_or("")
            .contains("boom: bad thing"),
        "the error carries stderr: {failed}"
    );
    assert_eq!(failed["output"], "partial\n", "{failed}");

    // The deadline stops the job.
    assert_eq!(slow["status"], "timed_out", "{slow}");
    assert!(
        slow["error"].as_str().unwrap_or("").contains(TIME_LIMIT),
        "the error says the time limit was hit: {slow}"
    );
    assert!(
        slow_elapsed < Duration::from_secs(15),
        "a 1 s timeout stopped a 30 s sleep only after {slow_elapsed:?}: {slow}"
    );
    assert!(
        slow["durationMs"].as_i64().is_some_and(|ms| ms < 10_000),
        "{slow}"
    );
}

// ----- queue and health ------------------------------------------------------------------------

#[tokio::test]
async fn queue_and_health_report_counts_and_the_running_job() {
    // Arrange
    let server = TestServer::start().await;

    // Act + Assert: empty.
    let (status, empty) = server.get("/api/v1/queue").await;
    assert_eq!(status, 200, "{empty}");
    assert_eq!(
        empty,
        json!({
            "queued": 0, "running": 0, "succeeded": 0, "failed": 0,
            "timedOut": 0, "cancelled": 0, "runningJob": null
        }),
        "{empty}"
    );
    let (status, health) = server.get("/health").await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health, json!({"status": "ok", "queued": 0, "running": 0}));

    // One running, one queued, one cancelled.
    let running = server
        .submit(json!({"language": "python", "code": "import time; time.sleep(2)"}))
        .await;
    let running_id = id_of(&running);
    let queued = server
        .submit(json!({"language": "python", "code": "print('q')"}))
        .await;
    let cancelled = server
        .submit(json!({"language": "python", "code": "print('c')"}))
        .await;
    wait_until_running(&server, &running_id).await;
    let (status, body) = server
        .delete(&format!("/api/v1/jobs/{}", id_of(&cancelled)))
        .await;
    assert_eq!(status, 200, "{body}");

    let (status, busy) = server.get("/api/v1/queue").await;
    assert_eq!(status, 200, "{busy}");
    assert_eq!(
        busy,
        json!({
            "queued": 1, "running": 1, "succeeded": 0, "failed": 0,
            "timedOut": 0, "cancelled": 1, "runningJob": running_id
        }),
        "{busy}"
    );
    let (status, health) = server.get("/health").await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health, json!({"status": "ok", "queued": 1, "running": 1}));

    // Everything done.
    let last = server.wait_final(&id_of(&queued)).await;
    assert_eq!(last["status"], "succeeded", "{last}");
    let (_, done) = server.get("/api/v1/queue").await;
    assert_eq!(
        done,
        json!({
            "queued": 0, "running": 0, "succeeded": 2, "failed": 0,
            "timedOut": 0, "cancelled": 1, "runningJob": null
        }),
        "{done}"
    );
}

// ----- MeTTa -----------------------------------------------------------------------------------

#[tokio::test]
async fn metta_job_in_a_session_succeeds() {
    // Arrange
    let server = TestServer::start().await;

    // Act
    let job = server.metta("jobs-test-session", "!(+ 2 3)").await;

    // Assert
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["result"], "[5]\n", "{job}");
    assert_eq!(job["language"], "metta", "{job}");
    assert_eq!(job["sessionId"], "jobs-test-session", "{job}");
    assert!(is_final(&job), "{job}");
}

#[tokio::test]
async fn concurrent_submitters_never_overfill_the_queue_and_each_gets_its_own_position() {
    // Arrange: a sleeping job holds the worker; the queue takes 5 more.
    let server = TestServer::start_with(&[("MAX_QUEUED_JOBS", "5")]).await;
    let sleeper = server.submit(python("import time; time.sleep(3)")).await;
    wait_until_running(&server, &id_of(&sleeper)).await;

    // Act: 30 submitters at once (their inserts share commits).
    let mut tasks = Vec::new();
    for i in 0..30 {
        let client = server.client.clone();
        let url = server.url("/api/v1/jobs");
        tasks.push(tokio::spawn(async move {
            let response = client
                .post(url)
                .json(&json!({"language": "python", "code": format!("print({i})")}))
                .send()
                .await
                .expect("POST");
            read(response).await
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("submitter task"));
    }

    // Assert
    let accepted: Vec<&Value> = answers
        .iter()
        .filter(|(status, _)| *status == 202)
        .map(|(_, job)| job)
        .collect();
    let refused = answers.iter().filter(|(status, _)| *status == 503).count();
    assert_eq!(
        accepted.len(),
        5,
        "exactly the cap is accepted: {answers:?}"
    );
    assert_eq!(
        refused, 25,
        "every other submission is refused: {answers:?}"
    );
    let mut positions: Vec<i64> = accepted
        .iter()
        .map(|job| {
            job["position"]
                .as_i64()
                .expect("a queued job has a position")
        })
        .collect();
    positions.sort();
    assert_eq!(positions, vec![1, 2, 3, 4, 5], "{accepted:?}");
    assert_eq!(
        stored_job_count(&server).await,
        6,
        "nothing else was stored"
    );
    for job in accepted {
        let done = server.wait_final(&id_of(job)).await;
        assert_eq!(done["status"], "succeeded", "{done}");
    }
}

#[tokio::test]
async fn cancelling_a_queued_job_answers_the_requests_waiting_for_it_at_once() {
    // Arrange: a sleeping job holds the worker; another waits behind it, long-polled.
    let server = TestServer::start().await;
    let sleeper = server.submit(python("import time; time.sleep(20)")).await;
    wait_until_running(&server, &id_of(&sleeper)).await;
    let queued = id_of(&server.submit(python("print('never')")).await);
    let client = server.client.clone();
    let url = server.url(&format!("/api/v1/jobs/{queued}?wait=30"));
    let long_wait = tokio::spawn(async move {
        let started = Instant::now();
        let response = client.get(url).send().await.expect("GET");
        (read(response).await, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Act
    let (status, cancelled) = server.delete(&format!("/api/v1/jobs/{queued}")).await;

    // Assert
    assert_eq!(status, 200, "{cancelled}");
    let ((wait_status, waited), took) = long_wait.await.expect("long wait");
    assert_eq!(wait_status, 200, "{waited}");
    assert_eq!(waited["status"], "cancelled", "{waited}");
    assert!(
        took < Duration::from_secs(10),
        "the long wait answers when the job is cancelled, not at its limit: {took:?}"
    );
}

#[tokio::test]
async fn python_jobs_after_a_long_idle_find_their_interpreters_alive() {
    // Arrange: the interpreters for the next jobs are started ahead of time, then the
    // server idles longer than a runtime's blocking thread lives (10 s): a child's
    // PR_SET_PDEATHSIG fires when the *thread* that started it exits.
    let server = TestServer::start().await;
    let warm = server.run(python("print('warm')")).await;
    assert_eq!(warm["status"], "succeeded", "{warm}");
    tokio::time::sleep(Duration::from_secs(12)).await;

    // Act
    let first = server.run(python("print('after idle')")).await;
    let second = server.run(python("print('and again')")).await;

    // Assert
    for (job, output) in [(&first, "after idle\n"), (&second, "and again\n")] {
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["output"], output, "{job}");
    }
}

/// Output and exit status of `python -I -c code`, run directly.
fn direct_python(code: &str) -> (String, String, i32) {
    let output = std::process::Command::new(crate::support::project_python())
        .arg("-I")
        .arg("-c")
        .arg(code)
        .output()
        .expect("run python directly");
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        output.status.code().unwrap_or(-1),
    )
}

#[tokio::test]
async fn a_python_job_ends_as_python_dash_c_does_threads_atexit_finalizers_and_exit_status() {
    // Arrange: what happens at the end of a program, where the service ends interpreters
    // faster than the interpreter's own teardown.
    let server = TestServer::start().await;
    let programs = [
        "import atexit, threading, time\n\
         class Noisy:\n    def __del__(self): print('deleted', flush=True)\n\
         keep = Noisy()\n_private = Noisy()\n\
         atexit.register(lambda: print('atexit ran'))\n\
         def late():\n    time.sleep(0.2)\n    print('thread done')\n\
         threading.Thread(target=late).start()\nprint('main done')\n",
        "import sys\nprint('before')\nsys.exit(3)\n",
        "print('partial')\nraise ValueError('boom')\n",
    ];
    for code in programs {
        let (stdout, stderr, status) = direct_python(code);

        // Act
        let job = server.run(python(code)).await;

        // Assert
        assert_eq!(
            job["output"], stdout,
            "stdout as python -I -c prints it: {job}"
        );
        assert_eq!(
            job["stderr"], stderr,
            "stderr as python -I -c prints it: {job}"
        );
        let expected = if status == 0 { "succeeded" } else { "failed" };
        assert_eq!(job["status"], expected, "exit status {status}: {job}");
    }
}

#[tokio::test]
async fn a_python_job_killed_by_a_signal_shows_the_signal_and_what_it_wrote_to_stderr() {
    // Arrange
    let server = TestServer::start().await;
    let code = "import os, sys\nsys.stderr.write('the reason it aborts\\n')\nsys.stderr.flush()\nos.abort()";

    // Act
    let job = server
        .run(json!({"language": "python", "code": code}))
        .await;

    // Assert
    assert_eq!(job["status"], "failed", "{job}");
    let error = job["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with(&format!(
            "{PYTHON_KILLED} {}",
            describe_signal(libc::SIGABRT)
        )),
        "the signal is named: {error}"
    );
    assert!(
        error.ends_with(&format!("{LAST_WORDS}\nthe reason it aborts")),
        "the interpreter's last words are shown: {error}"
    );
}
