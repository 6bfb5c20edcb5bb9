//! `/api/v1/jobs` and `/api/v1/queue`: submit, read (optionally long-waiting), cancel, and the
//! queue's counts.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use super::wire::{ErrorBody, JobView, QueueView, SubmitJobBody};
use super::{optional_id, ApiError, AppState, ClientAddress, JsonBody};
use crate::config::Config;
use crate::domain::{validate_idempotency_key, CodeId, JobId, JobKind, Language, SessionId};
use crate::queue::Submission;
use crate::store::{CancelOutcome, JobRecord, NewJob};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

/// Longest `?wait=` a client may ask for, in seconds.
pub const MAX_WAIT_SECS: f64 = 60.0;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/jobs", post(submit_job))
        .route("/api/v1/jobs/{id}", get(get_job).delete(cancel_job))
        .route("/api/v1/queue", get(queue_counts))
}

/// A run request from either API, before validation.
#[derive(Debug)]
pub struct RunSubmission {
    pub language: Language,
    pub code: String,
    pub session_id: Option<SessionId>,
    pub code_id: Option<CodeId>,
    pub stdin: Option<String>,
    pub timeout_secs: Option<f64>,
    pub idempotency_key: Option<String>,
    /// Whose the idempotency key is: the session, or the client's identity.
    pub idempotency_scope: Option<String>,
}

impl RunSubmission {
    /// Checks the request against the configured limits and builds the job to store.
    pub fn into_job(self, config: &Config) -> Result<NewJob, ApiError> {
        let code = self.code;
        if code.trim().is_empty() {
            return Err(ApiError::BadRequest("code must not be empty".into()));
        }
        if code.len() > config.max_code_bytes {
            return Err(ApiError::PayloadTooLarge(format!(
                "code is {} bytes; the limit (MAX_CODE_BYTES) is {}",
                code.len(),
                config.max_code_bytes
            )));
        }
        if code.contains('\0') {
            return Err(ApiError::BadRequest(
                "code must not contain NUL characters".into(),
            ));
        }
        if let Some(stdin) = &self.stdin {
            if stdin.len() > config.max_code_bytes {
                return Err(ApiError::PayloadTooLarge(format!(
                    "stdin is {} bytes; the limit (MAX_CODE_BYTES) is {}",
                    stdin.len(),
                    config.max_code_bytes
                )));
            }
        }
        let limit = config.run_timeout_secs as f64;
        let timeout_secs = match self.timeout_secs {
            None => limit,
            Some(secs) if secs.is_finite() && secs > 0.0 && secs <= limit => secs,
            Some(_) => {
                return Err(ApiError::BadRequest(format!(
                    "timeoutSecs must be a number of seconds above 0 and at most {limit} (RUN_TIMEOUT_SECS)"
                )))
            }
        };
        Ok(NewJob {
            id: JobId::new(),
            kind: JobKind::Run,
            language: Some(self.language),
            session_id: match self.language {
                Language::Metta => Some(self.session_id.unwrap_or_else(SessionId::default_session)),
                Language::Python => self.session_id,
            },
            code_id: self.code_id,
            code,
            stdin: self.stdin,
            timeout_ms: (timeout_secs * 1000.0).round() as u64,
            idempotency_key: self.idempotency_key,
            idempotency_scope: self.idempotency_scope,
        })
    }
}

/// The validated `Idempotency-Key` header, if any.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| {
        ApiError::BadRequest("Idempotency-Key may contain only visible ASCII characters".into())
    })?;
    validate_idempotency_key(value).map_err(ApiError::BadRequest)?;
    Ok(Some(value.to_string()))
}

/// The `?wait=S` parameter: 0 to 60 seconds.
pub fn wait_parameter(params: &HashMap<String, String>) -> Result<Option<Duration>, ApiError> {
    let Some(text) = params.get("wait") else {
        return Ok(None);
    };
    match text.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() && (0.0..=MAX_WAIT_SECS).contains(&secs) => {
            Ok(Some(Duration::from_secs_f64(secs)))
        }
        _ => Err(ApiError::BadRequest(format!(
            "wait must be a number of seconds from 0 to {MAX_WAIT_SECS}, not '{}'",
            crate::domain::truncate_for_message(text)
        ))),
    }
}

pub fn parse_job_id(text: &str) -> Result<JobId, ApiError> {
    JobId::from_str(text).map_err(ApiError::BadRequest)
}

/// `200` with the job when it is final, `202` while it is queued or running.
fn job_response(job: &JobRecord) -> Response {
    let status = if job.status.is_final() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    (status, Json(JobView::from(job))).into_response()
}

/// Queues a run; answers `202` with the job, or with `?wait=S` `200` once it is final.
#[utoipa::path(
    post,
    path = "/api/v1/jobs",
    tag = "jobs",
    request_body = SubmitJobBody,
    params(
        ("wait" = Option<f64>, Query, description = "seconds (0-60) to wait for the job to finish"),
        ("Idempotency-Key" = Option<String>, Header, description = "1-128 visible ASCII characters; a retry of the same request with the same key returns the first job (a key belongs to the job's session, or to the client's address without one)"),
    ),
    responses(
        (status = 200, description = "the job, final (with `wait`)", body = JobView),
        (status = 202, description = "the job, queued or running", body = JobView),
        (status = 400, description = "a bad body, language, id, wait or key", body = ErrorBody),
        (status = 409, description = "a request with the same Idempotency-Key is still being accepted; retry", body = ErrorBody),
        (status = 413, description = "the body, code or stdin is too large", body = ErrorBody),
        (status = 422, description = "the Idempotency-Key was used for a different request", body = ErrorBody),
        (status = 429, description = "rate limited", body = ErrorBody),
        (status = 500, description = "the service failed", body = ErrorBody),
        (status = 503, description = "the queue is full", body = ErrorBody),
    )
)]
pub async fn submit_job(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
    client: ClientAddress,
    headers: HeaderMap,
    JsonBody(body): JsonBody<SubmitJobBody>,
) -> Result<Response, ApiError> {
    let wait = wait_parameter(&params)?;
    let key = idempotency_key(&headers)?;
    let language = Language::parse(&body.language).map_err(ApiError::BadRequest)?;
    let session_id = optional_id(body.session_id.as_deref(), SessionId::parse)?;
    let code_id = optional_id(body.code_id.as_deref(), CodeId::parse)?;
    // A key is the client's own: its session's when it names one, else its address's.
    let idempotency_scope = key.as_ref().map(|_| match &session_id {
        Some(session) => format!("session:{session}"),
        None => format!("client:{}", client.0),
    });
    let job = RunSubmission {
        language,
        code: body.code,
        session_id,
        code_id,
        stdin: body.stdin,
        timeout_secs: body.timeout_secs,
        idempotency_key: key,
        idempotency_scope,
    }
    .into_job(&state.config)?;
    submit_and_respond(&state, job, wait).await
}

/// Queues `job` and answers as `POST /api/v1/jobs` does: `202` with the job, or with a
/// `wait`, `200` with the finished job when it finishes in time.
pub async fn submit_and_respond(
    state: &AppState,
    job: NewJob,
    wait: Option<Duration>,
) -> Result<Response, ApiError> {
    match state.queue.submit_and_wait(job, wait).await? {
        Submission::Accepted(job) | Submission::Existing(job) => Ok(job_response(&job)),
        refused => Err(refusal(refused)),
    }
}

/// The answer to a submission that stored nothing.
pub fn refusal(submission: Submission) -> ApiError {
    match submission {
        Submission::KeyReused => ApiError::Unprocessable(
            "this Idempotency-Key was already used for a different request; send a new key for a new request".into(),
        ),
        Submission::KeyInFlight => ApiError::Conflict(
            "a request with this Idempotency-Key is still being accepted; retry in a moment".into(),
        ),
        Submission::QueueFull => ApiError::QueueFull,
        Submission::Accepted(job) | Submission::Existing(job) => ApiError::Internal(format!(
            "job {} was stored but answered as refused",
            job.id
        )),
    }
}

/// A job; with `?wait=S` the answer comes the moment the job is final (or after S s).
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}",
    tag = "jobs",
    params(
        ("id" = String, Path, description = "the job's id (a UUID)"),
        ("wait" = Option<f64>, Query, description = "seconds (0-60) to wait for a final state"),
    ),
    responses(
        (status = 200, description = "the job", body = JobView),
        (status = 400, description = "a malformed id or wait", body = ErrorBody),
        (status = 404, description = "no such job", body = ErrorBody),
        (status = 500, description = "the service failed", body = ErrorBody),
    )
)]
pub async fn get_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let id = parse_job_id(&id)?;
    let wait = wait_parameter(&params)?;
    let job = match wait {
        Some(limit) => state.queue.wait_until_final(id, limit).await?,
        None => state.queue.store().get_job(id).await?,
    };
    let job = job.ok_or_else(|| ApiError::NotFound(format!("no job with id {id}")))?;
    Ok((StatusCode::OK, Json(JobView::from(&job))).into_response())
}

/// Cancels a queued job.
#[utoipa::path(
    delete,
    path = "/api/v1/jobs/{id}",
    tag = "jobs",
    params(("id" = String, Path, description = "the job's id (a UUID)")),
    responses(
        (status = 200, description = "the cancelled job", body = JobView),
        (status = 400, description = "a malformed id", body = ErrorBody),
        (status = 404, description = "no such job", body = ErrorBody),
        (status = 409, description = "the job runs or has finished", body = ErrorBody),
        (status = 429, description = "rate limited", body = ErrorBody),
        (status = 500, description = "the service failed", body = ErrorBody),
    )
)]
pub async fn cancel_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_job_id(&id)?;
    match state.queue.cancel(id).await? {
        CancelOutcome::Cancelled(job) => Ok(Json(JobView::from(&job)).into_response()),
        CancelOutcome::NotQueued(job) => Err(ApiError::Conflict(format!(
            "job {id} is {}; only queued jobs can be cancelled",
            job.status.as_str()
        ))),
        CancelOutcome::NotFound => Err(ApiError::NotFound(format!("no job with id {id}"))),
    }
}

/// Jobs in each state, and the running one.
#[utoipa::path(
    get,
    path = "/api/v1/queue",
    tag = "jobs",
    responses(
        (status = 200, description = "the counts", body = QueueView),
        (status = 500, description = "the service failed", body = ErrorBody),
    )
)]
pub async fn queue_counts(State(state): State<AppState>) -> Result<Json<QueueView>, ApiError> {
    let counts = state.queue.store().queue_counts().await?;
    Ok(Json(QueueView::from(&counts)))
}
