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
    let server = TestServer::start_with(&[
        ("LOG_FORMAT", "json"),
        ("RUST_LOG", "info,metta_learner_backend=debug"),
    ])
    .await;
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
        let answered = lines.iter().any(|line| {
            line["fields"]["message"] == "answered" && line["span"]["request_id"] == request_id
        });
        let finished = lines.iter().any(|line| {
            line["fields"]["message"] == "job finished" && line["span"]["job_id"] == job_id
        });
        answered && finished
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

// ----- metrics ------------------------------------------------------------------------------

/// The value of the sample `name{labels}` in a Prometheus text page (labels in any order;
/// every label given must match), or 0 when absent.
fn sample(page: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((metric, rest)) => (metric, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let all_match = labels
                .iter()
                .all(|(key, wanted)| label_text.contains(&format!("{key}=\"{wanted}\"")));
            all_match.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

async fn scrape(server: &TestServer, token: Option<&str>) -> (u16, String) {
    let mut request = server.client.get(server.url("/metrics"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("GET /metrics");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

#[tokio::test]
async fn metrics_count_real_jobs_engine_events_and_refusals_behind_their_token() {
    // Arrange
    let server = TestServer::start_with(&[
        ("METRICS_TOKEN", "scrape-secret"),
        ("ENGINE_KILL_GRACE_MS", "300"),
        ("RATE_LIMIT_PER_MINUTE", "600"),
        ("RATE_LIMIT_BURST", "30"),
    ])
    .await;
    let (status, before) = scrape(&server, Some("scrape-secret")).await;
    assert_eq!(status, 200, "{before}");

    // Act: jobs of each outcome, an edited cell (a replay), a step killed at its deadline,
    // and refused requests.
    let ok = server.run(python("print(1)")).await;
    let failed = server.run(python("raise SystemExit(3)")).await;
    let metta = server
        .run(json!({"language": "metta", "sessionId": "m1", "codeId": "c1", "code": "(= (f) 1)"}))
        .await;
    let edited = server
        .run(json!({"language": "metta", "sessionId": "m1", "codeId": "c1", "code": "(= (f) 2)"}))
        .await;
    let killed = server
        .run(json!({"language": "metta", "sessionId": "m2", "timeoutSecs": 1, "code": "!((py-atom time.sleep) 30)"}))
        .await;
    let after_kill = server.metta("m3", "!(+ 1 1)").await;
    let (not_found, _) = server.get("/api/v1/jobs/not-a-job-id").await;
    let mut rate_limited = 0;
    for _ in 0..40 {
        let (status, _) = server
            .post("/api/v1/jobs", json!({"language": "cobol", "code": "x"}))
            .await;
        if status == 429 {
            rate_limited += 1;
        }
    }
    let (unauthorized, _) = scrape(&server, None).await;
    let (forbidden, _) = scrape(&server, Some("wrong")).await;
    let (status, page) = scrape(&server, Some("scrape-secret")).await;

    // Assert
    assert_eq!(
        (unauthorized, forbidden),
        (401, 403),
        "the token guards /metrics"
    );
    assert_eq!(status, 200, "{page}");
    assert_eq!(ok["status"], "succeeded", "{ok}");
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(metta["status"], "succeeded", "{metta}");
    assert_eq!(edited["status"], "succeeded", "{edited}");
    assert_eq!(killed["status"], "timed_out", "{killed}");
    assert_eq!(after_kill["status"], "succeeded", "{after_kill}");
    assert_eq!(not_found, 400, "a malformed job id is a bad request");
    assert!(rate_limited > 0, "40 quick submissions pass a burst of 30");
    let moved = |name: &str, labels: &[(&str, &str)]| {
        sample(&page, name, labels) - sample(&before, name, labels)
    };
    assert_eq!(
        moved("mlb_jobs_accepted_total", &[("language", "python")]),
        2.0,
        "{page}"
    );
    assert_eq!(
        moved("mlb_jobs_accepted_total", &[("language", "metta")]),
        4.0,
        "{page}"
    );
    let finished = |language, status| {
        moved(
            "mlb_jobs_finished_total",
            &[("kind", "run"), ("language", language), ("status", status)],
        )
    };
    assert_eq!(finished("python", "succeeded"), 1.0, "{page}");
    assert_eq!(finished("python", "failed"), 1.0, "{page}");
    assert_eq!(finished("metta", "succeeded"), 3.0, "{page}");
    assert_eq!(finished("metta", "timed_out"), 1.0, "{page}");
    assert_eq!(
        moved("mlb_job_queue_wait_seconds_count", &[]),
        6.0,
        "{page}"
    );
    assert_eq!(
        moved("mlb_job_run_seconds_count", &[("language", "metta")]),
        4.0,
        "{page}"
    );
    assert!(
        page.contains("mlb_job_run_seconds_bucket{"),
        "run time is a histogram with buckets: {page}"
    );
    assert!(
        sample(&page, "mlb_engine_starts_total", &[]) >= 2.0,
        "the first engine and the one after the kill: {page}"
    );
    assert_eq!(
        moved("mlb_engine_kills_total", &[("reason", "deadline")]),
        1.0,
        "{page}"
    );
    assert!(
        moved("mlb_engine_session_replays_total", &[]) >= 1.0,
        "the edited cell rebuilt its session: {page}"
    );
    assert_eq!(
        sample(&page, "mlb_queue_depth", &[("state", "queued")]),
        0.0,
        "{page}"
    );
    assert!(
        page.contains("mlb_queue_depth{state=\"running\"}"),
        "{page}"
    );
    assert_eq!(
        moved(
            "mlb_http_requests_refused_total",
            &[("reason", "rate_limited")]
        ),
        rate_limited as f64,
        "{page}"
    );
    assert_eq!(
        moved(
            "mlb_http_requests_refused_total",
            &[("reason", "bad_request")]
        ),
        1.0 + (40 - rate_limited) as f64,
        "the bad job id and each submission naming cobol: {page}"
    );
    assert_eq!(
        moved(
            "mlb_http_requests_refused_total",
            &[("reason", "unauthorized")]
        ),
        1.0,
        "{page}"
    );
    assert_eq!(
        moved(
            "mlb_http_requests_refused_total",
            &[("reason", "forbidden")]
        ),
        1.0,
        "{page}"
    );
}
