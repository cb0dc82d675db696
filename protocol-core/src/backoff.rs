//! Reconnect delays (spec/protocol.md §5): equal jitter on a doubling base.
//!
//! Attempt `n` waits uniformly in `[d(n)/2, d(n)]` with
//! `d(n) = min(cap, 2 × floor × 2ⁿ)`: 10–20 s, 20–40 s, … then 150–300 s.

use std::time::Duration;

use crate::rng::Prng;

/// The schedule's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BackoffConfig {
    /// The shortest delay after a loss (10 s).
    pub floor: Duration,
    /// The longest delay (5 min).
    pub cap: Duration,
    /// How long a connection must stay established to reset the schedule (60 s).
    pub reset_after: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            floor: Duration::from_secs(10),
            cap: Duration::from_secs(300),
            reset_after: Duration::from_secs(60),
        }
    }
}

impl BackoffConfig {
    /// The bounds `[d(n)/2, d(n)]` of attempt `attempt`'s delay.
    pub fn bounds(&self, attempt: u32) -> (Duration, Duration) {
        let doubled = self
            .floor
            .saturating_mul(2)
            .saturating_mul(2u32.saturating_pow(attempt.min(31)));
        let high = doubled.min(self.cap);
        (high / 2, high)
    }

    /// The bounds used at the cap (auth failures, superseded sessions).
    pub fn cap_bounds(&self) -> (Duration, Duration) {
        (self.cap / 2, self.cap)
    }
}

/// The attempt counter and the delays drawn from it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Backoff {
    attempt: u32,
}

impl Backoff {
    /// Attempts since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The next ordinary delay; advances the counter.
    pub fn next_delay(&mut self, config: &BackoffConfig, rng: &mut Prng) -> Duration {
        let (lo, hi) = config.bounds(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        rng.duration_between(lo, hi)
    }

    /// A delay at the cap; the counter jumps there too, so later losses stay there
    /// until a healthy connection resets it.
    pub fn next_capped_delay(&mut self, config: &BackoffConfig, rng: &mut Prng) -> Duration {
        while config.bounds(self.attempt).1 < config.cap && self.attempt < 31 {
            self.attempt += 1;
        }
        let (lo, hi) = config.cap_bounds();
        rng.duration_between(lo, hi)
    }

    /// A connection stayed healthy: start again from the floor.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}
