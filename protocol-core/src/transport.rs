//! What the engines know of a transport: its epoch, its close codes, and
//! how urgently each frame must go out.

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

/// How urgently a frame goes out (spec §7.1). A driver with frames of
/// several classes waiting writes the most urgent first, so a replay never
/// delays a pong, a result or a live sample. Declared most urgent first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SendClass {
    /// Liveness and the session itself: ping, pong, status, token refresh.
    Control,
    /// Command results.
    Commands,
    /// What was just taken: live telemetry, health, alerts.
    Live,
    /// What waited: the telemetry backlog and records sent again.
    Backlog,
}

impl SendClass {
    /// Every class, most urgent first.
    pub const ALL: [Self; 4] = [Self::Control, Self::Commands, Self::Live, Self::Backlog];

    /// The class's place in [`Self::ALL`].
    pub fn rank(self) -> usize {
        self as usize
    }
}

/// The WebSocket close codes of the protocol (spec/protocol.md §10), chosen
/// by the engines only. A code a peer sends that the protocol does not name
/// is kept as [`CloseCode::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(from = "u16", into = "u16")]
pub enum CloseCode {
    /// 1000: normal closure.
    Normal,
    /// 1001: central shutting down after `drain`; also "going away" for dead transports.
    GoingAway,
    /// 1002: protocol error (e.g. no `welcome`, or a message out of place).
    ProtocolError,
    /// 1007: a text frame that is not UTF-8 (RFC 6455 §8.1).
    InvalidPayload,
    /// 1008: policy violation: too many invalid messages or over the rate limit.
    Policy,
    /// 1009: message too big.
    TooBig,
    /// 4001: token expired or refresh rejected.
    TokenExpired,
    /// 4002: superseded by a newer connection of the same node.
    Superseded,
    /// 4003: node revoked.
    Revoked,
    /// Any other code a peer sent.
    Other(u16),
}

impl CloseCode {
    /// The code on the wire.
    pub fn as_u16(self) -> u16 {
        match self {
            Self::Normal => 1000,
            Self::GoingAway => 1001,
            Self::ProtocolError => 1002,
            Self::InvalidPayload => 1007,
            Self::Policy => 1008,
            Self::TooBig => 1009,
            Self::TokenExpired => 4001,
            Self::Superseded => 4002,
            Self::Revoked => 4003,
            Self::Other(code) => code,
        }
    }
}

impl From<u16> for CloseCode {
    fn from(code: u16) -> Self {
        match code {
            1000 => Self::Normal,
            1001 => Self::GoingAway,
            1002 => Self::ProtocolError,
            1007 => Self::InvalidPayload,
            1008 => Self::Policy,
            1009 => Self::TooBig,
            4001 => Self::TokenExpired,
            4002 => Self::Superseded,
            4003 => Self::Revoked,
            other => Self::Other(other),
        }
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> Self {
        code.as_u16()
    }
}

impl std::fmt::Display for CloseCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.as_u16())
    }
}

/// A frame the transport could not hand over as text. The engine closes
/// with the code RFC 6455 names for it, so the peer learns why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameFault {
    /// Over the message size limit (1009).
    TooLarge { size: usize },
    /// A text frame that is not UTF-8 (1007).
    NotUtf8,
}

impl FrameFault {
    /// The close code this fault is answered with.
    pub fn close_code(self) -> CloseCode {
        match self {
            Self::TooLarge { .. } => CloseCode::TooBig,
            Self::NotUtf8 => CloseCode::InvalidPayload,
        }
    }

    /// The close frame's reason.
    pub fn reason(self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "message too big",
            Self::NotUtf8 => "invalid UTF-8",
        }
    }
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
