//! The message rate limit of the HTTP device API, per device token: the same token bucket the
//! device protocols apply per connection (`messages_per_second`, `message_burst`), so a token
//! cannot flood the server (or an offline device's pending commands) through plain requests.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::config::Limits;
use crate::limits::RateLimiter;
use crate::model::DeviceId;

/// One bucket per device that used the HTTP device API. Only a request with a valid token gets
/// a bucket, so the map holds at most one entry per device (about 64 bytes each).
pub struct DeviceRates {
    messages_per_second: u32,
    burst: u32,
    buckets: Mutex<HashMap<DeviceId, RateLimiter>>,
}

impl DeviceRates {
    /// Buckets of `limits.messages_per_second`, `limits.message_burst` at once.
    pub fn new(limits: &Limits) -> Self {
        DeviceRates {
            messages_per_second: limits.messages_per_second,
            burst: limits.message_burst,
            buckets: Mutex::default(),
        }
    }

    /// Counts one request of `device`; `Err` holds the message for a refused one.
    pub fn allow(&self, device: DeviceId) -> Result<(), String> {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let bucket = buckets
            .entry(device)
            .or_insert_with(|| RateLimiter::new(self.messages_per_second, self.burst));
        if bucket.allow() {
            return Ok(());
        }
        if bucket.should_warn() {
            tracing::warn!(
                device,
                dropped = bucket.dropped(),
                "device token over its HTTP request rate; excess refused"
            );
        }
        Err(format!(
            "rate limit exceeded: at most {} requests per second per device token (bursts of {}); retry later",
            self.messages_per_second, self.burst
        ))
    }

    /// Forgets a deleted device.
    pub fn forget(&self, device: DeviceId) {
        self.buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&device);
    }
}
