//! Executing MeTTa: a disposable engine child process that embeds Python (pyo3) and drives
//! `hyperon`, and the supervisor in the server that spawns it, talks to it, enforces deadlines
//! and respawns it when it dies.
//!
//! ```text
//!  worker ──run_metta()──▶ EngineSupervisor ──fd 4: one JSON request per line───▶ engine child
//!                              ▲   ▲   ▲                                           (`engine`
//!                              │   │   └──── fd 3: one JSON response per line ◀─── subcommand,
//!                              │   └──────── fd 2: trace! / stderr, capped   ◀──── pyo3 + hyperon,
//!                              └──────────── fd 1: println! / stdout, capped ◀──── driver.py)
//! ```
//!
//! Output is captured at the descriptor level because hyperon's `println!` and `trace!` write
//! to fds 1 and 2 from Rust, not through Python's `sys.stdout`. The child writes a per-job
//! start and end marker on both descriptors around the job's own code, so output of a history
//! replay is not mixed into the job's output. The child never touches the database: the
//! supervisor sends it a session's history when it lacks the session's current generation.
//!
//! Inside, the engine child is a router that runs no learner's code: each live session runs
//! in a contained process of its own, forked from a zygote made before the first request
//! (`driver.py` has the tree). A session process that dies takes only its session with it:
//! the child answers `died` for its run and goes on.

mod batch_output;
pub mod child;
mod exchange;
mod native_steps;
pub mod protocol;
mod spawn;
pub mod supervisor;

pub use supervisor::{
    engine_open_files, BatchEnd, EngineSettings, EngineSupervisor, MettaRequest, MettaRunOutcome,
};
