//! The test harness, by concern. Every test talks to the real binary:
//!
//! | file | what it gives a test |
//! |---|---|
//! | `server.rs` | `TestServer`: start the binary (settings, another user, a launcher, a copy of a database), its log and pids, kill -9, SIGTERM, restart |
//! | `database.rs` | the database under a server: a fresh PostgreSQL one (`psql`), and the jobs a stopped server left (`stored_jobs`) |
//! | `http.rs` | requests: `server.post/get/delete`, `submit`, `run`, `metta`, raw bodies and headers (`post_raw`, `Answer`), queue counts |
//! | `waiting.rs` | `wait_final` (long-wait), `wait_until_running` (polling), `is_final` |
//! | `assertions.rs` | a job's status and that it says why; hyperon's own output as the reference (`direct_hyperon_run`) |
//! | `workload.rs` | frontend code ids, counting `!` expressions, a seeded `Rng`, timestamps as the service writes them |
//! | `hostile/` | hostile code: `Sandbox` (children under uids of their own, a scratch folder the test chose, what a job left behind), `/proc` processes, probes of the environment, database and network, servers run as a normal user |
//!
//! The store comes from `TEST_STORE`: `sqlite` (the default: a file in the test's folder) or
//! `postgres` (a fresh database per server on the PostgreSQL that `TEST_PG_ADMIN_URL` names,
//! made with `psql` and dropped with the server; scripts/test.sh starts that PostgreSQL and
//! runs the suites about the store once per store).

mod assertions;
mod database;
pub mod hostile;
mod http;
mod server;
mod waiting;
mod workload;

pub use assertions::{assert_status, direct_hyperon_run, last_lines, text};
pub use database::{psql, stored_jobs, PostgresDatabase, StoredJob};
pub use http::{
    answer, id_of, post_json, post_raw, python, queue_counts, read, stored_job_count, Answer,
};
pub use rustix::process::Signal;
pub use server::{project_python, send_signal, TestServer, BINARY};
pub use waiting::{is_final, is_final_status, wait_until_running};
pub use workload::{bang_count, frontend_code_id, now_timestamp, Rng};
