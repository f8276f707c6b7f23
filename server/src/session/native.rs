//! The native protocol's device session: its login (with the automatic sync), and what each
//! frame means: writes acknowledged once durable, syncs, properties, events, pings, and the app
//! writes the engine forwards. The loop itself is the shared [`super::driver`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use blynk_proto::native::{
    self, Ack, Decoded, ErrorCode, ErrorReply, FrameError, HEADER_LEN, LoginRejection, LoginResult,
    MAX_FRAME, Message, PROTOCOL_VERSION, Pong, SyncComplete, SyncPins, SyncedValue, Update,
};
use blynk_proto::text::BoundedStr;
use blynk_proto::{MAX_NAME_LEN, Pin};
use tokio::io::{AsyncRead, AsyncWrite};

use super::Context;
use super::connection::{Codec, Connection, Framing, Outgoing, StreamIo, Transport};
use super::driver::{self, Protocol};
use super::in_flight::InFlight;
use crate::config::Limits;
use crate::engine::{self, DeviceSlot, DeviceWriteOutcome, EngineError, SyncItem, SyncSelection};
use crate::limits::RateLimiter;
use crate::login_limiter::Verdict;
use crate::model::{OwnedValue, PropertyRecord};

/// Serves one native connection until it ends.
pub fn serve<S>(
    stream: S,
    peer: SocketAddr,
    context: Arc<Context>,
) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    driver::serve::<NativeSession, _>(StreamIo::new(stream), peer, context)
}

/// Native frames.
pub(crate) struct NativeCodec;

impl Codec for NativeCodec {
    type Frame<'a> = Message<'a>;
    type Error = FrameError;

    fn decode(bytes: &[u8]) -> Result<Option<(Message<'_>, usize)>, FrameError> {
        Ok(match native::decode(bytes)? {
            Decoded::NeedMore => None,
            Decoded::Frame { message, consumed } => Some((message, consumed)),
        })
    }
}

/// Appends one message as a frame; `false` (logged) when it does not fit one.
fn frame(out: &mut Outgoing, message: &Message<'_>) -> bool {
    let len = HEADER_LEN + native::frame::encoded_len(message).min(MAX_FRAME);
    match out.frame(len, |buf| native::encode(message, buf).map(<[u8]>::len)) {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(%error, message = message.name(), "message not sent: it does not fit a frame");
            false
        }
    }
}

fn error_reply(out: &mut Outgoing, id: u16, code: ErrorCode, detail: &str) {
    let mut end = detail.len().min(2 * MAX_NAME_LEN);
    while !detail.is_char_boundary(end) {
        end -= 1;
    }
    let detail =
        BoundedStr::new(detail.get(..end).unwrap_or_default()).or_else(|_| BoundedStr::new(""));
    if let Ok(detail) = detail {
        frame(out, &Message::Error(ErrorReply { id, code, detail }));
    }
}

fn engine_error(out: &mut Outgoing, id: u16, error: &EngineError) {
    error_reply(
        out,
        id,
        super::refusal::native_code(error),
        &error.to_string(),
    );
}

/// A native device session's state.
pub(crate) struct NativeSession {
    slot: Arc<DeviceSlot>,
    context: Arc<Context>,
    heartbeat: u16,
    rx_buffer: usize,
    sync_follows: bool,
    rate: RateLimiter,
}

/// A finished request, to be answered in order.
pub(crate) enum Done {
    /// A device write became durable, or failed.
    Write {
        id: u16,
        pin: Pin,
        outcome: Result<DeviceWriteOutcome, EngineError>,
    },
    /// A sync request's values.
    Sync { id: u16, items: Vec<SyncItem> },
    /// A property or event was recorded, or not.
    Recorded {
        id: u16,
        outcome: Result<(), EngineError>,
    },
}

impl Protocol for NativeSession {
    type Codec = NativeCodec;
    type Done = Done;
    const NAME: &'static str = "native";
    const ENGINE_PROTOCOL: engine::Protocol = engine::Protocol::Native;
    const PUSH_GRACE: Option<Duration> = None;

    async fn login<T: Transport>(
        connection: &mut Connection<T>,
        peer: SocketAddr,
        context: &Arc<Context>,
    ) -> Option<(Self, Option<SyncSelection>)> {
        match driver::read_login_frame::<Self, T>(connection, peer).await {
            Ok(()) => {
                let admitted = match native::decode(connection.inbox.pending()) {
                    Ok(Decoded::Frame { message, consumed }) => {
                        if let Message::Login(login) = &message {
                            context.engine.learn_token(login.token.as_str()).await;
                        }
                        admit(message, peer, context, &mut connection.outgoing)
                            .map(|admitted| (admitted, consumed))
                    }
                    _ => None,
                };
                if let Some((admitted, consumed)) = admitted {
                    connection.inbox.consume(consumed);
                    return Some(admitted);
                }
            }
            Err(None) => return None,
            Err(Some(error)) => {
                if matches!(error, FrameError::BadVersion { .. }) {
                    let rejection = LoginRejection::UnsupportedVersion {
                        server: PROTOCOL_VERSION,
                    };
                    frame(
                        &mut connection.outgoing,
                        &Message::LoginResult(LoginResult::Rejected(rejection)),
                    );
                }
            }
        }
        // The refusal, if one was queued.
        let _ = connection.flush().await;
        None
    }

    async fn welcome<T: Transport>(
        &mut self,
        connection: &mut Connection<T>,
        sync: Vec<SyncItem>,
    ) -> std::io::Result<()> {
        let accepted = Message::LoginResult(LoginResult::Accepted {
            heartbeat_seconds: self.heartbeat,
            version: self.slot.version(),
            sync_follows: self.sync_follows,
        });
        frame(&mut connection.outgoing, &accepted);
        connection.flush().await?;
        if !self.sync_follows {
            return Ok(());
        }
        // Sends a sync's values, then its end marker (SPEC 3.7), in one socket write: a fleet
        // reconnecting at once costs one syscall per device, not one per value.
        let mut sent = Vec::with_capacity(sync.len());
        for item in &sync {
            if self.value(
                &mut connection.outgoing,
                item.pin,
                &item.value,
                item.version,
                Some(0),
            ) {
                sent.push((item.pin, item.version));
            }
        }
        let complete = SyncComplete {
            id: 0,
            count: u16::try_from(sent.len()).unwrap_or(u16::MAX),
            version: self.slot.version(),
        };
        frame(&mut connection.outgoing, &Message::SyncComplete(complete));
        connection.flush().await?;
        for (pin, version) in sent {
            self.context.engine.delivered(&self.slot, pin, version);
        }
        Ok(())
    }

    fn slot(&self) -> &Arc<DeviceSlot> {
        &self.slot
    }

    fn framing(&self) -> Framing {
        Framing::Batched
    }

    fn silence(&self) -> Duration {
        Limits::silence_timeout(self.heartbeat)
    }

    fn handle(&mut self, message: Message<'_>, out: &mut Outgoing, in_flight: &mut InFlight<Done>) {
        let engine = &self.context.engine;
        match message {
            Message::Ping(ping) => {
                // Pings count toward the rate limit too: a ping flood is a flood.
                if !self.rate.allow() {
                    return self.rate_limited(out, ping.id);
                }
                frame(out, &Message::Pong(Pong { id: ping.id }));
            }
            Message::Pong(_) => {}
            Message::Write(write) => {
                if !self.rate.allow() {
                    return self.rate_limited(out, write.id);
                }
                let (id, pin) = (write.id, write.pin);
                match engine.device_write(&self.slot, write.pin, &write.value, write.age_ms) {
                    Ok(durable) => in_flight.push(async move {
                        Done::Write {
                            id,
                            pin,
                            outcome: durable.await,
                        }
                    }),
                    Err(error) => engine_error(out, id, &error),
                }
            }
            Message::SyncRequest(request) => {
                let selection = match request.pins {
                    SyncPins::All => SyncSelection::All,
                    SyncPins::Only(pins) => SyncSelection::Pins(pins.to_vec()),
                };
                // Answered in order with the acks of earlier writes.
                let items = engine.sync_items(&self.slot, &selection);
                let id = request.id;
                in_flight.push(std::future::ready(Done::Sync { id, items }));
            }
            Message::Property(property) => {
                if !self.rate.allow() {
                    return self.rate_limited(out, property.id);
                }
                let record = PropertyRecord {
                    pin: property.pin,
                    name: property.name.as_str().to_owned(),
                    value: OwnedValue::from_value(&property.value),
                };
                let id = property.id;
                let durable = match engine.set_property(&self.slot, record) {
                    Ok(durable) => durable,
                    Err(refusal) => return engine_error(out, id, &refusal),
                };
                in_flight.push(async move {
                    let outcome = durable.await;
                    Done::Recorded { id, outcome }
                });
            }
            Message::Event(event) => {
                if !self.rate.allow() {
                    return self.rate_limited(out, event.id);
                }
                let id = event.id;
                let durable = engine.log_event(
                    &self.slot,
                    event.code.as_str(),
                    event.description.map(|d| d.as_str()),
                );
                in_flight.push(async move {
                    let outcome = durable.await;
                    Done::Recorded { id, outcome }
                });
            }
            Message::Error(error) => {
                tracing::info!(device = self.slot.device.id, id = error.id, code = ?error.code, detail = %error.detail, "device reported an error");
            }
            other => {
                tracing::info!(
                    device = self.slot.device.id,
                    message = other.name(),
                    "device sent a message only the server may send"
                );
                error_reply(
                    out,
                    0,
                    ErrorCode::IllegalCommand,
                    "this message only travels from the server to devices",
                );
            }
        }
    }

    fn answer(&mut self, done: Done, out: &mut Outgoing) {
        match done {
            Done::Write { id, pin, outcome } => match outcome {
                Ok(DeviceWriteOutcome::Stored { version }) => {
                    let version = Some(version);
                    frame(out, &Message::Ack(Ack { id, version }));
                }
                Ok(DeviceWriteOutcome::Superseded { current }) => {
                    // Ack the write, then tell the device the value that won.
                    frame(out, &Message::Ack(Ack { id, version: None }));
                    if let Ok(value) = current.value.as_value() {
                        let version = current.version;
                        frame(
                            out,
                            &Message::Update(Update {
                                pin,
                                value,
                                version,
                            }),
                        );
                    }
                }
                Err(error) => engine_error(out, id, &error),
            },
            Done::Sync { id, items } => {
                let mut count: u16 = 0;
                for item in &items {
                    if self.value(out, item.pin, &item.value, item.version, Some(id)) {
                        self.context
                            .engine
                            .delivered(&self.slot, item.pin, item.version);
                        count = count.saturating_add(1);
                    }
                }
                let complete = SyncComplete {
                    id,
                    count,
                    version: self.slot.version(),
                };
                frame(out, &Message::SyncComplete(complete));
            }
            Done::Recorded { id, outcome } => match outcome {
                Ok(()) => {
                    frame(out, &Message::Ack(Ack { id, version: None }));
                }
                Err(error) => engine_error(out, id, &error),
            },
        }
    }

    fn push(&mut self, pin: Pin, value: &OwnedValue, version: u64, out: &mut Outgoing) -> bool {
        self.value(out, pin, value, version, None)
    }

    fn dropped(&self) -> u64 {
        self.rate.dropped()
    }
}

impl NativeSession {
    /// Queues one value, as a synced value (with the sync's id) or an update; `false` when it
    /// does not fit a frame or the device's receive buffer, and was skipped.
    fn value(
        &self,
        out: &mut Outgoing,
        pin: Pin,
        value: &OwnedValue,
        version: u64,
        sync_id: Option<u16>,
    ) -> bool {
        let Ok(value) = value.as_value() else {
            return false;
        };
        let message = match sync_id {
            Some(id) => Message::SyncedValue(SyncedValue {
                id,
                pin,
                value,
                version,
            }),
            None => Message::Update(Update {
                pin,
                value,
                version,
            }),
        };
        let len = native::frame::encoded_len(&message).saturating_add(HEADER_LEN);
        if len > self.rx_buffer {
            tracing::warn!(device = self.slot.device.id, %pin, len, rx_buffer = self.rx_buffer, "value not sent: larger than the device's receive buffer");
            return false;
        }
        frame(out, &message)
    }

    fn rate_limited(&mut self, out: &mut Outgoing, id: u16) {
        if self.rate.warn_device(self.slot.device.id) {
            error_reply(
                out,
                id,
                ErrorCode::RateLimited,
                "message rate limit exceeded; messages are being dropped",
            );
        }
    }
}

/// Checks a first message: a login of this protocol version with a known token, from an
/// address that has not failed too often. `None`: refused, with the refusal queued in `out`.
fn admit(
    message: Message<'_>,
    peer: SocketAddr,
    context: &Arc<Context>,
    out: &mut Outgoing,
) -> Option<(NativeSession, Option<SyncSelection>)> {
    let Message::Login(login) = message else {
        tracing::info!(%peer, message = message.name(), "native connection refused: first message is not a login");
        error_reply(out, 0, ErrorCode::NotLoggedIn, "log in first");
        return None;
    };
    let mut reject = |reason: LoginRejection| {
        frame(out, &Message::LoginResult(LoginResult::Rejected(reason)));
    };
    if login.protocol != PROTOCOL_VERSION {
        tracing::info!(%peer, version = login.protocol, "native login refused: protocol version");
        reject(LoginRejection::UnsupportedVersion {
            server: PROTOCOL_VERSION,
        });
        return None;
    }
    // The credential first: a right token is never refused for what others did (SPEC 6).
    let Some(slot) = context.engine.authenticate(login.token.as_str()) else {
        context.engine.metrics().failed_login();
        match context.login_limiter.record_failure(peer.ip()) {
            Verdict::Counted => {
                tracing::info!(%peer, token = ?login.token, "native login refused: invalid token");
                reject(LoginRejection::InvalidToken);
            }
            Verdict::Limited {
                retry_after_seconds,
            } => {
                tracing::warn!(%peer, "native login refused: invalid token, too many failed logins from this address");
                reject(LoginRejection::TooManyAttempts {
                    retry_after_seconds,
                });
            }
        }
        return None;
    };
    context.engine.metrics().login();
    let info = &login.info;
    let heartbeat = match info.heartbeat_seconds {
        0 => context.limits.default_heartbeat_seconds,
        seconds => seconds.min(3600),
    };
    let sync = info.sync_on_connect.then_some(SyncSelection::Reconnect {
        known_version: info.known_version,
    });
    let session = NativeSession {
        slot,
        heartbeat,
        rx_buffer: usize::from(info.rx_buffer.max(64)),
        sync_follows: sync.is_some(),
        rate: RateLimiter::new(
            context.limits.messages_per_second,
            context.limits.message_burst,
        ),
        context: context.clone(),
    };
    Some((session, sync))
}
