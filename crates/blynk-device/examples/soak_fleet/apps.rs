//! The apps: writers of V0 over the HTTP app API (`PUT /api/devices/{name}/values/V0`), each
//! device's values 1, 2, 3, ... in order from one writer, and the final check of every device
//! and every acknowledged write against what the server holds.
//!
//! An HTTP 200 is the server's acknowledgement (the write is durable, SPEC 3.10). Values only
//! grow per device, so "no acknowledged write lost" reads: the server's V0 is at least the last
//! acknowledged value, and every acknowledged value is in the pin's history.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::devices::Fleet;
use crate::http::Client;

/// App connections per process.
const WRITERS: usize = 4;
/// Each device gets an app write about this often.
const EVERY_DEVICE: Duration = Duration::from_secs(5);

/// What the apps did to one device.
#[derive(Default)]
struct Written {
    /// The next value to write.
    next: i64,
    /// The acknowledged values, in order.
    acknowledged: Vec<i64>,
    /// Whether the last write was answered 200.
    last_answered: bool,
    /// Writes tried, and those without an answer (timeouts, dropped connections, errors).
    tried: u64,
    unanswered: u64,
}

/// The app writers of this process's devices.
pub struct Apps {
    server: SocketAddr,
    key: String,
    source: Option<IpAddr>,
    names: Vec<String>,
    written: Rc<RefCell<HashMap<String, Written>>>,
}

impl Apps {
    pub fn new(
        server: SocketAddr,
        key: String,
        source: Option<IpAddr>,
        devices: &[(String, String)],
    ) -> Apps {
        let names: Vec<String> = devices.iter().map(|(name, _)| name.clone()).collect();
        let written = names
            .iter()
            .map(|name| {
                let written = Written {
                    next: 1,
                    last_answered: true,
                    ..Written::default()
                };
                (name.clone(), written)
            })
            .collect();
        Apps {
            server,
            key,
            source,
            names,
            written: Rc::new(RefCell::new(written)),
        }
    }

    /// The last V0 value the server acknowledged for `name`.
    pub fn last_acknowledged(&self, name: &str) -> Option<i64> {
        self.written
            .borrow()
            .get(name)
            .and_then(|written| written.acknowledged.last().copied())
    }

    /// Writes for `duration`: [`WRITERS`] connections, each over its share of the devices.
    pub async fn run(&self, duration: Duration) {
        let until = Instant::now() + duration;
        let mut tasks = Vec::new();
        for writer in 0..WRITERS {
            let names: Vec<String> = self
                .names
                .iter()
                .skip(writer)
                .step_by(WRITERS)
                .cloned()
                .collect();
            if names.is_empty() {
                continue;
            }
            let mut client = Client::new(self.server, self.key.clone(), self.source);
            let written = self.written.clone();
            let gap = EVERY_DEVICE / u32::try_from(names.len()).unwrap_or(1);
            tasks.push(tokio::task::spawn_local(async move {
                for name in names.iter().cycle() {
                    let started = Instant::now();
                    if started >= until {
                        break;
                    }
                    write(&mut client, &written, name).await;
                    tokio::time::sleep(gap.saturating_sub(started.elapsed())).await;
                }
            }));
        }
        for task in tasks {
            let _ = task.await;
        }
    }

    /// Rewrites every device whose last write went unanswered until one is acknowledged (for
    /// at most two minutes), so the value each device must end with is known.
    pub async fn finish(&self) {
        let mut client = Client::new(self.server, self.key.clone(), self.source);
        let deadline = Instant::now() + Duration::from_secs(120);
        for name in &self.names {
            while Instant::now() < deadline && !self.written.borrow()[name].last_answered {
                write(&mut client, &self.written, name).await;
            }
        }
    }
}

/// One app write of the next value of `name`'s V0.
async fn write(client: &mut Client, written: &RefCell<HashMap<String, Written>>, name: &str) {
    let value = {
        let mut written = written.borrow_mut();
        let Some(device) = written.get_mut(name) else {
            return;
        };
        device.tried += 1;
        device.next += 1;
        device.next - 1
    };
    let path = format!("/api/devices/{name}/values/V0");
    let answer = client
        .request("PUT", &path, Some(&format!(r#"{{"value": {value}}}"#)))
        .await;
    let mut written = written.borrow_mut();
    let Some(device) = written.get_mut(name) else {
        return;
    };
    device.last_answered = matches!(answer, Ok((200, _)));
    match answer {
        Ok((200, _)) => device.acknowledged.push(value),
        Ok((status, body)) => {
            device.unanswered += 1;
            eprintln!("app write {name} V0 = {value}: {status} {body}");
        }
        Err(_) => device.unanswered += 1,
    }
}

/// One pin's value as the server holds it (a number), from `GET /api/devices/{name}/values`.
fn server_value(values: &serde_json::Value, pin: &str) -> Option<i64> {
    values.get(pin)?.get("value")?.as_i64()
}

/// The values of a pin's history (`GET .../history/{pin}?limit=1000`).
async fn history(client: &mut Client, name: &str, pin: &str) -> Result<Vec<i64>, String> {
    let path = format!("/api/devices/{name}/history/{pin}?limit=1000");
    match client.request("GET", &path, None).await? {
        (200, body) => {
            let points: serde_json::Value =
                serde_json::from_str(&body).map_err(|e| e.to_string())?;
            Ok(points
                .as_array()
                .map(|points| {
                    points
                        .iter()
                        .filter_map(|point| point.get("value")?.as_i64())
                        .collect()
                })
                .unwrap_or_default())
        }
        (status, body) => Err(format!("{status} {body}")),
    }
}

/// Compares every device and every acknowledged write with the server; one `result` line, and
/// a `problem` line (before it) for each of the first few differences.
pub async fn check(
    fleet: &Fleet,
    apps: &Apps,
    server: SocketAddr,
    key: String,
    source: Option<IpAddr>,
) -> String {
    let mut client = Client::new(server, key, source);
    let (mut state_differs, mut app_lost, mut device_lost, mut unreadable) = (0, 0, 0, 0);
    let mut problems = 0;
    let mut problem = |text: String| {
        problems += 1;
        if problems <= 10 {
            println!("problem {text}");
        }
    };
    // Nothing writes any more: the record is taken out of its cell.
    let written = apps.written.take();
    for device in &fleet.devices {
        let name = &device.name;
        let values = match client
            .request("GET", &format!("/api/devices/{name}/values"), None)
            .await
        {
            Ok((200, body)) => serde_json::from_str::<serde_json::Value>(&body).ok(),
            _ => None,
        };
        let (Some(values), Ok(v0_history), Ok(v1_history)) = (
            values,
            history(&mut client, name, "V0").await,
            history(&mut client, name, "V1").await,
        ) else {
            unreadable += 1;
            problem(format!("{name}: the server's values could not be read"));
            continue;
        };
        let (server_v0, server_v1) = (server_value(&values, "V0"), server_value(&values, "V1"));
        let app = &written[name];
        let device_written = device.acknowledged.borrow();
        // The device's state equals the server's: what it received on V0, what it wrote on V1.
        if device.v0.get() != server_v0
            || (!device.waiting.get() && device_written.last().copied() != server_v1)
        {
            state_differs += 1;
            problem(format!(
                "{name}: the device holds V0 {:?} and wrote V1 {:?}, the server holds V0 {server_v0:?} V1 {server_v1:?}",
                device.v0.get(),
                device_written.last()
            ));
        }
        let app_missing = app
            .acknowledged
            .iter()
            .filter(|value| !v0_history.contains(value))
            .count();
        if app_missing > 0 || server_v0 < app.acknowledged.last().copied() {
            app_lost += app_missing.max(1);
            problem(format!(
                "{name}: {app_missing} acknowledged app writes missing from V0's history; V0 = {server_v0:?}, last acknowledged {:?}",
                app.acknowledged.last()
            ));
        }
        let device_missing = device_written
            .iter()
            .filter(|value| !v1_history.contains(value))
            .count();
        if device_missing > 0 || server_v1 < device_written.last().copied() {
            device_lost += device_missing.max(1);
            problem(format!(
                "{name}: {device_missing} acknowledged device writes missing from V1's history; V1 = {server_v1:?}, last acknowledged {:?}",
                device_written.last()
            ));
        }
    }
    let sum = |field: fn(&Written) -> u64| written.values().map(field).sum::<u64>();
    let app_acknowledged = sum(|w| w.acknowledged.len() as u64);
    let device_acknowledged: usize = fleet
        .devices
        .iter()
        .map(|device| device.acknowledged.borrow().len())
        .sum();
    let logins: u32 = fleet.devices.iter().map(|d| d.blynk.status().logins).sum();
    let refused: u32 = fleet.devices.iter().map(|d| d.blynk.refused_count()).sum();
    let overflow: u32 = fleet.devices.iter().map(|d| d.blynk.overflow_count()).sum();
    let connected = fleet
        .devices
        .iter()
        .filter(|d| d.blynk.is_connected())
        .count();
    format!(
        "result devices={} connected={connected} logins={logins} app_tried={} \
         app_acknowledged={app_acknowledged} app_unanswered={} \
         device_acknowledged={device_acknowledged} refused={refused} overflow={overflow} \
         state_differs={state_differs} app_lost={app_lost} device_lost={device_lost} \
         unreadable={unreadable}",
        fleet.devices.len(),
        sum(|w| w.tried),
        sum(|w| w.unanswered),
    )
}
