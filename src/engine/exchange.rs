//! The decisions of one batch's exchange with the engine child, apart from its I/O: which run
//! is running, what each answer line means for it, where the hard deadline lies, and — the one
//! place that decides it — who is to blame when the child dies. `supervisor.rs` reads the
//! pipes, feeds this machine the events and carries out what it says; the unit tests below
//! drive it event by event.
//!
//! ```text
//!            line for the running run          its end markers arrived (or were late)
//!   running ─────────────────────────▶ answered ──────────────────────────▶ next run running
//!      │  progress: deadline moves                                          (or batch ends)
//!      ├─ needHistory ─────────────▶ ends: send this run again with its history
//!      ├─ deadline passed ─────────▶ the running run is killed at its deadline; the rest resume
//!      └─ the child died ──────────▶ before `received`: no run is blamed, the batch goes again;
//!                                    after: the running run died, the rest resume
//! ```

use std::time::Duration;

use tokio::time::Instant;

use super::protocol::{EngineAnswer, Phase, RunAnswer, RunEnd};

/// How long to wait for a run's end markers once the child has answered it.
pub const MARKER_WAIT: Duration = Duration::from_secs(2);
/// How long to keep reading what a child that died had written.
pub const DRAIN_AFTER_DEATH: Duration = Duration::from_millis(500);

/// What the exchange needs to know of one run of the batch.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// The id the run's answers carry.
    pub id: String,
    /// The budget of its first phase: the replay of its history when it has one, else its code.
    pub first_phase: Duration,
    /// The job's own time limit (its code).
    pub code: Duration,
}

/// A running run's answer, kept until its output's end markers arrive.
#[derive(Debug, Clone, PartialEq)]
pub enum Answered {
    /// The engine answered the run.
    Run(RunEnd, RunAnswer),
    /// The run's session process died (`driver.py` says how); the engine goes on.
    SessionDied(String),
    /// No session process could be had for the run (not the run's doing).
    Unavailable(String),
}

impl Answered {
    /// Whether the engine asked to be replaced after this run (its memory grew).
    pub fn asks_for_replacement(&self) -> bool {
        matches!(self, Answered::Run(_, answer) if answer.recycle)
    }
}

/// What an answer line meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterLine {
    /// Go on reading (the deadline may have moved: read `deadline()` again).
    Continue,
    /// The engine lacks the session of this run at its generation: the batch ends, the run is
    /// sent again with its history. Nothing was delivered for it.
    NeedHistory(usize),
}

/// Who is to blame for the child's death.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Death {
    /// It died before it said it got the batch: no run is blamed, the batch goes to a new child.
    NotReceived(String),
    /// It died while the batch was its own: the run still without an outcome (if any) died
    /// with this cause.
    DuringBatch(String),
}

/// The state of one batch's exchange.
#[derive(Debug)]
pub struct BatchExchange {
    batch_id: String,
    runs: Vec<RunPlan>,
    replay_timeout: Duration,
    grace: Duration,
    /// The run the engine is on: the first without an outcome.
    running: usize,
    /// Whether the child said it got the batch.
    received: bool,
    /// Whether the engine runs no more of the batch after the running run's answer.
    last_answer: bool,
    /// The running run's answer, while its end markers are on their way (until the instant).
    answered: Option<(Answered, Instant)>,
    /// How the child died, once it has (its remaining lines are read before the verdict).
    exited: Option<String>,
    deadline: Instant,
}

impl BatchExchange {
    /// A batch just sent: its first run's first phase is running.
    pub fn new(
        batch_id: String,
        runs: Vec<RunPlan>,
        replay_timeout: Duration,
        grace: Duration,
        now: Instant,
    ) -> Self {
        let first = runs.first().map_or(Duration::ZERO, |run| run.first_phase);
        BatchExchange {
            batch_id,
            runs,
            replay_timeout,
            grace,
            running: 0,
            received: false,
            last_answer: false,
            answered: None,
            exited: None,
            deadline: now + grace + first,
        }
    }

    /// The hard deadline of the running run's current phase (or of reading a dead child's
    /// last words).
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The run the engine is on.
    pub fn running(&self) -> usize {
        self.running
    }

    /// Whether every run has an outcome.
    pub fn all_done(&self) -> bool {
        self.running >= self.runs.len()
    }

    /// Whether the next answer line is awaited (no answer is waiting for its markers).
    pub fn awaits_line(&self) -> bool {
        self.answered.is_none()
    }

    /// When the answered run's markers are due, while it waits for them.
    pub fn markers_due(&self) -> Option<Instant> {
        self.answered.as_ref().map(|(_, due)| *due)
    }

    /// Whether the child has died (its last lines are being read).
    pub fn has_exited(&self) -> bool {
        self.exited.is_some()
    }

    /// One line from the answer pipe.
    pub fn on_line(&mut self, answer: EngineAnswer, now: Instant) -> AfterLine {
        let Some(running) = self.runs.get(self.running) else {
            return AfterLine::Continue;
        };
        let for_batch = answer.id() == Some(self.batch_id.as_str());
        let for_running = answer.id() == Some(running.id.as_str());
        if let EngineAnswer::Progress { phase, .. } = answer {
            if for_batch || for_running {
                self.received = true;
            }
            if for_running && self.exited.is_none() {
                let budget = match phase {
                    Phase::Code => running.code,
                    Phase::Received | Phase::After | Phase::Retry => self.replay_timeout,
                };
                self.deadline = now + budget + self.grace;
            }
            return AfterLine::Continue;
        }
        if for_batch {
            // The engine failed outside any run: its answer is the running run's, and it runs
            // no more of the batch.
            self.received = true;
            self.last_answer = true;
        } else if !for_running {
            // A late line of an earlier exchange, or a greeting-like line: not this run's.
            return AfterLine::Continue;
        }
        let answered = match answer {
            EngineAnswer::NeedHistory { .. } => return AfterLine::NeedHistory(self.running),
            EngineAnswer::Died { error, .. } => {
                Answered::SessionDied(error.unwrap_or_else(|| "the session's process died".into()))
            }
            EngineAnswer::Unavailable { error, .. } => Answered::Unavailable(error),
            other => match other.into_run() {
                Some((end, run)) => Answered::Run(end, run),
                // `ready`, `pong`, … carrying a run's id: not an answer to it.
                None => return AfterLine::Continue,
            },
        };
        // An engine that failed outside any run failed the service, not the running run's code.
        let answered = match answered {
            Answered::Run(_, run) if for_batch => Answered::Unavailable(
                run.error
                    .unwrap_or_else(|| "the engine failed outside any job".into()),
            ),
            other => other,
        };
        // The next run's clock starts now (its answer ends this one's).
        if let Some(next) = self.runs.get(self.running + 1) {
            if self.exited.is_none() {
                self.deadline = now + self.grace + next.first_phase;
            }
        }
        self.answered = Some((answered, now + MARKER_WAIT));
        AfterLine::Continue
    }

    /// The answered run's markers are late: it goes without the rest of its output.
    pub fn markers_late(&mut self, now: Instant) {
        if let Some((_, due)) = self.answered.as_mut() {
            *due = now;
        }
    }

    /// Whether the answered run's outcome can be made now: its output is complete
    /// (`markers_done`) or its markers are late.
    pub fn answer_complete(&self, markers_done: bool, now: Instant) -> bool {
        matches!(&self.answered, Some((_, due)) if markers_done || now >= *due)
    }

    /// The answered run (index and answer), which no longer runs: the next run is running.
    pub fn take_answered(&mut self) -> Option<(usize, Answered)> {
        let (answered, _) = self.answered.take()?;
        let run = self.running;
        self.running += 1;
        Some((run, answered))
    }

    /// Where the batch stands after an answered run: `None` while the engine runs on.
    /// `replace`: the engine asked to be replaced after it.
    pub fn end_after_answer(&self, replace: bool) -> Option<super::BatchEnd> {
        if self.all_done() {
            Some(super::BatchEnd::Completed)
        } else if replace || self.last_answer {
            Some(super::BatchEnd::Resume(self.running))
        } else {
            None
        }
    }

    /// The child exited (`cause` says how): its remaining lines and output are read for a
    /// moment before the verdict.
    pub fn on_exit(&mut self, cause: String, now: Instant) {
        self.exited = Some(cause);
        self.deadline = now + DRAIN_AFTER_DEATH;
    }

    /// The deadline passed. `Ok(())`: the running phase overran, the child is to be killed and
    /// the running run ends at its deadline. `Err(cause)`: the child had died and reading its
    /// last words took too long; that is its death.
    pub fn on_deadline(&mut self) -> Result<(), String> {
        match self.exited.take() {
            Some(cause) => Err(cause),
            None => Ok(()),
        }
    }

    /// The answer pipe ended (or broke): the child is gone. The cause is how it exited when
    /// known, else the symptom.
    pub fn on_answers_closed(&mut self, symptom: &str) -> String {
        self.exited.take().unwrap_or_else(|| symptom.to_string())
    }

    /// Who is to blame for a death with this cause.
    pub fn blame(&self, cause: String) -> Death {
        if self.received {
            Death::DuringBatch(cause)
        } else {
            Death::NotReceived(cause)
        }
    }

    /// After a kill or death: the run still without an outcome (if any), which ends with it;
    /// the runs after it are to be sent again.
    pub fn take_running(&mut self) -> Option<usize> {
        (!self.all_done()).then(|| {
            self.running += 1;
            self.running - 1
        })
    }

    /// How the batch ends after a kill or death.
    pub fn end_after_death(&self) -> super::BatchEnd {
        if self.all_done() {
            super::BatchEnd::Completed
        } else {
            super::BatchEnd::Resume(self.running)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::BatchEnd;
    use super::*;

    const REPLAY: Duration = Duration::from_secs(30);
    const GRACE: Duration = Duration::from_secs(2);

    fn plan(id: &str, first_phase: u64, code: u64) -> RunPlan {
        RunPlan {
            id: id.into(),
            first_phase: Duration::from_secs(first_phase),
            code: Duration::from_secs(code),
        }
    }

    /// A batch of three runs: `a` (with history), `b` and `c`, each with a 5 s limit.
    fn batch(now: Instant) -> BatchExchange {
        let runs = vec![plan("a", 30, 5), plan("b", 5, 5), plan("c", 5, 5)];
        BatchExchange::new("batch-1".into(), runs, REPLAY, GRACE, now)
    }

    fn progress(id: &str, phase: Phase) -> EngineAnswer {
        EngineAnswer::Progress {
            id: Some(id.into()),
            phase,
            error: None,
        }
    }

    fn succeeded(id: &str) -> EngineAnswer {
        EngineAnswer::Succeeded(RunAnswer {
            id: Some(id.into()),
            ..RunAnswer::default()
        })
    }

    #[test]
    fn runs_are_answered_in_turn_and_each_answer_starts_the_next_runs_clock() {
        // Arrange
        let start = Instant::now();
        let mut exchange = batch(start);
        assert_eq!(exchange.deadline(), start + GRACE + REPLAY);

        // Act: the batch arrives, `a` replays its history then runs its code, and answers.
        let later = start + Duration::from_secs(1);
        exchange.on_line(progress("batch-1", Phase::Received), later);
        exchange.on_line(progress("a", Phase::Code), later);
        let code_deadline = exchange.deadline();
        exchange.on_line(succeeded("a"), later);

        // Assert
        assert_eq!(code_deadline, later + Duration::from_secs(5) + GRACE);
        assert_eq!(exchange.deadline(), later + GRACE + Duration::from_secs(5));
        assert!(!exchange.awaits_line(), "`a` waits for its end markers");
        assert!(!exchange.answer_complete(false, later));
        assert!(exchange.answer_complete(true, later));
        assert!(exchange.answer_complete(false, later + MARKER_WAIT));
        let (run, answered) = exchange.take_answered().expect("answered");
        assert_eq!(run, 0);
        assert!(matches!(answered, Answered::Run(RunEnd::Succeeded, _)));
        assert_eq!(exchange.running(), 1);
        assert_eq!(exchange.end_after_answer(false), None);
    }

    #[test]
    fn the_last_answer_completes_the_batch() {
        // Arrange
        let now = Instant::now();
        let mut exchange = batch(now);
        for id in ["a", "b", "c"] {
            // Act
            exchange.on_line(succeeded(id), now);
            exchange.take_answered().expect("answered");
        }
        // Assert
        assert_eq!(exchange.end_after_answer(false), Some(BatchEnd::Completed));
    }

    #[test]
    fn a_late_line_of_another_run_or_batch_is_ignored() {
        // Arrange
        let now = Instant::now();
        let mut exchange = batch(now);
        let deadline = exchange.deadline();

        // Act
        let after_stale = exchange.on_line(succeeded("z-from-an-earlier-batch"), now);
        let after_progress = exchange.on_line(progress("b", Phase::Code), now);

        // Assert: nothing answered, the deadline did not move, and a death is still nobody's.
        assert_eq!(after_stale, AfterLine::Continue);
        assert_eq!(after_progress, AfterLine::Continue);
        assert!(exchange.awaits_line());
        assert_eq!(exchange.deadline(), deadline);
        assert_eq!(
            exchange.blame("killed".into()),
            Death::NotReceived("killed".into())
        );
    }

    #[test]
    fn need_history_ends_the_batch_at_the_running_run() {
        // Arrange
        let now = Instant::now();
        let mut exchange = batch(now);
        exchange.on_line(succeeded("a"), now);
        exchange.take_answered();

        // Act
        let after = exchange.on_line(
            EngineAnswer::NeedHistory {
                id: Some("b".into()),
                error: None,
            },
            now,
        );

        // Assert
        assert_eq!(after, AfterLine::NeedHistory(1));
    }

    #[test]
    fn a_recycle_request_or_an_engine_error_stops_the_batch_after_the_answer() {
        // Arrange
        let now = Instant::now();
        let mut recycled = batch(now);
        let mut errored = batch(now);

        // Act
        recycled.on_line(
            EngineAnswer::Succeeded(RunAnswer {
                id: Some("a".into()),
                recycle: true,
                ..RunAnswer::default()
            }),
            now,
        );
        let (_, answer) = recycled.take_answered().expect("answered");
        errored.on_line(
            EngineAnswer::engine_error(Some("batch-1".into()), "boom"),
            now,
        );
        let (run, error) = errored
            .take_answered()
            .expect("the engine error answers run 0");

        // Assert
        assert!(answer.asks_for_replacement());
        assert_eq!(recycled.end_after_answer(true), Some(BatchEnd::Resume(1)));
        assert_eq!(run, 0);
        assert_eq!(error, Answered::Unavailable("engine error: boom".into()));
        assert_eq!(errored.end_after_answer(false), Some(BatchEnd::Resume(1)));
    }

    #[test]
    fn a_death_before_the_batch_arrived_blames_no_run() {
        // Arrange
        let now = Instant::now();
        let mut exchange = batch(now);

        // Act: the child exits while idle; its answer pipe then closes.
        exchange.on_exit("the engine was killed by SIGKILL".into(), now);
        let cause = exchange.on_answers_closed("the engine closed its answer channel");

        // Assert
        assert_eq!(
            exchange.blame(cause),
            Death::NotReceived("the engine was killed by SIGKILL".into())
        );
    }

    #[test]
    fn a_death_after_the_batch_arrived_is_the_running_runs_and_the_rest_resume() {
        // Arrange
        let now = Instant::now();
        let mut exchange = batch(now);
        exchange.on_line(progress("batch-1", Phase::Received), now);
        exchange.on_line(succeeded("a"), now);
        exchange.take_answered();

        // Act: the child dies in `b`; its exit is seen before its pipe closes.
        exchange.on_exit("the engine was killed by SIGSEGV (a crash)".into(), now);
        let drain_deadline = exchange.deadline();
        let cause = exchange.on_answers_closed("the engine closed its answer channel");
        let death = exchange.blame(cause);
        let died = exchange.take_running();

        // Assert
        assert_eq!(drain_deadline, now + DRAIN_AFTER_DEATH);
        assert_eq!(
            death,
            Death::DuringBatch("the engine was killed by SIGSEGV (a crash)".into())
        );
        assert_eq!(died, Some(1));
        assert_eq!(exchange.end_after_death(), BatchEnd::Resume(2));
    }

    #[test]
    fn a_session_process_death_is_an_answer_and_the_engine_goes_on() {
        // Arrange
        let now = Instant::now();
        let mut exchange = batch(now);

        // Act
        exchange.on_line(
            EngineAnswer::Died {
                id: Some("a".into()),
                error: Some("the session's process was killed by SIGKILL".into()),
            },
            now,
        );
        let (run, answered) = exchange.take_answered().expect("answered");

        // Assert
        assert_eq!(run, 0);
        assert_eq!(
            answered,
            Answered::SessionDied("the session's process was killed by SIGKILL".into())
        );
        assert_eq!(exchange.end_after_answer(false), None);
    }

    #[test]
    fn a_run_without_a_session_process_is_answered_unavailable_not_blamed() {
        // Arrange
        let now = Instant::now();
        let mut exchange = batch(now);

        // Act
        exchange.on_line(
            EngineAnswer::Unavailable {
                id: Some("a".into()),
                error: "no spare".into(),
            },
            now,
        );

        // Assert
        assert_eq!(
            exchange.take_answered(),
            Some((0, Answered::Unavailable("no spare".into())))
        );
    }

    #[test]
    fn a_passed_deadline_kills_the_running_run_unless_the_child_had_died() {
        // Arrange
        let now = Instant::now();
        let mut overrun = batch(now);
        let mut dead = batch(now);
        dead.on_exit("the engine exited with status 70".into(), now);

        // Act, Assert
        assert_eq!(overrun.on_deadline(), Ok(()));
        assert_eq!(overrun.take_running(), Some(0));
        assert_eq!(overrun.end_after_death(), BatchEnd::Resume(1));
        assert_eq!(
            dead.on_deadline(),
            Err("the engine exited with status 70".into())
        );
    }

    #[test]
    fn after_the_child_exited_progress_no_longer_moves_the_deadline() {
        // Arrange
        let now = Instant::now();
        let mut exchange = batch(now);
        exchange.on_exit("gone".into(), now);

        // Act
        exchange.on_line(progress("a", Phase::Code), now + Duration::from_millis(100));

        // Assert
        assert_eq!(exchange.deadline(), now + DRAIN_AFTER_DEATH);
        assert_eq!(
            exchange.blame("gone".into()),
            Death::DuringBatch("gone".into())
        );
    }
}
