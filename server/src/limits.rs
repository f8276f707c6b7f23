//! The message rate limit of a device connection (a token bucket); the failed-login limit is
//! in `login_limiter.rs`.

use std::time::{Duration, Instant};

use crate::model::DeviceId;

/// A token bucket: `rate` messages per second on average, `burst` at once.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    tokens: f64,
    refilled: Instant,
    dropped: u64,
    last_warning: Option<Instant>,
}

impl RateLimiter {
    /// A full bucket.
    pub fn new(rate: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        RateLimiter {
            rate: f64::from(rate.max(1)),
            burst,
            tokens: burst,
            refilled: Instant::now(),
            dropped: 0,
            last_warning: None,
        }
    }

    /// Takes one token; `false` means the message must be dropped.
    pub fn allow(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.dropped += 1;
            false
        }
    }

    /// Messages dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// [`should_warn`](Self::should_warn) for a device connection's messages; the drops are
    /// logged each time the device is to be told.
    pub fn warn_device(&mut self, device: DeviceId) -> bool {
        let warn = self.should_warn();
        if warn {
            tracing::warn!(
                device,
                dropped = self.dropped,
                "device over its message rate; excess dropped"
            );
        }
        warn
    }

    /// Whether the client should be told now (at most once a minute, as the classic server did).
    pub fn should_warn(&mut self) -> bool {
        let now = Instant::now();
        if self
            .last_warning
            .is_none_or(|last| now.duration_since(last) >= Duration::from_secs(60))
        {
            self.last_warning = Some(now);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_the_burst_then_drops_and_counts() {
        let mut limiter = RateLimiter::new(1, 3);
        assert!((0..3).all(|_| limiter.allow()));
        assert!(!limiter.allow());
        assert_eq!(limiter.dropped(), 1);
        assert!(limiter.should_warn());
        assert!(!limiter.should_warn(), "status 1 at most once a minute");
    }
}
