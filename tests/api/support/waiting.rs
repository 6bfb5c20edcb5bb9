//! Waiting for the server: a job's final state (long-wait) and a job that starts running
//! (polling).

use std::time::{Duration, Instant};

use serde_json::Value;

use super::TestServer;

impl TestServer {
    /// Waits for a job's final state with `?wait=` (up to 60 s per call, 3 calls).
    pub async fn wait_final(&self, id: &str) -> Value {
        for _ in 0..3 {
            let (status, job) = self.get(&format!("/api/v1/jobs/{id}?wait=60")).await;
            assert_eq!(status, 200, "{job}");
            if is_final(&job) {
                return job;
            }
        }
        panic!("job {id} did not finish");
    }
}

/// True for a job JSON in a final state.
pub fn is_final(job: &Value) -> bool {
    matches!(
        job["status"].as_str(),
        Some("succeeded" | "failed" | "timed_out" | "cancelled")
    )
}

/// Polls a job (without `?wait=`, which only waits for a final state) until it is `running`,
/// and returns it; panics if it leaves `queued` for anything else or takes over 30 s.
pub async fn wait_until_running(server: &TestServer, id: &str) -> Value {
    let started = Instant::now();
    loop {
        let (status, job) = server.get(&format!("/api/v1/jobs/{id}")).await;
        assert_eq!(status, 200, "{job}");
        if job["status"] == "running" {
            return job;
        }
        assert!(
            job["status"] == "queued",
            "job {id} should be queued until it runs: {job}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "job {id} did not start running within 30 s: {job}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// True for a job JSON that ended by itself (final, but not cancelled).
pub fn is_final_status(job: &Value) -> bool {
    matches!(
        job["status"].as_str(),
        Some("succeeded" | "failed" | "timed_out")
    )
}
