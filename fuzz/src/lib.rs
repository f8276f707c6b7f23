//! What the server targets share: one in-process server (store in a temporary directory,
//! engine, session context, HTTP router) built once per fuzzing process, and a way to feed
//! one device connection's bytes to a session through an in-memory stream.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use blynk_server::config::Limits;
use blynk_server::engine::Engine;
use blynk_server::session::Context;
use blynk_server::store::Store;
use blynk_server::store::sqlite::{Durability, SqliteStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

/// The server every iteration of a process talks to.
pub struct Harness {
    /// A current-thread runtime: one iteration at a time, no scheduling noise.
    pub runtime: Runtime,
    /// The sessions' context.
    pub context: Arc<Context>,
    /// The HTTP routes of the shared port.
    pub router: axum::Router,
    /// The demo device's token.
    pub token: String,
    _shutdown: tokio::sync::watch::Sender<bool>,
    _data: tempfile::TempDir,
}

/// The address every fuzzed connection comes from.
pub const PEER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40000);

/// How long one connection may take before the run counts as a hang.
const SESSION_DEADLINE: Duration = Duration::from_secs(20);

impl Harness {
    /// The process's harness, built on first use.
    pub fn get() -> &'static Harness {
        static HARNESS: OnceLock<Harness> = OnceLock::new();
        HARNESS.get_or_init(Harness::build)
    }

    fn build() -> Harness {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let data = tempfile::tempdir().expect("a temporary directory");
        let (context, router, token, shutdown) = runtime.block_on(async {
            let store: Arc<dyn Store> = Arc::new(
                SqliteStore::open(&data.path().join("fuzz.sqlite3"), Durability::Process)
                    .expect("a store"),
            );
            let engine = Engine::open(store).await.expect("an engine");
            let boot = blynk_server::bootstrap::run(&engine, Some("fuzz-admin-key-0123456789"))
                .await
                .expect("the demo device");
            // Limits that let every input reach the frame handlers: no lock-out of the one
            // peer address after failed logins, no rate limit across iterations.
            let limits = Limits {
                failed_logins_per_minute: u32::MAX,
                messages_per_second: 1_000_000,
                message_burst: 1_000_000,
                ..Limits::default()
            };
            let (shutdown, signal) = tokio::sync::watch::channel(false);
            let context = Arc::new(Context::new(engine.clone(), limits.clone(), signal, None));
            let state = blynk_server::http::AppState {
                engine,
                context: context.clone(),
                keys: boot.keys.clone(),
                uploads: Arc::default(),
                metrics_token: None,
                device_rates: Arc::new(blynk_server::http::DeviceRates::new(&limits)),
            };
            let router = blynk_server::http::router(state);
            (
                context,
                router,
                boot.demo_token.expect("a demo token"),
                shutdown,
            )
        });
        Harness {
            runtime,
            context,
            router,
            token,
            _shutdown: shutdown,
            _data: data,
        }
    }

    /// What one connection sends, from a target's input: when the first byte's low bit is 1,
    /// `login` first writes a valid login of the demo device (given its token); then the rest
    /// of the input. None for an empty input.
    pub fn input(&self, data: &[u8], login: impl FnOnce(&str, &mut Vec<u8>)) -> Option<Vec<u8>> {
        let (&mode, bytes) = data.split_first()?;
        let mut input = Vec::with_capacity(bytes.len() + 128);
        if mode & 1 == 1 {
            login(&self.token, &mut input);
        }
        input.extend_from_slice(bytes);
        Some(input)
    }

    /// Runs one device connection: `serve` gets the server's end of an in-memory stream, the
    /// client's end sends `input` and closes, and everything the server sends is read (and
    /// dropped) until it closes too. A session that outlives the deadline is a hang: a panic.
    pub fn connection<F, Fut>(&self, input: &[u8], serve: F)
    where
        F: FnOnce(tokio::io::DuplexStream, Arc<Context>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (client, server_end) = tokio::io::duplex(64 * 1024);
        let session = serve(server_end, self.context.clone());
        self.runtime.block_on(async {
            let session = tokio::spawn(session);
            let (mut from_server, mut to_server) = tokio::io::split(client);
            let send = async move {
                // The session may close first (a refused login): later writes then fail.
                let _ = to_server.write_all(input).await;
                let _ = to_server.shutdown().await;
            };
            let drain = async move {
                let mut sink = vec![0u8; 16 * 1024];
                while matches!(from_server.read(&mut sink).await, Ok(read) if read > 0) {}
            };
            let everything = async {
                tokio::join!(send, drain);
                session.await.expect("the session task does not panic");
            };
            tokio::time::timeout(SESSION_DEADLINE, everything)
                .await
                .expect("the session ends once the client has closed");
        });
    }
}
