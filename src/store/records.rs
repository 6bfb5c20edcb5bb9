//! The rows the store reads and writes, as typed records (`query_as!` fills them by column
//! name, with the column types checked at compile time). These are domain records, not wire
//! shapes: the HTTP layer maps them to JSON.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::types::Json;

use crate::domain::{CodeId, ErrorKind, JobId, JobKind, JobStatus, Language, SessionId};

/// A job to be stored.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: JobId,
    pub kind: JobKind,
    pub language: Option<Language>,
    pub session_id: Option<SessionId>,
    pub code_id: Option<CodeId>,
    pub code: String,
    pub stdin: Option<String>,
    pub timeout_ms: u64,
    pub idempotency_key: Option<String>,
    /// Whose the idempotency key is (`session:<id>` or `client:<identity>`): the same key
    /// from two clients names two jobs.
    pub idempotency_scope: Option<String>,
}

impl NewJob {
    /// A job that changes a session's history (reset, reset-to, remove) without running code.
    pub fn session_change(kind: JobKind, session: SessionId, code_id: Option<CodeId>) -> Self {
        NewJob {
            id: JobId::new(),
            kind,
            language: None,
            session_id: Some(session),
            code_id,
            code: String::new(),
            stdin: None,
            timeout_ms: 0,
            idempotency_key: None,
            idempotency_scope: None,
        }
    }

    /// Whether `stored` is the job this one asks for again: the same request, field by field
    /// (what an idempotency key promises). Ids and times differ by nature.
    pub fn asks_for_the_same_as(&self, stored: &JobRecord) -> bool {
        self.kind == stored.kind
            && self.language == stored.language
            && self.session_id == stored.session_id
            && self.code_id == stored.code_id
            && self.code == stored.code
            && self.stdin == stored.stdin
            && i64::try_from(self.timeout_ms).ok() == Some(stored.timeout_ms)
    }
}

/// A stored job.
#[derive(Debug, Clone)]
pub struct JobRecord {
    /// Acceptance order; the queue runs jobs in this order.
    pub seq: i64,
    pub id: JobId,
    pub kind: JobKind,
    pub language: Option<Language>,
    pub session_id: Option<SessionId>,
    pub code_id: Option<CodeId>,
    pub code: String,
    pub stdin: Option<String>,
    pub timeout_ms: i64,
    pub status: JobStatus,
    pub attempts: i64,
    /// 1 for the next job to run; only for queued jobs.
    pub position: Option<i64>,
    pub result: Option<String>,
    /// For MeTTa: one list of atom strings per `!` expression.
    pub results: Option<Json<Vec<Vec<String>>>>,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    pub output_truncated: bool,
    pub error: Option<String>,
    pub error_kind: Option<ErrorKind>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: Option<i64>,
}

/// A queued job at the head of the queue, with what the worker needs to run it without
/// reading again: its session's generation and the position of its cell. `query_as!` fills
/// flat rows only, so this is the job's columns and those two; `ClaimedJob` is what callers see.
#[derive(Debug)]
pub(super) struct HeadRow {
    pub seq: i64,
    pub id: JobId,
    pub kind: JobKind,
    pub language: Option<Language>,
    pub session_id: Option<SessionId>,
    pub code_id: Option<CodeId>,
    pub code: String,
    pub stdin: Option<String>,
    pub timeout_ms: i64,
    pub status: JobStatus,
    pub attempts: i64,
    pub position: Option<i64>,
    pub result: Option<String>,
    pub results: Option<Json<Vec<Vec<String>>>>,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    pub output_truncated: bool,
    pub error: Option<String>,
    pub error_kind: Option<ErrorKind>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: Option<i64>,
    pub session_generation: Option<i64>,
    pub cell_position: Option<i64>,
    /// Whether queued jobs remain behind this one (read by the claim only).
    pub more_queued: Option<bool>,
}

impl From<HeadRow> for ClaimedJob {
    fn from(row: HeadRow) -> Self {
        ClaimedJob {
            generation: row.session_generation.unwrap_or(0),
            cell_position: row.cell_position,
            job: JobRecord {
                seq: row.seq,
                id: row.id,
                kind: row.kind,
                language: row.language,
                session_id: row.session_id,
                code_id: row.code_id,
                code: row.code,
                stdin: row.stdin,
                timeout_ms: row.timeout_ms,
                status: row.status,
                attempts: row.attempts,
                position: row.position,
                result: row.result,
                results: row.results,
                stdout: row.stdout,
                stderr: row.stderr,
                output_truncated: row.output_truncated,
                error: row.error,
                error_kind: row.error_kind,
                created_at: row.created_at,
                started_at: row.started_at,
                finished_at: row.finished_at,
                duration_ms: row.duration_ms,
            },
        }
    }
}

/// What claiming the oldest job found.
#[derive(Debug, Clone)]
pub struct OldestClaim {
    pub claimed: ClaimedJob,
    /// Whether queued jobs remained behind it when it was claimed (so the worker need not
    /// look again until a new job is accepted).
    pub more_queued: bool,
}

/// A job the worker claimed (or may claim), with what it needs to run a MeTTa job without
/// reading again.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub job: JobRecord,
    /// Its session's generation at the claim (0 for a session without a row).
    pub generation: i64,
    /// The position of its cell (`codeId`, by default the job id) in the session's history,
    /// when the job re-runs an existing cell.
    pub cell_position: Option<i64>,
}

/// The final state of a job as the worker reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobOutcome {
    pub status: JobStatus,
    pub result: Option<String>,
    /// For MeTTa: one list of atom strings per `!` expression.
    pub results: Option<Vec<Vec<String>>>,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    pub output_truncated: bool,
    pub error: Option<String>,
    pub error_kind: Option<ErrorKind>,
}

impl JobOutcome {
    /// A job that ended without running code: `status` with only an error message.
    pub fn with_error(status: JobStatus, kind: ErrorKind, error: impl Into<String>) -> Self {
        JobOutcome {
            status,
            result: None,
            results: None,
            stdout: None,
            stderr: None,
            output_truncated: false,
            error: Some(error.into()),
            error_kind: Some(kind),
        }
    }

    /// A job that succeeded with a result text and nothing else.
    pub fn succeeded_with(result: impl Into<String>) -> Self {
        JobOutcome {
            status: JobStatus::Succeeded,
            result: Some(result.into()),
            results: None,
            stdout: None,
            stderr: None,
            output_truncated: false,
            error: None,
            error_kind: None,
        }
    }
}

/// One outcome as `finish_jobs` binds it: an element of the JSON array that the statement
/// expands with `json_each`.
#[derive(Debug, Serialize)]
pub(super) struct OutcomeRow<'a> {
    pub id: JobId,
    pub status: JobStatus,
    pub result: Option<&'a str>,
    pub results: Option<&'a Vec<Vec<String>>>,
    pub stdout: Option<&'a str>,
    pub stderr: Option<&'a str>,
    pub output_truncated: bool,
    pub error: Option<&'a str>,
    pub error_kind: Option<ErrorKind>,
}

impl<'a> OutcomeRow<'a> {
    pub fn new(id: JobId, outcome: &'a JobOutcome) -> Self {
        OutcomeRow {
            id,
            status: outcome.status,
            result: outcome.result.as_deref(),
            results: outcome.results.as_ref(),
            stdout: outcome.stdout.as_deref(),
            stderr: outcome.stderr.as_deref(),
            output_truncated: outcome.output_truncated,
            error: outcome.error.as_deref(),
            error_kind: outcome.error_kind,
        }
    }
}

/// One history cell of a session.
#[derive(Debug, Clone)]
pub struct CellRecord {
    pub position: i64,
    pub code_id: CodeId,
    pub code: String,
    pub created_at: String,
    pub updated_at: String,
    pub last_job_id: Option<JobId>,
    pub last_result: Option<String>,
}

/// A session with its cells.
#[derive(Debug, Clone)]
pub struct SessionView {
    pub id: SessionId,
    pub created_at: String,
    pub updated_at: String,
    pub cells: Vec<CellRecord>,
}

/// A line of the instructors' session listing.
#[derive(Debug, Clone)]
pub struct SessionSummary {
    pub id: SessionId,
    pub created_at: String,
    pub updated_at: String,
    pub cells: i64,
    pub jobs: i64,
    pub first_activity: Option<String>,
    pub last_activity: Option<String>,
}

/// Job counts by state, and the running job.
#[derive(Debug, Clone, Default)]
pub struct QueueCounts {
    pub by_status: BTreeMap<JobStatus, i64>,
    pub running_job: Option<JobId>,
}

impl QueueCounts {
    pub fn count(&self, status: JobStatus) -> i64 {
        self.by_status.get(&status).copied().unwrap_or(0)
    }
}
