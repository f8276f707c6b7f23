//! The failed-login limit (SPEC 6): failures per address (IPv4 address or IPv6 /64) in a sliding
//! minute. It only counts failures and only ever changes the answer to a wrong credential: the
//! callers check the credential first, so a client with the right token or key is let in
//! whatever others did from its address (the same NAT, the same reverse proxy).
//!
//! The memory is bounded and each failure costs O(1): counts live in two fixed windows (the
//! current minute and the one before, weighted by how much of it still lies within the last
//! minute), each holding at most [`MAX_TRACKED`] addresses; failures of further addresses share
//! one overflow count. When a window ends, the older one is dropped whole: nothing ever walks
//! the map to expire single entries.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::net::address::AddressKey;

/// Addresses counted per window at most (about 1.6 MB per window when full).
pub const MAX_TRACKED: usize = 50_000;

/// The length of a window.
const WINDOW: Duration = Duration::from_secs(60);

/// What a failure leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Counted; the address is within its allowance: answer "wrong credential".
    Counted,
    /// The address failed too often: answer "too many attempts, retry in this many seconds".
    Limited {
        /// Seconds until the current window ends.
        retry_after_seconds: u16,
    },
}

/// Failed logins per address in the last minute.
#[derive(Debug)]
pub struct LoginLimiter {
    per_minute: u32,
    windows: Mutex<Windows>,
}

#[derive(Debug)]
struct Windows {
    /// When the current window began.
    started: Instant,
    current: Window,
    previous: Window,
}

#[derive(Debug, Default)]
struct Window {
    counts: HashMap<AddressKey, u32>,
    /// Failures of addresses that found the window full.
    overflow: u32,
}

impl Window {
    fn count(&self, key: &AddressKey) -> u32 {
        self.counts.get(key).copied().unwrap_or(self.overflow)
    }
}

impl LoginLimiter {
    /// Allows `per_minute` failures per address per minute.
    pub fn new(per_minute: u32) -> Self {
        LoginLimiter {
            per_minute,
            windows: Mutex::new(Windows {
                started: Instant::now(),
                current: Window::default(),
                previous: Window::default(),
            }),
        }
    }

    /// Counts a failed login from `address` and says how to answer it.
    pub fn record_failure(&self, address: IpAddr) -> Verdict {
        self.record_failure_at(address, Instant::now())
    }

    fn record_failure_at(&self, address: IpAddr, now: Instant) -> Verdict {
        let key = AddressKey::from(address);
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Dropped after the lock is released: freeing a full window is the only O(n) step, and
        // it happens once a minute, outside the lock.
        let expired = windows.advance(now);
        let current = &mut windows.current;
        let room = current.counts.len() < MAX_TRACKED;
        let count = match current.counts.entry(key) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) if room => entry.insert(0),
            Entry::Vacant(_) => &mut current.overflow,
        };
        *count = count.saturating_add(1);
        let in_current = *count;
        let elapsed = now.saturating_duration_since(windows.started);
        // The part of the previous window still inside the last minute.
        let previous_share = 1.0 - elapsed.as_secs_f64() / WINDOW.as_secs_f64();
        let estimate =
            f64::from(in_current) + f64::from(windows.previous.count(&key)) * previous_share;
        drop(windows);
        drop(expired);
        if estimate > f64::from(self.per_minute) {
            let left = WINDOW.saturating_sub(elapsed).as_millis().div_ceil(1000);
            Verdict::Limited {
                retry_after_seconds: u16::try_from(left).unwrap_or(u16::MAX).max(1),
            }
        } else {
            Verdict::Counted
        }
    }

    /// Addresses counted now, over both windows (with the overflow count, when in use).
    pub fn tracked(&self) -> usize {
        let windows = self
            .windows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        windows.current.counts.len() + windows.previous.counts.len()
    }
}

impl Windows {
    /// Moves to the window holding `now`; returns the window that fell out, to be freed by the
    /// caller.
    fn advance(&mut self, now: Instant) -> Option<Window> {
        let elapsed = now.saturating_duration_since(self.started);
        if elapsed < WINDOW {
            return None;
        }
        let older = std::mem::take(&mut self.current);
        if elapsed < 2 * WINDOW {
            self.started += WINDOW;
            Some(std::mem::replace(&mut self.previous, older))
        } else {
            // Nothing failed for a whole window: both are stale.
            self.started = now;
            let previous = std::mem::take(&mut self.previous);
            drop(older);
            Some(previous)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn spec_6_failed_login_limit_counts_failures_of_each_address() {
        let limiter = LoginLimiter::new(2);
        let now = Instant::now();
        let address = ip("192.0.2.1");
        assert_eq!(limiter.record_failure_at(address, now), Verdict::Counted);
        assert_eq!(limiter.record_failure_at(address, now), Verdict::Counted);
        assert!(matches!(
            limiter.record_failure_at(address, now),
            Verdict::Limited { .. }
        ));
        assert_eq!(
            limiter.record_failure_at(ip("192.0.2.2"), now),
            Verdict::Counted,
            "another address has its own count"
        );
    }

    #[test]
    fn spec_6_failed_login_limit_counts_ipv6_per_64() {
        let limiter = LoginLimiter::new(1);
        let now = Instant::now();
        assert_eq!(
            limiter.record_failure_at(ip("2001:db8:0:1::1"), now),
            Verdict::Counted
        );
        assert!(matches!(
            limiter.record_failure_at(ip("2001:db8:0:1::2"), now),
            Verdict::Limited { .. }
        ));
        assert_eq!(
            limiter.record_failure_at(ip("2001:db8:0:2::1"), now),
            Verdict::Counted
        );
    }

    #[test]
    fn spec_6_failed_login_limit_forgets_after_a_minute_sliding() {
        let limiter = LoginLimiter::new(4);
        let start = Instant::now();
        let address = ip("192.0.2.1");
        for _ in 0..4 {
            assert_eq!(limiter.record_failure_at(address, start), Verdict::Counted);
        }
        assert!(matches!(
            limiter.record_failure_at(address, start),
            Verdict::Limited {
                retry_after_seconds: 60
            }
        ));
        // 15 s into the next window, three quarters of the five failures still count: over.
        let later = start + Duration::from_secs(75);
        assert!(matches!(
            limiter.record_failure_at(address, later),
            Verdict::Limited { .. }
        ));
        // Two windows later everything before is forgotten.
        let much_later = start + Duration::from_secs(200);
        assert_eq!(
            limiter.record_failure_at(address, much_later),
            Verdict::Counted
        );
        assert_eq!(limiter.tracked(), 1);
    }

    #[test]
    fn spec_6_failed_login_limit_memory_is_bounded_whatever_the_number_of_addresses() {
        let limiter = LoginLimiter::new(20);
        let start = Instant::now();
        // Three windows' worth of attackers, each address failing once: far more addresses than
        // the limiter keeps.
        for window in 0..3u32 {
            let now = start + WINDOW * window + Duration::from_secs(1);
            for n in 0..(2 * MAX_TRACKED as u32) {
                let address = IpAddr::from((window << 24 | n).to_be_bytes());
                limiter.record_failure_at(address, now);
            }
            assert!(
                limiter.tracked() <= 2 * MAX_TRACKED,
                "{}",
                limiter.tracked()
            );
        }
        // Addresses past the bound share one count: with 100k failures in it, a new address's
        // wrong credential is answered as limited, which refuses nobody with a right one.
        assert!(matches!(
            limiter.record_failure_at(
                ip("203.0.113.1"),
                start + WINDOW * 2 + Duration::from_secs(2)
            ),
            Verdict::Limited { .. }
        ));
    }
}
