//! The MQTT 3.1.1 device API with Blynk IoT's topics: any MQTT client is a device, with the
//! same engine, rules and presence as native and classic devices. There is no general broker
//! here: a device talks only to the server, about its own datastreams.
//!
//! Framing is rumqttc's `mqttbytes::v4` codec; `topics` reads the topic names, `payload` the
//! payloads, `persistent` keeps persistent sessions, `session` runs one connection between the
//! socket and the engine (login, the loop, what goes down to the device), and `uplink` handles
//! what the device publishes.

mod ending;
mod login;
pub mod payload;
mod persistent;
mod session;
pub mod topics;
mod uplink;

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

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use rumqttc::mqttbytes::v4::Packet;

    use super::MAX_PACKET;

    /// The codec is a dependency: this checks that what the server feeds it from the network
    /// (any bytes, cut anywhere) gives a packet or an error, never a panic.
    #[test]
    fn reading_arbitrary_bytes_never_panics() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let len = (next() % 64) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Half of the inputs start like a real packet type with a small length.
            if next() % 2 == 0 && len > 2 {
                bytes[0] = ((next() % 14 + 1) as u8) << 4 | (next() % 16) as u8;
                bytes[1] = (len - 2) as u8;
            }
            let mut buffer = BytesMut::from(&bytes[..]);
            while let Ok(_packet) = Packet::read(&mut buffer, MAX_PACKET) {}
        }
    }
}
