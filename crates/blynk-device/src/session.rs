//! The protocol state machine of one connection, without sockets: bytes from the server go in,
//! [`Event`]s come out, and the login and ping replies are built here.
//!
//! The [`Runner`](crate::Runner) drives it over a real connection; tests drive it with any bytes
//! they like. It keeps the received bytes in the caller's buffer and never panics or writes past
//! it, whatever the server sends: a frame longer than the buffer, a bad version or a malformed
//! payload is a typed [`Error`], after which the connection is closed.

use blynk_proto::native::{
    Decoded, DeviceInfo, ErrorCode, HEADER_LEN, Login, LoginResult, Message, PROTOCOL_VERSION, lean,
};
use blynk_proto::text::{BoundedStr, Token};
use blynk_proto::{MAX_NAME_LEN, Pin, Value};

use crate::error::Error;
use crate::log::pin_letter;

/// Something the server told the device.
#[derive(Debug, Clone, PartialEq)]
pub enum Event<'m> {
    /// The login was accepted.
    LoginAccepted {
        /// The heartbeat the server holds the device to, in seconds.
        heartbeat_seconds: u16,
        /// The highest value version the server stores for the device.
        version: u64,
        /// Whether the automatic sync follows.
        sync_follows: bool,
    },
    /// A pin value: an app write forwarded (`sync_id` is `None`) or a synced value.
    Value {
        /// The pin, checked to be in range.
        pin: Pin,
        /// The value, borrowing the receive buffer.
        value: Value<'m>,
        /// Its version (0 for a datastream's default).
        version: u64,
        /// The sync it answers: 0 for the automatic sync after login.
        sync_id: Option<u16>,
    },
    /// A sync ended.
    SyncComplete {
        /// The sync request's id; 0 for the automatic sync.
        id: u16,
        /// How many values it sent.
        count: u16,
    },
    /// The server stored message `id`.
    Ack {
        /// The message's id.
        id: u16,
        /// The version a write got; `None` when it lost to a newer app write.
        version: Option<u64>,
    },
    /// The server refused message `id`.
    Refused {
        /// The message's id.
        id: u16,
        /// Why.
        code: ErrorCode,
    },
}

/// Where the connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    LoggingIn,
    Online,
}

/// The state that frames change.
#[derive(Debug)]
struct State {
    phase: Phase,
    /// Whether the automatic sync of this connection completed, so that the device holds every
    /// value up to the versions it sees from now on.
    restored: bool,
    known_version: Option<u64>,
    pong_due: Option<u16>,
}

/// One connection's protocol state over a caller-supplied receive buffer.
#[derive(Debug)]
pub struct Session<'b> {
    rx: &'b mut [u8],
    filled: usize,
    failed: Option<Error>,
    state: State,
}

impl<'b> Session<'b> {
    /// A session before login. `known_version` is the highest value version the device kept
    /// from earlier connections (`None` after a reset); it goes into the login for delta resync.
    pub fn new(rx: &'b mut [u8], known_version: Option<u64>) -> Self {
        Session {
            rx,
            filled: 0,
            failed: None,
            state: State {
                phase: Phase::LoggingIn,
                restored: false,
                known_version,
                pong_due: None,
            },
        }
    }

    /// Encodes the login frame into `out`; returns its length, or `None` when `out` is too
    /// small. A firmware version over 64 bytes is cut.
    pub fn login(
        &self,
        token: Token<'_>,
        firmware: &str,
        heartbeat_seconds: u16,
        out: &mut [u8],
    ) -> Option<usize> {
        let login = Login {
            protocol: PROTOCOL_VERSION,
            token,
            info: DeviceInfo {
                firmware: BoundedStr::new(truncate(firmware, MAX_NAME_LEN)).ok()?,
                rx_buffer: u16::try_from(self.rx.len()).unwrap_or(u16::MAX),
                heartbeat_seconds,
                sync_on_connect: true,
                known_version: self.state.known_version,
            },
        };
        lean::login(&login, out).ok()
    }

    /// Whether the server accepted the login.
    pub fn is_logged_in(&self) -> bool {
        self.state.phase == Phase::Online
    }

    /// Whether the automatic sync after login completed.
    pub fn is_restored(&self) -> bool {
        self.state.restored
    }

    /// The highest value version seen: the one to announce at the next login.
    pub fn known_version(&self) -> Option<u64> {
        self.state.known_version
    }

    /// The id of a ping from the server to answer, taken once.
    pub fn take_pong(&mut self) -> Option<u16> {
        self.state.pong_due.take()
    }

    /// Encodes the pong for a ping `id` into `out`; returns its length.
    pub fn pong(id: u16, out: &mut [u8]) -> Option<usize> {
        lean::pong(id, out).ok()
    }

    /// Encodes a ping with `id` into `out`; returns its length.
    pub fn ping(id: u16, out: &mut [u8]) -> Option<usize> {
        lean::ping(id, out).ok()
    }

    /// The free part of the receive buffer, to read into; report the count with
    /// [`commit`](Self::commit). Empty only after an error.
    pub fn spare(&mut self) -> &mut [u8] {
        self.rx.get_mut(self.filled..).unwrap_or_default()
    }

    /// Marks `count` bytes of [`spare`](Self::spare) as received.
    pub fn commit(&mut self, count: usize) {
        self.filled = (self.filled + count).min(self.rx.len());
    }

    /// Takes `bytes` from the server, in as many steps as the buffer needs, and handles every
    /// whole frame, calling `sink` with each event.
    pub fn on_bytes(
        &mut self,
        mut bytes: &[u8],
        sink: &mut impl FnMut(Event<'_>),
    ) -> Result<(), Error> {
        loop {
            let spare = self.spare();
            let taken = spare.len().min(bytes.len());
            if let (Some(dst), Some(src)) = (spare.get_mut(..taken), bytes.get(..taken)) {
                dst.copy_from_slice(src);
            }
            self.commit(taken);
            bytes = bytes.get(taken..).unwrap_or_default();
            self.process(sink)?;
            if bytes.is_empty() {
                return Ok(());
            }
        }
    }

    /// Handles every whole frame in the buffer, calling `sink` with each event; keeps a
    /// partial frame for later. After an error the stream is out of step: every later call
    /// returns the same error.
    pub fn process(&mut self, sink: &mut impl FnMut(Event<'_>)) -> Result<(), Error> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        loop {
            let buffered = self.rx.get(..self.filled).unwrap_or_default();
            let max = self.rx.len().saturating_sub(HEADER_LEN);
            let outcome = match lean::decode_within(buffered, max) {
                // A full buffer that still needs more can never make progress (a buffer
                // smaller than a frame header).
                Ok(Decoded::NeedMore) if self.filled >= self.rx.len() => Err(Error::BufferTooSmall),
                Ok(Decoded::NeedMore) => return Ok(()),
                Ok(Decoded::Frame { message, consumed }) => {
                    self.state.handle(message, sink).map(|()| consumed)
                }
                Err(error) => Err(Error::Frame(error)),
            };
            match outcome {
                Ok(consumed) => {
                    self.rx.copy_within(consumed..self.filled, 0);
                    self.filled -= consumed;
                }
                Err(error) => return Err(self.fail(error)),
            }
        }
    }

    fn fail(&mut self, error: Error) -> Error {
        self.failed = Some(error);
        error
    }
}

impl State {
    fn handle(
        &mut self,
        message: Message<'_>,
        sink: &mut impl FnMut(Event<'_>),
    ) -> Result<(), Error> {
        if self.phase == Phase::LoggingIn {
            return match message {
                Message::LoginResult(LoginResult::Accepted {
                    heartbeat_seconds,
                    version,
                    sync_follows,
                }) => {
                    self.phase = Phase::Online;
                    if self.known_version.is_some_and(|known| known > version) {
                        // The server forgot values this device saw (its data was reset): the
                        // known version means nothing there any more.
                        self.known_version = None;
                    }
                    sink(Event::LoginAccepted {
                        heartbeat_seconds,
                        version,
                        sync_follows,
                    });
                    Ok(())
                }
                Message::LoginResult(LoginResult::Rejected(rejection)) => {
                    Err(Error::LoginRejected(rejection))
                }
                other => Err(Error::Unexpected { code: other.code() }),
            };
        }
        match message {
            Message::Ping(ping) => self.pong_due = Some(ping.id),
            Message::Pong(_) => {}
            Message::Update(update) => {
                self.value(update.pin, update.value, update.version, None, sink);
            }
            Message::SyncedValue(synced) => {
                let id = Some(synced.id);
                self.value(synced.pin, synced.value, synced.version, id, sink);
            }
            Message::SyncComplete(complete) => {
                if complete.id == 0 && !self.restored {
                    // Every value changed since the known version has arrived: from here the
                    // device holds the server's state up to this version.
                    self.restored = true;
                    self.known_version = Some(
                        self.known_version
                            .map_or(complete.version, |known| known.max(complete.version)),
                    );
                } else {
                    self.saw(complete.version);
                }
                sink(Event::SyncComplete {
                    id: complete.id,
                    count: complete.count,
                });
            }
            Message::Ack(ack) => {
                if let Some(version) = ack.version {
                    self.saw(version);
                }
                sink(Event::Ack {
                    id: ack.id,
                    version: ack.version,
                });
            }
            Message::Error(error) => sink(Event::Refused {
                id: error.id,
                code: error.code,
            }),
            other => {
                log!(warn, "ignored a {} message from the server", other.name());
            }
        }
        Ok(())
    }

    /// A pin's value from the server, an app's write (`sync_id` none) or one of a sync: passed
    /// on when the pin is in range.
    fn value(
        &mut self,
        pin: Pin,
        value: Value<'_>,
        version: u64,
        sync_id: Option<u16>,
        sink: &mut impl FnMut(Event<'_>),
    ) {
        if checked(pin) {
            self.saw(version);
            sink(Event::Value {
                pin,
                value,
                version,
                sync_id,
            });
        }
    }

    /// Notes a version the device now holds. Before the automatic sync completes the device
    /// does not hold everything up to it, so it is not noted then.
    fn saw(&mut self, version: u64) {
        if self.restored {
            self.known_version = Some(
                self.known_version
                    .map_or(version, |known| known.max(version)),
            );
        }
    }
}

/// Whether a pin from the server is in range; one that is not is ignored.
fn checked(pin: Pin) -> bool {
    if !pin.is_valid() {
        log!(
            warn,
            "ignored a value for {}{}: no such pin",
            pin_letter(pin),
            pin.number()
        );
    }
    pin.is_valid()
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;
    use blynk_proto::native::{
        self, Ack, FrameError, LoginRejection, SyncComplete, SyncedValue, Update,
    };

    const TOKEN: &str = "abcdEFGH0123456789_-abcdefghijkl";

    fn frame(message: &Message<'_>) -> Vec<u8> {
        let mut out = [0u8; 600];
        native::encode(message, &mut out).unwrap().to_vec()
    }

    fn accepted(version: u64) -> Vec<u8> {
        frame(&Message::LoginResult(LoginResult::Accepted {
            heartbeat_seconds: 10,
            version,
            sync_follows: true,
        }))
    }

    fn events(session: &mut Session<'_>, bytes: &[u8]) -> Result<Vec<std::string::String>, Error> {
        let mut seen = Vec::new();
        session.on_bytes(bytes, &mut |event| seen.push(std::format!("{event:?}")))?;
        Ok(seen)
    }

    #[test]
    fn login_carries_the_known_version_and_the_buffer_size() {
        let mut rx = [0u8; 300];
        let session = Session::new(&mut rx, Some(41));
        let mut out = [0u8; 128];
        let len = session
            .login(Token::new(TOKEN).unwrap(), "1.2.3", 10, &mut out)
            .unwrap();
        let Ok(Decoded::Frame {
            message: Message::Login(login),
            ..
        }) = native::decode(&out[..len])
        else {
            panic!("not a login");
        };
        assert_eq!(login.info.known_version, Some(41));
        assert_eq!(login.info.rx_buffer, 300);
        assert!(login.info.sync_on_connect);
        assert_eq!(login.info.firmware.as_str(), "1.2.3");
    }

    #[test]
    fn spec_3_11_known_version_advances_only_after_the_automatic_sync() {
        let mut rx = [0u8; 256];
        let mut session = Session::new(&mut rx, Some(3));
        let mut bytes = accepted(9);
        bytes.extend(frame(&Message::SyncedValue(SyncedValue {
            id: 0,
            pin: Pin::Virtual(1),
            value: Value::int(5),
            version: 9,
        })));
        events(&mut session, &bytes).unwrap();
        // Cut off in the middle of the sync: the device does not hold everything up to 9.
        assert_eq!(session.known_version(), Some(3));
        let complete = frame(&Message::SyncComplete(SyncComplete {
            id: 0,
            count: 1,
            version: 9,
        }));
        events(&mut session, &complete).unwrap();
        assert!(session.is_restored());
        assert_eq!(session.known_version(), Some(9));
        let update = frame(&Message::Update(Update {
            pin: Pin::Virtual(2),
            value: Value::int(1),
            version: 12,
        }));
        events(&mut session, &update).unwrap();
        events(
            &mut session,
            &frame(&Message::Ack(Ack {
                id: 4,
                version: Some(11),
            })),
        )
        .unwrap();
        assert_eq!(session.known_version(), Some(12));
    }

    #[test]
    fn frames_split_anywhere_are_reassembled() {
        let mut rx = [0u8; 64];
        let mut session = Session::new(&mut rx, None);
        let mut bytes = accepted(1);
        bytes.extend(frame(&Message::Ping(native::Ping { id: 7 })));
        let mut seen = Vec::new();
        for byte in &bytes {
            session
                .on_bytes(core::slice::from_ref(byte), &mut |event| {
                    seen.push(std::format!("{event:?}"))
                })
                .unwrap();
        }
        assert_eq!(seen.len(), 1);
        assert_eq!(session.take_pong(), Some(7));
        assert_eq!(session.take_pong(), None);
    }

    #[test]
    fn a_rejected_login_and_a_message_before_login_are_errors() {
        let mut rx = [0u8; 64];
        let mut session = Session::new(&mut rx, None);
        let rejected = frame(&Message::LoginResult(LoginResult::Rejected(
            LoginRejection::InvalidToken,
        )));
        assert_eq!(
            events(&mut session, &rejected),
            Err(Error::LoginRejected(LoginRejection::InvalidToken))
        );
        let mut rx = [0u8; 64];
        let mut session = Session::new(&mut rx, None);
        let ping = frame(&Message::Ping(native::Ping { id: 1 }));
        assert_eq!(
            events(&mut session, &ping),
            Err(Error::Unexpected { code: 2 })
        );
        // The error sticks.
        assert_eq!(
            events(&mut session, &[]),
            Err(Error::Unexpected { code: 2 })
        );
    }

    #[test]
    fn a_buffer_smaller_than_a_header_is_an_error_not_a_loop() {
        let mut rx = [0u8; 2];
        let mut session = Session::new(&mut rx, None);
        assert_eq!(
            events(&mut session, &[1, 0, 5, 0]),
            Err(Error::BufferTooSmall)
        );
    }

    #[test]
    fn a_frame_longer_than_the_buffer_is_refused_at_its_header() {
        let mut rx = [0u8; 16];
        let mut session = Session::new(&mut rx, None);
        assert_eq!(
            events(&mut session, &[1, 0, 200]),
            Err(Error::Frame(FrameError::FrameTooLong { len: 200, max: 13 }))
        );
    }
}
