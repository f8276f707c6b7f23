//! The app WebSocket (`/api/ws?key=KEY`): a snapshot of the watched devices, then their live
//! values, presence, properties and events, and the lifecycle of every write the client makes.
//! Any key may watch; a write needs the `control` scope for its device (else an error reply
//! with `"code": 403` and the missing scope).
//!
//! Client messages: `{"type":"watch","devices":[1,2]}` (or `"all"`), and
//! `{"type":"write","id":"w1","device":1,"pin":"V0","value":1}`. Events come from the
//! connection's one [`Watcher`] queue: several ready at once travel in one
//! `{"type":"batch","events":[...]}` message, and a client that reads slowly gets the newest
//! value of each pin rather than every one. A client is closed (code 1008, with the reason, and
//! a log line) when the events it cannot be spared pile up beyond the configured backlog, or when
//! it stops reading for the configured stall time.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::Poll;
use std::time::Duration;

use axum::Extension;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::response::Response;
use futures_util::stream::{FuturesOrdered, SplitSink};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value as Json_, json};
use tokio::task::JoinSet;

use super::ApiError;
use super::app_api::{Caller, device_details_for, require_control};
use super::{AppState, PeerAddr};
use crate::engine::DeviceSlot;
use crate::engine::watch::{Queued, WatchLimits, Watcher};
use crate::keys::ApiKey;
use crate::model::{Origin, OwnedValue};
use crate::net::io::Activity;

/// The longest message a client may send: a watch list or a write of the longest value fits
/// many times over. The WebSocket library refuses a longer one from its header, before
/// buffering it.
pub const MAX_CLIENT_MESSAGE: usize = 8 * 1024;
/// Writes of one client waiting to be stored before the server stops reading from it.
const MAX_PIPELINED: usize = 256;
/// Entries taken from the queue for one round of sends at most.
const EVENT_BATCH: usize = 512;
/// A batch message is sent once it is this large, even if more events are ready.
const BATCH_BYTES: usize = 256 * 1024;

/// A reply to send once its write is stored (replies go out in the order of the requests),
/// with the task that will report the write's delivery.
type PendingReply = Pin<Box<dyn Future<Output = (Json_, Option<ReportTask>)> + Send>>;
/// Reports a write's delivery to the client, through its watcher queue.
type ReportTask = Pin<Box<dyn Future<Output = ()> + Send>>;

type Sink = SplitSink<WebSocket, Message>;

fn ready_reply(reply: Json_) -> PendingReply {
    Box::pin(std::future::ready((reply, None)))
}

/// The key of a WebSocket client: a header, or `?key=KEY` (browsers cannot set headers on a
/// WebSocket); this route is the only one that takes the query form.
pub struct WebSocketCaller(ApiKey);

impl FromRequestParts<AppState> for WebSocketCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Caller(key) = Caller::from_websocket_request(parts, state).await?;
        Ok(WebSocketCaller(key))
    }
}

/// `GET /api/ws`: upgrades an authenticated client.
pub async fn upgrade(
    WebSocketCaller(key): WebSocketCaller,
    State(state): State<AppState>,
    ConnectInfo(PeerAddr(peer)): ConnectInfo<PeerAddr>,
    Extension(activity): Extension<Arc<Activity>>,
    socket: WebSocketUpgrade,
) -> Response {
    let key = Arc::new(key);
    socket
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .read_buffer_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| serve(socket, state, key, peer, activity))
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

/// Why a connection ended.
enum Ending {
    /// The client closed it or the connection broke: nothing to tell anyone.
    ClientLeft,
    /// The server closes it, for this reason.
    Closed(String),
}

async fn serve(
    socket: WebSocket,
    state: AppState,
    key: Arc<ApiKey>,
    peer: SocketAddr,
    activity: Arc<Activity>,
) {
    let limits = &state.context.limits;
    let stall = Duration::from_secs(limits.watch_stall_seconds.max(1));
    let watcher = Arc::new(Watcher::new(WatchLimits {
        backlog: limits.watch_backlog.max(1),
    }));
    // Presence and device list changes of every device.
    state.engine.watch_all(&watcher);
    let (mut sink, mut stream) = socket.split();
    let mut tasks = JoinSet::new();
    let mut replies: FuturesOrdered<PendingReply> = FuturesOrdered::new();
    let mut taken = Vec::with_capacity(EVENT_BATCH);
    // Pings keep an otherwise quiet client inside the connection's idle timeout.
    let mut keepalive = tokio::time::interval(Duration::from_secs(30));
    // A key revoked or rotated while the client is connected ends its session too (checked
    // every reload period of the server's clock).
    let clock = state.engine.clock().clone();
    let mut key_check = clock.now() + crate::keys::RELOAD_EVERY;
    let key_timer = tokio::time::sleep_until(clock.timer_deadline(key_check));
    tokio::pin!(key_timer);
    let ending = loop {
        tokio::select! {
            () = &mut key_timer => {
                if clock.now() >= key_check {
                    key_check = clock.now() + crate::keys::RELOAD_EVERY;
                    if !state.keys.is_current(&key) {
                        break Ending::Closed(format!("the key `{}` was revoked or replaced", key.name));
                    }
                }
                key_timer.as_mut().reset(clock.timer_deadline(key_check));
            }
            _ = keepalive.tick() => {
                if let Err(ending) = send(&mut sink, Message::Ping(Vec::new().into()), stall, &watcher).await {
                    break ending;
                }
            }
            incoming = stream.next(), if replies.len() < MAX_PIPELINED => {
                if matches!(incoming, Some(Ok(_))) {
                    // Whole messages (the pongs to the keepalive pings among them) are what
                    // keeps the connection from counting as idle.
                    activity.touch();
                }
                let text = match incoming {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) | None => break Ending::ClientLeft,
                    Some(Err(error)) => {
                        // Broken connections, and messages over the size limit.
                        tracing::info!(%peer, %error, "app WebSocket closed: unreadable message");
                        break Ending::ClientLeft;
                    }
                    Some(Ok(_)) => continue,
                };
                let reply = match serde_json::from_str::<ClientMessage>(&text) {
                    Ok(ClientMessage::Watch { devices }) => {
                        watch(&state, &key, &devices, &watcher);
                        continue;
                    }
                    Ok(ClientMessage::Write { id, device, pin, value }) => {
                        let mut pending: PendingReply = Box::pin(write(state.clone(), key.clone(), id.unwrap_or(Json_::Null), device, pin, value, Arc::downgrade(&watcher)));
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
                state.engine.metrics().app_messages(1);
                if let Err(ending) = send(&mut sink, Message::Text(reply.to_string().into()), stall, &watcher).await {
                    break ending;
                }
            }
            () = watcher.ready() => {
                taken.clear();
                if let Err(reason) = watcher.take(&mut taken, EVENT_BATCH) {
                    break Ending::Closed(reason.to_string());
                }
                state.engine.metrics().app_messages(taken.len() as u64);
                if let Err(ending) = send_events(&mut sink, &mut taken, stall, &watcher).await {
                    break ending;
                }
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    };
    tasks.abort_all();
    // Unregistered at once: the engine stops queueing for a connection on its way out.
    drop(watcher);
    match ending {
        Ending::ClientLeft => {
            tracing::debug!(client = %peer, "app connection closed by the client");
        }
        Ending::Closed(reason) => {
            tracing::warn!(client = %peer, %reason, "app connection closed");
            if reason.starts_with("too slow") {
                state.engine.metrics().slow_app_closed();
            }
            let close = Message::Close(Some(CloseFrame {
                code: 1008,
                reason: reason.into(),
            }));
            // The client gets as long to take the close frame as it had for any message. What
            // it sent meanwhile is read and dropped until it answers the close: a socket closed
            // with unread input is reset, and a reset loses the close frame on the way.
            let handshake = async {
                sink.send(close).await?;
                while let Some(Ok(message)) = stream.next().await {
                    if matches!(message, Message::Close(_)) {
                        break;
                    }
                }
                Ok::<_, axum::Error>(())
            };
            let _ = tokio::time::timeout(stall, handshake).await;
        }
    }
}

/// Sends one message; a client that does not take it within `stall` is closed, and so is one
/// whose watcher is closed meanwhile (its backlog overflowed while this send waited).
async fn send(
    sink: &mut Sink,
    message: Message,
    stall: Duration,
    watcher: &Watcher,
) -> Result<(), Ending> {
    tokio::select! {
        sent = tokio::time::timeout(stall, sink.send(message)) => match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Ending::ClientLeft),
            Err(_) => Err(Ending::Closed(format!(
                "too slow: the client read nothing for {} s",
                stall.as_secs()
            ))),
        },
        reason = watcher.closed() => Err(Ending::Closed(reason.to_string())),
    }
}

/// Sends queued entries in order: events and reports together (one alone, several as a batch),
/// snapshots alone.
async fn send_events(
    sink: &mut Sink,
    taken: &mut Vec<Queued>,
    stall: Duration,
    watcher: &Watcher,
) -> Result<(), Ending> {
    let mut batch = Batch::default();
    // Drained, so that a large snapshot is not kept once it is sent.
    for entry in taken.drain(..) {
        match entry {
            Queued::Event { event, coalesced } => {
                batch.push(|out| event.write_json(coalesced, out));
            }
            Queued::Report(text) => batch.push(|out| out.extend_from_slice(text.as_bytes())),
            Queued::Standalone(text) => {
                if let Some(message) = batch.finish() {
                    send(sink, message, stall, watcher).await?;
                }
                send(sink, Message::Text(text.into()), stall, watcher).await?;
                continue;
            }
        }
        if batch.bytes.len() >= BATCH_BYTES
            && let Some(message) = batch.finish()
        {
            send(sink, message, stall, watcher).await?;
        }
    }
    if let Some(message) = batch.finish() {
        send(sink, message, stall, watcher).await?;
    }
    Ok(())
}

/// The text of a `{"type":"batch","events":[...]}` message being built.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    count: usize,
}

impl Batch {
    const HEAD: &'static [u8] = br#"{"type":"batch","events":["#;

    fn push(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        if self.count == 0 {
            self.bytes.clear();
            self.bytes.extend_from_slice(Self::HEAD);
        } else {
            self.bytes.push(b',');
        }
        write(&mut self.bytes);
        self.count += 1;
    }

    /// The message: the one event alone, or the batch; `None` when empty.
    fn finish(&mut self) -> Option<Message> {
        let count = std::mem::take(&mut self.count);
        let bytes = match count {
            0 => return None,
            1 => self.bytes.split_off(Self::HEAD.len()),
            _ => {
                self.bytes.extend_from_slice(b"]}");
                std::mem::take(&mut self.bytes)
            }
        };
        self.bytes.clear();
        // Every part was written as JSON text, which is UTF-8.
        String::from_utf8(bytes)
            .ok()
            .map(|text| Message::Text(text.into()))
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

/// Watches devices and queues their snapshot, after the events already waiting: registered
/// first, so no change falls between the snapshot and the live events.
fn watch(state: &AppState, key: &ApiKey, devices: &Json_, watcher: &Watcher) {
    let slots = device_ids(state, devices);
    // Written device by device: the JSON tree of one device at a time, never of thousands,
    // which would leave the server's memory fragmented long after the snapshot went out.
    let mut snapshot = br#"{"type":"snapshot","devices":["#.to_vec();
    for (index, slot) in slots.iter().enumerate() {
        slot.watch(watcher);
        if index > 0 {
            snapshot.push(b',');
        }
        // Writing JSON values into a `Vec` cannot fail.
        let _ = serde_json::to_writer(&mut snapshot, &device_details_for(slot, key));
    }
    snapshot.extend_from_slice(b"]}");
    if let Ok(snapshot) = String::from_utf8(snapshot) {
        watcher.send_to_client(Queued::Standalone(snapshot));
    }
}

/// Stores a write and reports its lifecycle: `stored` once stored, then `delivered`, `expired`
/// or `superseded` when that happens (by the returned task).
///
/// Everything up to queueing the write to the store happens in the first poll.
async fn write(
    state: AppState,
    key: Arc<ApiKey>,
    id: Json_,
    device: Json_,
    pin: String,
    value: Json_,
    watcher: Weak<Watcher>,
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
    if let Err(ApiError::Forbidden { missing, message }) = require_control(&key, &slot) {
        let reply = json!({
            "type": "write", "id": id, "status": "error", "code": 403,
            "missing_scope": missing.as_str(), "message": message,
        });
        return (reply, None);
    }
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
                if let Ok(delivery) = write.report.await
                    && let Some(watcher) = watcher.upgrade()
                {
                    let event = json!({ "type": "write", "id": id, "status": delivery.as_str(), "version": write.version });
                    watcher.send_to_client(Queued::Report(event.to_string()));
                }
            });
            (reply, Some(report))
        }
        Err(problem) => {
            // The status the REST write would get, so a client tells "try again" (503) from a
            // refused value (400).
            let problem = ApiError::from(problem);
            let reply = json!({
                "type": "write", "id": id, "status": "error",
                "code": problem.status().as_u16(), "message": problem.to_string(),
            });
            (reply, None)
        }
    }
}
