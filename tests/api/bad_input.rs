//! Bad requests to the v1 API: each is refused with a 4xx (or 503 for a full queue) and a JSON
//! body `{"error": "..."}` naming the problem, and none of them stores a job.

use serde_json::{json, Value};

use crate::support::{
    answer, post_json, post_raw, python, queue_counts, wait_until_running, Answer, TestServer,
};

// ----- local helpers ------------------------------------------------------------------------

/// Asserts a refusal: the status, and an `error` message containing every one of `words`.
fn assert_refused(answer: &Answer, status: u16, words: &[&str], what: &str) {
    assert_eq!(
        answer.status, status,
        "{what}: expected {status}, got {}: {}",
        answer.status, answer.body
    );
    let message = answer.body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: the body has no \"error\" string: {}", answer.body));
    for word in words {
        assert!(
            message.contains(word),
            "{what}: the error should mention {word:?}: {}",
            answer.body
        );
    }
    let content_type = answer
        .headers
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    assert!(
        content_type.starts_with("application/json"),
        "{what}: content-type {content_type:?}: {}",
        answer.body
    );
}

/// Asserts that the queue counts are what they were before the bad requests.
async fn assert_nothing_stored(server: &TestServer, before: &Value) {
    let after = queue_counts(server).await;
    assert_eq!(
        &after, before,
        "a refused request must store nothing: before {before}, after {after}"
    );
}

// ----- the body ------------------------------------------------------------------------------

#[tokio::test]
async fn malformed_json_is_refused() {
    // Arrange
    let server = TestServer::start().await;
    let before = queue_counts(&server).await;

    // Act
    let truncated = post_raw(
        &server,
        "/api/v1/jobs",
        r#"{"language": "python", "code": "#,
        &[],
    )
    .await;
    let not_json = post_raw(&server, "/api/v1/jobs", "print(1)", &[]).await;
    let empty = post_raw(&server, "/api/v1/jobs", "", &[]).await;
    let array = post_raw(&server, "/api/v1/jobs", "[1, 2]", &[]).await;

    // Assert
    assert_refused(&truncated, 400, &["JSON"], "truncated JSON");
    assert_refused(&not_json, 400, &["JSON"], "not JSON");
    assert_refused(&empty, 400, &["empty"], "empty body");
    assert_refused(&array, 400, &["JSON"], "a JSON array");
    assert_nothing_stored(&server, &before).await;
}

#[tokio::test]
async fn a_field_of_the_wrong_type_is_refused() {
    // Arrange
    let server = TestServer::start().await;
    let before = queue_counts(&server).await;

    // Act
    let code_number = post_json(
        &server,
        "/api/v1/jobs",
        &json!({"language": "python", "code": 5}),
    )
    .await;
    let language_number = post_json(
        &server,
        "/api/v1/jobs",
        &json!({"language": 1, "code": "print(1)"}),
    )
    .await;
    let timeout_text = post_json(
        &server,
        "/api/v1/jobs",
        &json!({"language": "python", "code": "print(1)", "timeoutSecs": "soon"}),
    )
    .await;

    // Assert: the message names the problem (a wrong type) and the field.
    assert_refused(
        &code_number,
        400,
        &["invalid type", "code"],
        "code as a number",
    );
    assert_refused(
        &language_number,
        400,
        &["invalid type", "language"],
        "language as a number",
    );
    assert_refused(
        &timeout_text,
        400,
        &["invalid type", "timeoutSecs"],
        "timeoutSecs as text",
    );
    assert_nothing_stored(&server, &before).await;
}

#[tokio::test]
async fn missing_code_is_refused() {
    // Arrange
    let server = TestServer::start().await;
    let before = queue_counts(&server).await;

    // Act
    let missing_code = post_json(&server, "/api/v1/jobs", &json!({"language": "python"})).await;
    let missing_language = post_json(&server, "/api/v1/jobs", &json!({"code": "print(1)"})).await;

    // Assert
    assert_refused(&missing_code, 400, &["missing field", "code"], "no code");
    assert_refused(
        &missing_language,
        400,
        &["missing field", "language"],
        "no language",
    );
    assert_nothing_stored(&server, &before).await;
}

#[tokio::test]
async fn unknown_language_is_refused() {
    // Arrange
    let server = TestServer::start().await;
    let before = queue_counts(&server).await;

    // Act
    let cobol = post_json(
        &server,
        "/api/v1/jobs",
        &json!({"language": "cobol", "code": "x"}),
    )
    .await;
    let upper = post_json(
        &server,
        "/api/v1/jobs",
        &json!({"language": "Python", "code": "x"}),
    )
    .await;

    // Assert
    assert_refused(&cobol, 400, &["language", "cobol"], "language cobol");
    assert_refused(&upper, 400, &["language", "Python"], "language Python");
    assert_nothing_stored(&server, &before).await;
}

#[tokio::test]
async fn empty_code_is_refused() {
    // Arrange
    let server = TestServer::start().await;
    let before = queue_counts(&server).await;

    // Act
    let empty = post_json(&server, "/api/v1/jobs", &python("")).await;
    let blank = post_json(&server, "/api/v1/jobs", &python("  \n\t ")).await;
    let metta_empty = post_json(
        &server,
        "/api/v1/jobs",
        &json!({"language": "metta", "code": "", "sessionId": "s1"}),
    )
    .await;

    // Assert
    assert_refused(&empty, 400, &["code", "empty"], "empty code");
    assert_refused(&blank, 400, &["code", "empty"], "blank code");
    assert_refused(&metta_empty, 400, &["code", "empty"], "empty MeTTa code");
    assert_nothing_stored(&server, &before).await;
}

#[tokio::test]
async fn a_body_over_max_body_bytes_is_refused_with_413() {
    // Arrange
    let server = TestServer::start_with(&[("MAX_BODY_BYTES", "1024")]).await;
    let before = queue_counts(&server).await;
    let big = format!("print('{}')", "x".repeat(2000));

    // Act
    let too_big = post_json(&server, "/api/v1/jobs", &python(&big)).await;
    let fits = post_json(&server, "/api/v1/jobs?wait=30", &python("print('small')")).await;

    // Assert
    assert_refused(
        &too_big,
        413,
        &["MAX_BODY_BYTES"],
        "a 2 KB body with a 1 KB limit",
    );
    assert_eq!(
        fits.status, 200,
        "a small body is still accepted: {}",
        fits.body
    );
    assert_eq!(fits.body["status"], "succeeded", "{}", fits.body);
    let after = queue_counts(&server).await;
    assert_eq!(
        after["succeeded"], 1,
        "only the small job was stored: before {before}, after {after}"
    );
    assert_eq!(after["queued"], 0, "{after}");
    assert_eq!(after["failed"], 0, "{after}");
}

#[tokio::test]
async fn code_over_max_code_bytes_is_refused_with_413() {
    // Arrange
    let server = TestServer::start_with(&[("MAX_CODE_BYTES", "100")]).await;
    let before = queue_counts(&server).await;
    let long_code = format!("print('{}')", "x".repeat(200));

    // Act
    let too_long = post_json(&server, "/api/v1/jobs", &python(&long_code)).await;
    let long_stdin = post_json(
        &server,
        "/api/v1/jobs",
        &json!({"language": "python", "code": "print(1)", "stdin": "y".repeat(200)}),
    )
    .await;

    // Assert
    assert_refused(
        &too_long,
        413,
        &["code", "MAX_CODE_BYTES"],
        "211 bytes of code, limit 100",
    );
    assert_refused(
        &long_stdin,
        413,
        &["stdin", "MAX_CODE_BYTES"],
        "200 bytes of stdin, limit 100",
    );
    assert_nothing_stored(&server, &before).await;
}

// ----- parameters ----------------------------------------------------------------------------

#[tokio::test]
async fn wait_out_of_range_is_refused() {
    // Arrange: one stored job, to read with a bad wait.
    let server = TestServer::start().await;
    let job = server.run(python("print(1)")).await;
    let id = job["id"].as_str().expect("id").to_string();
    let before = queue_counts(&server).await;

    for wait in ["-1", "61", "abc", "", "NaN", "inf"] {
        // Act
        let posted = post_json(
            &server,
            &format!("/api/v1/jobs?wait={wait}"),
            &python("print(2)"),
        )
        .await;
        let read = answer(
            server
                .client
                .get(server.url(&format!("/api/v1/jobs/{id}?wait={wait}")))
                .send()
                .await
                .expect("GET"),
        )
        .await;

        // Assert
        assert_refused(&posted, 400, &["wait"], &format!("POST ?wait={wait}"));
        assert_refused(&read, 400, &["wait"], &format!("GET ?wait={wait}"));
    }
    assert_nothing_stored(&server, &before).await;
}

#[tokio::test]
async fn timeout_secs_above_run_timeout_secs_is_refused() {
    // Arrange
    let server = TestServer::start_with(&[("RUN_TIMEOUT_SECS", "5")]).await;
    let before = queue_counts(&server).await;

    for timeout in [json!(6), json!(5.5), json!(0), json!(-1)] {
        // Act
        let refused = post_json(
            &server,
            "/api/v1/jobs",
            &json!({"language": "python", "code": "print(1)", "timeoutSecs": timeout}),
        )
        .await;

        // Assert
        assert_refused(
            &refused,
            400,
            &["timeoutSecs", "RUN_TIMEOUT_SECS"],
            &format!("timeoutSecs {timeout} with RUN_TIMEOUT_SECS=5"),
        );
    }
    assert_nothing_stored(&server, &before).await;
}

#[tokio::test]
async fn unknown_or_malformed_job_ids_are_refused() {
    // Arrange
    let server = TestServer::start().await;
    let before = queue_counts(&server).await;
    let unknown = "0190a5c4-0000-7000-8000-000000000000";

    // Act
    let (unknown_status, unknown_body) = server.get(&format!("/api/v1/jobs/{unknown}")).await;
    let (waited_status, waited_body) = server.get(&format!("/api/v1/jobs/{unknown}?wait=1")).await;
    let (malformed_status, malformed_body) = server.get("/api/v1/jobs/12345").await;

    // Assert
    assert_eq!(unknown_status, 404, "{unknown_body}");
    assert!(
        unknown_body["error"]
            .as_str()
            .unwrap_or("")
            .contains(unknown),
        "the error names the id: {unknown_body}"
    );
    assert_eq!(waited_status, 404, "{waited_body}");
    assert_eq!(malformed_status, 400, "{malformed_body}");
    assert!(
        malformed_body["error"]
            .as_str()
            .unwrap_or("")
            .contains("12345"),
        "the error names the bad id: {malformed_body}"
    );
    assert_nothing_stored(&server, &before).await;
}

#[tokio::test]
async fn invalid_session_and_code_ids_are_refused() {
    // Arrange
    let server = TestServer::start().await;
    let before = queue_counts(&server).await;
    let too_long = "x".repeat(65);

    for bad in ["has space", too_long.as_str(), "", "é"] {
        // Act
        let session = post_json(
            &server,
            "/api/v1/jobs",
            &json!({"language": "metta", "code": "!(+ 1 1)", "sessionId": bad}),
        )
        .await;
        let code_id = post_json(
            &server,
            "/api/v1/jobs",
            &json!({"language": "metta", "code": "!(+ 1 1)", "sessionId": "s1", "codeId": bad}),
        )
        .await;

        // Assert
        assert_refused(&session, 400, &["sessionId"], &format!("sessionId {bad:?}"));
        assert_refused(&code_id, 400, &["codeId"], &format!("codeId {bad:?}"));
    }
    assert_nothing_stored(&server, &before).await;
}

#[tokio::test]
async fn a_bad_idempotency_key_is_refused() {
    // Arrange
    let server = TestServer::start().await;
    let before = queue_counts(&server).await;
    let body = python("print(1)").to_string();
    let too_long = "k".repeat(200);

    // Act
    let long = post_raw(
        &server,
        "/api/v1/jobs",
        &body,
        &[("Idempotency-Key", &too_long)],
    )
    .await;
    let spaced = post_raw(
        &server,
        "/api/v1/jobs",
        &body,
        &[("Idempotency-Key", "a key")],
    )
    .await;

    // Assert
    assert_refused(&long, 400, &["Idempotency-Key"], "a 200-character key");
    assert_refused(&spaced, 400, &["Idempotency-Key"], "a key with a space");
    assert_nothing_stored(&server, &before).await;
}

// ----- routes and capacity -------------------------------------------------------------------

#[tokio::test]
async fn unknown_routes_answer_404_json() {
    // Arrange
    let server = TestServer::start().await;
    let before = queue_counts(&server).await;

    // Act
    let (get_status, get_body) = server.get("/api/v1/nothing-here").await;
    let posted = post_json(&server, "/api/v2/jobs", &python("print(1)")).await;
    let wrong_method = answer(
        server
            .client
            .put(server.url("/api/v1/jobs"))
            .json(&python("print(1)"))
            .send()
            .await
            .expect("PUT"),
    )
    .await;

    // Assert
    assert_eq!(get_status, 404, "{get_body}");
    assert!(
        get_body["error"]
            .as_str()
            .unwrap_or("")
            .contains("/api/v1/nothing-here"),
        "the error names the path: {get_body}"
    );
    assert_refused(&posted, 404, &["/api/v2/jobs"], "POST /api/v2/jobs");
    assert_eq!(
        wrong_method.status, 405,
        "PUT /api/v1/jobs: {}",
        wrong_method.body
    );
    assert!(
        wrong_method.body["error"].is_string(),
        "{}",
        wrong_method.body
    );
    assert_nothing_stored(&server, &before).await;
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after() {
    // Arrange: a sleeping job occupies the worker, two more fill the queue.
    let server = TestServer::start_with(&[("MAX_QUEUED_JOBS", "2")]).await;
    let sleeper = server.submit(python("import time; time.sleep(30)")).await;
    let sleeper_id = sleeper["id"].as_str().expect("id").to_string();
    wait_until_running(&server, &sleeper_id).await;
    server.submit(python("print('one')")).await;
    server.submit(python("print('two')")).await;
    let before = queue_counts(&server).await;
    assert_eq!(before["queued"], 2, "{before}");

    // Act
    let refused = post_json(&server, "/api/v1/jobs", &python("print('three')")).await;
    let keyed = post_raw(
        &server,
        "/api/v1/jobs",
        &python("print('four')").to_string(),
        &[("Idempotency-Key", "full-queue-key")],
    )
    .await;

    // Assert
    for (what, answer) in [("a third queued job", &refused), ("a keyed job", &keyed)] {
        assert_refused(answer, 503, &["full"], what);
        let retry_after = answer.retry_after_secs();
        assert!(
            retry_after.is_some_and(|secs| secs > 0),
            "{what}: a 503 must say when to retry (Retry-After in seconds): {:?} {}",
            answer.headers,
            answer.body
        );
    }
    assert_nothing_stored(&server, &before).await;
}
