//! A real nats-server (Debian's `nats-server` package; `cargo xtask test` installs it) on a
//! free loopback port, with its files in a temporary directory, killed when dropped, with
//! stop and start for outage tests.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running (or stopped) nats-server.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a server on a free port of 127.0.0.1.
    pub async fn start() -> Self {
        let port = {
            let probe = TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let mut server = NatsServer {
            child: None,
            port,
            dir: tempfile::tempdir().unwrap(),
        };
        server.start_again().await;
        server
    }

    /// The URL nodes connect to.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("nats.log")
    }

    /// Starts the server again on the same port (after [`NatsServer::stop`]).
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .unwrap();
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("nats-server is not installed (Debian package `nats-server`; `cargo xtask test` installs it)");
        self.child = Some(child);
        // Ready once it accepts connections; bounded.
        for _ in 0..500 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "nats-server did not start: {}",
            std::fs::read_to_string(self.log()).unwrap_or_default()
        );
    }

    /// Stops the server (its clients see the connection drop).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
