//! v0.2: what the hub decided about an approval, recorded — every decision,
//! refused ones too (a self-approval attempt is worth knowing of), goes to
//! the audit chain and the event stream.

use nap_core::central::approval::{ApprovalRefusal, Decided, Decision};
use nap_core::{NodeId, RequestId};
use serde_json::json;

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
    let outcome = match verdict {
        Ok(Decided::Counted { approvals, needed }) => {
            json!({ "counted": approvals, "needed": needed })
        }
        Ok(Decided::Approved) => json!("approved"),
        Ok(Decided::Rejected) => json!("rejected"),
        Ok(Decided::Cancelled) => json!("cancelled"),
        Err(refusal) => json!({ "refused": refusal.to_string() }),
    };
    let detail = json!({
        "node": node_id,
        "reason": reason,
        "outcome": outcome,
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
