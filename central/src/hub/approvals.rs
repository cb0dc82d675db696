//! v0.2: what the hub decided about an approval, recorded — every decision,
//! refused ones too (a self-approval attempt is worth knowing of), goes to
//! the audit chain and the event stream.

use nap_core::central::HubInput;
use nap_core::central::approval::{ApprovalRefusal, Decided, Decision, Person};
use nap_core::{NodeId, RequestId};
use serde_json::json;

use super::handle::HubHandle;
use crate::cluster::{Holder, Notice};
use crate::effects::Effects;
use crate::events::AppEvent;
use crate::store::Storage as _;

pub(super) async fn record_decision(
    effects: &Effects,
    request_id: RequestId,
    node_id: Option<NodeId>,
    person: &str,
    decision: &Decision,
    verdict: &Result<Decided, ApprovalRefusal>,
) {
    let (action, reason, signature) = match decision {
        Decision::Approve { signature, .. } => ("approval.approve", None, signature.as_ref()),
        Decision::Reject { reason } => ("approval.reject", Some(reason.as_str()), None),
        Decision::Cancel => ("approval.cancel", None, None),
    };
    let detail = json!({
        "node": node_id,
        "reason": reason,
        "outcome": crate::effects::approval_outcome(verdict),
        "signed": signature.is_some(),
    });
    let at = effects.clock.wall();
    if matches!(verdict, Ok(Decided::Counted { .. } | Decided::Approved))
        && let Err(e) = effects
            .store
            .add_approver(request_id, person, signature)
            .await
    {
        // The hub holds it; only a restart before the command ends loses it.
        effects.metrics.db_error("add_approver");
        tracing::error!(error = %e, request = %request_id, "cannot store an approval");
    }
    if let Err(e) = effects
        .store
        .append_audit(person, action, &request_id.to_string(), detail, at)
        .await
    {
        effects.metrics.db_error("audit_approval");
        tracing::error!(error = %e, request = %request_id, "cannot audit an approval decision");
    }
    effects.events.emit(AppEvent::ApprovalDecided {
        request_id,
        person: person.to_owned(),
        verdict: verdict.clone(),
    });
}

/// How long a decision waits for the hub's verdict (here or at the process
/// holding the node).
const VERDICT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A verdict that could not be had.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    #[error("the hub did not answer in time")]
    NoAnswer,
    #[error(
        "node {0} is connected to no central process: its approval is decided when it reconnects"
    )]
    NodeAway(NodeId),
    #[error("cannot reach the process that holds the node: {0}")]
    Cluster(String),
}

impl HubHandle {
    /// `person` decides on `request_id`. Exactly one hub decides each
    /// command: this one when it tracks it (or when this process is alone),
    /// otherwise the one holding the command's node, asked over the bus.
    pub async fn decide(
        &self,
        request_id: RequestId,
        person: Person,
        decision: Decision,
    ) -> Result<Result<Decided, ApprovalRefusal>, DecideError> {
        let Some(link) = self.cluster() else {
            return self
                .decide_here(request_id, person, decision)
                .await
                .ok_or(DecideError::NoAnswer);
        };
        if self.read(|h| h.command(request_id).is_some()) {
            return self
                .decide_here(request_id, person, decision)
                .await
                .ok_or(DecideError::NoAnswer);
        }
        let record = self
            .effects()
            .store
            .get_command(request_id)
            .await
            .map_err(|e| DecideError::Cluster(e.to_string()))?;
        let Some(record) = record.filter(|r| !r.state.is_terminal()) else {
            // Unknown or ended: the hub's refusal says so.
            return self
                .decide_here(request_id, person, decision)
                .await
                .ok_or(DecideError::NoAnswer);
        };
        let holder = link
            .cluster()
            .locate(&[record.node_id])
            .await
            .map_err(|e| DecideError::Cluster(e.to_string()))?;
        let instance = match holder.into_iter().next() {
            Some(Holder::Elsewhere(instance)) => instance,
            Some(Holder::Here(_)) => {
                return self
                    .decide_here(request_id, person, decision)
                    .await
                    .ok_or(DecideError::NoAnswer);
            }
            Some(Holder::Nobody) | None => return Err(DecideError::NodeAway(record.node_id)),
        };
        let user = person.user.clone();
        let mut events = self.effects().events.subscribe();
        let notice = Notice::Decide {
            from: link.cluster().instance().to_owned(),
            request_id,
            person,
            decision,
        };
        match link.cluster().tell(&instance, &notice).await {
            Ok(true) => {}
            Ok(false) => return Err(DecideError::Cluster(format!("{instance} is not listening"))),
            Err(e) => return Err(DecideError::Cluster(e.to_string())),
        }
        verdict(&mut events, request_id, &user)
            .await
            .ok_or(DecideError::NoAnswer)
    }

    /// Asks this hub, and waits for its verdict.
    pub(super) async fn decide_here(
        &self,
        request_id: RequestId,
        person: Person,
        decision: Decision,
    ) -> Option<Result<Decided, ApprovalRefusal>> {
        let user = person.user.clone();
        // Listening before asking: the verdict cannot pass unseen.
        let mut events = self.effects().events.subscribe();
        self.input(HubInput::Decide {
            request_id,
            person,
            decision,
        });
        verdict(&mut events, request_id, &user).await
    }
}

/// The verdict on `user`'s decision on `request_id`, as the event stream
/// carries it.
async fn verdict(
    events: &mut tokio::sync::broadcast::Receiver<AppEvent>,
    request_id: RequestId,
    user: &str,
) -> Option<Result<Decided, ApprovalRefusal>> {
    crate::events::first(events, VERDICT_WAIT, |event| match event {
        AppEvent::ApprovalDecided {
            request_id: r,
            person,
            verdict,
        } if r == request_id && person == user => Some(verdict),
        _ => None,
    })
    .await
}
