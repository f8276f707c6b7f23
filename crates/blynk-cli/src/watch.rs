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
use futures_util::{SinkExt, StreamExt};
use hyper::header::{AUTHORIZATION, HeaderValue, USER_AGENT};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::cli::WatchArgs;
use crate::client::{Client, api_error};
use crate::output::{self, cell, provenance};

/// The largest message accepted from the server (a snapshot of many devices).
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

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

    let endpoint = client.endpoint();
    let stream = endpoint.connect().await?;
    let scheme = if endpoint.tls { "wss" } else { "ws" };
    let url = format!(
        "{scheme}://{}{}/api/ws",
        endpoint.authority, endpoint.prefix
    );
    let mut request = url
        .as_str()
        .into_client_request()
        .with_context(|| format!("WebSocket URL {url}"))?;
    let bearer = HeaderValue::from_str(&format!("Bearer {}", client.key()))
        .context("the admin key holds characters HTTP cannot carry")?;
    request.headers_mut().insert(AUTHORIZATION, bearer);
    request.headers_mut().insert(
        USER_AGENT,
        HeaderValue::from_static(concat!("blynk-cli/", env!("CARGO_PKG_VERSION"))),
    );
    let config = tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let (mut socket, _) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(config))
            .await
            .map_err(|error| match error {
                tungstenite::Error::Http(response) => api_error(
                    response.status(),
                    response.body().as_deref().unwrap_or_default(),
                ),
                other => anyhow!("WebSocket connection to {} failed: {other}", endpoint.url),
            })?;

    let devices = if args.all {
        json!("all")
    } else {
        json!(args.devices)
    };
    socket
        .send(Message::text(
            json!({ "type": "watch", "devices": devices }).to_string(),
        ))
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
            message = socket.next() => message,
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                let why = frame
                    .map(|frame| format!(" (code {}: {})", u16::from(frame.code), frame.reason))
                    .unwrap_or_default();
                bail!("the server closed the connection{why}");
            }
            Some(Ok(_)) => continue,
            Some(Err(error)) => bail!("the connection to the server broke: {error}"),
            None => bail!("the server closed the connection"),
        };
        for (event, text) in events_of(&text) {
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
                            .send(Message::text(
                                json!({ "type": "watch", "devices": [id] }).to_string(),
                            ))
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
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        socket.close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: reason.into(),
        })),
    )
    .await;
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

/// The events a server message holds, each with its JSON text: the message itself, or each
/// event of a `{"type":"batch","events":[...]}` in order (written again from the parsed JSON).
/// Nothing for a message that is not JSON.
fn events_of(text: &str) -> Vec<(Value, String)> {
    let Ok(message) = serde_json::from_str::<Value>(text) else {
        return Vec::new();
    };
    match message {
        Value::Object(mut batch) if batch.get("type") == Some(&json!("batch")) => {
            match batch.remove("events") {
                Some(Value::Array(events)) => events
                    .into_iter()
                    .map(|event| {
                        let text = event.to_string();
                        (event, text)
                    })
                    .collect(),
                _ => Vec::new(),
            }
        }
        event => vec![(event, text.to_owned())],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_gives_its_events_in_order_and_a_lone_event_its_text() {
        let batch = r#"{"type":"batch","events":[{"type":"value","pin":"V1","value":1},{"type":"presence","online":true}]}"#;
        let events = events_of(batch);
        let kinds: Vec<&str> = events
            .iter()
            .map(|(event, _)| event["type"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["value", "presence"]);
        assert!(events.iter().all(|(_, text)| !text.contains("batch")));
        let alone = r#"{"type":"value", "pin":"V1"}"#;
        assert_eq!(events_of(alone)[0].1, alone);
        assert!(events_of("not json").is_empty());
    }
}
