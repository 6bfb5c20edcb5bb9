//! Wire shapes (JSON) of the v1 API, apart from the domain records they are built from.

use serde::Serialize;

use crate::domain::JobStatus;
use crate::store::{JobRecord, QueueCounts};

/// A job as `GET /api/v1/jobs/{id}` shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    pub id: String,
    /// Acceptance order: the queue runs jobs in increasing `seq`.
    pub seq: i64,
    pub kind: &'static str,
    pub language: Option<&'static str>,
    pub session_id: Option<String>,
    pub code_id: Option<String>,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<i64>,
    pub attempts: i64,
    pub code: String,
    pub result: Option<String>,
    pub results: Option<Vec<Vec<String>>>,
    pub output: Option<String>,
    pub stderr: Option<String>,
    pub output_truncated: bool,
    pub error: Option<String>,
    /// `code` (the learner's code failed), `service` (ours) or `not_found`.
    pub error_kind: Option<&'static str>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: Option<i64>,
}

impl From<&JobRecord> for JobView {
    fn from(job: &JobRecord) -> Self {
        JobView {
            id: job.id.to_string(),
            seq: job.seq,
            kind: job.kind.as_str(),
            language: job.language.map(|language| language.as_str()),
            session_id: job.session_id.as_ref().map(|id| id.to_string()),
            code_id: job.code_id.as_ref().map(|id| id.to_string()),
            status: job.status.as_str(),
            position: job.position,
            attempts: job.attempts,
            code: job.code.clone(),
            result: job.result.clone(),
            results: job.results.as_ref().map(|results| results.0.clone()),
            output: job.stdout.clone(),
            stderr: job.stderr.clone(),
            output_truncated: job.output_truncated,
            error: job.error.clone(),
            error_kind: job.error_kind.map(|kind| kind.as_str()),
            created_at: job.created_at.clone(),
            started_at: job.started_at.clone(),
            finished_at: job.finished_at.clone(),
            duration_ms: job.duration_ms,
        }
    }
}

/// `GET /api/v1/queue`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueView {
    pub queued: i64,
    pub running: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub timed_out: i64,
    pub cancelled: i64,
    pub running_job: Option<String>,
}

impl From<&QueueCounts> for QueueView {
    fn from(counts: &QueueCounts) -> Self {
        QueueView {
            queued: counts.count(JobStatus::Queued),
            running: counts.count(JobStatus::Running),
            succeeded: counts.count(JobStatus::Succeeded),
            failed: counts.count(JobStatus::Failed),
            timed_out: counts.count(JobStatus::TimedOut),
            cancelled: counts.count(JobStatus::Cancelled),
            running_job: counts.running_job.map(|id| id.to_string()),
        }
    }
}
