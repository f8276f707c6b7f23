//! `cargo xtask sim --token T [--server ADDR]`: the simulated device (`firmware/sim`, the light
//! app over a real embassy-net stack) on a TAP device made for it, as root.
//!
//! The TAP device gets the host's side of a private network (`192.168.69.100/24`), the device
//! is `192.168.69.2/24` behind it; a server listening on all interfaces (blynk-server's default)
//! is reached at `192.168.69.100:8441`. The TAP device is removed at the end by a small watchdog
//! shell in its own process group that waits for this process to go away, so it goes also on
//! Ctrl-C, on failure, even on `kill -9`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use blynk_testbed::Killed;
use blynk_testbed::server::{self, ServerCommand};

use crate::blynk_server;
use crate::netns::Watchdog;
use crate::workspace::{is_root, workspace_root};

/// The TAP device's default name.
pub const TAP: &str = "blynk-tap0";
/// The host's side of the TAP network.
pub const HOST_ADDRESS: &str = "192.168.69.100/24";
/// The simulated device's address.
pub const DEVICE_ADDRESS: &str = "192.168.69.2/24";
/// Where the device finds the server by default: the host's TAP address, the native port.
pub const DEFAULT_SERVER: &str = "192.168.69.100:8441";

const USAGE: &str = "usage: cargo xtask sim --token TOKEN [--server IP:PORT] [--tap NAME] \
[--polling] [--control SOCKET-PATH]
       cargo xtask sim check   (the simulated device against a real server on a TAP device)";

struct Options {
    token: String,
    server: SocketAddr,
    tap: String,
    polling: bool,
    control: Option<String>,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut token = None;
    let mut server = DEFAULT_SERVER.to_string();
    let mut tap = TAP.to_string();
    let mut polling = false;
    let mut control = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .cloned()
                .with_context(|| format!("{arg} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--token" => token = Some(value()?),
            "--server" => server = value()?,
            "--tap" => tap = value()?,
            "--control" => control = Some(value()?),
            "--polling" => polling = true,
            other => bail!("unknown argument `{other}`\n{USAGE}"),
        }
    }
    let token = token.with_context(|| {
        format!("--token is needed (the device token from the dashboard, or the server's demo token)\n{USAGE}")
    })?;
    let server = server.parse().with_context(|| {
        format!("--server must be an IPv4 address and port as the device sees it, such as {DEFAULT_SERVER}, not `{server}`")
    })?;
    if tap.is_empty()
        || tap.len() > 15
        || !tap
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!(
            "--tap: `{tap}` is not a valid interface name (letters, digits, - and _, at most 15)"
        );
    }
    Ok(Options {
        token,
        server,
        tap,
        polling,
        control,
    })
}

/// Runs `cargo xtask sim`.
pub fn run(args: &[String]) -> Result<()> {
    if args.first().map(String::as_str) == Some("check") {
        return check();
    }
    let options = parse(args)?;
    if !is_root() {
        bail!(
            "cargo xtask sim needs root: it creates the TAP device `{}` the simulated device's \
             network runs on (ip tuntap add). Run it as root, e.g. `sudo -E env \
             PATH=\"$PATH\" cargo xtask sim --token ...`",
            options.tap
        );
    }
    if Command::new("ip").arg("-V").output().is_err() {
        bail!(
            "the `ip` command (iproute2) is needed to create the TAP device: apt install iproute2"
        );
    }
    if Path::new("/sys/class/net").join(&options.tap).exists() {
        bail!(
            "a network interface `{0}` exists already; choose another with --tap, or remove it \
             if it is a leftover: ip tuntap del name {0} mode tap",
            options.tap
        );
    }
    let binary = build_sim(options.polling)?;
    let tap = Tap::create(&options.tap, HOST_ADDRESS)?;
    check_server(options.server);
    let mut command = Command::new(&binary);
    command
        .args(["--tap", &options.tap, "--token", &options.token])
        .args([
            "--server",
            &options.server.to_string(),
            "--ip",
            DEVICE_ADDRESS,
        ]);
    if let Some(control) = &options.control {
        command.args(["--control", control]);
    }
    println!(
        "running the simulated device ({DEVICE_ADDRESS} on {}, server {}): type `press` and \
         Enter for the button, Ctrl-C to stop",
        options.tap, options.server
    );
    let mut child = command.spawn().context("starting the simulated device")?;
    tap.watch(child.id());
    let status = child.wait()?;
    drop(tap);
    if !status.success() {
        bail!("the simulated device stopped ({status})");
    }
    Ok(())
}

/// Where the simulated device is built: `CARGO_TARGET_DIR` when set, else `target/firmware`
/// (as `cargo xtask build` does), apart from the workspace's own builds.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => workspace_root().join("target").join("firmware"),
    }
}

/// Builds `firmware/sim` and returns the binary.
pub fn build_sim(polling: bool) -> Result<PathBuf> {
    let manifest = workspace_root().join("firmware/sim/Cargo.toml");
    println!(
        "cargo build{} --manifest-path firmware/sim/Cargo.toml (a clean build takes a minute)",
        if polling { " --features polling" } else { "" }
    );
    let started = Instant::now();
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command
        .arg("build")
        .arg("--manifest-path")
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", target_dir());
    if polling {
        command.args(["--features", "polling"]);
    }
    let status = command
        .status()
        .context("could not start cargo for firmware/sim")?;
    if !status.success() {
        bail!("firmware/sim did not build ({status})");
    }
    println!("built in {:.0} s", started.elapsed().as_secs_f64());
    let binary = target_dir().join("debug/light-sim");
    if !binary.is_file() {
        bail!("the build left no binary at {}", binary.display());
    }
    Ok(binary)
}

/// Says whether something listens at the server's address (from the host), without failing:
/// the device retries until it does.
fn check_server(server: SocketAddr) {
    match TcpStream::connect_timeout(&server, Duration::from_secs(1)) {
        Ok(_) => println!("the server answers at {server}"),
        Err(error) => println!(
            "note: nothing answers at {server} yet ({error}); start the server (`cargo run -p \
             blynk-server` listens on all interfaces), the device keeps retrying"
        ),
    }
}

/// A TAP device this process made, removed (with whatever process it was given to watch) when
/// the value is dropped or this process ends in any way.
pub struct Tap {
    /// Removes it when dropped.
    watchdog: Watchdog,
}

impl Tap {
    /// `ip tuntap add name NAME mode tap`, up, with `host_address` (CIDR) on the host's side.
    pub fn create(name: &str, host_address: &str) -> Result<Tap> {
        ip(&["tuntap", "add", "name", name, "mode", "tap"])?;
        // From here on the watchdog removes it, whatever happens to this process: it waits for
        // its standard input (a pipe from here) to close, which the kernel does when this
        // process ends, then kills the pids it was given and removes the TAP device. Its own
        // process group keeps it out of the terminal's Ctrl-C.
        let script = r#"pids=""
while read -r pid; do pids="$pids $pid"; done
for pid in $pids; do kill "$pid" 2>/dev/null; done
ip tuntap del name "$1" mode tap && echo "removed the TAP device $1""#;
        let watchdog = Watchdog::start(script, name, "the TAP", || {
            let _ = ip(&["tuntap", "del", "name", name, "mode", "tap"]);
        })?;
        let tap = Tap { watchdog };
        println!("created the TAP device {name} ({host_address} on the host's side)");
        ip(&["link", "set", name, "up"])?;
        ip(&["addr", "add", host_address, "dev", name]).with_context(|| {
            format!("is {host_address} already on another interface? (`ip -br addr`)")
        })?;
        Ok(tap)
    }

    /// Kills `pid` too when the TAP device goes.
    pub fn watch(&self, pid: u32) {
        self.watchdog.tell(&pid.to_string());
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .context("running `ip`")?;
    if !output.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// The check's TAP device: the host's side, the device's address (a subnet of its own, so it
/// runs next to `cargo xtask sim`).
const CHECK_HOST: &str = "192.168.70.100";
const CHECK_DEVICE: &str = "192.168.70.2/24";

/// Lines of a child's standard output, read on a thread.
pub(crate) fn lines(
    stdout: impl Read + Send + 'static,
    echo: &'static str,
) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if !echo.is_empty() {
                println!("  {echo}: {line}");
            }
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

/// Waits (at most `within`) for a line `wanted` says yes to.
pub(crate) fn expect_line(
    lines: &mpsc::Receiver<String>,
    within: Duration,
    what: &str,
    wanted: impl Fn(&str) -> bool,
) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if wanted(line.trim()) => return Ok(()),
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {
                bail!("no `{what}` within {} s", within.as_secs())
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("it ended before `{what}`"),
        }
    }
}

/// `cargo xtask sim check`: the simulated device over a TAP device made for it, against the real
/// server bound to the TAP's host address only. The device connects and syncs, an app write of
/// V0 = 1 lights its LED, its button turns it off and reports V0 = 0, and with 20% of the
/// Ethernet frames dropped each way app writes still reach the LED. Every wait has a deadline; the TAP device, the server and the device go on every path.
pub fn check() -> Result<()> {
    if !is_root() {
        bail!("cargo xtask sim check needs root: it creates a TAP device (ip tuntap add)");
    }
    let started = Instant::now();
    let tap_name = format!("blynk-chk{}", std::process::id() % 100_000);
    if Path::new("/sys/class/net").join(&tap_name).exists() {
        bail!("a network interface {tap_name} exists already");
    }
    println!("==> sim check: building blynk-server and firmware/sim");
    let server_binary = blynk_server::build_debug(&[])?.join("blynk-server");
    let sim_binary = build_sim(false)?;
    let scratch = std::env::temp_dir().join(format!("blynk-sim-check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    let result = (|| -> Result<()> {
        let tap = Tap::create(&tap_name, &format!("{CHECK_HOST}/24"))?;
        let key = crate::blynk_server::admin_key();
        let mut command = ServerCommand::new(&server_binary, scratch.join("data"))
            .bind(CHECK_HOST)
            .admin_key(&key)
            .command();
        command.stderr(std::fs::File::create(scratch.join("server.log"))?);
        let ready_file = scratch.join("ready.json");
        let (server, ready) = server::spawn(&mut command, &ready_file, server::START_WITHIN)?;
        tap.watch(server.id());
        let _server = Killed(server);
        let (http_address, native, token) = (ready.http, ready.native, ready.demo_token()?);
        println!("server on {native} (native) and {http_address} (HTTP), on {tap_name} only");
        let mut device = Command::new(&sim_binary)
            .args(["--tap", &tap_name, "--token", &token])
            .args(["--server", &native.to_string(), "--ip", CHECK_DEVICE])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(scratch.join("device.log"))?)
            .spawn()
            .context("starting the simulated device")?;
        tap.watch(device.id());
        let device_lines = lines(device.stdout.take().context("no stdout")?, "device");
        let mut button = device.stdin.take().context("no stdin")?;
        let _device = Killed(device);

        expect_line(
            &device_lines,
            Duration::from_secs(20),
            "sync complete",
            |line| line.starts_with("sync complete"),
        )?;
        let path = "/api/devices/demo/values/V0";
        let (status, body) =
            blynk_server::app_request(http_address, "PUT", path, &key, Some(r#"{"value":1}"#))?;
        println!("PUT {path} {{\"value\":1}}: {status} {body}");
        if status != 200 {
            bail!("the app write was refused: {status} {body}");
        }
        expect_line(&device_lines, Duration::from_secs(5), "LED on", |line| {
            line == "LED on"
        })?;
        writeln!(button, "press")?;
        expect_line(&device_lines, Duration::from_secs(5), "LED off", |line| {
            line == "LED off"
        })?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (status, body) = blynk_server::app_request(http_address, "GET", path, &key, None)?;
            if status == 200 && body.contains(r#""value":0"#) {
                println!("GET {path}: {body} (the button's write reached the server)");
                break;
            }
            if Instant::now() >= deadline {
                bail!("the button's V0 = 0 did not reach the server within 5 s: {status} {body}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Real packet loss under the device's TCP stack: 20% of the frames dropped each way.
        writeln!(button, "loss 20")?;
        for (value, led) in [(1, "LED on"), (0, "LED off"), (1, "LED on")] {
            let body = format!(r#"{{"value":{value}}}"#);
            let (status, answer) =
                blynk_server::app_request(http_address, "PUT", path, &key, Some(&body))?;
            if status != 200 {
                bail!("the app write {body} was refused under loss: {status} {answer}");
            }
            expect_line(&device_lines, Duration::from_secs(15), led, |line| {
                line == led
            })?;
        }
        println!("with 20% of the frames lost each way, three app writes reached the LED");
        writeln!(button, "loss 0")?;
        Ok(())
    })();
    // The TAP device, the server and the device are gone here, on every path.
    match result {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&scratch);
            println!(
                "<== sim check: ok in {:.1} s (builds included)",
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Err(error) => Err(error.context(format!(
            "sim check failed (logs under {})",
            scratch.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|arg| arg.to_string()).collect()
    }

    #[test]
    fn the_server_defaults_to_the_taps_host_address() {
        let options = parse(&strings(&["--token", "T"])).unwrap();
        assert_eq!(options.server.to_string(), DEFAULT_SERVER);
        assert_eq!(options.tap, TAP);
        assert!(parse(&strings(&[])).is_err());
        assert!(parse(&strings(&["--token", "T", "--tap", "a b"])).is_err());
        assert!(parse(&strings(&["--token", "T", "--server", "blynk.lan"])).is_err());
    }
}
