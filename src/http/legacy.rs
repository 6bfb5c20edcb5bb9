//! The original playground's endpoints, with the original JSON shapes, so the existing
//! frontend works unchanged (see FRONTEND-CONTRACT.md). Each one enqueues a job, even resets
//! and history cuts, so they are ordered against the runs around them, then waits for it
//! (`LEGACY_WAIT_SECS`) and answers only once the result exists: never a 2xx before it.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::jobs::RunSubmission;
use super::{optional_id, ApiError, AppState, JsonBody, OptionalJsonBody};
use crate::domain::{CodeId, ErrorKind, JobKind, JobStatus, Language, SessionId};
use crate::queue::Submission;
use crate::store::{JobRecord, NewJob};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/run-metta", post(run_metta))
        .route("/run-python", post(run_python))
        .route("/queue-status", get(queue_status))
        .route("/reset-atomspace", post(reset_atomspace))
        .route("/get-history", get(get_history))
        .route("/reset-to-code", post(reset_to_code))
        .route("/remove-code", post(remove_code))
}

/// The body of `/run-metta` and `/run-python`. `/run-metta` refuses a `language` other than
/// `metta`, as the original service did; `/run-python` ignores it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LegacyRunBody {
    code: Option<String>,
    language: Option<String>,
    code_id: Option<String>,
    session_id: Option<String>,
}

/// The body of `/reset-atomspace`, `/reset-to-code` and `/remove-code`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LegacySessionBody {
    code_id: Option<String>,
    session_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionQuery {
    session_id: Option<String>,
}

/// The session a legacy request names: the body's `sessionId`, else the `X-Session-Id`
/// header, else `default` (the original service's one global session).
fn legacy_session(body: Option<&str>, headers: &HeaderMap) -> Result<SessionId, ApiError> {
    let header = match headers.get("x-session-id") {
        Some(value) => Some(value.to_str().map_err(|_| {
            ApiError::BadRequest(
                "X-Session-Id may contain only letters, digits, '-' and '_'".into(),
            )
        })?),
        None => None,
    };
    Ok(optional_id(body.or(header), SessionId::parse)?.unwrap_or_else(SessionId::default_session))
}

/// `/run-metta` runs MeTTa only: a body naming another language is refused (400), as the
/// original service did, rather than run as MeTTa.
fn require_metta(language: Option<&str>) -> Result<(), ApiError> {
    match language {
        None | Some("metta") => Ok(()),
        Some(other) => Err(ApiError::BadRequest(format!(
            "Unsupported language '{}': /run-metta runs only \"metta\" (use /run-python for Python)",
            crate::domain::truncate_for_message(other)
        ))),
    }
}

fn required_code(code: Option<String>) -> Result<String, ApiError> {
    code.ok_or_else(|| ApiError::BadRequest("code is required".into()))
}

/// Queues a job and waits for its final state; the answer for anything but success is the
/// error the legacy API gives for it.
async fn run_to_completion(state: &AppState, job: NewJob) -> Result<JobRecord, ApiError> {
    let limit = Duration::from_secs(state.config.legacy_wait_secs);
    let job = match state.queue.submit_and_wait(job, Some(limit)).await? {
        Submission::Accepted(job) | Submission::Existing(job) => job,
        Submission::QueueFull => return Err(ApiError::QueueFull),
    };
    let error = || job.error.clone().unwrap_or_default().trim().to_string();
    match job.status {
        JobStatus::Succeeded => Ok(job),
        JobStatus::Failed => Err(match job.error_kind {
            Some(ErrorKind::Code) => ApiError::LearnerCodeFailed(error()),
            Some(ErrorKind::NotFound) => ApiError::NotFound(error()),
            Some(ErrorKind::Service) | None => ApiError::Fault(error()),
        }),
        JobStatus::TimedOut => Err(ApiError::Timeout {
            message: error(),
            request_id: job.id.to_string(),
        }),
        JobStatus::Cancelled => Err(ApiError::Conflict("the request was cancelled".into())),
        JobStatus::Queued | JobStatus::Running => Err(ApiError::Timeout {
            message: format!(
                "Request timed out; the job goes on and its result will be at /api/v1/jobs/{}",
                job.id
            ),
            request_id: job.id.to_string(),
        }),
    }
}

async fn run_metta(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<LegacyRunBody>,
) -> Result<Json<Value>, ApiError> {
    require_metta(body.language.as_deref())?;
    let session = legacy_session(body.session_id.as_deref(), &headers)?;
    let code_id = optional_id(body.code_id.as_deref(), CodeId::parse)?;
    let job = RunSubmission {
        language: Language::Metta,
        code: required_code(body.code)?,
        session_id: Some(session.clone()),
        code_id: code_id.clone(),
        stdin: None,
        timeout_secs: None,
        idempotency_key: None,
    }
    .into_job(&state.config)?;
    let code_id = code_id.unwrap_or_else(|| CodeId::from_job(job.id));
    let job = run_to_completion(&state, job).await?;
    let history_length = state.queue.store().history_length(&session).await?;
    Ok(Json(json!({
        "result": job.result.unwrap_or_default(),
        "codeId": code_id.as_str(),
        "historyLength": history_length,
    })))
}

async fn run_python(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<LegacyRunBody>,
) -> Result<Json<Value>, ApiError> {
    let job = RunSubmission {
        language: Language::Python,
        code: required_code(body.code)?,
        session_id: None,
        code_id: None,
        stdin: None,
        timeout_secs: None,
        idempotency_key: None,
    }
    .into_job(&state.config)?;
    let job = run_to_completion(&state, job).await?;
    Ok(Json(json!({ "result": job.result.unwrap_or_default() })))
}

async fn queue_status(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let counts = state.queue.store().queue_counts().await?;
    let queued = counts.count(JobStatus::Queued);
    let running = counts.count(JobStatus::Running);
    Ok(Json(json!({
        "queue_size": queued,
        "is_processing": running > 0,
        "pending_requests": queued + running,
    })))
}

async fn reset_atomspace(
    State(state): State<AppState>,
    headers: HeaderMap,
    OptionalJsonBody(body): OptionalJsonBody<LegacySessionBody>,
) -> Result<Json<Value>, ApiError> {
    let session = legacy_session(body.session_id.as_deref(), &headers)?;
    let job = NewJob::session_change(JobKind::ResetSession, session, None);
    let job = run_to_completion(&state, job).await?;
    Ok(Json(json!({ "message": job.result.unwrap_or_default() })))
}

async fn get_history(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<SessionQuery>,
) -> Result<Json<Value>, ApiError> {
    let session = legacy_session(query.session_id.as_deref(), &headers)?;
    let cells = state.queue.store().load_history(&session).await?;
    let history: Vec<Value> = cells
        .iter()
        .map(|cell| json!({ "id": cell.code_id.as_str(), "code": cell.code }))
        .collect();
    Ok(Json(json!({ "length": history.len(), "history": history })))
}

async fn reset_to_code(
    State(state): State<AppState>,
    headers: HeaderMap,
    OptionalJsonBody(body): OptionalJsonBody<LegacySessionBody>,
) -> Result<Json<Value>, ApiError> {
    cut_history(&state, &headers, body, JobKind::ResetTo).await
}

async fn remove_code(
    State(state): State<AppState>,
    headers: HeaderMap,
    OptionalJsonBody(body): OptionalJsonBody<LegacySessionBody>,
) -> Result<Json<Value>, ApiError> {
    cut_history(&state, &headers, body, JobKind::RemoveCell).await
}

async fn cut_history(
    state: &AppState,
    headers: &HeaderMap,
    body: LegacySessionBody,
    kind: JobKind,
) -> Result<Json<Value>, ApiError> {
    let session = legacy_session(body.session_id.as_deref(), headers)?;
    let code_id = body
        .code_id
        .as_deref()
        .ok_or_else(|| ApiError::BadRequest("codeId is required".into()))
        .and_then(|id| CodeId::parse(id).map_err(ApiError::BadRequest))?;
    let job = NewJob::session_change(kind, session.clone(), Some(code_id));
    let job = run_to_completion(state, job).await?;
    let history_length = state.queue.store().history_length(&session).await?;
    Ok(Json(json!({
        "message": job.result.unwrap_or_default(),
        "historyLength": history_length,
    })))
}
