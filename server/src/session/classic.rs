//! A classic Blynk hardware session, over TCP or binary WebSocket frames: login 29 or 2, the
//! INTERNAL info frame, pings answered (never sent), writes, syncs answered with the request's
//! id, one frame per socket write, and the device's `buff-in` respected.

use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::sync::Arc;
use std::time::Duration;

use blynk_proto::classic::{
    self, ClassicError, ClassicFrame, Command, Decoded, DeviceInfo, EventLog, HEADER_LEN,
    HardwareCommand, MAX_BODY, MessageIds, PropertyUpdate, Status, SyncRequest,
};
use blynk_proto::{Pin, Value};
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::classic_extras::{self, ClassicExtras};
use super::{Context, MAX_IN_FLIGHT};
use crate::config::Limits;
use crate::engine::{DeviceSlot, Outbound, Protocol, SyncSelection, WriteError};
use crate::limits::RateLimiter;
use crate::model::{OwnedValue, PropertyRecord};

/// The receive buffer assumed until the device announces its `buff-in` (the smallest boards').
const DEFAULT_BUFF_IN: usize = 256;

/// The least time between two frames to a device that logged in with the legacy LOGIN (2):
/// the Python `blynklib` (and its MicroPython twin) does, and parses only the first frame of
/// each socket read, so frames written back to back (the replies to a sync) merge in its
/// receive buffer and all but the first are lost. One frame per write is not enough.
const LEGACY_FRAME_GAP: Duration = Duration::from_millis(20);

/// A byte stream that sends whole frames: TCP, or binary WebSocket messages.
pub trait FrameIo: Send {
    /// Appends some bytes to `buf`; 0 at the end of the stream. Must be cancel-safe: bytes are
    /// appended only when the read completes.
    fn read(&mut self, buf: &mut Vec<u8>) -> impl Future<Output = std::io::Result<usize>> + Send;
    /// Sends one whole frame in one socket write.
    fn send_frame(&mut self, frame: &[u8]) -> impl Future<Output = std::io::Result<()>> + Send;
    /// Closes the stream.
    fn close(&mut self) -> impl Future<Output = ()> + Send;
}

/// [`FrameIo`] over a byte stream.
pub struct StreamIo<S>(S);

impl<S> StreamIo<S> {
    /// Wraps a stream.
    pub fn new(stream: S) -> Self {
        StreamIo(stream)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> FrameIo for StreamIo<S> {
    async fn read(&mut self, buf: &mut Vec<u8>) -> std::io::Result<usize> {
        buf.reserve(512);
        self.0.read_buf(buf).await
    }

    async fn send_frame(&mut self, frame: &[u8]) -> std::io::Result<()> {
        self.0.write_all(frame).await?;
        self.0.flush().await
    }

    async fn close(&mut self) {
        let _ = self.0.shutdown().await;
    }
}

/// [`FrameIo`] that spaces the frames it sends by at least `gap` (none when zero).
struct Paced<I> {
    io: I,
    gap: Duration,
    last_sent: Option<Instant>,
}

impl<I: FrameIo> FrameIo for Paced<I> {
    async fn read(&mut self, buf: &mut Vec<u8>) -> std::io::Result<usize> {
        self.io.read(buf).await
    }

    async fn send_frame(&mut self, frame: &[u8]) -> std::io::Result<()> {
        if let Some(last_sent) = self.last_sent {
            tokio::time::sleep_until(last_sent + self.gap).await;
        }
        let sent = self.io.send_frame(frame).await;
        if !self.gap.is_zero() {
            self.last_sent = Some(Instant::now());
        }
        sent
    }

    async fn close(&mut self) {
        self.io.close().await;
    }
}

type Ending = super::Ending<ClassicError>;

/// Bytes received and not yet parsed.
struct Inbox {
    bytes: Vec<u8>,
    start: usize,
}

impl Inbox {
    fn pending(&self) -> &[u8] {
        &self.bytes[self.start..]
    }

    fn consume(&mut self, count: usize) {
        self.start += count;
        if self.start == self.bytes.len() {
            self.bytes.clear();
            self.start = 0;
            if self.bytes.capacity() > 2 * (HEADER_LEN + MAX_BODY) {
                self.bytes.shrink_to(512);
            }
        }
    }

    async fn fill<I: FrameIo>(&mut self, io: &mut I) -> std::io::Result<usize> {
        if self.start > 0 {
            self.bytes.drain(..self.start);
            self.start = 0;
        }
        io.read(&mut self.bytes).await
    }
}

fn response(id: u16, status: Status) -> Option<Vec<u8>> {
    let id = NonZeroU16::new(id)?;
    let mut out = vec![0u8; HEADER_LEN];
    classic::encode_response(&mut out, id, status).ok()?;
    Some(out)
}

/// Serves one classic connection until it ends.
pub async fn serve<I: FrameIo>(mut io: I, peer: SocketAddr, context: Arc<Context>) {
    let mut inbox = Inbox {
        bytes: Vec::new(),
        start: 0,
    };
    let login_timeout = Duration::from_secs(context.limits.login_timeout_seconds);
    let (slot, gap) = match tokio::time::timeout(
        login_timeout,
        login(&mut io, &mut inbox, peer, &context),
    )
    .await
    {
        Ok(Some((slot, legacy_login))) => {
            let gap = if legacy_login {
                LEGACY_FRAME_GAP
            } else {
                Duration::ZERO
            };
            (slot, gap)
        }
        Ok(None) => {
            io.close().await;
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "classic connection closed: no login within {login_timeout:?}");
            io.close().await;
            return;
        }
    };
    let Some(attached) =
        context
            .engine
            .attach(&slot, Protocol::Classic, context.limits.send_queue, None)
    else {
        io.close().await;
        return;
    };
    tracing::info!(
        %peer, device = slot.device.id, name = %slot.device.name, session = attached.session_id,
        replaced = attached.replaced_previous, "device connected (classic)"
    );
    let mut session = Session {
        slot: slot.clone(),
        context: context.clone(),
        buff_in: DEFAULT_BUFF_IN,
        heartbeat: context.limits.default_heartbeat_seconds,
        ids: MessageIds::default(),
        rate: RateLimiter::new(
            context.limits.messages_per_second,
            context.limits.message_burst,
        ),
        extras: ClassicExtras::new(peer.ip()),
    };
    let mut io = Paced {
        io,
        gap,
        last_sent: None,
    };
    let ending = session
        .run(&mut io, &mut inbox, attached.outbound, attached.kill)
        .await;
    session.extras.finish(&context.engine, &slot);
    context.engine.detach(&slot, attached.session_id);
    io.close().await;
    tracing::info!(%peer, device = slot.device.id, dropped = session.rate.dropped(), reason = %ending, "device disconnected (classic)");
}

/// Reads the login frame and answers it: 200, or 9 for a bad token (clients stop retrying).
/// Returns the device and whether it used the legacy LOGIN (2).
async fn login<I: FrameIo>(
    io: &mut I,
    inbox: &mut Inbox,
    peer: SocketAddr,
    context: &Context,
) -> Option<(Arc<DeviceSlot>, bool)> {
    loop {
        let (frame, consumed) = match classic::decode(inbox.pending(), MAX_BODY) {
            Ok(Decoded::NeedMore) => match inbox.fill(io).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => continue,
            },
            Ok(Decoded::Frame { frame, consumed }) => (frame, consumed),
            Err(error) => {
                tracing::info!(%peer, %error, "classic connection refused: bad first frame");
                return None;
            }
        };
        let id = frame.id;
        if !matches!(frame.command, Command::HwLogin | Command::Login) {
            tracing::info!(%peer, command = ?frame.command, "classic connection refused: first frame is not a login");
            if let Some(reply) = response(id, Status::NotAuthenticated) {
                let _ = io.send_frame(&reply).await;
            }
            return None;
        }
        if context.login_limiter.check(peer.ip()).is_err() {
            tracing::warn!(%peer, "classic login refused: too many failed logins from this address");
            if let Some(reply) = response(id, Status::QuotaLimit) {
                let _ = io.send_frame(&reply).await;
            }
            return None;
        }
        let slot = classic::messages::parse_login(frame.body)
            .ok()
            .and_then(|token| context.engine.authenticate(token.as_str()));
        let Some(slot) = slot else {
            context.login_limiter.record_failure(peer.ip());
            tracing::info!(%peer, "classic login refused: invalid token");
            if let Some(reply) = response(id, Status::InvalidToken) {
                let _ = io.send_frame(&reply).await;
            }
            return None;
        };
        let legacy = frame.command == Command::Login;
        inbox.consume(consumed);
        if let Some(reply) = response(id, Status::Ok) {
            io.send_frame(&reply).await.ok()?;
        }
        return Some((slot, legacy));
    }
}

type InFlight = std::pin::Pin<Box<dyn Future<Output = Option<Vec<u8>>> + Send>>;

struct Session {
    slot: Arc<DeviceSlot>,
    context: Arc<Context>,
    buff_in: usize,
    heartbeat: u16,
    ids: MessageIds,
    rate: RateLimiter,
    /// GROUP, BRIDGE and time requests.
    extras: ClassicExtras,
}

/// What handling a frame asks the loop to send.
enum Reply {
    None,
    Frame(Vec<u8>),
    /// Several frames, each in its own socket write.
    Frames(Vec<Vec<u8>>),
}

impl Session {
    async fn run<I: FrameIo>(
        &mut self,
        io: &mut I,
        inbox: &mut Inbox,
        mut outbound: crate::engine::OutboundQueue,
        kill: Arc<tokio::sync::Notify>,
    ) -> Ending {
        let mut silence = Limits::silence_timeout(self.heartbeat);
        let mut last_read = Instant::now();
        let mut in_flight: FuturesOrdered<InFlight> = FuturesOrdered::new();
        let mut shutdown = self.context.shutdown.clone();
        // Nothing is pushed to the device before it has sent its first frame after login
        // (normally the INTERNAL info frame with its buff-in): the libraries wait for the
        // answer to that frame and would misread anything else. A device that sends nothing
        // gets its pushes after a short grace period.
        let mut ready = false;
        let grace = tokio::time::sleep(Duration::from_secs(2));
        tokio::pin!(grace);
        loop {
            while in_flight.len() < MAX_IN_FLIGHT {
                let (frame, consumed) = match classic::decode(inbox.pending(), MAX_BODY) {
                    Ok(Decoded::NeedMore) => break,
                    Ok(Decoded::Frame { frame, consumed }) => (frame, consumed),
                    Err(error) => return Ending::Frame(error),
                };
                let reply = self.handle(frame, &mut in_flight);
                inbox.consume(consumed);
                if let Err(error) = send(io, reply).await {
                    return Ending::Io(error);
                }
                silence = Limits::silence_timeout(self.heartbeat);
                ready = true;
            }
            // From the last read, with the heartbeat the frames read since may have announced.
            let deadline = last_read + silence;
            let can_read = in_flight.len() < MAX_IN_FLIGHT;
            tokio::select! {
                read = inbox.fill(io), if can_read => match read {
                    Ok(0) => return Ending::Closed,
                    Ok(_) => last_read = Instant::now(),
                    Err(error) => return Ending::Io(error),
                },
                Some(reply) = in_flight.next(), if !in_flight.is_empty() => {
                    if let Some(reply) = reply
                        && let Err(error) = io.send_frame(&reply).await
                    {
                        return Ending::Io(error);
                    }
                }
                () = &mut grace, if !ready => ready = true,
                message = outbound.recv(), if ready => match message {
                    Some(outbound) => {
                        let Outbound { pin, value, version, command } = *outbound;
                        if let Some(command_id) = command
                            && !self.context.engine.claim_command(&self.slot, command_id).await
                        {
                            continue;
                        }
                        let id = self.ids.next_id();
                        if let Some(frame) = self.value_frame(id, pin, &value) {
                            if let Err(error) = io.send_frame(&frame).await {
                                return Ending::Io(error);
                            }
                            self.context.engine.delivered(&self.slot, pin, version);
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

    /// A HARDWARE write frame for the device, or `None` when it exceeds the device's `buff-in`
    /// (the classic library would drop the connection on it).
    fn value_frame(&self, id: NonZeroU16, pin: Pin, value: &OwnedValue) -> Option<Vec<u8>> {
        let value = value.as_value().ok()?;
        let mut out = vec![0u8; HEADER_LEN + self.buff_in];
        match classic::encode_write(
            &mut out,
            id,
            self.buff_in.saturating_sub(HEADER_LEN),
            pin,
            &value,
        ) {
            Ok(frame) => Some(frame.to_vec()),
            Err(error) => {
                tracing::warn!(device = self.slot.device.id, %pin, %error, buff_in = self.buff_in, "value not sent: larger than the device's buff-in");
                None
            }
        }
    }

    fn handle(
        &mut self,
        frame: ClassicFrame<'_>,
        in_flight: &mut FuturesOrdered<InFlight>,
    ) -> Reply {
        let id = frame.id;
        // Every frame counts, pings included, as on the classic server: a ping flood is a flood.
        if !self.rate.allow() {
            if self.rate.should_warn() {
                tracing::warn!(
                    device = self.slot.device.id,
                    dropped = self.rate.dropped(),
                    "device over its message rate; excess dropped"
                );
                return reply(response(id, Status::QuotaLimit));
            }
            return Reply::None;
        }
        let engine = self.context.engine.clone();
        self.extras
            .before_frame(frame.command, &engine, &self.slot, in_flight);
        match frame.command {
            Command::Ping => reply(response(id, Status::Ok)),
            Command::Response => Reply::None,
            Command::Internal => self.internal(id, frame.body),
            Command::Hardware => match HardwareCommand::parse(frame.body) {
                Ok(command) => match command.as_write() {
                    Some(Ok((pin, value))) => self.write(id, pin, &value, in_flight),
                    Some(Err(error)) => self.refuse(id, Status::IllegalCommandBody, &error),
                    // Pin modes and reads are for the device's side only.
                    None => Reply::None,
                },
                Err(ClassicError::UnknownSubCommand) => reply(response(id, Status::IllegalCommand)),
                Err(error) => self.refuse(id, Status::IllegalCommandBody, &error),
            },
            Command::HardwareSync => match SyncRequest::parse(frame.body) {
                Ok(SyncRequest::All) => self.sync(id, SyncSelection::All),
                Ok(request) => match request.pins().collect::<Result<Vec<Pin>, _>>() {
                    Ok(pins) => self.sync(id, SyncSelection::Pins(pins)),
                    Err(error) => self.refuse(id, Status::IllegalCommandBody, &error),
                },
                Err(error) => self.refuse(id, Status::IllegalCommandBody, &error),
            },
            Command::Property => match PropertyUpdate::parse(frame.body) {
                Ok(update) => match OwnedValue::from_text_parts(update.values) {
                    Ok(value) => {
                        let record = PropertyRecord {
                            pin: update.pin,
                            name: update.name.as_str().to_owned(),
                            value,
                        };
                        let durable = engine.set_property(&self.slot, record);
                        in_flight.push_back(Box::pin(async move {
                            let status = match durable.await {
                                Ok(()) => Status::Ok,
                                Err(_) => Status::ServerException,
                            };
                            response(id, status)
                        }));
                        Reply::None
                    }
                    Err(error) => self.refuse(
                        id,
                        Status::IllegalCommandBody,
                        &ClassicError::BadValue(error),
                    ),
                },
                Err(error) => self.refuse(id, Status::IllegalCommandBody, &error),
            },
            Command::EventLog => match EventLog::parse(frame.body) {
                Ok(event) => {
                    let durable =
                        engine.log_event(&self.slot, event.code.as_str(), event.description);
                    in_flight.push_back(Box::pin(async move {
                        let status = match durable.await {
                            Ok(()) => Status::Ok,
                            Err(_) => Status::ServerException,
                        };
                        response(id, status)
                    }));
                    Reply::None
                }
                Err(error) => self.refuse(id, Status::IllegalCommandBody, &error),
            },
            Command::EventClear => reply(response(id, Status::Ok)),
            Command::Group => {
                self.extras
                    .group(&engine, &self.slot, id, frame.body, in_flight);
                Reply::None
            }
            Command::Bridge => {
                self.extras
                    .bridge(&self.context, &self.slot, id, frame.body, in_flight);
                Reply::None
            }
            Command::DebugPrint => {
                classic_extras::debug_print(&self.slot, frame.body);
                Reply::None
            }
            Command::HwLogin | Command::Login => reply(response(id, Status::AlreadyRegistered)),
            other => {
                tracing::info!(device = self.slot.device.id, command = ?other, "unsupported classic command");
                reply(response(id, Status::IllegalCommand))
            }
        }
    }

    /// INTERNAL: the info frame (heartbeat, buff-in) gets 200; `rtc` and `utc` time requests get
    /// their answer.
    fn internal(&mut self, id: u16, body: &[u8]) -> Reply {
        let Ok(info) = DeviceInfo::parse(body) else {
            return reply(response(id, Status::IllegalCommandBody));
        };
        if let Some(kind @ ("rtc" | "utc")) = info.kind() {
            let what = info.pairs().next().map(|(_, what)| what);
            return reply(
                self.extras
                    .time_request(&self.context, &self.slot, id, kind, what),
            );
        }
        if let Some(heartbeat) = info.heartbeat_seconds().filter(|seconds| *seconds > 0) {
            self.heartbeat = heartbeat.min(3600);
        }
        if let Some(buff_in) = info
            .buffer_in()
            .filter(|bytes| usize::from(*bytes) > HEADER_LEN)
        {
            self.buff_in = usize::from(buff_in).min(MAX_BODY + HEADER_LEN);
        }
        tracing::debug!(
            device = self.slot.device.id,
            heartbeat = self.heartbeat,
            buff_in = self.buff_in,
            "device info"
        );
        reply(response(id, Status::Ok))
    }

    /// A device write; the classic server never acknowledged them, so only errors get a reply.
    fn write(
        &mut self,
        id: u16,
        pin: Pin,
        value: &Value<'_>,
        in_flight: &mut FuturesOrdered<InFlight>,
    ) -> Reply {
        let engine = &self.context.engine;
        if self
            .extras
            .grouped_write(engine, &self.slot, id, pin, value, in_flight)
        {
            return Reply::None;
        }
        match self
            .context
            .engine
            .device_write(&self.slot, pin, value, None)
        {
            Ok(durable) => {
                let device = self.slot.device.id;
                in_flight.push_back(Box::pin(async move {
                    match durable.await {
                        Ok(_) => None,
                        Err(error) => {
                            tracing::error!(device, %pin, %error, "device write not stored");
                            response(id, Status::ServerException)
                        }
                    }
                }));
                Reply::None
            }
            Err(WriteError::UnknownPin(pin)) => {
                tracing::debug!(device = self.slot.device.id, %pin, "write to a pin without datastream refused");
                reply(response(id, Status::IllegalCommandBody))
            }
            Err(error) => self.refuse(id, Status::IllegalCommandBody, &error),
        }
    }

    /// Sync answers: one HARDWARE frame per value, each reusing the request's id.
    fn sync(&mut self, id: u16, selection: SyncSelection) -> Reply {
        let items = self.context.engine.sync_items(&self.slot, &selection);
        let reply_id = NonZeroU16::new(id).unwrap_or_else(|| self.ids.next_id());
        let mut frames = Vec::with_capacity(items.len());
        for item in items {
            if let Some(frame) = self.value_frame(reply_id, item.pin, &item.value) {
                frames.push(frame);
                self.context
                    .engine
                    .delivered(&self.slot, item.pin, item.version);
            }
        }
        Reply::Frames(frames)
    }

    fn refuse(&self, id: u16, status: Status, error: &dyn std::fmt::Display) -> Reply {
        tracing::info!(device = self.slot.device.id, %error, status = status.code(), "classic message refused");
        reply(response(id, status))
    }
}

fn reply(frame: Option<Vec<u8>>) -> Reply {
    frame.map_or(Reply::None, Reply::Frame)
}

async fn send<I: FrameIo>(io: &mut I, reply: Reply) -> std::io::Result<()> {
    match reply {
        Reply::None => Ok(()),
        Reply::Frame(frame) => io.send_frame(&frame).await,
        Reply::Frames(frames) => {
            for frame in frames {
                io.send_frame(&frame).await?;
            }
            Ok(())
        }
    }
}
