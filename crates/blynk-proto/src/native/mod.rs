//! The native protocol between `blynk-device` and the server: postcard messages in
//! length-prefixed, versioned frames.
//!
//! # The message table
//!
//! One place lists every message. The code is the postcard variant index of [`Message`], the
//! first byte of every payload; new messages are only ever appended.
//!
//! | code | message | direction | answered by |
//! |---:|---|---|---|
//! | 0 | [`Login`] | device → server | [`LoginResult`] |
//! | 1 | [`LoginResult`] | server → device | |
//! | 2 | [`Ping`] | both | [`Pong`] with the same id |
//! | 3 | [`Pong`] | both | |
//! | 4 | [`Write`] | device → server | [`Ack`] or [`ErrorReply`] with the same id |
//! | 5 | [`Update`] | server → device | (an app write or command for the device) |
//! | 6 | [`SyncRequest`] | device → server | [`SyncedValue`]s, then [`SyncComplete`] |
//! | 7 | [`SyncedValue`] | server → device | |
//! | 8 | [`SyncComplete`] | server → device | |
//! | 9 | [`Property`] | device → server | [`Ack`] or [`ErrorReply`] |
//! | 10 | [`Event`] | device → server | [`Ack`] or [`ErrorReply`] |
//! | 11 | [`Ack`] | server → device | |
//! | 12 | [`ErrorReply`] | both | |
//!
//! The frame layout is in [`frame`]; the byte-level description is in `docs/protocol.md`.

pub mod decoder;
pub mod frame;
pub mod meta;
pub mod state;
pub mod system;

use serde::{Deserialize, Serialize};

pub use decoder::FrameDecoder;
pub use frame::{Decoded, EncodeError, FrameError, HEADER_LEN, decode, encode};
pub use meta::{Event, Property};
pub use state::{Ack, SyncComplete, SyncPins, SyncRequest, SyncedValue, Update, Write};
pub use system::{
    DeviceInfo, ErrorCode, ErrorReply, Login, LoginRejection, LoginResult, Ping, Pong,
};

/// The protocol version carried in every frame header. A peer with another version gets
/// [`FrameError::BadVersion`], never a mis-decoded message.
pub const PROTOCOL_VERSION: u8 = 1;

/// The largest payload of one frame, in bytes (the header not included).
///
/// It is sized so that the largest message, a [`Property`] or [`Write`] of a value with
/// [`MAX_VALUE_PARTS`](crate::MAX_VALUE_PARTS) parts of [`MAX_TEXT_LEN`](crate::MAX_TEXT_LEN)
/// bytes each, always fits (checked at compile time below).
pub const MAX_FRAME: usize = 2304;

/// The most bytes a [`Value`](crate::Value) can take on the wire: a length varint, then per part
/// a variant byte, a 2-byte length varint and the text.
pub const MAX_VALUE_ENCODED: usize = 1 + crate::MAX_VALUE_PARTS * (1 + 2 + crate::MAX_TEXT_LEN);

/// The most bytes the fields around a value can take: message code, id, pin, name, version, age.
const MAX_VALUE_ENVELOPE: usize = 1 + 3 + 2 + (2 + crate::MAX_NAME_LEN) + 10 + 6;

const _: () = assert!(MAX_VALUE_ENCODED + MAX_VALUE_ENVELOPE <= MAX_FRAME);
const _: () = assert!(MAX_FRAME <= u16::MAX as usize);

/// Which way a message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Sent by devices only.
    DeviceToServer,
    /// Sent by the server only.
    ServerToDevice,
    /// Sent by both.
    Both,
}

/// Every message of the native protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message<'a> {
    /// Code 0: the first message of a device.
    Login(#[serde(borrow)] Login<'a>),
    /// Code 1: the server's answer to a login.
    LoginResult(LoginResult),
    /// Code 2: a liveness probe.
    Ping(Ping),
    /// Code 3: the answer to a ping.
    Pong(Pong),
    /// Code 4: a device writes a pin.
    Write(#[serde(borrow)] Write<'a>),
    /// Code 5: the server forwards an app write to the device.
    Update(#[serde(borrow)] Update<'a>),
    /// Code 6: the device asks for stored values.
    SyncRequest(SyncRequest),
    /// Code 7: one stored value, in answer to a sync.
    SyncedValue(#[serde(borrow)] SyncedValue<'a>),
    /// Code 8: the end of a sync.
    SyncComplete(SyncComplete),
    /// Code 9: the device sets a widget property.
    Property(#[serde(borrow)] Property<'a>),
    /// Code 10: the device logs an event.
    Event(#[serde(borrow)] Event<'a>),
    /// Code 11: the server stored what the device sent.
    Ack(Ack),
    /// Code 12: a request was refused.
    Error(#[serde(borrow)] ErrorReply<'a>),
}

impl Message<'_> {
    /// The message code: the first byte of the payload.
    pub const fn code(&self) -> u8 {
        match self {
            Message::Login(_) => 0,
            Message::LoginResult(_) => 1,
            Message::Ping(_) => 2,
            Message::Pong(_) => 3,
            Message::Write(_) => 4,
            Message::Update(_) => 5,
            Message::SyncRequest(_) => 6,
            Message::SyncedValue(_) => 7,
            Message::SyncComplete(_) => 8,
            Message::Property(_) => 9,
            Message::Event(_) => 10,
            Message::Ack(_) => 11,
            Message::Error(_) => 12,
        }
    }

    /// Which way the message travels.
    pub const fn direction(&self) -> Direction {
        match self {
            Message::Login(_)
            | Message::Write(_)
            | Message::SyncRequest(_)
            | Message::Property(_)
            | Message::Event(_) => Direction::DeviceToServer,
            Message::LoginResult(_)
            | Message::Update(_)
            | Message::SyncedValue(_)
            | Message::SyncComplete(_)
            | Message::Ack(_) => Direction::ServerToDevice,
            Message::Ping(_) | Message::Pong(_) | Message::Error(_) => Direction::Both,
        }
    }

    /// A short name for logs.
    pub const fn name(&self) -> &'static str {
        match self {
            Message::Login(_) => "login",
            Message::LoginResult(_) => "login-result",
            Message::Ping(_) => "ping",
            Message::Pong(_) => "pong",
            Message::Write(_) => "write",
            Message::Update(_) => "update",
            Message::SyncRequest(_) => "sync-request",
            Message::SyncedValue(_) => "synced-value",
            Message::SyncComplete(_) => "sync-complete",
            Message::Property(_) => "property",
            Message::Event(_) => "event",
            Message::Ack(_) => "ack",
            Message::Error(_) => "error",
        }
    }
}
