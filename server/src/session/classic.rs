//! The classic Blynk protocol's device session, over TCP or binary WebSocket frames: login 29
//! or 2, the INTERNAL info frame, pings answered (never sent), writes, syncs answered with the
//! request's id, one frame per socket write, and the device's `buff-in` respected. GROUP,
//! BRIDGE, time requests and DEBUG_PRINT are in [`super::classic_extras`]. The loop itself is
//! the shared [`super::driver`].

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU16;
use std::sync::Arc;
use std::time::Duration;

use blynk_proto::classic::{
    self, ClassicError, ClassicFrame, Command, Decoded, DeviceInfo, EventLog, HEADER_LEN,
    HardwareCommand, MAX_BODY, MessageIds, PropertyUpdate, Status, SyncRequest,
};
use blynk_proto::{Pin, Value};

use super::Context;
use super::classic_extras::{self, Answers, ClassicExtras};
use super::classic_reply::{Done, response};
use super::connection::{Codec, Connection, Framing, Outgoing, Transport};
use super::driver::{self, Protocol};
use super::in_flight::InFlight;
use crate::config::Limits;
use crate::engine::{self, DeviceSlot, EngineError, SyncItem, SyncSelection};
use crate::limits::RateLimiter;
use crate::login_limiter::Verdict;
use crate::model::{OwnedValue, PropertyRecord};
use crate::session::refusal::classic_status;

/// The receive buffer assumed until the device announces its `buff-in` (the smallest boards').
const DEFAULT_BUFF_IN: usize = 256;

/// The least time between two frames to a device that logged in with the legacy LOGIN (2):
/// the Python `blynklib` (and its MicroPython twin) does, and parses only the first frame of
/// each socket read, so frames written back to back (the replies to a sync) merge in its
/// receive buffer and all but the first are lost. One frame per write is not enough.
const LEGACY_FRAME_GAP: Duration = Duration::from_millis(20);

/// How long pushes wait for the device's first frame after login (normally the INTERNAL info
/// frame with its buff-in): the libraries wait for the answer to that frame and would misread
/// anything else.
const PUSH_GRACE: Duration = Duration::from_secs(2);

/// Serves one classic connection (TCP, TLS or WebSocket) until it ends.
pub fn serve<T: Transport>(
    transport: T,
    peer: SocketAddr,
    context: Arc<Context>,
) -> impl Future<Output = ()> + Send {
    driver::serve::<ClassicSession, _>(transport, peer, context)
}

/// Classic frames.
pub(crate) struct ClassicCodec;

impl Codec for ClassicCodec {
    type Frame<'a> = ClassicFrame<'a>;
    type Error = ClassicError;

    fn decode(bytes: &[u8]) -> Result<Option<(ClassicFrame<'_>, usize)>, ClassicError> {
        Ok(match classic::decode(bytes, MAX_BODY)? {
            Decoded::NeedMore => None,
            Decoded::Frame { frame, consumed } => Some((frame, consumed)),
        })
    }
}

/// A classic device session's state.
pub(crate) struct ClassicSession {
    slot: Arc<DeviceSlot>,
    context: Arc<Context>,
    /// The login frame's id, answered once attached.
    login_id: u16,
    legacy_login: bool,
    buff_in: usize,
    heartbeat: u16,
    ids: MessageIds,
    rate: RateLimiter,
    /// The address the device connects from: bridge tokens count as logins from it.
    peer: IpAddr,
    /// GROUP and BRIDGE state, made at the first of those frames: most devices never send one,
    /// and an idle session's task stays small.
    extras: Option<Box<ClassicExtras>>,
}

impl Protocol for ClassicSession {
    type Codec = ClassicCodec;
    type Done = Done;
    const NAME: &'static str = "classic";
    const ENGINE_PROTOCOL: engine::Protocol = engine::Protocol::Classic;
    const PUSH_GRACE: Option<Duration> = Some(PUSH_GRACE);

    /// Reads the login frame; a bad token gets 9 (clients stop retrying).
    async fn login<T: Transport>(
        connection: &mut Connection<T>,
        peer: SocketAddr,
        context: &Arc<Context>,
    ) -> Option<(Self, Option<SyncSelection>)> {
        if driver::read_login_frame::<Self, T>(connection, peer)
            .await
            .is_err()
        {
            return None;
        }
        let Ok(Decoded::Frame { frame, consumed }) =
            classic::decode(connection.inbox.pending(), MAX_BODY)
        else {
            return None;
        };
        if matches!(frame.command, Command::HwLogin | Command::Login)
            && let Ok(token) = classic::messages::parse_login(frame.body)
        {
            context.engine.learn_token(token.as_str()).await;
        }
        let admitted = admit(&frame, peer, context, &mut connection.outgoing);
        if admitted.is_none() {
            let _ = connection.flush().await;
            return None;
        }
        connection.inbox.consume(consumed);
        admitted.map(|session| (session, None))
    }

    async fn welcome<T: Transport>(
        &mut self,
        connection: &mut Connection<T>,
        _sync: Vec<SyncItem>,
    ) -> std::io::Result<()> {
        response(&mut connection.outgoing, self.login_id, Status::Ok);
        connection.flush().await
    }

    fn slot(&self) -> &Arc<DeviceSlot> {
        &self.slot
    }

    fn framing(&self) -> Framing {
        let gap = if self.legacy_login {
            LEGACY_FRAME_GAP
        } else {
            Duration::ZERO
        };
        Framing::FramePerWrite { gap }
    }

    fn silence(&self) -> Duration {
        Limits::silence_timeout(self.heartbeat)
    }

    fn handle(
        &mut self,
        frame: ClassicFrame<'_>,
        out: &mut Outgoing,
        in_flight: &mut InFlight<Done>,
    ) {
        let id = frame.id;
        // Every frame counts, pings included, as on the classic server: a ping flood is a flood.
        if !self.rate.allow() {
            if self.rate.warn_device(self.slot.device.id) {
                response(out, id, Status::QuotaLimit);
            }
            return;
        }
        let engine = self.context.engine.clone();
        if let Some(extras) = &mut self.extras {
            extras.before_frame(
                frame.command,
                &engine,
                &self.slot,
                &mut Answers {
                    out: &mut *out,
                    in_flight: &mut *in_flight,
                },
            );
        }
        match frame.command {
            Command::Ping => response(out, id, Status::Ok),
            Command::Response => {}
            Command::Internal => self.internal(out, id, frame.body),
            Command::Hardware => match HardwareCommand::parse(frame.body) {
                Ok(command) => match command.as_write() {
                    Some(Ok((pin, value))) => self.write(out, id, pin, &value, in_flight),
                    Some(Err(error)) => self.refuse(out, id, Status::IllegalCommandBody, &error),
                    // Pin modes and reads are for the device's side only.
                    None => {}
                },
                Err(ClassicError::UnknownSubCommand) => response(out, id, Status::IllegalCommand),
                Err(error) => self.refuse(out, id, Status::IllegalCommandBody, &error),
            },
            Command::HardwareSync => match SyncRequest::parse(frame.body) {
                Ok(SyncRequest::All) => self.sync(out, id, SyncSelection::All),
                Ok(request) => match request.pins().collect::<Result<Vec<Pin>, _>>() {
                    Ok(pins) => self.sync(out, id, SyncSelection::Pins(pins)),
                    Err(error) => self.refuse(out, id, Status::IllegalCommandBody, &error),
                },
                Err(error) => self.refuse(out, id, Status::IllegalCommandBody, &error),
            },
            Command::Property => match PropertyUpdate::parse(frame.body) {
                Ok(update) => match OwnedValue::from_text_parts(update.values) {
                    Ok(value) => {
                        let record = PropertyRecord {
                            pin: update.pin,
                            name: update.name.as_str().to_owned(),
                            value,
                        };
                        match engine.set_property(&self.slot, record) {
                            Ok(durable) => in_flight.push(async move {
                                let status = match durable.await {
                                    Ok(()) => Status::Ok,
                                    Err(error) => classic_status(&error),
                                };
                                Some((id, status))
                            }),
                            Err(refusal) => {
                                self.refuse(out, id, classic_status(&refusal), &refusal)
                            }
                        }
                    }
                    Err(error) => self.refuse(
                        out,
                        id,
                        Status::IllegalCommandBody,
                        &ClassicError::BadValue(error),
                    ),
                },
                Err(error) => self.refuse(out, id, Status::IllegalCommandBody, &error),
            },
            Command::EventLog => match EventLog::parse(frame.body) {
                Ok(event) => {
                    let durable =
                        engine.log_event(&self.slot, event.code.as_str(), event.description);
                    in_flight.push(async move {
                        let status = match durable.await {
                            Ok(()) => Status::Ok,
                            Err(error) => classic_status(&error),
                        };
                        Some((id, status))
                    });
                }
                Err(error) => self.refuse(out, id, Status::IllegalCommandBody, &error),
            },
            Command::EventClear => response(out, id, Status::Ok),
            command @ (Command::Group | Command::Bridge) => {
                self.extras
                    .get_or_insert_with(|| Box::new(ClassicExtras::new(self.peer)))
                    .frame(
                        command,
                        &self.context,
                        &self.slot,
                        id,
                        frame.body,
                        &mut Answers {
                            out: &mut *out,
                            in_flight: &mut *in_flight,
                        },
                    );
            }
            Command::DebugPrint => classic_extras::debug_print(&self.slot, frame.body),
            Command::HwLogin | Command::Login => response(out, id, Status::AlreadyRegistered),
            other => {
                tracing::info!(device = self.slot.device.id, command = ?other, "unsupported classic command");
                response(out, id, Status::IllegalCommand);
            }
        }
    }

    fn answer(&mut self, done: Done, out: &mut Outgoing) {
        if let Some((id, status)) = done {
            response(out, id, status);
        }
    }

    fn push(&mut self, pin: Pin, value: &OwnedValue, _version: u64, out: &mut Outgoing) -> bool {
        let id = self.ids.next_id();
        self.value_frame(out, id, pin, value)
    }

    fn dropped(&self) -> u64 {
        self.rate.dropped()
    }

    /// An open group is applied: its writes were received whole.
    fn finish(&mut self) {
        if let Some(extras) = &mut self.extras {
            extras.finish(&self.context.engine, &self.slot);
        }
    }
}

impl ClassicSession {
    /// Queues a HARDWARE write frame for the device; `false` when it exceeds the device's
    /// `buff-in` (the classic library would drop the connection on it) or the frame cannot
    /// carry it (a NUL inside text, an empty last part: refused on every write path, so only
    /// a value stored before that rule could get here).
    fn value_frame(
        &self,
        out: &mut Outgoing,
        id: NonZeroU16,
        pin: Pin,
        value: &OwnedValue,
    ) -> bool {
        let Ok(value) = value.as_value() else {
            return false;
        };
        let max_body = self.buff_in.saturating_sub(HEADER_LEN);
        let encoded = out.frame(HEADER_LEN + self.buff_in, |buf| {
            classic::encode_write(buf, id, max_body, pin, &value).map(<[u8]>::len)
        });
        match encoded {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(device = self.slot.device.id, %pin, %error, buff_in = self.buff_in, "value not sent to the classic device");
                false
            }
        }
    }

    /// INTERNAL: the info frame (heartbeat, buff-in) gets 200; `rtc` and `utc` time requests get
    /// their answer.
    fn internal(&mut self, out: &mut Outgoing, id: u16, body: &[u8]) {
        let Ok(info) = DeviceInfo::parse(body) else {
            return response(out, id, Status::IllegalCommandBody);
        };
        if let Some(kind @ ("rtc" | "utc")) = info.kind() {
            let what = info.pairs().next().map(|(_, what)| what);
            classic_extras::time_request(&self.context, &self.slot, id, kind, what, out);
            return;
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
        response(out, id, Status::Ok);
    }

    /// A device write; the classic server never acknowledged them, so only errors get a reply.
    fn write(
        &mut self,
        out: &mut Outgoing,
        id: u16,
        pin: Pin,
        value: &Value<'_>,
        in_flight: &mut InFlight<Done>,
    ) {
        let engine = &self.context.engine;
        if let Some(extras) = &mut self.extras
            && extras.group.write(
                engine,
                &self.slot,
                id,
                pin,
                value,
                &mut Answers {
                    out: &mut *out,
                    in_flight: &mut *in_flight,
                },
            )
        {
            return;
        }
        match self
            .context
            .engine
            .device_write(&self.slot, pin, value, None)
        {
            Ok(durable) => {
                let device = self.slot.device.id;
                in_flight.push(async move {
                    match durable.await {
                        Ok(_) => None,
                        Err(error) => {
                            tracing::error!(device, %pin, %error, "device write not stored");
                            Some((id, classic_status(&error)))
                        }
                    }
                });
            }
            Err(EngineError::UnknownPin(pin)) => {
                tracing::debug!(device = self.slot.device.id, %pin, "write to a pin without datastream refused");
                response(out, id, Status::IllegalCommandBody);
            }
            Err(error) => self.refuse(out, id, classic_status(&error), &error),
        }
    }

    /// Sync answers: one HARDWARE frame per value, each reusing the request's id.
    fn sync(&mut self, out: &mut Outgoing, id: u16, selection: SyncSelection) {
        let items = self.context.engine.sync_items(&self.slot, &selection);
        let reply_id = NonZeroU16::new(id).unwrap_or_else(|| self.ids.next_id());
        for item in items {
            if self.value_frame(out, reply_id, item.pin, &item.value) {
                self.context
                    .engine
                    .delivered(&self.slot, item.pin, item.version);
            }
        }
    }

    fn refuse(&self, out: &mut Outgoing, id: u16, status: Status, error: &dyn std::fmt::Display) {
        tracing::info!(device = self.slot.device.id, %error, status = status.code(), "classic message refused");
        response(out, id, status);
    }
}

/// Checks a login frame: HW_LOGIN or LOGIN with a known token; a wrong one counts as a failed
/// login of the address. `None`: refused, with the refusal queued in `out`.
fn admit(
    frame: &ClassicFrame<'_>,
    peer: SocketAddr,
    context: &Arc<Context>,
    out: &mut Outgoing,
) -> Option<ClassicSession> {
    let id = frame.id;
    if !matches!(frame.command, Command::HwLogin | Command::Login) {
        tracing::info!(%peer, command = ?frame.command, "classic connection refused: first frame is not a login");
        response(out, id, Status::NotAuthenticated);
        return None;
    }
    // The credential first: a right token is never refused for what others did (SPEC 6).
    let slot = classic::messages::parse_login(frame.body)
        .ok()
        .and_then(|token| context.engine.authenticate(token.as_str()));
    let Some(slot) = slot else {
        context.engine.metrics().failed_login();
        match context.login_limiter.record_failure(peer.ip()) {
            Verdict::Counted => {
                tracing::info!(%peer, "classic login refused: invalid token");
                response(out, id, Status::InvalidToken);
            }
            Verdict::Limited { .. } => {
                tracing::warn!(%peer, "classic login refused: invalid token, too many failed logins from this address");
                response(out, id, Status::QuotaLimit);
            }
        }
        return None;
    };
    context.engine.metrics().login();
    Some(ClassicSession {
        slot,
        context: context.clone(),
        login_id: id,
        legacy_login: frame.command == Command::Login,
        buff_in: DEFAULT_BUFF_IN,
        heartbeat: context.limits.default_heartbeat_seconds,
        ids: MessageIds::default(),
        rate: RateLimiter::new(
            context.limits.messages_per_second,
            context.limits.message_burst,
        ),
        peer: peer.ip(),
        extras: None,
    })
}
