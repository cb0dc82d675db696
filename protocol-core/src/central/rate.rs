//! Message rate limiting for sessions, on the monotonic clock.

use crate::Timestamp;

/// A token bucket on the monotonic clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct TokenBucket {
    /// Tokens in thousandths, so refill needs no floats.
    milli_tokens: u64,
    per_sec: u64,
    burst: u64,
    last: Timestamp,
}

impl TokenBucket {
    pub(super) fn new(now: Timestamp, per_sec: u32, burst: u32) -> Self {
        Self {
            milli_tokens: u64::from(burst) * 1000,
            per_sec: u64::from(per_sec),
            burst: u64::from(burst),
            last: now,
        }
    }

    pub(super) fn take(&mut self, now: Timestamp) -> bool {
        let elapsed_us = now.as_micros().saturating_sub(self.last.as_micros());
        self.last = now;
        let refill = elapsed_us.saturating_mul(self.per_sec) / 1000;
        self.milli_tokens = (self.milli_tokens.saturating_add(refill)).min(self.burst * 1000);
        if self.milli_tokens >= 1000 {
            self.milli_tokens -= 1000;
            true
        } else {
            false
        }
    }
}
