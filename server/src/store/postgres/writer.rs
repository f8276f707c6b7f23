//! The writer task: applies queued operations in call order and commits them in batches
//! (group commit) on one connection, so a thousand concurrent writes cost one commit. Values
//! are coalesced: a run of them becomes three array statements (history, latest values,
//! device versions), sent together. A batch is one transaction; if PostgreSQL refuses it
//! (not a lost connection), its operations are applied again one per transaction, so that
//! only the one at fault fails.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use blynk_proto::Pin;
use deadpool_postgres::{ClientWrapper, Object, Pool};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::ToSql;

use super::health::Health;
use super::retention;
use crate::model::{
    Device, DeviceId, EventRecord, PendingCommand, PropertyRecord, Template, TemplateId, now_ms,
};
use crate::store::retention::{Retention, Trimmer};
use crate::store::sqlite::EVENTS_PER_DEVICE;
use crate::store::{StoreError, ValueWrite};

/// Most operations applied in one transaction.
const MAX_BATCH: usize = 4096;
/// A batch that gets no answer for this long counts as lost: its connection is dropped (so
/// PostgreSQL rolls it back) and its operations fail as unavailable.
const BATCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Wait before the next trimming step after one failed (PostgreSQL away), instead of trying
/// again every few milliseconds.
const TRIM_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Where an operation's outcome goes.
pub(crate) type Sender<T> = oneshot::Sender<Result<T, StoreError>>;

/// One queued operation.
pub(super) enum Op {
    /// A write, applied in its place in the queue.
    Write(Work, Reply),
    /// A full retention pass, run after the batch that holds it; replies with the rows removed.
    TrimHistory(Sender<u64>),
}

/// What a write does.
pub(super) enum Work {
    Value(ValueWrite),
    SetSetting(String, String),
    CreateTemplate(Template),
    CreateDevice {
        name: String,
        template_id: TemplateId,
        token: String,
    },
    DeleteDevice(DeviceId),
    PutProperty(DeviceId, PropertyRecord),
    AppendEvent(DeviceId, EventRecord),
    AddPendingCommand(PendingCommand),
    RemovePendingCommand(i64),
    SetLastSeen(DeviceId, i64),
    Flush,
    /// Keeps the writer inside its transaction until the sender is dropped (tests: whatever
    /// is queued meanwhile lands in one batch).
    #[cfg(test)]
    Hold(std::sync::Mutex<Option<oneshot::Receiver<()>>>),
}

/// The ticket a write resolves.
pub(super) enum Reply {
    Unit(Sender<()>),
    Template(Sender<Template>),
    Device(Sender<Device>),
    Id(Sender<i64>),
}

/// What a write produced.
enum Done {
    Unit,
    Template(Template),
    Device(Device),
    Id(i64),
}

impl Reply {
    fn send(self, outcome: Result<Done, StoreError>) {
        let mismatch = || StoreError::Database("the store answered with the wrong kind".into());
        match self {
            Reply::Unit(sender) => {
                let _ = sender.send(outcome.map(drop));
            }
            Reply::Template(sender) => {
                let _ = sender.send(outcome.and_then(|done| match done {
                    Done::Template(template) => Ok(template),
                    _ => Err(mismatch()),
                }));
            }
            Reply::Device(sender) => {
                let _ = sender.send(outcome.and_then(|done| match done {
                    Done::Device(device) => Ok(device),
                    _ => Err(mismatch()),
                }));
            }
            Reply::Id(sender) => {
                let _ = sender.send(outcome.and_then(|done| match done {
                    Done::Id(id) => Ok(id),
                    _ => Err(mismatch()),
                }));
            }
        }
    }
}

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
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match queue.try_recv() {
                        Ok(op) => batch.push(op),
                        Err(_) => break,
                    }
                }
                self.apply(batch).await;
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
        outcomes.push(apply_one(client, work).await?);
    }
    write_values(client, &values).await?;
    client.batch_execute("COMMIT").await?;
    Ok(outcomes)
}

/// Every write goes to the history (the later of two with one version wins); per pin, the
/// highest version of those that become the latest value is upserted once, and never over a
/// higher version already there (another node's); per device, the highest version is recorded
/// once. The three statements are sent without waiting between
/// them.
async fn write_values(
    client: &ClientWrapper,
    writes: &[&ValueWrite],
) -> Result<(), tokio_postgres::Error> {
    if writes.is_empty() {
        return Ok(());
    }
    let mut history: HashMap<(DeviceId, Pin, u64), &ValueWrite> = HashMap::new();
    let mut latest: HashMap<(DeviceId, Pin), &ValueWrite> = HashMap::new();
    let mut versions: HashMap<DeviceId, i64> = HashMap::new();
    for write in writes {
        history.insert((write.device_id, write.pin, write.stored.version), write);
        if write.latest {
            latest
                .entry((write.device_id, write.pin))
                .and_modify(|best| {
                    if best.stored.version < write.stored.version {
                        *best = write;
                    }
                })
                .or_insert(write);
        }
        let version = write.stored.version as i64;
        versions
            .entry(write.device_id)
            .and_modify(|highest| *highest = (*highest).max(version))
            .or_insert(version);
    }
    let history = Columns::of(history.into_values());
    let latest = Columns::of(latest.into_values());
    let (devices, highest): (Vec<DeviceId>, Vec<i64>) = versions.into_iter().unzip();
    let (history_statement, latest_statement, version_statement) = tokio::try_join!(
        client.prepare_cached(
            "INSERT INTO history (device_id, pin, version, value, set_at, origin)
             SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::BIGINT[], $4::TEXT[], $5::BIGINT[], $6::TEXT[])
             ON CONFLICT (device_id, pin, version) DO UPDATE SET
               value = excluded.value, set_at = excluded.set_at, origin = excluded.origin",
        ),
        client.prepare_cached(
            "INSERT INTO latest_values (device_id, pin, version, value, set_at, origin)
             SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::BIGINT[], $4::TEXT[], $5::BIGINT[], $6::TEXT[])
             ON CONFLICT (device_id, pin) DO UPDATE SET
               value = excluded.value, version = excluded.version,
               set_at = excluded.set_at, origin = excluded.origin
             WHERE latest_values.version <= excluded.version",
        ),
        client.prepare_cached(
            "INSERT INTO device_versions (device_id, version)
             SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[])
             ON CONFLICT (device_id) DO UPDATE SET
               version = GREATEST(device_versions.version, excluded.version)",
        ),
    )?;
    let (history, latest) = (history.params(), latest.params());
    let versions: [&(dyn ToSql + Sync); 2] = [&devices, &highest];
    tokio::try_join!(
        client.execute(&history_statement, &history),
        client.execute(&latest_statement, &latest),
        client.execute(&version_statement, &versions),
    )?;
    Ok(())
}

/// Values as the columns of an `UNNEST`.
#[derive(Default)]
struct Columns {
    device_ids: Vec<DeviceId>,
    pins: Vec<String>,
    versions: Vec<i64>,
    values: Vec<String>,
    set_ats: Vec<i64>,
    origins: Vec<&'static str>,
}

impl Columns {
    fn of<'a>(writes: impl Iterator<Item = &'a ValueWrite>) -> Self {
        let mut columns = Columns::default();
        for write in writes {
            columns.device_ids.push(write.device_id);
            columns.pins.push(write.pin.to_string());
            columns.versions.push(write.stored.version as i64);
            columns.values.push(write.stored.value.to_store_text());
            columns.set_ats.push(write.stored.set_at);
            columns.origins.push(write.stored.origin.as_str());
        }
        columns
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 6] {
        [
            &self.device_ids,
            &self.pins,
            &self.versions,
            &self.values,
            &self.set_ats,
            &self.origins,
        ]
    }
}

/// Applies one operation other than a value.
async fn apply_one(
    client: &ClientWrapper,
    work: &Work,
) -> Result<Result<Done, StoreError>, tokio_postgres::Error> {
    match work {
        Work::Value(write) => write_values(client, &[write])
            .await
            .map(|()| Ok(Done::Unit)),
        Work::SetSetting(key, value) => {
            let statement = client
                .prepare_cached(
                    "INSERT INTO settings (key, value) VALUES ($1, $2)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )
                .await?;
            client.execute(&statement, &[key, value]).await?;
            Ok(Ok(Done::Unit))
        }
        Work::CreateTemplate(template) => create_template(client, template).await,
        Work::CreateDevice {
            name,
            template_id,
            token,
        } => create_device(client, name, *template_id, token).await,
        Work::DeleteDevice(device_id) => {
            // One statement: every data-modifying part of a WITH runs.
            let statement = client
                .prepare_cached(
                    "WITH latest AS (DELETE FROM latest_values WHERE device_id = $1),
                          past AS (DELETE FROM history WHERE device_id = $1),
                          props AS (DELETE FROM properties WHERE device_id = $1),
                          happened AS (DELETE FROM events WHERE device_id = $1),
                          commands AS (DELETE FROM pending_commands WHERE device_id = $1),
                          versions AS (DELETE FROM device_versions WHERE device_id = $1)
                     DELETE FROM devices WHERE id = $1",
                )
                .await?;
            client.execute(&statement, &[device_id]).await?;
            Ok(Ok(Done::Unit))
        }
        Work::PutProperty(device_id, property) => {
            let statement = client
                .prepare_cached(
                    "INSERT INTO properties (device_id, pin, name, value) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (device_id, pin, name) DO UPDATE SET value = excluded.value",
                )
                .await?;
            let (pin, value) = (property.pin.to_string(), property.value.to_store_text());
            client
                .execute(&statement, &[device_id, &pin, &property.name, &value])
                .await?;
            Ok(Ok(Done::Unit))
        }
        Work::AppendEvent(device_id, event) => {
            let insert = client
                .prepare_cached(
                    "INSERT INTO events (device_id, code, description, at) VALUES ($1, $2, $3, $4)",
                )
                .await?;
            let trim = client
                .prepare_cached(
                    "DELETE FROM events WHERE device_id = $1 AND id <= (
                       SELECT id FROM events WHERE device_id = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)",
                )
                .await?;
            let event: [&(dyn ToSql + Sync); 4] =
                [device_id, &event.code, &event.description, &event.at];
            let bound: [&(dyn ToSql + Sync); 2] = [device_id, &EVENTS_PER_DEVICE];
            tokio::try_join!(
                client.execute(&insert, &event),
                client.execute(&trim, &bound)
            )?;
            Ok(Ok(Done::Unit))
        }
        Work::AddPendingCommand(command) => {
            let (insert, raise) = tokio::try_join!(
                client.prepare_cached(
                    "INSERT INTO pending_commands (device_id, pin, value, version, expires_at)
                     VALUES ($1, $2, $3, $4, $5) RETURNING id",
                ),
                client.prepare_cached(
                    "INSERT INTO device_versions (device_id, version) VALUES ($1, $2)
                     ON CONFLICT (device_id) DO UPDATE SET
                       version = GREATEST(device_versions.version, excluded.version)",
                ),
            )?;
            let (pin, value) = (command.pin.to_string(), command.value.to_store_text());
            let version = command.version as i64;
            let row: [&(dyn ToSql + Sync); 5] = [
                &command.device_id,
                &pin,
                &value,
                &version,
                &command.expires_at,
            ];
            let raised: [&(dyn ToSql + Sync); 2] = [&command.device_id, &version];
            let (row, _) = tokio::try_join!(
                client.query_one(&insert, &row),
                client.execute(&raise, &raised),
            )?;
            Ok(Ok(Done::Id(row.try_get(0)?)))
        }
        Work::RemovePendingCommand(id) => {
            let statement = client
                .prepare_cached("DELETE FROM pending_commands WHERE id = $1")
                .await?;
            client.execute(&statement, &[id]).await?;
            Ok(Ok(Done::Unit))
        }
        Work::SetLastSeen(device_id, at) => {
            let statement = client
                .prepare_cached("UPDATE devices SET last_seen = $2 WHERE id = $1")
                .await?;
            client.execute(&statement, &[device_id, at]).await?;
            Ok(Ok(Done::Unit))
        }
        Work::Flush => Ok(Ok(Done::Unit)),
        #[cfg(test)]
        Work::Hold(held) => {
            let held = held.lock().ok().and_then(|mut held| held.take());
            if let Some(held) = held {
                let _ = held.await;
            }
            Ok(Ok(Done::Unit))
        }
    }
}

async fn create_template(
    client: &ClientWrapper,
    template: &Template,
) -> Result<Result<Done, StoreError>, tokio_postgres::Error> {
    let definitions = match template
        .datastreams
        .iter()
        .map(serde_json::to_string)
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(definitions) => definitions,
        Err(error) => return Ok(Err(StoreError::Database(error.to_string()))),
    };
    let row = client
        .query_opt(
            "INSERT INTO templates (name, created_at) VALUES ($1, $2)
             ON CONFLICT (name) DO NOTHING RETURNING id",
            &[&template.name, &now_ms()],
        )
        .await?;
    let Some(row) = row else {
        return Ok(Err(StoreError::Conflict(format!(
            "template `{}`",
            template.name
        ))));
    };
    let id: TemplateId = row.try_get(0)?;
    let positions: Vec<i32> = (0..definitions.len() as i32).collect();
    client
        .execute(
            "INSERT INTO datastreams (template_id, position, definition)
             SELECT $1, * FROM UNNEST($2::INTEGER[], $3::TEXT[])",
            &[&id, &positions, &definitions],
        )
        .await?;
    Ok(Ok(Done::Template(Template {
        id,
        ..template.clone()
    })))
}

async fn create_device(
    client: &ClientWrapper,
    name: &str,
    template_id: TemplateId,
    token: &str,
) -> Result<Result<Done, StoreError>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "INSERT INTO devices (name, template_id, token, created_at)
             SELECT $1, id, $3, $4 FROM templates WHERE id = $2
             ON CONFLICT (token) DO NOTHING RETURNING id",
            &[&name, &template_id, &token, &now_ms()],
        )
        .await?;
    let Some(row) = row else {
        let template = client
            .query_opt("SELECT 1 FROM templates WHERE id = $1", &[&template_id])
            .await?;
        return Ok(Err(match template {
            None => StoreError::NotFound(format!("template {template_id}")),
            Some(_) => StoreError::Conflict("a device with this token".into()),
        }));
    };
    Ok(Ok(Done::Device(Device {
        id: row.try_get(0)?,
        name: name.to_owned(),
        template_id,
        token: token.to_owned(),
        last_seen: None,
    })))
}
