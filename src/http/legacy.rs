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
use utoipa::IntoParams;

use super::jobs::RunSubmission;
use super::wire::{
    ErrorBody, LegacyCutAnswer, LegacyHistory, LegacyHistoryEntry, LegacyMessage,
    LegacyMettaAnswer, LegacyPythonAnswer, LegacyQueueStatus, LegacyRunBody, LegacySessionBody,
    TimeoutBody,
};
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

/// `?sessionId=` of `/get-history`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct SessionQuery {
    /// The session (else the `X-Session-Id` header, else `default`).
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

/// Runs MeTTa in the session and answers once the result exists.
#[utoipa::path(
    post,
    path = "/run-metta",
    tag = "playground",
    request_body = LegacyRunBody,
    params(("X-Session-Id" = Option<String>, Header, description = "the session, when the body names none (else `default`)")),
    responses(
        (status = 200, description = "the run finished; `result` is what metta-py prints", body = LegacyMettaAnswer),
        (status = 400, description = "a bad body, another language, or the learner's code failed", body = ErrorBody),
        (status = 404, description = "not found", body = ErrorBody),
        (status = 408, description = "the run hit its deadline, or the wait ran out (the job goes on)", body = TimeoutBody),
        (status = 409, description = "the job was cancelled", body = ErrorBody),
        (status = 413, description = "the body or the code is too large", body = ErrorBody),
        (status = 429, description = "rate limited", body = ErrorBody),
        (status = 500, description = "the service could not run the job", body = ErrorBody),
        (status = 503, description = "the queue is full", body = ErrorBody),
    )
)]
pub async fn run_metta(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<LegacyRunBody>,
) -> Result<Json<LegacyMettaAnswer>, ApiError> {
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
    Ok(Json(LegacyMettaAnswer {
        code_id: code_id.as_str().to_string(),
        history_length,
        result: job.result.unwrap_or_default(),
    }))
}

/// Runs Python in a fresh interpreter and answers with its stdout once it finished.
#[utoipa::path(
    post,
    path = "/run-python",
    tag = "playground",
    request_body = LegacyRunBody,
    responses(
        (status = 200, description = "the run finished; `result` is its stdout", body = LegacyPythonAnswer),
        (status = 400, description = "a bad body, or the learner's code failed", body = ErrorBody),
        (status = 408, description = "the run hit its deadline, or the wait ran out (the job goes on)", body = TimeoutBody),
        (status = 409, description = "the job was cancelled", body = ErrorBody),
        (status = 413, description = "the body or the code is too large", body = ErrorBody),
        (status = 429, description = "rate limited", body = ErrorBody),
        (status = 500, description = "the service could not run the job", body = ErrorBody),
        (status = 503, description = "the queue is full", body = ErrorBody),
    )
)]
pub async fn run_python(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<LegacyRunBody>,
) -> Result<Json<LegacyPythonAnswer>, ApiError> {
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
    Ok(Json(LegacyPythonAnswer {
        result: job.result.unwrap_or_default(),
    }))
}

/// The queue's size, as the original service reported it.
#[utoipa::path(
    get,
    path = "/queue-status",
    tag = "playground",
    responses(
        (status = 200, description = "queued and running jobs", body = LegacyQueueStatus),
        (status = 500, description = "the database failed", body = ErrorBody),
    )
)]
pub async fn queue_status(
    State(state): State<AppState>,
) -> Result<Json<LegacyQueueStatus>, ApiError> {
    let counts = state.queue.store().queue_counts().await?;
    let queued = counts.count(JobStatus::Queued);
    let running = counts.count(JobStatus::Running);
    Ok(Json(LegacyQueueStatus {
        is_processing: running > 0,
        pending_requests: queued + running,
        queue_size: queued,
    }))
}

/// Clears the session's atomspace and history (a job, ordered against the runs around it).
#[utoipa::path(
    post,
    path = "/reset-atomspace",
    tag = "playground",
    request_body(content = Option<LegacySessionBody>, description = "optional; an empty body resets the session named by the header or `default`"),
    params(("X-Session-Id" = Option<String>, Header, description = "the session, when the body names none (else `default`)")),
    responses(
        (status = 200, description = "reset", body = LegacyMessage),
        (status = 400, description = "a bad body or session id", body = ErrorBody),
        (status = 408, description = "the wait ran out (the job goes on)", body = TimeoutBody),
        (status = 409, description = "the job was cancelled", body = ErrorBody),
        (status = 413, description = "the body is too large", body = ErrorBody),
        (status = 429, description = "rate limited", body = ErrorBody),
        (status = 500, description = "the service failed", body = ErrorBody),
        (status = 503, description = "the queue is full", body = ErrorBody),
    )
)]
pub async fn reset_atomspace(
    State(state): State<AppState>,
    headers: HeaderMap,
    OptionalJsonBody(body): OptionalJsonBody<LegacySessionBody>,
) -> Result<Json<LegacyMessage>, ApiError> {
    let session = legacy_session(body.session_id.as_deref(), &headers)?;
    let job = NewJob::session_change(JobKind::ResetSession, session, None);
    let job = run_to_completion(&state, job).await?;
    Ok(Json(LegacyMessage {
        message: job.result.unwrap_or_default(),
    }))
}

/// The session's history cells, in order.
#[utoipa::path(
    get,
    path = "/get-history",
    tag = "playground",
    params(SessionQuery, ("X-Session-Id" = Option<String>, Header, description = "the session, when the body names none (else `default`)")),
    responses(
        (status = 200, description = "the history", body = LegacyHistory),
        (status = 400, description = "a bad session id", body = ErrorBody),
        (status = 500, description = "the database failed", body = ErrorBody),
    )
)]
pub async fn get_history(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<SessionQuery>,
) -> Result<Json<LegacyHistory>, ApiError> {
    let session = legacy_session(query.session_id.as_deref(), &headers)?;
    let cells = state.queue.store().load_history(&session).await?;
    let history: Vec<LegacyHistoryEntry> = cells
        .iter()
        .map(|cell| LegacyHistoryEntry {
            code: cell.code.clone(),
            id: cell.code_id.as_str().to_string(),
        })
        .collect();
    Ok(Json(LegacyHistory {
        length: history.len(),
        history,
    }))
}

/// Cuts the history at `codeId`: that cell and everything after it go.
#[utoipa::path(
    post,
    path = "/reset-to-code",
    tag = "playground",
    request_body = LegacySessionBody,
    params(("X-Session-Id" = Option<String>, Header, description = "the session, when the body names none (else `default`)")),
    responses(
        (status = 200, description = "cut (or the history was empty)", body = LegacyCutAnswer),
        (status = 400, description = "codeId missing or malformed", body = ErrorBody),
        (status = 404, description = "codeId is not in the history", body = ErrorBody),
        (status = 408, description = "the wait ran out (the job goes on)", body = TimeoutBody),
        (status = 409, description = "the job was cancelled", body = ErrorBody),
        (status = 413, description = "the body is too large", body = ErrorBody),
        (status = 429, description = "rate limited", body = ErrorBody),
        (status = 500, description = "the service failed", body = ErrorBody),
        (status = 503, description = "the queue is full", body = ErrorBody),
    )
)]
pub async fn reset_to_code(
    State(state): State<AppState>,
    headers: HeaderMap,
    OptionalJsonBody(body): OptionalJsonBody<LegacySessionBody>,
) -> Result<Json<LegacyCutAnswer>, ApiError> {
    cut_history(&state, &headers, body, JobKind::ResetTo).await
}

/// The same cut as `/reset-to-code` (the original service's semantics).
#[utoipa::path(
    post,
    path = "/remove-code",
    tag = "playground",
    request_body = LegacySessionBody,
    params(("X-Session-Id" = Option<String>, Header, description = "the session, when the body names none (else `default`)")),
    responses(
        (status = 200, description = "cut (or the history was empty)", body = LegacyCutAnswer),
        (status = 400, description = "codeId missing or malformed", body = ErrorBody),
        (status = 404, description = "codeId is not in the history", body = ErrorBody),
        (status = 408, description = "the wait ran out (the job goes on)", body = TimeoutBody),
        (status = 409, description = "the job was cancelled", body = ErrorBody),
        (status = 413, description = "the body is too large", body = ErrorBody),
        (status = 429, description = "rate limited", body = ErrorBody),
        (status = 500, description = "the service failed", body = ErrorBody),
        (status = 503, description = "the queue is full", body = ErrorBody),
    )
)]
pub async fn remove_code(
    State(state): State<AppState>,
    headers: HeaderMap,
    OptionalJsonBody(body): OptionalJsonBody<LegacySessionBody>,
) -> Result<Json<LegacyCutAnswer>, ApiError> {
    cut_history(&state, &headers, body, JobKind::RemoveCell).await
}

async fn cut_history(
    state: &AppState,
    headers: &HeaderMap,
    body: LegacySessionBody,
    kind: JobKind,
) -> Result<Json<LegacyCutAnswer>, ApiError> {
    let session = legacy_session(body.session_id.as_deref(), headers)?;
    let code_id = body
        .code_id
        .as_deref()
        .ok_or_else(|| ApiError::BadRequest("codeId is required".into()))
        .and_then(|id| CodeId::parse(id).map_err(ApiError::BadRequest))?;
    let job = NewJob::session_change(kind, session.clone(), Some(code_id));
    let job = run_to_completion(state, job).await?;
    let history_length = state.queue.store().history_length(&session).await?;
    Ok(Json(LegacyCutAnswer {
        history_length,
        message: job.result.unwrap_or_default(),
    }))
}
