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
//! did not simply succeed (exported for the API tests, which match its constants),
//! `service_metrics` what `/metrics` shows, `request_context` the id that ties a request's log
//! lines (and its jobs') together. `docs/ARCHITECTURE.md` walks through the layout.

pub mod app;
pub mod capture;
pub mod config;
pub mod domain;
pub mod engine;
pub mod http;
pub mod instance;
pub mod job_signals;
pub mod learner_messages;
pub mod python_runner;
pub mod queue;
pub mod recent_activity;
pub mod request_context;
pub mod sandbox;
pub mod service_metrics;
pub mod store;
pub mod worker;

pub use app::Application;
pub use config::Config;
