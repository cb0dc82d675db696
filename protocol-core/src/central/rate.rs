//! Message rate limiting for sessions, on the monotonic clock.

use crate::Timestamp;

/// A token bucket on the monotonic clock (sessions' message rates, and the
/// operator API's rate per token).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenBucket {
    /// Tokens in thousandths, so refill needs no floats.
    milli_tokens: u64,
    per_sec: u64,
    burst: u64,
    last: Timestamp,
}

impl TokenBucket {
    pub fn new(now: Timestamp, per_sec: u32, burst: u32) -> Self {
        Self {
            milli_tokens: u64::from(burst) * 1000,
            per_sec: u64::from(per_sec),
            burst: u64::from(burst),
            last: now,
        }
    }

    pub fn take(&mut self, now: Timestamp) -> bool {
        self.refill(now);
        if self.milli_tokens >= 1000 {
            self.milli_tokens -= 1000;
            true
        } else {
            false
        }
    }

    /// Whether the bucket is back to its full burst at `now` (unused lately).
    pub fn is_full(&self, now: Timestamp) -> bool {
        let mut bucket = *self;
        bucket.refill(now);
        bucket.milli_tokens >= bucket.burst * 1000
    }

    fn refill(&mut self, now: Timestamp) {
        let elapsed_us = now.as_micros().saturating_sub(self.last.as_micros());
        self.last = now;
        let refill = elapsed_us.saturating_mul(self.per_sec) / 1000;
        self.milli_tokens = (self.milli_tokens.saturating_add(refill)).min(self.burst * 1000);
    }
}
