//! The rows the store reads and writes, as typed records, and their decoding from SQLite.
//! These are domain records, not wire shapes: the HTTP layer maps them to JSON.

use std::collections::BTreeMap;

use rusqlite::Row;

use super::{column, optional_column, parse_column, parse_job_id, StoreResult};
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
        }
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
    pub results: Option<Vec<Vec<String>>>,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    pub output_truncated: bool,
    pub error: Option<String>,
    pub error_kind: Option<ErrorKind>,
    pub idempotency_key: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: Option<i64>,
}

/// A column of `JOB_COLUMNS` by its position: every job query selects those columns first, in
/// that order, so a job row is read by position (reading by name searches the row's column
/// names for each value).
#[derive(Debug, Clone, Copy)]
pub(super) struct JobColumn(usize, &'static str);

impl super::ColumnAt for JobColumn {
    type Index = usize;
    fn index(self) -> usize {
        self.0
    }
}

impl std::fmt::Display for JobColumn {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.1)
    }
}

/// The columns of `JOB_COLUMNS`, in order.
pub(super) mod job_column {
    use super::JobColumn;

    pub const SEQ: JobColumn = JobColumn(0, "seq");
    pub const ID: JobColumn = JobColumn(1, "id");
    pub const KIND: JobColumn = JobColumn(2, "kind");
    pub const LANGUAGE: JobColumn = JobColumn(3, "language");
    pub const SESSION_ID: JobColumn = JobColumn(4, "session_id");
    pub const CODE_ID: JobColumn = JobColumn(5, "code_id");
    pub const CODE: JobColumn = JobColumn(6, "code");
    pub const STDIN: JobColumn = JobColumn(7, "stdin");
    pub const TIMEOUT_MS: JobColumn = JobColumn(8, "timeout_ms");
    pub const STATUS: JobColumn = JobColumn(9, "status");
    pub const ATTEMPTS: JobColumn = JobColumn(10, "attempts");
    pub const RESULT: JobColumn = JobColumn(11, "result");
    pub const RESULTS_JSON: JobColumn = JobColumn(12, "results_json");
    pub const STDOUT: JobColumn = JobColumn(13, "stdout");
    pub const STDERR: JobColumn = JobColumn(14, "stderr");
    pub const OUTPUT_TRUNCATED: JobColumn = JobColumn(15, "output_truncated");
    pub const ERROR: JobColumn = JobColumn(16, "error");
    pub const ERROR_KIND: JobColumn = JobColumn(17, "error_kind");
    pub const IDEMPOTENCY_KEY: JobColumn = JobColumn(18, "idempotency_key");
    pub const CREATED_AT: JobColumn = JobColumn(19, "created_at");
    pub const STARTED_AT: JobColumn = JobColumn(20, "started_at");
    pub const FINISHED_AT: JobColumn = JobColumn(21, "finished_at");
    pub const DURATION_MS: JobColumn = JobColumn(22, "duration_ms");

    #[cfg(test)]
    pub const ALL: [JobColumn; 23] = [
        SEQ,
        ID,
        KIND,
        LANGUAGE,
        SESSION_ID,
        CODE_ID,
        CODE,
        STDIN,
        TIMEOUT_MS,
        STATUS,
        ATTEMPTS,
        RESULT,
        RESULTS_JSON,
        STDOUT,
        STDERR,
        OUTPUT_TRUNCATED,
        ERROR,
        ERROR_KIND,
        IDEMPOTENCY_KEY,
        CREATED_AT,
        STARTED_AT,
        FINISHED_AT,
        DURATION_MS,
    ];

    #[cfg(test)]
    impl JobColumn {
        pub fn name(self) -> &'static str {
            self.1
        }
    }
}

impl JobRecord {
    pub(super) fn from_row(row: &Row<'_>) -> StoreResult<JobRecord> {
        use job_column::*;
        let results_json: Option<String> = column(row, RESULTS_JSON)?;
        Ok(JobRecord {
            seq: column(row, SEQ)?,
            id: parse_job_id(&column::<String>(row, ID)?)?,
            kind: parse_column(row, KIND, JobKind::parse)?,
            language: optional_column(row, LANGUAGE, Language::parse)?,
            session_id: optional_column(row, SESSION_ID, SessionId::parse)?,
            code_id: optional_column(row, CODE_ID, CodeId::parse)?,
            code: column(row, CODE)?,
            stdin: column(row, STDIN)?,
            timeout_ms: column(row, TIMEOUT_MS)?,
            status: parse_column(row, STATUS, JobStatus::parse)?,
            attempts: column(row, ATTEMPTS)?,
            position: None,
            result: column(row, RESULT)?,
            results: results_json.and_then(|json| serde_json::from_str(&json).ok()),
            stdout: column(row, STDOUT)?,
            stderr: column(row, STDERR)?,
            output_truncated: column(row, OUTPUT_TRUNCATED)?,
            error: column(row, ERROR)?,
            error_kind: optional_column(row, ERROR_KIND, |text| {
                ErrorKind::parse(text).ok_or_else(|| format!("error_kind = '{text}'"))
            })?,
            idempotency_key: column(row, IDEMPOTENCY_KEY)?,
            created_at: column(row, CREATED_AT)?,
            started_at: column(row, STARTED_AT)?,
            finished_at: column(row, FINISHED_AT)?,
            duration_ms: column(row, DURATION_MS)?,
        })
    }
}

/// A job the worker claimed, with what it needs to run a MeTTa job without reading again.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub job: JobRecord,
    /// Its session's generation at the claim (0 for a session without a row).
    pub generation: i64,
    /// The position of its cell (`codeId`, by default the job id) in the session's history,
    /// when the job re-runs an existing cell.
    pub cell_position: Option<i64>,
}

impl ClaimedJob {
    /// Decodes a job row that also has `session_generation` and `cell_position`.
    pub(super) fn from_row(row: &Row<'_>) -> StoreResult<ClaimedJob> {
        let generation: Option<i64> = column(row, "session_generation")?;
        Ok(ClaimedJob {
            job: JobRecord::from_row(row)?,
            generation: generation.unwrap_or(0),
            cell_position: column(row, "cell_position")?,
        })
    }

    /// Whether the job may run in a batch with others: a fresh MeTTa run (a job re-queued by
    /// start-up recovery runs alone, so a second interruption is its own) in a named session
    /// that appends a new cell (re-running an existing cell rebuilds the session).
    pub fn can_share_a_batch(&self) -> bool {
        // Attempts count the claim: a job just claimed has one more than when it was queued.
        let earlier_attempts = match self.job.status {
            JobStatus::Running => self.job.attempts - 1,
            _ => self.job.attempts,
        };
        self.job.kind == JobKind::Run
            && self.job.language == Some(Language::Metta)
            && earlier_attempts == 0
            && self.job.session_id.is_some()
            && self.cell_position.is_none()
    }
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

impl CellRecord {
    pub(super) fn from_row(row: &Row<'_>) -> StoreResult<CellRecord> {
        Ok(CellRecord {
            position: column(row, "position")?,
            code_id: parse_column(row, "code_id", |text| CodeId::parse(text).ok())?,
            code: column(row, "code")?,
            created_at: column(row, "created_at")?,
            updated_at: column(row, "updated_at")?,
            last_job_id: optional_column(row, "last_job_id", |text| text.parse())?,
            last_result: column(row, "last_result")?,
        })
    }
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

impl SessionSummary {
    pub(super) fn from_row(row: &Row<'_>) -> StoreResult<SessionSummary> {
        Ok(SessionSummary {
            id: parse_column(row, "id", |text| SessionId::parse(text).ok())?,
            created_at: column(row, "created_at")?,
            updated_at: column(row, "updated_at")?,
            cells: column(row, "cells")?,
            jobs: column(row, "jobs")?,
            first_activity: column(row, "first_job")?,
            last_activity: column(row, "last_job")?,
        })
    }
}

/// Job counts by state, and the running job.
#[derive(Debug, Clone, Default)]
pub struct QueueCounts {
    pub by_status: BTreeMap<String, i64>,
    pub running_job: Option<JobId>,
}

impl QueueCounts {
    pub fn count(&self, status: JobStatus) -> i64 {
        self.by_status.get(status.as_str()).copied().unwrap_or(0)
    }
}
