//! A real HAProxy (Debian's `haproxy` package; `cargo xtask test` installs it) in TCP mode in
//! front of nodes, on a free loopback port, with its configuration in a temporary directory;
//! killed when dropped.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running HAProxy.
pub struct HaProxy {
    child: Child,
    pub address: SocketAddr,
    _dir: tempfile::TempDir,
}

impl HaProxy {
    /// Balances TCP connections over `backends` (least connections; a backend that refuses a
    /// connection or fails its check is skipped), as `docs/operations.md` shows.
    pub async fn start(backends: &[SocketAddr]) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let servers: String = backends
            .iter()
            .enumerate()
            .map(|(index, address)| {
                format!("    server node{index} {address} check inter 500ms fall 1 rise 1\n")
            })
            .collect();
        let config = format!(
            "global\n    maxconn 2000\n\
             defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 120s\n    \
             timeout server 120s\n    retries 2\n    option redispatch\n\
             frontend devices\n    bind 127.0.0.1:{port}\n    default_backend nodes\n\
             backend nodes\n    balance leastconn\n{servers}"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy is not installed (Debian package `haproxy`; `cargo xtask test` installs it)");
        let proxy = HaProxy {
            child,
            address: ([127, 0, 0, 1], port).into(),
            _dir: dir,
        };
        for _ in 0..500 {
            if tokio::net::TcpStream::connect(proxy.address).await.is_ok() {
                return proxy;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("haproxy did not start");
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
