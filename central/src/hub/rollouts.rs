//! v0.3: what the hub's rollouts ask for, performed. A target the engine
//! starts becomes an ordinary command — stored (its rollout's requester,
//! its own request id), then dispatched like any other; a control's verdict
//! is audited and announced to whoever asked.

use std::time::Duration;

use nap_core::central::rollout::RolloutState;
use nap_core::central::{ControlRefusal, HubInput, RolloutControl};
use nap_core::codec::Message as _;
use nap_core::wire::CentralMessage;
use nap_core::{NodeId, RequestId, RolloutId};
use serde_json::json;

use super::handle::HubHandle;
use crate::cluster::Dispatch;
use crate::effects::{RetryPolicy, retry};
use crate::events::AppEvent;
use crate::store::{CommandRecord, Storage as _, StoreError};

/// How long a control waits for the hub's verdict.
const VERDICT_WAIT: Duration = Duration::from_secs(10);

/// A target's command, to store and dispatch.
pub(super) struct TargetStart {
    pub node_id: NodeId,
    pub request_id: RequestId,
    pub requester: String,
    pub message: CentralMessage,
    pub timeout: Duration,
}

pub(super) async fn start_target(hub: HubHandle, start: TargetStart) {
    let TargetStart {
        node_id,
        request_id,
        requester,
        message,
        timeout,
    } = start;
    let effects = hub.effects().clone();
    let now = effects.clock.wall();
    let record = CommandRecord {
        request_id,
        node_id,
        kind: message.message_type().to_owned(),
        message: serde_json::to_value(&message).unwrap_or_default(),
        state: nap_core::central::CommandState::Queued,
        requester,
        approver: None,
        timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        created_at: now,
        updated_at: now,
        result: None,
        approval: None,
    };
    // Stored before it is sent, as every command is; a request id already
    // stored (a restart that started it again) is the same command.
    let stored = retry(
        RetryPolicy::UNTIL_DONE,
        "rollout_command",
        &effects.metrics,
        || async {
            match effects.store.insert_command(record.clone()).await {
                Ok(()) | Err(StoreError::Conflict) => Ok(()),
                Err(e) => Err(e),
            }
        },
    )
    .await;
    if stored.is_none() {
        return;
    }
    hub.dispatch(vec![Dispatch {
        node_id,
        request_id,
        message,
        timeout_ms: record.timeout_ms,
        approval: None,
    }])
    .await;
}

/// Audits a control's verdict and announces it.
pub(super) async fn record_control(
    hub: HubHandle,
    rollout_id: RolloutId,
    control: RolloutControl,
    verdict: Result<RolloutState, ControlRefusal>,
) {
    let effects = hub.effects();
    let detail = match &verdict {
        Ok(state) => json!({ "control": control, "state": state }),
        Err(refusal) => json!({ "control": control, "refused": refusal.to_string() }),
    };
    if let Err(e) = effects
        .store
        .append_audit(
            "central",
            "rollout.control",
            &rollout_id.to_string(),
            detail,
            effects.clock.wall(),
        )
        .await
    {
        effects.metrics.db_error("audit_rollout");
        tracing::error!(error = %e, rollout = %rollout_id, "cannot audit a rollout control");
    }
    effects.events.emit(AppEvent::RolloutControlled {
        rollout_id,
        control,
        verdict,
    });
}

impl HubHandle {
    /// Pauses, resumes or aborts a rollout driven by this process; the
    /// verdict, or `None` if the hub did not answer in time.
    pub async fn control_rollout(
        &self,
        rollout_id: RolloutId,
        control: RolloutControl,
    ) -> Option<Result<RolloutState, ControlRefusal>> {
        // Listening before asking: the verdict cannot pass unseen.
        let mut events = self.effects().events.subscribe();
        self.input(HubInput::ControlRollout {
            rollout_id,
            control,
        });
        tokio::time::timeout(VERDICT_WAIT, async {
            loop {
                match events.recv().await {
                    Ok(AppEvent::RolloutControlled {
                        rollout_id: r,
                        control: c,
                        verdict,
                    }) if r == rollout_id && c == control => return Some(verdict),
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .await
        .ok()
        .flatten()
    }
}
