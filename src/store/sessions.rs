//! Sessions and their history cells.
//!
//! The history changes in one place only: the triggers of `migrations/`, which fire when a
//! job that changes it (a MeTTa run, a reset, a cut) is stored as succeeded. So a session's
//! history is always a function of its job log, and it changes in the very statement that
//! stores the job's result, never apart from it (a crash between the two cannot happen).
//! This file reads the history and decides nothing.

use super::jobs::query_jobs;
use super::{
    now_timestamp, CellRecord, JobOutcome, JobRecord, SessionView, SqliteStore, StoreResult,
};
use crate::domain::{CodeId, ErrorKind, JobId, JobKind, JobStatus, Language, SessionId};
use sqlx::types::Json;

/// What a history cut (reset-to, remove) finds, and so what it does once stored as succeeded.
#[derive(Debug, PartialEq, Eq)]
pub enum CutOutcome {
    /// The target and every cell after it go; this many cells remain.
    Cut { remaining: i64 },
    /// The history is empty: nothing to cut, which the legacy API answers with success.
    EmptyHistory,
    /// The history has cells but none with that codeId.
    NotFound,
}

impl SqliteStore {
    /// The cells of a session, in position order (empty for an unknown session).
    pub async fn load_history(&self, session: &SessionId) -> StoreResult<Vec<CellRecord>> {
        let mut reader = self.reader().await?;
        history_cells(&mut reader, session).await
    }

    /// Finishes a cut job: finds what the cut at `code_id` does (positions are always
    /// 1..=n, so the cells before the target are its position less one), lets `decide` turn
    /// that into the job's outcome, and stores it (the trigger `cut_recorded_in_history`
    /// removes the cells when the outcome is a success). The writer stays held throughout,
    /// so nothing changes the history in between.
    pub async fn finish_history_cut(
        &self,
        id: JobId,
        session: &SessionId,
        code_id: &CodeId,
        decide: impl FnOnce(&CutOutcome) -> JobOutcome,
    ) -> StoreResult<(CutOutcome, Option<JobRecord>)> {
        let mut writer = self.writer().await?;
        let found = sqlx::query!(
            r#"SELECT (SELECT position FROM history WHERE session_id = ?1 AND code_id = ?2)
                          AS "target?: i64",
                      (SELECT COUNT(*) FROM history WHERE session_id = ?1) AS "cells!: i64""#,
            session,
            code_id,
        )
        .fetch_one(&mut *writer)
        .await?;
        let cut = match found.target {
            Some(position) => CutOutcome::Cut {
                remaining: position - 1,
            },
            None if found.cells == 0 => CutOutcome::EmptyHistory,
            None => CutOutcome::NotFound,
        };
        let outcome = decide(&cut);
        drop(writer);
        let record = self.finish_job(id, &outcome).await?;
        Ok((cut, record))
    }

    /// A session's cells and summary, or `None` when the session has never been used.
    pub async fn session_view(&self, session: &SessionId) -> StoreResult<Option<SessionView>> {
        let mut reader = self.reader().await?;
        let Some(row) = sqlx::query!(
            "SELECT created_at, updated_at FROM sessions WHERE id = ?",
            session
        )
        .fetch_optional(&mut *reader)
        .await?
        else {
            return Ok(None);
        };
        Ok(Some(SessionView {
            id: session.clone(),
            created_at: row.created_at,
            updated_at: row.updated_at,
            cells: history_cells(&mut reader, session).await?,
        }))
    }

    /// The number of cells in a session's history. Positions are always 1..=n (cells are
    /// appended at the end, replaced in place, and removed only as a suffix or all at once),
    /// so this is the last position: one index lookup instead of counting the cells.
    pub async fn history_length(&self, session: &SessionId) -> StoreResult<i64> {
        let mut reader = self.reader().await?;
        Ok(sqlx::query_scalar!(
            r#"SELECT COALESCE(MAX(position), 0) AS "length!: i64" FROM history WHERE session_id = ?"#,
            session
        )
        .fetch_one(&mut *reader)
        .await?)
    }

    /// Creates an empty session (for `POST /api/v1/sessions`).
    pub async fn create_session(&self, session: &SessionId) -> StoreResult<()> {
        let now = now_timestamp();
        let mut writer = self.writer().await?;
        sqlx::query!(
            "INSERT INTO sessions (id, generation, created_at, updated_at) \
             VALUES (?1, 0, ?2, ?2) ON CONFLICT (id) DO NOTHING",
            session,
            now,
        )
        .execute(&mut *writer)
        .await?;
        Ok(())
    }

    /// A session's job log in acceptance order.
    pub async fn session_jobs(
        &self,
        session: &SessionId,
        limit: i64,
        offset: i64,
    ) -> StoreResult<Vec<JobRecord>> {
        let mut listings = self.listings().await?;
        Ok(query_jobs!(
            JobRecord,
            "SELECT ",
            r#", NULL AS "position?: i64"
               FROM jobs WHERE session_id = ? ORDER BY seq LIMIT ? OFFSET ?"#,
            session,
            limit,
            offset,
        )
        .fetch_all(&mut *listings)
        .await?)
    }
}

async fn history_cells(
    connection: &mut sqlx::SqliteConnection,
    session: &SessionId,
) -> StoreResult<Vec<CellRecord>> {
    Ok(sqlx::query_as!(
        CellRecord,
        r#"SELECT position AS "position!: i64", code_id AS "code_id!: CodeId", code AS "code!",
                  created_at AS "created_at!", updated_at AS "updated_at!",
                  last_job_id AS "last_job_id?: JobId", last_result AS "last_result?"
           FROM history WHERE session_id = ? ORDER BY position"#,
        session
    )
    .fetch_all(connection)
    .await?)
}

impl SqliteStore {
    /// The server's secret named `name`: made from `fresh` the first time it is asked for,
    /// the same value ever after (it is stored with the data, so it survives restarts).
    pub async fn server_secret(&self, name: &str, fresh: &[u8]) -> StoreResult<Vec<u8>> {
        let mut writer = self.writer().await?;
        sqlx::query!(
            "INSERT INTO server_secrets (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
            name,
            fresh,
        )
        .execute(&mut *writer)
        .await?;
        Ok(sqlx::query_scalar!(
            r#"SELECT value AS "value!: Vec<u8>" FROM server_secrets WHERE name = ?"#,
            name
        )
        .fetch_one(&mut *writer)
        .await?)
    }
}
