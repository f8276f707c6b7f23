//! The device kinds and one running device process of a kind.
//!
//! Every kind is presented as the light of the reference text: `LED on`/`LED off`, the values it
//! received, `connected`, and (native only) `sync complete (N values)`. The host build of
//! `blynk-device` (`host_light`) prints exactly that. The Python libraries' drivers print JSON
//! events; the runner plays the light's firmware on top of them as a classic sketch does: on
//! `connected` it calls `sync_all` (the classic `BLYNK_CONNECTED() { Blynk.syncAll(); }`), a write
//! of V0 sets the light and mirrors it on V1, and the button toggles the light and reports V0 and
//! V1 with `virtual_write`. The MQTT driver (`paho-mqtt`) prints the same events, plus
//! `sync_complete` at the end of a `get/ds/all` answer.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::json_field;
use super::server::same_value;

/// A kind of device the scenarios run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `blynk-device`'s `host_light` example, native protocol.
    BlynkDevice,
    /// `blynklib` 0.2.6 from PyPI, classic protocol.
    Blynklib,
    /// `blynk-library-python` 0.2.0 from PyPI, classic protocol.
    BlynkLibraryPython,
    /// The simulated embassy-net device (`firmware/sim`) on a TAP interface: not wired in yet.
    EmbassyNetSim,
    /// `paho-mqtt` 2.1.0 from PyPI, over the MQTT device API.
    PahoMqtt,
}

/// Every kind, in the table's column order.
pub const KINDS: [Kind; 5] = [
    Kind::BlynkDevice,
    Kind::Blynklib,
    Kind::BlynkLibraryPython,
    Kind::EmbassyNetSim,
    Kind::PahoMqtt,
];

impl Kind {
    /// The column name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::BlynkDevice => "blynk-device",
            Kind::Blynklib => "blynklib",
            Kind::BlynkLibraryPython => "blynk-library-python",
            Kind::EmbassyNetSim => "embassy-net-sim",
            Kind::PahoMqtt => "paho-mqtt",
        }
    }

    /// Why the kind cannot run a scenario needing `capability`, or `None` when it can.
    pub fn lacks(self, capability: &str) -> Option<&'static str> {
        match (self, capability) {
            (Kind::BlynkLibraryPython, "reconnect") => {
                Some("blynk-library-python 0.2.0 never reconnects after losing its connection")
            }
            (Kind::Blynklib | Kind::BlynkLibraryPython, "offline-queue") => {
                Some("classic libraries keep no queue of writes made offline (SPEC 3.8 is native)")
            }
            (Kind::Blynklib | Kind::BlynkLibraryPython, "sync-marker") => {
                Some("the classic protocol has no sync-complete marker (SPEC 3.7)")
            }
            (Kind::Blynklib | Kind::BlynkLibraryPython, "delta-resync") => {
                Some("delta resync is native only (SPEC 3.11)")
            }
            (Kind::PahoMqtt, "offline-queue") => Some(
                "paho-mqtt sends QoS 1 publishes made offline without their time, so SPEC 3.8's ordering cannot apply",
            ),
            (Kind::PahoMqtt, "delta-resync") => Some("delta resync is native only (SPEC 3.11)"),
            (Kind::PahoMqtt, "timestamped-write") => Some(
                "the scenario sends a classic GROUP frame; MQTT's timestamped_batch is tested in server/tests/all/mqtt.rs",
            ),
            (Kind::PahoMqtt, "bridge") => Some("BRIDGE is a classic command; MQTT has none"),
            (Kind::PahoMqtt, "time-request") => {
                Some("INTERNAL time requests are classic; MQTT has none")
            }
            (Kind::BlynkDevice | Kind::EmbassyNetSim, "timestamped-write") => {
                Some("classic GROUP: the native device stamps only its offline queue (scenario 11)")
            }
            (Kind::BlynkDevice | Kind::EmbassyNetSim, "bridge") => {
                Some("BRIDGE is a classic command; the native protocol has none")
            }
            (Kind::BlynkDevice | Kind::EmbassyNetSim, "time-request") => {
                Some("INTERNAL time requests are classic; the native protocol has none")
            }
            (Kind::EmbassyNetSim, "any-pin") => Some("firmware/sim shows only its light"),
            (Kind::EmbassyNetSim, "sync-request") => {
                Some("firmware/sim has no console command for sync_virtual")
            }
            _ => None,
        }
    }
}

/// What the device has shown so far.
#[derive(Default)]
struct State {
    /// Canonical lines: `connected`, `disconnected`, `V0 = 1`, `LED on`, `sync complete (3 values)`.
    lines: Vec<String>,
    /// Lines before this index are older than the last link or server change.
    mark: usize,
    led: bool,
    exited: bool,
}

type Shared = Arc<(Mutex<State>, Condvar)>;

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, State> {
    shared.0.lock().unwrap_or_else(|e| e.into_inner())
}

/// What starting a device needs.
#[derive(Clone)]
pub struct Launch {
    /// The kind.
    pub kind: Kind,
    /// `host_light`.
    pub host_light: PathBuf,
    /// `firmware/sim`'s `light-sim`, when that kind runs.
    pub light_sim: Option<PathBuf>,
    /// The network namespace the simulated device's TAP devices live in.
    pub netns: Option<String>,
    /// The virtualenv's python.
    pub python: PathBuf,
    /// `server/tests/python`.
    pub drivers: PathBuf,
    /// Where the device's stderr goes.
    pub stderr: PathBuf,
}

/// A running device process.
pub struct Device {
    launch: Launch,
    server: SocketAddr,
    token: String,
    /// The simulated device's TAP device and its network number (`10.213.N.0/24`).
    tap: Option<(String, u32)>,
    child: Child,
    stdin: Arc<Mutex<ChildStdin>>,
    shared: Shared,
}

impl Device {
    /// Starts the device against `server` (its proxy); the simulated device on `tap`.
    pub fn start(
        launch: &Launch,
        server: SocketAddr,
        token: &str,
        tap: Option<(String, u32)>,
    ) -> Result<Device> {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&launch.stderr)?;
        let mut command = match launch.kind {
            Kind::BlynkDevice => {
                let mut command = Command::new(&launch.host_light);
                command.arg("--server").arg(server.to_string()).args([
                    "--token",
                    token,
                    "--heartbeat",
                    "2",
                ]);
                command
            }
            Kind::Blynklib | Kind::BlynkLibraryPython | Kind::PahoMqtt => {
                let (script, heartbeat) = match launch.kind {
                    Kind::Blynklib => ("blynklib_device.py", "2"),
                    Kind::BlynkLibraryPython => ("blynk_library_python_device.py", "2"),
                    // MQTT's keep-alive: silent for 1.5 x 5 s is offline, the nearest MQTT
                    // comes to the scenarios' 2.3 x 2 s (a client pings only after a whole
                    // keep-alive, so a shorter one could end sooner than the scenarios allow).
                    _ => ("paho_mqtt_device.py", "5"),
                };
                let mut command = Command::new(&launch.python);
                command
                    .arg("-B")
                    .arg(launch.drivers.join(script))
                    .arg(server.ip().to_string())
                    .arg(server.port().to_string())
                    .arg(token)
                    .arg(heartbeat);
                command
            }
            Kind::EmbassyNetSim => {
                let (Some(binary), Some((name, net)), Some(netns)) =
                    (&launch.light_sim, &tap, &launch.netns)
                else {
                    bail!("the simulated device needs its binary, a namespace and a TAP device");
                };
                // Inside the namespace, where its TAP device is.
                let mut command = Command::new("ip");
                command
                    .args(["netns", "exec", netns])
                    .arg(binary)
                    .args(["--tap", name, "--token", token])
                    .arg("--server")
                    .arg(server.to_string())
                    .arg("--ip")
                    .arg(format!("10.213.{net}.2/24"))
                    .arg("--gateway")
                    .arg(format!("10.213.{net}.1"))
                    .args(["--heartbeat", "2"]);
                command
            }
        };
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting the {} device", launch.kind.name()))?;
        let stdin = Arc::new(Mutex::new(child.stdin.take().context("no stdin")?));
        let stdout = child.stdout.take().context("no stdout")?;
        let shared: Shared = Arc::default();
        let (reader_shared, reader_stdin, kind) = (shared.clone(), stdin.clone(), launch.kind);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if matches!(kind, Kind::BlynkDevice | Kind::EmbassyNetSim) {
                    native_line(&reader_shared, &line);
                } else {
                    classic_event(&reader_shared, &reader_stdin, &line);
                }
                reader_shared.1.notify_all();
            }
            lock(&reader_shared).exited = true;
            reader_shared.1.notify_all();
        });
        Ok(Device {
            launch: launch.clone(),
            server,
            token: token.to_string(),
            tap,
            child,
            stdin,
            shared,
        })
    }

    /// Kills the process and starts a fresh one (a reset: it keeps nothing).
    pub fn restart(&mut self) -> Result<()> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        *self = Device::start(&self.launch, self.server, &self.token, self.tap.clone())?;
        Ok(())
    }

    /// From now on, `connected` and `sync complete` expectations look only at newer lines.
    pub fn mark(&self) {
        let mut state = lock(&self.shared);
        state.mark = state.lines.len();
    }

    /// The button.
    pub fn press(&self) -> Result<()> {
        match self.launch.kind {
            Kind::BlynkDevice | Kind::EmbassyNetSim => self.send("press"),
            _ => {
                let on = {
                    let mut state = lock(&self.shared);
                    state.led = !state.led;
                    let line = format!("LED {}", if state.led { "on" } else { "off" });
                    state.lines.push(line);
                    state.led
                };
                self.send(&classic_write(0, if on { "1" } else { "0" }))?;
                self.send(&classic_write(1, if on { "255" } else { "0" }))
            }
        }
    }

    /// `virtual_write`.
    pub fn write(&self, pin: &str, value: &str) -> Result<()> {
        match self.launch.kind {
            Kind::BlynkDevice => self.send(&format!("write {pin} {value}")),
            Kind::EmbassyNetSim => self.send(&format!("write {pin} {value}")),
            _ => self.send(&classic_write(pin_number(pin)?, value)),
        }
    }

    /// `sync_virtual(pins)`.
    pub fn sync(&self, pins: &[String]) -> Result<()> {
        match self.launch.kind {
            Kind::BlynkDevice => self.send(&format!("sync {}", pins.join(" "))),
            Kind::EmbassyNetSim => bail!("this device cannot sync_virtual"),
            _ => {
                let numbers: Vec<String> = pins
                    .iter()
                    .map(|pin| pin_number(pin).map(|n| n.to_string()))
                    .collect::<Result<_>>()?;
                self.send(&format!(
                    r#"{{"cmd": "sync_virtual", "pins": [{}]}}"#,
                    numbers.join(", ")
                ))
            }
        }
    }

    /// A write in a group stamped `at_ms` (classic `beginGroup(t)`, `virtualWrite`,
    /// `endGroup()`; the group frames with message id 0 where the library allows it).
    pub fn write_measured(&self, pin: &str, value: &str, at_ms: i64) -> Result<()> {
        self.classic_only("a measured write")?;
        self.send(&raw_frame(21, &["t", &at_ms.to_string()]))?;
        self.send(&classic_write(pin_number(pin)?, value))?;
        self.send(&raw_frame(21, &["e"]))
    }

    /// Binds Bridge channel 64 to the device of `token` and writes `pin` through it.
    pub fn bridge(&self, token: &str, pin: &str, value: &str) -> Result<()> {
        self.classic_only("a bridge write")?;
        let number = pin_number(pin)?.to_string();
        self.send(&raw_frame(15, &["64", "i", token]))?;
        self.send(&raw_frame(15, &["64", "vw", &number, value]))
    }

    /// The time request `utc <what>` (INTERNAL).
    pub fn ask_time(&self, what: &str) -> Result<()> {
        self.classic_only("a time request")?;
        self.send(&raw_frame(17, &["utc", what]))
    }

    fn classic_only(&self, what: &str) -> Result<()> {
        if matches!(self.launch.kind, Kind::BlynkDevice | Kind::EmbassyNetSim) {
            bail!("{what} is a classic frame; this device cannot send it");
        }
        Ok(())
    }

    /// Real packet loss under the simulated device's TCP stack (`loss PERCENT` on its console).
    pub fn set_loss(&self, percent: u32) -> Result<()> {
        self.send(&format!("loss {percent}"))
    }

    fn send(&self, line: &str) -> Result<()> {
        let mut stdin = self.stdin.lock().unwrap_or_else(|e| e.into_inner());
        writeln!(stdin, "{line}").context("writing to the device's stdin")?;
        stdin.flush()?;
        Ok(())
    }

    /// Whether the predicate over what the device has shown holds.
    pub fn check(&self, what: &super::scenario::Expect) -> bool {
        use super::scenario::Expect;
        let state = lock(&self.shared);
        let recent = &state.lines[state.mark.min(state.lines.len())..];
        match what {
            Expect::Led(on) => state.led == *on,
            Expect::Connected => recent.iter().any(|line| line == "connected"),
            Expect::SyncComplete(None) => {
                recent.iter().any(|line| line.starts_with("sync complete"))
            }
            Expect::SyncComplete(Some(count)) => recent
                .iter()
                .any(|line| *line == format!("sync complete ({count} values)")),
            Expect::Received(pin, value) => state.lines.iter().any(|line| {
                line.split_once(" = ")
                    .is_some_and(|(p, v)| p == pin && same_value(v, value))
            }),
            Expect::NotReceived(pin) => !state
                .lines
                .iter()
                .any(|line| line.starts_with(&format!("{pin} = "))),
            Expect::TimeAnswer(what) => state
                .lines
                .iter()
                .any(|line| line.starts_with(&format!("utc {what} = "))),
            Expect::AppValue(..) | Expect::AppOnline(_) | Expect::AppHistory(..) => false,
        }
    }

    /// Waits (at most `timeout`) for the device to show something new.
    pub fn wait_change(&self, timeout: Duration) {
        let state = lock(&self.shared);
        let _ = self.shared.1.wait_timeout(state, timeout);
    }

    /// Whether the process ended.
    pub fn exited(&self) -> bool {
        lock(&self.shared).exited
    }

    /// The last lines it showed.
    pub fn tail(&self, lines: usize) -> String {
        let state = lock(&self.shared);
        let all = &state.lines;
        all[all.len().saturating_sub(lines)..].join(" | ")
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `check` holds, at most `within`.
pub fn wait_until(device: &Device, what: &super::scenario::Expect, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if device.check(what) {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        device.wait_change((deadline - now).min(Duration::from_millis(100)));
    }
}

fn pin_number(pin: &str) -> Result<u8> {
    pin.trim_start_matches(['V', 'v'])
        .parse()
        .with_context(|| format!("`{pin}` is not a virtual pin"))
}

fn classic_write(pin: u8, value: &str) -> String {
    let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
    format!(r#"{{"cmd": "virtual_write", "pin": {pin}, "value": ["{escaped}"]}}"#)
}

/// A raw classic frame sent through the driver's library (`{"cmd": "raw", ...}`).
fn raw_frame(command: u8, parts: &[&str]) -> String {
    let parts: Vec<String> = parts
        .iter()
        .map(|part| format!("\"{}\"", part.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!(
        r#"{{"cmd": "raw", "command": {command}, "parts": [{}]}}"#,
        parts.join(", ")
    )
}

fn native_line(shared: &Shared, line: &str) {
    let mut state = lock(shared);
    let line = line.trim();
    match line {
        "LED on" => state.led = true,
        "LED off" => state.led = false,
        _ => {}
    }
    let canonical = if line.starts_with("disconnected") {
        "disconnected".to_string()
    } else {
        line.to_string()
    };
    state.lines.push(canonical);
}

/// A driver's JSON event, and the light firmware played on top of it.
fn classic_event(shared: &Shared, stdin: &Arc<Mutex<ChildStdin>>, line: &str) {
    let send = |text: String| {
        let mut stdin = stdin.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(stdin, "{text}");
        let _ = stdin.flush();
    };
    let event = json_field(line, "event").unwrap_or_default();
    let mut state = lock(shared);
    match event.as_str() {
        "connected" => {
            state.lines.push("connected".into());
            drop(state);
            send(r#"{"cmd": "sync_all"}"#.into());
        }
        "disconnected" => state.lines.push("disconnected".into()),
        // The MQTT driver's `downlink/get/ds/done`, shown as the native marker is.
        "sync_complete" => {
            let count = json_field(line, "count").unwrap_or_default();
            state.lines.push(format!("sync complete ({count} values)"));
        }
        "internal" => {
            // An INTERNAL answer: `utc time = 1767225600000`.
            let parts = json_field(line, "parts").unwrap_or_default();
            let parts: Vec<&str> = parts.split(',').collect();
            if let [kind, what, values @ ..] = parts.as_slice() {
                state
                    .lines
                    .push(format!("{kind} {what} = {}", values.join(",")));
            }
        }
        "write" => {
            let pin = json_field(line, "pin").unwrap_or_default();
            // A multi-value write's parts joined by commas.
            let value = json_field(line, "value").unwrap_or_default();
            state.lines.push(format!("{pin} = {value}"));
            if pin == "V0" {
                let on = value.parse::<f64>().is_ok_and(|v| v != 0.0);
                state.led = on;
                state
                    .lines
                    .push(format!("LED {}", if on { "on" } else { "off" }));
                drop(state);
                send(classic_write(1, if on { "255" } else { "0" }));
            }
        }
        _ => state.lines.push(line.to_string()),
    }
}

/// `<workspace>/target/python-venv/bin/python`, made (as the server's python client tests make
/// it) when missing.
pub fn ensure_venv(workspace: &Path) -> Result<PathBuf> {
    let requirements = workspace.join("server/tests/python/requirements.txt");
    blynk_testbed::python::ensure_venv(&requirements, &workspace.join("target"))
        .map_err(anyhow::Error::msg)
}
