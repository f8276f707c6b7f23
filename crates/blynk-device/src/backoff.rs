//! Reconnect delays: exponential backoff with random jitter, so that a fleet of devices that
//! lost the server at the same moment does not come back in lock-step.
//!
//! The randomness is a tiny xorshift generator seeded by the caller (a hardware RNG value) mixed
//! with a hash of the device's token, so that devices with the same firmware and seed still
//! draw different delays.

use embassy_time::Duration;

/// A 32-bit xorshift generator: tiny, fast, good enough for jitter (not for secrets).
#[derive(Debug, Clone)]
pub struct Prng(u32);

impl Prng {
    /// A generator; any seed works (0 is replaced).
    pub const fn new(seed: u32) -> Self {
        Prng(if seed == 0 { 0x9E37_79B9 } else { seed })
    }

    /// The next number.
    pub fn next_u32(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }
}

/// FNV-1a, to turn a token into seed material.
pub const fn fnv1a(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811C_9DC5;
    let mut index = 0;
    while index < bytes.len() {
        // `index < bytes.len()`; slices cannot be iterated in a const fn.
        #[allow(clippy::indexing_slicing)]
        let byte = bytes[index];
        hash ^= byte as u32;
        hash = hash.wrapping_mul(0x0100_0193);
        index += 1;
    }
    hash
}

/// The delay before each reconnect attempt.
#[derive(Debug, Clone)]
pub struct Backoff {
    min_ms: u32,
    max_ms: u32,
    failures: u32,
    random: Prng,
}

impl Backoff {
    /// Delays from `min_ms` doubling up to `max_ms`.
    pub const fn new(min_ms: u32, max_ms: u32, seed: u32) -> Self {
        let min_ms = if min_ms == 0 { 1 } else { min_ms };
        Backoff {
            min_ms,
            max_ms: if max_ms < min_ms { min_ms } else { max_ms },
            failures: 0,
            random: Prng::new(seed),
        }
    }

    /// The delay before the next attempt: the ceiling doubles with each failure since the last
    /// successful login, from `min` up to `max`, and the delay is drawn between half the ceiling
    /// and the ceiling.
    pub fn next_delay(&mut self) -> Duration {
        // In u32 milliseconds: a 64-bit division would cost a Cortex-M0 a library routine.
        let doubled = self
            .min_ms
            .checked_shl(self.failures.min(20))
            .unwrap_or(u32::MAX);
        let ceiling = if doubled >> self.failures.min(20) != self.min_ms {
            self.max_ms
        } else {
            doubled.min(self.max_ms)
        };
        self.failures = self.failures.saturating_add(1);
        let half = ceiling / 2;
        let jitter = self.random.next_u32() % (ceiling - half + 1);
        Duration::from_millis(u64::from(half + jitter))
    }

    /// A login succeeded: start again from the shortest delay.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn delays_double_up_to_the_ceiling_and_reset() {
        let mut backoff = Backoff::new(1000, 8000, 42);
        let ceilings = [1000, 2000, 4000, 8000, 8000];
        for ceiling in ceilings {
            let delay = backoff.next_delay().as_millis();
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{delay} for {ceiling}"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay().as_millis() <= 1000);
    }

    #[test]
    fn a_fleet_spreads_out_instead_of_reconnecting_in_lock_step() {
        // 100 devices with the same firmware seed, told apart by their token.
        let delays: BTreeSet<u64> = (0..100u32)
            .map(|device| {
                let token = std::format!("token-of-device-{device:016}");
                let mut backoff = Backoff::new(2000, 60_000, 7 ^ fnv1a(token.as_bytes()));
                backoff.next_delay().as_millis()
            })
            .collect();
        assert!(delays.len() > 80, "only {} distinct delays", delays.len());
        assert!(delays.iter().all(|d| (1000..=2000).contains(d)));
    }
}
