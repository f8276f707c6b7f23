//! `cargo xtask conformance`: the state-sync scenarios of `conformance/scenarios/*.scn`, run by
//! one runner against the real `blynk-server` on loopback, for every device kind where the
//! scenario applies, then a table of scenario x device kind.
//!
//! Why in xtask, with std and anyhow only: the runner only starts processes, reads their output
//! lines, relays bytes (the link proxy) and makes a handful of HTTP requests; threads and std's
//! `TcpStream` do all of that without bringing tokio into xtask, and `cargo xtask conformance`
//! stays a plain step of `cargo xtask test`.
//!
//! Each (scenario, kind) case runs on its own server and data directory (under the system's
//! temporary directory, removed afterwards) with one [`proxy::Proxy`] per device on a fixed
//! loopback port: devices connect to the proxy, so the link can be cut and restored and the
//! server restarted on new ports without the device noticing more than a dropped connection.
//! Cases run in parallel (`CONFORMANCE_JOBS`, 6 by default). Everything binds 127.0.0.1, except
//! the simulated device's proxies, which listen inside the run's network namespace (below); every
//! wait has a deadline; child processes are killed when their owner is dropped, failure included.
//!
//! With `--sim`, the simulated devices run inside a network namespace the run creates
//! (`crate::netns`), each on a TAP device of its own there, and the namespace goes on every exit
//! path (failures and Ctrl-C included): nothing of the suite shows on the host's interfaces. The
//! server stays on the host's loopback; a device reaches it through its proxy, whose listener is
//! made inside the namespace on the TAP's host address.
//!
//! `packet loss P% for D` is done by the proxy, not by dropping bytes (TCP would retransmit them
//! and dropping chunks corrupts the stream): for D, in 500 ms slots, the link is cut with
//! probability P, so connections die at random short intervals and new ones go unanswered about
//! P of the time (held until the link is back, as over a dead link; the proxy never resets a
//! connection: `blynklib` 0.2.6 dies of a reset during its login). The simulated embassy-net
//! device gets real packet loss instead: it drops that share of its Ethernet frames itself.

mod device;
mod proxy;
mod scenario;
pub(crate) mod server;

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::steps::workspace_root;
use device::{Device, KINDS, Kind, Launch};
use proxy::Proxy;
use scenario::{Expect, Scenario, Step};
use server::{Server, json_field, same_value};

/// The outcome of one case.
#[derive(Debug, Clone)]
enum Outcome {
    Pass(Duration),
    Fail(Duration, String),
    NotApplicable(String),
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// The next `10.213.N.0/24` network (and TAP device `bconfN`) for a simulated device.
static NEXT_NET: AtomicU32 = AtomicU32::new(1);

/// Runs the suite; `args` are optional filters on scenario names, `--kind NAME` (repeatable)
/// runs only those device kinds, and `--sim` (or `CONFORMANCE_SIM=1`) adds the simulated
/// embassy-net device (as root: TAP devices).
pub fn run(args: &[String]) -> Result<()> {
    let started = Instant::now();
    let sim = args.iter().any(|arg| arg == "--sim")
        || std::env::var("CONFORMANCE_SIM").is_ok_and(|value| value == "1");
    let mut kinds: Vec<String> = Vec::new();
    let mut filters: Vec<String> = Vec::new();
    let mut rest = args.iter().filter(|arg| *arg != "--sim");
    while let Some(arg) = rest.next() {
        if arg == "--kind" {
            let kind = rest.next().context("--kind needs a kind's name")?;
            if !KINDS.iter().any(|known| known.name() == kind) {
                let names: Vec<&str> = KINDS.iter().map(|known| known.name()).collect();
                bail!("no device kind `{kind}`; the kinds: {}", names.join(", "));
            }
            kinds.push(kind.clone());
        } else {
            filters.push(arg.clone());
        }
    }
    let args = &filters[..];
    let root = workspace_root();
    let scenarios = scenario::load_all(&root.join("conformance/scenarios"))?;
    let scenarios: Vec<Scenario> = scenarios
        .into_iter()
        .filter(|s| args.is_empty() || args.iter().any(|filter| s.name.contains(filter)))
        .collect();
    if scenarios.is_empty() {
        bail!("no scenario matches {args:?}");
    }
    println!("\n==> conformance: building blynk-server and host_light");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    for build in [
        &["build", "-p", "blynk-server", "--bin", "blynk-server"][..],
        &["build", "-p", "blynk-device", "--example", "host_light"][..],
    ] {
        let status = Command::new(&cargo)
            .args(build)
            .current_dir(&root)
            .status()?;
        if !status.success() {
            bail!("cargo {} failed", build.join(" "));
        }
    }
    let python = device::ensure_venv(&root)?;
    let (light_sim, sim_unavailable) = if !sim {
        (
            None,
            Some(
                "opt-in: `cargo xtask conformance --sim` (as root: a TAP device per device, \
                 in a network namespace of the run)"
                    .to_string(),
            ),
        )
    } else if !crate::sim::is_root() || !Path::new("/dev/net/tun").exists() {
        (
            None,
            Some("the simulated device needs root and /dev/net/tun".to_string()),
        )
    } else {
        (Some(crate::sim::build_sim(false)?), None)
    };
    // The simulated devices' TAP devices live in a namespace of this run, removed on every
    // exit path (crate::netns): nothing of the suite shows on the host's interfaces. The
    // devices reach the server through their proxies, whose listeners are made inside it.
    let netns = match &light_sim {
        Some(_) => Some(crate::netns::Netns::create(&format!(
            "blynk-conf-{}",
            std::process::id()
        ))?),
        None => None,
    };
    let debug = target_dir().join("debug");
    let server_binary = debug.join("blynk-server");
    let scratch = std::env::temp_dir().join(format!("blynk-conformance-{}", std::process::id()));
    let launch = Launch {
        kind: Kind::BlynkDevice,
        host_light: debug.join("examples/host_light"),
        light_sim,
        netns: netns.as_ref().map(|netns| netns.name().to_string()),
        python,
        drivers: root.join("server/tests/python"),
        stderr: PathBuf::new(),
    };

    let mut queue = VecDeque::new();
    let mut results: BTreeMap<(usize, usize), Outcome> = BTreeMap::new();
    for (s, scenario) in scenarios.iter().enumerate() {
        for (k, kind) in KINDS.iter().enumerate() {
            // A device write from the console is a need of its own.
            let mut needs = scenario.needs.clone();
            if scenario
                .steps
                .iter()
                .any(|(_, _, step)| matches!(step, Step::DeviceWrites { .. }))
            {
                needs.push("console-write".into());
            }
            if !kinds.is_empty() && !kinds.iter().any(|name| name == kind.name()) {
                results.insert(
                    (s, k),
                    Outcome::NotApplicable("not selected (--kind)".into()),
                );
            } else if *kind == Kind::EmbassyNetSim
                && let Some(reason) = &sim_unavailable
            {
                results.insert((s, k), Outcome::NotApplicable(reason.clone()));
            } else if let Some(reason) = needs.iter().find_map(|need| kind.lacks(need)) {
                results.insert((s, k), Outcome::NotApplicable(reason.into()));
            } else {
                queue.push_back((s, k));
            }
        }
    }
    let jobs: usize = std::env::var("CONFORMANCE_JOBS")
        .ok()
        .and_then(|jobs| jobs.parse().ok())
        .unwrap_or(6)
        .max(1);
    println!(
        "==> conformance: {} scenarios x {} device kinds, {} cases to run, {jobs} at a time",
        scenarios.len(),
        KINDS.len(),
        queue.len()
    );
    let queue = Arc::new(Mutex::new(queue));
    let finished = Arc::new(Mutex::new(Vec::new()));
    let scenarios = Arc::new(scenarios);
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            let (queue, finished, scenarios) = (&queue, &finished, &scenarios);
            let (launch, server_binary, scratch) = (&launch, &server_binary, &scratch);
            scope.spawn(move || {
                loop {
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
                    let Some((s, k)) = next else { break };
                    let scenario = &scenarios[s];
                    let kind = KINDS[k];
                    let dir = scratch.join(format!("{}-{}", scenario.name, kind.name()));
                    let mut launch = launch.clone();
                    launch.kind = kind;
                    launch.stderr = dir.join("device.log");
                    let outcome = run_case(scenario, &launch, server_binary, &dir);
                    match &outcome {
                        Outcome::Pass(time) => println!(
                            "  pass  {} x {} ({:.1} s)",
                            scenario.name,
                            kind.name(),
                            time.as_secs_f64()
                        ),
                        Outcome::Fail(time, why) => println!(
                            "  FAIL  {} x {} ({:.1} s): {why}",
                            scenario.name,
                            kind.name(),
                            time.as_secs_f64()
                        ),
                        Outcome::NotApplicable(_) => {}
                    }
                    if matches!(outcome, Outcome::Pass(_)) {
                        let _ = std::fs::remove_dir_all(&dir);
                    }
                    finished
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(((s, k), outcome));
                }
            });
        }
    });
    for (key, outcome) in finished.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
        results.insert(key, outcome);
    }
    let failures = print_table(&scenarios, &results);
    let elapsed = started.elapsed().as_secs_f64();
    if failures == 0 {
        let _ = std::fs::remove_dir_all(&scratch);
        println!("<== conformance: ok in {elapsed:.1} s");
        Ok(())
    } else {
        println!(
            "<== conformance: {failures} FAILED in {elapsed:.1} s (logs under {})",
            scratch.display()
        );
        bail!("{failures} conformance cases failed")
    }
}

fn print_table(scenarios: &[Scenario], results: &BTreeMap<(usize, usize), Outcome>) -> usize {
    let mut reasons: Vec<String> = Vec::new();
    let mut failures = 0;
    let width = scenarios
        .iter()
        .map(|s| s.name.len() + s.spec.len() + 3)
        .max()
        .unwrap_or(10);
    let mut header = format!("\n{:width$}", "scenario (SPEC)");
    for kind in KINDS {
        header.push_str(&format!(" | {:20}", kind.name()));
    }
    println!("{header}");
    println!("{}", "-".repeat(header.len()));
    for (s, scenario) in scenarios.iter().enumerate() {
        let label = if scenario.spec.is_empty() {
            scenario.name.clone()
        } else {
            format!("{} ({})", scenario.name, scenario.spec)
        };
        let mut row = format!("{label:width$}");
        for k in 0..KINDS.len() {
            let cell = match results.get(&(s, k)) {
                Some(Outcome::Pass(time)) => format!("pass {:.1} s", time.as_secs_f64()),
                Some(Outcome::Fail(..)) => {
                    failures += 1;
                    "FAIL".to_string()
                }
                Some(Outcome::NotApplicable(reason)) => {
                    let index = match reasons.iter().position(|r| r == reason) {
                        Some(index) => index,
                        None => {
                            reasons.push(reason.clone());
                            reasons.len() - 1
                        }
                    };
                    format!("n/a [{}]", index + 1)
                }
                None => "-".to_string(),
            };
            row.push_str(&format!(" | {cell:20}"));
        }
        println!("{row}");
    }
    for (index, reason) in reasons.iter().enumerate() {
        println!("  n/a [{}]: {reason}", index + 1);
    }
    println!(
        "  blynklib and blynk-library-python run the light's logic in the runner over their \
         drivers and call sync_all when connected, as a classic sketch's BLYNK_CONNECTED does"
    );
    for (s, scenario) in scenarios.iter().enumerate() {
        for (k, kind) in KINDS.iter().enumerate() {
            if let Some(Outcome::Fail(_, why)) = results.get(&(s, k)) {
                println!("\nFAILED {} x {}: {why}", scenario.name, kind.name());
            }
        }
    }
    failures
}

/// One device of a case: its proxy, its token and name on the server, its process once started.
struct Slot {
    // The device first: it goes before its proxy and TAP device.
    device: Option<Device>,
    proxy: Arc<Proxy>,
    name: String,
    token: String,
    /// The simulated device's TAP device (in the run's namespace), its name and network number.
    tap: Option<(crate::netns::NsTap, String, u32)>,
}

/// Everything one case runs; dropping it kills the processes.
struct Case<'a> {
    launch: &'a Launch,
    slots: BTreeMap<String, Slot>,
    flapper: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
    /// When the simulated device's real packet loss ends.
    loss_until: Option<Instant>,
    /// The times of the `measured ... ago` writes: (device, pin, value) to Unix ms.
    measured: BTreeMap<(String, String, String), i64>,
    // Last, so the devices go before the server.
    server: Server,
}

impl Drop for Case<'_> {
    fn drop(&mut self) {
        if let Some((stop, flapper)) = self.flapper.take() {
            stop.store(true, Ordering::SeqCst);
            let _ = flapper.join();
        }
        self.slots.clear();
    }
}

fn run_case(scenario: &Scenario, launch: &Launch, binary: &Path, dir: &Path) -> Outcome {
    let started = Instant::now();
    let _ = std::fs::remove_dir_all(dir);
    let mut case = match start_case(launch, binary, dir) {
        Ok(case) => case,
        Err(error) => return Outcome::Fail(started.elapsed(), format!("setup: {error:#}")),
    };
    for (line, text, step) in &scenario.steps {
        if let Err(error) = case.step(step) {
            let mut why = format!("line {line} `{text}`: {error:#}");
            for (name, slot) in &case.slots {
                if let Some(device) = &slot.device {
                    why.push_str(&format!(
                        "\n    device {name} showed: {}{}",
                        device.tail(12),
                        if device.exited() { " (exited)" } else { "" }
                    ));
                }
            }
            why.push_str(&format!(
                "\n    logs: {}\n    server log tail:\n{}",
                dir.display(),
                case.server.log_tail(8)
            ));
            return Outcome::Fail(started.elapsed(), why);
        }
    }
    Outcome::Pass(started.elapsed())
}

fn start_case<'a>(launch: &'a Launch, binary: &Path, dir: &Path) -> Result<Case<'a>> {
    let server = Server::start(binary, dir)?;
    let mut case = Case {
        launch,
        slots: BTreeMap::new(),
        flapper: None,
        loss_until: None,
        measured: BTreeMap::new(),
        server,
    };
    let token = case.server.token.clone();
    let slot = case.new_slot("demo", token)?;
    case.slots.insert("A".into(), slot);
    Ok(case)
}

impl Case<'_> {
    /// A device's slot: its proxy on 127.0.0.1, or for the simulated device a TAP device of
    /// its own in the run's namespace, with the proxy listening on the TAP's host address
    /// there (the device cannot reach loopback) and forwarding to the server on loopback.
    fn new_slot(&self, name: &str, token: String) -> Result<Slot> {
        let (proxy, tap) = if self.launch.kind == Kind::EmbassyNetSim {
            let netns = self
                .launch
                .netns
                .as_deref()
                .context("the simulated device needs the run's namespace")?;
            let net = NEXT_NET.fetch_add(1, Ordering::SeqCst);
            if net > 250 {
                bail!("out of TAP networks");
            }
            let tap_name = format!("bconf{net}");
            let tap = crate::netns::NsTap::create(netns, &tap_name, &format!("10.213.{net}.1/24"))?;
            let address = std::net::SocketAddr::from(([10, 213, net as u8, 1], 0));
            let listener = crate::netns::bind_in(netns, address)?;
            (
                Proxy::start_on(listener, self.upstream())?,
                Some((tap, tap_name, net)),
            )
        } else {
            (Proxy::start("127.0.0.1", self.upstream())?, None)
        };
        Ok(Slot {
            device: None,
            proxy: Arc::new(proxy),
            name: name.to_string(),
            token,
            tap,
        })
    }

    /// Where this kind's devices connect on the server.
    fn upstream(&self) -> std::net::SocketAddr {
        match self.launch.kind {
            Kind::BlynkDevice | Kind::EmbassyNetSim => self.server.native,
            Kind::PahoMqtt => self.server.mqtt,
            _ => self.server.http,
        }
    }

    fn slot(&self, name: &str) -> Result<&Slot> {
        self.slots
            .get(name)
            .with_context(|| format!("no device {name} (create it first)"))
    }

    fn device(&self, name: &str) -> Result<&Device> {
        self.slot(name)?
            .device
            .as_ref()
            .with_context(|| format!("device {name} is not started"))
    }

    fn mark_all(&self) {
        for slot in self.slots.values() {
            if let Some(device) = &slot.device {
                device.mark();
            }
        }
    }

    fn server_moved(&self) {
        let upstream = self.upstream();
        for slot in self.slots.values() {
            slot.proxy.set_upstream(upstream);
        }
    }

    fn step(&mut self, step: &Step) -> Result<()> {
        match step {
            Step::StartDevice(name) => {
                let slot = self.slot(name)?;
                let tap = slot.tap.as_ref().map(|(_, tap, net)| (tap.clone(), *net));
                let device = Device::start(self.launch, slot.proxy.address(), &slot.token, tap)?;
                if let Some(slot) = self.slots.get_mut(name) {
                    slot.device = Some(device);
                }
            }
            Step::RestartDevice(name) => {
                let device = self
                    .slots
                    .get_mut(name)
                    .and_then(|slot| slot.device.as_mut())
                    .with_context(|| format!("device {name} is not started"))?;
                device.restart()?;
            }
            Step::CreateTemplate(name, json) => {
                let fields = json.trim().trim_start_matches('{');
                let body = format!(r#"{{"name": "{name}", {fields}"#);
                let (status, body) = self.server.app("POST", "/api/templates", Some(&body))?;
                if status != 200 && status != 201 {
                    bail!("creating template {name}: {status} {body}");
                }
            }
            Step::CreateDevice(name, template) => {
                let api_name = name.to_lowercase();
                let body = format!(r#"{{"name": "{api_name}", "template": "{template}"}}"#);
                let (status, body) = self.server.app("POST", "/api/devices", Some(&body))?;
                if status != 200 && status != 201 {
                    bail!("creating device {name}: {status} {body}");
                }
                let token = json_field(&body, "token").context("no token")?;
                let slot = self.new_slot(&api_name, token)?;
                self.slots.insert(name.clone(), slot);
            }
            Step::AppWrites {
                device,
                pin,
                value,
                status,
            } => {
                let name = &self.slot(device)?.name;
                let json_value = if value.parse::<f64>().is_ok() {
                    value.clone()
                } else {
                    format!("\"{value}\"")
                };
                let wait_ms = match status.as_deref() {
                    Some("delivered") => 1000,
                    // Long enough for a short ttl to pass.
                    Some("expired") => 5000,
                    _ => 0,
                };
                let body = format!(r#"{{"value": {json_value}, "wait_ms": {wait_ms}}}"#);
                let path = format!("/api/devices/{name}/values/{pin}");
                let (code, body) = self.server.app("PUT", &path, Some(&body))?;
                if code != 200 {
                    bail!("app write refused: {code} {body}");
                }
                if let Some(status) = status
                    && json_field(&body, "status").as_deref() != Some(status)
                {
                    bail!("the app write was answered {body}, not `{status}`");
                }
            }
            Step::PressButton(name) => self.device(name)?.press()?,
            Step::DeviceWrites { device, pin, value } => self.device(device)?.write(pin, value)?,
            Step::DeviceSyncs { device, pins } => self.device(device)?.sync(pins)?,
            Step::DeviceWritesMeasured {
                device,
                pin,
                value,
                age,
            } => {
                let at = unix_ms() - i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
                self.device(device)?.write_measured(pin, value, at)?;
                self.measured
                    .insert((device.clone(), pin.clone(), value.clone()), at);
            }
            Step::DeviceBridges {
                device,
                target,
                pin,
                value,
            } => {
                let token = self.slot(target)?.token.clone();
                self.device(device)?.bridge(&token, pin, value)?;
            }
            Step::DeviceAsksTime { device, what } => self.device(device)?.ask_time(what)?,
            Step::CutLink(name) => {
                self.mark_all();
                self.slot(name)?.proxy.cut();
            }
            Step::StallLink(name) => {
                self.mark_all();
                self.slot(name)?.proxy.stall();
            }
            Step::RestoreLink(name) => {
                self.mark_all();
                self.slot(name)?.proxy.restore();
            }
            Step::RestartServer => {
                self.mark_all();
                self.server.restart()?;
                self.server_moved();
            }
            Step::KillServer => {
                self.mark_all();
                self.server.kill();
            }
            Step::StartServer => {
                self.mark_all();
                self.server.start_again()?;
                self.server_moved();
            }
            Step::PacketLoss { percent, duration } if self.launch.kind == Kind::EmbassyNetSim => {
                // Real loss: the simulated device drops that share of its Ethernet frames.
                self.mark_all();
                for slot in self.slots.values() {
                    if let Some(device) = &slot.device {
                        device.set_loss(*percent)?;
                    }
                }
                self.loss_until = Some(Instant::now() + *duration);
            }
            Step::PacketLoss { percent, duration } => {
                self.mark_all();
                let proxies: Vec<Arc<Proxy>> =
                    self.slots.values().map(|slot| slot.proxy.clone()).collect();
                let stop = Arc::new(AtomicBool::new(false));
                let (percent, duration, flag) = (*percent, *duration, stop.clone());
                let handle = std::thread::spawn(move || flap(&proxies, percent, duration, &flag));
                self.flapper = Some((stop, handle));
            }
            Step::EndPacketLoss if self.loss_until.is_some() => {
                if let Some(until) = self.loss_until.take() {
                    std::thread::sleep(until.saturating_duration_since(Instant::now()));
                }
                for slot in self.slots.values() {
                    if let Some(device) = &slot.device {
                        device.set_loss(0)?;
                    }
                }
                self.mark_all();
            }
            Step::EndPacketLoss => {
                if let Some((_, handle)) = self.flapper.take() {
                    let _ = handle.join();
                }
                self.mark_all();
            }
            Step::Wait(time) => std::thread::sleep(*time),
            Step::ExpectWithin {
                device,
                what,
                within,
            } => {
                if !self.wait_for(device, what, *within)? {
                    bail!("not seen within {within:?}{}", self.app_view(device, what));
                }
            }
            Step::ExpectFor {
                device,
                what,
                during,
            } => {
                let deadline = Instant::now() + *during;
                loop {
                    if !self.holds(device, what)? {
                        bail!("stopped holding{}", self.app_view(device, what));
                    }
                    if Instant::now() >= deadline {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        Ok(())
    }

    /// What the app reads, for failure messages of app expectations.
    fn app_view(&self, device: &str, what: &Expect) -> String {
        let Ok(slot) = self.slot(device) else {
            return String::new();
        };
        let path = match what {
            Expect::AppValue(pin, _) => format!("/api/devices/{}/values/{pin}", slot.name),
            Expect::AppOnline(_) => format!("/api/devices/{}", slot.name),
            Expect::AppHistory(pin, _) => format!("/api/devices/{}/history/{pin}", slot.name),
            _ => return String::new(),
        };
        match self.server.app("GET", &path, None) {
            Ok((status, body)) => {
                let body: String = body.chars().take(200).collect();
                format!("; the app reads {status} {body}")
            }
            Err(error) => format!("; the app read failed: {error:#}"),
        }
    }

    fn holds(&self, device: &str, what: &Expect) -> Result<bool> {
        let slot = self.slot(device)?;
        Ok(match what {
            Expect::AppValue(pin, value) => {
                let path = format!("/api/devices/{}/values/{pin}", slot.name);
                match self.server.app("GET", &path, None) {
                    Ok((200, body)) => {
                        json_field(&body, "value").is_some_and(|got| same_value(&got, value))
                    }
                    _ => false,
                }
            }
            Expect::AppOnline(online) => {
                let path = format!("/api/devices/{}", slot.name);
                match self.server.app("GET", &path, None) {
                    Ok((200, body)) => {
                        json_field(&body, "online").as_deref()
                            == Some(if *online { "true" } else { "false" })
                    }
                    _ => false,
                }
            }
            Expect::AppHistory(pin, value) => {
                let path = format!("/api/devices/{}/history/{pin}?limit=100", slot.name);
                let measured = self
                    .measured
                    .get(&(device.to_string(), pin.clone(), value.clone()));
                match self.server.app("GET", &path, None) {
                    Ok((200, body)) => history_has(&body, value, measured.copied()),
                    _ => false,
                }
            }
            _ => self.device(device)?.check(what),
        })
    }

    fn wait_for(&self, device: &str, what: &Expect, within: Duration) -> Result<bool> {
        if !matches!(
            what,
            Expect::AppValue(..) | Expect::AppOnline(_) | Expect::AppHistory(..)
        ) {
            return Ok(device::wait_until(self.device(device)?, what, within));
        }
        let deadline = Instant::now() + within;
        loop {
            if self.holds(device, what)? {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Whether a history answer (`[{"value": .., "at": ..}, ...]`) holds `value`, at `measured`
/// when given.
fn history_has(body: &str, value: &str, measured: Option<i64>) -> bool {
    body.split('}').any(|point| {
        json_field(point, "value").is_some_and(|got| same_value(&got, value))
            && measured.is_none_or(|at| {
                json_field(point, "at").and_then(|got| got.parse::<i64>().ok()) == Some(at)
            })
    })
}

/// The machine's clock, as the server reads it.
fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// The proxy-made packet loss: in 500 ms slots, the links are cut with probability `percent`.
fn flap(proxies: &[Arc<Proxy>], percent: u32, duration: Duration, stop: &AtomicBool) {
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    let slots = (duration.as_millis() / 500).max(1);
    let mut down = false;
    for _ in 0..slots {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        // xorshift64
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let cut = seed % 100 < u64::from(percent);
        if cut && !down {
            proxies.iter().for_each(|proxy| proxy.cut());
        } else if !cut && down {
            proxies.iter().for_each(|proxy| proxy.restore());
        }
        down = cut;
        std::thread::sleep(Duration::from_millis(500));
    }
    proxies.iter().for_each(|proxy| proxy.restore());
}
