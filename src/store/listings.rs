//! The instructors' listing of every session, on the listings connection of its own: a long
//! read over the whole log never queues in front of a learner's poll or the worker.

use super::{SessionSummary, SqliteStore, StoreResult};
use crate::domain::SessionId;

impl SqliteStore {
    /// Every session with its cell and job counts, newest activity first.
    pub async fn list_sessions(&self, limit: i64, offset: i64) -> StoreResult<Vec<SessionSummary>> {
        let mut listings = self.listings().await?;
        Ok(sqlx::query_as!(
            SessionSummary,
            r#"SELECT s.id AS "id!: SessionId", s.created_at AS "created_at!",
                      s.updated_at AS "updated_at!",
                      (SELECT COUNT(*) FROM history h WHERE h.session_id = s.id) AS "cells!: i64",
                      (SELECT COUNT(*) FROM jobs j WHERE j.session_id = s.id) AS "jobs!: i64",
                      (SELECT MIN(created_at) FROM jobs j WHERE j.session_id = s.id)
                          AS "first_activity?: String",
                      (SELECT MAX(created_at) FROM jobs j WHERE j.session_id = s.id)
                          AS "last_activity?: String"
               FROM sessions s
               ORDER BY COALESCE((SELECT MAX(created_at) FROM jobs j WHERE j.session_id = s.id),
                        s.updated_at) DESC, s.id
               LIMIT ? OFFSET ?"#,
            limit,
            offset,
        )
        .fetch_all(&mut *listings)
        .await?)
    }

    /// The number of sessions, for pagination.
    pub async fn count_sessions(&self) -> StoreResult<i64> {
        let mut listings = self.listings().await?;
        Ok(
            sqlx::query_scalar!(r#"SELECT COUNT(*) AS "count!: i64" FROM sessions"#)
                .fetch_one(&mut *listings)
                .await?,
        )
    }
}
