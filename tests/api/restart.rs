//! Durability across stops: jobs interrupted by kill -9 are re-queued once and failed the
//! second time, SIGTERM lets the running job finish within the grace period and leaves the
//! queue for the next start, and an expired grace abandons the job to be re-queued.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{id_of, python, stored_jobs, wait_until_running, StoredJob, TestServer};

// ----- local helpers ------------------------------------------------------------------------

fn stored<'a>(jobs: &'a [StoredJob], id: &str) -> &'a StoredJob {
    jobs.iter()
        .find(|job| job.id == id)
        .unwrap_or_else(|| panic!("job {id} is not in the database: {jobs:?}"))
}

/// True while some process's command line contains `marker`.
fn process_with_marker_exists(marker: &str) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        std::fs::read(entry.path().join("cmdline"))
            .map(|cmdline| String::from_utf8_lossy(&cmdline).contains(marker))
            .unwrap_or(false)
    })
}

// ----- kill -9 -------------------------------------------------------------------------------

#[tokio::test]
async fn kill9_then_restart_reruns_the_interrupted_job_once_and_keeps_the_queue_order() {
    // Arrange: a running job and ten queued behind it.
    let mut server = TestServer::start().await;
    let slow = server
        .submit(python("import time; time.sleep(3); print('slow')"))
        .await;
    let slow_id = id_of(&slow);
    wait_until_running(&server, &slow_id).await;
    let mut quick = Vec::new();
    for i in 0..10 {
        let job = server.submit(python(&format!("print({i})"))).await;
        assert_eq!(job["status"], "queued", "{job}");
        quick.push((i, id_of(&job)));
    }

    // Act
    server.kill9();
    server.restart();

    // Assert
    let slow = server.wait_final(&slow_id).await;
    assert_eq!(slow["status"], "succeeded", "{slow}");
    assert_eq!(
        slow["attempts"], 2,
        "the interrupted job ran a second time: {slow}"
    );
    assert_eq!(slow["output"], "slow\n", "{slow}");
    let mut jobs = vec![slow];
    for (i, id) in &quick {
        let job = server.wait_final(id).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["attempts"], 1, "a queued job runs once: {job}");
        assert_eq!(job["output"], format!("{i}\n"), "{job}");
        jobs.push(job);
    }
    jobs.sort_by_key(|job| job["seq"].as_i64().expect("seq"));
    assert_eq!(
        jobs[0]["id"],
        slow_id.as_str(),
        "the interrupted job has the lowest seq"
    );
    for pair in jobs.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(
            a["startedAt"].as_str().expect("startedAt")
                < b["startedAt"].as_str().expect("startedAt"),
            "after the restart, jobs start in seq order:\n{a}\n{b}"
        );
    }
    let (_, counts) = server.get("/api/v1/queue").await;
    assert_eq!(
        counts,
        json!({
            "queued": 0, "running": 0, "succeeded": 11, "failed": 0,
            "timedOut": 0, "cancelled": 0, "runningJob": null
        }),
        "every job reached one final state: {counts}"
    );
}

#[tokio::test]
async fn a_job_interrupted_twice_fails_and_the_queue_goes_on() {
    // Arrange: a job that is still running when the server is killed, twice.
    let mut server = TestServer::start().await;
    let doomed = server.submit(python("import time; time.sleep(30)")).await;
    let doomed_id = id_of(&doomed);
    let first = wait_until_running(&server, &doomed_id).await;
    assert_eq!(first["attempts"], 1, "{first}");
    server.kill9();
    server.restart();
    let second = wait_until_running(&server, &doomed_id).await;
    assert_eq!(second["attempts"], 2, "{second}");

    // Act
    server.kill9();
    server.restart();

    // Assert
    let (status, job) = server.get(&format!("/api/v1/jobs/{doomed_id}")).await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["attempts"], 2, "it is not run a third time: {job}");
    assert!(
        job["error"].as_str().unwrap_or("").contains("interrupted"),
        "the error says why: {job}"
    );
    assert!(job["finishedAt"].is_string(), "{job}");
    let after = server.run(python("print('next')")).await;
    assert_eq!(after["status"], "succeeded", "{after}");
    assert_eq!(after["output"], "next\n", "{after}");
    let (_, job) = server.get(&format!("/api/v1/jobs/{doomed_id}")).await;
    assert_eq!(
        job["status"], "failed",
        "the failed job stays failed: {job}"
    );
}

// ----- SIGTERM -------------------------------------------------------------------------------

#[tokio::test]
async fn sigterm_finishes_the_running_job_and_keeps_the_queue_for_the_next_start() {
    // Arrange: one running job, two queued.
    let mut server = TestServer::start_with(&[("SHUTDOWN_GRACE_SECS", "10")]).await;
    let running = server
        .submit(python("import time; time.sleep(1); print('finished')"))
        .await;
    let running_id = id_of(&running);
    let queued: Vec<String> = [
        server.submit(python("print('q1')")).await,
        server.submit(python("print('q2')")).await,
    ]
    .iter()
    .map(id_of)
    .collect();
    wait_until_running(&server, &running_id).await;

    // Act
    let started = Instant::now();
    let exit = server.terminate(Duration::from_secs(20));
    let elapsed = started.elapsed();

    // Assert: a clean exit once the running job finished.
    let exit = exit.unwrap_or_else(|| {
        panic!(
            "the server did not exit within 20 s of SIGTERM; its log:\n{}",
            server.logs()
        )
    });
    assert!(
        exit.success(),
        "the server exits with success after SIGTERM, not {exit:?}; its log:\n{}",
        server.logs()
    );
    assert!(
        elapsed < Duration::from_secs(10),
        "shutdown took {elapsed:?} with a 1 s job running"
    );
    let jobs = stored_jobs(&server).await;
    let finished = stored(&jobs, &running_id);
    assert_eq!(
        finished.status, "succeeded",
        "the running job finished: {jobs:?}"
    );
    assert_eq!(finished.attempts, 1, "{jobs:?}");
    for id in &queued {
        let job = stored(&jobs, id);
        assert_eq!(job.status, "queued", "queued jobs stay queued: {jobs:?}");
        assert_eq!(job.attempts, 0, "{jobs:?}");
        assert!(job.started_at.is_none(), "{jobs:?}");
    }

    // After a restart the queue runs.
    server.restart();
    for (id, output) in queued.iter().zip(["q1\n", "q2\n"]) {
        let job = server.wait_final(id).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["attempts"], 1, "{job}");
        assert_eq!(job["output"], output, "{job}");
    }
    let (_, job) = server.get(&format!("/api/v1/jobs/{running_id}")).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(
        job["attempts"], 1,
        "the finished job is not run again: {job}"
    );
    assert_eq!(job["output"], "finished\n", "{job}");
}

#[tokio::test]
async fn an_expired_shutdown_grace_abandons_the_job_and_the_next_start_requeues_it() {
    // Arrange: a 30 s job, marked so its process can be found; a 1 s grace.
    let mut server = TestServer::start_with(&[("SHUTDOWN_GRACE_SECS", "1")]).await;
    let marker = format!("grace-expiry-{}", uuid::Uuid::new_v4().simple());
    let job = server
        // The interpreter replaces itself with one whose command line carries the marker
        // (the job's code itself reaches the interpreter through a pipe, not its arguments).
        .submit(python(&format!(
            "import os, sys; os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(30)', '{marker}'])"
        )))
        .await;
    let id = id_of(&job);
    wait_until_running(&server, &id).await;
    let spawned = Instant::now();
    while !process_with_marker_exists(&marker) {
        assert!(
            spawned.elapsed() < Duration::from_secs(5),
            "the running job's Python process should be visible"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Act
    let started = Instant::now();
    let exit = server.terminate(Duration::from_secs(15));
    let elapsed = started.elapsed();

    // Assert: a prompt exit that leaves nothing running and the job marked running.
    let exit = exit.unwrap_or_else(|| {
        panic!(
            "the server did not exit within 15 s of SIGTERM with a 1 s grace; its log:\n{}",
            server.logs()
        )
    });
    assert!(
        elapsed < Duration::from_secs(5),
        "with SHUTDOWN_GRACE_SECS=1 the server should exit within a few seconds, took {elapsed:?}"
    );
    assert!(
        exit.success(),
        "the server exits with success after SIGTERM, not {exit:?}; its log:\n{}",
        server.logs()
    );
    let gone = Instant::now();
    while process_with_marker_exists(&marker) {
        assert!(
            gone.elapsed() < Duration::from_secs(3),
            "the abandoned job's Python process outlived the server"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let jobs = stored_jobs(&server).await;
    let abandoned = stored(&jobs, &id);
    assert_eq!(
        abandoned.status, "running",
        "the abandoned job is left running: {jobs:?}"
    );
    assert_eq!(abandoned.attempts, 1, "{jobs:?}");

    // After a restart it is re-queued and run a second time.
    server.restart();
    let job = wait_until_running(&server, &id).await;
    assert_eq!(
        job["attempts"], 2,
        "the re-queued job runs as attempt 2: {job}"
    );
    assert!(job["finishedAt"].is_null(), "{job}");
}

// ----- shutdown and the playground's waiting requests ------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_gives_waiting_playground_requests_their_result_or_503_not_408() {
    // Arrange: a legacy request waits for a running job; another waits behind it, queued.
    let mut server = TestServer::start_with(&[("SHUTDOWN_GRACE_SECS", "20")]).await;
    let post = |code: &'static str| {
        let client = server.client.clone();
        let url = server.url("/run-python");
        tokio::spawn(async move {
            let response = client
                .post(url)
                .json(&json!({ "code": code }))
                .send()
                .await
                .expect("POST");
            (
                response.status().as_u16(),
                response.json::<serde_json::Value>().await.expect("JSON"),
            )
        })
    };
    let running = post("import time; time.sleep(2); print('finished in the grace')");
    let deadline = Instant::now() + Duration::from_secs(30);
    while crate::support::queue_counts(&server).await["running"] != 1 {
        assert!(Instant::now() < deadline, "the job never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let queued = post("print('never started')");
    while crate::support::queue_counts(&server).await["queued"] != 1 {
        assert!(Instant::now() < deadline, "the second job was never queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Act
    let status = server.terminate(Duration::from_secs(60));

    // Assert
    assert!(status.is_some_and(|status| status.success()), "{status:?}");
    let (running_status, running_body) = running.await.expect("request task");
    assert_eq!(running_status, 200, "{running_body}");
    assert_eq!(running_body["result"], "finished in the grace\n");
    let (queued_status, queued_body) = queued.await.expect("request task");
    assert_eq!(queued_status, 503, "{queued_body}");
    assert!(
        queued_body["error"]
            .as_str()
            .unwrap_or("")
            .contains("/api/v1/jobs/"),
        "{queued_body}"
    );
}
