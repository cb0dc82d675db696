//! Commands as central tracks them: their states (spec/protocol.md §8) and
//! the shapes in which they reach the hub.

use std::time::Duration;

use super::approval::{ApprovalRequest, Pending};
use crate::wire::{CentralMessage, CommandResult, ErrorCode};
use crate::{NodeId, RequestId};

/// A command's state at central (spec/protocol.md §8).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum CommandState {
    /// Waiting for the node to be online (an approval request collects its
    /// approvals meanwhile).
    Queued,
    /// Delivered to a session; waiting for the result.
    Sent,
    /// v0.2: delivered to the node, which checked it and holds it; waiting
    /// for approvals.
    Held,
    /// v0.2: approved by enough people; the release (`execute_approved`)
    /// is sent, or goes as soon as the node is online.
    Approved,
    Succeeded,
    Failed,
    TimedOut,
    Blocked,
    /// Waited for an offline node longer than its time to live.
    Expired,
    /// The node is unknown, revoked, or its queue is full.
    Undeliverable,
    /// v0.2: an approver rejected it; it never runs.
    Rejected,
    /// v0.2: not approved in time, or approved but not delivered in time.
    ApprovalExpired,
    /// v0.2: withdrawn by its requester or an administrator.
    Cancelled,
}

impl CommandState {
    /// Every state, in lifecycle order.
    pub const ALL: [Self; 13] = [
        Self::Queued,
        Self::Sent,
        Self::Held,
        Self::Approved,
        Self::Succeeded,
        Self::Failed,
        Self::TimedOut,
        Self::Blocked,
        Self::Expired,
        Self::Undeliverable,
        Self::Rejected,
        Self::ApprovalExpired,
        Self::Cancelled,
    ];

    /// Whether this state is final.
    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            Self::Queued | Self::Sent | Self::Held | Self::Approved
        )
    }

    /// The name used in the API and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Sent => "sent",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::Blocked => "blocked",
            Self::Expired => "expired",
            Self::Undeliverable => "undeliverable",
            Self::Held => "held",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::ApprovalExpired => "approval_expired",
            Self::Cancelled => "cancelled",
        }
    }

    /// The state named `name` (the inverse of [`Self::as_str`]).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The terminal state a result stands for.
    pub fn of_result(result: &CommandResult) -> Self {
        match result.error.as_ref().map(|e| e.code) {
            None if result.success => Self::Succeeded,
            Some(ErrorCode::Timeout) => Self::TimedOut,
            Some(ErrorCode::Blocked) => Self::Blocked,
            _ => Self::Failed,
        }
    }
}

impl std::fmt::Display for CommandState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One tracked command.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackedCommand {
    pub node_id: NodeId,
    pub message: CentralMessage,
    pub state: CommandState,
    /// The command's own timeout (what the node may spend on it).
    pub timeout: Duration,
    /// v0.2: the approvals it needs and has.
    pub approval: Option<Pending>,
    /// v0.2: the release has been sent to the node's current session.
    pub released: bool,
}

/// A command handed to the hub: new from an operator, or loaded back from
/// the store.
#[derive(Debug, Clone, PartialEq)]
pub struct Submission {
    pub node_id: NodeId,
    pub request_id: RequestId,
    /// `None`: the stored command no longer decodes (a newer or corrupt
    /// row); the hub fails it.
    pub message: Option<CentralMessage>,
    pub timeout: Duration,
    /// Whether the node is registered and not revoked.
    pub known: bool,
    /// v0.2: it waits for approval (with the `execute` marked
    /// `requiresApproval`).
    pub approval: Option<ApprovalRequest>,
}

/// What the store found when asked to record a result
/// ([`super::HubOutput::RecordResult`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResultRecord {
    /// Stored (`first`: no result was stored before for this command).
    Stored { first: bool },
    /// The command belongs to another node: nothing was stored.
    WrongNode,
    /// The store failed (after its retries): nothing was stored.
    Failed,
}
