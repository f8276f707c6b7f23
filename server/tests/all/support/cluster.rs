//! Several nodes in one test: where they keep their state ([`Store`]: one SQLite file, or a
//! PostgreSQL database), in-process nodes on it and a real nats-server, and what the multi-node
//! tests ask of them (a device as a node shows it, presence, writes through a node, the values a
//! device receives).

use std::time::Duration;

use blynk_proto::Pin;
use blynk_server::config::Config;
use blynk_testbed::NatsServer;
use serde_json::{Value, json};

use super::http::app;
use super::native::{NativeClient, Received};
use super::{PATIENCE, TestServer, nats_server, test_config};

/// Where the nodes of a test keep their state: one SQLite file in a temporary directory, or a
/// PostgreSQL database (each node keeps its own data directory then, holding nothing shared).
pub struct Store {
    pub dir: tempfile::TempDir,
    url: Option<String>,
}

impl Store {
    pub fn sqlite() -> Self {
        Store {
            dir: tempfile::tempdir().unwrap(),
            url: None,
        }
    }

    pub fn postgres(url: String) -> Self {
        Store {
            dir: tempfile::tempdir().unwrap(),
            url: Some(url),
        }
    }

    /// The node configuration file's lines for this store (the whole history kept).
    pub fn toml(&self) -> String {
        match &self.url {
            None => "[store]\nhistory_per_pin = 0\n".to_owned(),
            Some(url) => format!("[store]\nhistory_per_pin = 0\nurl = {url:?}\n"),
        }
    }

    /// An in-process node's configuration on this store and `bus`.
    pub fn config(&self, bus: &str, heartbeat: u16) -> Config {
        let mut config = test_config(self.dir.path());
        config.bus = Some(bus.to_owned());
        config.limits.default_heartbeat_seconds = heartbeat;
        config.store.history_per_pin = 0;
        if let Some(url) = &self.url {
            config.store.url = Some(url.clone());
        }
        config
    }
}

/// An in-process node.
pub async fn node(store: &Store, bus: &str, heartbeat: u16) -> TestServer {
    let config = store.config(bus, heartbeat);
    let data = config.data_dir.clone();
    TestServer::start_in(&data, config).await
}

/// Nodes of one cluster, each a whole server in this process.
pub struct Nodes {
    pub nodes: Vec<TestServer>,
    /// Kept running while the nodes are.
    _nats: NatsServer,
}

impl Nodes {
    /// `count` nodes on `store` and one nats-server, devices' heartbeat `heartbeat` seconds (a
    /// node's lease follows it).
    pub async fn start(store: &Store, count: usize, heartbeat: u16) -> Self {
        let nats = nats_server();
        let mut nodes = Vec::new();
        for _ in 0..count {
            nodes.push(node(store, &nats.url(), heartbeat).await);
        }
        Nodes { nodes, _nats: nats }
    }
}

/// The device `name` as node `server` shows it.
pub async fn device(server: &TestServer, name: &str) -> Value {
    let response = app(server.http(), "GET", &format!("/api/devices/{name}"), None).await;
    assert_eq!(response.status, 200, "{}", response.body);
    response.json()
}

/// Waits until node `server` shows `name` online (or offline).
pub async fn wait_presence(server: &TestServer, name: &str, online: bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE * 2;
    loop {
        let shown = device(server, name).await;
        if shown["online"] == json!(online) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} never shown online={online}: {shown}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The next value the device receives for `pin`.
pub async fn next_update(device: &mut NativeClient, pin: Pin) -> (Vec<String>, u64) {
    device
        .expect("an update", |received| match received {
            Received::Update {
                pin: got,
                value,
                version,
            } if *got == pin => Some((value.clone(), *version)),
            _ => None,
        })
        .await
}

/// The value of `pin` the device receives next, as an update or within a sync.
pub async fn next_update_or_sync(device: &mut NativeClient, pin: Pin) -> (Vec<String>, u64) {
    device
        .expect("a value", |received| match received {
            Received::Update {
                pin: got,
                value,
                version,
            }
            | Received::Synced {
                pin: got,
                value,
                version,
                ..
            } if *got == pin => Some((value.clone(), *version)),
            _ => None,
        })
        .await
}
