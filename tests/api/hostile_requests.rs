//! Hostile HTTP clients: oversized and overcrowded request heads, clients that stall in their
//! headers or body, deeply nested, oversized or non-UTF-8 JSON, over-long and malformed ids,
//! floods over the per-client rate limit and a full queue. Each is answered with a clear error
//! (JSON `{"error": "..."}`, even where hyper answers before the router) or cut off, and
//! stores nothing.

use std::time::{Duration, Instant};

use reqwest::header::HeaderValue;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{
    answer, post_json, post_raw, stored_job_count, wait_until_running, Answer, TestServer,
};

// ----- local helpers ------------------------------------------------------------------------

/// Asserts an error answer: the status and a non-empty `error` message.
fn assert_error(answer: &Answer, status: u16, what: &str) {
    assert_eq!(
        answer.status, status,
        "{what}: expected {status}, got {}: {}",
        answer.status, answer.body
    );
    assert!(
        answer.body["error"]
            .as_str()
            .is_some_and(|message| !message.trim().is_empty()),
        "{what}: the answer must be {{\"error\": \"...\"}}: {}",
        answer.body
    );
}

async fn assert_stored(server: &TestServer, expected: i64, what: &str) {
    let stored = stored_job_count(server).await;
    assert_eq!(
        stored, expected,
        "{what}: {expected} jobs should be stored, found {stored}"
    );
}

/// The server still answers an ordinary request.
async fn assert_healthy(server: &TestServer) {
    let (status, body) = server.get("/health").await;
    assert_eq!(status, 200, "the server answers after the attack: {body}");
}

fn python_job() -> Value {
    json!({"language": "python", "code": "print(1)"})
}

/// What came back on a raw connection.
#[derive(Debug)]
struct RawAnswer {
    status: Option<u16>,
    head: String,
    body: Vec<u8>,
    /// The server closed the connection (or reset it) within the limit.
    closed: bool,
    elapsed: Duration,
}

fn address(server: &TestServer) -> String {
    server.base.trim_start_matches("http://").to_string()
}

/// Sends `bytes` on a new connection, then reads until the server closes it or `limit`
/// passes.
async fn raw_exchange(server: &TestServer, bytes: &[u8], limit: Duration) -> RawAnswer {
    let mut stream = TcpStream::connect(address(server)).await.expect("connect");
    stream.write_all(bytes).await.expect("send");
    read_until_closed(&mut stream, limit).await
}

async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> RawAnswer {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let closed = loop {
        let remaining = limit.saturating_sub(started.elapsed());
        match tokio::time::timeout(remaining, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
            Err(_) => break false,
        }
    };
    let elapsed = started.elapsed();
    let split = received
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .unwrap_or(received.len());
    let head = String::from_utf8_lossy(&received[..split]).into_owned();
    let body = received[(split + 4).min(received.len())..].to_vec();
    let status = head
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok());
    RawAnswer {
        status,
        head,
        body,
        closed,
        elapsed,
    }
}

/// Asserts a raw answer is `{"error": "..."}` with a JSON content type, its message naming
/// `names` (the setting the client ran into).
fn assert_json_error(answer: &RawAnswer, names: &str) {
    assert!(
        answer
            .head
            .to_ascii_lowercase()
            .contains("content-type: application/json"),
        "the answer says it is JSON: {answer:?}"
    );
    let json: Value = serde_json::from_slice(&answer.body).unwrap_or_else(|_| {
        panic!(
            "the answer's body is not JSON: {:?}",
            String::from_utf8_lossy(&answer.body)
        )
    });
    let message = json["error"].as_str().unwrap_or_default();
    assert!(message.contains(names), "the error names {names}: {json}");
}

fn post_head(server: &TestServer, content_length: usize, extra_headers: &str) -> Vec<u8> {
    format!(
        "POST /api/v1/jobs HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {content_length}\r\n{extra_headers}Connection: close\r\n\r\n",
        address(server)
    )
    .into_bytes()
}

// ----- oversized request heads --------------------------------------------------------------

#[tokio::test]
async fn a_header_over_max_header_bytes_answers_431_and_stores_nothing() {
    // Arrange
    let server = TestServer::start_with(&[("MAX_HEADER_BYTES", "8192")]).await;
    let body = python_job().to_string();
    let big = format!("X-Padding: {}\r\n", "a".repeat(20_000));
    let mut request = post_head(&server, body.len(), &big);
    request.extend_from_slice(body.as_bytes());

    // Act
    let answer = raw_exchange(&server, &request, Duration::from_secs(5)).await;

    // Assert
    assert_eq!(
        answer.status,
        Some(431),
        "a 20 KB header over MAX_HEADER_BYTES=8192: {answer:?}"
    );
    assert_json_error(&answer, "MAX_HEADER_BYTES");
    assert_stored(&server, 0, "a request refused for its head").await;
    assert_healthy(&server).await;
}

#[tokio::test]
async fn too_many_headers_answer_431_and_store_nothing() {
    // Arrange
    let server = TestServer::start_with(&[("MAX_HEADERS", "16")]).await;
    let body = python_job().to_string();
    let many: String = (0..40).map(|i| format!("X-Header-{i}: {i}\r\n")).collect();
    let mut request = post_head(&server, body.len(), &many);
    request.extend_from_slice(body.as_bytes());

    // Act
    let answer = raw_exchange(&server, &request, Duration::from_secs(5)).await;

    // Assert
    assert_eq!(
        answer.status,
        Some(431),
        "45 headers over MAX_HEADERS=16: {answer:?}"
    );
    assert_json_error(&answer, "MAX_HEADERS");
    assert_stored(&server, 0, "a request with too many headers").await;
    assert_healthy(&server).await;
}

// ----- slow clients -------------------------------------------------------------------------

#[tokio::test]
async fn a_client_stalling_in_its_headers_is_disconnected() {
    // Arrange
    let server = TestServer::start_with(&[("HEADER_READ_TIMEOUT_SECS", "1")]).await;
    let mut stream = TcpStream::connect(address(&server)).await.expect("connect");
    stream
        .write_all(b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Ty")
        .await
        .expect("send part of the head");

    // Act
    let answer = read_until_closed(&mut stream, Duration::from_secs(6)).await;

    // Assert
    assert!(
        answer.closed,
        "the server must close a connection whose head stalls past HEADER_READ_TIMEOUT_SECS=1: {answer:?}"
    );
    assert!(
        answer.elapsed < Duration::from_secs(4),
        "the stalled connection was closed only after {:?}",
        answer.elapsed
    );
    assert!(
        answer.elapsed >= Duration::from_millis(500),
        "the connection was closed before the client had its HEADER_READ_TIMEOUT_SECS: {answer:?}"
    );
    assert_eq!(answer.status, Some(408), "{answer:?}");
    assert_json_error(&answer, "HEADER_READ_TIMEOUT_SECS");
    assert_stored(&server, 0, "a stalled request").await;
    assert_healthy(&server).await;
}

#[tokio::test]
async fn a_connection_that_sends_nothing_gets_no_answer() {
    // Arrange: a 408 on a connection that never began a request could be read as the answer
    // to the client's next request. (hyper keeps such a connection open; it is not cut off
    // by HEADER_READ_TIMEOUT_SECS, which counts from the first byte of a head.)
    let server = TestServer::start_with(&[("HEADER_READ_TIMEOUT_SECS", "1")]).await;
    let mut stream = TcpStream::connect(address(&server)).await.expect("connect");

    // Act
    let answer = read_until_closed(&mut stream, Duration::from_secs(3)).await;

    // Assert
    assert!(
        answer.head.is_empty() && answer.body.is_empty(),
        "nothing is sent to a client that sent nothing: {answer:?}"
    );
}

#[tokio::test]
async fn many_stalled_clients_do_not_keep_others_waiting() {
    // Arrange: 200 connections that each send part of a head and stall.
    let server = TestServer::start_with(&[("HEADER_READ_TIMEOUT_SECS", "2")]).await;
    let mut stalled = Vec::new();
    for _ in 0..200 {
        let mut stream = TcpStream::connect(address(&server)).await.expect("connect");
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .expect("send part of the head");
        stalled.push(stream);
    }

    // Act
    let started = Instant::now();
    let (status, body) = server.get("/health").await;
    let waited = started.elapsed();

    // Assert
    assert_eq!(status, 200, "{body}");
    assert!(
        waited < Duration::from_secs(1),
        "an ordinary client waited {waited:?} behind 200 stalled ones"
    );
    let first = stalled.first_mut().expect("a stalled connection");
    let answer = read_until_closed(first, Duration::from_secs(6)).await;
    assert!(answer.closed, "stalled connections are closed: {answer:?}");
    assert_stored(&server, 0, "stalled requests").await;
}

#[tokio::test]
async fn a_client_stalling_in_its_body_is_cut_off_and_nothing_is_stored() {
    // Arrange
    let server = TestServer::start_with(&[("BODY_READ_TIMEOUT_SECS", "1")]).await;
    let mut stream = TcpStream::connect(address(&server)).await.expect("connect");
    let mut request = post_head(&server, 100, "");
    request.extend_from_slice(br#"{"language"#);
    stream
        .write_all(&request)
        .await
        .expect("send 10 of 100 bytes");

    // Act
    let answer = read_until_closed(&mut stream, Duration::from_secs(6)).await;

    // Assert: an error answer, or at least a closed connection, within a few seconds.
    assert!(
        answer.elapsed < Duration::from_secs(4),
        "the stalled body was cut off only after {:?}: {answer:?}",
        answer.elapsed
    );
    match answer.status {
        Some(status) => {
            assert!(
                (400..500).contains(&status),
                "a stalled body is a client error: {answer:?}"
            );
            let body: Value = serde_json::from_slice(&answer.body).unwrap_or_else(|_| {
                panic!(
                    "the answer {status} is not JSON: {:?}",
                    String::from_utf8_lossy(&answer.body)
                )
            });
            assert!(
                body["error"].as_str().is_some_and(|m| !m.is_empty()),
                "the answer is {{\"error\": \"...\"}}: {body}"
            );
            eprintln!("stalled body answered {status}: {body}");
        }
        None => assert!(
            answer.closed,
            "no answer and the connection stays open: {answer:?}"
        ),
    }
    assert_stored(&server, 0, "a request whose body stalled").await;
    assert_healthy(&server).await;
}

// ----- hostile JSON -------------------------------------------------------------------------

#[tokio::test]
async fn deeply_nested_json_is_refused_with_400() {
    // Arrange
    let server = TestServer::start().await;
    let depth = 10_000;
    let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let in_code = format!(r#"{{"language": "python", "code": {nested}}}"#);
    let as_document = nested.clone();

    for (what, body) in [
        ("10,000 nested arrays in the code field", in_code),
        ("a body of 10,000 nested arrays", as_document),
    ] {
        // Act
        let answer = post_raw(&server, "/api/v1/jobs", body, &[]).await;

        // Assert
        assert_error(&answer, 400, what);
    }
    assert_stored(&server, 0, "deeply nested JSON").await;
    assert_healthy(&server).await;
}

#[tokio::test]
async fn json_over_max_body_bytes_is_refused_with_413() {
    // Arrange
    let server = TestServer::start_with(&[("MAX_BODY_BYTES", "65536")]).await;
    let body = json!({"language": "python", "code": format!("# {}", "x".repeat(200_000))});

    // A client of its own: the server closes the connection after refusing the body, and a
    // pooled connection would make the checks below fail (see the report of this suite).
    let client = reqwest::Client::new();

    // Act
    let response = client
        .post(server.url("/api/v1/jobs"))
        .json(&body)
        .send()
        .await
        .expect("POST");
    let connection = response.headers().get("connection").cloned();
    let answer = answer(response).await;

    // Assert
    assert_error(&answer, 413, "a 200 KB body over MAX_BODY_BYTES=65536");
    eprintln!("413 answer's Connection header: {connection:?}");
    assert_stored(&server, 0, "an oversized body").await;
    assert_healthy(&server).await;
}

#[tokio::test]
async fn invalid_utf8_in_the_body_is_refused_with_400() {
    // Arrange
    let server = TestServer::start().await;
    let mut body = br#"{"language": "python", "code": "print('"#.to_vec();
    body.extend_from_slice(&[0xff, 0xfe, 0xc3, 0x28]);
    body.extend_from_slice(br#"')"}"#);

    // Act
    let answer = post_raw(&server, "/api/v1/jobs", body, &[]).await;

    // Assert
    assert_error(&answer, 400, "bytes that are not UTF-8");
    assert_stored(&server, 0, "a body that is not UTF-8").await;
}

// ----- hostile ids --------------------------------------------------------------------------

#[tokio::test]
async fn over_long_and_malformed_ids_are_refused_with_400() {
    // Arrange
    let server = TestServer::start().await;
    let long = "a".repeat(65);
    let bad_ids = [
        long.as_str(),
        "a b",
        "../../etc/passwd",
        "id;drop",
        "ünïcode",
        "",
    ];
    let long_key = "k".repeat(129);

    for field in ["codeId", "sessionId"] {
        for id in bad_ids {
            // Act
            let mut body = json!({"language": "metta", "code": "!(+ 1 1)"});
            body[field] = json!(id);
            let answer = post_json(&server, "/api/v1/jobs", &body).await;

            // Assert
            assert_error(&answer, 400, &format!("{field} {id:?}"));
            assert!(
                answer.body["error"]
                    .as_str()
                    .unwrap_or_default()
                    .contains(field),
                "the message names {field}: {}",
                answer.body
            );
        }
    }
    let bad_keys = [
        HeaderValue::from_str(&long_key).expect("header"),
        HeaderValue::from_static("two words"),
        HeaderValue::from_static("tab\there"),
        HeaderValue::from_bytes(b"caf\xc3\xa9").expect("header"),
        HeaderValue::from_static(""),
    ];
    for key in bad_keys {
        // Act
        let response = server
            .client
            .post(server.url("/api/v1/jobs"))
            .header("Idempotency-Key", key.clone())
            .json(&python_job())
            .send()
            .await
            .expect("POST");
        let answer = answer(response).await;

        // Assert
        assert_error(&answer, 400, &format!("Idempotency-Key {key:?}"));
        assert!(
            answer.body["error"]
                .as_str()
                .unwrap_or_default()
                .contains("Idempotency-Key"),
            "the message names Idempotency-Key: {}",
            answer.body
        );
    }
    assert_stored(&server, 0, "requests with bad ids").await;
}

// ----- floods -------------------------------------------------------------------------------

async fn post_job(server: &TestServer, forwarded_for: Option<&str>) -> Answer {
    let headers: Vec<(&str, &str)> = forwarded_for
        .map(|address| ("X-Forwarded-For", address))
        .into_iter()
        .collect();
    post_raw(server, "/api/v1/jobs", python_job().to_string(), &headers).await
}

fn assert_rate_limited(answer: &Answer, what: &str) {
    assert_error(answer, 429, what);
    let retry_after = answer.retry_after_secs();
    assert!(
        retry_after.is_some_and(|secs| secs >= 1),
        "{what}: 429 carries Retry-After in seconds: {:?}",
        answer.headers
    );
}

#[tokio::test]
async fn the_fourth_submission_in_a_row_is_rate_limited() {
    // Arrange
    let server =
        TestServer::start_with(&[("RATE_LIMIT_PER_MINUTE", "6"), ("RATE_LIMIT_BURST", "3")]).await;
    for n in 1..=3 {
        let answer = post_job(&server, None).await;
        assert_eq!(
            answer.status, 202,
            "submission {n} is within the burst: {}",
            answer.body
        );
    }

    // Act
    let fourth = post_job(&server, None).await;
    // Without TRUST_FORWARDED_FOR, a forged X-Forwarded-For changes nothing.
    let forged = post_job(&server, Some("10.9.9.9")).await;

    // Assert
    assert_rate_limited(&fourth, "the 4th submission in a row");
    assert_rate_limited(&forged, "a submission with a forged X-Forwarded-For");
    assert_stored(&server, 3, "refused submissions").await;
    for _ in 0..10 {
        let (status, body) = server.get("/api/v1/queue").await;
        assert_eq!(status, 200, "reads are not rate limited: {body}");
    }
    assert_healthy(&server).await;
}

#[tokio::test]
async fn forwarded_clients_are_counted_apart() {
    // Arrange
    let server = TestServer::start_with(&[
        ("RATE_LIMIT_PER_MINUTE", "6"),
        ("RATE_LIMIT_BURST", "3"),
        ("TRUST_FORWARDED_FOR", "true"),
    ])
    .await;
    for n in 1..=3 {
        let answer = post_job(&server, Some("203.0.113.1")).await;
        assert_eq!(
            answer.status, 202,
            "submission {n} of client A: {}",
            answer.body
        );
    }

    // Act
    let fourth_of_a = post_job(&server, Some("203.0.113.1, 10.0.0.1")).await;
    let first_of_b = post_job(&server, Some("203.0.113.2")).await;

    // Assert
    assert_rate_limited(&fourth_of_a, "the 4th submission of client A");
    assert_eq!(
        first_of_b.status, 202,
        "client B has its own budget: {}",
        first_of_b.body
    );
    assert_stored(&server, 4, "client A's refused submission").await;
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after() {
    // Arrange: a long job running and MAX_QUEUED_JOBS=2 queued behind it.
    let server =
        TestServer::start_with(&[("MAX_QUEUED_JOBS", "2"), ("RUN_TIMEOUT_SECS", "30")]).await;
    // Long enough to hold the worker while the queue fills, short enough to end by itself
    // soon after the test.
    let sleeper = server
        .submit(json!({"language": "python", "code": "import time\ntime.sleep(5)"}))
        .await;
    let id = sleeper["id"].as_str().expect("id").to_string();
    wait_until_running(&server, &id).await;
    let queued: Vec<Value> = vec![
        server.submit(python_job()).await,
        server.submit(python_job()).await,
    ];

    // Act
    let refused = post_job(&server, None).await;

    // Assert
    assert_error(&refused, 503, "a submission to a full queue");
    assert!(
        refused.retry_after_secs().is_some(),
        "503 carries Retry-After: {:?}",
        refused.headers
    );
    assert_stored(&server, 3, "a refused submission").await;

    // Clean up: the queued jobs need not run.
    for job in &queued {
        server
            .delete(&format!("/api/v1/jobs/{}", job["id"].as_str().expect("id")))
            .await;
    }
}
