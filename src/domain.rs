//! The service's vocabulary: typed ids, job states and kinds, and the validation rules for
//! every identifier a client can send. Wire shapes (JSON) live in `http`; SQL lives in `store`.
//!
//! The job state machine is here, in one place:
//!
//! ```text
//! queued ──claim (worker)──▶ running ──▶ succeeded | failed | timed_out
//!   │                          │
//!   └──cancel (API)──▶ cancelled └──found at start-up──▶ queued (attempt 2) or failed
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use strum::{EnumString, IntoStaticStr};
use uuid::Uuid;

/// Longest session id, codeId or idempotency key a client may send.
pub const MAX_ID_LEN: usize = 64;

/// Longest idempotency key.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;

/// The public id of a job: a UUID v7, so ids sort roughly by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub Uuid);

impl JobId {
    pub fn new() -> Self {
        JobId(Uuid::now_v7())
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Job ids are stored as their text (hyphenated), as every earlier build stored them.
impl sqlx::Type<sqlx::Sqlite> for JobId {
    fn type_info() -> sqlx::sqlite::SqliteTypeInfo {
        <String as sqlx::Type<sqlx::Sqlite>>::type_info()
    }
}

impl sqlx::Encode<'_, sqlx::Sqlite> for JobId {
    fn encode_by_ref(
        &self,
        buf: &mut sqlx::sqlite::SqliteArgumentsBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        <String as sqlx::Encode<'_, sqlx::Sqlite>>::encode(self.to_string(), buf)
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Sqlite> for JobId {
    fn decode(value: sqlx::sqlite::SqliteValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        let text = <&str as sqlx::Decode<'r, sqlx::Sqlite>>::decode(value)?;
        Ok(text.parse()?)
    }
}

impl FromStr for JobId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s)
            .map(JobId)
            .map_err(|_| format!("'{}' is not a job id (a UUID)", truncate_for_message(s)))
    }
}

/// Checks a client-chosen identifier: 1 to 64 characters of letters, digits, `-` and `_`.
fn validate_identifier(what: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    if value.len() > MAX_ID_LEN {
        return Err(format!(
            "{what} is {} characters long; the limit is {MAX_ID_LEN}",
            value.len()
        ));
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "{what} '{}' may contain only letters, digits, '-' and '_'",
            truncate_for_message(value)
        ));
    }
    Ok(())
}

/// Shortens a client-supplied value before it is echoed in an error message.
pub fn truncate_for_message(value: &str) -> String {
    const SHOWN: usize = 40;
    if value.chars().count() <= SHOWN {
        value.to_string()
    } else {
        let head: String = value.chars().take(SHOWN).collect();
        format!("{head}…")
    }
}

/// A learner's MeTTa session: its own atomspace and its own history.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct SessionId(String);

impl SessionId {
    /// The session used by requests that name none, as the original service had one global session.
    pub fn default_session() -> Self {
        SessionId("default".to_string())
    }

    /// A new unguessable session id (122 random bits).
    pub fn generate() -> Self {
        SessionId(format!("s-{}", Uuid::new_v4().simple()))
    }

    pub fn parse(value: &str) -> Result<Self, String> {
        validate_identifier("sessionId", value)?;
        Ok(SessionId(value.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Names one history cell of a session; the frontend sends `code_<ms>_<rand>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct CodeId(String);

impl CodeId {
    pub fn parse(value: &str) -> Result<Self, String> {
        validate_identifier("codeId", value)?;
        Ok(CodeId(value.to_string()))
    }

    /// The default cell id of a run that names none: its job id.
    pub fn from_job(id: JobId) -> Self {
        CodeId(id.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Validates an `Idempotency-Key` header value: 1 to 128 visible ASCII characters.
pub fn validate_idempotency_key(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("Idempotency-Key must not be empty".into());
    }
    if value.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(format!(
            "Idempotency-Key is {} characters long; the limit is {MAX_IDEMPOTENCY_KEY_LEN}",
            value.len()
        ));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("Idempotency-Key may contain only visible ASCII characters".into());
    }
    Ok(())
}

/// The language a run job is written in.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, IntoStaticStr, EnumString,
)]
#[serde(rename_all = "lowercase")]
#[sqlx(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Language {
    Metta,
    Python,
}

impl Language {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(value: &str) -> Result<Self, String> {
        value.parse().map_err(|_| {
            format!(
                "unknown language '{}': use \"metta\" or \"python\"",
                truncate_for_message(value)
            )
        })
    }
}

/// What a job does. Every mutation of a session is a job, so it is ordered against the runs
/// around it in the one FIFO queue.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    sqlx::Type,
    IntoStaticStr,
    EnumString,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum JobKind {
    /// Run code (MeTTa in a session, or Python in a fresh interpreter).
    Run,
    /// Clear a session's history and atomspace.
    ResetSession,
    /// Cut a session's history at a cell: the cell and everything after it go.
    ResetTo,
    /// Remove a cell; the legacy API gives this the same cut-at-target semantics as `ResetTo`.
    RemoveCell,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Where a job is in its life. Only the worker moves a job out of `Queued` into `Running` and
/// from `Running` to a final state; only the API moves `Queued` to `Cancelled`; start-up
/// recovery moves an interrupted `Running` job back to `Queued` once, then to `Failed`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    sqlx::Type,
    IntoStaticStr,
    EnumString,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum JobStatus {
    /// Accepted and durable; waiting for the worker.
    Queued,
    /// Claimed by the worker; at most one job is here at any time.
    Running,
    /// Finished normally.
    Succeeded,
    /// The code failed (parse error, exception, non-zero exit) or the service could not run it.
    Failed,
    /// Stopped at its deadline.
    TimedOut,
    /// Cancelled by a client before it started.
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// A final state never changes again.
    pub fn is_final(self) -> bool {
        !matches!(self, JobStatus::Queued | JobStatus::Running)
    }
}

/// Who a job's failure is down to; the legacy API turns it into a status code.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    sqlx::Type,
    IntoStaticStr,
    EnumString,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ErrorKind {
    /// The learner's code failed: a parse error, an exception, a non-zero exit, a crash it
    /// caused, a limit it hit.
    Code,
    /// The service could not run the job (engine unavailable, storage fault).
    Service,
    /// A history cut named a codeId the session does not have.
    NotFound,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_accept_the_frontends_code_ids_and_reject_others() {
        assert!(CodeId::parse("code_1700000000000_ab12cd").is_ok());
        assert!(CodeId::parse("").is_err());
        assert!(CodeId::parse("has space").is_err());
        assert!(CodeId::parse(&"x".repeat(65)).is_err());
        assert!(SessionId::parse(&"x".repeat(64)).is_ok());
        assert!(SessionId::parse("é").is_err());
    }

    #[test]
    fn generated_session_ids_are_valid_and_distinct() {
        let a = SessionId::generate();
        let b = SessionId::generate();
        assert_ne!(a, b);
        assert!(SessionId::parse(a.as_str()).is_ok());
    }

    #[test]
    fn states_round_trip_through_their_names() {
        for status in [
            JobStatus::Queued,
            JobStatus::Running,
            JobStatus::Succeeded,
            JobStatus::Failed,
            JobStatus::TimedOut,
            JobStatus::Cancelled,
        ] {
            assert_eq!(status.as_str().parse::<JobStatus>(), Ok(status));
        }
        assert!(!JobStatus::Running.is_final());
        assert!(JobStatus::TimedOut.is_final());
    }
}
