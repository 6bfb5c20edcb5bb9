//! Integration tests: each test starts the real `metta-learner-backend` binary on a loopback
//! port with its own SQLite file, the real hyperon engine and the real Python interpreter
//! (`support::TestServer`), and talks to it over HTTP. One test binary gathers them all.

mod support;

mod bad_input;
mod batches;
mod contract;
mod dashboard;
mod hostile_code;
mod hostile_code_as_a_normal_user;
mod hostile_requests;
mod jobs;
mod learner_isolation;
mod learners;
mod metta;
mod misconfiguration;
mod multi_host;
mod operations;
mod reliability;
mod restart;
mod sessions_api;
mod upgrade;
