//! `/api/v1/sessions`: hand out session ids, show and export a session's history, change it
//! (reset, reset-to, remove: each a job in the one queue), and the instructors' review
//! (every session; a session's full job log) behind `INSTRUCTOR_TOKEN`.

use std::collections::HashMap;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use subtle::ConstantTimeEq;

use super::jobs::{submit_and_respond, wait_parameter};
use super::wire::{
    CellView, ErrorBody, JobView, ResetToBody, SessionCreated, SessionDetail, SessionJobs,
    SessionList, SessionSummaryView,
};
use super::{ApiError, AppState, JsonBody};
use crate::domain::{CodeId, JobKind, SessionId};
use crate::store::{NewJob, SessionView};

/// Largest page of the instructor listings.
const MAX_PAGE: i64 = 200;
const DEFAULT_PAGE: i64 = 50;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/sessions", post(create_session).get(list_sessions))
        .route("/api/v1/sessions/{id}", get(show_session))
        .route("/api/v1/sessions/{id}/reset", post(reset_session))
        .route("/api/v1/sessions/{id}/reset-to", post(reset_to))
        .route("/api/v1/sessions/{id}/cells/{code_id}", delete(remove_cell))
        .route("/api/v1/sessions/{id}/export", get(export_session))
        .route("/api/v1/sessions/{id}/jobs", get(session_jobs))
}

fn session_id(text: &str) -> Result<SessionId, ApiError> {
    SessionId::parse(text).map_err(ApiError::BadRequest)
}

fn code_id(text: &str) -> Result<CodeId, ApiError> {
    CodeId::parse(text).map_err(ApiError::BadRequest)
}

pub(crate) async fn existing_session(
    state: &AppState,
    id: &SessionId,
) -> Result<SessionView, ApiError> {
    state
        .queue
        .store()
        .session_view(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no session '{id}'")))
}

/// A new, unguessable session id.
#[utoipa::path(
    post,
    path = "/api/v1/sessions",
    tag = "sessions",
    responses(
        (status = 201, description = "the new session", body = SessionCreated),
        (status = 429, description = "rate limited", body = ErrorBody),
        (status = 500, description = "the service failed", body = ErrorBody),
    )
)]
pub async fn create_session(State(state): State<AppState>) -> Result<Response, ApiError> {
    let id = SessionId::generate();
    state.queue.store().create_session(&id).await?;
    Ok((
        StatusCode::CREATED,
        Json(SessionCreated {
            session_id: id.as_str().to_string(),
        }),
    )
        .into_response())
}

/// The session's history cells, in order.
#[utoipa::path(
    get,
    path = "/api/v1/sessions/{id}",
    tag = "sessions",
    params(("id" = String, Path, description = "the session id")),
    responses(
        (status = 200, description = "the session", body = SessionDetail),
        (status = 400, description = "a malformed session id", body = ErrorBody),
        (status = 404, description = "no such session", body = ErrorBody),
        (status = 500, description = "the service failed", body = ErrorBody),
    )
)]
pub async fn show_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SessionDetail>, ApiError> {
    let id = session_id(&id)?;
    let session = existing_session(&state, &id).await?;
    let cells: Vec<CellView> = session.cells.iter().map(CellView::from).collect();
    Ok(Json(SessionDetail {
        length: cells.len(),
        cells,
        created_at: session.created_at,
        session_id: session.id.as_str().to_string(),
        updated_at: session.updated_at,
    }))
}

/// Queues a job that clears the session.
#[utoipa::path(
    post,
    path = "/api/v1/sessions/{id}/reset",
    tag = "sessions",
    params(
        ("id" = String, Path, description = "the session id"),
        ("wait" = Option<f64>, Query, description = "seconds (0-60) to wait for the job to finish"),
    ),
    responses(
        (status = 200, description = "the job, final (with `wait`)", body = JobView),
        (status = 202, description = "the job, queued or running", body = JobView),
        (status = 400, description = "a malformed session id or wait", body = ErrorBody),
        (status = 429, description = "rate limited", body = ErrorBody),
        (status = 500, description = "the service failed", body = ErrorBody),
        (status = 503, description = "the queue is full", body = ErrorBody),
    )
)]
pub async fn reset_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let id = session_id(&id)?;
    let wait = wait_parameter(&params)?;
    let job = NewJob::session_change(JobKind::ResetSession, id, None);
    submit_and_respond(&state, job, wait).await
}

/// Queues a job that cuts the history at `codeId` (that cell and everything after it go).
#[utoipa::path(
    post,
    path = "/api/v1/sessions/{id}/reset-to",
    tag = "sessions",
    request_body = ResetToBody,
    params(
        ("id" = String, Path, description = "the session id"),
        ("wait" = Option<f64>, Query, description = "seconds (0-60) to wait for the job to finish"),
    ),
    responses(
        (status = 200, description = "the job, final (with `wait`); a codeId not in the history fails it with errorKind not_found", body = JobView),
        (status = 202, description = "the job, queued or running", body = JobView),
        (status = 400, description = "a malformed id, body or wait", body = ErrorBody),
        (status = 413, description = "the body is too large", body = ErrorBody),
        (status = 429, description = "rate limited", body = ErrorBody),
        (status = 500, description = "the service failed", body = ErrorBody),
        (status = 503, description = "the queue is full", body = ErrorBody),
    )
)]
pub async fn reset_to(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    JsonBody(body): JsonBody<ResetToBody>,
) -> Result<Response, ApiError> {
    let id = session_id(&id)?;
    let wait = wait_parameter(&params)?;
    let job = NewJob::session_change(JobKind::ResetTo, id, Some(code_id(&body.code_id)?));
    submit_and_respond(&state, job, wait).await
}

/// Queues a job that removes the cell and everything after it.
#[utoipa::path(
    delete,
    path = "/api/v1/sessions/{id}/cells/{code_id}",
    tag = "sessions",
    params(
        ("id" = String, Path, description = "the session id"),
        ("code_id" = String, Path, description = "the cell's codeId"),
        ("wait" = Option<f64>, Query, description = "seconds (0-60) to wait for the job to finish"),
    ),
    responses(
        (status = 200, description = "the job, final (with `wait`)", body = JobView),
        (status = 202, description = "the job, queued or running", body = JobView),
        (status = 400, description = "a malformed id or wait", body = ErrorBody),
        (status = 429, description = "rate limited", body = ErrorBody),
        (status = 500, description = "the service failed", body = ErrorBody),
        (status = 503, description = "the queue is full", body = ErrorBody),
    )
)]
pub async fn remove_cell(
    State(state): State<AppState>,
    Path((id, cell)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let id = session_id(&id)?;
    let wait = wait_parameter(&params)?;
    let job = NewJob::session_change(JobKind::RemoveCell, id, Some(code_id(&cell)?));
    submit_and_respond(&state, job, wait).await
}

/// The history as a `.metta` file: each cell under a comment naming it, in order; it runs
/// with hyperon's `metta-py`.
#[utoipa::path(
    get,
    path = "/api/v1/sessions/{id}/export",
    tag = "sessions",
    params(("id" = String, Path, description = "the session id")),
    responses(
        (status = 200, description = "the .metta file (an attachment)", content_type = "text/plain", body = String),
        (status = 400, description = "a malformed session id", body = ErrorBody),
        (status = 404, description = "no such session", body = ErrorBody),
        (status = 500, description = "the service failed", body = ErrorBody),
    )
)]
pub async fn export_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = session_id(&id)?;
    let session = existing_session(&state, &id).await?;
    Ok(metta_file_download(&session))
}

/// A session's history as a downloadable `.metta` file (also the dashboard's export).
pub(crate) fn metta_file_download(session: &SessionView) -> Response {
    let id = &session.id;
    let mut file = format!("; MeTTa session {id}: {} cells\n", session.cells.len());
    for cell in &session.cells {
        file.push_str(&format!("\n; cell {}: {}\n", cell.position, cell.code_id));
        file.push_str(&cell.code);
        if !cell.code.ends_with('\n') {
            file.push('\n');
        }
    }
    let disposition = format!("attachment; filename=\"{id}.metta\"");
    (
        [
            (
                header::CONTENT_TYPE,
                "text/plain; charset=utf-8".to_string(),
            ),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        file,
    )
        .into_response()
}

/// Proof that the request carries the instructor token.
pub struct Instructor;

impl FromRequestParts<AppState> for Instructor {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        check_instructor(&parts.headers, state.config.instructor_token.as_deref())
    }
}

fn check_instructor(headers: &HeaderMap, token: Option<&str>) -> Result<Instructor, ApiError> {
    let Some(expected) = token.filter(|token| !token.is_empty()) else {
        return Err(ApiError::NotFound(
            "instructor review is off: the server has no INSTRUCTOR_TOKEN".into(),
        ));
    };
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::Unauthorized(
            "instructor endpoints need 'Authorization: Bearer <token>'".into(),
        ));
    };
    let presented = value
        .to_str()
        .ok()
        .and_then(|value| value.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::Unauthorized("the Authorization header must be 'Bearer <token>'".into())
        })?;
    if bool::from(presented.trim().as_bytes().ct_eq(expected.as_bytes())) {
        Ok(Instructor)
    } else {
        Err(ApiError::Forbidden("the instructor token is wrong".into()))
    }
}

/// `?limit=&offset=`, checked.
fn page(params: &HashMap<String, String>) -> Result<(i64, i64), ApiError> {
    let number =
        |name: &str, default: i64, range: std::ops::RangeInclusive<i64>| match params.get(name) {
            None => Ok(default),
            Some(text) => text
                .parse::<i64>()
                .ok()
                .filter(|value| range.contains(value))
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "{name} must be a whole number from {} to {}",
                        range.start(),
                        range.end()
                    ))
                }),
        };
    Ok((
        number("limit", DEFAULT_PAGE, 1..=MAX_PAGE)?,
        number("offset", 0, 0..=i64::MAX)?,
    ))
}

/// Instructors: every session with cell and job counts, newest activity first.
#[utoipa::path(
    get,
    path = "/api/v1/sessions",
    tag = "instructors",
    params(
        ("limit" = Option<i64>, Query, description = "1-200, default 50"),
        ("offset" = Option<i64>, Query, description = "default 0"),
    ),
    responses(
        (status = 200, description = "a page of sessions", body = SessionList),
        (status = 400, description = "a bad limit or offset", body = ErrorBody),
        (status = 401, description = "no bearer token", body = ErrorBody),
        (status = 403, description = "a wrong token", body = ErrorBody),
        (status = 404, description = "instructor review is off (no INSTRUCTOR_TOKEN)", body = ErrorBody),
        (status = 500, description = "the service failed", body = ErrorBody),
    ),
    security(("instructor_token" = []))
)]
pub async fn list_sessions(
    _: Instructor,
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<SessionList>, ApiError> {
    let (limit, offset) = page(&params)?;
    let store = state.queue.store();
    let sessions = store.list_sessions(limit, offset).await?;
    let total = store.count_sessions().await?;
    Ok(Json(SessionList {
        limit,
        offset,
        sessions: sessions.iter().map(SessionSummaryView::from).collect(),
        total,
    }))
}

/// Instructors: the session's full job log in acceptance order, timed-out runs included.
#[utoipa::path(
    get,
    path = "/api/v1/sessions/{id}/jobs",
    tag = "instructors",
    params(
        ("id" = String, Path, description = "the session id"),
        ("limit" = Option<i64>, Query, description = "1-200, default 50"),
        ("offset" = Option<i64>, Query, description = "default 0"),
    ),
    responses(
        (status = 200, description = "a page of the job log", body = SessionJobs),
        (status = 400, description = "a bad id, limit or offset", body = ErrorBody),
        (status = 401, description = "no bearer token", body = ErrorBody),
        (status = 403, description = "a wrong token", body = ErrorBody),
        (status = 404, description = "instructor review is off (no INSTRUCTOR_TOKEN)", body = ErrorBody),
        (status = 500, description = "the service failed", body = ErrorBody),
    ),
    security(("instructor_token" = []))
)]
pub async fn session_jobs(
    _: Instructor,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<SessionJobs>, ApiError> {
    let id = session_id(&id)?;
    let (limit, offset) = page(&params)?;
    let jobs = state.queue.store().session_jobs(&id, limit, offset).await?;
    Ok(Json(SessionJobs {
        jobs: jobs.iter().map(JobView::from).collect(),
        limit,
        offset,
        session_id: id.as_str().to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(header::AUTHORIZATION, value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn instructor_check_distinguishes_off_missing_wrong_and_right() {
        let status = |result: Result<Instructor, ApiError>| match result {
            Ok(_) => 200,
            Err(err) => err.into_response().status().as_u16(),
        };
        assert_eq!(
            status(check_instructor(&headers(Some("Bearer t")), None)),
            404
        );
        assert_eq!(status(check_instructor(&headers(None), Some("t"))), 401);
        assert_eq!(
            status(check_instructor(&headers(Some("Basic t")), Some("t"))),
            401
        );
        assert_eq!(
            status(check_instructor(&headers(Some("Bearer x")), Some("t"))),
            403
        );
        assert_eq!(
            status(check_instructor(&headers(Some("Bearer t")), Some("t"))),
            200
        );
    }
}
