//! The real `blynk-server` binary as a child process on loopback, over a data directory that
//! outlives restarts (alone, or as a node of several on a shared store and bus: extra arguments
//! such as `--store` and `--bus`), found through its ready file; the app API through the shared
//! client.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use blynk_testbed::Killed;
use blynk_testbed::server::{self, ServerCommand, StartError};

use crate::blynk_server;

/// A running (or stopped) server.
pub struct Server {
    binary: PathBuf,
    data: PathBuf,
    log: PathBuf,
    /// Arguments added to every start (a node's `--store` and `--bus`).
    extra: Vec<String>,
    child: Option<Killed>,
    /// HTTP, app API and classic devices.
    pub http: SocketAddr,
    /// Native devices.
    pub native: SocketAddr,
    /// MQTT devices.
    pub mqtt: SocketAddr,
    /// The admin key, given to the server (`BLYNK_ADMIN_KEY`): it is printed on a first start
    /// only, and a case restarts its server.
    pub key: String,
    /// The demo device's token.
    pub token: String,
}

impl Server {
    /// Starts the server over a fresh directory `data` (created).
    pub fn start(binary: &Path, data: &Path) -> Result<Server> {
        Self::start_with(binary, data, blynk_server::admin_key(), Vec::new())
    }

    /// Starts a server over a fresh directory `data` (created) with admin key `key` and `extra`
    /// arguments: the nodes of one cluster share the key, the store and the bus.
    pub fn start_with(
        binary: &Path,
        data: &Path,
        key: String,
        extra: Vec<String>,
    ) -> Result<Server> {
        std::fs::create_dir_all(data)?;
        let mut server = Server {
            binary: binary.to_path_buf(),
            data: data.join("data"),
            log: data.join("server.log"),
            extra,
            child: None,
            http: "127.0.0.1:1".parse()?,
            native: "127.0.0.1:1".parse()?,
            mqtt: "127.0.0.1:1".parse()?,
            key,
            token: String::new(),
        };
        server.launch()?;
        Ok(server)
    }

    /// Starts the process and waits for its ready file. The MQTT port was free a moment ago,
    /// but another server of the run may take it first: a server that ends before it is ready
    /// is started again, twice at most, on another port.
    fn launch(&mut self) -> Result<()> {
        for _ in 0..2 {
            match self.launch_once() {
                Err(error)
                    if matches!(
                        error.downcast_ref::<StartError>(),
                        Some(StartError::EndedEarly(_))
                    ) => {}
                other => return other,
            }
        }
        self.launch_once()
    }

    fn launch_once(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut command = ServerCommand::new(&self.binary, &self.data)
            .mqtt_on_a_free_port()?
            .log("info")
            .admin_key(&self.key)
            .command();
        command
            .args(&self.extra)
            // The banner and the logs both go to the log file.
            .stdout(log.try_clone()?)
            .stderr(log);
        let ready_file = self.data.with_extension("ready.json");
        let (child, ready) = server::spawn(&mut command, &ready_file, server::START_WITHIN)
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.child = Some(Killed(child));
        self.http = ready.http;
        self.native = ready.native;
        self.mqtt = ready.mqtt()?;
        self.token = ready.demo_token()?;
        Ok(())
    }

    /// Stops it gracefully (SIGTERM, SIGKILL after 5 s) and starts it again on the same data.
    pub fn restart(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            server::terminate(&mut child.0, Duration::from_secs(5));
        }
        self.launch()
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        // Dropping it kills it and waits for it.
        self.child = None;
    }

    /// Starts it after [`Server::kill`].
    pub fn start_again(&mut self) -> Result<()> {
        self.kill();
        self.launch()
    }

    /// The last lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// An app API request with the admin key: (status, body).
    pub fn app(&self, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String)> {
        blynk_server::app_request(self.http, method, path, &self.key, body)
    }
}

/// Whether two values read alike: equal text, or equal numbers (`1` and `1.0`).
pub fn same_value(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim().trim_matches('"'), b.trim().trim_matches('"'));
    if a == b {
        return true;
    }
    matches!((a.parse::<f64>(), b.parse::<f64>()), (Ok(x), Ok(y)) if x == y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_values() {
        assert!(same_value("1.0", "1"));
        assert!(!same_value("0", "1"));
    }
}
