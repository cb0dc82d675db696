//! The only interface between central's engines: what a session tells the
//! hub and what the hub tells a session. Both are opaque outside this
//! module (quinn-proto's `EndpointEvent` / `ConnectionEvent`): a driver, the
//! in-memory `World` and the model checker carry them from one engine to the
//! other without reading them, so there is exactly one implementation of
//! the glue and it is the one that is verified.

use std::time::Duration;

use crate::transport::CloseCode;
use crate::wire::{CentralMessage, CommandResult, NodeStatus};
use crate::{NodeId, RequestId, WallTime};

use super::auth::{AuthRejection, TokenCheck};

/// From a session to the hub: give it to [`super::CentralHub`] as
/// [`super::HubInput::FromSession`] with the session's id.
#[derive(Debug, Clone, PartialEq)]
#[must_use = "a hub event must be forwarded to the hub"]
pub struct ToHub(pub(super) ToHubKind);

#[derive(Debug, Clone, PartialEq)]
pub(super) enum ToHubKind {
    /// `welcome` is on its way: the node is online on this session.
    Opened { node_id: NodeId },
    /// The node reported its status.
    Status {
        node_id: NodeId,
        status: NodeStatus,
        reason: Option<String>,
    },
    /// The node sent a command result.
    Result {
        node_id: NodeId,
        result: Box<CommandResult>,
    },
    /// The node refreshed its token; the driver's findings on it.
    Refresh {
        node_id: NodeId,
        check: Box<TokenCheck>,
    },
    /// The session is over.
    Closed { node_id: NodeId },
}

/// From the hub to one session: give it to that session as
/// [`super::SessionInput::FromHub`].
#[derive(Debug, Clone, PartialEq)]
#[must_use = "a session event must be forwarded to its session"]
pub struct ToSession(pub(super) ToSessionKind);

#[derive(Debug, Clone, PartialEq)]
pub(super) enum ToSessionKind {
    /// Send this command (or other message) to the node.
    Deliver(Box<CentralMessage>),
    /// The result is durable: ack it.
    ResultStored(RequestId),
    /// The result names a command of another node: refused, and acked so
    /// that the node stops sending it.
    ResultRefused(RequestId),
    /// The verdict on a `token_refresh`.
    RefreshChecked(Result<WallTime, AuthRejection>),
    /// End the session.
    Terminate {
        code: CloseCode,
        reason: &'static str,
    },
    /// Central is shutting down: the node comes back after this long.
    Drain { reconnect_after: Duration },
}

impl ToSession {
    /// Delivers `message` to a session outside the hub's tracker: for tests
    /// of what a session and an agent do with a duplicate or a message the
    /// hub never sends.
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn deliver_untracked(message: CentralMessage) -> Self {
        Self(ToSessionKind::Deliver(Box::new(message)))
    }
}
