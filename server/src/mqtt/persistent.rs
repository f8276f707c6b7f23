//! Persistent MQTT sessions (`clean_session = 0`): a device's subscriptions and the version it
//! had seen, kept in memory per device and client id so that they survive a reconnect, as
//! MQTT 3.1.1 says. Bounded: past
//! [`MAX_PERSISTENT_SESSIONS`], the least recently used one is forgotten (its device then
//! reconnects to a fresh session and sees `session present = 0`, so it subscribes again).

use std::collections::HashMap;
use std::sync::Mutex;

use rumqttc::mqttbytes::QoS;

use crate::model::DeviceId;

/// Persistent sessions kept at most, all devices together.
pub const MAX_PERSISTENT_SESSIONS: usize = 20_000;
/// Subscriptions one session may hold.
pub const MAX_SUBSCRIPTIONS: usize = 16;

/// One subscription: a filter under `downlink/` and the QoS granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The topic filter.
    pub filter: String,
    /// The QoS granted (0 or 1).
    pub qos: QoS,
}

/// What a persistent session keeps between connections.
#[derive(Debug, Clone, Default)]
pub struct SavedSession {
    /// Its subscriptions.
    pub subscriptions: Vec<Subscription>,
    /// The device's version when the connection ended, lowered below every value the device
    /// had not received by then: on resume, the `sync` datastreams changed after it are sent
    /// (the state-sync form of MQTT's "queued messages are delivered on reconnect").
    pub known_version: u64,
}

struct Entry {
    saved: SavedSession,
    /// The [`Kept::clock`] reading of its last use.
    last_used: u64,
}

#[derive(Default)]
struct Kept {
    entries: HashMap<(DeviceId, String), Entry>,
    /// Counts uses, to tell the least recently used session.
    clock: u64,
}

/// The persistent sessions of every device.
#[derive(Default)]
pub struct PersistentSessions {
    sessions: Mutex<Kept>,
}

impl PersistentSessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The saved session of a device's client, if any; a clean session forgets it (MQTT 3.1.1
    /// section 3.1.2.4).
    pub fn resume(&self, device: DeviceId, client_id: &str, clean: bool) -> Option<SavedSession> {
        let key = (device, client_id.to_owned());
        let mut kept = self.lock();
        if clean {
            kept.entries.remove(&key);
            return None;
        }
        kept.clock += 1;
        let now = kept.clock;
        kept.entries.get_mut(&key).map(|entry| {
            entry.last_used = now;
            entry.saved.clone()
        })
    }

    /// Keeps a persistent session's state for its next connection.
    pub fn save(&self, device: DeviceId, client_id: &str, saved: SavedSession) {
        let mut kept = self.lock();
        let key = (device, client_id.to_owned());
        if !kept.entries.contains_key(&key) && kept.entries.len() >= MAX_PERSISTENT_SESSIONS {
            let oldest = kept
                .entries
                .iter()
                .min_by_key(|(_, entry)| entry.last_used)
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                tracing::info!(device = oldest.0, client_id = %oldest.1, "persistent MQTT session forgotten: too many kept");
                kept.entries.remove(&oldest);
            }
        }
        kept.clock += 1;
        let last_used = kept.clock;
        kept.entries.insert(key, Entry { saved, last_used });
    }

    /// Sessions kept now.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(filter: &str) -> SavedSession {
        SavedSession {
            subscriptions: vec![Subscription {
                filter: filter.into(),
                qos: QoS::AtLeastOnce,
            }],
            known_version: 0,
        }
    }

    #[test]
    fn a_persistent_session_is_resumed_and_a_clean_one_forgets_it() {
        let sessions = PersistentSessions::default();
        sessions.save(1, "lamp", saved("downlink/#"));
        let resumed = sessions.resume(1, "lamp", false).unwrap();
        assert_eq!(resumed.subscriptions[0].filter, "downlink/#");
        assert!(sessions.resume(2, "lamp", false).is_none(), "per device");
        assert!(sessions.resume(1, "lamp", true).is_none());
        assert!(sessions.resume(1, "lamp", false).is_none(), "forgotten");
    }

    #[test]
    fn sessions_are_bounded_and_the_least_recently_used_goes_first() {
        let sessions = PersistentSessions::default();
        for device in 0..MAX_PERSISTENT_SESSIONS as i64 {
            sessions.save(device, "c", saved("downlink/#"));
        }
        sessions.resume(0, "c", false);
        sessions.save(-1, "c", saved("downlink/#"));
        assert_eq!(sessions.len(), MAX_PERSISTENT_SESSIONS);
        assert!(sessions.resume(0, "c", false).is_some(), "recently used");
        assert!(
            sessions.resume(1, "c", false).is_none(),
            "least recently used"
        );
    }
}
