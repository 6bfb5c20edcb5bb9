//! The playground's contract: the exact requests the existing frontend sends
//! (`FRONTEND-CONTRACT.md`) and the examples of the seed service's README, answered with the
//! seed's JSON shapes and status codes. Answers are read the way the frontend reads them: the
//! body as text, then `JSON.parse` when it is not empty; a 2xx shows `data.result`, anything
//! else shows `data.error`. Also the browser's side of it: CORS preflight for the allowed
//! origins only, and JSON for every answer (unknown route, wrong method, bad body).

use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, CONTENT_TYPE};
use serde_json::{json, Value};

use crate::support::{direct_hyperon_run, frontend_code_id, wait_until_running, TestServer};

/// The origin the playground site is served from in development.
const SITE_ORIGIN: &str = "http://localhost:3000";

/// What `/reset-atomspace` answers, word for word as the seed did.
const RESET_MESSAGE: &str = "AtomSpace and code history completely reset.";

// ----- the frontend's requests ---------------------------------------------------------------

#[tokio::test]
async fn frontend_run_metta_shows_what_metta_py_prints() {
    // Arrange
    let server = TestServer::start().await;
    let code = "(= (square $x) (* $x $x))\n!(square 7)\n!(+ 2 3)";
    let code_id = frontend_code_id();

    // Act
    let answer = frontend_run_metta(&server, code, &code_id).await;

    // Assert
    let data = &answer.data;
    assert_eq!(answer.status, 200, "{data}");
    assert_eq!(
        data["result"],
        direct_hyperon_run(code),
        "the result is what metta-py prints for the same code: {data}"
    );
    assert_eq!(data["result"], "[49]\n[5]\n", "{data}");
    assert_eq!(data["codeId"], code_id.as_str(), "codeId is echoed: {data}");
    assert_eq!(data["historyLength"], 1, "{data}");
    assert_eq!(answer.shown(), "[49]\n[5]");
}

#[tokio::test]
async fn frontend_click_cycle_of_run_then_reset_isolates_each_run() {
    // Arrange: the frontend runs a cell, then resets the atomspace after the successful run.
    let server = TestServer::start().await;
    let first = frontend_run_metta(
        &server,
        "(= (greeting) hello)\n!(greeting)",
        &frontend_code_id(),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.data);
    assert_eq!(first.shown(), "[hello]");

    // Act
    let reset = frontend_post(&server, "/reset-atomspace", None).await;
    let second = frontend_run_metta(&server, "!(greeting)", &frontend_code_id()).await;

    // Assert
    assert_eq!(reset.status, 200, "{}", reset.data);
    assert_eq!(reset.data["message"], RESET_MESSAGE, "{}", reset.data);
    assert_eq!(second.status, 200, "{}", second.data);
    assert_eq!(
        second.data["result"],
        direct_hyperon_run("!(greeting)"),
        "after the reset the earlier definition is gone: {}",
        second.data
    );
    assert_eq!(second.data["historyLength"], 1, "{}", second.data);
}

#[tokio::test]
async fn reset_atomspace_with_a_json_content_type_and_no_body_at_all_succeeds() {
    // Arrange: something in the history to reset.
    let server = TestServer::start().await;
    let run = frontend_run_metta(&server, "(= (x) 1)", &frontend_code_id()).await;
    assert_eq!(run.status, 200, "{}", run.data);

    // Act: exactly the frontend's request: Content-Type: application/json, no body.
    let answer = frontend_post(&server, "/reset-atomspace", None).await;

    // Assert
    assert_eq!(
        answer.status, 200,
        "an empty body with a JSON content type must not be refused: {:?}",
        answer.text
    );
    assert_eq!(
        answer.data,
        json!({"message": RESET_MESSAGE}),
        "the seed's answer: {}",
        answer.data
    );
    let history = plain_get(&server, "/get-history").await;
    assert_eq!(history.data["length"], 0, "{}", history.data);
    assert_eq!(history.data["history"], json!([]), "{}", history.data);
}

#[tokio::test]
async fn frontend_run_python_shows_the_printed_output_and_lessons_can_import_hyperon() {
    // Arrange
    let server = TestServer::start().await;
    let lesson = "from hyperon import MeTTa\nmetta = MeTTa()\nprint(metta.run('!(+ 1 2)'))";

    // Act
    let hello = frontend_post(
        &server,
        "/run-python",
        Some(json!({"code": "print('Hello, World!')"})),
    )
    .await;
    let with_hyperon = frontend_post(&server, "/run-python", Some(json!({"code": lesson}))).await;

    // Assert
    assert_eq!(hello.status, 200, "{}", hello.data);
    assert_eq!(
        hello.data,
        json!({"result": "Hello, World!\n"}),
        "the seed README's example: {}",
        hello.data
    );
    assert_eq!(with_hyperon.status, 200, "{}", with_hyperon.data);
    assert_eq!(
        with_hyperon.data["result"], "[[3]]\n",
        "{}",
        with_hyperon.data
    );
}

#[tokio::test]
async fn a_slow_run_answers_only_once_its_result_exists() {
    // Arrange
    let server = TestServer::start().await;
    let code = "import time\ntime.sleep(1.5)\nprint('late')";

    // Act
    let started = Instant::now();
    let answer = frontend_post(&server, "/run-python", Some(json!({"code": code}))).await;
    let elapsed = started.elapsed();

    // Assert: never a 2xx (202 included) before the result; the frontend would lose it.
    assert_eq!(answer.status, 200, "{}", answer.data);
    assert_eq!(answer.data["result"], "late\n", "{}", answer.data);
    assert!(
        elapsed >= Duration::from_millis(1500),
        "answered after {elapsed:?}, before the run could finish: {}",
        answer.data
    );
}

// ----- the seed README's examples --------------------------------------------------------------

#[tokio::test]
async fn seed_readme_run_metta_example_keeps_its_shape() {
    // Arrange
    let server = TestServer::start().await;
    let readme_body = json!({"code": "(+ 2 3)", "language": "metta", "codeId": "unique_code_id"});

    // Act
    let plain = frontend_post(&server, "/run-metta", Some(readme_body)).await;
    let evaluated = frontend_run_metta(&server, "!(+ 2 3)", "unique_code_id_2").await;

    // Assert: the README's shape; the text is what metta-py prints (an unbanged expression is
    // only added to the space and prints nothing, `!(+ 2 3)` prints `[5]`).
    assert_eq!(plain.status, 200, "{}", plain.data);
    assert_eq!(
        object_keys(&plain.data),
        ["codeId", "historyLength", "result"],
        "{}",
        plain.data
    );
    assert_eq!(plain.data["codeId"], "unique_code_id", "{}", plain.data);
    assert_eq!(plain.data["historyLength"], 1, "{}", plain.data);
    assert_eq!(
        plain.data["result"],
        direct_hyperon_run("(+ 2 3)"),
        "{}",
        plain.data
    );
    assert_eq!(plain.shown(), "(no output)");
    assert_eq!(evaluated.status, 200, "{}", evaluated.data);
    assert_eq!(evaluated.data["result"], "[5]\n", "{}", evaluated.data);
    assert_eq!(evaluated.data["historyLength"], 2, "{}", evaluated.data);
}

#[tokio::test]
async fn seed_readme_queue_status_and_health_answer_when_idle() {
    // Arrange
    let server = TestServer::start().await;

    // Act
    let status = plain_get(&server, "/queue-status").await;
    let health = plain_get(&server, "/health").await;

    // Assert
    assert_eq!(status.status, 200, "{}", status.data);
    assert_eq!(
        object_keys(&status.data),
        ["is_processing", "pending_requests", "queue_size"],
        "{}",
        status.data
    );
    assert_eq!(status.data["queue_size"], 0, "{}", status.data);
    assert_eq!(status.data["is_processing"], false, "{}", status.data);
    assert_eq!(status.data["pending_requests"], 0, "{}", status.data);
    assert_eq!(health.status, 200, "{}", health.data);
    assert_eq!(health.data["status"], "ok", "{}", health.data);
}

// ----- status codes ------------------------------------------------------------------------------

#[tokio::test]
async fn the_learners_failing_code_answers_400_with_the_error_text() {
    // Arrange
    let server = TestServer::start().await;

    // Act
    let parse_error = frontend_run_metta(&server, "!(+ 2", &frontend_code_id()).await;
    let exception = frontend_post(
        &server,
        "/run-python",
        Some(json!({"code": "raise ValueError('boom')"})),
    )
    .await;
    let exit_code = frontend_post(
        &server,
        "/run-python",
        Some(json!({"code": "import sys\nprint('before')\nsys.exit(3)"})),
    )
    .await;

    // Assert
    assert_eq!(parse_error.status, 400, "{}", parse_error.data);
    assert!(
        parse_error.shown().contains("Unexpected end of expression"),
        "the learner sees hyperon's parse error: {}",
        parse_error.data
    );
    assert_eq!(exception.status, 400, "{}", exception.data);
    assert!(
        exception.shown().contains("ValueError: boom"),
        "the learner sees the traceback: {}",
        exception.data
    );
    assert_eq!(exit_code.status, 400, "{}", exit_code.data);
    assert_ne!(exit_code.shown(), "Unknown error", "{}", exit_code.data);
    let history = plain_get(&server, "/get-history").await;
    assert_eq!(
        history.data["length"], 0,
        "a failed cell does not enter the history: {}",
        history.data
    );
}

#[tokio::test]
async fn run_metta_with_another_language_answers_400_and_runs_nothing() {
    // Arrange: the original service refused any language but "metta" on /run-metta.
    let server = TestServer::start().await;

    // Act
    let python = frontend_post(
        &server,
        "/run-metta",
        Some(json!({"code": "print(1)", "language": "python", "codeId": frontend_code_id()})),
    )
    .await;
    let unknown = frontend_post(
        &server,
        "/run-metta",
        Some(json!({"code": "!(+ 1 2)", "language": "prolog"})),
    )
    .await;
    let unnamed = frontend_post(&server, "/run-metta", Some(json!({"code": "!(+ 1 2)"}))).await;

    // Assert
    for (answer, what) in [(&python, "python"), (&unknown, "prolog")] {
        assert_eq!(answer.status, 400, "language {what}: {}", answer.data);
        assert!(
            answer.shown().contains("Unsupported language"),
            "language {what}: the learner reads why: {}",
            answer.data
        );
    }
    let history = plain_get(&server, "/get-history").await;
    assert_eq!(
        history.data["length"], 1,
        "only the run without a language (MeTTa by default) entered the history: {}",
        history.data
    );
    assert_eq!(unnamed.status, 200, "{}", unnamed.data);
    let queue = plain_get(&server, "/api/v1/queue").await;
    assert_eq!(
        queue.data["succeeded"], 1,
        "the refused runs stored no job: {}",
        queue.data
    );
}

#[tokio::test]
async fn a_run_past_its_deadline_answers_408() {
    // Arrange
    let server = TestServer::start_with(&[("RUN_TIMEOUT_SECS", "1")]).await;
    let define = frontend_run_metta(&server, "(= (loop) (loop))", &frontend_code_id()).await;
    assert_eq!(define.status, 200, "{}", define.data);

    // Act
    let python = frontend_post(
        &server,
        "/run-python",
        Some(json!({"code": "while True: pass"})),
    )
    .await;
    let metta = frontend_run_metta(&server, "!(loop)", &frontend_code_id()).await;

    // Assert
    for (what, answer) in [("python", &python), ("metta", &metta)] {
        assert_eq!(answer.status, 408, "{what}: {}", answer.data);
        assert_ne!(answer.shown(), "Unknown error", "{what}: {}", answer.data);
        assert!(
            answer.data["requestId"].is_string(),
            "{what}: {}",
            answer.data
        );
    }
    let history = plain_get(&server, "/get-history").await;
    assert_eq!(
        history.data["length"], 1,
        "a timed-out cell does not enter the history: {}",
        history.data
    );
}

#[tokio::test]
async fn a_request_that_waits_out_answers_408_and_its_job_still_completes() {
    // Arrange
    let server = TestServer::start_with(&[("LEGACY_WAIT_SECS", "1")]).await;
    let code = "import time\ntime.sleep(3)\nprint('finished anyway')";

    // Act
    let started = Instant::now();
    let answer = frontend_post(&server, "/run-python", Some(json!({"code": code}))).await;
    let elapsed = started.elapsed();

    // Assert: 408 with the id under which the result will be found.
    assert_eq!(answer.status, 408, "{}", answer.data);
    assert!(answer.data["error"].is_string(), "{}", answer.data);
    assert!(
        elapsed < Duration::from_millis(2800),
        "the wait should end after LEGACY_WAIT_SECS=1, not with the job ({elapsed:?})"
    );
    let id = answer.data["requestId"]
        .as_str()
        .unwrap_or_else(|| panic!("no requestId: {}", answer.data));
    let (status, job) = server.get(&format!("/api/v1/jobs/{id}?wait=30")).await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["result"], "finished anyway\n", "{job}");
}

#[tokio::test]
async fn a_full_queue_answers_503() {
    // Arrange: one job running, one queued: the queue (MAX_QUEUED_JOBS=1) is full.
    let server = TestServer::start_with(&[("MAX_QUEUED_JOBS", "1")]).await;
    let running = server
        .submit(json!({"language": "python", "code": "import time; time.sleep(3)"}))
        .await;
    wait_until_running(&server, running["id"].as_str().expect("id")).await;
    let queued = server
        .submit(json!({"language": "python", "code": "print('queued')"}))
        .await;
    assert_eq!(queued["status"], "queued", "{queued}");

    // Act
    let status = plain_get(&server, "/queue-status").await;
    let python = frontend_post(&server, "/run-python", Some(json!({"code": "print(1)"}))).await;
    let metta = frontend_run_metta(&server, "!(+ 1 1)", &frontend_code_id()).await;

    // Assert
    assert_eq!(status.data["queue_size"], 1, "{}", status.data);
    assert_eq!(status.data["is_processing"], true, "{}", status.data);
    assert_eq!(status.data["pending_requests"], 2, "{}", status.data);
    for (what, answer) in [("/run-python", &python), ("/run-metta", &metta)] {
        assert_eq!(answer.status, 503, "{what}: {}", answer.data);
        assert!(answer.data["error"].is_string(), "{what}: {}", answer.data);
        assert!(
            answer.headers.contains_key("retry-after"),
            "{what} says when to retry: {:?}",
            answer.headers
        );
    }
}

// ----- the browser's side ------------------------------------------------------------------------

#[tokio::test]
async fn cors_preflight_succeeds_for_the_allowed_origins_only() {
    // Arrange
    let allowed = ["http://localhost:3000", "https://learn.example.org"];
    let server = TestServer::start_with(&[(
        "FRONTEND_URL",
        "http://localhost:3000,https://learn.example.org",
    )])
    .await;

    for origin in allowed {
        for path in ["/run-metta", "/run-python", "/reset-atomspace"] {
            // Act
            let response = preflight(&server, path, origin, "content-type").await;

            // Assert
            let status = response.status();
            let headers = response.headers().clone();
            assert!(
                status.is_success(),
                "preflight {path} from {origin}: {status} {headers:?}"
            );
            assert_eq!(
                header_text(&headers, "access-control-allow-origin"),
                Some(origin),
                "preflight {path} from {origin}: {headers:?}"
            );
            let methods = header_text(&headers, "access-control-allow-methods").unwrap_or_default();
            assert!(
                methods.contains("POST"),
                "{path} from {origin}: {headers:?}"
            );
            let allowed_headers = header_text(&headers, "access-control-allow-headers")
                .unwrap_or_default()
                .to_ascii_lowercase();
            assert!(
                allowed_headers.contains("content-type"),
                "{path} from {origin}: {headers:?}"
            );
        }
    }
    let with_session_header = preflight(
        &server,
        "/run-metta",
        allowed[1],
        "content-type,x-session-id",
    )
    .await;
    let session_headers = header_text(
        with_session_header.headers(),
        "access-control-allow-headers",
    )
    .unwrap_or_default()
    .to_ascii_lowercase();
    assert!(
        session_headers.contains("x-session-id"),
        "clients may name their session with X-Session-Id: {:?}",
        with_session_header.headers()
    );

    let refused = preflight(
        &server,
        "/run-metta",
        "https://evil.example.com",
        "content-type",
    )
    .await;
    assert_eq!(
        header_text(refused.headers(), "access-control-allow-origin"),
        None,
        "a disallowed origin gets no Access-Control-Allow-Origin: {:?}",
        refused.headers()
    );
}

#[tokio::test]
async fn cross_origin_answers_carry_the_allowed_origin_even_for_errors() {
    // Arrange
    let origin = "https://learn.example.org";
    let server = TestServer::start_with(&[(
        "FRONTEND_URL",
        "http://localhost:3000,https://learn.example.org",
    )])
    .await;

    // Act
    let ok = cross_origin_post(&server, "/run-python", origin, json!({"code": "print(1)"})).await;
    let failed = cross_origin_post(
        &server,
        "/run-metta",
        origin,
        json!({"code": "!(+ 2", "language": "metta", "codeId": frontend_code_id()}),
    )
    .await;
    let disallowed = cross_origin_post(
        &server,
        "/run-python",
        "https://evil.example.com",
        json!({"code": "print(1)"}),
    )
    .await;

    // Assert: the browser lets the frontend read the answer, the error included.
    assert_eq!(ok.status, 200, "{}", ok.data);
    assert_eq!(
        header_text(&ok.headers, "access-control-allow-origin"),
        Some(origin),
        "{:?}",
        ok.headers
    );
    assert_eq!(failed.status, 400, "{}", failed.data);
    assert_eq!(
        header_text(&failed.headers, "access-control-allow-origin"),
        Some(origin),
        "an error must be readable cross-origin too: {:?}",
        failed.headers
    );
    assert_eq!(
        header_text(&disallowed.headers, "access-control-allow-origin"),
        None,
        "{:?}",
        disallowed.headers
    );
}

#[tokio::test]
async fn every_answer_is_json_even_unknown_routes_wrong_methods_and_bad_bodies() {
    // Arrange
    let server = TestServer::start().await;
    let client = &server.client;

    // Act
    let answers = vec![
        (
            "GET /no-such-route",
            404,
            answer_of(client.get(server.url("/no-such-route"))).await,
        ),
        (
            "GET /run-metta",
            405,
            answer_of(client.get(server.url("/run-metta"))).await,
        ),
        (
            "DELETE /health",
            405,
            answer_of(client.delete(server.url("/health"))).await,
        ),
        (
            "POST /run-metta not JSON",
            400,
            answer_of(
                client
                    .post(server.url("/run-metta"))
                    .header(CONTENT_TYPE, "application/json")
                    .body("{\"code\": "),
            )
            .await,
        ),
        (
            "POST /run-metta without code",
            400,
            answer_of(
                client
                    .post(server.url("/run-metta"))
                    .header(CONTENT_TYPE, "application/json")
                    .body(json!({"language": "metta", "codeId": frontend_code_id()}).to_string()),
            )
            .await,
        ),
        (
            "POST /run-python with no body",
            400,
            answer_of(
                client
                    .post(server.url("/run-python"))
                    .header(CONTENT_TYPE, "application/json"),
            )
            .await,
        ),
    ];

    // Assert
    for (what, expected, answer) in answers {
        assert_eq!(answer.status, expected, "{what}: {:?}", answer.text);
        let content_type = header_text(&answer.headers, "content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("application/json"),
            "{what} answers JSON, not {content_type:?}: {:?}",
            answer.text
        );
        let error = answer.data["error"].as_str().unwrap_or_default();
        assert!(
            !error.trim().is_empty(),
            "{what} says what went wrong: {}",
            answer.data
        );
    }
}

// ----- local helpers -----------------------------------------------------------------------------

/// An answer as the frontend gets it: the status, the raw text and `JSON.parse(text)`.
struct FrontendAnswer {
    status: u16,
    headers: HeaderMap,
    text: String,
    data: Value,
}

impl FrontendAnswer {
    /// What the editor shows the learner for this answer.
    fn shown(&self) -> String {
        let field = if (200..300).contains(&self.status) {
            "result"
        } else {
            "error"
        };
        let text = self.data[field].as_str().unwrap_or_default().trim();
        match (text.is_empty(), field) {
            (false, _) => text.to_string(),
            (true, "result") => "(no output)".to_string(),
            (true, _) => "Unknown error".to_string(),
        }
    }
}

/// Sends the frontend's `/run-metta` request exactly.
async fn frontend_run_metta(server: &TestServer, code: &str, code_id: &str) -> FrontendAnswer {
    let body = json!({"code": code, "language": "metta", "codeId": code_id});
    frontend_post(server, "/run-metta", Some(body)).await
}

/// POSTs as the frontend does: `Content-Type: application/json`, the body (or none at all),
/// from the site's origin.
async fn frontend_post(server: &TestServer, path: &str, body: Option<Value>) -> FrontendAnswer {
    let mut request = server
        .client
        .post(server.url(path))
        .header(CONTENT_TYPE, "application/json")
        .header("Origin", SITE_ORIGIN);
    if let Some(body) = body {
        request = request.body(body.to_string());
    }
    answer_of(request).await
}

/// A GET from a client other than the frontend (monitoring, tools).
async fn plain_get(server: &TestServer, path: &str) -> FrontendAnswer {
    answer_of(server.client.get(server.url(path))).await
}

/// A cross-origin POST from `origin`.
async fn cross_origin_post(
    server: &TestServer,
    path: &str,
    origin: &str,
    body: Value,
) -> FrontendAnswer {
    let request = server
        .client
        .post(server.url(path))
        .header(CONTENT_TYPE, "application/json")
        .header("Origin", origin)
        .body(body.to_string());
    answer_of(request).await
}

/// Sends `request` and reads the answer as the frontend does; a body that is not JSON is the
/// frontend's "Invalid response from server", a failure here.
async fn answer_of(request: reqwest::RequestBuilder) -> FrontendAnswer {
    let response = request
        .send()
        .await
        .expect("the request reaches the server");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("the body");
    let data = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("Invalid response from server: {status} {text:?}"))
    };
    FrontendAnswer {
        status,
        headers,
        text,
        data,
    }
}

/// A browser's CORS preflight for a JSON POST to `path` from `origin`.
async fn preflight(
    server: &TestServer,
    path: &str,
    origin: &str,
    headers: &str,
) -> reqwest::Response {
    server
        .client
        .request(reqwest::Method::OPTIONS, server.url(path))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", headers)
        .send()
        .await
        .expect("preflight")
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// The sorted keys of a JSON object (empty for anything else).
fn object_keys(value: &Value) -> Vec<String> {
    let mut keys: Vec<String> = value
        .as_object()
        .map(|object| object.keys().cloned().collect())
        .unwrap_or_default();
    keys.sort();
    keys
}

#[tokio::test]
async fn legacy_output_cut_at_the_cap_ends_at_a_whole_line_with_a_marker() {
    // Arrange
    let server = TestServer::start_with(&[("MAX_OUTPUT_BYTES", "1024")]).await;

    // Act: 100 numbered lines of 30 characters, about 3 KiB.
    let (status, body) = server
        .post(
            "/run-python",
            json!({"code": "for i in range(100): print(f'line {i:03d} ' + 'x' * 21)"}),
        )
        .await;

    // Assert
    assert_eq!(status, 200, "{body}");
    let result = body["result"].as_str().expect("result");
    let lines: Vec<&str> = result.lines().collect();
    let (marker, kept) = lines.split_last().expect("some lines");
    assert!(
        marker.contains("output cut here") && marker.contains("MAX_OUTPUT_BYTES"),
        "the last line must say the output was cut: {result:?}"
    );
    assert!(!kept.is_empty(), "{result:?}");
    for (index, line) in kept.iter().enumerate() {
        assert_eq!(
            *line,
            format!("line {index:03} {}", "x".repeat(21)),
            "every kept line is whole: {result:?}"
        );
    }
}
