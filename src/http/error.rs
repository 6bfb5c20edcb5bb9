//! The HTTP layer's one error type. Each variant is a status code and a message the client may
//! read; `Internal` logs its cause and tells the client only that it was our fault. Refusals
//! (the client's mistakes, limits) are counted by reason in the metrics.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::wire::{ErrorBody, TimeoutBody};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    /// The learner's code failed (a legacy endpoint's 400): an answer, not a refusal.
    #[error("{0}")]
    LearnerCodeFailed(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// The request is well formed but contradicts an earlier one (an idempotency key reused
    /// for a different request).
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The client sent its request too slowly.
    #[error("{0}")]
    SlowRequest(String),
    /// A run hit its deadline, or a legacy request waited out (the job goes on; `request_id`
    /// fetches it later).
    #[error("{message}")]
    Timeout { message: String, request_id: String },
    /// The service could not run the job; the message is ours and safe to show.
    #[error("{0}")]
    Fault(String),
    /// The queue holds `MAX_QUEUED_JOBS` jobs.
    #[error("the queue is full; try again shortly")]
    QueueFull,
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        ApiError::Internal(err.to_string())
    }
}

impl ApiError {
    /// The reason this answer counts as a refused request, or `None` when it is not one (the
    /// learner's code failed or timed out, or the fault is ours).
    fn refusal_reason(&self) -> Option<&'static str> {
        Some(match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::Unprocessable(_) => "unprocessable",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::SlowRequest(_) => "body_timeout",
            ApiError::QueueFull => "queue_full",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::LearnerCodeFailed(_)
            | ApiError::Timeout { .. }
            | ApiError::Fault(_)
            | ApiError::Internal(_) => return None,
        })
    }
}

/// Seconds a client is told to wait before retrying a refused submission.
const RETRY_AFTER_SECS: &str = "5";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(reason) = self.refusal_reason() {
            crate::service_metrics::request_refused(reason);
        }
        let status = match &self {
            ApiError::BadRequest(_) | ApiError::LearnerCodeFailed(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::SlowRequest(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Timeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::Fault(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::QueueFull | ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = match &self {
            ApiError::Internal(cause) => {
                tracing::error!("internal error: {cause}");
                "internal error; the service logged the cause".to_string()
            }
            other => other.to_string(),
        };
        let mut response = match &self {
            ApiError::Timeout { request_id, .. } => (
                status,
                Json(TimeoutBody {
                    error: message,
                    request_id: request_id.clone(),
                }),
            )
                .into_response(),
            _ => (status, Json(ErrorBody { error: message })).into_response(),
        };
        if matches!(
            self,
            ApiError::PayloadTooLarge(_) | ApiError::SlowRequest(_)
        ) {
            // The rest of the body may be unread: the connection cannot carry another request.
            response.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
        }
        if matches!(self, ApiError::QueueFull | ApiError::Unavailable(_)) {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        response
    }
}
