//! A database made by the build before the sqlx store (`tests/fixtures/made-by-user-version-build.db`:
//! made by that build's binary, migrations counted in `PRAGMA user_version`, stopped by
//! `kill -9` with one job running and one queued) is adopted by today's build with nothing lost.

use std::path::Path;

use crate::support::{stored_jobs, TestServer};

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/made-by-user-version-build.db")
}

#[tokio::test]
async fn a_database_of_the_user_version_build_keeps_its_jobs_and_sessions() {
    // Arrange: the fixture holds sessions alice (a definition and its use) and bob (two
    // cells and a failed parse), a finished Python job with an idempotency key, a Python job
    // interrupted while running and one still queued.
    let mut server = TestServer::start_on_copy_of(&fixture(), &[]).await;

    // Act: the sessions go on where they were; the interrupted and queued jobs run.
    let (status, alice) = server.get("/api/v1/sessions/alice").await;
    let fact = server.metta("alice", "!(fact 6)").await;
    let greeting = server.metta("bob", "!(greeting)").await;
    let before = stored_jobs(&server).await;
    for job in before.iter().filter(|job| job.seq >= 7) {
        let finished = server.wait_final(&job.id).await;
        assert_eq!(finished["status"], "succeeded", "{finished}");
    }
    server.terminate(std::time::Duration::from_secs(20));
    let jobs = stored_jobs(&server).await;

    // Assert
    assert_eq!(status, 200, "{alice}");
    let cells: Vec<&str> = alice["cells"]
        .as_array()
        .expect("cells")
        .iter()
        .map(|cell| cell["codeId"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(cells, ["fact", "use"], "alice's history is kept: {alice}");
    assert_eq!(
        fact["result"], "[720]\n",
        "alice's definition still holds: {fact}"
    );
    assert_eq!(greeting["result"], "[hello]\n", "{greeting}");
    assert_eq!(
        jobs[5].key.as_deref(),
        Some("fixture-key-1"),
        "{}",
        jobs[5].describe()
    );
    assert_eq!(jobs[4].status, "failed", "{}", jobs[4].describe());
    let interrupted = &jobs[6];
    assert_eq!(
        (interrupted.status.as_str(), interrupted.attempts),
        ("succeeded", 2),
        "the job interrupted by the kill ran again once: {}",
        interrupted.describe()
    );
    assert_eq!(jobs[7].status, "succeeded", "{}", jobs[7].describe());
    assert_eq!(jobs.len(), 10, "8 old jobs and 2 new ones");
    assert!(
        jobs.windows(2).all(|pair| pair[0].seq < pair[1].seq),
        "acceptance order is kept"
    );
    // The new jobs continue the old sequence.
    assert_eq!(jobs[8].seq, 9);
}
