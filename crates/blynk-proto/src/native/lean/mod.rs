//! The lean codec (feature `lean`): the native protocol from a device's side, written out by
//! hand instead of through serde, for firmware where flash is counted.
//!
//! Why: [`encode`](super::encode) and [`decode`](super::decode) are postcard's generic
//! serializer over every message; a firmware linking them carries code for messages it never
//! sends or receives. This codec writes the seven messages a device sends ([`mod@write`]) and reads
//! the eight a server sends ([`mod@read`]), byte for byte as postcard does (varints, zigzag,
//! length-prefixed strings; see `docs/protocol.md`), with the same checks on input. It shares
//! the message codes ([`code`](super::code)) and the frame header
//! ([`split_frame`](super::frame)) with the serde codec, and the tests hold the two to the same
//! bytes: every device message is compared with `encode` byte for byte, and a property test
//! compares the reader with `decode` on arbitrary bytes.

pub mod read;
pub mod write;

pub use read::{decode, decode_within};
pub use write::{
    Full, SYNC_REQUEST_ENVELOPE, SYNC_REQUEST_PIN, Writer, event, event_body, login, ping, pong,
    property, property_body, property_name, sync_all, sync_pins, write,
};

/// Variant indices of the enums inside messages, as postcard writes them: each enum's
/// declaration order in `pin.rs`, `value.rs`, `system.rs` and `state.rs`. The byte-for-byte
/// tests against the serde codec cover every one.
mod variant {
    /// [`Pin`](crate::Pin): `Virtual`, `Digital`, `Analog`.
    pub(super) const PIN_VIRTUAL: u32 = 0;
    pub(super) const PIN_DIGITAL: u32 = 1;
    pub(super) const PIN_ANALOG: u32 = 2;
    /// [`Scalar`](crate::Scalar): `Int`, `Double`, `Text`.
    pub(super) const SCALAR_INT: u32 = 0;
    pub(super) const SCALAR_DOUBLE: u32 = 1;
    pub(super) const SCALAR_TEXT: u32 = 2;
    /// [`SyncPins`](super::super::SyncPins): `All`, `Only`.
    pub(super) const SYNC_ALL: u32 = 0;
    pub(super) const SYNC_ONLY: u32 = 1;
    /// [`LoginResult`](super::super::LoginResult): `Accepted`, `Rejected`.
    pub(super) const LOGIN_ACCEPTED: u32 = 0;
    pub(super) const LOGIN_REJECTED: u32 = 1;
}
