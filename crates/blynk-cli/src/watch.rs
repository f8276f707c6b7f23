//! `blynk watch`: the app WebSocket. Sends `{"type":"watch","devices":[..]}`, prints the
//! snapshot, then every live value, presence change, property and event of the watched devices
//! until Ctrl-C, the server closing the connection, `--count` events or `--for` seconds.
//!
//! With `--json` every event the server sends about the watched devices (the snapshot
//! included) is printed as one JSON object per line: the events of a batch message come out one
//! a line, never the batch around them.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use blynk_client::Error;
use blynk_client::events::json_events;
use serde_json::{Value, json};

use crate::cli::WatchArgs;
use crate::client::{Client, explain};
use crate::output::{self, cell, provenance};

/// A watched device: its name and its datastreams' names, by pin.
struct Watched {
    name: String,
    pin_names: BTreeMap<String, String>,
}

/// Why watching ended without an error.
enum Stop {
    Count,
    Time,
    Interrupted,
}

/// Runs `blynk watch`.
pub async fn watch(client: &Client, args: &WatchArgs, json: bool) -> Result<ExitCode> {
    let deadline = match args.duration {
        Some(seconds) => Some(
            Duration::try_from_secs_f64(seconds)
                .map_err(|_| anyhow!("--for takes a number of seconds, not {seconds}"))?,
        ),
        None => None,
    };
    let deadline = deadline.map(|limit| tokio::time::Instant::now() + limit);
    if args.count == Some(0) {
        bail!("--count must be at least 1");
    }

    let mut socket = client.inner().websocket().await.map_err(explain)?;
    let devices = if args.all {
        json!("all")
    } else {
        json!(args.devices)
    };
    socket
        .watch(&devices)
        .await
        .context("sending the watch request")?;

    let mut watched: BTreeMap<i64, Watched> = BTreeMap::new();
    let mut snapshot_seen = false;
    let mut count = 0u64;
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);
    let stop = 'read: loop {
        let sleep = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        let message = tokio::select! {
            _ = sleep => break Stop::Time,
            _ = &mut interrupt => break Stop::Interrupted,
            message = socket.recv() => message,
        };
        let text = match message {
            Ok(text) => text,
            Err(Error::Closed { code, reason }) => {
                bail!("the server closed the connection (code {code}: {reason})")
            }
            Err(error) => bail!("the connection to the server broke: {error}"),
        };
        for (event, text) in json_events(&text) {
            let kind = event["type"].as_str().unwrap_or_default();
            match kind {
                "snapshot" => {
                    let devices = event["devices"].as_array().cloned().unwrap_or_default();
                    if !snapshot_seen {
                        snapshot_seen = true;
                        let missing = missing_devices(&args.devices, &devices);
                        if !missing.is_empty() {
                            bail!("not found: device {}", missing.join(", "));
                        }
                    }
                    for device in &devices {
                        if let Some(id) = device["id"].as_i64() {
                            watched.insert(id, watched_device(device));
                        }
                    }
                    if json {
                        outln!("{text}");
                    } else {
                        for device in &devices {
                            print_snapshot(device);
                        }
                        if watched.is_empty() {
                            eprintln!(
                                "no devices to watch yet; waiting for new ones (Ctrl-C stops)"
                            );
                        } else {
                            eprintln!("watching; Ctrl-C stops");
                        }
                    }
                    continue;
                }
                "device_added" if args.all => {
                    // `all` covers the devices of the moment: subscribe to a new one as well.
                    if let Some(id) = event["device"].as_i64() {
                        socket
                            .watch(&[id])
                            .await
                            .context("sending a watch request")?;
                    }
                    continue;
                }
                "error" => {
                    eprintln!("server: {}", cell(&event["message"]));
                    continue;
                }
                _ => {}
            }
            let Some(id) = event["device"].as_i64() else {
                continue;
            };
            let Some(device) = watched.get(&id) else {
                continue;
            };
            let line = match kind {
                "value" => {
                    let pin = cell(&event["pin"]);
                    let label = match device.pin_names.get(&pin) {
                        Some(name) => format!("{pin} {name}"),
                        None => pin,
                    };
                    let mut details = event.clone();
                    details["at"] = Value::Null;
                    // A slow reader gets the newest value of a pin in place of older ones.
                    let skipped = match event["coalesced"].as_u64() {
                        Some(count) if count > 0 => format!(", {count} older skipped"),
                        _ => String::new(),
                    };
                    format!(
                        "{}: {label} = {}  ({}{skipped})",
                        device.name,
                        output::value(&event["value"]),
                        provenance(&details)
                    )
                }
                "presence" => {
                    let state = if event["online"].as_bool() == Some(true) {
                        "online"
                    } else {
                        "offline"
                    };
                    format!("{} is {state}", device.name)
                }
                "property" => format!(
                    "{}: {} property {} = {}",
                    device.name,
                    cell(&event["pin"]),
                    cell(&event["name"]),
                    output::value(&event["value"])
                ),
                "event" => {
                    let description = match &event["description"] {
                        Value::Null => String::new(),
                        Value::String(text) if text.is_empty() => String::new(),
                        other => format!(": {}", cell(other)),
                    };
                    format!(
                        "{}: event {}{description}",
                        device.name,
                        cell(&event["code"])
                    )
                }
                "device_removed" => {
                    let line = format!("{} was deleted", device.name);
                    watched.remove(&id);
                    line
                }
                _ => continue,
            };
            if json {
                outln!("{text}");
            } else {
                outln!("{line}");
            }
            count += 1;
            if args.count.is_some_and(|limit| count >= limit) {
                break 'read Stop::Count;
            }
            if watched.is_empty() && !args.all {
                bail!("every watched device was deleted");
            }
        }
    };

    let reason = match stop {
        Stop::Count | Stop::Time => "done",
        Stop::Interrupted => "interrupted",
    };
    // A polite close; the process exits either way.
    socket.close(reason).await;
    Ok(ExitCode::SUCCESS)
}

/// The requested devices (ids or names) that the snapshot does not hold.
fn missing_devices(requested: &[String], snapshot: &[Value]) -> Vec<String> {
    requested
        .iter()
        .filter(|key| {
            !snapshot.iter().any(|device| {
                device["name"].as_str() == Some(key.as_str())
                    || device["id"].as_i64().map(|id| id.to_string()).as_deref()
                        == Some(key.as_str())
            })
        })
        .map(|key| format!("`{key}`"))
        .collect()
}

fn watched_device(device: &Value) -> Watched {
    let pin_names = device["datastreams"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|stream| {
            Some((
                stream["pin"].as_str()?.to_string(),
                stream["name"].as_str()?.to_string(),
            ))
        })
        .collect();
    Watched {
        name: cell(&device["name"]),
        pin_names,
    }
}

/// A device of the snapshot: presence, then one line per stored value.
fn print_snapshot(device: &Value) {
    let state = if device["online"].as_bool() == Some(true) {
        "online"
    } else {
        "offline"
    };
    outln!(
        "{} (id {}, template {}): {state}",
        cell(&device["name"]),
        cell(&device["id"]),
        cell(&device["template"])
    );
    let names = watched_device(device).pin_names;
    for (pin, stored) in device["values"].as_object().into_iter().flatten() {
        let label = match names.get(pin) {
            Some(name) => format!("{pin} {name}"),
            None => pin.clone(),
        };
        outln!(
            "  {label} = {}  ({})",
            output::value(&stored["value"]),
            provenance(stored)
        );
    }
}
