//! Why an MQTT session ended: the reason its log line gives, and whether the device's will
//! message is published.

use std::time::Duration;

use rumqttc::mqttbytes::Error as CodecError;

/// Why a session ended, for its log line.
#[derive(Debug)]
pub(super) enum Ending {
    /// The device sent DISCONNECT: no will message.
    Disconnected,
    /// The connection closed without DISCONNECT.
    Closed,
    /// The socket failed.
    Io(std::io::Error),
    /// A packet that cannot be read; the stream is out of step.
    Malformed(CodecError),
    /// A packet MQTT does not allow here, or a feature refused (QoS 2).
    Violation(&'static str),
    /// Nothing arrived for 1.5 keep-alives.
    Silent(Duration),
    /// The engine closed the session (replaced, too slow, deleted).
    Engine(&'static str),
    /// The server is shutting down.
    Shutdown,
}

impl Ending {
    /// Whether the will message is published: on an unexpected end of the device's own
    /// connection, not when it said goodbye, was replaced by a newer connection (whose state
    /// a will must not overwrite) or the server stops.
    pub(super) fn publishes_will(&self) -> bool {
        matches!(
            self,
            Ending::Closed
                | Ending::Io(_)
                | Ending::Malformed(_)
                | Ending::Violation(_)
                | Ending::Silent(_)
        )
    }
}

impl std::fmt::Display for Ending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ending::Disconnected => f.write_str("DISCONNECT from the device"),
            Ending::Closed => f.write_str("closed by the device without DISCONNECT"),
            Ending::Io(error) => write!(f, "I/O error: {error}"),
            Ending::Malformed(error) => write!(f, "bad packet: {error}"),
            Ending::Violation(what) => f.write_str(what),
            Ending::Silent(after) => write!(f, "silent for {after:?} (1.5 x keep-alive)"),
            Ending::Engine(reason) => f.write_str(reason),
            Ending::Shutdown => f.write_str("server shutting down"),
        }
    }
}
