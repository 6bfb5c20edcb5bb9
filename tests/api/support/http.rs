//! HTTP requests to a `TestServer`: JSON in, status and JSON out (every answer must be JSON),
//! raw bodies and headers when a test needs them, and the v1 API's common calls.

use reqwest::header::HeaderMap;
use serde_json::{json, Value};

use super::TestServer;

impl TestServer {
    /// POST a JSON body; returns status and parsed JSON body.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("POST");
        read(response).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.client.get(self.url(path)).send().await.expect("GET");
        read(response).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .delete(self.url(path))
            .send()
            .await
            .expect("DELETE");
        read(response).await
    }

    /// Submits a job (v1) and returns the answer's JSON; panics unless 200 or 202.
    pub async fn submit(&self, body: Value) -> Value {
        let (status, job) = self.post("/api/v1/jobs", body).await;
        assert!(
            status == 200 || status == 202,
            "submit answered {status}: {job}"
        );
        job
    }

    /// Submits a job and waits (up to 60 s) for its final state.
    pub async fn run(&self, body: Value) -> Value {
        let job = self.submit(body).await;
        self.wait_final(job["id"].as_str().expect("id")).await
    }

    /// Runs MeTTa code in a session and returns the final job.
    pub async fn metta(&self, session: &str, code: &str) -> Value {
        self.run(json!({"language": "metta", "code": code, "sessionId": session}))
            .await
    }
}

/// Status and JSON body of a response (panics if the body is not JSON: every answer must be).
pub async fn read(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("answer {status} is not JSON: {text:?}"));
    (status, value)
}

/// The answer to a request: status, headers and JSON body (panics if the body is not JSON).
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    /// The `Retry-After` header in whole seconds, if there is one and it is a number.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.headers
            .get("retry-after")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok())
    }
}

/// Reads a response into an `Answer` (panics if the body is not JSON: every answer must be).
pub async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("answer {status} is not JSON: {text:?}"));
    Answer {
        status,
        headers,
        body,
    }
}

/// POSTs raw bytes as a JSON body (`Content-Type: application/json`), with optional extra
/// headers.
pub async fn post_raw(
    server: &TestServer,
    path: &str,
    body: impl AsRef<[u8]>,
    headers: &[(&str, &str)],
) -> Answer {
    let mut request = server
        .client
        .post(server.url(path))
        .header("Content-Type", "application/json")
        .body(body.as_ref().to_vec());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    answer(request.send().await.expect("POST")).await
}

/// POSTs a JSON value as the body.
pub async fn post_json(server: &TestServer, path: &str, body: &Value) -> Answer {
    post_raw(server, path, body.to_string(), &[]).await
}

/// A v1 job body running `code` in Python.
pub fn python(code: &str) -> Value {
    json!({"language": "python", "code": code})
}

/// The `id` of a job JSON (panics if it has none).
pub fn id_of(job: &Value) -> String {
    job["id"]
        .as_str()
        .unwrap_or_else(|| panic!("job has no id: {job}"))
        .to_string()
}

/// The job counts of `GET /api/v1/queue` (panics unless it answers 200).
pub async fn queue_counts(server: &TestServer) -> Value {
    let (status, counts) = server.get("/api/v1/queue").await;
    assert_eq!(status, 200, "{counts}");
    counts
}

/// The number of stored jobs in every state, from `GET /api/v1/queue`.
pub async fn stored_job_count(server: &TestServer) -> i64 {
    let counts = queue_counts(server).await;
    [
        "queued",
        "running",
        "succeeded",
        "failed",
        "timedOut",
        "cancelled",
    ]
    .iter()
    .map(|name| {
        counts[*name]
            .as_i64()
            .unwrap_or_else(|| panic!("queue counts lack {name}: {counts}"))
    })
    .sum()
}
