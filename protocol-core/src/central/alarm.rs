//! What central tells an administrator about (spec/protocol.md §3, §7): the
//! engines decide what is worth it, the driver stores and delivers it.

use core::net::IpAddr;

use crate::central::approval::{ApprovalRefusal, Decided, Decision};
use crate::wire::Alert;
use crate::{NodeId, RequestId, RolloutId};

/// Something for an administrator.
#[derive(Debug, Clone, PartialEq)]
pub enum Alarm {
    /// Node tokens (upgrade or artifact download) were refused: `count`
    /// of them from `peer` for `reason` (spec §3: the first of a window is
    /// told at once with a count of 1, the rest as one notice when the
    /// window ends). `peer` is `None` when unknown, or for the addresses
    /// past the bound of those told about separately.
    AuthRefused {
        reason: &'static str,
        peer: Option<IpAddr>,
        count: u32,
    },
    /// A node raised a critical alert.
    CriticalAlert { node_id: NodeId, alert: Box<Alert> },
    /// v0.2: a request for approval was made, decided, refused or expired
    /// (spec §8.1: every one is told).
    Approval {
        request_id: RequestId,
        node_id: Option<NodeId>,
        event: ApprovalEvent,
    },
    /// v0.3 with v0.2: the same for a rollout's approval (spec §8.4).
    RolloutApproval {
        rollout_id: RolloutId,
        event: ApprovalEvent,
    },
}

/// What happened to a request for approval.
#[derive(Debug, Clone, PartialEq)]
pub enum ApprovalEvent {
    /// Someone asked.
    Requested {
        requester: String,
        reason: String,
        approver: Option<String>,
        min_approvals: u8,
    },
    /// `person` approved, rejected or cancelled it (`decision`), with this
    /// outcome — a refusal too (a self-approval attempt is worth knowing).
    Decided {
        person: String,
        decision: &'static str,
        reason: Option<String>,
        outcome: Result<Decided, ApprovalRefusal>,
    },
    /// Nobody decided in time, or a complete approval did not reach its
    /// node in time.
    Expired,
}

impl ApprovalEvent {
    /// `person`'s `decision`, with its outcome.
    pub fn decided(
        person: &str,
        decision: &Decision,
        outcome: Result<Decided, ApprovalRefusal>,
    ) -> Self {
        let (name, reason) = match decision {
            Decision::Approve { .. } => ("approve", None),
            Decision::Reject { reason } => ("reject", Some(reason.clone())),
            Decision::Cancel => ("cancel", None),
        };
        Self::Decided {
            person: person.to_owned(),
            decision: name,
            reason,
            outcome,
        }
    }
}

impl Alarm {
    /// The stable name of the kind (stored events, webhook `kind`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::AuthRefused { .. } => "auth_failure",
            Self::CriticalAlert { .. } => "critical_alert",
            Self::Approval { .. } | Self::RolloutApproval { .. } => "approval",
        }
    }
}
