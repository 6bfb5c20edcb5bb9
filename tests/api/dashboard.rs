//! The instructor dashboard over plain HTTP (the browser test, tests/browser, drives it in
//! Chromium): off without `INSTRUCTOR_TOKEN`, sign-in trades the token for a strict session
//! cookie, every page and data call refuses without it, and the token is never logged.

use serde_json::{json, Value};

use crate::support::{python, TestServer};

const TOKEN: &str = "dashboard-test-token";

/// A client that does not follow redirects (to see the sign-in's answer itself).
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

async fn sign_in(server: &TestServer, token: &str) -> reqwest::Response {
    client()
        .post(server.url("/instructor/sign-in"))
        .form(&[("token", token)])
        .send()
        .await
        .expect("POST sign-in")
}

async fn get_with_cookie(server: &TestServer, path: &str, cookie: Option<&str>) -> (u16, String) {
    let mut request = client().get(server.url(path));
    if let Some(cookie) = cookie {
        request = request.header("Cookie", cookie);
    }
    let response = request.send().await.expect("GET");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

#[tokio::test]
async fn the_dashboard_is_off_without_an_instructor_token() {
    // Arrange
    let server = TestServer::start().await;

    // Act
    let (status, page) = get_with_cookie(&server, "/instructor/sessions", None).await;
    let signing_in = sign_in(&server, "anything").await;

    // Assert
    assert_eq!(status, 404, "{page}");
    assert!(page.contains("no INSTRUCTOR_TOKEN"), "{page}");
    assert_eq!(signing_in.status().as_u16(), 404);
}

#[tokio::test]
async fn signing_in_gives_a_strict_cookie_that_every_page_and_data_call_requires() {
    // Arrange: a session with a cell and a failed job.
    let server = TestServer::start_with(&[("INSTRUCTOR_TOKEN", TOKEN)]).await;
    server
        .run(
            json!({"language": "metta", "sessionId": "dash", "codeId": "c1", "code": "!(+ 20 22)"}),
        )
        .await;
    let mut failing = python("raise KeyError('dash-failure')");
    failing["sessionId"] = json!("dash");
    server.run(failing).await;

    // Act
    let wrong = sign_in(&server, "not-it").await;
    let wrong_status = wrong.status().as_u16();
    let wrong_page = wrong.text().await.expect("body");
    let right = sign_in(&server, TOKEN).await;
    let set_cookie = right
        .headers()
        .get("set-cookie")
        .expect("a session cookie")
        .to_str()
        .expect("text")
        .to_string();
    let cookie = set_cookie
        .split(';')
        .next()
        .expect("name=value")
        .to_string();

    // Assert: the sign-in itself.
    assert_eq!(wrong_status, 401);
    assert!(
        wrong_page.contains("That token is not right"),
        "{wrong_page}"
    );
    assert_eq!(right.status().as_u16(), 303);
    for attribute in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/instructor",
        "Max-Age=",
    ] {
        assert!(
            set_cookie.contains(attribute),
            "{attribute} in {set_cookie}"
        );
    }
    assert!(!set_cookie.contains(TOKEN), "the cookie is not the token");

    // Assert: pages and data calls with and without the cookie.
    for path in [
        "/instructor/sessions",
        "/instructor/sessions/dash",
        "/instructor/queue",
    ] {
        let (status, page) = get_with_cookie(&server, path, None).await;
        assert_eq!(status, 401, "{path} without a session: {page}");
        assert!(page.contains("Sign in to see this page"), "{page}");
        let (status, page) = get_with_cookie(&server, path, Some(&cookie)).await;
        assert_eq!(status, 200, "{path} signed in: {page}");
        assert!(!page.contains(TOKEN), "{path} does not show the token");
    }
    let (_, session_page) =
        get_with_cookie(&server, "/instructor/sessions/dash", Some(&cookie)).await;
    assert!(
        session_page.contains("[42]"),
        "the cell's result: {session_page}"
    );
    assert!(
        session_page.contains("KeyError: &#39;dash-failure&#39;")
            || session_page.contains("KeyError: 'dash-failure'"),
        "the failed job's error: {session_page}"
    );
    assert!(session_page.contains("tok-bang"), "the code is highlighted");
    for path in ["/instructor/queue/live", "/instructor/sessions/dash/export"] {
        let (status, body) = get_with_cookie(&server, path, None).await;
        assert_eq!(status, 401, "{path}: {body}");
        let error: Value = serde_json::from_str(&body).expect("a JSON refusal");
        assert!(error["error"].as_str().is_some(), "{error}");
    }
    let (status, live) = get_with_cookie(&server, "/instructor/queue/live", Some(&cookie)).await;
    assert_eq!(status, 200, "{live}");
    let live: Value = serde_json::from_str(&live).expect("JSON");
    assert_eq!(live["finishedRecently"], 2, "{live}");
    assert_eq!(live["problemsRecently"], 1, "{live}");
    let (status, export) =
        get_with_cookie(&server, "/instructor/sessions/dash/export", Some(&cookie)).await;
    assert_eq!(status, 200);
    assert!(export.contains("!(+ 20 22)"), "{export}");
    assert!(!server.logs().contains(TOKEN), "the token is never logged");
}
