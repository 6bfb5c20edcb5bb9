//! Learners never see each other's work through the unmodified playground site: a request
//! that names no session gets a session of its own client (`LEGACY_SESSIONS=per-client`).

use serde_json::{json, Value};

use crate::support::{frontend_code_id, read, TestServer};

const FACTORIAL: &str = "(= (fact $n) (if (== $n 0) 1 (* $n (fact (- $n 1)))))\n!(fact 5)";
const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0";

/// A `/run-metta` from the browser at `address`, with a fresh codeId (`.json` sends the
/// site's `Content-Type: application/json`).
async fn run(server: &TestServer, address: &str, code: &str) -> (u16, Value) {
    let response = server
        .client
        .post(server.url("/run-metta"))
        .header("User-Agent", BROWSER)
        .header("X-Forwarded-For", address)
        .json(&json!({"code": code, "language": "metta", "codeId": frontend_code_id()}))
        .send()
        .await
        .expect("POST /run-metta");
    read(response).await
}

/// One click on Run, exactly as the site sends it: `/run-metta` with a fresh codeId, then,
/// after a success, `/reset-atomspace` with a JSON content type and no body. Returns the
/// run's status and body.
async fn click_run(server: &TestServer, address: &str, code: &str) -> (u16, Value) {
    let (status, body) = run(server, address, code).await;
    if status == 200 {
        let reset = server
            .client
            .post(server.url("/reset-atomspace"))
            .header("Content-Type", "application/json")
            .header("User-Agent", BROWSER)
            .header("X-Forwarded-For", address)
            .send()
            .await
            .expect("POST /reset-atomspace");
        assert_eq!(read(reset).await.0, 200);
    }
    (status, body)
}

#[tokio::test]
async fn two_learners_running_the_factorial_together_never_see_each_others_definitions() {
    // Arrange: two browsers on different machines, the same lesson, behind a proxy.
    let server = TestServer::start_with(&[("TRUST_FORWARDED_FOR", "true")]).await;
    const ROUNDS: usize = 25;

    // Act: both press Run in every round at the same moment.
    let learner = |address: &'static str| {
        let server = &server;
        async move {
            let mut results = Vec::new();
            for _ in 0..ROUNDS {
                results.push(click_run(server, address, FACTORIAL).await);
            }
            results
        }
    };
    let (first, second) = tokio::join!(learner("203.0.113.7"), learner("198.51.100.23"));
    let results = [first, second];

    // Assert: every run saw only its own learner's one definition.
    for (learner, runs) in results.iter().enumerate() {
        for (round, (status, body)) in runs.iter().enumerate() {
            assert_eq!(
                (*status, body["result"].as_str()),
                (200, Some("[120]\n")),
                "learner {learner}, round {round}: {body}"
            );
        }
    }
}

#[tokio::test]
async fn a_clients_own_session_keeps_its_history_apart_and_across_a_restart() {
    // Arrange
    let mut server = TestServer::start_with(&[("TRUST_FORWARDED_FOR", "true")]).await;
    assert_eq!(run(&server, "192.0.2.1", "(= (who) alice)").await.0, 200);
    assert_eq!(run(&server, "192.0.2.2", "(= (who) bob)").await.0, 200);

    // Act
    server.terminate(std::time::Duration::from_secs(20));
    server.restart();
    let alice = run(&server, "192.0.2.1", "!(who)").await;
    let bob = run(&server, "192.0.2.2", "!(who)").await;
    let history = server
        .client
        .get(server.url("/get-history"))
        .header("User-Agent", BROWSER)
        .header("X-Forwarded-For", "192.0.2.1")
        .send()
        .await
        .expect("GET /get-history");
    let (_, history) = read(history).await;
    let (_, shared) = server.get("/api/v1/sessions/default").await;

    // Assert
    assert_eq!(alice.1["result"], "[alice]\n", "{:?}", alice);
    assert_eq!(bob.1["result"], "[bob]\n", "{:?}", bob);
    assert_eq!(history["length"], 2, "alice's history only: {history}");
    assert!(
        !history.to_string().contains("bob"),
        "nothing of bob's: {history}"
    );
    assert!(
        shared
            .get("cells")
            .is_none_or(|cells| cells.as_array().is_none_or(Vec::is_empty)),
        "nothing went to the shared default session: {shared}"
    );
}
