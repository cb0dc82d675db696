//! The simulated network: per-frame latency with jitter, and faults
//! (loss, duplication, reordering) that a real TCP stream would not show but
//! that the engines must survive anyway, plus partitions.

use std::time::Duration;

/// Frame-level faults, in parts per thousand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct NetFaults {
    pub loss_permille: u16,
    pub duplicate_permille: u16,
    /// A reordered frame is held back by up to ten extra latencies.
    pub reorder_permille: u16,
}

/// How frames travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NetConfig {
    pub latency: Duration,
    pub jitter: Duration,
    pub faults: NetFaults,
    /// While partitioned, dials fail and frames vanish both ways.
    pub partitioned: bool,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(5),
            jitter: Duration::from_millis(2),
            faults: NetFaults::default(),
            partitioned: false,
        }
    }
}
