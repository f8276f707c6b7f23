//! Network namespaces that xtask commands create for their tests and remove on every exit path,
//! so nothing of a test (TAP devices, veth pairs, private addresses, packet-loss rules) shows on
//! the host's own interfaces.
//!
//! A namespace is removed by a small watchdog shell in its own process group that waits for this
//! process to go away (its standard input, a pipe from here, closes when this process ends in any
//! way: return, error, Ctrl-C, even `kill -9`), then ends the processes still inside the
//! namespace and deletes it. The kernel removes the namespace's virtual devices (TAP, veth) with
//! it.

use std::fs::File;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};

use anyhow::{Context, Result, bail};

/// A network namespace this process made; deleted when dropped or when this process ends.
pub struct Netns {
    name: String,
    /// Deletes it when dropped.
    _watchdog: Watchdog,
}

impl Netns {
    /// `ip netns add NAME`, with its loopback up.
    pub fn create(name: &str) -> Result<Netns> {
        if std::path::Path::new("/var/run/netns").join(name).exists() {
            bail!(
                "a network namespace `{name}` exists already (a leftover? `ip netns del {name}`)"
            );
        }
        run("ip", &["netns", "add", name])?;
        // The watchdog: waits for the pipe to close, then ends what runs inside and deletes it.
        let script = r#"while read -r _; do :; done
for pid in $(ip netns pids "$1" 2>/dev/null); do kill "$pid" 2>/dev/null; done
sleep 0.2
for pid in $(ip netns pids "$1" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
ip netns del "$1""#;
        let watchdog = Watchdog::start(script, name, "the namespace's", || {
            let _ = run("ip", &["netns", "del", name]);
        })?;
        let netns = Netns {
            name: name.to_string(),
            _watchdog: watchdog,
        };
        netns.ip(&["link", "set", "lo", "up"])?;
        Ok(netns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) -> Result<()> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// A command that runs `program` inside the namespace (`ip netns exec`, which replaces
    /// itself with the program: the child's pid is the program's).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// `sh` inside the namespace that raises its open-file limit to the hard one and then execs
    /// the program and arguments added to it, which keeps the child's process id: for programs
    /// that hold a thousand connections.
    pub fn command_with_all_files(&self) -> Command {
        let mut command = self.command("sh");
        command.args([
            "-c",
            "ulimit -n \"$(ulimit -Hn)\" 2>/dev/null; exec \"$@\"",
            "sh",
        ]);
        command
    }

    /// `nft ARGS` inside the namespace.
    pub fn nft(&self, args: &[&str]) -> Result<()> {
        self.nft_output(args).map(drop)
    }

    /// `nft ARGS` inside the namespace, returning what it printed.
    pub fn nft_output(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["netns", "exec", &self.name, "nft"];
        all.extend_from_slice(args);
        output("ip", &all)
    }
}

/// A TCP listener on `address` inside the namespace `namespace`, usable from this process: a
/// socket belongs to the namespace it was made in, so a short-lived thread enters the namespace
/// (`setns` changes only the calling thread), binds, and ends.
pub fn bind_in(namespace: &str, address: SocketAddr) -> Result<TcpListener> {
    let path = std::path::Path::new("/var/run/netns").join(namespace);
    let namespace = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    std::thread::spawn(move || -> Result<TcpListener> {
        // setns changes only this thread, which ends right after binding.
        rustix::thread::move_into_link_name_space(
            namespace.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .context("setns")?;
        TcpListener::bind(address).with_context(|| format!("binding {address}"))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the namespace thread panicked"))?
}

/// A `sh` that removes what this process made (a namespace, a TAP device) once its standard
/// input, a pipe from here, closes: when this is dropped, or when the kernel closes the pipe as
/// this process ends, however it ends. Its own process group keeps it out of the terminal's
/// Ctrl-C.
pub(crate) struct Watchdog {
    child: Child,
    pipe: Option<ChildStdin>,
}

impl Watchdog {
    /// `sh -c SCRIPT sh NAME` (the script reads its standard input to the end first); when it
    /// cannot start, `undo` removes the thing at once and the error names `whose` watchdog.
    pub(crate) fn start(
        script: &str,
        name: &str,
        whose: &str,
        undo: impl FnOnce(),
    ) -> Result<Self> {
        match Command::new("sh")
            .args(["-c", script, "sh", name])
            .stdin(Stdio::piped())
            .process_group(0)
            .spawn()
        {
            Ok(mut child) => {
                let pipe = child.stdin.take();
                Ok(Watchdog { child, pipe })
            }
            Err(error) => {
                undo();
                bail!("could not start {whose} watchdog (sh): {error}");
            }
        }
    }

    /// Writes `line` to the script.
    pub(crate) fn tell(&self, line: &str) {
        if let Some(mut pipe) = self.pipe.as_ref() {
            let _ = writeln!(pipe, "{line}");
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Closing the pipe sets the watchdog off; wait for it, so the thing is gone on return.
        self.pipe = None;
        let _ = self.child.wait();
    }
}

/// Runs `program ARGS`, failing with its error output.
pub fn run(program: &str, args: &[&str]) -> Result<()> {
    output(program, args).map(drop)
}

/// Runs `program ARGS`: its standard output, or a failure with its error output.
fn output(program: &str, args: &[&str]) -> Result<String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running `{program}`"))?;
    if !output.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).to_string())
}

/// Whether the network namespace tools this module uses are here and usable (root).
pub fn available() -> bool {
    crate::workspace::is_root()
        && Command::new("ip")
            .args(["netns", "list"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
}

/// A TAP device inside a namespace, with the host's side of its network on it; removed when
/// dropped (and with the namespace, whatever happens).
pub struct NsTap {
    namespace: String,
    name: String,
}

impl NsTap {
    /// `ip tuntap add name NAME mode tap` inside the namespace `namespace`, up, with
    /// `host_address` (CIDR).
    pub fn create(namespace: &str, name: &str, host_address: &str) -> Result<NsTap> {
        let ip = |args: &[&str]| {
            let mut all = vec!["-n", namespace];
            all.extend_from_slice(args);
            run("ip", &all)
        };
        ip(&["tuntap", "add", "name", name, "mode", "tap"])?;
        let tap = NsTap {
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        ip(&["link", "set", name, "up"])?;
        ip(&["addr", "add", host_address, "dev", name])?;
        Ok(tap)
    }
}

impl Drop for NsTap {
    fn drop(&mut self) {
        let _ = run(
            "ip",
            &[
                "-n",
                &self.namespace,
                "tuntap",
                "del",
                "name",
                &self.name,
                "mode",
                "tap",
            ],
        );
    }
}
