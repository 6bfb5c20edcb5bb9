//! The wire types between the supervisor and the engine child: one JSON object per line.
//! The child's side of these shapes is `driver.py`; keep the two in step.

use serde::{Deserialize, Serialize};

/// What the supervisor asks of the engine child: one JSON line, tagged by `op` (`driver.py`'s
/// `handle` reads the same tags).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum EngineRequest<'a> {
    /// Jobs to run one after another: the child says `progress`/`received` (with the batch's
    /// id) once it has the batch, then answers each run as it finishes, and stops after an
    /// answer that asks for history.
    Batch {
        id: &'a str,
        runs: Vec<RunRequest<'a>>,
    },
    /// Forget a session's live process (answered `dropped`).
    Drop { id: &'a str, session: &'a str },
}

/// One MeTTa run of a batch.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRequest<'a> {
    /// Echoed in the answer, so a late answer can never be mistaken for another job's.
    pub id: String,
    pub session: &'a str,
    /// The session generation the live atomspace must have to be used as it is.
    pub generation: i64,
    /// When present: build the session afresh by running these cells first.
    pub history: Option<&'a [String]>,
    pub code: &'a str,
    /// What the job's code reads on its standard input (`None`: an empty one). History
    /// replays read an empty one too.
    pub stdin: Option<&'a str>,
    /// Cells to run after `code` (re-running an edited cell in the middle of the history).
    pub after: &'a [String],
    pub timeout_ms: u64,
    pub replay_timeout_ms: u64,
    /// The generation the session has once this run succeeds and is recorded.
    pub success_generation: i64,
    pub marker_start: &'a str,
    pub marker_end: &'a str,
}

/// What the engine child answers.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EngineResponse {
    pub id: Option<String>,
    pub outcome: ResponseOutcome,
    #[serde(default)]
    pub results: Vec<Vec<String>>,
    /// `metta-py`'s printed line for each `!` expression.
    #[serde(default)]
    pub lines: Vec<String>,
    #[serde(default)]
    pub error: Option<String>,
    /// The phase that began, in a `progress` line: `received` (the batch reached the engine),
    /// `code` (the replay is done) or `after`.
    #[serde(default)]
    pub phase: Option<String>,
    /// The child asks to be replaced once this job is recorded (its memory grew).
    #[serde(default)]
    pub recycle: bool,
    /// hyperon's version, in the `ready` greeting.
    #[serde(default)]
    pub hyperon: Option<String>,
    /// The walls a session process got, in the `ready` greeting (see `driver.py`).
    #[serde(default)]
    pub walls: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum ResponseOutcome {
    /// First line from a child that imported hyperon.
    Ready,
    /// First line from a child that could not import hyperon; `error` says why.
    Unavailable,
    Succeeded,
    Failed,
    TimedOut,
    /// The run outgrew the engine's memory budget and was stopped at a step boundary.
    MemoryExceeded,
    /// The live session is missing or stale: send its history.
    NeedHistory,
    /// The history could not be replayed (it took too long or no longer runs).
    ReplayFailed,
    /// Not an answer: the run moved to another phase (see `phase`).
    Progress,
    /// The session's process died while running the job (`error` says how); the engine and
    /// the other sessions go on.
    Died,
    Dropped,
    Pong,
}
