//! The sans-IO core of NAP, the Node Agent Protocol.
//!
//! This crate decides; it never performs. It holds the wire types and their
//! codec, and (in later modules) the state machines of the agent connection
//! and the central session. Time, wall-clock time and random seeds are passed
//! in by the driver: nothing here reads a clock, a socket, a file or a random
//! source, so every behaviour can be replayed from its inputs.
#![forbid(unsafe_code)]

pub mod agent;
pub mod alerts;
pub mod backoff;
pub mod central;
pub mod codec;
pub mod crypto;
pub mod ids;
pub mod policy;
pub mod release;
pub mod rng;
pub mod signed_approval;
mod signed_text;
pub mod target_set;
pub mod time;
pub mod timer;
pub mod transport;
pub mod wire;

#[cfg(feature = "schema")]
pub mod schema;

pub use codec::{DecodeError, EncodeError, Limits, Message, decode, encode};
pub use ids::{AlertId, NodeId, RequestId, RolloutId, SessionId, TokenId};
pub use time::{Timestamp, WallAnchor, WallTime};

/// The WebSocket subprotocol and protocol version spoken by this crate.
pub const PROTOCOL_VERSION: &str = "nap.v1";

/// The path of the agent endpoint on central.
pub const AGENT_PATH: &str = "/v1/agent";

#[cfg(feature = "testing")]
pub mod testing;
