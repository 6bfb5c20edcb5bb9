//! The HTTP surface: one router per resource, merged into one app router, plus the shared
//! pieces every handler uses (state, the JSON body reader, the error type).
//!
//! Handlers validate input, call the queue or the store's named operations, and map records to
//! wire shapes (`wire`). They never write SQL and never run code. Every API answer is JSON;
//! every error is `{"error": "..."}` saying what to fix (even those hyper makes before routing,
//! `connection_io`), and internal causes go to the log only. The instructor dashboard
//! (`dashboard`) is the one part that answers HTML. Every answer carries `X-Request-Id`
//! (`request_log`); `/metrics` and the OpenAPI document (`openapi`) are here too.

mod connection_io;
mod dashboard;
mod error;
mod jobs;
mod legacy;
mod metrics;
mod openapi;
mod rate_limit;
mod request_log;
mod serve;
mod sessions;
mod wire;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::timeout::RequestBodyTimeoutLayer;

use crate::config::Config;
use crate::queue::JobQueue;
use dashboard::InstructorSessions;
pub use error::ApiError;
pub use serve::{serve, ConnectionLimits};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub queue: JobQueue,
    pub config: Arc<Config>,
    /// The server's secret that turns a playground client's identity into its own session
    /// id (`legacy::client_session`).
    pub client_session_key: Arc<[u8]>,
    /// Why the server runs no learner's code, when it does not (`/health` says `degraded`).
    pub degraded: Option<Arc<str>>,
    /// Renders `/metrics`; `None` when this process could not install the recorder.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// The instructor dashboard's sign-ins; `None` (dashboard off) without `INSTRUCTOR_TOKEN`.
    pub instructors: Option<Arc<InstructorSessions>>,
}

impl AppState {
    pub fn new(
        queue: JobQueue,
        config: Arc<Config>,
        metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
        client_session_key: Arc<[u8]>,
        degraded: Option<Arc<str>>,
    ) -> Self {
        let instructors = config
            .instructor_token
            .clone()
            .filter(|token| !token.is_empty())
            .map(|token| {
                let lifetime = std::time::Duration::from_secs(
                    config.instructor_session_minutes.saturating_mul(60),
                );
                Arc::new(InstructorSessions::new(token, lifetime))
            });
        AppState {
            queue,
            config,
            client_session_key,
            degraded,
            metrics,
            instructors,
        }
    }
}

/// The whole application router.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.max_body_bytes;
    let body_timeout = std::time::Duration::from_secs(state.config.body_read_timeout_secs);
    let cors = cors_layer(&state.config);
    let limiter = rate_limit::RateLimiter::new(
        state.config.rate_limit_per_minute,
        state.config.rate_limit_burst,
        state.config.trust_forwarded_for,
    );
    Router::new()
        .route("/health", get(health))
        .merge(jobs::router())
        .merge(sessions::router())
        .merge(legacy::router())
        .merge(metrics::router())
        .merge(openapi::router())
        .merge(dashboard::router())
        .fallback(unknown_route)
        .with_state(state)
        .layer(middleware::from_fn_with_state(
            limiter,
            rate_limit::limit_submissions,
        ))
        .layer(middleware::from_fn(errors_as_json))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(RequestBodyTimeoutLayer::new(body_timeout))
        .layer(cors)
        .layer(middleware::from_fn(request_log::name_and_log_request))
}

fn cors_layer(config: &Config) -> CorsLayer {
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            header::HeaderName::from_static("idempotency-key"),
            header::HeaderName::from_static("x-session-id"),
            request_log::REQUEST_ID_HEADER,
        ])
        .expose_headers([request_log::REQUEST_ID_HEADER])
        .max_age(std::time::Duration::from_secs(600));
    match config.allowed_origins() {
        None => layer.allow_origin(Any),
        Some(origins) => {
            let origins: Vec<HeaderValue> = origins
                .iter()
                .filter_map(|origin| HeaderValue::from_str(origin).ok())
                .collect();
            layer.allow_origin(AllowOrigin::list(origins))
        }
    }
}

/// Liveness and the queue's size (monitoring calls it every few minutes).
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    responses(
        (status = 200, description = "the service and its database answer", body = wire::HealthView),
        (status = 503, description = "the database is unavailable", body = wire::ErrorBody),
    )
)]
pub async fn health(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    match state.queue.store().queue_counts().await {
        Ok(counts) => {
            let degraded = state.degraded.as_deref();
            Json(wire::HealthView {
                queued: counts.count(crate::domain::JobStatus::Queued),
                running: counts.count(crate::domain::JobStatus::Running),
                status: if degraded.is_some() { "degraded" } else { "ok" },
                reason: degraded.map(str::to_string),
            })
            .into_response()
        }
        Err(err) => ApiError::Unavailable(format!("database unavailable: {err}")).into_response(),
    }
}

async fn unknown_route(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no such endpoint: {method} {}", uri.path()))
}

/// Turns any non-JSON error answer (a framework rejection, a 405) into `{"error": "..."}`.
async fn errors_as_json(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    // JSON is already the API's shape; HTML is the dashboard's own error page.
    let is_json_or_page = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value.starts_with("application/json") || value.starts_with("text/html")
        });
    if is_json_or_page {
        return response;
    }
    if status.is_client_error() {
        crate::service_metrics::request_refused(framework_refusal_reason(status));
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_string()
    } else {
        text
    };
    let mut json = Json(wire::ErrorBody { error: message }).into_response();
    *json.status_mut() = parts.status;
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            json.headers_mut().insert(name.clone(), value.clone());
        }
    }
    json
}

/// The metrics' reason for a refusal the framework made (wrong method, media type, …).
fn framework_refusal_reason(status: axum::http::StatusCode) -> &'static str {
    match status.as_u16() {
        405 => "method_not_allowed",
        408 => "body_timeout",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        _ => "bad_request",
    }
}

/// An optional client-chosen identifier (`SessionId::parse`, `CodeId::parse`), parsed, or a
/// 400 naming the rule it breaks.
pub(crate) fn optional_id<T>(
    text: Option<&str>,
    parse: fn(&str) -> Result<T, String>,
) -> Result<Option<T>, ApiError> {
    text.map(parse).transpose().map_err(ApiError::BadRequest)
}

/// The client's address as the service names clients (the rate limit, idempotency keys):
/// the peer's address, or with `TRUST_FORWARDED_FOR` the first `X-Forwarded-For` address.
pub struct ClientAddress(pub String);

impl axum::extract::FromRequestParts<AppState> for ClientAddress {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let address = serve::client_address(
            &parts.headers,
            &parts.extensions,
            state.config.trust_forwarded_for,
        );
        Ok(ClientAddress(address.map_or_else(
            || "unknown".to_string(),
            |address| address.to_string(),
        )))
    }
}

/// A JSON request body whose every failure (too large, not JSON, wrong shape) is an
/// `ApiError` with a message naming the problem. Content-Type is not required.
pub struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(request, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::BadRequest(
                "the request body is empty; send a JSON object".into(),
            ));
        }
        parse_json(&bytes).map(JsonBody)
    }
}

/// Like `JsonBody`, but an empty body means `T::default()` (the frontend posts
/// `/reset-atomspace` with a JSON content type and no body at all).
pub struct OptionalJsonBody<T>(pub T);

impl<T, S> FromRequest<S> for OptionalJsonBody<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(request, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(T::default()));
        }
        parse_json(&bytes).map(OptionalJsonBody)
    }
}

async fn read_body<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(request, state)
        .await
        .map_err(|rejection| {
            let status = rejection.status();
            if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(
                    "the request body is larger than MAX_BODY_BYTES allows".into(),
                )
            } else if rejection.body_text().contains("timeout") {
                ApiError::SlowRequest(format!(
                    "the request body did not arrive within BODY_READ_TIMEOUT_SECS: {}",
                    rejection.body_text()
                ))
            } else {
                ApiError::BadRequest(format!(
                    "cannot read the request body: {}",
                    rejection.body_text()
                ))
            }
        })
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        // serde names Rust types ("f64", "u64"); a client wants to hear "a number".
        let problem = err
            .inner()
            .to_string()
            .replace("expected f64", "expected a number")
            .replace("expected u64", "expected a whole number");
        if path == "." || path.is_empty() {
            ApiError::BadRequest(format!("invalid JSON body: {problem}"))
        } else {
            ApiError::BadRequest(format!("invalid JSON body: field `{path}`: {problem}"))
        }
    })
}
