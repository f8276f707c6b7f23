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
#[cfg(feature = "lean")]
pub mod lean;
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

/// The message table: one line per message, in code order, from which [`Message`], the
/// [`code`] constants and [`Message::code`], [`Message::direction`] and [`Message::name`] are
/// all generated. The code is the line's position (postcard writes the variant index), which a
/// compile-time check below holds the written codes to.
macro_rules! message_table {
    ($(
        $(#[$doc:meta])*
        $code:literal $constant:ident $variant:ident($(#[$field:meta])* $payload:ty),
            $direction:ident, $name:literal;
    )*) => {
        /// Every message of the native protocol.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub enum Message<'a> {
            $(
                $(#[$doc])*
                #[doc = concat!("\n\nCode ", stringify!($code), ", ", $name, ".")]
                $variant($(#[$field])* $payload),
            )*
        }

        /// The message codes: the first byte of every payload, as [`Message::code`] gives them.
        pub mod code {
            $(
                #[doc = concat!("`", $name, "`.")]
                pub const $constant: u8 = $code;
            )*
        }

        /// Every code in table order; entry `i` must be `i`, as postcard numbers variants so.
        const CODES: &[u8] = &[$($code),*];

        impl Message<'_> {
            /// The message code: the first byte of the payload.
            pub const fn code(&self) -> u8 {
                match self {
                    $(Message::$variant(_) => code::$constant,)*
                }
            }

            /// Which way the message travels.
            pub const fn direction(&self) -> Direction {
                match self {
                    $(Message::$variant(_) => Direction::$direction,)*
                }
            }

            /// A short name for logs.
            pub const fn name(&self) -> &'static str {
                match self {
                    $(Message::$variant(_) => $name,)*
                }
            }
        }
    };
}

message_table! {
    /// The first message of a device.
    0 LOGIN Login(#[serde(borrow)] Login<'a>), DeviceToServer, "login";
    /// The server's answer to a login.
    1 LOGIN_RESULT LoginResult(LoginResult), ServerToDevice, "login-result";
    /// A liveness probe.
    2 PING Ping(Ping), Both, "ping";
    /// The answer to a ping.
    3 PONG Pong(Pong), Both, "pong";
    /// A device writes a pin.
    4 WRITE Write(#[serde(borrow)] Write<'a>), DeviceToServer, "write";
    /// The server forwards an app write to the device.
    5 UPDATE Update(#[serde(borrow)] Update<'a>), ServerToDevice, "update";
    /// The device asks for stored values.
    6 SYNC_REQUEST SyncRequest(SyncRequest), DeviceToServer, "sync-request";
    /// One stored value, in answer to a sync.
    7 SYNCED_VALUE SyncedValue(#[serde(borrow)] SyncedValue<'a>), ServerToDevice, "synced-value";
    /// The end of a sync.
    8 SYNC_COMPLETE SyncComplete(SyncComplete), ServerToDevice, "sync-complete";
    /// The device sets a widget property.
    9 PROPERTY Property(#[serde(borrow)] Property<'a>), DeviceToServer, "property";
    /// The device logs an event.
    10 EVENT Event(#[serde(borrow)] Event<'a>), DeviceToServer, "event";
    /// The server stored what the device sent.
    11 ACK Ack(Ack), ServerToDevice, "ack";
    /// A request was refused.
    12 ERROR Error(#[serde(borrow)] ErrorReply<'a>), Both, "error";
}

const _: () = {
    let (mut rest, mut index) = (CODES, 0);
    while let [code, tail @ ..] = rest {
        assert!(
            *code as usize == index,
            "message codes must be 0, 1, 2, ... in order"
        );
        (rest, index) = (tail, index + 1);
    }
};
