//! The app WebSocket (`/api/ws?key=KEY`): a snapshot of the watched devices, then their live
//! values, presence, properties and events, and the lifecycle of every write the client makes.
//!
//! Client messages: `{"type":"watch","devices":[1,2]}` (or `"all"`), and
//! `{"type":"write","id":"w1","device":1,"pin":"V0","value":1}`. A client that falls more than
//! [`WATCH_CHANNEL`](crate::engine::WATCH_CHANNEL) events behind is disconnected.

use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures_util::stream::FuturesOrdered;
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
/// Writes of one client waiting to be stored before the server stops reading from it.
const MAX_PIPELINED: usize = 256;
/// Events sent in one socket write at most.
const EVENT_BATCH: usize = 256;

/// A reply to send once its write is stored (replies go out in the order of the requests),
/// with the task that will report the write's delivery.
type PendingReply = Pin<Box<dyn Future<Output = (Json_, Option<ReportTask>)> + Send>>;
/// Reports a write's delivery to the client.
type ReportTask = Pin<Box<dyn Future<Output = Result<(), &'static str>> + Send>>;

fn ready_reply(reply: Json_) -> PendingReply {
    Box::pin(std::future::ready((reply, None)))
}

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
    let mut replies: FuturesOrdered<PendingReply> = FuturesOrdered::new();
    // Pings keep an otherwise quiet client inside the connection's idle timeout.
    let mut keepalive = tokio::time::interval(std::time::Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = keepalive.tick() => {
                if sink.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break;
                }
            }
            incoming = stream.next(), if replies.len() < MAX_PIPELINED => {
                let text = match incoming {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => continue,
                };
                let reply = match serde_json::from_str::<ClientMessage>(&text) {
                    Ok(ClientMessage::Watch { devices }) => ready_reply(watch(&state, &devices, &mut watched, &mut tasks, &out)),
                    Ok(ClientMessage::Write { id, device, pin, value }) => {
                        let mut pending: PendingReply = Box::pin(write(state.clone(), id.unwrap_or(Json_::Null), device, pin, value, out.clone()));
                        // The first poll validates the write and queues it to the store, so
                        // writes are stored in the order they came while the loop goes on
                        // reading: a client's writes are pipelined, not one commit each.
                        match std::future::poll_fn(|cx| Poll::Ready(pending.as_mut().poll(cx))).await {
                            Poll::Ready(done) => Box::pin(std::future::ready(done)),
                            Poll::Pending => pending,
                        }
                    }
                    Err(error) => ready_reply(json!({ "type": "error", "message": format!("unreadable message: {error}") })),
                };
                replies.push_back(reply);
            }
            Some((reply, report)) = replies.next(), if !replies.is_empty() => {
                if let Some(report) = report {
                    tasks.spawn(report);
                }
                if sink.send(Message::Text(reply.to_string().into())).await.is_err() {
                    break;
                }
            }
            event = outbox.recv() => match event {
                Some(event) => {
                    // The events already queued go out in the same socket write.
                    let mut sent = sink.feed(Message::Text(event.as_ref().into())).await;
                    let mut batched = 1;
                    while sent.is_ok() && batched < EVENT_BATCH {
                        let Ok(event) = outbox.try_recv() else { break };
                        sent = sink.feed(Message::Text(event.as_ref().into())).await;
                        batched += 1;
                    }
                    if sent.is_err() || sink.flush().await.is_err() {
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

/// Stores a write and reports its lifecycle: `stored` once stored, then `delivered`, `expired`
/// or `superseded` when that happens (by the returned task).
///
/// Everything up to queueing the write to the store happens in the first poll.
async fn write(
    state: AppState,
    id: Json_,
    device: Json_,
    pin: String,
    value: Json_,
    out: mpsc::Sender<AppEvent>,
) -> (Json_, Option<ReportTask>) {
    let error = |message: String| {
        (
            json!({ "type": "write", "id": id, "status": "error", "message": message }),
            None,
        )
    };
    let Some(slot) = device_ids(&state, &device).into_iter().next() else {
        return error(format!("no device {device}"));
    };
    let pin = match pin.parse() {
        Ok(pin) => pin,
        Err(problem) => return error(format!("pin `{pin}`: {problem}")),
    };
    let value = match OwnedValue::from_json(&value) {
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
            let reply = json!({
                "type": "write",
                "id": id,
                "status": if write.device_online { "stored" } else { "pending" },
                "version": write.version,
                "device_online": write.device_online,
            });
            let report: ReportTask = Box::pin(async move {
                if let Ok(delivery) = write.report.await {
                    let event = json!({ "type": "write", "id": id, "status": delivery.as_str(), "version": write.version });
                    let _ = out.try_send(Arc::from(event.to_string()));
                }
                Ok(())
            });
            (reply, Some(report))
        }
        Err(problem) => error(problem.to_string()),
    }
}
