//! Wire shapes (JSON) of both APIs, apart from the domain records they are built from. Each
//! derives `ToSchema`, so the OpenAPI document (`openapi`) is generated from the very types the
//! handlers serialize.
//!
//! serde writes a struct's fields in declaration order. The legacy shapes keep their fields in
//! alphabetical order: that is the order the original service's (and this service's earlier)
//! JSON objects had, and the frontend contract pins those bytes.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::JobStatus;
use crate::store::{CellRecord, JobRecord, QueueCounts, SessionSummary};

// ----- errors -------------------------------------------------------------------------------

/// Every error answer: what went wrong and what to fix.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
}

/// A 408: a legacy request that waited out, or a run that hit its deadline, with the job's id
/// to fetch it later at `/api/v1/jobs/{requestId}`; or a body that arrived too slowly (no id).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimeoutBody {
    pub error: String,
    /// The job's id (absent when the request's body arrived too slowly).
    #[schema(required = false)]
    pub request_id: String,
}

// ----- v1 jobs ------------------------------------------------------------------------------

/// The body of `POST /api/v1/jobs`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubmitJobBody {
    /// `metta` or `python`.
    #[schema(example = "metta", pattern = "^(metta|python)$")]
    pub language: String,
    /// The code to run (at most `MAX_CODE_BYTES`, not blank, no NUL).
    #[schema(example = "!(+ 2 3)", min_length = 1, pattern = "\\S")]
    pub code: String,
    /// The MeTTa session (letters, digits, `-`, `_`; up to 64); default `default`.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub session_id: Option<String>,
    /// Names the history cell this run becomes; an existing one is replaced in place.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub code_id: Option<String>,
    /// Standard input of a Python job.
    pub stdin: Option<String>,
    /// A shorter deadline than `RUN_TIMEOUT_SECS`, in seconds.
    pub timeout_secs: Option<f64>,
}

/// A job as `GET /api/v1/jobs/{id}` shows it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    pub id: String,
    /// Acceptance order: the queue runs jobs in increasing `seq`.
    pub seq: i64,
    /// `run`, `reset_session`, `reset_to` or `remove_cell`.
    pub kind: &'static str,
    /// `metta` or `python` (none for session changes).
    pub language: Option<&'static str>,
    pub session_id: Option<String>,
    pub code_id: Option<String>,
    /// `queued`, `running`, `succeeded`, `failed`, `timed_out` or `cancelled`.
    pub status: &'static str,
    /// Place in the queue while queued (1 = next).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<i64>,
    pub attempts: i64,
    pub code: String,
    /// What `metta-py` prints for MeTTa; stdout for Python.
    pub result: Option<String>,
    /// MeTTa: one list of atom strings per `!` expression.
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
#[derive(Debug, Serialize, ToSchema)]
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

/// `GET /health` (fields in alphabetical order, as before).
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthView {
    pub queued: i64,
    /// Why the server runs no learner's code, when `status` is `degraded`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub running: i64,
    /// `ok`, or `degraded` when a containment wall cannot be built and learners' code does
    /// not run (`reason` says why); an unusable database answers 503.
    pub status: &'static str,
}

// ----- v1 sessions --------------------------------------------------------------------------

/// `POST /api/v1/sessions`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionCreated {
    pub session_id: String,
}

/// The body of `POST /api/v1/sessions/{id}/reset-to`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResetToBody {
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub code_id: String,
}

/// One history cell (fields in alphabetical order, as before).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CellView {
    pub code: String,
    pub code_id: String,
    pub created_at: String,
    pub last_job_id: Option<String>,
    pub last_result: Option<String>,
    pub position: i64,
    pub updated_at: String,
}

impl From<&CellRecord> for CellView {
    fn from(cell: &CellRecord) -> Self {
        CellView {
            code: cell.code.clone(),
            code_id: cell.code_id.as_str().to_string(),
            created_at: cell.created_at.clone(),
            last_job_id: cell.last_job_id.map(|id| id.to_string()),
            last_result: cell.last_result.clone(),
            position: cell.position,
            updated_at: cell.updated_at.clone(),
        }
    }
}

/// `GET /api/v1/sessions/{id}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionDetail {
    pub cells: Vec<CellView>,
    pub created_at: String,
    pub length: usize,
    pub session_id: String,
    pub updated_at: String,
}

/// One session in the instructors' listing.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionSummaryView {
    pub cells: i64,
    pub created_at: String,
    pub first_activity: Option<String>,
    pub jobs: i64,
    pub last_activity: Option<String>,
    pub session_id: String,
    pub updated_at: String,
}

impl From<&SessionSummary> for SessionSummaryView {
    fn from(session: &SessionSummary) -> Self {
        SessionSummaryView {
            cells: session.cells,
            created_at: session.created_at.clone(),
            first_activity: session.first_activity.clone(),
            jobs: session.jobs,
            last_activity: session.last_activity.clone(),
            session_id: session.id.as_str().to_string(),
            updated_at: session.updated_at.clone(),
        }
    }
}

/// `GET /api/v1/sessions` (instructors).
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionList {
    pub limit: i64,
    pub offset: i64,
    pub sessions: Vec<SessionSummaryView>,
    pub total: i64,
}

/// `GET /api/v1/sessions/{id}/jobs` (instructors).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionJobs {
    pub jobs: Vec<JobView>,
    pub limit: i64,
    pub offset: i64,
    pub session_id: String,
}

// ----- the legacy playground API ------------------------------------------------------------

/// The body of `/run-metta` and `/run-python`. `/run-metta` refuses a `language` other than
/// `metta`, as the original service did; `/run-python` ignores it.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LegacyRunBody {
    /// Required.
    #[schema(min_length = 1, pattern = "\\S")]
    pub code: Option<String>,
    /// `/run-metta` accepts only `metta`.
    pub language: Option<String>,
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub code_id: Option<String>,
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub session_id: Option<String>,
}

/// The body of `/reset-atomspace`, `/reset-to-code` and `/remove-code` (all optional; the
/// frontend posts `/reset-atomspace` with no body at all).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LegacySessionBody {
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub code_id: Option<String>,
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub session_id: Option<String>,
}

/// `POST /run-metta`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LegacyMettaAnswer {
    pub code_id: String,
    pub history_length: i64,
    pub result: String,
}

/// `POST /run-python`.
#[derive(Debug, Serialize, ToSchema)]
pub struct LegacyPythonAnswer {
    pub result: String,
}

/// `POST /reset-atomspace`.
#[derive(Debug, Serialize, ToSchema)]
pub struct LegacyMessage {
    pub message: String,
}

/// `POST /reset-to-code`, `POST /remove-code`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LegacyCutAnswer {
    pub history_length: i64,
    pub message: String,
}

/// `GET /queue-status`.
#[derive(Debug, Serialize, ToSchema)]
pub struct LegacyQueueStatus {
    pub is_processing: bool,
    pub pending_requests: i64,
    pub queue_size: i64,
}

/// One entry of `GET /get-history`.
#[derive(Debug, Serialize, ToSchema)]
pub struct LegacyHistoryEntry {
    pub code: String,
    pub id: String,
}

/// `GET /get-history`.
#[derive(Debug, Serialize, ToSchema)]
pub struct LegacyHistory {
    pub history: Vec<LegacyHistoryEntry>,
    pub length: usize,
}
