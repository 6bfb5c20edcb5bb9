//! Names every request and logs it: the id is the client's valid `X-Request-Id` or a new one
//! (`RequestId`), sent back in the answer's `X-Request-Id`, and every log line written while
//! the request is served sits in a `request` span carrying it (with the method and path), so
//! one id finds all of a request's lines, and through `JobSignals` its jobs' lines in the
//! worker. One line per request says how it was answered.
//!
//! It never logs headers or bodies (they may hold the instructor token or learners' code).

use std::time::Instant;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::request_context::RequestId;

/// The header that carries a request's id both ways.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The middleware (outermost, so even CORS preflights and refusals carry an id).
pub async fn name_and_log_request(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .and_then(RequestId::from_client)
        .unwrap_or_else(RequestId::generate);
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
    );
    let started = Instant::now();
    let mut response = id
        .clone()
        .scope(next.run(request))
        .instrument(span.clone())
        .await;
    let status = response.status().as_u16();
    span.in_scope(|| {
        tracing::info!(
            status,
            duration_ms = started.elapsed().as_secs_f64() * 1000.0,
            "answered"
        );
    });
    if let Ok(value) = HeaderValue::from_str(id.as_str()) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}
