//! metta-learner-backend: the backend of the MeTTa learning playground, a persistent job-queue
//! service with durable history.
//!
//! A request becomes a row in SQLite (`store`) before anyone is told its id (`queue`). One
//! worker (`worker`) claims rows in FIFO order and runs each: Python in a fresh contained
//! interpreter (`python_runner`, `sandbox`, `capture`), MeTTa in a learner's persistent session
//! inside a supervised engine child that embeds hyperon through pyo3 (`engine`). Results,
//! output and each session's history are stored, so clients poll or long-wait (`job_signals`),
//! and a restart loses nothing. `http` is the API, `app` wires it all, `config` is every knob,
//! `domain` the vocabulary, `learner_messages` every sentence a learner reads when a job
//! did not simply succeed, `service_metrics` what `/metrics` shows, `request_context` the id
//! that ties a request's log lines (and its jobs') together. `docs/ARCHITECTURE.md` walks
//! through the layout.
//!
//! Every module but `learner_messages` is private. The public surface is what the binary
//! (`main.rs`) needs to run the server or the engine child; `learner_messages`, whose
//! constants the API tests match instead of copying sentences (the tests otherwise use the
//! real binary); and what the benchmark (`crates/bench`) needs from inside where a figure
//! cannot be taken through HTTP (`measurement` says why each item is there).

mod app;
mod capture;
mod config;
mod domain;
mod engine;
mod http;
mod instance;
mod job_signals;
pub mod learner_messages;
mod measurement;
mod python_runner;
mod queue;
mod recent_activity;
mod request_context;
mod sandbox;
mod service_metrics;
mod store;
mod worker;

// The binary: the server and the engine child it spawns of itself.
pub use app::Application;
pub use config::{Config, LogFormat};
pub use engine::child::{run_engine, EngineArgs};

// The benchmark.
pub use measurement::{
    fill_with_finished_jobs, load_engine_driver, probe_python, SupervisedEngine,
};
pub use service_metrics::SESSION_REPLAYS;
