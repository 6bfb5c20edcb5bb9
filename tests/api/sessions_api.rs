//! Sessions and their history: the legacy history endpoints' semantics (in-place re-runs,
//! cuts at a target that rebuild the session from what remains, which session a request
//! names), the v1 sessions API (create, show, change by job, export as a `.metta` file that
//! hyperon runs to the same results), the instructors' review behind `INSTRUCTOR_TOKEN`, and
//! two learners whose sessions define the same function differently, used concurrently.
//!
//! A session's state is checked by what a later probe sees, and the expected text is what
//! hyperon's own `metta-py` prints for the remaining history followed by the probe.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde_json::{json, Value};

use crate::support::{direct_hyperon_run, frontend_code_id, read, TestServer};

// ----- legacy history ------------------------------------------------------------------------

#[tokio::test]
async fn get_history_lists_every_cell_in_order_with_the_seed_shape() {
    // Arrange
    let server = TestServer::start().await;
    let cells = [
        ("code_1_a", "(= (fa) 1)"),
        ("code_2_b", "(= (fb) 2)"),
        ("code_3_c", "!(+ (fa) (fb))"),
    ];
    for (i, (code_id, code)) in cells.iter().enumerate() {
        let data = run_cell(&server, None, code_id, code).await;
        assert_eq!(data["historyLength"], i + 1, "{data}");
    }

    // Act
    let (status, history) = server.get("/get-history").await;

    // Assert
    assert_eq!(status, 200, "{history}");
    let expected: Vec<Value> = cells
        .iter()
        .map(|(id, code)| json!({"id": id, "code": code}))
        .collect();
    assert_eq!(
        history,
        json!({"history": expected, "length": 3}),
        "{history}"
    );
}

#[tokio::test]
async fn rerunning_a_code_id_replaces_its_code_in_place() {
    // Arrange
    let server = TestServer::start().await;
    run_cell(&server, None, "cell_f", "(= (f) 1)").await;
    run_cell(&server, None, "cell_g", "(= (g) 2)").await;

    // Act
    let rerun = run_cell(&server, None, "cell_f", "(= (f) 10)").await;

    // Assert
    assert_eq!(
        rerun["historyLength"], 2,
        "the history keeps its length: {rerun}"
    );
    assert_eq!(rerun["codeId"], "cell_f", "{rerun}");
    let history = legacy_history(&server, None).await;
    assert_eq!(
        history["history"],
        json!([{"id": "cell_f", "code": "(= (f) 10)"}, {"id": "cell_g", "code": "(= (g) 2)"}]),
        "the edited cell keeps its place: {history}"
    );
    let seen = probe(&server, None, "!(f)\n!(g)").await;
    assert_eq!(
        seen,
        direct_hyperon_run("(= (f) 10)\n(= (g) 2)\n!(f)\n!(g)"),
        "the session holds only the new definition of f"
    );
    assert_eq!(seen, "[10]\n[2]\n");
}

#[tokio::test]
async fn reset_to_code_cuts_the_history_at_its_target_and_rebuilds_the_session() {
    cut_at_target_and_rebuild("/reset-to-code").await;
}

#[tokio::test]
async fn remove_code_cuts_the_history_at_its_target_and_rebuilds_the_session() {
    cut_at_target_and_rebuild("/remove-code").await;
}

/// Three definitions; cutting at the second leaves only the first, in the history and in the
/// session a later probe runs in.
async fn cut_at_target_and_rebuild(endpoint: &str) {
    // Arrange
    let server = TestServer::start().await;
    let session = "cutting-learner";
    run_cell(&server, Some(session), "cell_a", "(= (fa) 1)").await;
    run_cell(&server, Some(session), "cell_b", "(= (fb) 2)").await;
    run_cell(&server, Some(session), "cell_c", "(= (fc) 3)").await;

    // Act
    let (status, data) = legacy_post(
        &server,
        endpoint,
        Some(session),
        Some(json!({"codeId": "cell_b"})),
    )
    .await;

    // Assert
    assert_eq!(status, 200, "{endpoint}: {data}");
    let history = legacy_history(&server, Some(session)).await;
    assert_eq!(
        history,
        json!({"history": [{"id": "cell_a", "code": "(= (fa) 1)"}], "length": 1}),
        "{endpoint} removes the target and everything after it: {history}"
    );
    let probe_code = "!(fa)\n!(fb)\n!(fc)";
    let seen = probe(&server, Some(session), probe_code).await;
    assert_eq!(
        seen,
        direct_hyperon_run(&format!("(= (fa) 1)\n{probe_code}")),
        "{endpoint}: the session was rebuilt from the remaining history only"
    );
    assert_eq!(seen, "[1]\n[(fb)]\n[(fc)]\n");
}

#[tokio::test]
async fn history_cuts_refuse_a_missing_or_unknown_code_id_and_accept_an_empty_history() {
    // Arrange
    let server = TestServer::start().await;

    for endpoint in ["/reset-to-code", "/remove-code"] {
        // Act + Assert: an empty history answers 200 whatever the id.
        let empty_session = format!("empty-{}", &endpoint[1..]);
        let (status, data) = legacy_post(
            &server,
            endpoint,
            Some(&empty_session),
            Some(json!({"codeId": "code_1_x"})),
        )
        .await;
        assert_eq!(status, 200, "{endpoint} with an empty history: {data}");

        // A session with one cell.
        let session = format!("one-cell-{}", &endpoint[1..]);
        run_cell(&server, Some(&session), "code_1_only", "(= (only) 1)").await;

        let (status, data) = legacy_post(&server, endpoint, Some(&session), Some(json!({}))).await;
        assert_eq!(status, 400, "{endpoint} without codeId: {data}");
        assert!(data["error"].is_string(), "{endpoint}: {data}");

        let (status, data) = legacy_post(&server, endpoint, Some(&session), None).await;
        assert_eq!(status, 400, "{endpoint} with no body: {data}");
        assert!(data["error"].is_string(), "{endpoint}: {data}");

        let (status, data) = legacy_post(
            &server,
            endpoint,
            Some(&session),
            Some(json!({"codeId": "code_9_missing"})),
        )
        .await;
        assert_eq!(
            status, 404,
            "{endpoint} with an id not in the history: {data}"
        );
        assert!(data["error"].is_string(), "{endpoint}: {data}");

        let history = legacy_history(&server, Some(&session)).await;
        assert_eq!(
            history["length"], 1,
            "a refused cut changes nothing: {history}"
        );
    }
}

#[tokio::test]
async fn legacy_requests_use_the_session_named_by_body_or_header_else_the_shared_default() {
    // Arrange: the original service's one shared session for requests that name none.
    let server = TestServer::start_with(&[("LEGACY_SESSIONS", "shared")]).await;
    let body_run = json!({"code": "(= (who) body-session)", "language": "metta", "codeId": "code_1_body", "sessionId": "named-in-body"});
    let (status, data) = legacy_post(&server, "/run-metta", None, Some(body_run)).await;
    assert_eq!(status, 200, "{data}");
    run_cell(
        &server,
        Some("named-in-header"),
        "code_2_header",
        "(= (who) header-session)",
    )
    .await;
    run_cell(&server, None, "code_3_default", "(= (who) default-session)").await;

    // Act
    let body_probe = json!({"code": "!(who)", "language": "metta", "codeId": "code_4_probe", "sessionId": "named-in-body"});
    let (status, from_body) = legacy_post(&server, "/run-metta", None, Some(body_probe)).await;
    let from_header = probe(&server, Some("named-in-header"), "!(who)").await;
    let from_default = probe(&server, None, "!(who)").await;
    let from_explicit_default = probe(&server, Some("default"), "!(who)").await;

    // Assert
    assert_eq!(status, 200, "{from_body}");
    assert_eq!(from_body["result"], "[body-session]\n", "{from_body}");
    assert_eq!(from_header, "[header-session]\n");
    assert_eq!(from_default, "[default-session]\n");
    assert_eq!(
        from_explicit_default, "[default-session]\n",
        "no session named is the session called default"
    );
    let history = legacy_history(&server, Some("named-in-header")).await;
    assert_eq!(history["length"], 2, "{history}");
    assert_eq!(history["history"][0]["id"], "code_2_header", "{history}");

    // A reset names its session the same way and touches only that one.
    let (status, data) =
        legacy_post(&server, "/reset-atomspace", Some("named-in-header"), None).await;
    assert_eq!(status, 200, "{data}");
    assert_history_length(&server, Some("named-in-header"), 0).await;
    assert_history_length(&server, None, 3).await;
    let (status, data) = legacy_post(
        &server,
        "/reset-atomspace",
        None,
        Some(json!({"sessionId": "named-in-body"})),
    )
    .await;
    assert_eq!(status, 200, "{data}");
    assert_history_length(&server, Some("named-in-body"), 0).await;
    assert_history_length(&server, None, 3).await;
}

// ----- v1 sessions ---------------------------------------------------------------------------

#[tokio::test]
async fn v1_sessions_are_created_unguessable_and_shown_with_their_cells() {
    // Arrange
    let server = TestServer::start().await;

    // Act
    let (status, created) = server.post("/api/v1/sessions", json!({})).await;
    let (second_status, second) = server.post("/api/v1/sessions", json!({})).await;

    // Assert
    assert_eq!(status, 201, "{created}");
    assert_eq!(second_status, 201, "{second}");
    let id = created["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no sessionId: {created}"))
        .to_string();
    assert!(
        id.len() >= 20
            && id.len() <= 64
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "a valid id with room for enough randomness: {created}"
    );
    assert_ne!(
        created["sessionId"], second["sessionId"],
        "{created} {second}"
    );

    let (status, empty) = server.get(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(status, 200, "{empty}");
    assert_eq!(empty["sessionId"], id.as_str(), "{empty}");
    assert_eq!(empty["cells"], json!([]), "{empty}");
    assert_eq!(empty["length"], 0, "{empty}");

    let first = run_cell(&server, Some(&id), "code_1_def", "(= (twice $x) (* 2 $x))").await;
    let second_run = run_cell(&server, Some(&id), "code_2_use", "!(twice 21)").await;
    let (status, shown) = server.get(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["length"], 2, "{shown}");
    let cells = shown["cells"]
        .as_array()
        .unwrap_or_else(|| panic!("{shown}"));
    for (cell, (code_id, code, run)) in cells.iter().zip([
        ("code_1_def", "(= (twice $x) (* 2 $x))", &first),
        ("code_2_use", "!(twice 21)", &second_run),
    ]) {
        assert_eq!(cell["codeId"], code_id, "{shown}");
        assert_eq!(cell["code"], code, "{shown}");
        assert_eq!(cell["lastResult"], run["result"], "{shown}");
    }
    assert_eq!(cells[0]["position"], 1, "{shown}");
    assert_eq!(cells[1]["position"], 2, "{shown}");
    assert_eq!(cells[1]["lastResult"], "[42]\n", "{shown}");

    let (status, missing) = server.get("/api/v1/sessions/never-used-session").await;
    assert_eq!(status, 404, "{missing}");
    assert!(missing["error"].is_string(), "{missing}");
}

#[tokio::test]
async fn v1_session_changes_are_jobs_answering_202_or_with_wait_the_finished_job() {
    // Arrange
    let server = TestServer::start().await;
    let id = new_session(&server).await;
    for (code_id, code) in [
        ("cell_a", "(= (fa) 1)"),
        ("cell_b", "(= (fb) 2)"),
        ("cell_c", "(= (fc) 3)"),
        ("cell_d", "(= (fd) 4)"),
    ] {
        run_cell(&server, Some(&id), code_id, code).await;
    }

    // Act + Assert: reset-to without a wait is a queued job (202), which then succeeds.
    let (status, job) = server
        .post(
            &format!("/api/v1/sessions/{id}/reset-to"),
            json!({"codeId": "cell_d"}),
        )
        .await;
    assert_eq!(status, 202, "{job}");
    assert_eq!(job["kind"], "reset_to", "{job}");
    assert_eq!(job["sessionId"], id.as_str(), "{job}");
    let job = server.wait_final(job["id"].as_str().expect("id")).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(cell_ids(&server, &id).await, ["cell_a", "cell_b", "cell_c"]);

    // reset-to with a wait: the finished job.
    let (status, job) = server
        .post(
            &format!("/api/v1/sessions/{id}/reset-to?wait=30"),
            json!({"codeId": "cell_c"}),
        )
        .await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(cell_ids(&server, &id).await, ["cell_a", "cell_b"]);

    let (status, job) = server
        .post(
            &format!("/api/v1/sessions/{id}/reset-to?wait=30"),
            json!({"codeId": "cell_zz"}),
        )
        .await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["errorKind"], "not_found", "{job}");

    // Removing a cell.
    let (status, job) = server
        .delete(&format!("/api/v1/sessions/{id}/cells/cell_zz?wait=30"))
        .await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["errorKind"], "not_found", "{job}");

    let (status, job) = server
        .delete(&format!("/api/v1/sessions/{id}/cells/cell_b?wait=30"))
        .await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["kind"], "remove_cell", "{job}");
    assert_eq!(cell_ids(&server, &id).await, ["cell_a"]);
    let probe_code = "!(fa)\n!(fb)\n!(fc)\n!(fd)";
    assert_eq!(
        probe(&server, Some(&id), probe_code).await,
        direct_hyperon_run(&format!("(= (fa) 1)\n{probe_code}")),
        "the session was rebuilt from the remaining cell only"
    );

    // Reset, without and with a wait.
    let (status, job) = server
        .post(&format!("/api/v1/sessions/{id}/reset"), json!({}))
        .await;
    assert_eq!(status, 202, "{job}");
    assert_eq!(job["kind"], "reset_session", "{job}");
    let job = server.wait_final(job["id"].as_str().expect("id")).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let (_, shown) = server.get(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(
        shown["cells"],
        json!([]),
        "the reset emptied the session: {shown}"
    );
    run_cell(&server, Some(&id), "cell_e", "(= (fe) 5)").await;
    let (status, job) = server
        .post(&format!("/api/v1/sessions/{id}/reset?wait=30"), json!({}))
        .await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["status"], "succeeded", "{job}");
    let (_, shown) = server.get(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(shown["length"], 0, "{shown}");
    assert_eq!(
        probe(&server, Some(&id), "!(fa)\n!(fe)").await,
        direct_hyperon_run("!(fa)\n!(fe)"),
        "a reset session knows nothing"
    );
}

#[tokio::test]
async fn export_is_a_metta_file_that_hyperon_runs_to_the_same_results() {
    // Arrange: definitions, facts, queries; one cell edited in place and one removed.
    let server = TestServer::start().await;
    let id = new_session(&server).await;
    let cells = [
        ("cell_1", "(= (double $x) (* 2 $x))\n!(double 4)"),
        (
            "cell_2",
            "(Sam is-a cat)\n(Tom is-a cat)\n!(match &self (Sam is-a $what) $what)",
        ),
        ("cell_3", "!(double (+ 1 2))\n!(let $y 5 (double $y))"),
        ("cell_4", "(= (double $x) (+ $x $x $x))"),
    ];
    for (code_id, code) in cells {
        run_cell(&server, Some(&id), code_id, code).await;
    }
    run_cell(
        &server,
        Some(&id),
        "cell_2",
        "(Sam is-a dog)\n!(match &self (Sam is-a $what) $what)",
    )
    .await;
    let (status, job) = server
        .delete(&format!("/api/v1/sessions/{id}/cells/cell_4?wait=30"))
        .await;
    assert_eq!(
        (status, job["status"].as_str()),
        (200, Some("succeeded")),
        "{job}"
    );
    let (_, shown) = server.get(&format!("/api/v1/sessions/{id}")).await;
    let session_results: String = shown["cells"]
        .as_array()
        .unwrap_or_else(|| panic!("{shown}"))
        .iter()
        .map(|cell| {
            cell["lastResult"]
                .as_str()
                .unwrap_or_else(|| panic!("{shown}"))
        })
        .collect();

    // Act
    let response = server
        .client
        .get(server.url(&format!("/api/v1/sessions/{id}/export")))
        .send()
        .await
        .expect("GET export");

    // Assert
    assert_eq!(response.status().as_u16(), 200, "{response:?}");
    let content_type = header(&response, "content-type");
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let disposition = header(&response, "content-disposition");
    assert!(
        disposition.contains(".metta"),
        "a .metta file: {disposition}"
    );
    let file = response.text().await.expect("export body");
    assert!(
        !file.contains("cell_4") && !file.contains("$x $x $x"),
        "the removed cell is gone:\n{file}"
    );
    assert!(
        file.contains("(Sam is-a dog)") && !file.contains("(Sam is-a cat)"),
        "the edited cell:\n{file}"
    );
    assert_eq!(
        direct_hyperon_run(&file),
        session_results,
        "running the export gives the session's results:\n{file}\n{shown}"
    );
    assert_eq!(session_results, "[8]\n[dog]\n[6]\n[10]\n", "{shown}");

    let (status, missing) = server
        .get("/api/v1/sessions/never-used-session/export")
        .await;
    assert_eq!(status, 404, "{missing}");
}

// ----- instructor review ---------------------------------------------------------------------

#[tokio::test]
async fn instructor_review_needs_the_token_and_never_logs_it() {
    // Arrange
    let token = "instructor-secret-7f3a9c51e2";
    let server = TestServer::start_with(&[("INSTRUCTOR_TOKEN", token)]).await;
    run_cell(&server, Some("reviewed-learner"), "code_1_x", "(= (x) 1)").await;

    for path in ["/api/v1/sessions", "/api/v1/sessions/reviewed-learner/jobs"] {
        // Act
        let (none, none_body) = instructor_get(&server, path, None).await;
        let (wrong, wrong_body) = instructor_get(&server, path, Some("not-the-token")).await;
        let (right, right_body) = instructor_get(&server, path, Some(token)).await;

        // Assert
        assert_eq!(none, 401, "{path} without Authorization: {none_body}");
        assert!(none_body["error"].is_string(), "{none_body}");
        assert_eq!(wrong, 403, "{path} with a wrong token: {wrong_body}");
        assert!(wrong_body["error"].is_string(), "{wrong_body}");
        assert_eq!(right, 200, "{path} with the token: {right_body}");
        assert!(
            !right_body.to_string().contains(token),
            "{path} does not echo the token: {right_body}"
        );
    }
    let logs = server.logs();
    assert!(
        !logs.contains(token),
        "the token appears in the server's log:\n{logs}"
    );
}

#[tokio::test]
async fn instructor_review_is_off_without_a_token() {
    // Arrange
    let server = TestServer::start().await;
    run_cell(&server, Some("some-learner"), "code_1_x", "(= (x) 1)").await;

    for path in ["/api/v1/sessions", "/api/v1/sessions/some-learner/jobs"] {
        for token in [None, Some("anything")] {
            // Act
            let (status, body) = instructor_get(&server, path, token).await;

            // Assert
            assert_eq!(status, 404, "{path} with {token:?}: {body}");
            let error = body["error"].as_str().unwrap_or_default();
            assert!(
                error.contains("off"),
                "the error says review is off: {body}"
            );
        }
    }
}

#[tokio::test]
async fn instructors_see_sessions_by_latest_activity_with_full_job_logs() {
    // Arrange: three learners; the latest activity is older-learner's second visit.
    let token = "review-token-41d8";
    let server =
        TestServer::start_with(&[("INSTRUCTOR_TOKEN", token), ("RUN_TIMEOUT_SECS", "1")]).await;
    let (status, data) = legacy_post(
        &server,
        "/run-metta",
        Some("failing-learner"),
        Some(run_body("!(+ 1", "code_0_fail")),
    )
    .await;
    assert_eq!(status, 400, "{data}");
    pause().await;
    run_cell(&server, Some("older-learner"), "code_1_x", "(= (x) 1)").await;
    pause().await;
    let newer = "newer-learner";
    run_cell(&server, Some(newer), "code_2_loop", "(= (loop) (loop))").await;
    run_cell(&server, Some(newer), "code_3_sum", "!(+ 1 1)").await;
    let (status, data) = legacy_post(
        &server,
        "/run-metta",
        Some(newer),
        Some(run_body("!(+ 1", "code_4_parse")),
    )
    .await;
    assert_eq!(status, 400, "{data}");
    let (status, data) = legacy_post(
        &server,
        "/run-metta",
        Some(newer),
        Some(run_body("!(loop)", "code_5_loop")),
    )
    .await;
    assert_eq!(status, 408, "{data}");
    pause().await;
    run_cell(&server, Some("older-learner"), "code_6_y", "(= (y) 2)").await;

    // Act
    let (status, listing) = instructor_get(&server, "/api/v1/sessions", Some(token)).await;
    let (page_status, second_page) =
        instructor_get(&server, "/api/v1/sessions?limit=1&offset=1", Some(token)).await;
    let (jobs_status, log) = instructor_get(
        &server,
        &format!("/api/v1/sessions/{newer}/jobs"),
        Some(token),
    )
    .await;

    // Assert: the listing, newest activity first.
    assert_eq!(status, 200, "{listing}");
    let sessions = listing["sessions"]
        .as_array()
        .unwrap_or_else(|| panic!("{listing}"));
    let order: Vec<&str> = sessions
        .iter()
        .map(|s| s["sessionId"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        order,
        ["older-learner", newer, "failing-learner"],
        "{listing}"
    );
    assert_eq!(listing["total"], 3, "{listing}");
    let counts: Vec<(i64, i64)> = sessions
        .iter()
        .map(|s| {
            (
                s["cells"].as_i64().unwrap_or(-1),
                s["jobs"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(
        counts,
        [(2, 2), (2, 4), (0, 1)],
        "cells and jobs per session: {listing}"
    );
    for session in sessions {
        let first = session["firstActivity"]
            .as_str()
            .unwrap_or_else(|| panic!("{session}"));
        let last = session["lastActivity"]
            .as_str()
            .unwrap_or_else(|| panic!("{session}"));
        assert!(first <= last, "{session}");
    }
    assert!(
        sessions[0]["firstActivity"].as_str() < sessions[1]["firstActivity"].as_str(),
        "older-learner began before newer-learner: {listing}"
    );

    assert_eq!(page_status, 200, "{second_page}");
    assert_eq!(second_page["total"], 3, "{second_page}");
    let page: Vec<&str> = second_page["sessions"]
        .as_array()
        .unwrap_or_else(|| panic!("{second_page}"))
        .iter()
        .map(|s| s["sessionId"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        page,
        [newer],
        "limit=1&offset=1 is the second session: {second_page}"
    );

    // The job log: every run, the failed and timed-out ones included, with its details.
    assert_eq!(jobs_status, 200, "{log}");
    let jobs = log["jobs"].as_array().unwrap_or_else(|| panic!("{log}"));
    let summary: Vec<(&str, &str)> = jobs
        .iter()
        .map(|job| {
            (
                job["code"].as_str().unwrap_or("?"),
                job["status"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("(= (loop) (loop))", "succeeded"),
            ("!(+ 1 1)", "succeeded"),
            ("!(+ 1", "failed"),
            ("!(loop)", "timed_out"),
        ],
        "{log}"
    );
    assert_eq!(jobs[1]["result"], "[2]\n", "{log}");
    for job in jobs {
        for field in ["result", "output", "error"] {
            assert!(job.get(field).is_some(), "the log shows {field}: {job}");
        }
        for field in ["createdAt", "startedAt", "finishedAt"] {
            assert!(job[field].is_string(), "the log shows {field}: {job}");
        }
        assert!(job["durationMs"].is_i64(), "{job}");
    }
    for failed in &jobs[2..] {
        let error = failed["error"].as_str().unwrap_or_default();
        assert!(!error.is_empty(), "a failed run keeps its error: {failed}");
    }
    assert!(
        jobs[3]["durationMs"].as_i64().unwrap_or(0) >= 900,
        "the timed-out run ran to its 1 s deadline: {}",
        jobs[3]
    );
}

// ----- two learners ----------------------------------------------------------------------------

#[tokio::test]
async fn two_learners_defining_the_same_function_each_get_their_own_answers() {
    // Arrange: both define `double`, differently, at the same moment.
    let server = TestServer::start().await;
    let learners = [
        ("learner-one", "(= (double $x) (* 2 $x))"),
        ("learner-two", "(= (double $x) (+ $x 1000))"),
    ];
    let mut definitions = Vec::new();
    for (session, code) in learners {
        definitions.push(tokio::spawn(send_run(
            server.client.clone(),
            server.url("/run-metta"),
            session,
            code.to_string(),
            frontend_code_id(),
        )));
    }
    for definition in definitions {
        let (status, data) = definition.await.expect("definition task");
        assert_eq!(status, 200, "{data}");
    }

    // Act: each runs `double` 12 times, all 24 requests at once, interleaved.
    const RUNS: u64 = 12;
    let mut runs = Vec::new();
    for i in 0..RUNS {
        for (session, _) in learners {
            let task = tokio::spawn(send_run(
                server.client.clone(),
                server.url("/run-metta"),
                session,
                format!("!(double {i})"),
                frontend_code_id(),
            ));
            runs.push((session, i, task));
        }
    }

    // Assert
    for (session, i, task) in runs {
        let (status, data) = task.await.expect("run task");
        assert_eq!(status, 200, "{session} run {i}: {data}");
        let expected = if session == "learner-one" {
            2 * i
        } else {
            i + 1000
        };
        assert_eq!(
            data["result"],
            format!("[{expected}]\n"),
            "{session} gets its own double of {i}: {data}"
        );
    }
    for (session, _) in learners {
        let history = legacy_history(&server, Some(session)).await;
        assert_eq!(history["length"], RUNS + 1, "{session}: {history}");
    }
}

// ----- local helpers -------------------------------------------------------------------------

/// The frontend's `/run-metta` body.
fn run_body(code: &str, code_id: &str) -> Value {
    json!({"code": code, "language": "metta", "codeId": code_id})
}

/// POSTs a legacy request with `Content-Type: application/json`, naming `session` with the
/// `X-Session-Id` header when given; `None` sends no body at all.
async fn legacy_post(
    server: &TestServer,
    path: &str,
    session: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = server
        .client
        .post(server.url(path))
        .header(CONTENT_TYPE, "application/json");
    if let Some(session) = session {
        request = request.header("X-Session-Id", session);
    }
    if let Some(body) = body {
        request = request.body(body.to_string());
    }
    read(request.send().await.expect("POST")).await
}

/// Runs a cell through `/run-metta`; panics unless it answers 200.
async fn run_cell(server: &TestServer, session: Option<&str>, code_id: &str, code: &str) -> Value {
    let (status, data) =
        legacy_post(server, "/run-metta", session, Some(run_body(code, code_id))).await;
    assert_eq!(status, 200, "running {code_id} ({code:?}): {data}");
    assert_eq!(data["codeId"], code_id, "{data}");
    data
}

/// Runs `code` as a new cell and returns what it printed.
async fn probe(server: &TestServer, session: Option<&str>, code: &str) -> String {
    let data = run_cell(server, session, &frontend_code_id(), code).await;
    data["result"]
        .as_str()
        .unwrap_or_else(|| panic!("no result: {data}"))
        .to_string()
}

/// `GET /get-history` for `session` (named with `X-Session-Id`).
async fn legacy_history(server: &TestServer, session: Option<&str>) -> Value {
    let mut request = server.client.get(server.url("/get-history"));
    if let Some(session) = session {
        request = request.header("X-Session-Id", session);
    }
    let (status, history) = read(request.send().await.expect("GET /get-history")).await;
    assert_eq!(status, 200, "{history}");
    history
}

/// Asserts the length of `session`'s legacy history, printing the history when it differs.
async fn assert_history_length(server: &TestServer, session: Option<&str>, length: usize) {
    let history = legacy_history(server, session).await;
    assert_eq!(history["length"], length, "{session:?}: {history}");
}

/// A new v1 session's id.
async fn new_session(server: &TestServer) -> String {
    let (status, created) = server.post("/api/v1/sessions", json!({})).await;
    assert_eq!(status, 201, "{created}");
    created["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_string()
}

/// The codeIds of a session's cells, in position order, from the v1 API.
async fn cell_ids(server: &TestServer, session: &str) -> Vec<String> {
    let (status, shown) = server.get(&format!("/api/v1/sessions/{session}")).await;
    assert_eq!(status, 200, "{shown}");
    shown["cells"]
        .as_array()
        .unwrap_or_else(|| panic!("{shown}"))
        .iter()
        .map(|cell| cell["codeId"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// A GET with `Authorization: Bearer <token>` when a token is given.
async fn instructor_get(server: &TestServer, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = server.client.get(server.url(path));
    if let Some(token) = token {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    read(request.send().await.expect("GET")).await
}

/// One `/run-metta` request in `session` (for spawned tasks, which cannot borrow the server).
async fn send_run(
    client: reqwest::Client,
    url: String,
    session: &'static str,
    code: String,
    code_id: String,
) -> (u16, Value) {
    let response = client
        .post(url)
        .header(CONTENT_TYPE, "application/json")
        .header("X-Session-Id", session)
        .body(run_body(&code, &code_id).to_string())
        .send()
        .await
        .expect("POST /run-metta");
    read(response).await
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// Lets the millisecond timestamps of two activities differ.
async fn pause() {
    tokio::time::sleep(Duration::from_millis(20)).await;
}
