//! The driver's clocks: the monotonic one the core's timers run on, and the
//! wall clock that stamps messages and checks tokens.

use std::time::Instant;

use nap_core::{Timestamp, WallTime};

/// Reads both clocks. The core never does.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Self {
            base: Instant::now(),
        }
    }
}

impl Clock {
    /// Monotonic time since this clock was made.
    pub fn now(&self) -> Timestamp {
        Timestamp::from_micros(u64::try_from(self.base.elapsed().as_micros()).unwrap_or(u64::MAX))
    }

    /// The wall clock.
    pub fn wall(&self) -> WallTime {
        WallTime::from(chrono::Utc::now())
    }

    /// The instant a core timestamp stands for.
    pub fn instant(&self, at: Timestamp) -> Instant {
        self.base + std::time::Duration::from_micros(at.as_micros())
    }
}
