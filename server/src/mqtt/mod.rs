//! The MQTT 3.1.1 device API with Blynk IoT's topics: any MQTT client is a device, with the
//! same engine, rules and presence as native and classic devices. There is no general broker
//! here: a device talks only to the server, about its own datastreams.
//!
//! Framing is rumqttc's `mqttbytes::v4` codec; `topics` reads the topic names, `payload` the
//! payloads, `persistent` keeps the subscriptions of persistent sessions, and `session` runs one
//! connection between the socket and the engine.

pub mod payload;
pub mod persistent;
mod session;
pub mod topics;

use std::sync::Arc;

pub use session::serve;

use crate::session::Context;
use persistent::PersistentSessions;

/// The largest packet accepted (its remaining length): a value, a batch of values or a
/// timestamped batch fits many times over; anything larger closes the connection unread.
pub const MAX_PACKET: usize = 64 * 1024;

/// What every MQTT connection shares.
pub struct Mqtt {
    /// The engine, the limits and the rest of what device sessions share.
    pub context: Arc<Context>,
    /// Persistent sessions' subscriptions.
    pub sessions: PersistentSessions,
}

impl Mqtt {
    /// The MQTT side of `context`.
    pub fn new(context: Arc<Context>) -> Self {
        Mqtt {
            context,
            sessions: PersistentSessions::default(),
        }
    }
}
