//! The service's Prometheus metrics: their names, and one function per event that moves them,
//! called where the event happens (queue, worker, engine supervisor, HTTP layer). `/metrics`
//! renders them (`http::metrics`); the README lists them.
//!
//! The `metrics` crate's recorder is process-global, so `install` sets it once per process and
//! every later call gets the same handle. Recording before `install` (unit tests) is a no-op.
//! Nothing here reads the database: the queue's depth is set by the scrape itself.

use std::sync::OnceLock;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::domain::{JobKind, Language};
use crate::store::JobRecord;

/// Jobs stored, by `kind` and `language` (`none` for session changes).
pub const JOBS_ACCEPTED: &str = "mlb_jobs_accepted_total";
/// Jobs that reached a final state, by `kind`, `language` and `status`.
pub const JOBS_FINISHED: &str = "mlb_jobs_finished_total";
/// Seconds from acceptance to start, by `kind` and `language`.
pub const QUEUE_WAIT: &str = "mlb_job_queue_wait_seconds";
/// Seconds from start to end, by `kind`, `language` and `status`.
pub const RUN_TIME: &str = "mlb_job_run_seconds";
/// Jobs queued or running at the last scrape, by `state`.
pub const QUEUE_DEPTH: &str = "mlb_queue_depth";
/// MeTTa engine processes started (the first, and each replacement).
pub const ENGINE_STARTS: &str = "mlb_engine_starts_total";
/// Engine processes the supervisor killed, by `reason` (`deadline`: a step did not return by
/// deadline + grace; `died`: it died or stopped answering and its group was ended).
pub const ENGINE_KILLS: &str = "mlb_engine_kills_total";
/// Session histories sent to the engine to be replayed into a fresh atomspace.
pub const SESSION_REPLAYS: &str = "mlb_engine_session_replays_total";
/// Requests refused, by `reason` (`bad_request`, `not_found`, `rate_limited`, `queue_full`, …).
pub const REQUESTS_REFUSED: &str = "mlb_http_requests_refused_total";

/// Bucket bounds (seconds) of the two time histograms: a millisecond to a minute.
const TIME_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process's recorder (once) and returns the handle that renders it. `None` when
/// another recorder was installed first (then nothing is recorded here).
pub fn install() -> Option<PrometheusHandle> {
    if let Some(handle) = HANDLE.get() {
        return Some(handle.clone());
    }
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), TIME_BUCKETS)
        .ok()?;
    let handle = builder.install_recorder().ok()?;
    describe();
    Some(HANDLE.get_or_init(|| handle).clone())
}

fn describe() {
    metrics::describe_counter!(JOBS_ACCEPTED, "Jobs stored, by kind and language.");
    metrics::describe_counter!(
        JOBS_FINISHED,
        "Jobs that reached a final state, by kind, language and status."
    );
    metrics::describe_histogram!(
        QUEUE_WAIT,
        metrics::Unit::Seconds,
        "Time from acceptance to start of a job."
    );
    metrics::describe_histogram!(
        RUN_TIME,
        metrics::Unit::Seconds,
        "Time from start to end of a job."
    );
    metrics::describe_gauge!(QUEUE_DEPTH, "Jobs queued or running, by state.");
    metrics::describe_counter!(ENGINE_STARTS, "MeTTa engine processes started.");
    metrics::describe_counter!(ENGINE_KILLS, "MeTTa engine processes killed, by reason.");
    metrics::describe_counter!(
        SESSION_REPLAYS,
        "Session histories replayed into a fresh atomspace."
    );
    metrics::describe_counter!(REQUESTS_REFUSED, "Requests refused, by reason.");
}

fn language_label(language: Option<Language>) -> &'static str {
    language.map_or("none", Language::as_str)
}

pub fn job_accepted(kind: JobKind, language: Option<Language>) {
    counter!(JOBS_ACCEPTED, "kind" => kind.as_str(), "language" => language_label(language))
        .increment(1);
}

/// A job reached its final state (`job` is its stored record).
pub fn job_finished(job: &JobRecord) {
    let (kind, language, status) = (
        job.kind.as_str(),
        language_label(job.language),
        job.status.as_str(),
    );
    counter!(JOBS_FINISHED, "kind" => kind, "language" => language, "status" => status)
        .increment(1);
    if let Some(wait) = queue_wait_seconds(job) {
        histogram!(QUEUE_WAIT, "kind" => kind, "language" => language).record(wait);
    }
    if let Some(ms) = job.duration_ms {
        histogram!(RUN_TIME, "kind" => kind, "language" => language, "status" => status)
            .record(ms as f64 / 1000.0);
    }
}

/// Seconds between a job's acceptance and its start, when it started.
pub fn queue_wait_seconds(job: &JobRecord) -> Option<f64> {
    let created = chrono::DateTime::parse_from_rfc3339(&job.created_at).ok()?;
    let started = chrono::DateTime::parse_from_rfc3339(job.started_at.as_deref()?).ok()?;
    let micros = (started - created).num_microseconds()?;
    Some(micros.max(0) as f64 / 1e6)
}

/// The queue's depth as the scrape read it.
pub fn set_queue_depth(queued: i64, running: i64) {
    gauge!(QUEUE_DEPTH, "state" => "queued").set(queued as f64);
    gauge!(QUEUE_DEPTH, "state" => "running").set(running as f64);
}

pub fn engine_started() {
    counter!(ENGINE_STARTS).increment(1);
}

/// The supervisor killed the engine's process group: `deadline` or `died`.
pub fn engine_killed(reason: &'static str) {
    counter!(ENGINE_KILLS, "reason" => reason).increment(1);
}

/// Histories sent to the engine for replay.
pub fn sessions_replayed(count: usize) {
    if count > 0 {
        counter!(SESSION_REPLAYS).increment(count as u64);
    }
}

/// A request was refused for `reason`.
pub fn request_refused(reason: &'static str) {
    counter!(REQUESTS_REFUSED, "reason" => reason).increment(1);
}
