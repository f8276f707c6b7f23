//! The library's errors: small `Copy` enums, one per operation, each variant documented as
//! recoverable (retrying later can succeed) or not.

use blynk_proto::ValueError;
use blynk_proto::native::{FrameError, LoginRejection};
use embedded_io_async::ErrorKind;

/// Why a [`Connector`](crate::Connector) could not open a connection. Every variant is
/// recoverable: the runner retries with backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The network is not up yet (no link, DHCP not done). Recoverable.
    #[error("the network is not up")]
    NetworkDown,
    /// The server's name could not be resolved. Recoverable.
    #[error("the server's name could not be resolved")]
    Dns,
    /// The server refused the connection (nothing listens, or it reset it). Recoverable.
    #[error("the server refused the connection")]
    Refused,
    /// No route to the server. Recoverable.
    #[error("no route to the server")]
    NoRoute,
    /// Connecting took too long. Recoverable.
    #[error("connecting timed out")]
    Timeout,
    /// Any other failure of the network stack. Recoverable.
    #[error("the connection could not be opened")]
    Other,
}

/// Why a connection ended, or why the runner stopped.
///
/// [`Runner::run`](crate::Runner::run) returns only errors that are not recoverable; the
/// recoverable ones end one connection and are reported to
/// [`Firmware::disconnected`](crate::Firmware::disconnected) and in
/// [`Status::last_error`](crate::Status::last_error), and the runner reconnects with backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The configured token is not 32 characters from `[A-Za-z0-9_-]`. Not recoverable: fix the
    /// configuration.
    #[error("the token is not 32 characters from A-Z, a-z, 0-9, '_' and '-'")]
    BadToken,
    /// The server refused the login. Not recoverable for
    /// [`LoginRejection::InvalidToken`] and [`LoginRejection::UnsupportedVersion`]; recoverable
    /// for [`LoginRejection::TooManyAttempts`] (the runner waits as long as the server asks) and
    /// [`LoginRejection::ServerBusy`].
    #[error("login refused: {0}")]
    LoginRejected(LoginRejection),
    /// No connection could be opened. Recoverable.
    #[error("cannot connect: {0}")]
    Connect(ConnectError),
    /// Reading or writing the connection failed. Recoverable.
    #[error("the connection failed: {0}")]
    Io(ErrorKind),
    /// The server closed the connection. Recoverable.
    #[error("the server closed the connection")]
    Closed,
    /// Nothing came from the server for 2.3 heartbeats (a silent server, a half-open
    /// connection). Recoverable.
    #[error("nothing received for 2.3 heartbeats")]
    HeartbeatTimeout,
    /// A write to the server did not complete within 2.3 heartbeats. Recoverable.
    #[error("a write did not complete within 2.3 heartbeats")]
    WriteTimeout,
    /// The server sent bytes that are not a valid frame of this protocol version, or a frame
    /// larger than the receive buffer. Recoverable (a new connection starts in step).
    #[error("bad frame from the server: {0}")]
    Frame(FrameError),
    /// The transmit buffer cannot hold a login, or the receive buffer is too small to read
    /// into. Not recoverable: give the runner larger buffers.
    #[error("the runner's buffers are too small")]
    BufferTooSmall,
    /// The server sent a message that has no place here (anything but a login result before
    /// login). Recoverable.
    #[error("unexpected message (code {code}) from the server")]
    Unexpected {
        /// The message code.
        code: u8,
    },
}

impl Error {
    /// Whether trying again later can succeed.
    pub const fn is_recoverable(&self) -> bool {
        match self {
            Error::BadToken | Error::BufferTooSmall => false,
            Error::LoginRejected(rejection) => rejection.is_recoverable(),
            Error::Connect(_)
            | Error::Io(_)
            | Error::Closed
            | Error::HeartbeatTimeout
            | Error::WriteTimeout
            | Error::Frame(_)
            | Error::Unexpected { .. } => true,
        }
    }
}

/// Why a `virtual_write`, `set_property`, `log_event` or sync request was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// The outgoing queue has no room (too many distinct pins, properties and events waiting,
    /// typically while offline). The message is dropped and counted in
    /// [`Blynk::overflow_count`](crate::Blynk::overflow_count). Recoverable: the queue drains
    /// once the device is online.
    #[error("the outgoing queue is full")]
    Full,
    /// The value cannot travel: a NaN or infinity, a text part over 255 bytes, more than 8
    /// parts, or an empty value. Not recoverable.
    #[error("invalid value: {0}")]
    InvalidValue(ValueError),
    /// A name is too long: a property name or an event code over 64 bytes, an event
    /// description over 255. Not recoverable.
    #[error("a property name, event code or description is too long")]
    TooLong,
}

impl QueueError {
    /// Whether trying again later can succeed.
    pub const fn is_recoverable(&self) -> bool {
        matches!(self, QueueError::Full)
    }
}

impl From<ValueError> for QueueError {
    fn from(error: ValueError) -> Self {
        QueueError::InvalidValue(error)
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for ConnectError {
    fn format(&self, f: defmt::Formatter<'_>) {
        let name = match self {
            ConnectError::NetworkDown => "network down",
            ConnectError::Dns => "DNS",
            ConnectError::Refused => "refused",
            ConnectError::NoRoute => "no route",
            ConnectError::Timeout => "timeout",
            ConnectError::Other => "other",
        };
        defmt::write!(f, "{=str}", name)
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for Error {
    fn format(&self, f: defmt::Formatter<'_>) {
        match self {
            Error::BadToken => defmt::write!(f, "bad token"),
            Error::LoginRejected(rejection) => {
                defmt::write!(f, "login refused: {}", defmt::Debug2Format(rejection))
            }
            Error::Connect(error) => defmt::write!(f, "cannot connect: {}", error),
            Error::Io(kind) => defmt::write!(f, "I/O: {}", defmt::Debug2Format(kind)),
            Error::Closed => defmt::write!(f, "closed by the server"),
            Error::HeartbeatTimeout => defmt::write!(f, "heartbeat timeout"),
            Error::WriteTimeout => defmt::write!(f, "write timeout"),
            Error::Frame(error) => defmt::write!(f, "bad frame: {}", defmt::Debug2Format(error)),
            Error::BufferTooSmall => defmt::write!(f, "buffers too small"),
            Error::Unexpected { code } => defmt::write!(f, "unexpected message {=u8}", code),
        }
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for QueueError {
    fn format(&self, f: defmt::Formatter<'_>) {
        match self {
            QueueError::Full => defmt::write!(f, "queue full"),
            QueueError::InvalidValue(_) => defmt::write!(f, "invalid value"),
            QueueError::TooLong => defmt::write!(f, "name too long"),
        }
    }
}
