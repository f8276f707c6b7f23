//! The classic Blynk hardware protocol, as the public Blynk libraries speak it.
//!
//! Every frame is a 5-byte header (`u8` command, `u16` message id, `u16` length, big-endian)
//! and a body of `\0`-separated UTF-8 strings; a [`Command::Response`] carries a status code in
//! the length field and has no body. Bodies are parsed in place (every part borrows the
//! received bytes) and built into buffers the caller supplies, so nothing allocates.
//!
//! # The command table
//!
//! | code | command | direction | body |
//! |---:|---|---|---|
//! | 0 | [`Command::Response`] | both | none; length = [`Status`] |
//! | 2 | [`Command::Login`] | device → server | token |
//! | 6 | [`Command::Ping`] | both | empty |
//! | 15 | [`Command::Bridge`] | device → server | `channel\0i\0token`, `channel\0vw\0pin\0value` ([`BridgeCommand`]) |
//! | 16 | [`Command::HardwareSync`] | device → server | empty, or `vr\0p1\0p2...` |
//! | 17 | [`Command::Internal`] | both | `key\0value` pairs |
//! | 19 | [`Command::Property`] | device → server | `pin\0property\0value...` |
//! | 20 | [`Command::Hardware`] | both | `vw`/`dw`/`aw`/`pm`/`vr`/`dr`/`ar` sub-commands |
//! | 21 | [`Command::Group`] | device → server | `b`, `t\0unix_ms`, `e` ([`GroupCommand`]) |
//! | 29 | [`Command::HwLogin`] | device → server | token |
//! | 41 | [`Command::Redirect`] | server → device | `host\0port` |
//! | 55 | [`Command::DebugPrint`] | both | text |
//! | 64 | [`Command::EventLog`] | device → server | `code[\0description]` |
//! | 65 | [`Command::EventClear`] | device → server | `code` |

pub mod body;
pub mod bridge;
pub mod frame;
pub mod group;
pub mod hardware;
pub mod messages;

use core::num::NonZeroU16;

pub use body::{BodyWriter, Parts};
pub use bridge::{BridgeCommand, encode_bridge_bind, encode_bridge_write};
pub use frame::{
    ClassicFrame, Decoded, HEADER_LEN, MAX_BODY, decode, encode_frame, encode_response,
};
pub use group::{GroupCommand, encode_group};
pub use hardware::{HardwareCommand, SyncRequest, encode_sync, encode_write};
pub use messages::{DeviceInfo, EventLog, PropertyUpdate, encode_parts, parse_login};

use crate::pin::PinParseError;
use crate::value::ValueError;

/// A classic command code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// 0: a status reply; the header's length field holds the [`Status`].
    Response,
    /// 2: the legacy login (`blynklib` uses it).
    Login,
    /// 6: ping, answered with a 200 response of the same id.
    Ping,
    /// 15: bridge to another device.
    Bridge,
    /// 16: sync request.
    HardwareSync,
    /// 17: device info after login, and time requests.
    Internal,
    /// 19: widget property.
    Property,
    /// 20: pin reads and writes.
    Hardware,
    /// 21: begins or ends a group of writes, optionally timestamped.
    Group,
    /// 29: login.
    HwLogin,
    /// 41: redirect to another server.
    Redirect,
    /// 55: debug text (the server's for the device's console, or the device's for the log).
    DebugPrint,
    /// 64: log an event.
    EventLog,
    /// 65: clear an event.
    EventClear,
    /// Any other code; answered with [`Status::IllegalCommand`].
    Other(u8),
}

impl Command {
    /// The command of a code.
    pub const fn from_code(code: u8) -> Self {
        match code {
            0 => Command::Response,
            2 => Command::Login,
            6 => Command::Ping,
            15 => Command::Bridge,
            16 => Command::HardwareSync,
            17 => Command::Internal,
            19 => Command::Property,
            20 => Command::Hardware,
            21 => Command::Group,
            29 => Command::HwLogin,
            41 => Command::Redirect,
            55 => Command::DebugPrint,
            64 => Command::EventLog,
            65 => Command::EventClear,
            other => Command::Other(other),
        }
    }

    /// The code of a command.
    pub const fn code(self) -> u8 {
        match self {
            Command::Response => 0,
            Command::Login => 2,
            Command::Ping => 6,
            Command::Bridge => 15,
            Command::HardwareSync => 16,
            Command::Internal => 17,
            Command::Property => 19,
            Command::Hardware => 20,
            Command::Group => 21,
            Command::HwLogin => 29,
            Command::Redirect => 41,
            Command::DebugPrint => 55,
            Command::EventLog => 64,
            Command::EventClear => 65,
            Command::Other(code) => code,
        }
    }
}

/// A status code carried by a [`Command::Response`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// 200.
    Ok,
    /// 1: rate limit exceeded, the message was dropped.
    QuotaLimit,
    /// 2: unknown or unexpected command.
    IllegalCommand,
    /// 4: already logged in; clients treat it as success.
    AlreadyRegistered,
    /// 5: a command before login.
    NotAuthenticated,
    /// 6: not allowed.
    NotAllowed,
    /// 7: the target device is offline.
    DeviceNotInNetwork,
    /// 9: no device has this token; clients stop retrying.
    InvalidToken,
    /// 11: the body of a known command is invalid.
    IllegalCommandBody,
    /// 19: the server failed.
    ServerException,
    /// Any other code.
    Other(u16),
}

impl Status {
    /// The status of a code.
    pub const fn from_code(code: u16) -> Self {
        match code {
            200 => Status::Ok,
            1 => Status::QuotaLimit,
            2 => Status::IllegalCommand,
            4 => Status::AlreadyRegistered,
            5 => Status::NotAuthenticated,
            6 => Status::NotAllowed,
            7 => Status::DeviceNotInNetwork,
            9 => Status::InvalidToken,
            11 => Status::IllegalCommandBody,
            19 => Status::ServerException,
            other => Status::Other(other),
        }
    }

    /// The code of a status.
    pub const fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::QuotaLimit => 1,
            Status::IllegalCommand => 2,
            Status::AlreadyRegistered => 4,
            Status::NotAuthenticated => 5,
            Status::NotAllowed => 6,
            Status::DeviceNotInNetwork => 7,
            Status::InvalidToken => 9,
            Status::IllegalCommandBody => 11,
            Status::ServerException => 19,
            Status::Other(code) => code,
        }
    }
}

/// Message ids of frames this side starts: 1..=65535, wrapping to 1. Id 0 makes the classic
/// clients drop the connection, so it is never produced; encoders take a [`NonZeroU16`].
#[derive(Debug, Clone)]
pub struct MessageIds {
    next: NonZeroU16,
}

impl Default for MessageIds {
    fn default() -> Self {
        MessageIds {
            next: NonZeroU16::MIN,
        }
    }
}

impl MessageIds {
    /// The next id.
    pub fn next_id(&mut self) -> NonZeroU16 {
        let id = self.next;
        self.next = id.checked_add(1).unwrap_or(NonZeroU16::MIN);
        id
    }
}

/// Why a classic frame or body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClassicError {
    /// The header announces a body longer than the limit.
    #[error("body of {len} bytes is longer than the limit of {max}")]
    BodyTooLong {
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The body is not UTF-8.
    #[error("body is not UTF-8 (first bad byte at offset {offset})")]
    InvalidUtf8 {
        /// Offset of the first invalid byte.
        offset: usize,
    },
    /// A part the command needs is missing.
    #[error("body has no {what}")]
    MissingPart {
        /// Which part.
        what: &'static str,
    },
    /// A hardware sub-command other than `vw`, `dw`, `aw`, `pm`, `vr`, `dr`, `ar`.
    #[error("unknown hardware sub-command")]
    UnknownSubCommand,
    /// A pin number is invalid.
    #[error("invalid pin: {0}")]
    BadPin(#[from] PinParseError),
    /// A value is invalid.
    #[error("invalid value: {0}")]
    BadValue(#[from] ValueError),
    /// A login body is not a token.
    #[error("login body is not a 32-character token")]
    BadToken,
}

/// Why a frame could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The output buffer is too small.
    #[error("frame needs {needed} bytes, the buffer has {available}")]
    BufferTooSmall {
        /// Bytes needed so far.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// The body would exceed the limit (the peer's `buff-in`, or [`MAX_BODY`]).
    #[error("body of {len} bytes is longer than the limit of {max}")]
    BodyTooLong {
        /// The body's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A part holds a `\0`, the part separator: the peer would read it as two parts.
    #[error("a part holds a NUL character, which would split it in two")]
    NulInPart,
    /// The last part of a value is empty: a body ending in `\0` reads as one part fewer.
    #[error("the last part of a value is empty, which a classic peer cannot read")]
    EmptyLastPart,
}
