//! The original playground's endpoints, with the original JSON shapes, so the existing
//! frontend works unchanged (`tests/api/contract.rs` pins what it relies on: any 2xx is read
//! as the finished result, `/reset-atomspace` comes with no body). Each one enqueues a job,
//! even resets and history cuts, so they are ordered against the runs around them, then waits
//! for it (`LEGACY_WAIT_SECS`) and answers only once the result exists: never a 2xx before it.
//! A request that names no session gets its client's own (`ClientSession`).

use std::time::Duration;

use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
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
use super::{optional_id, ApiError, AppState, ClientAddress, JsonBody, OptionalJsonBody};
use crate::config::LegacySessions;
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
/// header, else the client's own session (`ClientSession`).
fn legacy_session(
    body: Option<&str>,
    headers: &HeaderMap,
    client: ClientSession,
) -> Result<SessionId, ApiError> {
    let header = match headers.get("x-session-id") {
        Some(value) => Some(value.to_str().map_err(|_| {
            ApiError::BadRequest(
                "X-Session-Id may contain only letters, digits, '-' and '_'".into(),
            )
        })?),
        None => None,
    };
    Ok(optional_id(body.or(header), SessionId::parse)?.unwrap_or(client.0))
}

/// The session of a playground request that names none. With `LEGACY_SESSIONS=per-client`
/// (the default) it is the client's own: an HMAC-SHA256, under a secret the server keeps in
/// its database, of the client's address (as `ClientAddress` names it) and User-Agent, so
/// learners on different machines never share atoms or history through the unmodified site,
/// and nobody outside can compute another client's id. With `shared`, the original
/// service's one session `default`.
pub struct ClientSession(SessionId);

impl FromRequestParts<AppState> for ClientSession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if state.config.legacy_sessions == LegacySessions::Shared {
            return Ok(ClientSession(SessionId::default_session()));
        }
        let ClientAddress(address) = ClientAddress::from_request_parts(parts, state).await?;
        let user_agent = parts
            .headers
            .get(axum::http::header::USER_AGENT)
            .map(|value| value.as_bytes())
            .unwrap_or_default();
        Ok(ClientSession(client_session(
            &state.client_session_key,
            &address,
            user_agent,
        )))
    }
}

/// `c-` and the first 128 bits of HMAC-SHA256(key, address NUL user agent), in hex.
fn client_session(key: &[u8], address: &str, user_agent: &[u8]) -> SessionId {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(address.as_bytes());
    mac.update(&[0]);
    mac.update(user_agent);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest[..16]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    SessionId::parse(&format!("c-{hex}"))
        .unwrap_or_else(|_| unreachable!("c- and hex digits form a valid session id"))
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
        refused => return Err(super::jobs::refusal(refused)),
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
        JobStatus::Queued | JobStatus::Running if state.queue.is_shutting_down() => {
            Err(ApiError::Unavailable(format!(
                "the server is restarting; the request is kept and runs once it is back: its result will be at /api/v1/jobs/{}",
                job.id
            )))
        }
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
    client: ClientSession,
    headers: HeaderMap,
    JsonBody(body): JsonBody<LegacyRunBody>,
) -> Result<Json<LegacyMettaAnswer>, ApiError> {
    require_metta(body.language.as_deref())?;
    let session = legacy_session(body.session_id.as_deref(), &headers, client)?;
    let code_id = optional_id(body.code_id.as_deref(), CodeId::parse)?;
    let job = RunSubmission {
        language: Language::Metta,
        code: required_code(body.code)?,
        session_id: Some(session.clone()),
        code_id: code_id.clone(),
        stdin: None,
        timeout_secs: None,
        idempotency_key: None,
        idempotency_scope: None,
    }
    .into_job(&state.config)?;
    let code_id = code_id.unwrap_or_else(|| CodeId::from_job(job.id));
    let job = run_to_completion(&state, job).await?;
    let history_length = state.queue.store().history_length(&session).await?;
    Ok(Json(LegacyMettaAnswer {
        code_id: code_id.as_str().to_string(),
        history_length,
        result: legacy_result(&job, state.config.max_output_bytes),
    }))
}

/// The text a legacy client reads for a run: `result`, except that output cut at
/// `MAX_OUTPUT_BYTES` is cut back to its last whole line and followed by a line that says so
/// (the legacy shape has no `outputTruncated` field to say it).
fn legacy_result(job: &JobRecord, max_output_bytes: usize) -> String {
    let result = job.result.clone().unwrap_or_default();
    if !job.output_truncated {
        return result;
    }
    let output = job.stdout.as_deref().unwrap_or_default();
    let Some(after_output) = result.strip_prefix(output) else {
        return result;
    };
    let whole_lines = match output.rfind('\n') {
        Some(end) => &output[..=end],
        None => "",
    };
    format!(
        "{whole_lines}[output cut here: the run printed more than {max_output_bytes} bytes (MAX_OUTPUT_BYTES); the rest was dropped]\n{after_output}"
    )
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
        idempotency_scope: None,
    }
    .into_job(&state.config)?;
    let job = run_to_completion(&state, job).await?;
    Ok(Json(LegacyPythonAnswer {
        result: legacy_result(&job, state.config.max_output_bytes),
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
    client: ClientSession,
    headers: HeaderMap,
    OptionalJsonBody(body): OptionalJsonBody<LegacySessionBody>,
) -> Result<Json<LegacyMessage>, ApiError> {
    let session = legacy_session(body.session_id.as_deref(), &headers, client)?;
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
    client: ClientSession,
    headers: HeaderMap,
    Query(query): Query<SessionQuery>,
) -> Result<Json<LegacyHistory>, ApiError> {
    let session = legacy_session(query.session_id.as_deref(), &headers, client)?;
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
    client: ClientSession,
    headers: HeaderMap,
    OptionalJsonBody(body): OptionalJsonBody<LegacySessionBody>,
) -> Result<Json<LegacyCutAnswer>, ApiError> {
    let session = legacy_session(body.session_id.as_deref(), &headers, client)?;
    cut_history(&state, session, body, JobKind::ResetTo).await
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
    client: ClientSession,
    headers: HeaderMap,
    OptionalJsonBody(body): OptionalJsonBody<LegacySessionBody>,
) -> Result<Json<LegacyCutAnswer>, ApiError> {
    let session = legacy_session(body.session_id.as_deref(), &headers, client)?;
    cut_history(&state, session, body, JobKind::RemoveCell).await
}

async fn cut_history(
    state: &AppState,
    session: SessionId,
    body: LegacySessionBody,
    kind: JobKind,
) -> Result<Json<LegacyCutAnswer>, ApiError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_session_depends_on_the_key_the_address_and_the_user_agent() {
        let alice = client_session(b"key", "10.0.0.1", b"Firefox");
        assert_eq!(alice, client_session(b"key", "10.0.0.1", b"Firefox"));
        assert_ne!(alice, client_session(b"key", "10.0.0.2", b"Firefox"));
        assert_ne!(alice, client_session(b"key", "10.0.0.1", b"Chrome"));
        assert_ne!(
            alice,
            client_session(b"another key", "10.0.0.1", b"Firefox")
        );
        // No ambiguity between where the address ends and the agent begins.
        assert_ne!(
            client_session(b"key", "10.0.0.1", b"1Firefox"),
            client_session(b"key", "10.0.0.11", b"Firefox")
        );
        assert!(alice.as_str().starts_with("c-") && alice.as_str().len() == 34);
    }
}
