//! Administrator alarms (refused node tokens — coalesced by the hub, one per
//! address and reason per minute with a count —, critical alerts and
//! approvals): stored as events — refused tokens and expired approvals also
//! in the audit chain — and, when a webhook is
//! configured, POSTed to it as JSON: queued (bounded), retried with backoff,
//! never blocking the caller.

use std::sync::Arc;
use std::time::Duration;

use nap_core::central::approval::{ApprovalRefusal, Decided};
use nap_core::central::{Alarm, ApprovalEvent};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::webhook::Webhook;
use crate::clock::Clock;
use crate::metrics::{Metrics, Outcome};
use crate::store::{AnyStore, Storage};

/// Webhook deliveries waiting.
const QUEUE: usize = 1000;

#[derive(Debug, Clone)]
pub(super) struct Alarms {
    webhook: Option<mpsc::Sender<Value>>,
    store: AnyStore,
    metrics: Arc<Metrics>,
    clock: Clock,
}

impl Alarms {
    pub(super) fn start(
        webhook: Option<Webhook>,
        store: AnyStore,
        metrics: Arc<Metrics>,
        clock: Clock,
    ) -> Self {
        let webhook = webhook.map(|hook| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(deliver(Arc::clone(&metrics), hook, rx));
            tx
        });
        Self {
            webhook,
            store,
            metrics,
            clock,
        }
    }

    pub(super) fn raise(&self, alarm: Alarm) {
        let at = self.clock.wall();
        let kind = alarm.kind();
        let detail = detail(&alarm);
        let body = json!({ "kind": kind, "at": at, "detail": detail });
        if let Some(tx) = &self.webhook
            && tx.try_send(body).is_err()
        {
            self.metrics
                .notifications
                .get_or_create(&Outcome {
                    outcome: "dropped".into(),
                })
                .inc();
            tracing::warn!(
                kind,
                "admin notification queue full; webhook delivery dropped (the event is stored)"
            );
        }
        let (store, metrics) = (self.store.clone(), Arc::clone(&self.metrics));
        tokio::spawn(async move {
            if let Alarm::AuthRefused { peer, .. } = &alarm {
                let subject = peer.map(|p| p.to_string()).unwrap_or_default();
                if let Err(e) = store
                    .append_audit("agent", "auth.refused", &subject, detail.clone(), at)
                    .await
                {
                    metrics.db_error("audit");
                    tracing::error!(error = %e, "could not audit a refused token");
                }
            }
            // Requests and decisions are audited where they are made; an
            // expiry is made by nobody but the clock.
            let expired = match &alarm {
                Alarm::Approval {
                    request_id,
                    event: ApprovalEvent::Expired,
                    ..
                } => Some(("approval.expire", request_id.to_string())),
                Alarm::RolloutApproval {
                    rollout_id,
                    event: ApprovalEvent::Expired,
                } => Some(("rollout.approval_expire", rollout_id.to_string())),
                _ => None,
            };
            if let Some((action, subject)) = expired
                && let Err(e) = store
                    .append_audit("central", action, &subject, detail.clone(), at)
                    .await
            {
                metrics.db_error("audit");
                tracing::error!(error = %e, "could not audit an expired approval");
            }
            if let Err(e) = store.insert_event(kind, detail, at).await {
                metrics.db_error("insert_event");
                tracing::error!(error = %e, kind, "could not store an admin event");
            }
        });
    }
}

fn detail(alarm: &Alarm) -> Value {
    match alarm {
        Alarm::AuthRefused {
            reason,
            peer,
            count,
        } => {
            json!({ "reason": reason, "peer": peer.map(|p| p.to_string()), "count": count })
        }
        Alarm::CriticalAlert { node_id, alert } => json!({ "nodeId": node_id, "alert": alert }),
        Alarm::Approval {
            request_id,
            node_id,
            event,
        } => {
            let mut detail = approval_detail(event);
            detail["requestId"] = json!(request_id);
            detail["nodeId"] = json!(node_id);
            detail
        }
        Alarm::RolloutApproval { rollout_id, event } => {
            let mut detail = approval_detail(event);
            detail["rolloutId"] = json!(rollout_id);
            detail
        }
    }
}

fn approval_detail(event: &ApprovalEvent) -> Value {
    match event {
        ApprovalEvent::Requested {
            requester,
            reason,
            approver,
            min_approvals,
        } => json!({
            "event": "requested", "requester": requester, "reason": reason,
            "approver": approver, "minApprovals": min_approvals,
        }),
        ApprovalEvent::Decided {
            person,
            decision,
            reason,
            outcome,
        } => {
            json!({
                "event": decision, "person": person, "reason": reason,
                "outcome": approval_outcome(outcome),
            })
        }
        ApprovalEvent::Expired => json!({ "event": "expired" }),
    }
}

async fn deliver(metrics: Arc<Metrics>, hook: Webhook, mut rx: mpsc::Receiver<Value>) {
    while let Some(body) = rx.recv().await {
        let mut delay = Duration::from_secs(1);
        let mut outcome = "failed";
        for _attempt in 0..5 {
            match tokio::time::timeout(Duration::from_secs(10), hook.post(body.to_string())).await {
                Ok(Ok(status)) if status.is_success() => {
                    outcome = "delivered";
                    break;
                }
                Ok(Ok(status)) => tracing::warn!(%status, "webhook refused a notification"),
                Ok(Err(e)) => tracing::warn!(error = %e, "webhook unreachable"),
                Err(_) => tracing::warn!("webhook timed out"),
            }
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
        metrics
            .notifications
            .get_or_create(&Outcome {
                outcome: outcome.into(),
            })
            .inc();
    }
}

/// What a decision on an approval came to, as the audit chain and the
/// notifications write it.
pub(crate) fn approval_outcome(verdict: &Result<Decided, ApprovalRefusal>) -> Value {
    match verdict {
        Ok(Decided::Counted { approvals, needed }) => {
            json!({ "counted": approvals, "needed": needed })
        }
        Ok(Decided::Approved) => json!("approved"),
        Ok(Decided::Rejected) => json!("rejected"),
        Ok(Decided::Cancelled) => json!("cancelled"),
        Err(refusal) => json!({ "refused": refusal.to_string() }),
    }
}
