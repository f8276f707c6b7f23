//! A native-protocol device session: login, the automatic sync, writes with acks, syncs,
//! properties, events, pings, and the app writes the engine forwards.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use blynk_proto::native::{
    self, Ack, Decoded, ErrorCode, ErrorReply, FrameError, HEADER_LEN, LoginRejection, LoginResult,
    MAX_FRAME, Message, PROTOCOL_VERSION, Pong, SyncComplete, SyncPins, SyncedValue, Update,
};
use blynk_proto::text::BoundedStr;
use blynk_proto::{MAX_NAME_LEN, Pin};
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::{Context, MAX_IN_FLIGHT};
use crate::config::Limits;
use crate::engine::{
    DeviceSlot, DeviceWriteOutcome, Outbound, Protocol, SyncItem, SyncSelection, WriteError,
};
use crate::limits::RateLimiter;
use crate::model::{OwnedValue, PropertyRecord};

type Ending = super::Ending<FrameError>;

/// A growable read buffer, never larger than one frame plus what one read brings.
struct ReadBuffer {
    bytes: Vec<u8>,
    start: usize,
}

impl ReadBuffer {
    fn new() -> Self {
        ReadBuffer {
            bytes: Vec::new(),
            start: 0,
        }
    }

    fn pending(&self) -> &[u8] {
        &self.bytes[self.start..]
    }

    fn consume(&mut self, count: usize) {
        self.start += count;
        if self.start == self.bytes.len() {
            self.bytes.clear();
            self.start = 0;
            if self.bytes.capacity() > 4096 {
                self.bytes.shrink_to(512);
            }
        }
    }

    /// Reads more bytes. Cancel-safe: bytes land in the buffer only when the read completes,
    /// so the session loop may drop this future when another branch wins.
    async fn fill<S: AsyncRead + Unpin>(&mut self, stream: &mut S) -> std::io::Result<usize> {
        if self.start > 0 {
            self.bytes.drain(..self.start);
            self.start = 0;
        }
        self.bytes.reserve(512);
        stream.read_buf(&mut self.bytes).await
    }
}

/// Encodes a message into a new frame.
fn frame(message: &Message<'_>) -> Option<Vec<u8>> {
    let len = native::frame::encoded_len(message);
    let mut out = vec![0u8; HEADER_LEN + len.min(MAX_FRAME)];
    match native::encode(message, &mut out) {
        Ok(bytes) => {
            let written = bytes.len();
            out.truncate(written);
            Some(out)
        }
        Err(error) => {
            tracing::warn!(%error, message = message.name(), "message not sent: it does not fit a frame");
            None
        }
    }
}

fn error_reply(id: u16, code: ErrorCode, detail: &str) -> Option<Vec<u8>> {
    let mut end = detail.len().min(2 * MAX_NAME_LEN);
    while !detail.is_char_boundary(end) {
        end -= 1;
    }
    let detail = BoundedStr::new(&detail[..end]).unwrap_or(BoundedStr::new("").ok()?);
    frame(&Message::Error(ErrorReply { id, code, detail }))
}

/// Serves one native connection until it ends.
pub async fn serve<S>(mut stream: S, peer: SocketAddr, context: Arc<Context>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut buffer = ReadBuffer::new();
    let login_timeout = Duration::from_secs(context.limits.login_timeout_seconds);
    let login = tokio::time::timeout(
        login_timeout,
        read_login(&mut stream, &mut buffer, peer, &context),
    )
    .await;
    let (slot, heartbeat, rx_buffer, sync) = match login {
        Ok(Some(login)) => login,
        Ok(None) => return,
        Err(_) => {
            tracing::info!(%peer, "native connection closed: no login within {login_timeout:?}");
            return;
        }
    };
    let queue = context.limits.send_queue;
    let Some(attached) = context
        .engine
        .attach(&slot, Protocol::Native, queue, sync.clone())
    else {
        tracing::info!(%peer, device = slot.device.id, "native connection closed: device deleted");
        return;
    };
    tracing::info!(
        %peer, device = slot.device.id, name = %slot.device.name, session = attached.session_id,
        replaced = attached.replaced_previous, "device connected (native)"
    );
    let mut session = Session {
        slot: slot.clone(),
        context: context.clone(),
        rx_buffer: usize::from(rx_buffer),
        rate: RateLimiter::new(
            context.limits.messages_per_second,
            context.limits.message_burst,
        ),
    };
    let accepted = Message::LoginResult(LoginResult::Accepted {
        heartbeat_seconds: heartbeat,
        version: slot.version(),
        sync_follows: sync.is_some(),
    });
    let mut ending = session
        .send(&mut stream, frame(&accepted))
        .await
        .err()
        .map(Ending::Io);
    if ending.is_none() && sync.is_some() {
        ending = session
            .send_sync(&mut stream, 0, &attached.sync)
            .await
            .err()
            .map(Ending::Io);
    }
    let ending = match ending {
        Some(ending) => ending,
        None => {
            session
                .run(
                    &mut stream,
                    &mut buffer,
                    attached.outbound,
                    attached.kill,
                    heartbeat,
                )
                .await
        }
    };
    context.engine.detach(&slot, attached.session_id);
    let _ = stream.shutdown().await;
    tracing::info!(%peer, device = slot.device.id, dropped = session.rate.dropped(), reason = %ending, "device disconnected (native)");
}

/// What a device's login amounts to.
type Admitted = (Arc<DeviceSlot>, u16, u16, Option<SyncSelection>);

/// Reads and answers the login; `None` when the connection was refused.
async fn read_login<S>(
    stream: &mut S,
    buffer: &mut ReadBuffer,
    peer: SocketAddr,
    context: &Context,
) -> Option<Admitted>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let step = match native::decode(buffer.pending()) {
            Ok(Decoded::NeedMore) => None,
            Ok(Decoded::Frame { message, consumed }) => {
                Some(admit(message, peer, context).map(|admitted| (admitted, consumed)))
            }
            Err(error) => {
                tracing::info!(%peer, %error, "native connection refused: bad first frame");
                let reply = matches!(error, FrameError::BadVersion { .. }).then(|| {
                    frame(&Message::LoginResult(LoginResult::Rejected(
                        LoginRejection::UnsupportedVersion {
                            server: PROTOCOL_VERSION,
                        },
                    )))
                });
                Some(Err(reply.flatten()))
            }
        };
        match step {
            None => match buffer.fill(stream).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => continue,
            },
            Some(Ok((admitted, consumed))) => {
                buffer.consume(consumed);
                return Some(admitted);
            }
            Some(Err(reply)) => {
                if let Some(bytes) = reply {
                    let _ = stream.write_all(&bytes).await;
                }
                return None;
            }
        }
    }
}

/// Checks a first message: a login of this protocol version with a known token, from an
/// address that has not failed too often. `Err` holds the refusal to send, if any.
fn admit(
    message: Message<'_>,
    peer: SocketAddr,
    context: &Context,
) -> Result<Admitted, Option<Vec<u8>>> {
    let reject =
        |reason: LoginRejection| frame(&Message::LoginResult(LoginResult::Rejected(reason)));
    let Message::Login(login) = message else {
        tracing::info!(%peer, message = message.name(), "native connection refused: first message is not a login");
        return Err(error_reply(0, ErrorCode::NotLoggedIn, "log in first"));
    };
    if login.protocol != PROTOCOL_VERSION {
        tracing::info!(%peer, version = login.protocol, "native login refused: protocol version");
        return Err(reject(LoginRejection::UnsupportedVersion {
            server: PROTOCOL_VERSION,
        }));
    }
    if let Err(retry_after_seconds) = context.login_limiter.check(peer.ip()) {
        tracing::warn!(%peer, "native login refused: too many failed logins from this address");
        return Err(reject(LoginRejection::TooManyAttempts {
            retry_after_seconds,
        }));
    }
    let Some(slot) = context.engine.authenticate(login.token.as_str()) else {
        context.login_limiter.record_failure(peer.ip());
        tracing::info!(%peer, token = ?login.token, "native login refused: invalid token");
        return Err(reject(LoginRejection::InvalidToken));
    };
    let info = &login.info;
    let heartbeat = match info.heartbeat_seconds {
        0 => context.limits.default_heartbeat_seconds,
        seconds => seconds.min(3600),
    };
    let sync = info.sync_on_connect.then_some(SyncSelection::Reconnect {
        known_version: info.known_version,
    });
    Ok((slot, heartbeat, info.rx_buffer.max(64), sync))
}

struct Session {
    slot: Arc<DeviceSlot>,
    context: Arc<Context>,
    rx_buffer: usize,
    rate: RateLimiter,
}

type InFlight = std::pin::Pin<Box<dyn Future<Output = Option<Vec<u8>>> + Send>>;

impl Session {
    async fn send<S: AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
        bytes: Option<Vec<u8>>,
    ) -> std::io::Result<()> {
        if let Some(bytes) = bytes {
            stream.write_all(&bytes).await?;
        }
        Ok(())
    }

    /// Sends a sync's values, then its end marker (SPEC 3.7).
    async fn send_sync<S: AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
        id: u16,
        items: &[SyncItem],
    ) -> std::io::Result<()> {
        // One socket write for the whole sync: a fleet reconnecting at once costs one syscall
        // per device, not one per value.
        let mut bytes = Vec::new();
        let mut sent = Vec::with_capacity(items.len());
        for item in items {
            if let Some(encoded) = self.encode_value(item.pin, &item.value, item.version, Some(id))
            {
                bytes.extend(encoded);
                sent.push((item.pin, item.version));
            }
        }
        let complete = SyncComplete {
            id,
            count: u16::try_from(sent.len()).unwrap_or(u16::MAX),
            version: self.slot.version(),
        };
        bytes.extend(frame(&Message::SyncComplete(complete)).unwrap_or_default());
        stream.write_all(&bytes).await?;
        for (pin, version) in sent {
            self.context.engine.delivered(&self.slot, pin, version);
        }
        stream.flush().await
    }

    /// Sends one value, as a synced value (with the sync's id) or an update; `Ok(false)` when it
    /// is larger than the device's receive buffer and was skipped.
    async fn send_value<S: AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
        pin: Pin,
        value: &OwnedValue,
        version: u64,
        sync_id: Option<u16>,
    ) -> std::io::Result<bool> {
        let Some(bytes) = self.encode_value(pin, value, version, sync_id) else {
            return Ok(false);
        };
        stream.write_all(&bytes).await?;
        self.context.engine.delivered(&self.slot, pin, version);
        Ok(true)
    }

    /// Encodes one value as a synced value (with the sync's id) or an update; `None` when it
    /// does not fit a frame or the device's receive buffer.
    fn encode_value(
        &self,
        pin: Pin,
        value: &OwnedValue,
        version: u64,
        sync_id: Option<u16>,
    ) -> Option<Vec<u8>> {
        let Ok(value_ref) = value.as_value() else {
            return None;
        };
        let message = match sync_id {
            Some(id) => Message::SyncedValue(SyncedValue {
                id,
                pin,
                value: value_ref,
                version,
            }),
            None => Message::Update(Update {
                pin,
                value: value_ref,
                version,
            }),
        };
        let bytes = frame(&message)?;
        if bytes.len() > self.rx_buffer {
            tracing::warn!(device = self.slot.device.id, %pin, len = bytes.len(), rx_buffer = self.rx_buffer, "value not sent: larger than the device's receive buffer");
            return None;
        }
        Some(bytes)
    }

    async fn run<S>(
        &mut self,
        stream: &mut S,
        buffer: &mut ReadBuffer,
        mut outbound: crate::engine::OutboundQueue,
        kill: Arc<tokio::sync::Notify>,
        heartbeat: u16,
    ) -> Ending
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let silence = Limits::silence_timeout(heartbeat);
        let mut deadline = Instant::now() + silence;
        let mut in_flight: FuturesOrdered<InFlight> = FuturesOrdered::new();
        let mut shutdown = self.context.shutdown.clone();
        loop {
            // Handle every whole frame already buffered, unless too many writes are in flight.
            while in_flight.len() < MAX_IN_FLIGHT {
                let (reply, consumed) = match native::decode(buffer.pending()) {
                    Ok(Decoded::NeedMore) => break,
                    Ok(Decoded::Frame { message, consumed }) => {
                        (self.handle(message, &mut in_flight), consumed)
                    }
                    Err(error) => return Ending::Frame(error),
                };
                buffer.consume(consumed);
                if let Err(error) = self.send(stream, reply).await {
                    return Ending::Io(error);
                }
            }
            let can_read = in_flight.len() < MAX_IN_FLIGHT;
            tokio::select! {
                read = buffer.fill(stream), if can_read => match read {
                    Ok(0) => return Ending::Closed,
                    Ok(_) => deadline = Instant::now() + silence,
                    Err(error) => return Ending::Io(error),
                },
                Some(reply) = in_flight.next(), if !in_flight.is_empty() => {
                    // The replies that are ready as well go out in the same socket write: a
                    // pipelining device gets its acks in one syscall per batch, not one each.
                    let mut bytes = reply.unwrap_or_default();
                    while let Poll::Ready(Some(more)) =
                        std::future::poll_fn(|cx| Poll::Ready(in_flight.poll_next_unpin(cx))).await
                    {
                        bytes.extend(more.unwrap_or_default());
                    }
                    if let Err(error) = self.send(stream, Some(bytes)).await {
                        return Ending::Io(error);
                    }
                }
                message = outbound.recv() => match message {
                    Some(outbound) => {
                        let Outbound { pin, value, version, command } = *outbound;
                        if let Some(command_id) = command
                            && !self.context.engine.claim_command(&self.slot, command_id).await
                        {
                            continue;
                        }
                        if let Err(error) = self.send_value(stream, pin, &value, version, None).await {
                            return Ending::Io(error);
                        }
                    }
                    None => return Ending::Engine("dropped by the server (too slow to read)"),
                },
                () = kill.notified() => return Ending::Engine("closed by the server (replaced by a newer connection, too slow to read, or deleted)"),
                () = tokio::time::sleep_until(deadline) => return Ending::Silent(silence),
                _ = shutdown.changed() => return Ending::Shutdown,
            }
        }
    }

    /// Handles one message; returns an immediate reply, or queues a durable write's reply.
    fn handle(
        &mut self,
        message: Message<'_>,
        in_flight: &mut FuturesOrdered<InFlight>,
    ) -> Option<Vec<u8>> {
        let engine = &self.context.engine;
        match message {
            Message::Ping(ping) => {
                // Pings count toward the rate limit too: a ping flood is a flood.
                if !self.rate.allow() {
                    return self.rate_limited(ping.id);
                }
                frame(&Message::Pong(Pong { id: ping.id }))
            }
            Message::Pong(_) => None,
            Message::Write(write) => {
                if !self.rate.allow() {
                    return self.rate_limited(write.id);
                }
                let (id, pin) = (write.id, write.pin);
                match engine.device_write(&self.slot, write.pin, &write.value, write.age_ms) {
                    Ok(durable) => {
                        in_flight.push_back(Box::pin(async move {
                            match durable.await {
                                Ok(DeviceWriteOutcome::Stored { version }) => {
                                    frame(&Message::Ack(Ack {
                                        id,
                                        version: Some(version),
                                    }))
                                }
                                Ok(DeviceWriteOutcome::Superseded { current }) => {
                                    // Ack the write, then tell the device the value that won.
                                    let mut bytes =
                                        frame(&Message::Ack(Ack { id, version: None }))?;
                                    let value = current.value.as_value().ok()?;
                                    let update = Update {
                                        pin,
                                        value,
                                        version: current.version,
                                    };
                                    bytes.extend(frame(&Message::Update(update))?);
                                    Some(bytes)
                                }
                                Err(error) => write_error(id, &error),
                            }
                        }));
                        None
                    }
                    Err(error) => write_error(id, &error),
                }
            }
            Message::SyncRequest(request) => {
                let selection = match request.pins {
                    SyncPins::All => SyncSelection::All,
                    SyncPins::Only(pins) => SyncSelection::Pins(pins.to_vec()),
                };
                let items = engine.sync_items(&self.slot, &selection);
                // Sync answers are sent from the loop: queue them as an in-flight reply so that
                // they stay in order after the acks of earlier writes.
                let slot = self.slot.clone();
                let engine = engine.clone();
                let rx_buffer = self.rx_buffer;
                in_flight.push_back(Box::pin(async move {
                    let mut bytes = Vec::new();
                    let mut count: u16 = 0;
                    for item in &items {
                        let Ok(value) = item.value.as_value() else {
                            continue;
                        };
                        let message = Message::SyncedValue(SyncedValue {
                            id: request.id,
                            pin: item.pin,
                            value,
                            version: item.version,
                        });
                        let Some(encoded) = frame(&message) else {
                            continue;
                        };
                        if encoded.len() > rx_buffer {
                            continue;
                        }
                        bytes.extend(encoded);
                        engine.delivered(&slot, item.pin, item.version);
                        count = count.saturating_add(1);
                    }
                    let complete = SyncComplete {
                        id: request.id,
                        count,
                        version: slot.version(),
                    };
                    bytes.extend(frame(&Message::SyncComplete(complete))?);
                    Some(bytes)
                }));
                None
            }
            Message::Property(property) => {
                if !self.rate.allow() {
                    return self.rate_limited(property.id);
                }
                let record = PropertyRecord {
                    pin: property.pin,
                    name: property.name.as_str().to_owned(),
                    value: OwnedValue::from_value(&property.value),
                };
                let id = property.id;
                let durable = engine.set_property(&self.slot, record);
                in_flight.push_back(Box::pin(async move {
                    match durable.await {
                        Ok(()) => frame(&Message::Ack(Ack { id, version: None })),
                        Err(error) => error_reply(id, ErrorCode::Internal, &error.to_string()),
                    }
                }));
                None
            }
            Message::Event(event) => {
                if !self.rate.allow() {
                    return self.rate_limited(event.id);
                }
                let id = event.id;
                let durable = engine.log_event(
                    &self.slot,
                    event.code.as_str(),
                    event.description.map(|d| d.as_str()),
                );
                in_flight.push_back(Box::pin(async move {
                    match durable.await {
                        Ok(()) => frame(&Message::Ack(Ack { id, version: None })),
                        Err(error) => error_reply(id, ErrorCode::Internal, &error.to_string()),
                    }
                }));
                None
            }
            Message::Error(error) => {
                tracing::info!(device = self.slot.device.id, id = error.id, code = ?error.code, detail = %error.detail, "device reported an error");
                None
            }
            other => {
                tracing::info!(
                    device = self.slot.device.id,
                    message = other.name(),
                    "device sent a message only the server may send"
                );
                error_reply(
                    0,
                    ErrorCode::IllegalCommand,
                    "this message only travels from the server to devices",
                )
            }
        }
    }

    fn rate_limited(&mut self, id: u16) -> Option<Vec<u8>> {
        if self.rate.should_warn() {
            tracing::warn!(
                device = self.slot.device.id,
                dropped = self.rate.dropped(),
                "device over its message rate; excess dropped"
            );
            return error_reply(
                id,
                ErrorCode::RateLimited,
                "message rate limit exceeded; messages are being dropped",
            );
        }
        None
    }
}

fn write_error(id: u16, error: &WriteError) -> Option<Vec<u8>> {
    let code = match error {
        WriteError::UnknownPin(_) => ErrorCode::UnknownPin,
        WriteError::Invalid(_) => ErrorCode::WrongType,
        WriteError::Store(_) | WriteError::Deleted | WriteError::ShuttingDown => {
            ErrorCode::Internal
        }
    };
    error_reply(id, code, &error.to_string())
}
