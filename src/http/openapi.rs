//! The OpenAPI 3.1 document of the whole HTTP API (v1, the playground endpoints, operations),
//! served at `/api/v1/openapi.json`. It is generated from the code: each handler carries its
//! `#[utoipa::path]` and each wire shape derives `ToSchema`, so the document describes the
//! very types the handlers serialize. A unit test compares the routes the routers declare
//! with the document's paths, so a route added without documentation fails the build's tests.
//!
//! The instructor dashboard's HTML pages (`/instructor`) are not part of the API and not in it.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{jobs, legacy, metrics, sessions, AppState};

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "metta-learner-backend",
        description = "The MeTTa learning playground's backend: a persistent job queue with durable history. Every error is {\"error\": \"...\"}; every answer carries X-Request-Id.",
    ),
    paths(
        jobs::submit_job,
        jobs::get_job,
        jobs::cancel_job,
        jobs::queue_counts,
        sessions::create_session,
        sessions::list_sessions,
        sessions::show_session,
        sessions::reset_session,
        sessions::reset_to,
        sessions::remove_cell,
        sessions::export_session,
        sessions::session_jobs,
        legacy::run_metta,
        legacy::run_python,
        legacy::queue_status,
        legacy::reset_atomspace,
        legacy::get_history,
        legacy::reset_to_code,
        legacy::remove_code,
        super::health,
        metrics::render_metrics,
        openapi_document,
    ),
    modifiers(&BearerTokens),
    tags(
        (name = "jobs", description = "v1: submit, read (long-wait), cancel"),
        (name = "sessions", description = "v1: MeTTa sessions and their histories"),
        (name = "instructors", description = "v1: review, behind INSTRUCTOR_TOKEN"),
        (name = "playground", description = "the original playground API, unchanged"),
        (name = "operations", description = "health, metrics, this document"),
    )
)]
pub struct ApiDoc;

/// The two bearer tokens: the instructors' and the metrics scraper's.
struct BearerTokens;

impl Modify for BearerTokens {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for name in ["instructor_token", "metrics_token"] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

pub fn router() -> Router<AppState> {
    Router::new().route(OPENAPI_PATH, get(openapi_document))
}

/// This document.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "operations",
    responses((status = 200, description = "the OpenAPI 3.1 document", content_type = "application/json", body = Object))
)]
pub async fn openapi_document() -> impl IntoResponse {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    let document = DOCUMENT.get_or_init(|| {
        ApiDoc::openapi()
            .to_json()
            .unwrap_or_else(|err| format!("{{\"error\": \"cannot render the document: {err}\"}}"))
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        document.as_str(),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The routers' sources: every `.route("PATH", METHOD(..).METHOD(..))` they declare.
    const ROUTER_SOURCES: &[(&str, &str)] = &[
        ("mod.rs", include_str!("mod.rs")),
        ("jobs.rs", include_str!("jobs.rs")),
        ("sessions.rs", include_str!("sessions.rs")),
        ("legacy.rs", include_str!("legacy.rs")),
        ("metrics.rs", include_str!("metrics.rs")),
        ("openapi.rs", include_str!("openapi.rs")),
    ];

    /// (METHOD, path) pairs declared by `.route(...)` calls in `source`.
    fn declared_routes(source: &str) -> BTreeSet<(String, String)> {
        let mut routes = BTreeSet::new();
        // Only the code, not the unit tests below it (which quote routes of their own).
        let code = source.split("#[cfg(test)]").next().unwrap_or_default();
        for call in code.split(".route(").skip(1) {
            let Some(end) = call.find("))") else { continue };
            let call = &call[..end + 1];
            let path = if let Some(quoted) = call.strip_prefix('"') {
                quoted.split('"').next().unwrap_or_default().to_string()
            } else if call.starts_with("OPENAPI_PATH") {
                OPENAPI_PATH.to_string()
            } else {
                panic!("a route whose path is not a literal: .route({call}");
            };
            for method in ["get", "post", "delete", "put", "patch"] {
                let pattern_first = format!(", {method}(");
                let pattern_chained = format!(".{method}(");
                if call.contains(&pattern_first) || call.contains(&pattern_chained) {
                    routes.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        routes
    }

    #[test]
    fn the_document_has_every_route_the_routers_declare_and_no_other() {
        let declared: BTreeSet<(String, String)> = ROUTER_SOURCES
            .iter()
            .flat_map(|(_, source)| declared_routes(source))
            .collect();
        assert!(declared.len() >= 20, "found only {declared:?}");
        let document = serde_json::to_value(ApiDoc::openapi()).expect("document as JSON");
        let mut documented = BTreeSet::new();
        for (path, item) in document["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
        let undocumented: Vec<_> = declared.difference(&documented).collect();
        let phantom: Vec<_> = documented.difference(&declared).collect();
        assert!(
            undocumented.is_empty(),
            "routes missing from the OpenAPI document: {undocumented:?}"
        );
        assert!(
            phantom.is_empty(),
            "documented paths no router declares: {phantom:?}"
        );
    }

    #[test]
    fn the_document_is_openapi_3_1_with_schemas_for_the_wire_shapes() {
        let document = serde_json::to_value(ApiDoc::openapi()).expect("document as JSON");
        assert!(document["openapi"]
            .as_str()
            .unwrap_or_default()
            .starts_with("3.1"));
        let schemas = document["components"]["schemas"]
            .as_object()
            .expect("schemas");
        for name in [
            "JobView",
            "ErrorBody",
            "LegacyMettaAnswer",
            "SubmitJobBody",
            "SessionList",
        ] {
            assert!(schemas.contains_key(name), "no schema {name}");
        }
    }

    #[test]
    fn route_declarations_are_read_with_their_methods() {
        let source = concat!(
            r#"router.route("/a/{id}", get(x).delete(y)).route("/b", post(z))"#,
            "\n#[cfg(test)]\n",
            r#".route("/test-only", get(t))"#
        );
        let routes = declared_routes(source);
        let expected: BTreeSet<(String, String)> =
            [("GET", "/a/{id}"), ("DELETE", "/a/{id}"), ("POST", "/b")]
                .iter()
                .map(|(m, p)| (m.to_string(), p.to_string()))
                .collect();
        assert_eq!(routes, expected);
    }
}
