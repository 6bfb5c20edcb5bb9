//! What operators rely on: every answer names its request (`X-Request-Id`, echoed or made),
//! and the JSON logs tie a request's lines to its jobs' lines in the worker by that id.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{id_of, python, TestServer};

/// The `X-Request-Id` of a response (panics when it has none).
fn request_id_of(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("x-request-id")
        .unwrap_or_else(|| panic!("{} answered without X-Request-Id", response.url()))
        .to_str()
        .expect("a visible-ASCII id")
        .to_string()
}

#[tokio::test]
async fn every_answer_carries_a_request_id_echoed_from_the_client_or_made() {
    // Arrange
    let server = TestServer::start().await;
    let client = &server.client;

    // Act
    let echoed = client
        .get(server.url("/health"))
        .header("X-Request-Id", "lesson-3.run:42")
        .send()
        .await
        .expect("GET");
    let made = client.get(server.url("/health")).send().await.expect("GET");
    let made_again = client.get(server.url("/health")).send().await.expect("GET");
    let unusable = client
        .get(server.url("/queue-status"))
        .header("X-Request-Id", "has spaces and is not usable")
        .send()
        .await
        .expect("GET");
    let error = client
        .get(server.url("/no/such/route"))
        .header("X-Request-Id", "trace-404")
        .send()
        .await
        .expect("GET");
    let legacy = client
        .post(server.url("/run-python"))
        .header("Content-Type", "application/json")
        .body(json!({"code": "print(1)"}).to_string())
        .send()
        .await
        .expect("POST");

    // Assert
    assert_eq!(request_id_of(&echoed), "lesson-3.run:42");
    let (first, second) = (request_id_of(&made), request_id_of(&made_again));
    assert!(
        uuid::Uuid::parse_str(&first).is_ok(),
        "a made id is a UUID: {first}"
    );
    assert_ne!(first, second, "each request gets its own id");
    let replaced = request_id_of(&unusable);
    assert_ne!(replaced, "has spaces and is not usable");
    assert!(uuid::Uuid::parse_str(&replaced).is_ok(), "{replaced}");
    assert_eq!(error.status().as_u16(), 404);
    assert_eq!(request_id_of(&error), "trace-404", "errors carry it too");
    assert!(uuid::Uuid::parse_str(&request_id_of(&legacy)).is_ok());
    let body = legacy.text().await.expect("body");
    assert_eq!(
        body, r#"{"result":"1\n"}"#,
        "the legacy body is unchanged by the id"
    );
}

#[tokio::test]
async fn json_logs_parse_and_tie_a_request_to_its_jobs_lines_in_the_worker() {
    // Arrange
    let server = TestServer::start_with(&[("LOG_FORMAT", "json")]).await;
    let request_id = format!("trace-{}", uuid::Uuid::new_v4().simple());

    // Act: a Python job submitted with an id, waited for.
    let response = server
        .client
        .post(server.url("/api/v1/jobs?wait=30"))
        .header("X-Request-Id", &request_id)
        .json(&python("print('traced')"))
        .send()
        .await
        .expect("POST");
    assert_eq!(request_id_of(&response), request_id);
    let job: Value = response.json().await.expect("job JSON");
    assert_eq!(job["status"], "succeeded", "{job}");
    let job_id = id_of(&job);

    // Assert: every line is a JSON object; the request's lines and the worker's lines about
    // its job carry the request's id.
    let lines = wait_for_log_lines(&server, |lines| {
        lines.iter().any(|line| {
            line["fields"]["message"] == "job finished" && line["span"]["job_id"] == job_id
        })
    })
    .await;
    let carrying: Vec<&Value> = lines
        .iter()
        .filter(|line| {
            line["spans"]
                .as_array()
                .is_some_and(|spans| spans.iter().any(|span| span["request_id"] == request_id))
        })
        .collect();
    let message_of = |line: &Value| line["fields"]["message"].as_str().unwrap_or("").to_string();
    let messages: Vec<String> = carrying.iter().map(|line| message_of(line)).collect();
    for expected in ["job accepted", "job started", "job finished", "answered"] {
        assert!(
            messages.iter().any(|message| message == expected),
            "a '{expected}' line carries request_id {request_id}; lines carrying it: {messages:?}"
        );
    }
    let worker_lines: Vec<&&Value> = carrying
        .iter()
        .filter(|line| line["target"] == "metta_learner_backend::worker")
        .collect();
    assert!(!worker_lines.is_empty(), "the worker's lines carry it");
    for line in worker_lines {
        assert_eq!(line["span"]["job_id"], job_id, "{line}");
    }
}

/// The server's log as JSON objects, once `done` holds (or after 10 s); panics on a line that
/// is not a JSON object.
async fn wait_for_log_lines(server: &TestServer, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let lines: Vec<Value> = server
            .logs()
            .lines()
            .map(|line| {
                let value: Value = serde_json::from_str(line)
                    .unwrap_or_else(|_| panic!("a log line is not JSON: {line:?}"));
                assert!(value.is_object(), "a log line is not an object: {line}");
                value
            })
            .collect();
        if done(&lines) || started.elapsed() > Duration::from_secs(10) {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
