//! Wire protocols and domain types shared by the device library, the server and the tools.
//!
//! `blynk-proto` is `#![no_std]` and never allocates: every message borrows its strings from the
//! frame it was decoded from, and every collection is bounded by a named constant. It holds
//!
//! - the domain types every part agrees on: [`Pin`], [`Value`], [`Datastream`];
//! - the **native protocol** ([`native`]): postcard messages in length-prefixed, versioned frames,
//!   spoken between `blynk-device` and the server; with the `lean` feature also
//!   `native::lean`, the device's side of it written out by hand, without
//!   serde, for firmware that counts its flash;
//! - the **classic Blynk codec** ([`classic`]): the 5-byte-header protocol that existing Blynk
//!   libraries speak, parsed and built in caller-supplied buffers.
//!
//! It depends on neither tokio nor embassy, so the same definitions run on a microcontroller and
//! on the server.
#![no_std]
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

pub mod classic;
pub mod datastream;
pub mod native;
pub mod pin;
pub mod text;
pub mod value;

pub use datastream::{Datastream, DatastreamKind, DatastreamType};
pub use pin::{Pin, PinParseError};
pub use text::{BoundedStr, Token};
pub use value::{Scalar, Value, ValueError};

/// Length of a device auth token: 32 characters from `[A-Za-z0-9_-]`, Blynk's format.
pub const TOKEN_LEN: usize = 32;
/// Most parts one value may hold (`virtualWrite(V2, 1, 2.5, "abc")` has three).
pub const MAX_VALUE_PARTS: usize = 8;
/// Longest text of one value part, in bytes of UTF-8.
pub const MAX_TEXT_LEN: usize = 255;
/// Longest name: a property name, an event code, a firmware version, a datastream name.
pub const MAX_NAME_LEN: usize = 64;
/// Most pins one sync request may list.
pub const MAX_SYNC_PINS: usize = 32;
