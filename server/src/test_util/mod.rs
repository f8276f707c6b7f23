//! Test support for every crate that tests against a real server (feature `test-util`, enabled
//! only by dev-dependencies): a server in the test's process on 127.0.0.1 with ephemeral ports
//! over a temporary data directory ([`TestServer`]) and an HTTP and app WebSocket client
//! ([`http`]). The real binary as a child process is `blynk_testbed::server`'s, shared with
//! xtask and the load generator.

pub mod http;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{Config, MqttPort};
use crate::model::Template;

/// The admin key every test server uses.
pub const ADMIN_KEY: &str = "test-admin-key-0123456789";

/// How long a test waits for something that should happen at once.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// A server on loopback with its own data directory.
pub struct TestServer {
    /// The server, `None` while stopped.
    pub server: Option<crate::Server>,
    /// Its data directory.
    pub data: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

/// Test configuration: loopback, ephemeral ports, generous rate limits unless a test lowers
/// them, and a clock the test moves forward ([`TestServer::advance`]) to pass a timeout.
pub fn test_config(data: &Path) -> Config {
    let mut config = Config {
        data_dir: data.to_path_buf(),
        bind: "127.0.0.1".parse().unwrap(),
        clock: crate::clock::Clock::manual(),
        ..Config::default()
    };
    config.http_port = 0;
    config.native_port = 0;
    config.mqtt_port = MqttPort::Ephemeral;
    config.limits.messages_per_second = 10_000;
    config.limits.message_burst = 10_000;
    config
}

impl TestServer {
    /// A server over a fresh data directory.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_path_buf();
        let mut server = Self::start_in(&data, test_config(&data)).await;
        server._dir = Some(dir);
        server
    }

    /// A server with a changed configuration.
    pub async fn start_with(change: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_path_buf();
        let mut config = test_config(&data);
        change(&mut config);
        let mut server = Self::start_in(&data, config).await;
        server._dir = Some(dir);
        server
    }

    /// A server over an existing data directory (a restart).
    pub async fn start_in(data: &Path, config: Config) -> Self {
        init_logs();
        let server = crate::start_with_admin_key(config, Some(ADMIN_KEY))
            .await
            .unwrap();
        TestServer {
            server: Some(server),
            data: data.to_path_buf(),
            _dir: None,
        }
    }

    /// The running server; panics while it is stopped.
    pub fn server(&self) -> &crate::Server {
        self.server.as_ref().expect("the server is stopped")
    }

    /// Moves the server's clock forward by `by`: its timers (heartbeat silence, the classic
    /// push grace, keep-alive, command TTLs) see that much time pass, at once.
    pub fn advance(&self, by: Duration) {
        self.server().engine().clock().advance(by);
    }

    /// Moves the server's clock forward by `step`, again every 50 ms, until `done` completes,
    /// and returns its output: a deadline the server started at a moment the test cannot know
    /// (a login deadline) passes in no real time. Panics after [`PATIENCE`].
    pub async fn advance_until<T>(&self, step: Duration, done: impl Future<Output = T>) -> T {
        let mut done = std::pin::pin!(done);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            self.advance(step);
            if let Ok(output) = tokio::time::timeout(Duration::from_millis(50), &mut done).await {
                return output;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nothing happened while the clock moved forward"
            );
        }
    }

    /// Where HTTP, the WebSockets and classic devices connect.
    pub fn http(&self) -> std::net::SocketAddr {
        self.server().http_address
    }

    /// Where native devices connect.
    pub fn native(&self) -> std::net::SocketAddr {
        self.server().native_address
    }

    /// Where MQTT devices connect.
    pub fn mqtt(&self) -> std::net::SocketAddr {
        self.server().mqtt_address.expect("MQTT is on in tests")
    }

    /// The demo device's token (template `light`: V0 0..1 sync, V1 0..255 sync, V2 unsynced,
    /// V3 string with default "auto" sync, V4 command).
    pub fn demo_token(&self) -> String {
        self.server().demo_token.clone().unwrap()
    }

    /// Adds a device of a template and returns its token.
    pub async fn add_device(&self, name: &str, template: &str) -> String {
        let engine = self.server().engine();
        let template = engine.find_template(template).unwrap();
        engine
            .create_device(name, &template)
            .await
            .unwrap()
            .device
            .token
            .clone()
    }

    /// Adds a template from TOML.
    pub async fn add_template(&self, toml_text: &str) {
        let template: Template = toml::from_str(toml_text).unwrap();
        self.server()
            .engine()
            .create_template(template)
            .await
            .unwrap();
    }

    /// Stops the server gracefully and returns its data directory.
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }

    /// Stops and starts again on the same data directory and configuration.
    pub async fn restart(&mut self) {
        self.stop().await;
        let data = self.data.clone();
        let mut config = test_config(&data);
        config.http_port = 0;
        let server = crate::start_with_admin_key(config, Some(ADMIN_KEY))
            .await
            .unwrap();
        self.server = Some(server);
    }
}

/// Shows the server's logs in test output when `BLYNK_LOG` is set (e.g. `BLYNK_LOG=debug`).
pub fn init_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("BLYNK_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
    });
}

/// Waits until `check` holds, polling; panics with `what` after [`PATIENCE`].
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every stored value of a pin of a device (its whole history), read through the server's engine.
pub async fn settle_history(
    server: &TestServer,
    device: i64,
    pin: blynk_proto::Pin,
) -> Vec<crate::model::HistoryPoint> {
    server
        .server()
        .engine()
        .recent_history(device, pin, 1_000_000)
        .await
        .unwrap()
}
