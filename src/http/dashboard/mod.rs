//! The instructor dashboard under `/instructor`: read-only HTML pages over the stored sessions
//! and jobs, and a live view of the queue. On only when `INSTRUCTOR_TOKEN` is set.
//!
//! An instructor signs in with the token once (`sign_in`) and gets a signed, expiring session
//! cookie; every page and data call checks that cookie and refuses without it (pages: 401
//! with the sign-in form; data calls: 401 JSON). Pages are rendered here (`pages`, maud), with
//! MeTTa highlighted on the server (`highlight`); the stylesheet and the one script (the live
//! queue's refresh) are compiled into the binary. Everything is read through the store's
//! existing operations (sessions, session view, session jobs, queue counts, a job) and the
//! in-memory recent activity; nothing here writes.

mod highlight;
mod pages;
mod sign_in;

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{Form, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use maud::Markup;
use serde::Deserialize;

use self::pages::{JobFilter, QueueSnapshot, SessionPage, SessionRow};
pub use self::sign_in::InstructorSessions;
use super::{ApiError, AppState};
use crate::domain::{JobStatus, SessionId};
use crate::store::JobRecord;

/// Sessions per page of the list.
const SESSIONS_PER_PAGE: i64 = 25;
/// Jobs per page of a session's log.
const JOBS_PER_PAGE: usize = 50;
/// Jobs of one session read for its counts and log (the store's largest page, this many times).
const JOB_READ_PAGE: i64 = 200;
const MAX_JOBS_READ: i64 = 2000;
/// Width of a bar of the live chart.
const BUCKET: Duration = Duration::from_secs(10);

const STYLESHEET: &str = include_str!("assets/dashboard.css");
const SCRIPT: &str = include_str!("assets/dashboard.js");
/// Only this origin's own stylesheet, script and fetches; no frames, no foreign forms.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/instructor", get(home))
        .route("/instructor/", get(home))
        .route("/instructor/sign-in", get(sign_in_form).post(sign_in))
        .route("/instructor/sign-out", post(sign_out))
        .route("/instructor/sessions", get(sessions_page))
        .route("/instructor/sessions/{id}", get(session_page))
        .route("/instructor/sessions/{id}/export", get(export))
        .route("/instructor/queue", get(queue_page))
        .route("/instructor/queue/live", get(queue_live))
        .route("/instructor/assets/dashboard.css", get(stylesheet))
        .route("/instructor/assets/dashboard.js", get(script))
        .route("/instructor/{*rest}", get(unknown_page))
}

// ----- answers ------------------------------------------------------------------------------

/// An HTML page with the dashboard's headers (no caching, a strict content policy).
fn page(status: StatusCode, markup: Markup) -> Response {
    let mut response = (status, markup.into_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    protect(headers);
    response
}

fn protect(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

/// Why a page is not shown.
pub enum PageRefusal {
    /// No `INSTRUCTOR_TOKEN`: the dashboard is off.
    Off,
    /// No valid session cookie.
    SignedOut,
}

impl IntoResponse for PageRefusal {
    fn into_response(self) -> Response {
        match self {
            PageRefusal::Off => page(StatusCode::NOT_FOUND, pages::not_found(false, OFF_MESSAGE)),
            PageRefusal::SignedOut => page(
                StatusCode::UNAUTHORIZED,
                pages::sign_in(Some("Sign in to see this page.")),
            ),
        }
    }
}

const OFF_MESSAGE: &str = "The instructor dashboard is off: the server has no INSTRUCTOR_TOKEN.";

// ----- who may look -------------------------------------------------------------------------

/// A signed-in instructor looking at a page (refused with the sign-in page).
pub struct PageViewer;

impl FromRequestParts<AppState> for PageViewer {
    type Rejection = PageRefusal;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let sessions = state.instructors.as_ref().ok_or(PageRefusal::Off)?;
        if sessions.is_signed_in(&parts.headers) {
            Ok(PageViewer)
        } else {
            Err(PageRefusal::SignedOut)
        }
    }
}

/// A signed-in instructor's data call (refused with a JSON 401).
pub struct DataViewer;

impl FromRequestParts<AppState> for DataViewer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let sessions = state
            .instructors
            .as_ref()
            .ok_or_else(|| ApiError::NotFound(OFF_MESSAGE.into()))?;
        if sessions.is_signed_in(&parts.headers) {
            Ok(DataViewer)
        } else {
            Err(ApiError::Unauthorized(
                "sign in at /instructor/sign-in first".into(),
            ))
        }
    }
}

// ----- sign-in ------------------------------------------------------------------------------

async fn home(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match &state.instructors {
        None => PageRefusal::Off.into_response(),
        Some(sessions) if sessions.is_signed_in(&headers) => {
            Redirect::to("/instructor/sessions").into_response()
        }
        Some(_) => Redirect::to("/instructor/sign-in").into_response(),
    }
}

async fn sign_in_form(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match &state.instructors {
        None => PageRefusal::Off.into_response(),
        Some(sessions) if sessions.is_signed_in(&headers) => {
            Redirect::to("/instructor/sessions").into_response()
        }
        Some(_) => page(StatusCode::OK, pages::sign_in(None)),
    }
}

#[derive(Deserialize)]
struct SignInForm {
    #[serde(default)]
    token: String,
}

async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    let Some(sessions) = &state.instructors else {
        return PageRefusal::Off.into_response();
    };
    if !sessions.token_matches(&form.token) {
        crate::service_metrics::request_refused("forbidden");
        tracing::info!("instructor sign-in refused: wrong token");
        return page(
            StatusCode::UNAUTHORIZED,
            pages::sign_in(Some(
                "That token is not right. Check INSTRUCTOR_TOKEN and try again.",
            )),
        );
    }
    tracing::info!("instructor signed in");
    let cookie = sessions.issue_cookie(sign_in::came_over_https(&headers));
    let mut response = Redirect::to("/instructor/sessions").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn sign_out(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(sessions) = &state.instructors else {
        return PageRefusal::Off.into_response();
    };
    let cookie = sessions.sign_out(&headers, sign_in::came_over_https(&headers));
    let mut response = Redirect::to("/instructor/sign-in").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

// ----- pages --------------------------------------------------------------------------------

/// The jobs of a session, read page by page up to `MAX_JOBS_READ` (acceptance order), and
/// whether there may be more.
async fn session_jobs(
    state: &AppState,
    id: &SessionId,
) -> Result<(Vec<JobRecord>, bool), ApiError> {
    let store = state.queue.store();
    let mut jobs = Vec::new();
    loop {
        let offset = jobs.len() as i64;
        let page = store.session_jobs(id, JOB_READ_PAGE, offset).await?;
        let full = page.len() as i64 == JOB_READ_PAGE;
        jobs.extend(page);
        if !full {
            return Ok((jobs, false));
        }
        if jobs.len() as i64 >= MAX_JOBS_READ {
            return Ok((jobs, true));
        }
    }
}

fn count_status(jobs: &[JobRecord], status: JobStatus) -> u64 {
    jobs.iter().filter(|job| job.status == status).count() as u64
}

async fn sessions_page(
    _: PageViewer,
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let store = state.queue.store();
    let query = params.get("q").map(|q| q.trim()).filter(|q| !q.is_empty());
    let page_number: i64 = params
        .get("page")
        .and_then(|text| text.parse().ok())
        .filter(|page| *page >= 1)
        .unwrap_or(1);
    let (summaries, total, search_message) = match query {
        Some(query) => match SessionId::parse(query) {
            Err(problem) => (Vec::new(), 0, Some(problem)),
            Ok(id) => match store.session_view(&id).await? {
                None => (
                    Vec::new(),
                    0,
                    Some(format!("No session is named '{query}'.")),
                ),
                Some(view) => {
                    let (jobs, partial) = session_jobs(&state, &id).await?;
                    let row = SessionRow {
                        id: id.as_str().to_string(),
                        cells: view.cells.len() as i64,
                        jobs: jobs.len() as i64,
                        failed: count_status(&jobs, JobStatus::Failed),
                        timed_out: count_status(&jobs, JobStatus::TimedOut),
                        counts_partial: partial,
                        first_activity: jobs
                            .first()
                            .map(|job| job.created_at.clone())
                            .or(Some(view.created_at.clone())),
                        last_activity: Some(view.updated_at.clone()),
                    };
                    (vec![row], 1, None)
                }
            },
        },
        None => {
            let total = store.count_sessions().await?;
            let offset = (page_number - 1).saturating_mul(SESSIONS_PER_PAGE);
            let summaries = store.list_sessions(SESSIONS_PER_PAGE, offset).await?;
            let mut rows = Vec::with_capacity(summaries.len());
            for summary in &summaries {
                let (jobs, partial) = session_jobs(&state, &summary.id).await?;
                rows.push(SessionRow {
                    id: summary.id.as_str().to_string(),
                    cells: summary.cells,
                    jobs: summary.jobs,
                    failed: count_status(&jobs, JobStatus::Failed),
                    timed_out: count_status(&jobs, JobStatus::TimedOut),
                    counts_partial: partial,
                    first_activity: summary.first_activity.clone(),
                    last_activity: summary.last_activity.clone(),
                });
            }
            (rows, total, None)
        }
    };
    let pages = ((total + SESSIONS_PER_PAGE - 1) / SESSIONS_PER_PAGE).max(1);
    Ok(page(
        StatusCode::OK,
        pages::sessions(
            &summaries,
            query,
            search_message.as_deref(),
            page_number.min(pages),
            pages,
            total,
        ),
    ))
}

async fn session_page(
    _: PageViewer,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let Ok(id) = SessionId::parse(&id) else {
        return Ok(page(
            StatusCode::NOT_FOUND,
            pages::not_found(true, "That is not a session id."),
        ));
    };
    let Some(session) = state.queue.store().session_view(&id).await? else {
        return Ok(page(
            StatusCode::NOT_FOUND,
            pages::not_found(true, &format!("No session is named '{id}'.")),
        ));
    };
    let (mut jobs, partial) = session_jobs(&state, &id).await?;
    jobs.reverse();
    let is_problem =
        |job: &&JobRecord| matches!(job.status, JobStatus::Failed | JobStatus::TimedOut);
    let problem_jobs = jobs.iter().filter(is_problem).count();
    let filter = match params.get("show").map(String::as_str) {
        Some("problems") => JobFilter::Problems,
        _ => JobFilter::All,
    };
    let shown: Vec<JobRecord> = match filter {
        JobFilter::All => jobs.clone(),
        JobFilter::Problems => jobs.iter().filter(is_problem).cloned().collect(),
    };
    let pages_count = shown.len().div_ceil(JOBS_PER_PAGE).max(1);
    let page_number = params
        .get("page")
        .and_then(|text| text.parse::<usize>().ok())
        .unwrap_or(1)
        .clamp(1, pages_count);
    let start = (page_number - 1) * JOBS_PER_PAGE;
    let end = (start + JOBS_PER_PAGE).min(shown.len());
    Ok(page(
        StatusCode::OK,
        pages::session(&SessionPage {
            session: &session,
            jobs: &shown[start..end],
            all_jobs: jobs.len(),
            problem_jobs,
            jobs_partial: partial,
            filter,
            page: page_number,
            pages: pages_count,
        }),
    ))
}

async fn export(
    _: DataViewer,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = SessionId::parse(&id).map_err(ApiError::BadRequest)?;
    let session = super::sessions::existing_session(&state, &id).await?;
    let mut response = super::sessions::metta_file_download(&session);
    protect(response.headers_mut());
    Ok(response)
}

async fn queue_snapshot(state: &AppState) -> Result<QueueSnapshot, ApiError> {
    let store = state.queue.store();
    let counts = store.queue_counts().await?;
    let running_job = match counts.running_job {
        Some(id) => store.get_job(id).await?,
        None => None,
    };
    Ok(QueueSnapshot {
        queued: counts.count(JobStatus::Queued),
        running: counts.count(JobStatus::Running),
        running_job,
        buckets: state.queue.recent_activity().summary(BUCKET),
        bucket_secs: BUCKET.as_secs(),
    })
}

async fn queue_page(_: PageViewer, State(state): State<AppState>) -> Result<Response, ApiError> {
    let snapshot = queue_snapshot(&state).await?;
    Ok(page(StatusCode::OK, pages::queue(&snapshot)))
}

/// The live queue view's refresh.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct QueueLive {
    queued: i64,
    running: i64,
    running_job_id: Option<String>,
    running_job_html: String,
    finished_recently: u64,
    problems_recently: u64,
    mean_wait_ms: Option<f64>,
    buckets: Vec<crate::recent_activity::ActivityBucket>,
    chart_svg: String,
}

async fn queue_live(_: DataViewer, State(state): State<AppState>) -> Result<Response, ApiError> {
    let snapshot = queue_snapshot(&state).await?;
    let live = QueueLive {
        queued: snapshot.queued,
        running: snapshot.running,
        running_job_id: snapshot.running_job.as_ref().map(|job| job.id.to_string()),
        running_job_html: pages::to_html(pages::running_job(snapshot.running_job.as_ref())),
        finished_recently: snapshot.finished_recently(),
        problems_recently: snapshot.problems_recently(),
        mean_wait_ms: snapshot.mean_wait_ms(),
        chart_svg: pages::to_html(pages::activity_chart(
            &snapshot.buckets,
            snapshot.bucket_secs,
        )),
        buckets: snapshot.buckets,
    };
    let mut response = Json(live).into_response();
    protect(response.headers_mut());
    Ok(response)
}

async fn unknown_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match &state.instructors {
        None => PageRefusal::Off.into_response(),
        Some(sessions) if !sessions.is_signed_in(&headers) => {
            PageRefusal::SignedOut.into_response()
        }
        Some(_) => page(
            StatusCode::NOT_FOUND,
            pages::not_found(true, "There is no such page."),
        ),
    }
}

async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", STYLESHEET)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}
