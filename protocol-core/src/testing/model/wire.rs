//! What crosses the model's network, and the actors' timers.
//!
//! A WebSocket connection is modelled as the messages that carry it: the
//! upgrade request with its token, central's answer, text frames both ways,
//! and a close (or reset). Every message names its connection, so a frame
//! from an abandoned connection is recognised as a stale leftover, as the
//! drivers recognise a socket they have dropped.

use crate::{RequestId, Timestamp};

/// One connection, as both ends name it: the agent process's incarnation
/// (it restarts after a crash) and the engine's transport epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Conn {
    pub incarnation: u32,
    pub epoch: u64,
}

/// A message on the model's network, stamped with its sender's clock: a
/// message never arrives before it was sent, so the receiver's clock moves
/// up to the stamp. (The actors' clocks are separate; the model keeps them
/// within [`super::MAX_CLOCK_SPREAD`] of each other, as one real time would.)
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Packet {
    pub sent_at: Timestamp,
    pub body: Wire,
}

/// What a packet carries.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Wire {
    /// Agent → central: the upgrade request with its bearer token.
    Upgrade {
        conn: Conn,
        token: String,
        hello: crate::wire::Hello,
    },
    /// Central → agent: 101, the WebSocket is open.
    Accepted { conn: Conn },
    /// Central → agent: 401, the token was refused.
    Refused { conn: Conn },
    /// A text frame, either way.
    Text { conn: Conn, text: String },
    /// A close frame (with a code) or a reset (without), either way.
    Closed {
        conn: Conn,
        code: Option<crate::transport::CloseCode>,
    },
}

/// The actors' timers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tick {
    /// The engine's next deadline (the actor's clock jumps to it).
    Engine,
    /// A command the agent started ends (successfully).
    Finish(RequestId),
    /// Central's operator revokes the model's revoked node.
    Revoke,
    /// v0.2: a person takes the model's `n`-th decision on the command.
    Decide(u8),
}
