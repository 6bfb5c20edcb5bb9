//! `GET /metrics`: the service's Prometheus metrics (`service_metrics`) in the text exposition
//! format. With `METRICS_TOKEN` set it needs `Authorization: Bearer <METRICS_TOKEN>` (compared
//! in constant time, never logged); unset, it is open like `/health`.

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};
use crate::domain::JobStatus;

/// The content type Prometheus scrapes.
const EXPOSITION_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(render_metrics))
}

/// Prometheus text format with every metric; the queue depth is read for the scrape.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus text exposition format", content_type = "text/plain", body = String),
        (status = 401, description = "METRICS_TOKEN is set and no bearer token was sent", body = super::wire::ErrorBody),
        (status = 403, description = "the bearer token is wrong", body = super::wire::ErrorBody),
        (status = 500, description = "the service failed", body = super::wire::ErrorBody),
        (status = 503, description = "metrics are unavailable in this process", body = super::wire::ErrorBody),
    ),
    security((), ("metrics_token" = []))
)]
pub async fn render_metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_metrics_token(&headers, state.config.metrics_token.as_deref())?;
    let Some(handle) = state.metrics.as_ref() else {
        return Err(ApiError::Unavailable(
            "metrics are unavailable: another recorder was installed in this process".into(),
        ));
    };
    let counts = state.queue.store().queue_counts().await?;
    crate::service_metrics::set_queue_depth(
        counts.count(JobStatus::Queued),
        counts.count(JobStatus::Running),
    );
    handle.run_upkeep();
    Ok(([(header::CONTENT_TYPE, EXPOSITION_FORMAT)], handle.render()).into_response())
}

fn check_metrics_token(headers: &HeaderMap, token: Option<&str>) -> Result<(), ApiError> {
    let Some(expected) = token.filter(|token| !token.is_empty()) else {
        return Ok(());
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::Unauthorized("/metrics needs 'Authorization: Bearer <METRICS_TOKEN>'".into())
        })?;
    if bool::from(presented.trim().as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::Forbidden("the metrics token is wrong".into()))
    }
}
