//! What the benchmark (`crates/bench`) takes from inside the server, where a figure cannot be
//! taken through the HTTP API or the real binary: each item here runs the server's own code
//! (the supervisor, the store's operations, the start-up probe, the engine's driver), so the
//! benchmark measures what the server runs and never keeps a copy of it.
//!
//! - `SupervisedEngine`: a real engine child under the server's own `EngineSupervisor`, driven
//!   as the worker drives it, for the round trip between a claimed job and hyperon;
//! - `fill_with_finished_jobs`: a SQLite database with many finished jobs, stored by the
//!   store's own operations (enqueue, claim, finish), for the start-up figure;
//! - `probe_python` (the start-up probe of `PYTHON`) and `load_engine_driver` (the engine's
//!   `driver.py` in this process), for the in-process figures.
//!
//! The server never calls the two items defined here (the other two are its own functions,
//! re-exported), and nothing here may change what the server does.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, ensure, Context};

use crate::domain::{JobId, JobKind, Language, SessionId};
use crate::engine::protocol::RunEnd;
use crate::engine::{BatchEnd, EngineSettings, EngineSupervisor, MettaRequest, MettaRunOutcome};
use crate::sandbox::{ChildLimits, Containment};
use crate::store::{ClaimedJob, Durability, EnqueueOutcome, JobOutcome, NewJob, Store};

pub use crate::app::probe_python;
pub use crate::engine::child::load_engine_driver;

/// A real engine child (the `engine` subcommand of a server binary), started and driven by
/// the server's own supervisor, with the containment of a server that is not root and has no
/// namespaces (no walls to plan: the benchmark runs only its own programs). Sessions live in
/// it as in the server's engine; each run is a batch of one, as a lone job is.
pub struct SupervisedEngine {
    supervisor: EngineSupervisor,
}

/// What a run may take before the supervisor kills the engine (far above any benchmark run).
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

impl SupervisedEngine {
    /// Starts the engine of `server_binary` (with the project's `sys_path`, from
    /// `probe_python`), its working folder in `scratch`, and waits until it is ready.
    pub async fn start(
        server_binary: &Path,
        sys_path: Vec<String>,
        scratch: &Path,
    ) -> anyhow::Result<SupervisedEngine> {
        // The engine subcommand's own defaults, and bounds no benchmark run comes near.
        let mut supervisor = EngineSupervisor::new(EngineSettings {
            executable: server_binary.to_path_buf(),
            sys_path,
            max_live_sessions: 64,
            memory_budget_mb: 4096,
            kill_grace: Duration::from_secs(1),
            replay_timeout: Duration::from_secs(120),
            max_output_bytes: 1024 * 1024,
            containment: Containment {
                limits: ChildLimits::of_this_process(),
                identity: None,
                new_network: false,
                namespaces: None,
            },
            refusal: None,
            scratch: scratch.to_path_buf(),
            session_uid_base: None,
            session_gid: None,
            session_open_files: 0,
        });
        supervisor
            .ensure_started()
            .await
            .map_err(anyhow::Error::msg)
            .context("the engine child did not start")?;
        Ok(SupervisedEngine { supervisor })
    }

    /// Builds `session` afresh from `history` (as after an engine restart), runs `code` in it
    /// and returns the lines `metta-py` would print for it. The session is then live.
    pub async fn build_session(
        &mut self,
        session: &str,
        history: &[String],
        code: &str,
    ) -> anyhow::Result<Vec<String>> {
        self.run(session, Some(history.to_vec()), code).await
    }

    /// Runs `code` in `session`, which an earlier `build_session` made live, and returns the
    /// lines `metta-py` would print for it.
    pub async fn run_in_live_session(
        &mut self,
        session: &str,
        code: &str,
    ) -> anyhow::Result<Vec<String>> {
        self.run(session, None, code).await
    }

    /// One batch of one run. Built sessions are at generation 1 and stay there (the history
    /// is not recorded anywhere, so a run need not move it on).
    async fn run(
        &mut self,
        session: &str,
        history: Option<Vec<String>>,
        code: &str,
    ) -> anyhow::Result<Vec<String>> {
        let request = MettaRequest {
            job_id: JobId::new(),
            session: SessionId::parse(session).map_err(anyhow::Error::msg)?,
            generation: if history.is_some() { 0 } else { 1 },
            history,
            code: code.to_string(),
            stdin: None,
            after: Vec::new(),
            timeout: RUN_TIMEOUT,
            success_generation: 1,
        };
        let mut outcome = None;
        let mut keep_outcome = |outcomes: Vec<(usize, MettaRunOutcome)>| {
            outcome = outcomes.into_iter().next().map(|(_, outcome)| outcome);
            std::future::ready(())
        };
        let end = self
            .supervisor
            .run_batch(std::slice::from_ref(&request), &mut keep_outcome)
            .await;
        match (end, outcome) {
            (
                BatchEnd::Completed,
                Some(MettaRunOutcome::Answered {
                    end: RunEnd::Succeeded,
                    answer,
                    ..
                }),
            ) => Ok(answer.lines),
            (BatchEnd::NeedHistory(_), _) => {
                bail!("the engine lacks session {session}: build it first")
            }
            (end, outcome) => bail!("the engine did not run {code:?}: {end:?} {outcome:?}"),
        }
    }
}

/// Fills the SQLite database at `database` (opened and migrated as the server opens it) with `jobs` finished MeTTa runs spread over `sessions` sessions, through the
/// store's own operations: enqueued together (group commit), claimed and finished one round
/// of `sessions` jobs at a time, so the jobs, the counts and each session's history are what
/// the server would have stored. Each round holds one job per session, as a batch does.
pub async fn fill_with_finished_jobs(
    database: &Path,
    jobs: usize,
    sessions: usize,
) -> anyhow::Result<()> {
    ensure!(sessions > 0, "the jobs need at least one session");
    let store = Store::open(database, Durability::Normal)
        .await
        .with_context(|| format!("cannot open {}", database.display()))?;
    let session_ids = (0..sessions)
        .map(|session| SessionId::parse(&format!("learner-{session}")))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    let mut stored = 0;
    while stored < jobs {
        let round = sessions.min(jobs - stored);
        let mut enqueues = tokio::task::JoinSet::new();
        for (offset, session) in session_ids.iter().take(round).enumerate() {
            let (store, job) = (store.clone(), finished_job_to_be(session, stored + offset));
            enqueues.spawn(async move { store.enqueue_job(&job, u64::MAX).await });
        }
        while let Some(enqueued) = enqueues.join_next().await {
            match enqueued.context("an enqueue task failed")?? {
                EnqueueOutcome::Accepted(_) => {}
                other => bail!("the store did not accept a job: {other:?}"),
            }
        }
        let queued = store.oldest_queued_jobs(round).await?;
        let claimed = store
            .claim_queued_jobs(queued, &crate::store::now_timestamp())
            .await?;
        let outcomes: Vec<(JobId, JobOutcome)> = claimed
            .iter()
            .map(|ClaimedJob { job, .. }| (job.id, succeeded_like_metta_py(&job.code)))
            .collect();
        let outcomes: Vec<(JobId, &JobOutcome)> = outcomes
            .iter()
            .map(|(id, outcome)| (*id, outcome))
            .collect();
        let finished = store.finish_jobs(&outcomes).await?;
        ensure!(
            finished.len() == round,
            "finished {} of a round of {round} jobs",
            finished.len()
        );
        stored += round;
    }
    store.close().await;
    Ok(())
}

/// The `index`th job of `fill_with_finished_jobs`: `!(+ index 1)` in `session`.
fn finished_job_to_be(session: &SessionId, index: usize) -> NewJob {
    NewJob {
        id: JobId::new(),
        kind: JobKind::Run,
        language: Some(Language::Metta),
        session_id: Some(session.clone()),
        code_id: None,
        code: format!("!(+ {index} 1)"),
        stdin: None,
        timeout_ms: 30_000,
        idempotency_key: None,
        idempotency_scope: None,
    }
}

/// The outcome of `!(+ N 1)` as the worker would store it.
fn succeeded_like_metta_py(code: &str) -> JobOutcome {
    let sum = code
        .trim_start_matches("!(+ ")
        .trim_end_matches(" 1)")
        .parse::<u64>()
        .map_or(0, |n| n + 1);
    JobOutcome {
        results: Some(vec![vec![sum.to_string()]]),
        stdout: Some(String::new()),
        stderr: Some(String::new()),
        ..JobOutcome::succeeded_with(format!("[{sum}]\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::JobStatus;

    #[tokio::test]
    async fn filled_jobs_are_finished_runs_with_their_sessions_histories() {
        // Arrange
        let folder = tempfile::tempdir().expect("temporary folder");
        let database = folder.path().join("filled.db");

        // Act: 10 jobs over 3 sessions, in rounds of 3.
        fill_with_finished_jobs(&database, 10, 3)
            .await
            .expect("filled");

        // Assert
        let store = Store::open(&database, Durability::Normal)
            .await
            .expect("opened");
        let counts = store.queue_counts().await.expect("counts");
        assert_eq!(counts.count(JobStatus::Succeeded), 10);
        assert_eq!(counts.count(JobStatus::Queued), 0);
        assert_eq!(counts.count(JobStatus::Running), 0);
        let first = SessionId::parse("learner-0").expect("session id");
        assert_eq!(store.history_length(&first).await.expect("history"), 4);
        let last = SessionId::parse("learner-2").expect("session id");
        assert_eq!(store.history_length(&last).await.expect("history"), 3);
    }
}
