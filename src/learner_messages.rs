//! Every sentence a learner reads when a job did not simply succeed: how their Python or
//! MeTTa run ended (an exit status, a signal, a time limit, the memory budget, an engine that
//! died or panicked, a session that could not be rebuilt) and what a history change did.
//!
//! The worker decides a job's status and error kind; this module only words it, so the
//! wording can be read (and changed) in one place. Sentences say what happened in the
//! learner's terms and what happens next (the session is rebuilt, the cell is not kept);
//! internals (backtrace frames, addresses) stay in the job's `stderr` and the server's log.
//! Where a test must recognise a sentence, it matches a constant of this module (they are
//! exported for the API tests), never a copy.
//!
//! It never decides anything, reads the database or talks to processes.

use std::time::Duration;

// ----- session changes -----------------------------------------------------------------------

/// A successful reset, as the original service answered it: part of the frontend contract,
/// which `tests/api/contract.rs` pins with its own copy on purpose (a change here must fail it).
pub const RESET_DONE: &str = "AtomSpace and code history completely reset.";

/// A reset-to or remove on an empty history (which the legacy API answers with success).
pub const HISTORY_ALREADY_EMPTY: &str = "The history is empty; nothing to change.";

/// A history cut that was made: `removing` for a remove, else a reset-to.
pub fn history_cut(removing: bool, code_id: &str, remaining: i64) -> String {
    if removing {
        format!("Removed code '{code_id}' and everything after it; {remaining} entries remain.")
    } else {
        format!("Reset to before code '{code_id}'; {remaining} entries remain.")
    }
}

/// A cut whose target is not in the session's history.
pub fn code_id_not_in_history(code_id: &str, session: &str) -> String {
    format!("codeId '{code_id}' is not in the history of session '{session}'")
}

/// A history cut stored without the cell it names (the API refuses those before they are
/// queued, so only a damaged row gets this).
pub const CODE_ID_REQUIRED: &str = "codeId is required";

/// A run stored without a language (the API refuses those before they are queued).
pub const NO_LANGUAGE: &str = "the job names no language";

// ----- Python --------------------------------------------------------------------------------

/// Python exited with a failure status and wrote nothing to stderr (otherwise stderr is the
/// error, as `python -I -c` shows it).
pub fn python_exited(code: i32) -> String {
    format!("Python exited with status {code}")
}

/// The start of the error of a Python run killed by a signal.
pub const PYTHON_KILLED: &str = "Python was killed by";

/// What introduces the last lines a killed process wrote to stderr.
pub const LAST_WORDS: &str = "Its last words on stderr:";

/// Lines of stderr a learner is shown when a process was killed.
const LAST_WORDS_SHOWN: usize = 10;

/// What a learner reads when their Python was killed by a signal: the signal, then the last
/// lines the interpreter wrote to stderr (an abort's reason, hyperon's panic message), with
/// the frames of a Rust backtrace left out (they are in `stderr` for whoever wants them).
pub fn python_killed(signal: i32, stderr: &str) -> String {
    let mut message = format!("{PYTHON_KILLED} {}", describe_signal(signal));
    append_last_words(&mut message, stderr, ". ");
    message
}

/// The words every time limit's message contains.
pub const TIME_LIMIT: &str = "time limit";

/// A Python run stopped at its deadline.
pub fn python_timed_out(timeout: Duration) -> String {
    format!(
        "the Python run exceeded its {TIME_LIMIT} of {} and was stopped",
        describe_duration(timeout)
    )
}

// ----- MeTTa ---------------------------------------------------------------------------------

/// A MeTTa run that failed without saying why (the engine always says; a fallback).
pub const METTA_ERROR: &str = "MeTTa error";

/// A MeTTa run stopped at a step boundary past its deadline.
pub fn metta_timed_out(timeout: Duration) -> String {
    format!(
        "the MeTTa run reached its {TIME_LIMIT} of {} and was stopped; the results found so far are kept",
        describe_duration(timeout)
    )
}

/// A MeTTa step that did not return by the deadline (plus grace), so its process was killed.
pub fn metta_step_killed_at_deadline(timeout: Duration) -> String {
    format!(
        "a MeTTa step did not return within the {TIME_LIMIT} of {}; it was stopped and {SESSION_REBUILT}",
        describe_duration(timeout)
    )
}

/// A MeTTa run stopped because it outgrew the engine's memory budget.
pub const METTA_MEMORY_EXCEEDED: &str = "the MeTTa run used more memory than the engine allows (ENGINE_MEMORY_MB) and was stopped; the results found so far are kept";

/// The session's history could not be replayed before the job's code.
pub fn replay_failed(session: &str, why: &str) -> String {
    format!("could not rebuild session '{session}' from its history: {why}")
}

/// The start of the error of a MeTTa job whose engine (or session process) died under it.
pub const ENGINE_DIED: &str = "the MeTTa engine died while running this job";

/// What a death or a kill means for the learner's session; every such message says it.
pub const SESSION_REBUILT: &str =
    "the session will be rebuilt from its history on its next run (this cell is not kept)";

/// What introduces hyperon's own panic message in an engine death.
pub const HYPERON_PANICKED: &str = "hyperon panicked";

/// What a learner reads when the engine died while running their MeTTa job. A panic of
/// hyperon is named by its message and where it is; any other death by its cause and the
/// last lines the engine wrote to stderr. Backtrace frames are never shown (they stay in the
/// job's `stderr`).
pub fn engine_died(cause: &str, stderr: &str) -> String {
    match RustPanic::find(stderr) {
        Some(panic) => format!(
            "{ENGINE_DIED}: {HYPERON_PANICKED} at {}: {}. This is a fault in hyperon (the MeTTa interpreter) that your code ran into; {SESSION_REBUILT}.",
            panic.location, panic.message
        ),
        None => {
            let mut message = format!("{ENGINE_DIED} ({cause}); {SESSION_REBUILT}");
            append_last_words(&mut message, stderr, ". ");
            message
        }
    }
}

/// The start of the error of a MeTTa job when no engine can be started.
pub const ENGINE_UNAVAILABLE: &str = "MeTTa engine not available";

/// No engine could be started (hyperon missing, a wall the host refuses, …).
pub fn engine_unavailable(reason: &str) -> String {
    format!("{ENGINE_UNAVAILABLE}: {reason}")
}

/// Why no engine could run a job that two engines in a row died before reading (so the job
/// is not to blame).
pub fn engine_died_before_reading(cause: &str) -> String {
    format!("it stopped twice before it read the job ({cause}); your code is not the cause: run it again, and tell the instructor if this goes on")
}

/// The engine asked again for a history it had just been sent.
pub const HISTORY_ASKED_TWICE: &str =
    "internal error: the engine asked for a history it was just given";

/// The outcome of a job could not be stored.
pub const OUTCOME_NOT_STORED: &str =
    "internal error: the service could not store this job's result";

// ----- causes: how a process ended -----------------------------------------------------------

/// A signal by name, with what usually sends it.
pub fn describe_signal(signal: i32) -> String {
    match signal {
        libc::SIGKILL => "SIGKILL (out of memory, or killed from outside)".into(),
        libc::SIGXCPU => "SIGXCPU (its CPU time limit)".into(),
        libc::SIGXFSZ => "SIGXFSZ (its file size limit, CHILD_FILE_SIZE_MB)".into(),
        libc::SIGSEGV => "SIGSEGV (a crash)".into(),
        libc::SIGABRT => "SIGABRT (an abort)".into(),
        other => format!("signal {other}"),
    }
}

/// How the engine process ended, from its exit status.
pub fn engine_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("the engine exited with status {code}"),
        (_, Some(signal)) => format!("the engine was killed by {}", describe_signal(signal)),
        _ => "the engine exited".into(),
    }
}

/// A duration as a learner reads a limit: "2 s", "1.5 s".
pub fn describe_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis % 1000 == 0 {
        format!("{} s", millis / 1000)
    } else {
        format!("{:.1} s", duration.as_secs_f64())
    }
}

// ----- reading what a dying process wrote ----------------------------------------------------

/// A Rust panic as the panicking process reported it on stderr.
#[derive(Debug, PartialEq, Eq)]
pub struct RustPanic {
    /// `file:line:column` of the panic (hyperon's source, e.g. `lib/src/…/arithmetics.rs:53:1`).
    pub location: String,
    /// The panic's message (an assertion, "attempt to … with a divisor of zero", …), its lines
    /// joined by spaces.
    pub message: String,
}

impl RustPanic {
    /// The first panic reported in `stderr`: the line `thread '…' panicked at FILE:L:C:`
    /// and the message lines after it, up to the backtrace or a note.
    pub fn find(stderr: &str) -> Option<RustPanic> {
        let mut lines = stderr.lines();
        let location = lines.by_ref().find_map(|line| {
            let (_, rest) = line
                .split_once("' panicked at ")
                // A thread's id follows its name since Rust 1.90: `thread 'x' (123) panicked at`.
                .or_else(|| line.split_once(") panicked at "))?;
            Some(rest.trim().trim_end_matches(':').to_string())
        })?;
        let message: Vec<&str> = lines
            .map(str::trim)
            .take_while(|line| {
                !line.starts_with("stack backtrace:")
                    && !line.starts_with("note: ")
                    && !line.starts_with("thread ")
                    && !is_backtrace_frame(line)
            })
            .filter(|line| !line.is_empty())
            .collect();
        Some(RustPanic {
            location,
            message: message.join(" "),
        })
    }
}

/// Whether a line of stderr is part of a Rust backtrace or its epilogue, which a learner
/// cannot act on: a frame (`  12: name` or `12: 0x… - name`), a frame's source (`at …`), the
/// header, the hint to set `RUST_BACKTRACE`, and the abort of a panic that cannot unwind.
pub fn is_backtrace_frame(line: &str) -> bool {
    let trimmed = line.trim_start();
    trimmed.starts_with("at ")
        || trimmed.starts_with("stack backtrace:")
        || trimmed.starts_with("note: run with `RUST_BACKTRACE")
        || trimmed.starts_with("note: Some details are omitted")
        || trimmed.starts_with("thread caused non-unwinding panic")
        || trimmed
            .split_once(':')
            .is_some_and(|(number, _)| !number.is_empty() && number.parse::<u32>().is_ok())
}

/// Appends `separator`, then the last lines of `stderr` that are not backtrace lines, when
/// there are any.
fn append_last_words(message: &mut String, stderr: &str, separator: &str) {
    let said: Vec<&str> = stderr
        .lines()
        .filter(|line| !line.trim().is_empty() && !is_backtrace_frame(line))
        .collect();
    let last = &said[said.len().saturating_sub(LAST_WORDS_SHOWN)..];
    if !last.is_empty() {
        message.push_str(separator);
        message.push_str(LAST_WORDS);
        message.push('\n');
        message.push_str(&last.join("\n"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What hyperon 0.2.10 writes when `!(% 1 0)` panics in a session process (abridged).
    const HYPERON_PANIC: &str = "\nthread '<unnamed>' (4240) panicked at lib/src/metta/runner/stdlib/arithmetics.rs:53:1:\n\
        attempt to calculate the remainder with a divisor of zero\n\
        stack backtrace:\n\
        \x20  0: __rustc::rust_begin_unwind\n\
        \x20  1: core::panicking::panic_fmt\n\
        \x20 24: __libc_start_call_main\n\
        \x20            at ./csu/../sysdeps/nptl/libc_start_call_main.h:58:16\n\
        \x20 28:           0x627bd1 - _start\n\
        \x20 29:                0x0 - <unknown>\n\
        thread caused non-unwinding panic. aborting.\n";

    #[test]
    fn a_panic_is_found_by_its_location_and_message() {
        assert_eq!(
            RustPanic::find(HYPERON_PANIC),
            Some(RustPanic {
                location: "lib/src/metta/runner/stdlib/arithmetics.rs:53:1".into(),
                message: "attempt to calculate the remainder with a divisor of zero".into(),
            })
        );
        let older = "thread '<unnamed>' panicked at lib/src/space/grounding.rs:229:9:\n\
                     assertion failed: matches!(x, Some(_))\n\
                     note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert_eq!(
            RustPanic::find(older),
            Some(RustPanic {
                location: "lib/src/space/grounding.rs:229:9".into(),
                message: "assertion failed: matches!(x, Some(_))".into(),
            })
        );
        assert_eq!(
            RustPanic::find("Traceback (most recent call last):\n"),
            None
        );
    }

    #[test]
    fn an_engine_panic_names_the_message_and_the_rebuild_without_frames() {
        let message = engine_died("the session's process was killed by SIGABRT", HYPERON_PANIC);

        assert!(message.starts_with(ENGINE_DIED), "{message}");
        assert!(
            message.contains(
                "hyperon panicked at lib/src/metta/runner/stdlib/arithmetics.rs:53:1: attempt to calculate the remainder with a divisor of zero"
            ),
            "{message}"
        );
        assert!(message.contains(SESSION_REBUILT), "{message}");
        for frame in ["0x", "rust_begin_unwind", "non-unwinding", " 0: ", "_start"] {
            assert!(!message.contains(frame), "{frame:?} in {message}");
        }
    }

    #[test]
    fn an_engine_death_without_a_panic_names_its_cause_and_last_words() {
        let message = engine_died(
            "the session's process was killed by SIGKILL",
            "loading\nMemoryError: out of room\n",
        );

        assert_eq!(
            message,
            format!(
                "{ENGINE_DIED} (the session's process was killed by SIGKILL); {SESSION_REBUILT}. {LAST_WORDS}\nloading\nMemoryError: out of room"
            )
        );
        assert_eq!(
            engine_died("the engine exited with status 1", ""),
            format!("{ENGINE_DIED} (the engine exited with status 1); {SESSION_REBUILT}")
        );
    }

    #[test]
    fn a_killed_python_shows_its_signal_and_last_words_without_backtrace_frames() {
        let stderr = "thread '<unnamed>' panicked at lib/src/space/grounding.rs:229:9:\n\
                      assertion failed: matches!(x, Some(_))\n\
                      stack backtrace:\n   0: rust_begin_unwind\n             at /rustc/abc/std.rs:1\n\
                      note: run with `RUST_BACKTRACE=full` for a verbose backtrace.\n\
                      fatal runtime error: failed to initiate panic, error 5\n";

        let message = python_killed(libc::SIGABRT, stderr);

        assert!(
            message.starts_with(&format!("{PYTHON_KILLED} SIGABRT")),
            "{message}"
        );
        assert!(
            message.contains("assertion failed: matches!(x, Some(_))"),
            "{message}"
        );
        assert!(
            message.contains("panicked at lib/src/space/grounding.rs:229:9"),
            "{message}"
        );
        assert!(
            !message.contains("rust_begin_unwind") && !message.contains("/rustc/"),
            "{message}"
        );
        assert_eq!(
            python_killed(libc::SIGKILL, ""),
            format!("{PYTHON_KILLED} {}", describe_signal(libc::SIGKILL))
        );
    }

    #[test]
    fn only_the_last_lines_of_stderr_are_shown() {
        let stderr: String = (1..=30).map(|line| format!("line {line}\n")).collect();

        let message = python_killed(libc::SIGABRT, &stderr);

        assert!(message.ends_with("line 21\nline 22\nline 23\nline 24\nline 25\nline 26\nline 27\nline 28\nline 29\nline 30"), "{message}");
        assert!(!message.contains("line 20\n"), "{message}");
    }

    #[test]
    fn limits_read_in_seconds() {
        assert_eq!(describe_duration(Duration::from_secs(2)), "2 s");
        assert_eq!(describe_duration(Duration::from_millis(1500)), "1.5 s");
        assert!(python_timed_out(Duration::from_secs(3)).contains("time limit of 3 s"));
        assert!(metta_timed_out(Duration::from_secs(3)).contains("time limit of 3 s"));
        assert!(metta_step_killed_at_deadline(Duration::from_secs(3)).contains(SESSION_REBUILT));
    }
}
