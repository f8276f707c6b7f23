//! The client against a real server on 127.0.0.1: REST calls, refusals, the WebSocket.

mod rest;
mod socket;

use blynk_client::{Client, Endpoint};
use blynk_server::config::{Config, MqttPort};

/// The admin key of the test servers.
pub const KEY: &str = "client-test-admin-key-0123456789";

/// A server on loopback ports with its data directory.
pub struct Setup {
    /// The running server.
    pub server: blynk_server::Server,
    _data: tempfile::TempDir,
}

impl Setup {
    /// Starts a server with [`KEY`] as its admin key.
    pub async fn start() -> Self {
        let data = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: data.path().to_path_buf(),
            bind: "127.0.0.1".parse().unwrap(),
            http_port: 0,
            native_port: 0,
            mqtt_port: MqttPort::Off,
            ..Default::default()
        };
        let server = blynk_server::start_with_admin_key(config, Some(KEY))
            .await
            .unwrap();
        Setup {
            server,
            _data: data,
        }
    }

    /// A client with `key`.
    pub fn client_with(&self, key: &str) -> Client {
        let url = format!("http://{}", self.server.http_address);
        Client::new(Endpoint::parse(&url).unwrap(), key).unwrap()
    }

    /// A client with the admin key.
    pub fn client(&self) -> Client {
        self.client_with(KEY)
    }
}
