//! What starting a server program needs: a free loopback port, a temporary directory of its
//! own, a command run to its end with its output kept for the error, whether this process is
//! root, and a child killed when dropped.

use std::fmt;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Why a server could not be started, stopped or used: the command and what it printed, or
/// what to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
}

impl Error {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Error {
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// A loopback port that was free a moment ago (another process may take it before the server
/// binds it: callers retry).
pub(crate) fn free_port() -> Result<u16, Error> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(|error| Error::new(format!("finding a free port: {error}")))
}

/// Whether a server accepts connections on loopback `port`.
pub(crate) fn accepts(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// Runs `start` with a port found free, again with another (three tries in all) when it fails:
/// another process may take a free port before the server binds it. The last error when every
/// try failed.
pub(crate) fn on_a_free_port(mut start: impl FnMut(u16) -> Result<(), Error>) -> Result<(), Error> {
    let mut last_error = Error::new("no port tried");
    for _ in 0..3 {
        match start(free_port()?) {
            Ok(()) => return Ok(()),
            Err(error) => last_error = error,
        }
    }
    Err(last_error)
}

/// A new directory `blynk-{kind}-{process}-{n}` in the system's temporary directory; the
/// watchdog of the server living there removes it.
pub(crate) fn temporary_directory(kind: &str) -> Result<PathBuf, Error> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let directory = std::env::temp_dir().join(format!(
        "blynk-{kind}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&directory)
        .map_err(|error| Error::new(format!("creating {}: {error}", directory.display())))?;
    Ok(directory)
}

/// Whether this process runs as root (PostgreSQL then runs as its own user).
pub(crate) fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

/// Runs a command to its end; its output becomes the error when it fails.
pub(crate) fn run(command: &mut Command) -> Result<(), Error> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|error| Error::new(format!("{command:?}: {error}")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(Error::new(format!(
            "{command:?} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )))
    }
}

/// A child process killed (SIGKILL) and reaped when dropped, so that no exit path of the program
/// that started it (an error, a failed assertion) leaves it running.
#[derive(Debug)]
pub struct Killed(pub Child);

impl Killed {
    /// Kills it now and waits for it.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        self.kill();
    }
}
