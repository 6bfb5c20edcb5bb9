//! Integration tests: each test starts the real `metta-learner-backend` binary on a loopback
//! port with its own SQLite file, the real hyperon engine and the real Python interpreter
//! (`support::TestServer`), and talks to it over HTTP. One test binary gathers them all.

mod support;

mod bad_input;
mod batches;
mod contract;
mod hostile_code;
mod hostile_code_as_a_normal_user;
mod hostile_requests;
mod jobs;
mod learners;
mod metta;
mod misconfiguration;
mod multi_host;
mod reliability;
mod restart;
mod sessions_api;
mod upgrade;
