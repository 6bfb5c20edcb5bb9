//! Helpers of the hostile-code suites (`hostile_code.rs`, `hostile_code_as_a_normal_user.rs`,
//! `learner_isolation.rs`): a server whose children can be told apart, what they left, and
//! learners' code that probes the walls.

pub mod normal_user;
pub mod probes;
pub mod processes;
pub mod sandbox;
