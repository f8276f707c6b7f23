//! System messages: login and its result, ping/pong, and typed errors.

use serde::{Deserialize, Serialize};

use crate::MAX_NAME_LEN;
use crate::text::{BoundedStr, Token};

/// The first message of a device: who it is and how it wants to be treated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Login<'a> {
    /// The protocol version the device speaks; equal to the frame header's.
    pub protocol: u8,
    /// The device's auth token.
    #[serde(borrow)]
    pub token: Token<'a>,
    /// Facts about the device.
    #[serde(borrow)]
    pub info: DeviceInfo<'a>,
}

/// Facts a device tells the server at login.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo<'a> {
    /// The firmware's version, for people.
    #[serde(borrow)]
    pub firmware: BoundedStr<'a, MAX_NAME_LEN>,
    /// The device's receive buffer: the server never sends it a larger frame.
    pub rx_buffer: u16,
    /// Seconds between the device's pings; the server declares it offline after 2.3 times that
    /// of silence.
    pub heartbeat_seconds: u16,
    /// Whether the server should push the `sync` datastreams right after login (SPEC 3.3).
    pub sync_on_connect: bool,
    /// The highest value version the device has seen, when it kept its state across the
    /// disconnection; the server then re-sends only what changed since (SPEC 3.11).
    pub known_version: Option<u64>,
}

/// The server's answer to a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoginResult {
    /// The device is logged in.
    Accepted {
        /// The heartbeat the server will hold the device to, in seconds.
        heartbeat_seconds: u16,
        /// The highest value version stored for the device.
        version: u64,
        /// Whether synced values and a [`SyncComplete`](super::SyncComplete) follow.
        sync_follows: bool,
    },
    /// The device is refused; the connection closes.
    Rejected(LoginRejection),
}

/// Why a login was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum LoginRejection {
    /// No device has this token; retrying will not help.
    #[error("no device has this token")]
    InvalidToken,
    /// The server speaks another protocol version.
    #[error("the server speaks protocol version {server}")]
    UnsupportedVersion {
        /// The server's version.
        server: u8,
    },
    /// Too many failed logins from this address; retry later.
    #[error("too many failed logins; retry in {retry_after_seconds} s")]
    TooManyAttempts {
        /// When to retry.
        retry_after_seconds: u16,
    },
    /// The server is at its connection limit; retry later.
    #[error("the server is at its connection limit")]
    ServerBusy,
}

impl LoginRejection {
    /// Whether trying again later can succeed.
    pub const fn is_recoverable(&self) -> bool {
        !matches!(
            self,
            LoginRejection::InvalidToken | LoginRejection::UnsupportedVersion { .. }
        )
    }
}

/// A liveness probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    /// Echoed in the [`Pong`].
    pub id: u16,
}

/// The answer to a [`Ping`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    /// The ping's id.
    pub id: u16,
}

/// What went wrong with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The message is not valid here (e.g. a server message sent by a device).
    IllegalCommand,
    /// No datastream is bound to the pin.
    UnknownPin,
    /// The value is not of the datastream's type.
    WrongType,
    /// The device sends faster than its rate limit; the message was dropped.
    RateLimited,
    /// A message other than login came before login.
    NotLoggedIn,
    /// The server could not store the message; the device may retry.
    Internal,
}

/// A refused request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply<'a> {
    /// The id of the refused request (0 when it had none).
    pub id: u16,
    /// What went wrong.
    pub code: ErrorCode,
    /// A sentence for people, e.g. "V1 holds Integer values; part 0 of the value is not one".
    #[serde(borrow)]
    pub detail: BoundedStr<'a, { 2 * MAX_NAME_LEN }>,
}
