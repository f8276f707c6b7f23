//! The real `blynk-server` binary as a child process (for tests that kill it or read what it
//! prints), found through its ready file rather than its banner.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::ready_file::ReadyFile;

/// How long a child server may take to start (a loaded machine, a first SQLite file).
pub const START_PATIENCE: Duration = Duration::from_secs(20);

/// A running child server and what its ready file says.
pub struct ServerProcess {
    /// The process (killed when dropped).
    pub child: Child,
    /// Its ready file: addresses, demo token, admin key on a first start.
    pub ready: ReadyFile,
}

impl ServerProcess {
    /// Starts `command` (the binary with the caller's flags and environment) with a ready file at
    /// `ready_path` (given through `BLYNK_READY_FILE`, so it fits any subcommand order), its
    /// standard output (the banner) discarded, and waits for the file. Panics when the server
    /// exits first or takes longer than [`START_PATIENCE`].
    pub async fn start(mut command: Command, ready_path: &Path) -> ServerProcess {
        // A file left by an earlier run (killed, so not cleaned up) must not be read as this one.
        let _ = std::fs::remove_file(ready_path);
        let mut child = command
            .env("BLYNK_READY_FILE", ready_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("starting blynk-server");
        let ready = wait_for_ready_file(&mut child, ready_path).await;
        ServerProcess { child, ready }
    }

    /// The demo device's token; panics when the demo device is gone.
    pub fn demo_token(&self) -> String {
        self.ready.demo_token.clone().expect("a demo device")
    }

    /// Where MQTT devices connect; panics when MQTT is off.
    pub fn mqtt(&self) -> std::net::SocketAddr {
        self.ready.mqtt.expect("MQTT is on")
    }
}

/// Waits until `child` has written its ready file at `path` (polled every 10 ms: the file
/// appears by a rename, so it is whole once it is there).
pub async fn wait_for_ready_file(child: &mut Child, path: &Path) -> ReadyFile {
    let pid = child.id();
    let deadline = tokio::time::Instant::now() + START_PATIENCE;
    loop {
        if let Some(status) = child.try_wait().expect("polling the child server") {
            panic!("blynk-server exited before it was ready: {status}");
        }
        match ReadyFile::read(path) {
            Ok(Some(ready)) if Some(ready.pid) == pid => return ready,
            Ok(_) => {}
            Err(error) => panic!("reading the ready file {}: {error}", path.display()),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "blynk-server wrote no ready file within {START_PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
