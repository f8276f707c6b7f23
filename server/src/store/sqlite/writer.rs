//! The writer thread: applies queued operations in call order and commits them in batches
//! (group commit), so a thousand concurrent writes cost one fsync. Value writes are typed, so
//! that a batch writes one latest-value row per pin and appends its history in multi-row
//! statements, however many writes it holds.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::time::Instant;

use blynk_proto::Pin;
use rusqlite::types::ToSql;
use rusqlite::{Connection, params};
use tokio::sync::oneshot;

use super::database;
use super::retention;
use crate::metrics::StoreMetrics;
use crate::model::{DeviceId, now_ms};
use crate::store::retention::{Retention, Trimmer};
use crate::store::{StoreError, ValueWrite};

/// Most operations applied in one transaction.
const MAX_BATCH: usize = 4096;
/// Most rows in one multi-row statement: 128 rows of 6 columns stay under 999 variables, the
/// smallest limit SQLite was ever built with.
const ROWS_PER_STATEMENT: usize = 128;

/// Reports the outcome of an operation once its batch has committed (or failed to).
pub(super) type Completion = Box<dyn FnOnce(Option<&StoreError>) + Send>;
/// Work run inside a batch's transaction; given the error instead when the batch could not
/// begin.
pub(super) type Job = Box<dyn FnOnce(Result<&mut Writer, &StoreError>) -> Completion + Send>;

/// One queued operation.
pub(super) enum Op {
    /// A value: coalesced with the batch's other values.
    Value(ValueWrite, oneshot::Sender<Result<(), StoreError>>),
    /// Anything else, applied in its place in the queue.
    Job(Job),
    /// A full retention pass, run after the batch that holds it; replies with the rows removed.
    TrimHistory(oneshot::Sender<Result<u64, StoreError>>),
}

/// The writer thread's state.
pub(super) struct Writer {
    pub(super) connection: Connection,
    trimmer: Trimmer,
    metrics: Arc<StoreMetrics>,
    history_insert: MultiRow,
    latest_upsert: MultiRow,
    version_upsert: MultiRow,
}

/// Values of a batch waiting to be written together.
#[derive(Default)]
struct PendingValues {
    writes: Vec<ValueWrite>,
    replies: Vec<oneshot::Sender<Result<(), StoreError>>>,
}

/// A value as its row holds it.
struct ValueRow {
    device_id: DeviceId,
    pin: String,
    version: i64,
    value: String,
    set_at: i64,
    origin: &'static str,
}

impl ValueRow {
    /// The row's columns in the order both value statements name them.
    fn bind<'a>(&'a self, params: &mut Vec<&'a dyn ToSql>) {
        params.extend([
            &self.device_id as &dyn ToSql,
            &self.pin,
            &self.version,
            &self.value,
            &self.set_at,
            &self.origin,
        ]);
    }
}

impl Writer {
    pub(super) fn new(
        connection: Connection,
        retention: Retention,
        metrics: Arc<StoreMetrics>,
    ) -> Self {
        connection.set_prepared_statement_cache_capacity(64);
        Writer {
            connection,
            metrics,
            trimmer: Trimmer::new(retention),
            history_insert: MultiRow::new(
                "INSERT OR REPLACE INTO history (device_id, pin, version, value, set_at, origin) VALUES",
                6,
                "",
            ),
            latest_upsert: MultiRow::new(
                "INSERT INTO latest_values (device_id, pin, version, value, set_at, origin) VALUES",
                6,
                "ON CONFLICT (device_id, pin) DO UPDATE SET
                   value = excluded.value, version = excluded.version,
                   set_at = excluded.set_at, origin = excluded.origin
                 WHERE excluded.version > latest_values.version",
            ),
            version_upsert: MultiRow::new(
                "INSERT INTO device_versions (device_id, version) VALUES",
                2,
                "ON CONFLICT (device_id) DO UPDATE SET version = max(version, excluded.version)",
            ),
        }
    }

    /// Runs until every sender of `queue` is gone: batches as they come, trimming steps
    /// between them when due.
    pub(super) fn run(mut self, queue: mpsc::Receiver<Op>) {
        loop {
            let first = match self.trimmer.next_step_in(Instant::now()) {
                Some(wait) => match queue.recv_timeout(wait) {
                    Ok(op) => Some(op),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                },
                None => match queue.recv() {
                    Ok(op) => Some(op),
                    Err(_) => return,
                },
            };
            if let Some(first) = first {
                // The first op, and the ones already queued behind it.
                let queued = std::iter::from_fn(|| queue.try_recv().ok());
                let batch = std::iter::once(first).chain(queued).take(MAX_BATCH);
                self.apply(batch.collect());
            }
            if self.trimmer.step_due(Instant::now()) {
                self.trim_step();
            }
        }
    }

    /// Applies a batch in one transaction, then reports every outcome.
    fn apply(&mut self, batch: Vec<Op>) {
        let started = Instant::now();
        let operations = batch.len();
        let began = self
            .connection
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(database);
        if let Err(error) = &began {
            tracing::error!(%error, "store transaction could not begin; the batch is reported as failed");
        }
        let mut completions: Vec<Completion> = Vec::with_capacity(batch.len());
        let mut pending = PendingValues::default();
        let mut trims = Vec::new();
        for op in batch {
            match (op, &began) {
                (Op::Value(write, reply), Ok(())) => {
                    pending.writes.push(write);
                    pending.replies.push(reply);
                }
                (Op::Value(_, reply), Err(error)) => {
                    let _ = reply.send(Err(error.clone()));
                }
                (Op::Job(job), Ok(())) => {
                    // Values queued before this operation are written before it, as if each
                    // had been applied on its own.
                    completions.push(self.write_pending(&mut pending));
                    completions.push(job(Ok(self)));
                }
                (Op::Job(job), Err(error)) => completions.push(job(Err(error))),
                (Op::TrimHistory(reply), _) => trims.push(reply),
            }
        }
        let committed = began.and_then(|()| {
            completions.push(self.write_pending(&mut pending));
            self.connection.execute_batch("COMMIT").map_err(database)
        });
        if let Err(error) = &committed {
            tracing::error!(%error, "store commit failed; the batch is reported as failed");
            let _ = self.connection.execute_batch("ROLLBACK");
        }
        self.metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.batch_size.observe(operations as f64);
        for completion in completions {
            completion(committed.as_ref().err());
        }
        self.metrics
            .done
            .fetch_add(operations as u64, Ordering::Relaxed);
        for reply in trims {
            let _ = reply.send(self.trim_all());
        }
    }

    /// Writes the pending values (within the batch's transaction) and returns what reports
    /// their outcome after the commit.
    fn write_pending(&mut self, pending: &mut PendingValues) -> Completion {
        let writes = std::mem::take(&mut pending.writes);
        let replies = std::mem::take(&mut pending.replies);
        if writes.is_empty() {
            return Box::new(|_| {});
        }
        let written = self.write_values(&writes).map_err(database);
        if written.is_ok() {
            for write in &writes {
                self.trimmer.inserted(write.device_id, write.pin);
            }
        } else if let Err(error) = &written {
            tracing::error!(%error, values = writes.len(), "storing values failed");
        }
        Box::new(move |commit_error| {
            for reply in replies {
                let outcome = match (commit_error, &written) {
                    (Some(error), _) => Err(error.clone()),
                    (None, Err(error)) => Err(error.clone()),
                    (None, Ok(())) => Ok(()),
                };
                let _ = reply.send(outcome);
            }
        })
    }

    /// Every write goes to the history; per pin, the highest version of those that become
    /// the latest value is upserted once; per device, the highest version is recorded once.
    /// All or nothing: a failure leaves none of them in the transaction.
    fn write_values(&mut self, writes: &[ValueWrite]) -> rusqlite::Result<()> {
        let rows: Vec<ValueRow> = writes.iter().map(ValueRow::from).collect();
        let mut latest: HashMap<(DeviceId, Pin), usize> = HashMap::new();
        let mut versions: HashMap<DeviceId, i64> = HashMap::new();
        for (index, write) in writes.iter().enumerate() {
            let row = &rows[index];
            if write.latest {
                latest
                    .entry((write.device_id, write.pin))
                    .and_modify(|best| {
                        if rows[*best].version < row.version {
                            *best = index;
                        }
                    })
                    .or_insert(index);
            }
            versions
                .entry(write.device_id)
                .and_modify(|highest| *highest = (*highest).max(row.version))
                .or_insert(row.version);
        }
        let latest_rows: Vec<&ValueRow> = latest.into_values().map(|index| &rows[index]).collect();
        let version_rows: Vec<(DeviceId, i64)> = versions.into_iter().collect();
        let connection = &self.connection;
        connection.execute_batch("SAVEPOINT value_writes")?;
        let written = self
            .history_insert
            .execute(connection, &rows, ValueRow::bind)
            .and_then(|()| {
                self.latest_upsert
                    .execute(connection, &latest_rows, |row, params| row.bind(params))
            })
            .and_then(|()| {
                self.version_upsert.execute(
                    connection,
                    &version_rows,
                    |(device_id, version), params| {
                        params.extend([device_id as &dyn ToSql, version])
                    },
                )
            });
        if written.is_err() {
            let _ = connection.execute_batch("ROLLBACK TO value_writes");
        }
        connection.execute_batch("RELEASE value_writes")?;
        written
    }

    /// Records that `version` was handed out for `device_id` (for writes that are not values,
    /// such as pending commands).
    pub(super) fn raise_version(&self, device_id: DeviceId, version: u64) -> rusqlite::Result<()> {
        self.connection
            .prepare_cached(
                "INSERT INTO device_versions (device_id, version) VALUES (?1, ?2)
                 ON CONFLICT (device_id) DO UPDATE SET version = max(version, excluded.version)",
            )?
            .execute(params![device_id, version as i64])
            .map(drop)
    }

    /// Deletes a device and everything stored for it.
    pub(super) fn delete_device(&mut self, device_id: DeviceId) -> rusqlite::Result<()> {
        for table in [
            "latest_values",
            "history",
            "properties",
            "events",
            "pending_commands",
            "device_versions",
        ] {
            self.connection.execute(
                &format!("DELETE FROM {table} WHERE device_id = ?1"),
                [device_id],
            )?;
        }
        self.connection
            .execute("DELETE FROM devices WHERE id = ?1", [device_id])?;
        self.trimmer.forget(device_id);
        Ok(())
    }

    fn trim_step(&mut self) -> u64 {
        match retention::step(&mut self.trimmer, &self.connection, now_ms()) {
            Ok(deleted) => deleted,
            Err(error) => {
                tracing::warn!(%error, "history trimming step failed; it is tried again later");
                0
            }
        }
    }

    /// A sweep over every pin now, in bounded steps (other operations wait meanwhile).
    fn trim_all(&mut self) -> Result<u64, StoreError> {
        self.trimmer.start_sweep();
        let mut deleted = 0;
        while self.trimmer.busy() {
            deleted +=
                retention::step(&mut self.trimmer, &self.connection, now_ms()).map_err(database)?;
        }
        Ok(deleted)
    }
}

impl From<&ValueWrite> for ValueRow {
    fn from(write: &ValueWrite) -> Self {
        ValueRow {
            device_id: write.device_id,
            pin: write.pin.to_string(),
            version: write.stored.version as i64,
            value: write.stored.value.to_store_text(),
            set_at: write.stored.set_at,
            origin: write.stored.origin.as_str(),
        }
    }
}

/// An `INSERT` of many rows in one statement. Rows go in chunks whose sizes are powers of two,
/// so that only a handful of distinct statements are ever prepared (and stay cached).
struct MultiRow {
    /// The statement for 2^i rows at index i.
    by_power: Vec<String>,
}

impl MultiRow {
    fn new(head: &str, columns: usize, tail: &str) -> Self {
        let tuple = format!("({})", vec!["?"; columns].join(", "));
        let mut by_power = Vec::new();
        let mut rows = 1;
        while rows <= ROWS_PER_STATEMENT {
            by_power.push(format!(
                "{head} {} {tail}",
                vec![tuple.as_str(); rows].join(", ")
            ));
            rows *= 2;
        }
        MultiRow { by_power }
    }

    fn execute<'a, R>(
        &self,
        connection: &Connection,
        rows: &'a [R],
        bind: impl Fn(&'a R, &mut Vec<&'a dyn ToSql>),
    ) -> rusqlite::Result<()> {
        let mut rest = rows;
        let mut params = Vec::new();
        while !rest.is_empty() {
            let power =
                (usize::BITS - 1 - rest.len().min(ROWS_PER_STATEMENT).leading_zeros()) as usize;
            let (chunk, after) = rest.split_at(1 << power);
            params.clear();
            for row in chunk {
                bind(row, &mut params);
            }
            connection
                .prepare_cached(&self.by_power[power])?
                .execute(params.as_slice())?;
            rest = after;
        }
        Ok(())
    }
}
