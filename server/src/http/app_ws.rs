//! The app WebSocket (`/api/ws?key=KEY`): a snapshot of the watched devices, then their live
//! values, presence, properties and events, and the lifecycle of every write the client makes.
//!
//! Client messages: `{"type":"watch","devices":[1,2]}` (or `"all"`), and
//! `{"type":"write","id":"w1","device":1,"pin":"V0","value":1}`. A client that falls more than
//! [`WATCH_CHANNEL`](crate::engine::WATCH_CHANNEL) events behind is disconnected.

use std::sync::Arc;

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value as Json_, json};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinSet;

use super::AppState;
use super::app_api::{Admin, device_details_json};
use crate::engine::DeviceSlot;
use crate::engine::events::AppEvent;
use crate::model::{Origin, OwnedValue};

/// Messages queued for one client before it counts as too slow.
const CLIENT_QUEUE: usize = 4096;

/// `GET /api/ws`: upgrades an authenticated client.
pub async fn upgrade(
    _: Admin,
    State(state): State<AppState>,
    socket: WebSocketUpgrade,
) -> Response {
    socket.on_upgrade(move |socket| serve(socket, state))
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ClientMessage {
    Watch {
        devices: Json_,
    },
    Write {
        id: Option<Json_>,
        device: Json_,
        pin: String,
        value: Json_,
    },
}

async fn serve(socket: WebSocket, state: AppState) {
    let (mut sink, mut stream) = socket.split();
    let (out, mut outbox) = mpsc::channel::<AppEvent>(CLIENT_QUEUE);
    let mut tasks = JoinSet::new();
    // Presence and device list changes of every device.
    tasks.spawn(forward(state.engine.watch_all(), out.clone()));
    let mut watched: Vec<i64> = Vec::new();
    loop {
        tokio::select! {
            incoming = stream.next() => {
                let text = match incoming {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => continue,
                };
                let reply = match serde_json::from_str::<ClientMessage>(&text) {
                    Ok(ClientMessage::Watch { devices }) => watch(&state, &devices, &mut watched, &mut tasks, &out),
                    Ok(ClientMessage::Write { id, device, pin, value }) => {
                        write(&state, id.unwrap_or(Json_::Null), &device, &pin, &value, &mut tasks, &out).await
                    }
                    Err(error) => json!({ "type": "error", "message": format!("unreadable message: {error}") }),
                };
                if sink.send(Message::Text(reply.to_string().into())).await.is_err() {
                    break;
                }
            }
            event = outbox.recv() => match event {
                Some(event) => {
                    if sink.send(Message::Text(event.as_ref().into())).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok(Err(reason)) = done {
                    let _ = sink.send(Message::Close(Some(axum::extract::ws::CloseFrame { code: 1008, reason: reason.into() }))).await;
                    break;
                }
            }
        }
    }
    tasks.abort_all();
}

/// Forwards broadcast events to the client; ends with an error when the client fell behind.
async fn forward(
    mut events: broadcast::Receiver<AppEvent>,
    out: mpsc::Sender<AppEvent>,
) -> Result<(), &'static str> {
    loop {
        match events.recv().await {
            Ok(event) => {
                if out.try_send(event).is_err() {
                    return Err("too slow: events were piling up");
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                return Err("too slow: events were missed");
            }
            Err(broadcast::error::RecvError::Closed) => return Ok(()),
        }
    }
}

fn device_ids(state: &AppState, devices: &Json_) -> Vec<Arc<DeviceSlot>> {
    match devices {
        Json_::String(all) if all == "all" => state.engine.devices(),
        Json_::String(key) => state.engine.find_device(key).into_iter().collect(),
        Json_::Array(items) => items
            .iter()
            .filter_map(|item| match item {
                Json_::Number(id) => state.engine.find_device(&id.to_string()),
                Json_::String(key) => state.engine.find_device(key),
                _ => None,
            })
            .collect(),
        other => other
            .as_i64()
            .and_then(|id| state.engine.device(id))
            .into_iter()
            .collect(),
    }
}

/// Subscribes to devices and answers with their snapshot.
fn watch(
    state: &AppState,
    devices: &Json_,
    watched: &mut Vec<i64>,
    tasks: &mut JoinSet<Result<(), &'static str>>,
    out: &mpsc::Sender<AppEvent>,
) -> Json_ {
    let slots = device_ids(state, devices);
    let mut snapshot = Vec::with_capacity(slots.len());
    for slot in slots {
        if !watched.contains(&slot.device.id) {
            watched.push(slot.device.id);
            // Subscribe before reading the snapshot, so no change falls between the two.
            tasks.spawn(forward(slot.watch(), out.clone()));
        }
        snapshot.push(device_details_json(&slot));
    }
    json!({ "type": "snapshot", "devices": snapshot })
}

/// Stores a write and reports its lifecycle: `stored` now, then `delivered`, `expired` or
/// `superseded` when that happens.
async fn write(
    state: &AppState,
    id: Json_,
    device: &Json_,
    pin: &str,
    value: &Json_,
    tasks: &mut JoinSet<Result<(), &'static str>>,
    out: &mpsc::Sender<AppEvent>,
) -> Json_ {
    let error = |message: String| json!({ "type": "write", "id": id, "status": "error", "message": message });
    let Some(slot) = device_ids(state, device).into_iter().next() else {
        return error(format!("no device {device}"));
    };
    let pin = match pin.parse() {
        Ok(pin) => pin,
        Err(problem) => return error(format!("pin `{pin}`: {problem}")),
    };
    let value = match OwnedValue::from_json(value) {
        Ok(value) => value,
        Err(problem) => return error(problem),
    };
    let Ok(value_ref) = value.as_value() else {
        return error("value out of bounds".into());
    };
    match state
        .engine
        .app_write(&slot, pin, &value_ref, Origin::App)
        .await
    {
        Ok(write) => {
            let (report_id, out) = (id.clone(), out.clone());
            tasks.spawn(async move {
                if let Ok(delivery) = write.report.await {
                    let event = json!({ "type": "write", "id": report_id, "status": delivery.as_str(), "version": write.version });
                    let _ = out.try_send(Arc::from(event.to_string()));
                }
                Ok(())
            });
            json!({
                "type": "write",
                "id": id,
                "status": if write.device_online { "stored" } else { "pending" },
                "version": write.version,
                "device_online": write.device_online,
            })
        }
        Err(problem) => error(problem.to_string()),
    }
}
