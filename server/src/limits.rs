//! Rate limits: messages per connection (token bucket) and failed logins per address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// Failed logins per address in the current minute.
#[derive(Debug)]
pub struct LoginLimiter {
    per_minute: u32,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

/// Addresses remembered at most; older entries are swept first.
const MAX_TRACKED: usize = 100_000;

impl LoginLimiter {
    /// Allows `per_minute` failures per address per minute.
    pub fn new(per_minute: u32) -> Self {
        LoginLimiter {
            per_minute,
            failures: Mutex::default(),
        }
    }

    /// `Err(seconds to wait)` when the address failed too often.
    pub fn check(&self, address: IpAddr) -> Result<(), u16> {
        let failures = self
            .failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match failures.get(&address) {
            Some((since, count))
                if *count >= self.per_minute && since.elapsed() < Duration::from_secs(60) =>
            {
                Err(60u16
                    .saturating_sub(since.elapsed().as_secs() as u16)
                    .max(1))
            }
            _ => Ok(()),
        }
    }

    /// Counts a failed login.
    pub fn record_failure(&self, address: IpAddr) {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if failures.len() >= MAX_TRACKED {
            failures.retain(|_, (since, _)| since.elapsed() < Duration::from_secs(60));
        }
        let entry = failures.entry(address).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= Duration::from_secs(60) {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
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

    #[test]
    fn failed_logins_lock_an_address_out() {
        let limiter = LoginLimiter::new(2);
        let address: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(limiter.check(address).is_ok());
        limiter.record_failure(address);
        limiter.record_failure(address);
        assert!(limiter.check(address).is_err());
        assert!(limiter.check("127.0.0.2".parse().unwrap()).is_ok());
    }
}
