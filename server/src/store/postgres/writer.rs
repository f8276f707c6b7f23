//! The writer task: applies queued operations in call order and commits them in batches
//! (group commit) on one connection, so a thousand concurrent writes cost one commit. Values
//! are coalesced: a run of them becomes three array statements (history, latest values,
//! device versions), sent together. A batch is one transaction; if PostgreSQL refuses it
//! (not a lost connection), its operations are applied again one per transaction, so that
//! only the one at fault fails.

use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::{ClientWrapper, Object, Pool};
use tokio::sync::mpsc;

use super::health::Health;
use super::values::write_values;
use super::work::{Done, Op, Work};
use super::{operations, retention};
use crate::model::now_ms;
use crate::store::retention::{Retention, Trimmer};
use crate::store::{StoreError, ValueWrite};

/// Most operations applied in one transaction.
const MAX_BATCH: usize = 4096;
/// A batch that gets no answer for this long counts as lost: its connection is dropped (so
/// PostgreSQL rolls it back) and its operations fail as unavailable.
const BATCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Wait before the next trimming step after one failed (PostgreSQL away), instead of trying
/// again every few milliseconds.
const TRIM_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The writer task's state.
pub(super) struct Writer {
    pool: Pool,
    trimmer: Trimmer,
    health: Arc<Health>,
}

impl Writer {
    pub(super) fn new(pool: Pool, retention: Retention, health: Arc<Health>) -> Self {
        Writer {
            pool,
            trimmer: Trimmer::new(retention),
            health,
        }
    }

    /// Runs until the store is dropped: batches as they come, trimming steps between them
    /// when due.
    pub(super) async fn run(mut self, mut queue: mpsc::UnboundedReceiver<Op>) {
        loop {
            let first = match self.trimmer.next_step_in(Instant::now()) {
                Some(wait) => match tokio::time::timeout(wait, queue.recv()).await {
                    Ok(Some(op)) => Some(op),
                    Ok(None) => return,
                    Err(_) => None,
                },
                None => match queue.recv().await {
                    Some(op) => Some(op),
                    None => return,
                },
            };
            if let Some(first) = first {
                // The first op, and the ones already queued behind it.
                let queued = std::iter::from_fn(|| queue.try_recv().ok());
                let batch = std::iter::once(first).chain(queued).take(MAX_BATCH);
                self.apply(batch.collect()).await;
            }
            if self.trimmer.step_due(Instant::now())
                && let Err(error) = self.trim_step().await
            {
                tracing::warn!(%error, "history trimming step failed; it is tried again later");
                self.trimmer.retry_later(TRIM_RETRY_AFTER);
            }
        }
    }

    /// Applies a batch, then reports every outcome.
    async fn apply(&mut self, batch: Vec<Op>) {
        let mut works = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        let mut trims = Vec::new();
        for op in batch {
            match op {
                Op::Write(work, reply) => {
                    works.push(work);
                    replies.push(reply);
                }
                Op::TrimHistory(reply) => trims.push(reply),
            }
        }
        if !works.is_empty() {
            let outcomes = self.commit(&works).await;
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                reply.send(outcome);
            }
        }
        for reply in trims {
            let _ = reply.send(self.trim_all().await);
        }
    }

    /// Commits `works` in one transaction (or one each if PostgreSQL refuses the batch).
    async fn commit(&mut self, works: &[Work]) -> Vec<Result<Done, StoreError>> {
        let client = match self.pool.get().await {
            Ok(client) => client,
            Err(error) => return fail_all(works, &self.health.pool_failed(&error)),
        };
        let outcomes = match tokio::time::timeout(BATCH_TIMEOUT, transaction(&client, works)).await
        {
            Ok(Ok(outcomes)) => outcomes,
            Ok(Err(error)) => {
                let _ = client.batch_execute("ROLLBACK").await;
                let sorted = self.health.failed(&error);
                if !matches!(sorted, StoreError::Database(_)) || works.len() == 1 {
                    tracing::error!(error = %sorted, writes = works.len(), "store commit failed; the batch is reported as failed");
                    return fail_all(works, &sorted);
                }
                tracing::warn!(error = %sorted, writes = works.len(), "PostgreSQL refused a batch; its writes are applied one by one");
                let mut outcomes = Vec::with_capacity(works.len());
                for work in works {
                    let single = std::slice::from_ref(work);
                    outcomes.push(match transaction(&client, single).await {
                        Ok(outcome) => outcome.into_iter().next().unwrap_or(Ok(Done::Unit)),
                        Err(error) => {
                            let _ = client.batch_execute("ROLLBACK").await;
                            Err(self.health.failed(&error))
                        }
                    });
                }
                outcomes
            }
            Err(_) => {
                // The connection's state is unknown: close it rather than reuse it.
                drop(Object::take(client));
                let error = StoreError::Unavailable(format!(
                    "PostgreSQL did not answer within {} s",
                    BATCH_TIMEOUT.as_secs()
                ));
                tracing::error!(%error, writes = works.len(), "store commit failed; the batch is reported as failed");
                return fail_all(works, &error);
            }
        };
        self.health.succeeded();
        for (work, outcome) in works.iter().zip(&outcomes) {
            match (work, outcome) {
                (Work::Value(write), Ok(_)) => self.trimmer.inserted(write.device_id, write.pin),
                (Work::DeleteDevice(device_id), Ok(_)) => self.trimmer.forget(*device_id),
                _ => {}
            }
        }
        outcomes
    }

    async fn trim_step(&mut self) -> Result<u64, StoreError> {
        let client = self
            .pool
            .get()
            .await
            .map_err(|error| self.health.pool_failed(&error))?;
        retention::step(&mut self.trimmer, &client, now_ms())
            .await
            .map_err(|error| self.health.failed(&error))
    }

    /// A sweep over every pin now, in bounded steps (other operations wait meanwhile).
    async fn trim_all(&mut self) -> Result<u64, StoreError> {
        self.trimmer.start_sweep();
        let mut deleted = 0;
        while self.trimmer.busy() {
            deleted += self.trim_step().await?;
        }
        Ok(deleted)
    }
}

fn fail_all(works: &[Work], error: &StoreError) -> Vec<Result<Done, StoreError>> {
    works.iter().map(|_| Err(error.clone())).collect()
}

/// Applies `works` in one transaction. The outer error aborts it (PostgreSQL refused a
/// statement or the connection failed); the inner ones are answers for one write (a name
/// taken, a template missing) that leave the rest to commit.
async fn transaction(
    client: &ClientWrapper,
    works: &[Work],
) -> Result<Vec<Result<Done, StoreError>>, tokio_postgres::Error> {
    client.batch_execute("BEGIN").await?;
    let mut outcomes = Vec::with_capacity(works.len());
    let mut values: Vec<&ValueWrite> = Vec::new();
    for work in works {
        if let Work::Value(write) = work {
            values.push(write);
            outcomes.push(Ok(Done::Unit));
            continue;
        }
        // Values queued before this operation are written before it, as if each had been
        // applied on its own.
        write_values(client, &values).await?;
        values.clear();
        outcomes.push(operations::apply(client, work).await?);
    }
    write_values(client, &values).await?;
    client.batch_execute("COMMIT").await?;
    Ok(outcomes)
}
