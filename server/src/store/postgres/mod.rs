//! The PostgreSQL store, for nodes that share one database. Writes go to one writer task that
//! applies them in call order and commits them in batches (group commit, see [`writer`]) on one
//! connection; reads run on a small pool of other connections, so they never wait behind
//! queued writes. Connections are made again by themselves after PostgreSQL restarts; while it
//! is unreachable, tickets fail at once with [`StoreError::Unavailable`]. The schema comes from
//! the SQL files in `server/migrations/postgres`, applied at start.

mod cluster;
mod health;
mod operations;
mod reader;
mod retention;
#[cfg(test)]
mod tests;
mod values;
mod work;
mod writer;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use blynk_proto::Pin;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::NoTls;

use self::health::Health;
use self::work::{Op, Reply, Sender, Work};
use self::writer::Writer;
use super::retention::Retention;
use super::{Claim, Lease, Snapshot, Store, StoreError, Ticket, ValueWrite};
use crate::model::{
    Device, DeviceId, EventRecord, HistoryPoint, PendingCommand, PropertyRecord, Template,
    TemplateId,
};

/// Connections the reads share.
const READ_CONNECTIONS: usize = 4;
/// How long making a connection may take before the request fails as unavailable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a read may wait for a connection and its answer before it fails as unavailable.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// A connection whose peer vanished without closing it (a network cut, a crashed host) is
/// closed by the kernel after this long without an answer, instead of hanging.
const DEAD_PEER_AFTER: Duration = Duration::from_secs(30);

/// The migrations, read from `server/migrations/postgres` at build time.
mod embedded {
    refinery::embed_migrations!("migrations/postgres");
}

/// The PostgreSQL store handle; cheap to share behind an `Arc`.
pub struct PostgresStore {
    writes: mpsc::UnboundedSender<Op>,
    reads: Pool,
    health: Arc<Health>,
    runtime: tokio::runtime::Handle,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host:port/database`), applies the
    /// migrations the database lacks, and starts the writer on the current Tokio runtime.
    pub async fn open(url: &str, retention: Retention) -> Result<Self, StoreError> {
        let mut config = tokio_postgres::Config::from_str(url).map_err(|error| {
            StoreError::Database(format!("the PostgreSQL URL is not valid: {error}"))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("blynk-server");
        }
        // Unless the URL says otherwise: probe idle connections after 10 s, and give up on
        // unanswered sends after [`DEAD_PEER_AFTER`].
        if config.get_keepalives_idle() == Duration::from_secs(2 * 3600) {
            config.keepalives_idle(Duration::from_secs(10));
            config.keepalives_interval(Duration::from_secs(5));
            config.keepalives_retries(4);
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(DEAD_PEER_AFTER);
        }
        migrate(&config).await?;
        let health = Arc::new(Health::default());
        let writes_pool = pool(config.clone(), 1)?;
        let reads = pool(config, READ_CONNECTIONS)?;
        let (writes, queue) = mpsc::unbounded_channel();
        tokio::spawn(Writer::new(writes_pool, retention, health.clone()).run(queue));
        Ok(PostgresStore {
            writes,
            reads,
            health,
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// Runs a full retention pass now, in bounded steps, after everything queued before it;
    /// resolves with the number of history rows removed.
    pub fn trim_history(&self) -> Ticket<u64> {
        let (reply, ticket) = oneshot::channel();
        let _ = self.writes.send(Op::TrimHistory(reply));
        ticket
    }

    /// Holds the writer inside a transaction until the returned sender is dropped, so that
    /// everything queued meanwhile lands in one batch.
    #[cfg(test)]
    pub(crate) fn hold_writer(&self) -> (oneshot::Sender<()>, Ticket) {
        let (release, held) = oneshot::channel::<()>();
        let work = Work::Hold(std::sync::Mutex::new(Some(held)));
        (release, self.submit(work, Reply::Unit))
    }

    /// Queues `work`; its ticket resolves once the batch holding it has committed.
    fn submit<T>(&self, work: Work, reply: fn(Sender<T>) -> Reply) -> Ticket<T> {
        let (sender, ticket) = oneshot::channel();
        // When the writer task is gone the sender is dropped with the operation, so the
        // ticket resolves at once to `StoreError::Closed` instead of hanging.
        let _ = self.writes.send(Op::Write(work, reply(sender)));
        ticket
    }

    /// Runs `work` on a read connection; it sees every committed write.
    fn read<T, F, Fut>(&self, work: F) -> Ticket<T>
    where
        T: Send + 'static,
        F: FnOnce(deadpool_postgres::Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, tokio_postgres::Error>> + Send,
    {
        let (reply, ticket) = oneshot::channel();
        let (pool, health) = (self.reads.clone(), self.health.clone());
        self.runtime.spawn(async move {
            let attempt = async {
                match pool.get().await {
                    Ok(client) => work(client).await.map_err(|error| health.failed(&error)),
                    Err(error) => Err(health.pool_failed(&error)),
                }
            };
            let outcome = tokio::time::timeout(READ_TIMEOUT, attempt)
                .await
                .unwrap_or_else(|_| {
                    Err(StoreError::Unavailable(format!(
                        "PostgreSQL did not answer within {} s",
                        READ_TIMEOUT.as_secs()
                    )))
                });
            if outcome.is_ok() {
                health.succeeded();
            }
            let _ = reply.send(outcome);
        });
        ticket
    }
}

/// A pool of at most `size` connections, each checked for a closed socket before reuse (a
/// restart of PostgreSQL closes them all; the next request makes new ones).
fn pool(config: tokio_postgres::Config, size: usize) -> Result<Pool, StoreError> {
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .map_err(|error| StoreError::Database(error.to_string()))
}

/// Applies the migrations the database lacks, under an advisory lock so that nodes starting
/// together apply each once.
async fn migrate(config: &tokio_postgres::Config) -> Result<(), StoreError> {
    /// Any constant shared by every node: the lock's key.
    const MIGRATION_LOCK: i64 = 0x0062_6c79_6e6b;
    let (mut client, connection) = config.connect(NoTls).await.map_err(|error| {
        StoreError::Unavailable(format!("cannot connect to PostgreSQL: {error}"))
    })?;
    let connection = tokio::spawn(connection);
    let locked = client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|error| StoreError::Database(error.to_string()));
    let migrated = match locked {
        Ok(_) => embedded::migrations::runner()
            .run_async(&mut client)
            .await
            .map(|report| {
                for migration in report.applied_migrations() {
                    tracing::info!(%migration, "PostgreSQL schema migrated");
                }
            })
            .map_err(|error| StoreError::Database(format!("schema migration failed: {error}"))),
        Err(error) => Err(error),
    };
    // Closing the session releases the lock.
    drop(client);
    let _ = connection.await;
    migrated
}

impl Store for PostgresStore {
    fn load(&self) -> Ticket<Snapshot> {
        self.read(|client| async move { reader::load(&client).await })
    }

    fn setting(&self, key: &str) -> Ticket<Option<String>> {
        let key = key.to_owned();
        self.read(move |client| async move { reader::setting(&client, &key).await })
    }

    fn set_setting(&self, key: &str, value: &str) -> Ticket {
        self.submit(
            Work::SetSetting(key.to_owned(), value.to_owned()),
            Reply::Unit,
        )
    }

    fn settings_with_prefix(&self, prefix: &str) -> Ticket<Vec<(String, String)>> {
        let prefix = prefix.to_owned();
        self.read(move |client| async move { reader::settings_with_prefix(&client, &prefix).await })
    }

    fn create_template(&self, template: Template) -> Ticket<Template> {
        self.submit(Work::CreateTemplate(template), Reply::Template)
    }

    fn create_device(&self, name: &str, template_id: TemplateId, token: &str) -> Ticket<Device> {
        self.submit(
            Work::CreateDevice {
                name: name.to_owned(),
                template_id,
                token: token.to_owned(),
            },
            Reply::Device,
        )
    }

    fn delete_device(&self, device_id: DeviceId) -> Ticket {
        self.submit(Work::DeleteDevice(device_id), Reply::Unit)
    }

    fn put_value(&self, write: ValueWrite) -> Ticket {
        self.submit(Work::Value(write), Reply::Unit)
    }

    fn put_property(&self, device_id: DeviceId, property: PropertyRecord) -> Ticket {
        self.submit(Work::PutProperty(device_id, property), Reply::Unit)
    }

    fn append_event(&self, device_id: DeviceId, event: EventRecord) -> Ticket {
        self.submit(Work::AppendEvent(device_id, event), Reply::Unit)
    }

    fn add_pending_command(&self, command: PendingCommand) -> Ticket<i64> {
        self.submit(Work::AddPendingCommand(command), Reply::Id)
    }

    fn remove_pending_command(&self, id: i64) -> Ticket {
        self.submit(Work::RemovePendingCommand(id), Reply::Unit)
    }

    fn set_last_seen(&self, device_id: DeviceId, at: i64) -> Ticket {
        self.submit(Work::SetLastSeen(device_id, at), Reply::Unit)
    }

    fn history(&self, device_id: DeviceId, pin: Pin, limit: usize) -> Ticket<Vec<HistoryPoint>> {
        self.read(
            move |client| async move { reader::history(&client, device_id, pin, limit).await },
        )
    }

    fn events(&self, device_id: DeviceId, limit: usize) -> Ticket<Vec<EventRecord>> {
        self.read(move |client| async move { reader::events(&client, device_id, limit).await })
    }

    fn created_since(
        &self,
        template_id: TemplateId,
        device_id: DeviceId,
    ) -> Ticket<(Vec<Template>, Vec<Device>)> {
        self.read(move |client| async move {
            reader::created_since(&client, template_id, device_id).await
        })
    }

    fn flush(&self) -> Ticket {
        self.submit(Work::Flush, Reply::Unit)
    }

    fn claim_device(&self, device_id: DeviceId, node: &str) -> Ticket<Claim> {
        let node = node.to_owned();
        self.read(move |client| cluster::claim(client, device_id, node))
    }

    fn release_device(&self, device_id: DeviceId, node: &str, version: u64) -> Ticket {
        let node = node.to_owned();
        self.read(move |client| cluster::release(client, device_id, node, version))
    }

    fn take_version(&self, device_id: DeviceId, node: &str) -> Ticket<Option<u64>> {
        let node = node.to_owned();
        self.read(move |client| cluster::take_version(client, device_id, node))
    }

    fn renew_lease(&self, node: &str, ttl_ms: i64, reap: bool) -> Ticket<Lease> {
        let node = node.to_owned();
        self.read(move |client| cluster::renew_lease(client, node, ttl_ms, reap))
    }

    fn held_devices(&self) -> Ticket<Vec<(DeviceId, String)>> {
        self.read(cluster::held_devices)
    }

    fn claim_command(&self, id: i64) -> Ticket<bool> {
        self.read(move |client| cluster::claim_command(client, id))
    }
}
