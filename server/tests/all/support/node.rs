//! A node as its own `blynk-server` process (so a test can `kill -9` it), on free loopback
//! ports, with its configuration file and log in a temporary directory; killed when dropped.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running node process.
pub struct NodeProcess {
    child: Option<Child>,
    pub native: SocketAddr,
    pub http: SocketAddr,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl NodeProcess {
    /// Starts a node on the store in `data` (and `extra` TOML lines, such as the store URL),
    /// on the bus at `bus`, with devices' heartbeat `heartbeat` seconds.
    pub async fn start(data: &Path, bus: &str, heartbeat: u16, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (http_port, native_port) = (free_port(), free_port());
        let config = format!(
            "data_dir = {data:?}\nbind = \"127.0.0.1\"\nhttp_port = {http_port}\n\
             native_port = {native_port}\nmqtt_port = 0\nbus = {bus:?}\n{extra}\n\
             [limits]\ndefault_heartbeat_seconds = {heartbeat}\nmessages_per_second = 10000\n\
             message_burst = 10000\n"
        );
        let config_path = dir.path().join("node.toml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("node.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_blynk-server"))
            .arg("--config")
            .arg(&config_path)
            .arg("serve")
            .env("BLYNK_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let node = NodeProcess {
            child: Some(child),
            native: ([127, 0, 0, 1], native_port).into(),
            http: ([127, 0, 0, 1], http_port).into(),
            dir,
        };
        for _ in 0..1000 {
            if tokio::net::TcpStream::connect(node.native).await.is_ok() {
                return node;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the node did not start:\n{}", node.log());
    }

    /// What the node logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("node.log")).unwrap_or_default()
    }

    /// `kill -9`: the process ends at once, without a word to anyone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
