//! Group commit: submissions that arrive while another holds the writer connection are
//! stored together, in one transaction, by whichever flush takes the writer next. Each is
//! still its own INSERT with its own cap check and position; each submitter is answered
//! once the commit that holds its job is done (a failed commit answers all with the error).

use super::jobs::insert_job;
use super::{JobRecord, NewJob, SqliteStore, StoreError, StoreResult};

/// A submission waiting for the writer connection (see `SqliteStore::enqueue_job`).
pub(super) struct PendingInsert {
    pub job: NewJob,
    pub max_queued: u64,
    pub reply: tokio::sync::oneshot::Sender<StoreResult<Option<JobRecord>>>,
}

/// The submissions waiting for the writer, in arrival order, and whether a flush that will
/// take them is already on its way (so concurrent submitters start one flush, not one each).
#[derive(Default)]
pub(super) struct WaitingInserts {
    waiting: std::sync::Mutex<Vec<PendingInsert>>,
    flush_scheduled: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for WaitingInserts {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("WaitingInserts")
    }
}

impl WaitingInserts {
    /// Adds a submission; `true` when the caller must start a flush (none is on its way).
    pub fn push(&self, insert: PendingInsert) -> bool {
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(insert);
        !self
            .flush_scheduled
            .swap(true, std::sync::atomic::Ordering::AcqRel)
    }

    /// Takes every waiting submission. The flush mark is cleared first, so a submission that
    /// arrives after the take starts a flush of its own, and one that arrives before it is
    /// taken here.
    fn take(&self) -> Vec<PendingInsert> {
        self.flush_scheduled
            .store(false, std::sync::atomic::Ordering::Release);
        std::mem::take(
            &mut *self
                .waiting
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

impl SqliteStore {
    /// Takes the writer and stores every submission waiting for it (none, when an earlier
    /// flush already took them).
    pub(super) async fn store_waiting_inserts(&self) {
        let mut writer = match self.writer().await {
            Ok(writer) => writer,
            Err(err) => {
                for insert in self.waiting_inserts.take() {
                    let _ = insert.reply.send(Err(StoreError::Shared(err.to_string())));
                }
                return;
            }
        };
        let batch = self.waiting_inserts.take();
        match batch.len() {
            0 => {}
            1 => {
                for insert in batch {
                    let inserted = insert_job(&mut writer, &insert.job, insert.max_queued).await;
                    let _ = insert.reply.send(inserted);
                }
            }
            _ => {
                tracing::trace!(inserts = batch.len(), "group commit");
                match insert_together(&mut writer, &batch).await {
                    Ok(results) => {
                        for (insert, result) in batch.into_iter().zip(results) {
                            let _ = insert.reply.send(result);
                        }
                    }
                    Err(err) => {
                        for insert in batch {
                            let _ = insert.reply.send(Err(StoreError::Shared(err.to_string())));
                        }
                    }
                }
            }
        }
    }
}

/// Stores `batch` in one transaction; each insert's own answer, once all are committed.
async fn insert_together(
    writer: &mut sqlx::SqliteConnection,
    batch: &[PendingInsert],
) -> StoreResult<Vec<StoreResult<Option<JobRecord>>>> {
    let mut tx = sqlx::Connection::begin(writer).await?;
    let mut results = Vec::with_capacity(batch.len());
    for insert in batch {
        results.push(insert_job(&mut tx, &insert.job, insert.max_queued).await);
    }
    tx.commit().await?;
    Ok(results)
}
