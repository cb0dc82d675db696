//! What the engines know of a transport: its epoch and its close codes.

use serde::{Deserialize, Serialize};

/// One transport (one dial, one accepted socket). Inputs carry the epoch they
/// belong to; anything from an older epoch is a stale leftover and ignored.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Epoch(pub u64);

impl Epoch {
    /// The epoch after this one.
    pub fn next(self) -> Self {
        Self(self.0.wrapping_add(1))
    }
}

impl std::fmt::Display for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "epoch {}", self.0)
    }
}

/// WebSocket close codes used by the protocol (spec/protocol.md §10).
pub mod close {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// Central shutting down after `drain`; also "going away" for dead transports.
    pub const GOING_AWAY: u16 = 1001;
    /// Protocol error (e.g. no `welcome`, or a message out of place).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// Policy violation: too many invalid messages or over the rate limit.
    pub const POLICY: u16 = 1008;
    /// Message too big.
    pub const TOO_BIG: u16 = 1009;
    /// Token expired or refresh rejected.
    pub const TOKEN_EXPIRED: u16 = 4001;
    /// Superseded by a newer connection of the same node.
    pub const SUPERSEDED: u16 = 4002;
    /// Node revoked.
    pub const REVOKED: u16 = 4003;
}

/// Counts invalid messages in a sliding window and says when a peer has sent
/// too many (spec/protocol.md §9: more than 10 within 60 s closes with 1008).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InvalidBudget {
    /// How many invalid messages a window may hold before the peer is closed.
    pub limit: u32,
    /// The window's length.
    pub window: std::time::Duration,
    window_start: crate::Timestamp,
    count: u32,
    total: u64,
}

impl InvalidBudget {
    /// A budget of `limit` per `window`.
    pub fn new(limit: u32, window: std::time::Duration) -> Self {
        Self {
            limit,
            window,
            window_start: crate::Timestamp::ZERO,
            count: 0,
            total: 0,
        }
    }

    /// Records one invalid message; true when the peer is now over the limit.
    pub fn record(&mut self, now: crate::Timestamp) -> bool {
        if now.saturating_since(self.window_start) >= self.window {
            self.window_start = now;
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        self.total = self.total.saturating_add(1);
        self.count > self.limit
    }

    /// Invalid messages seen in all.
    pub fn total(&self) -> u64 {
        self.total
    }
}

impl Default for InvalidBudget {
    fn default() -> Self {
        Self::new(10, std::time::Duration::from_secs(60))
    }
}
