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

/// Every line the engine child writes on its answer pipe, tagged by `outcome` (`driver.py`
/// and `child.rs` write the same tags). Lines about one run carry its `id`; a line whose id
/// is the batch's speaks for the whole batch (an engine error outside any run).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "outcome", rename_all = "camelCase")]
pub enum EngineAnswer {
    /// The first line of a child that imported hyperon and started its first session process.
    Ready {
        #[serde(default)]
        hyperon: Option<String>,
        /// The walls a session process got (see `driver.py`).
        #[serde(default)]
        walls: Vec<String>,
        /// How runs are stepped: `native` (the engine's own loop, `native_steps.rs`) or
        /// `python` (hyperon's C API called from Python, when the native loop is not checked).
        #[serde(default)]
        steps: Option<String>,
    },
    /// The first line of a child that could not start (hyperon missing, a wall refused); with
    /// a run's id, that run could not be given a session process (not the run's doing).
    Unavailable {
        #[serde(default)]
        id: Option<String>,
        error: String,
    },
    /// Not an answer: the run (or, with the batch's id, the batch) entered a phase. With
    /// `retry`, `error` says how the run's session process ended before it read the run.
    Progress {
        id: Option<String>,
        phase: Phase,
        #[serde(default)]
        error: Option<String>,
    },
    /// The live session is missing or stale: send the run again with its history. Nothing
    /// ran, and the engine runs no more of the batch. With an `error`: the session's process
    /// had ended before it read the run (said so it is logged; the run is not to blame).
    NeedHistory {
        id: Option<String>,
        #[serde(default)]
        error: Option<String>,
    },
    /// The session's process died while running the job (`error` says how); the engine and
    /// the other sessions go on.
    Died {
        id: Option<String>,
        #[serde(default)]
        error: Option<String>,
    },
    /// A session was forgotten (answer to `drop`).
    Dropped { id: Option<String> },
    /// Answer to `ping`.
    #[serde(rename_all = "camelCase")]
    Pong {
        id: Option<String>,
        live_sessions: usize,
        session_pids: Vec<u32>,
        fork_to_ready_ms: Vec<f64>,
    },
    /// The run's code ran to its end.
    Succeeded(RunAnswer),
    /// The code raised an error (or the engine failed outside the code: `engine error: …`).
    Failed(RunAnswer),
    /// The run passed its deadline and was stopped at a step boundary.
    TimedOut(RunAnswer),
    /// The run outgrew the engine's memory budget and was stopped at a step boundary.
    MemoryExceeded(RunAnswer),
    /// The history could not be replayed (it took too long or no longer runs).
    ReplayFailed(RunAnswer),
}

/// A phase a run (or the batch) entered, in a `progress` line.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Phase {
    /// The batch reached the engine: a death from here on is the running job's.
    Received,
    /// The history is replayed; the job's own code starts (the job's own time limit).
    Code,
    /// The job's code is done; the cells after an edited one are replayed.
    After,
    /// The run's session process ended before it read the run: it goes to a fresh process,
    /// which replays the history again.
    Retry,
}

/// What a finished run answered: its results so far and, unless it succeeded, why not.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunAnswer {
    pub id: Option<String>,
    #[serde(default)]
    pub results: Vec<Vec<String>>,
    /// `metta-py`'s printed line for each `!` expression.
    #[serde(default)]
    pub lines: Vec<String>,
    #[serde(default)]
    pub error: Option<String>,
    /// The child asks to be replaced once this job is recorded (its memory grew).
    #[serde(default)]
    pub recycle: bool,
}

/// How a run that the engine answered ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    Succeeded,
    Failed,
    TimedOut,
    MemoryExceeded,
    ReplayFailed,
}

impl EngineAnswer {
    /// The run or batch the line is about (`None` for greetings).
    pub fn id(&self) -> Option<&str> {
        match self {
            EngineAnswer::Ready { .. } => None,
            EngineAnswer::Unavailable { id, .. }
            | EngineAnswer::Progress { id, .. }
            | EngineAnswer::NeedHistory { id, .. }
            | EngineAnswer::Died { id, .. }
            | EngineAnswer::Dropped { id }
            | EngineAnswer::Pong { id, .. } => id.as_deref(),
            EngineAnswer::Succeeded(run)
            | EngineAnswer::Failed(run)
            | EngineAnswer::TimedOut(run)
            | EngineAnswer::MemoryExceeded(run)
            | EngineAnswer::ReplayFailed(run) => run.id.as_deref(),
        }
    }

    /// A finished run's end and answer, when the line is one.
    pub fn into_run(self) -> Option<(RunEnd, RunAnswer)> {
        match self {
            EngineAnswer::Succeeded(run) => Some((RunEnd::Succeeded, run)),
            EngineAnswer::Failed(run) => Some((RunEnd::Failed, run)),
            EngineAnswer::TimedOut(run) => Some((RunEnd::TimedOut, run)),
            EngineAnswer::MemoryExceeded(run) => Some((RunEnd::MemoryExceeded, run)),
            EngineAnswer::ReplayFailed(run) => Some((RunEnd::ReplayFailed, run)),
            _ => None,
        }
    }

    /// The answer of an engine that failed outside the code while handling a request.
    pub fn engine_error(id: Option<String>, message: &str) -> Self {
        EngineAnswer::Failed(RunAnswer {
            id,
            error: Some(format!("engine error: {message}")),
            ..RunAnswer::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(line: &str) -> EngineAnswer {
        serde_json::from_str(line).unwrap_or_else(|err| panic!("{line}: {err}"))
    }

    #[test]
    fn the_driver_lines_read_as_their_variants() {
        // Arrange, Act, Assert: lines exactly as driver.py writes them.
        assert_eq!(
            read(r#"{"id": "j1", "outcome": "progress", "phase": "code"}"#),
            EngineAnswer::Progress {
                id: Some("j1".into()),
                phase: Phase::Code,
                error: None
            }
        );
        assert_eq!(
            read(r#"{"id": "j1", "outcome": "needHistory"}"#),
            EngineAnswer::NeedHistory {
                id: Some("j1".into()),
                error: None
            }
        );
        let (end, run) = read(
            r#"{"results": [["5"]], "lines": ["[5]"], "outcome": "succeeded", "recycle": true, "id": "j2"}"#,
        )
        .into_run()
        .expect("a run's answer");
        assert_eq!(end, RunEnd::Succeeded);
        assert_eq!(run.results, vec![vec!["5".to_string()]]);
        assert_eq!(run.lines, vec!["[5]".to_string()]);
        assert!(run.recycle);
        assert_eq!(
            read(r#"{"outcome": "ready", "walls": ["uid 70001"], "readyAt": 12.5}"#),
            EngineAnswer::Ready {
                hyperon: None,
                walls: vec!["uid 70001".into()],
                steps: None,
            }
        );
        assert_eq!(
            read(r#"{"id": "j3", "outcome": "died", "error": "killed by SIGKILL"}"#).id(),
            Some("j3")
        );
    }

    /// The tags `driver.py` writes: every `"outcome": "…"` and `_progress(req, "…")` literal.
    fn driver_literals(after: &str) -> Vec<String> {
        let source = include_str!("driver.py");
        source
            .match_indices(after)
            .filter_map(|(at, _)| {
                let rest = &source[at + after.len()..];
                let rest = rest.trim_start().strip_prefix('"')?;
                let end = rest.find('"')?;
                Some(rest[..end].to_string())
            })
            .collect()
    }

    #[test]
    fn every_outcome_and_phase_the_driver_writes_is_one_the_supervisor_reads() {
        // Arrange
        let outcomes = driver_literals(r#""outcome":"#);
        let phases = driver_literals("_progress(req,");
        assert!(outcomes.len() >= 10, "found only {outcomes:?}");
        assert!(phases.len() >= 2, "found only {phases:?}");

        for outcome in outcomes {
            // Act: the tag with every field any variant needs.
            let line = format!(
                r#"{{"outcome": "{outcome}", "id": "j", "phase": "code", "error": "e", "liveSessions": 0, "sessionPids": [], "forkToReadyMs": []}}"#
            );
            // Assert
            assert!(
                serde_json::from_str::<EngineAnswer>(&line).is_ok(),
                "driver.py writes the outcome {outcome:?}, which EngineAnswer does not know"
            );
        }
        for phase in phases {
            let phase: Result<Phase, _> = serde_json::from_str(&format!("{phase:?}"));
            assert!(
                phase.is_ok(),
                "driver.py writes a phase Phase does not know: {phase:?}"
            );
        }
    }

    #[test]
    fn an_unknown_outcome_or_phase_is_refused() {
        // Arrange, Act, Assert
        assert!(
            serde_json::from_str::<EngineAnswer>(r#"{"id": "j", "outcome": "exploded"}"#).is_err()
        );
        assert!(serde_json::from_str::<EngineAnswer>(
            r#"{"id": "j", "outcome": "progress", "phase": "later"}"#
        )
        .is_err());
    }

    #[test]
    fn the_childs_own_lines_round_trip() {
        // Arrange
        let lines = [
            EngineAnswer::Ready {
                hyperon: Some("0.2.10".into()),
                walls: vec![],
                steps: Some("native".into()),
            },
            EngineAnswer::Unavailable {
                id: None,
                error: "no hyperon".into(),
            },
            EngineAnswer::engine_error(Some("batch-1".into()), "boom"),
        ];
        for line in lines {
            // Act
            let text = serde_json::to_string(&line).expect("encodes");
            // Assert
            assert_eq!(read(&text), line, "{text}");
        }
    }
}
