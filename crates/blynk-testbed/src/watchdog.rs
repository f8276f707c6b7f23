//! A process that stops a server when this process ends, however it ends.
//!
//! A [`Drop`] is not enough: a `static` is never dropped, a panic may abort, and a test binary
//! may be killed. The watchdog is a `sh` in a session of its own (`setsid`, so a Ctrl-C of the
//! tests does not reach it) that blocks reading a pipe only this process holds. When this
//! process ends, the kernel closes the pipe, the read returns, and the watchdog runs its
//! script: stop the server, remove its directory. Dropping the [`Watchdog`] closes the pipe
//! early and waits for the script to finish.

use std::ffi::OsStr;
use std::io::Write as _;
use std::process::{Child, ChildStdin, Command, Stdio};

use crate::process::Error;

/// A running watchdog; dropping it runs its script and waits for it.
pub(crate) struct Watchdog {
    child: Child,
    /// Nothing is written to it: its closing is the signal.
    pipe: Option<ChildStdin>,
}

impl Watchdog {
    /// Starts `sh -c "read _; {script}"` with `arguments` as `$0`, `$1`, ...
    pub(crate) fn start(what: &str, script: &str, arguments: &[&OsStr]) -> Result<Watchdog, Error> {
        let mut child = Command::new("setsid")
            .args(["sh", "-c"])
            .arg(format!("read _ignored; {script}"))
            .args(arguments)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| {
                Error::new(format!(
                    "starting the {what} watchdog (setsid, sh): {error}"
                ))
            })?;
        let mut pipe = child
            .stdin
            .take()
            .ok_or_else(|| Error::new("the watchdog has no standard input"))?;
        // A check that the pipe is open; nothing is written.
        pipe.flush()
            .map_err(|error| Error::new(format!("the {what} watchdog's pipe: {error}")))?;
        Ok(Watchdog {
            child,
            pipe: Some(pipe),
        })
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.pipe.take());
        let _ = self.child.wait();
    }
}
