//! `blynk-server`: the self-hosted, Blynk-compatible state-sync server.
//!
//! [`start`] opens the store, loads the engine, binds the ports and returns a [`Server`] handle;
//! tests start one on `127.0.0.1:0`. The binary (`main.rs`) adds the command line.

pub mod bootstrap;
pub mod clock;
pub mod config;
pub mod engine;
pub mod http;
pub mod keys;
pub mod limits;
pub mod login_limiter;
pub mod metrics;
pub mod model;
pub mod mqtt;
pub mod net;
pub mod private_files;
pub mod properties;
pub mod ready_file;
pub mod session;
pub mod store;
#[cfg(feature = "test-util")]
pub mod test_util;
pub mod token;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use config::{Config, DurabilitySetting, MqttPort, StoreLocation};
use engine::Engine;
use session::Context;
use store::Store;
use store::postgres::PostgresStore;
use store::sqlite::{Durability, SqliteStore};

/// The database file inside the data directory.
pub const DATABASE_FILE: &str = "blynk.sqlite3";

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory could not be created.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The engine could not load the store's state.
    #[error(transparent)]
    Engine(#[from] engine::EngineError),
    /// The store setting is wrong.
    #[error("store: {0}")]
    StoreSetting(String),
    /// The admin key could not be set up.
    #[error(transparent)]
    Keys(#[from] keys::KeyError),
    /// A port could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// TLS files are wrong.
    #[error(transparent)]
    Tls(#[from] net::tls::TlsError),
    /// The bus to the other nodes could not be joined.
    #[error(transparent)]
    Bus(#[from] engine::BusError),
    /// The configured timezone is not a known IANA zone.
    #[error("timezone `{name}` is not a known IANA zone (e.g. UTC, Europe/Berlin)")]
    Timezone {
        /// The configured name.
        name: String,
    },
}

/// A running server.
pub struct Server {
    /// Where HTTP, WebSockets and classic hardware connect.
    pub http_address: SocketAddr,
    /// Where native devices connect.
    pub native_address: SocketAddr,
    /// Where MQTT devices connect, unless MQTT is off.
    pub mqtt_address: Option<SocketAddr>,
    /// The admin key of the app API, when this start knows it: made now (first start) or given
    /// by the operator. Otherwise only its hash is stored.
    pub admin_key: Option<String>,
    /// The demo device's token, if it exists.
    pub demo_token: Option<String>,
    /// Whether this start created the admin key and the demo.
    pub first_start: bool,
    engine: Arc<Engine>,
    keys: Arc<keys::KeyRing>,
    context: Arc<Context>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

/// Connections waiting to be accepted per port. Tokio's `TcpListener::bind` asks for 1024; a
/// fleet reconnecting at once after an outage overflows that, and every refused SYN costs its
/// device a 1, 3, 7 s retransmission. The kernel caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 16_384;

/// Binds a listening socket with [`LISTEN_BACKLOG`].
fn listen(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // As `TcpListener::bind` does: a restart may rebind while old connections linger.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Binds the MQTT port, if MQTT is on. The standard port is only a default: when another
/// program (a broker) holds it, the server starts without MQTT and says so.
fn listen_mqtt(config: &Config) -> Result<Option<(TcpListener, SocketAddr)>, StartError> {
    let Some(port) = config.mqtt_port.resolve(config.tls.is_some()) else {
        return Ok(None);
    };
    let address = SocketAddr::new(config.bind, port);
    let bind_error = |source| StartError::Bind { address, source };
    let listener = match listen(address) {
        Ok(listener) => listener,
        Err(source)
            if config.mqtt_port == MqttPort::Standard
                && source.kind() == std::io::ErrorKind::AddrInUse =>
        {
            tracing::warn!(%address, "the MQTT port is in use by another program: MQTT is off (--mqtt-port moves it)");
            return Ok(None);
        }
        Err(source) => return Err(bind_error(source)),
    };
    let local = listener.local_addr().map_err(bind_error)?;
    Ok(Some((listener, local)))
}

/// Opens the configured store: SQLite in `config.data_dir` (created if missing), or the
/// PostgreSQL database of `config.store.url`.
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, StartError> {
    let retention = config.store.retention();
    match config.store.location().map_err(StartError::StoreSetting)? {
        StoreLocation::Postgres(url) => Ok(Arc::new(PostgresStore::open(&url, retention).await?)),
        StoreLocation::Sqlite => {
            std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
                path: config.data_dir.display().to_string(),
                source,
            })?;
            let durability = match config.durability {
                DurabilitySetting::Full => Durability::Full,
                DurabilitySetting::Process => Durability::Process,
            };
            Ok(Arc::new(SqliteStore::open_with_retention(
                &config.data_dir.join(DATABASE_FILE),
                durability,
                retention,
            )?))
        }
    }
}

/// Opens the configured store (see [`open_store`]), binds the ports and starts serving.
pub async fn start(config: Config) -> Result<Server, StartError> {
    start_with_admin_key(config, None).await
}

/// Like [`start`], with a fixed admin key: stored (hashed) in place of the one before, so
/// tests and tools that start a server know its key without reading the start banner.
pub async fn start_with_admin_key(
    config: Config,
    admin_key: Option<&str>,
) -> Result<Server, StartError> {
    let timezone = jiff::tz::TimeZone::get(&config.timezone).map_err(|_| StartError::Timezone {
        name: config.timezone.clone(),
    })?;
    // A wrong store setting fails before anything is bound.
    config.store.location().map_err(StartError::StoreSetting)?;
    private_files::prepare_data_dir(&config.data_dir).map_err(|source| StartError::DataDir {
        path: config.data_dir.display().to_string(),
        source,
    })?;
    let tls = match &config.tls {
        Some(files) => Some(net::tls::acceptor(&files.cert, &files.key)?),
        None => None,
    };
    let bind = |port: u16| SocketAddr::new(config.bind, port);
    let shared = listen(bind(config.http_port)).map_err(|source| StartError::Bind {
        address: bind(config.http_port),
        source,
    })?;
    let native = listen(bind(config.native_port)).map_err(|source| StartError::Bind {
        address: bind(config.native_port),
        source,
    })?;
    let mqtt = listen_mqtt(&config)?;
    // Only now that every port is bound: a start that fails before this leaves the store as a
    // clean shutdown left it.
    let store = open_store(&config).await?;
    let engine = Engine::open_with_clock(store, config.clock.clone()).await?;
    let (shutdown, shutdown_signal) = watch::channel(false);
    if let Some(url) = &config.bus {
        let settings = engine::BusSettings {
            url: url.clone(),
            heartbeat: Duration::from_secs(config.limits.default_heartbeat_seconds.max(1).into()),
        };
        engine.join_bus(settings, shutdown_signal.clone()).await?;
    }
    let boot = bootstrap::run(&engine, admin_key).await?;
    let mqtt_address = mqtt.as_ref().map(|(_, address)| *address);
    let http_address = shared.local_addr().map_err(|source| StartError::Bind {
        address: bind(config.http_port),
        source,
    })?;
    let native_address = native.local_addr().map_err(|source| StartError::Bind {
        address: bind(config.native_port),
        source,
    })?;

    let mut limits = config.limits.clone();
    limits.max_connections = net::file_limit::clamp_connections(limits.max_connections);
    let mut context = Context::new(engine.clone(), limits, shutdown_signal.clone(), tls);
    context.timezone = timezone;
    context.trusted_proxies = config.trusted_proxies.clone();
    let context = Arc::new(context);
    let state = http::AppState {
        engine: engine.clone(),
        context: context.clone(),
        keys: boot.keys.clone(),
        uploads: Arc::default(),
        metrics_token: config
            .metrics_token
            .as_deref()
            .filter(|token| !token.is_empty())
            .map(Arc::from),
        device_rates: Arc::new(http::DeviceRates::new(&config.limits)),
    };
    let router = http::router(state);
    let mut tasks = JoinSet::new();
    tasks.spawn(net::listener::run_native(native, context.clone()));
    tasks.spawn(net::listener::run_shared(shared, context.clone(), router));
    if let Some((listener, _)) = mqtt {
        let broker = Arc::new(mqtt::Mqtt::new(context.clone()));
        tasks.spawn(net::listener::run_mqtt(listener, broker));
    }
    tasks.spawn(engine.clone().run_command_expiry(shutdown_signal.clone()));
    if config.bus.is_none() {
        // With a bus, the other nodes say when they add a template or a device.
        tasks.spawn(engine.clone().run_refresh(shutdown_signal.clone()));
    }
    tasks.spawn(
        boot.keys
            .clone()
            .run_reload(engine.clock().clone(), shutdown_signal.clone()),
    );
    tracing::info!(%http_address, %native_address, ?mqtt_address, "server listening");
    Ok(Server {
        http_address,
        native_address,
        mqtt_address,
        admin_key: boot.admin_key,
        demo_token: boot.demo_token,
        first_start: boot.first_start,
        engine,
        keys: boot.keys,
        context,
        shutdown,
        tasks,
    })
}

impl Server {
    /// The engine, for tests and tools in the same process.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The API keys, for tests and tools in the same process.
    pub fn keys(&self) -> &Arc<keys::KeyRing> {
        &self.keys
    }

    /// Stops accepting, closes every session, and waits until everything acknowledged is durable.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        // Sessions hold a slot of the connection cap each: once all slots are back, all are gone.
        let all = u32::try_from(self.context.limits.max_connections).unwrap_or(u32::MAX);
        let drained = tokio::time::timeout(
            Duration::from_secs(5),
            self.context.connections.acquire_many(all),
        )
        .await;
        if drained.is_err() {
            tracing::warn!("some connections did not close within 5 s");
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        self.engine.close().await;
        if let Err(error) = self.engine.flush().await {
            tracing::error!(%error, "final store flush failed");
        }
        tracing::info!("server stopped");
    }
}
