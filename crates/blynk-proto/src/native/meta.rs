//! Metadata messages: widget properties and events. Neither is ever synced back to hardware.

use serde::{Deserialize, Serialize};

use crate::pin::Pin;
use crate::text::BoundedStr;
use crate::value::Value;
use crate::{MAX_NAME_LEN, MAX_TEXT_LEN};

/// `set_property(V1, "color", "#FF0000")`: stored per pin and shown to apps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Property<'a> {
    /// Echoed in the [`Ack`](super::Ack).
    pub id: u16,
    /// The pin whose widget it describes.
    pub pin: Pin,
    /// The property, e.g. `label`, `color`, `min`.
    #[serde(borrow)]
    pub name: BoundedStr<'a, MAX_NAME_LEN>,
    /// Its value.
    #[serde(borrow)]
    pub value: Value<'a>,
}

/// `log_event("overheat", "too hot")`: stored (bounded per device) and shown to apps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event<'a> {
    /// Echoed in the [`Ack`](super::Ack).
    pub id: u16,
    /// The event code.
    #[serde(borrow)]
    pub code: BoundedStr<'a, MAX_NAME_LEN>,
    /// An optional description.
    #[serde(borrow)]
    pub description: Option<BoundedStr<'a, MAX_TEXT_LEN>>,
}
