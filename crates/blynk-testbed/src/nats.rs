//! A real nats-server from Debian's `nats-server` package, on a free loopback port with its
//! log in a temporary directory, and [`NatsServer::stop`], [`NatsServer::resume`] and
//! [`NatsServer::restart`] for tests of a bus outage.
//!
//! It is stopped on every exit path: dropping it kills it, and its watchdog (`watchdog.rs`)
//! kills the process named in its pid file and removes its directory when this process ends
//! without a drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use crate::process::{Error, accepts, on_a_free_port, temporary_directory};
use crate::watchdog::Watchdog;

/// What to do when the program is missing.
const HOW_TO_INSTALL: &str = "nats-server was not found on the PATH: install Debian's \
    `nats-server` package (`cargo xtask test` installs it when run as root)";

/// How long a start may take before it is an error (it takes milliseconds).
const START_PATIENCE: Duration = Duration::from_secs(10);

/// A running (or stopped) nats-server; killed and its directory removed when dropped.
pub struct NatsServer {
    port: u16,
    directory: PathBuf,
    /// The running process; `None` while stopped.
    child: Mutex<Option<Child>>,
    /// Kills the process in `nats.pid` when this process ends without a drop.
    _watchdog: Watchdog,
}

impl NatsServer {
    /// Starts a server on a free port of 127.0.0.1.
    pub fn start() -> Result<NatsServer, Error> {
        let directory = temporary_directory("nats")?;
        let watchdog = Watchdog::start(
            "nats-server",
            r#"if [ -f "$0/nats.pid" ]; then kill -9 "$(cat "$0/nats.pid")"; fi >/dev/null 2>&1; rm -rf "$0""#,
            &[directory.as_os_str()],
        )?;
        let mut server = NatsServer {
            port: 0,
            directory,
            child: Mutex::new(None),
            _watchdog: watchdog,
        };
        on_a_free_port(|port| {
            server.port = port;
            server.resume()
        })?;
        Ok(server)
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL nodes connect to, as `--bus` takes it.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (its clients see the connection drop); nothing when already stopped.
    pub fn stop(&self) {
        let mut running = self
            .child
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(mut child) = running.take() {
            let _ = child.kill();
            // Before the wait, while the process id cannot yet be reused by another process.
            let _ = std::fs::remove_file(self.pid_file());
            let _ = child.wait();
        }
    }

    /// Starts the server again after [`stop`](Self::stop), on the same port; returns once it
    /// accepts connections.
    pub fn resume(&self) -> Result<(), Error> {
        let mut running = self
            .child
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if running.is_some() {
            return Err(Error::new("nats-server is already running"));
        }
        let log = self.directory.join("nats.log");
        let open_log = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .map_err(|error| Error::new(format!("opening {}: {error}", log.display())))
        };
        let mut child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .current_dir(&self.directory)
            .stdin(Stdio::null())
            .stdout(open_log()?)
            .stderr(open_log()?)
            .spawn()
            .map_err(|error| Error::new(format!("{HOW_TO_INSTALL} ({error})")))?;
        if let Err(error) = std::fs::write(self.pid_file(), child.id().to_string()) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::new(format!("writing the pid file: {error}")));
        }
        let ready = wait_until_accepting(&mut child, self.port);
        if let Err(error) = ready {
            let _ = child.kill();
            let _ = std::fs::remove_file(self.pid_file());
            let _ = child.wait();
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(Error::new(format!(
                "starting nats-server on port {}: {error}\n{log}",
                self.port
            )));
        }
        *running = Some(child);
        Ok(())
    }

    /// Stops the server and starts it again.
    ///
    /// # Panics
    ///
    /// When it does not start again.
    pub fn restart(&self) {
        self.stop();
        if let Err(error) = self.resume() {
            panic!("{error}");
        }
    }

    fn pid_file(&self) -> PathBuf {
        self.directory.join("nats.pid")
    }

    /// Where its files are (its log: `nats.log`).
    pub fn directory(&self) -> &Path {
        &self.directory
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        // The watchdog, dropped after this, removes the directory.
        self.stop();
    }
}

/// Waits until `port` accepts connections while `child` runs, bounded by [`START_PATIENCE`].
fn wait_until_accepting(child: &mut Child, port: u16) -> Result<(), String> {
    let pause = Duration::from_millis(10);
    let attempts = START_PATIENCE.as_millis() / pause.as_millis();
    for _ in 0..attempts {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("it exited ({status})"));
        }
        if accepts(port) {
            return Ok(());
        }
        std::thread::sleep(pause);
    }
    Err(format!(
        "not accepting connections after {START_PATIENCE:?}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_resumes_on_the_same_port_and_leaves_nothing_behind() {
        let server = NatsServer::start().unwrap();
        let (port, directory) = (server.port(), server.directory().to_path_buf());
        assert!(accepts(port));
        server.stop();
        assert!(!accepts(port), "stopped, yet the port accepts");
        server.resume().unwrap();
        assert!(accepts(port));
        assert!(server.resume().is_err(), "a second start is refused");
        drop(server);
        assert!(!accepts(port), "dropped, yet the port accepts");
        assert!(
            !directory.exists(),
            "{} is left behind",
            directory.display()
        );
    }
}
