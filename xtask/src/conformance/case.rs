//! One case of the suite: a scenario run for one device kind on its own server (or nodes, see
//! `nodes.rs`), data directory and proxies, step by step, every wait bounded; dropping it kills
//! what it started.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::device::{self, Device, Kind, Launch};
use super::nodes::{Servers, Topology};
use super::proxy::Proxy;
use super::scenario::{Expect, Scenario, Step};
use super::server::{Server, same_value};
use super::{NEXT_NET, Outcome};
use super::{json_field, json_text};

/// One device of a case: its proxy, its token and name on the server, its process once started.
pub(super) struct Slot {
    // The device first: it goes before its proxy and TAP device.
    device: Option<Device>,
    proxy: Arc<Proxy>,
    name: String,
    token: String,
    /// Its place among the case's devices (the demo is 0): which node it and its app use.
    index: usize,
    /// The simulated device's TAP device (in the run's namespace), its name and network number.
    tap: Option<(crate::netns::NsTap, String, u32)>,
}

/// Everything one case runs; dropping it kills the processes.
pub(super) struct Case<'a> {
    launch: &'a Launch,
    slots: BTreeMap<String, Slot>,
    flapper: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
    /// When the simulated device's real packet loss ends.
    loss_until: Option<Instant>,
    /// The times of the `measured ... ago` writes: (device, pin, value) to Unix ms.
    measured: BTreeMap<(String, String, String), i64>,
    // Last, so the devices go before the servers.
    servers: Servers,
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

pub(super) fn run_case(
    scenario: &Scenario,
    launch: &Launch,
    topology: Topology<'_>,
    binary: &Path,
    dir: &Path,
) -> Outcome {
    let started = Instant::now();
    let _ = std::fs::remove_dir_all(dir);
    let mut case = match start_case(launch, topology, binary, dir) {
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
                case.servers.log_tails(8)
            ));
            return Outcome::Fail(started.elapsed(), why);
        }
    }
    Outcome::Pass(started.elapsed())
}

pub(super) fn start_case<'a>(
    launch: &'a Launch,
    topology: Topology<'_>,
    binary: &Path,
    dir: &Path,
) -> Result<Case<'a>> {
    let servers = Servers::start(topology, binary, dir)?;
    let mut case = Case {
        launch,
        slots: BTreeMap::new(),
        flapper: None,
        loss_until: None,
        measured: BTreeMap::new(),
        servers,
    };
    let token = case.servers.first().token.clone();
    let slot = case.new_slot("demo", token, 0)?;
    case.slots.insert("A".into(), slot);
    Ok(case)
}

impl Case<'_> {
    /// A device's slot: its proxy on 127.0.0.1, or for the simulated device a TAP device of
    /// its own in the run's namespace, with the proxy listening on the TAP's host address
    /// there (the device cannot reach loopback) and forwarding to the server on loopback.
    /// `index` is its place among the case's devices.
    pub(super) fn new_slot(&self, name: &str, token: String, index: usize) -> Result<Slot> {
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
                Proxy::start_on(listener, self.upstream(index))?,
                Some((tap, tap_name, net)),
            )
        } else {
            (Proxy::start("127.0.0.1", self.upstream(index))?, None)
        };
        Ok(Slot {
            device: None,
            proxy: Arc::new(proxy),
            name: name.to_string(),
            token,
            index,
            tap,
        })
    }

    /// Where device `index` of this kind connects on its server.
    pub(super) fn upstream(&self, index: usize) -> std::net::SocketAddr {
        let server = self.servers.device_node(index);
        match self.launch.kind {
            Kind::BlynkDevice | Kind::EmbassyNetSim => server.native,
            Kind::PahoMqtt => server.mqtt,
            _ => server.http,
        }
    }

    /// The server the app reads and writes device `name` through.
    pub(super) fn app_server(&self, name: &str) -> Result<&Server> {
        Ok(self.servers.app_node(self.slot(name)?.index))
    }

    /// The places of the case's devices.
    fn indices(&self) -> Vec<usize> {
        self.slots.values().map(|slot| slot.index).collect()
    }

    pub(super) fn slot(&self, name: &str) -> Result<&Slot> {
        self.slots
            .get(name)
            .with_context(|| format!("no device {name} (create it first)"))
    }

    pub(super) fn device(&self, name: &str) -> Result<&Device> {
        self.slot(name)?
            .device
            .as_ref()
            .with_context(|| format!("device {name} is not started"))
    }

    pub(super) fn mark_all(&self) {
        for slot in self.slots.values() {
            if let Some(device) = &slot.device {
                device.mark();
            }
        }
    }

    pub(super) fn server_moved(&self) {
        for slot in self.slots.values() {
            slot.proxy.set_upstream(self.upstream(slot.index));
        }
    }

    pub(super) fn step(&mut self, step: &Step) -> Result<()> {
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
                let (status, body) =
                    self.servers
                        .first()
                        .app("POST", "/api/templates", Some(&body))?;
                if status != 200 && status != 201 {
                    bail!("creating template {name}: {status} {body}");
                }
            }
            Step::CreateDevice(name, template) => {
                let api_name = name.to_lowercase();
                let body = format!(r#"{{"name": "{api_name}", "template": "{template}"}}"#);
                let (status, body) =
                    self.servers
                        .first()
                        .app("POST", "/api/devices", Some(&body))?;
                if status != 200 && status != 201 {
                    bail!("creating device {name}: {status} {body}");
                }
                let token = json_field(&body, "token").context("no token")?;
                let slot = self.new_slot(&api_name, token, self.slots.len())?;
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
                let (code, body) = self.app_server(device)?.app("PUT", &path, Some(&body))?;
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
                let indices = self.indices();
                self.servers.restart(indices.into_iter())?;
                self.server_moved();
            }
            Step::KillServer => {
                self.mark_all();
                let indices = self.indices();
                self.servers.kill(indices.into_iter());
            }
            Step::StartServer => {
                self.mark_all();
                let indices = self.indices();
                self.servers.start_again(indices.into_iter())?;
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
    pub(super) fn app_view(&self, device: &str, what: &Expect) -> String {
        let Ok(slot) = self.slot(device) else {
            return String::new();
        };
        let path = match what {
            Expect::AppValue(pin, _) => format!("/api/devices/{}/values/{pin}", slot.name),
            Expect::AppOnline(_) => format!("/api/devices/{}", slot.name),
            Expect::AppHistory(pin, _) => format!("/api/devices/{}/history/{pin}", slot.name),
            _ => return String::new(),
        };
        match self.servers.app_node(slot.index).app("GET", &path, None) {
            Ok((status, body)) => {
                let body: String = body.chars().take(200).collect();
                format!("; the app reads {status} {body}")
            }
            Err(error) => format!("; the app read failed: {error:#}"),
        }
    }

    pub(super) fn holds(&self, device: &str, what: &Expect) -> Result<bool> {
        let slot = self.slot(device)?;
        let server = self.servers.app_node(slot.index);
        Ok(match what {
            Expect::AppValue(pin, value) => {
                let path = format!("/api/devices/{}/values/{pin}", slot.name);
                match server.app("GET", &path, None) {
                    Ok((200, body)) => {
                        json_field(&body, "value").is_some_and(|got| same_value(&got, value))
                    }
                    _ => false,
                }
            }
            Expect::AppOnline(online) => {
                let path = format!("/api/devices/{}", slot.name);
                match server.app("GET", &path, None) {
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
                match server.app("GET", &path, None) {
                    Ok((200, body)) => history_has(&body, value, measured.copied()),
                    _ => false,
                }
            }
            _ => self.device(device)?.check(what),
        })
    }

    pub(super) fn wait_for(&self, device: &str, what: &Expect, within: Duration) -> Result<bool> {
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
pub(super) fn history_has(body: &str, value: &str, measured: Option<i64>) -> bool {
    let points: Vec<serde_json::Value> = serde_json::from_str(body).unwrap_or_default();
    points.iter().any(|point| {
        point
            .get("value")
            .is_some_and(|got| same_value(&json_text(got), value))
            && measured.is_none_or(|at| point["at"].as_i64() == Some(at))
    })
}

/// The machine's clock, as the server reads it.
pub(super) fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// The proxy-made packet loss: in 500 ms slots, the links are cut with probability `percent`.
pub(super) fn flap(proxies: &[Arc<Proxy>], percent: u32, duration: Duration, stop: &AtomicBool) {
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
