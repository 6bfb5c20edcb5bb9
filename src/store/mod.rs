//! The durable state of the service: jobs, sessions and their history in one SQLite file.
//!
//! Every SQL statement of the crate lives in this module, each a compile-time checked sqlx
//! macro (the offline query data is committed in `.sqlx/`); handlers and the worker call the
//! named operations (`enqueue_job`, `claim_jobs`, `finish_jobs`, …). Each operation is one
//! statement or one transaction, so a crash at any point leaves either the old state or the
//! new one, never half of a change. This module never runs code and never decides policy
//! (limits, which jobs may share a batch, what a learner reads): callers pass those in.
//!
//! | file | owns |
//! |---|---|
//! | `open.rs` | the database URL, the connections and their pragmas |
//! | `migrations.rs` | `sqlx::migrate!` at start-up, and adopting databases of earlier builds |
//! | `jobs.rs` | a job's life: enqueue, read, cancel, claim, finish, recover, counts |
//! | `group_commit.rs` | concurrent submissions stored in one transaction |
//! | `sessions.rs` | sessions and their history (changed only by the triggers of migrations/) |
//! | `listings.rs` | the instructors' listings, on a connection of their own |
//! | `records.rs` | the typed rows |
//! | `postgres.rs` | the same operations on PostgreSQL (the SQL is the crate `crates/store-postgres`) |
//!
//! `Store` is either store, chosen by the scheme of `DATABASE_URL`; both answer with the same
//! records. The files above are the SQLite store (`SqliteStore`).

mod group_commit;
mod jobs;
mod listings;
mod migrations;
mod open;
mod postgres;
mod records;
mod sessions;

use std::sync::Arc;

use chrono::{SecondsFormat, Utc};
use sqlx::SqliteConnection;
use tokio::sync::Mutex;

pub use jobs::{CancelOutcome, EnqueueOutcome, Recovery};
pub use open::Durability;
pub use postgres::PgStore;
pub use records::{
    CellRecord, ClaimedJob, JobOutcome, JobRecord, NewJob, OldestClaim, QueueCounts,
    SessionSummary, SessionView,
};
pub use sessions::CutOutcome;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("cannot create the database folder {path}: {source}")]
    CreateFolder {
        path: String,
        source: std::io::Error,
    },
    #[error("the database holds a value this version cannot read: {0}")]
    Corrupt(String),
    /// A database error met by a group commit, reported to each submission in the group.
    #[error("database error: {0}")]
    Shared(String),
    #[error("the database is closed (the server is shutting down)")]
    Closed,
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The handle to the database, SQLite or PostgreSQL; cheap to clone. Every operation means
/// the same on both (see `postgres.rs` for what several hosts on one PostgreSQL add).
#[derive(Debug, Clone)]
pub enum Store {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

/// Runs `$call` on whichever store this is.
macro_rules! either {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            Store::Sqlite($store) => $call,
            Store::Postgres($store) => $call,
        }
    };
}

impl Store {
    /// Opens the SQLite file `path` (see `SqliteStore::open`).
    pub async fn open(path: &std::path::Path, durability: Durability) -> StoreResult<Store> {
        Ok(Store::Sqlite(SqliteStore::open(path, durability).await?))
    }

    pub async fn enqueue_job(&self, job: &NewJob, max_queued: u64) -> StoreResult<EnqueueOutcome> {
        either!(self, store => store.enqueue_job(job, max_queued).await)
    }

    pub async fn get_job(&self, id: crate::domain::JobId) -> StoreResult<Option<JobRecord>> {
        either!(self, store => store.get_job(id).await)
    }

    pub async fn cancel_job(&self, id: crate::domain::JobId) -> StoreResult<CancelOutcome> {
        either!(self, store => store.cancel_job(id).await)
    }

    pub async fn claim_oldest_job(&self) -> StoreResult<Option<OldestClaim>> {
        either!(self, store => store.claim_oldest_job().await)
    }

    pub async fn oldest_queued_jobs(&self, limit: usize) -> StoreResult<Vec<ClaimedJob>> {
        either!(self, store => store.oldest_queued_jobs(limit).await)
    }

    pub async fn claim_queued_jobs(
        &self,
        jobs: Vec<ClaimedJob>,
        started_at: &str,
    ) -> StoreResult<Vec<ClaimedJob>> {
        either!(self, store => store.claim_queued_jobs(jobs, started_at).await)
    }

    pub async fn finish_job(
        &self,
        id: crate::domain::JobId,
        outcome: &JobOutcome,
    ) -> StoreResult<Option<JobRecord>> {
        let mut records = self.finish_jobs(&[(id, outcome)]).await?;
        Ok(records.pop())
    }

    pub async fn finish_jobs(
        &self,
        outcomes: &[(crate::domain::JobId, &JobOutcome)],
    ) -> StoreResult<Vec<JobRecord>> {
        either!(self, store => store.finish_jobs(outcomes).await)
    }

    pub async fn recover_interrupted_jobs(&self) -> StoreResult<Recovery> {
        either!(self, store => store.recover_interrupted_jobs().await)
    }

    pub async fn queue_counts(&self) -> StoreResult<QueueCounts> {
        either!(self, store => store.queue_counts().await)
    }

    pub async fn load_history(
        &self,
        session: &crate::domain::SessionId,
    ) -> StoreResult<Vec<CellRecord>> {
        either!(self, store => store.load_history(session).await)
    }

    pub async fn finish_history_cut(
        &self,
        id: crate::domain::JobId,
        session: &crate::domain::SessionId,
        code_id: &crate::domain::CodeId,
        decide: impl FnOnce(&CutOutcome) -> JobOutcome,
    ) -> StoreResult<(CutOutcome, Option<JobRecord>)> {
        either!(self, store => store.finish_history_cut(id, session, code_id, decide).await)
    }

    pub async fn session_view(
        &self,
        session: &crate::domain::SessionId,
    ) -> StoreResult<Option<SessionView>> {
        either!(self, store => store.session_view(session).await)
    }

    pub async fn history_length(&self, session: &crate::domain::SessionId) -> StoreResult<i64> {
        either!(self, store => store.history_length(session).await)
    }

    pub async fn create_session(&self, session: &crate::domain::SessionId) -> StoreResult<()> {
        either!(self, store => store.create_session(session).await)
    }

    pub async fn session_jobs(
        &self,
        session: &crate::domain::SessionId,
        limit: i64,
        offset: i64,
    ) -> StoreResult<Vec<JobRecord>> {
        either!(self, store => store.session_jobs(session, limit, offset).await)
    }

    pub async fn list_sessions(&self, limit: i64, offset: i64) -> StoreResult<Vec<SessionSummary>> {
        either!(self, store => store.list_sessions(limit, offset).await)
    }

    pub async fn count_sessions(&self) -> StoreResult<i64> {
        either!(self, store => store.count_sessions().await)
    }

    pub async fn server_secret(&self, name: &str, fresh: &[u8]) -> StoreResult<Vec<u8>> {
        either!(self, store => store.server_secret(name, fresh).await)
    }

    pub async fn close(&self) {
        either!(self, store => store.close().await)
    }
}

/// The SQLite store.
///
/// Three connections to one SQLite file in WAL mode, each owned (no pool: a pool's acquire
/// and its ping cost more than the statement, see docs/PERFORMANCE.md) and behind an async
/// lock: `writer` for every change (the worker's claims and outcomes, submissions), `reader`
/// for the short reads of the API (a job, a history), and `listings` for the instructors'
/// long reads over the whole log, so those never queue in front of a learner's poll.
/// `close` takes them (`None`), so nothing is written after the store is closed.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: Arc<Mutex<Option<SqliteConnection>>>,
    reader: Arc<Mutex<Option<SqliteConnection>>>,
    listings: Arc<Mutex<Option<SqliteConnection>>>,
    waiting_inserts: Arc<group_commit::WaitingInserts>,
}

/// The current time as stored: RFC 3339 in UTC with milliseconds, so text order is time order.
pub fn now_timestamp() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A connection of the store, locked for one operation.
type Locked<'a> = tokio::sync::MappedMutexGuard<'a, SqliteConnection>;

/// Locks `connection`, or `Closed` once the store is closed.
async fn lock(connection: &Mutex<Option<SqliteConnection>>) -> StoreResult<Locked<'_>> {
    tokio::sync::MutexGuard::try_map(connection.lock().await, Option::as_mut)
        .map_err(|_| StoreError::Closed)
}

impl SqliteStore {
    /// The writer connection: every change goes through it, one operation at a time.
    async fn writer(&self) -> StoreResult<Locked<'_>> {
        lock(&self.writer).await
    }

    /// The reader connection, for the API's short reads.
    async fn reader(&self) -> StoreResult<Locked<'_>> {
        lock(&self.reader).await
    }

    /// The listings connection, for the instructors' long reads.
    async fn listings(&self) -> StoreResult<Locked<'_>> {
        lock(&self.listings).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CodeId, ErrorKind, JobId, JobKind, JobStatus, Language, SessionId};

    fn python_job(code: &str) -> NewJob {
        NewJob {
            id: JobId::new(),
            kind: JobKind::Run,
            language: Some(Language::Python),
            session_id: None,
            code_id: None,
            code: code.into(),
            stdin: None,
            timeout_ms: 1000,
            idempotency_key: None,
            idempotency_scope: None,
        }
    }

    /// Enqueues `job` and claims it (the queue holds nothing else); its id.
    async fn enqueue_and_claim(store: &SqliteStore, job: &NewJob) -> JobId {
        store.enqueue_job(job, 10).await.expect("enqueue");
        let oldest = store.claim_oldest_job().await.expect("claim");
        let claimed = oldest.expect("a queued job").claimed;
        assert_eq!(claimed.job.id, job.id, "the job just enqueued is claimed");
        claimed.job.id
    }

    /// `enqueue_and_claim`, then stores `outcome` for it.
    async fn run_to(store: &SqliteStore, job: &NewJob, outcome: &JobOutcome) {
        let id = enqueue_and_claim(store, job).await;
        store.finish_job(id, outcome).await.expect("finish");
    }

    async fn open_store(folder: &tempfile::TempDir) -> SqliteStore {
        SqliteStore::open(&folder.path().join("jobs.db"), Durability::Normal)
            .await
            .expect("open")
    }

    #[tokio::test]
    async fn the_history_length_is_the_number_of_cells_after_appends_edits_and_cuts() {
        // Arrange
        let folder = tempfile::tempdir().expect("temporary folder");
        let store = open_store(&folder).await;
        let session = SessionId::parse("s").expect("session id");
        let run_cell = |code_id: &str| NewJob {
            language: Some(Language::Metta),
            session_id: Some(session.clone()),
            code_id: Some(CodeId::parse(code_id).expect("code id")),
            ..python_job("!(+ 1 1)")
        };
        let cells = |store: SqliteStore, session: SessionId| async move {
            let count = store.load_history(&session).await.expect("history").len() as i64;
            (store.history_length(&session).await.expect("length"), count)
        };

        // Act and assert: append four cells, edit the second, cut at the third.
        for code_id in ["a", "b", "c", "d", "b"] {
            run_to(
                &store,
                &run_cell(code_id),
                &JobOutcome::succeeded_with("[2]\n"),
            )
            .await;
            let (length, count) = cells(store.clone(), session.clone()).await;
            assert_eq!(length, count, "after running cell {code_id}");
        }
        assert_eq!(cells(store.clone(), session.clone()).await, (4, 4));
        let cut = NewJob::session_change(
            JobKind::RemoveCell,
            session.clone(),
            CodeId::parse("c").ok(),
        );
        let id = enqueue_and_claim(&store, &cut).await;
        let code_id = CodeId::parse("c").expect("code id");
        let (outcome, _) = store
            .finish_history_cut(id, &session, &code_id, |_| {
                JobOutcome::succeeded_with("cut")
            })
            .await
            .expect("cut");
        assert_eq!(outcome, CutOutcome::Cut { remaining: 2 });
        assert_eq!(cells(store.clone(), session.clone()).await, (2, 2));
    }

    #[tokio::test]
    async fn a_failed_cut_or_run_leaves_the_history_as_it_was() {
        // Arrange: one cell.
        let folder = tempfile::tempdir().expect("temporary folder");
        let store = open_store(&folder).await;
        let session = SessionId::parse("s").expect("session id");
        let cell = NewJob {
            language: Some(Language::Metta),
            session_id: Some(session.clone()),
            code_id: CodeId::parse("a").ok(),
            ..python_job("(= (f) 1)")
        };
        run_to(&store, &cell, &JobOutcome::succeeded_with("")).await;

        // Act: a failed run and a failed cut of that cell.
        let failing = NewJob {
            id: JobId::new(),
            code_id: CodeId::parse("b").ok(),
            ..cell.clone()
        };
        let failed = JobOutcome::with_error(JobStatus::Failed, ErrorKind::Code, "parse error");
        run_to(&store, &failing, &failed).await;
        let cut =
            NewJob::session_change(JobKind::ResetTo, session.clone(), CodeId::parse("a").ok());
        run_to(&store, &cut, &failed).await;

        // Assert
        let history = store.load_history(&session).await.expect("history");
        let ids: Vec<&str> = history.iter().map(|cell| cell.code_id.as_str()).collect();
        assert_eq!(ids, ["a"]);
    }

    #[tokio::test]
    async fn a_group_commit_keeps_each_insert_its_own_cap_check_and_position() {
        // Arrange: a real database file; four submissions wait for the writer, the cap is 3.
        let folder = tempfile::tempdir().expect("temporary folder");
        let store = open_store(&folder).await;
        let mut answers = Vec::new();
        for i in 0..4 {
            let (reply, answer) = tokio::sync::oneshot::channel();
            let _ = store.waiting_inserts.push(group_commit::PendingInsert {
                job: python_job(&format!("print({i})")),
                max_queued: 3,
                reply,
            });
            answers.push(answer);
        }

        // Act
        store.store_waiting_inserts().await;

        // Assert
        let mut positions = Vec::new();
        for answer in answers {
            let inserted = answer.await.expect("answered").expect("no database error");
            positions.push(inserted.map(|record| record.position));
        }
        assert_eq!(
            positions,
            vec![Some(Some(1)), Some(Some(2)), Some(Some(3)), None]
        );
        let counts = store.queue_counts().await.expect("counts");
        assert_eq!(counts.count(JobStatus::Queued), 3, "{counts:?}");
    }

    #[tokio::test]
    async fn a_batch_of_outcomes_is_stored_by_one_statement_and_only_for_running_jobs() {
        // Arrange: two running jobs and one still queued.
        let folder = tempfile::tempdir().expect("temporary folder");
        let store = open_store(&folder).await;
        let mut ids = Vec::new();
        for i in 0..3 {
            let job = python_job(&format!("print({i})"));
            ids.push(job.id);
            store.enqueue_job(&job, 10).await.expect("enqueue");
        }
        store.claim_oldest_job().await.expect("claim");
        store.claim_oldest_job().await.expect("claim");
        let with_results = JobOutcome {
            results: Some(vec![vec!["1".into(), "\"two\"".into()]]),
            output_truncated: true,
            ..JobOutcome::succeeded_with("[1, \"two\"]\n")
        };
        let failed = JobOutcome::with_error(JobStatus::TimedOut, ErrorKind::Code, "too slow");

        // Act
        let records = store
            .finish_jobs(&[
                (ids[0], &with_results),
                (ids[1], &failed),
                (ids[2], &failed),
            ])
            .await
            .expect("finish");

        // Assert
        assert_eq!(
            records.len(),
            2,
            "the queued job is not touched: {records:?}"
        );
        let first = store.get_job(ids[0]).await.expect("read").expect("a job");
        assert_eq!(first.status, JobStatus::Succeeded);
        assert_eq!(first.results.map(|results| results.0), with_results.results);
        assert!(first.output_truncated);
        assert!(first.duration_ms.is_some());
        let second = store.get_job(ids[1]).await.expect("read").expect("a job");
        assert_eq!(
            (second.status, second.error_kind),
            (JobStatus::TimedOut, Some(ErrorKind::Code))
        );
        assert_eq!(second.error.as_deref(), Some("too slow"));
        let third = store.get_job(ids[2]).await.expect("read").expect("a job");
        assert_eq!((third.status, third.position), (JobStatus::Queued, Some(1)));
    }

    #[tokio::test]
    async fn a_closed_store_refuses_every_operation() {
        let folder = tempfile::tempdir().expect("temporary folder");
        let store = open_store(&folder).await;
        store.close().await;
        assert!(matches!(
            store.enqueue_job(&python_job("print(1)"), 10).await,
            Err(StoreError::Shared(_) | StoreError::Closed)
        ));
        assert!(matches!(
            store.queue_counts().await,
            Err(StoreError::Closed)
        ));
        assert!(
            !folder.path().join("jobs.db-wal").exists(),
            "closing moved the WAL into the database file"
        );
    }
}
