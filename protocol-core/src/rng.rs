//! The engines' only source of randomness: a PRNG seeded by the driver, so
//! that the same seed and inputs replay the same jitter.

use std::time::Duration;

use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// A seeded generator of uniform values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prng(Xoshiro256PlusPlus);

impl Prng {
    /// A generator whose whole sequence follows from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(Xoshiro256PlusPlus::seed_from_u64(seed))
    }

    /// A value uniform in `[lo, hi]` (or `lo` if `hi < lo`).
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        let span = hi - lo;
        if span == u64::MAX {
            return self.0.next_u64();
        }
        // Lemire's multiply-shift: unbiased enough for jitter, no division.
        let x = u128::from(self.0.next_u64()) * u128::from(span + 1);
        lo + u64::try_from(x >> 64).unwrap_or(0)
    }

    /// Sixteen uniform bytes (for identifiers).
    pub fn bytes16(&mut self) -> [u8; 16] {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.0.next_u64().to_le_bytes());
        bytes[8..].copy_from_slice(&self.0.next_u64().to_le_bytes());
        bytes
    }

    /// A duration uniform in `[lo, hi]`, at millisecond resolution.
    pub fn duration_between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let lo_ms = u64::try_from(lo.as_millis()).unwrap_or(u64::MAX);
        let hi_ms = u64::try_from(hi.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(self.between(lo_ms, hi_ms))
    }
}
