//! v0.3: what the hub's rollouts ask for, performed. A target the engine
//! starts becomes an ordinary command — stored (its rollout's requester,
//! its own request id), then dispatched like any other; a control's verdict
//! is audited and announced to whoever asked.

use std::time::Duration;

use nap_core::central::rollout::{RolloutState, Strategy, TargetState};
use nap_core::central::{ControlRefusal, HubInput, NewRollout, Restored, RolloutControl};
use nap_core::codec::Message as _;
use nap_core::wire::{CentralMessage, CommandKind};
use nap_core::{NodeId, RequestId, RolloutId};
use serde_json::json;

use super::handle::HubHandle;
use crate::cluster::Dispatch;
use crate::effects::{RetryPolicy, retry};
use crate::events::AppEvent;
use crate::store::{CommandRecord, RolloutRecord, RolloutTargetRecord, Storage as _, StoreError};

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

impl TargetStart {
    fn record(&self, now: nap_core::WallTime) -> CommandRecord {
        CommandRecord {
            request_id: self.request_id,
            node_id: self.node_id,
            kind: self.message.message_type().to_owned(),
            message: serde_json::to_value(&self.message).unwrap_or_default(),
            state: nap_core::central::CommandState::Queued,
            requester: self.requester.clone(),
            approver: None,
            timeout_ms: u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
            created_at: now,
            updated_at: now,
            result: None,
            approval: None,
        }
    }
}

/// Stores the targets' commands, then dispatches them: what the hub
/// started at one instant goes in one transaction and one hand-over (a
/// rollout at 100 % concurrency starts 10,000 at once). Not chunked:
/// storing the next chunk while the first is sent competes with the
/// sending for the CPU and makes the last delivery later, not sooner.
pub(super) async fn start_targets(hub: HubHandle, starts: Vec<TargetStart>) {
    store_and_dispatch(&hub, starts).await;
}

async fn store_and_dispatch(hub: &HubHandle, starts: Vec<TargetStart>) {
    let effects = hub.effects();
    let now = effects.clock.wall();
    let records: Vec<CommandRecord> = starts.iter().map(|s| s.record(now)).collect();
    // Stored before they are sent, as every command is. A request id
    // already stored (a restart that started it again) is the same
    // command: a batch is all or nothing, so on a conflict each is stored
    // alone and the ones already there are kept.
    let stored = retry(
        RetryPolicy::UNTIL_DONE,
        "rollout_commands",
        &effects.metrics,
        || async {
            match effects.store.insert_commands(records.clone()).await {
                Err(StoreError::Conflict) => {
                    for record in &records {
                        match effects.store.insert_command(record.clone()).await {
                            Ok(()) | Err(StoreError::Conflict) => {}
                            Err(e) => return Err(e),
                        }
                    }
                    Ok(())
                }
                other => other,
            }
        },
    )
    .await;
    if stored.is_none() {
        return;
    }
    let dispatches = starts
        .into_iter()
        .zip(records)
        .map(|(start, record)| Dispatch {
            node_id: start.node_id,
            request_id: start.request_id,
            message: start.message,
            timeout_ms: record.timeout_ms,
            approval: None,
        })
        .collect();
    hub.dispatch(dispatches).await;
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
        crate::events::first(&mut events, VERDICT_WAIT, |event| match event {
            AppEvent::RolloutControlled {
                rollout_id: r,
                control: c,
                verdict,
            } if r == rollout_id && c == control => Some(verdict),
            _ => None,
        })
        .await
    }
}

impl HubHandle {
    /// Hands the hub every rollout the store has not seen end (before the
    /// open commands, so that what its started targets become is heard);
    /// each waits for its nodes to reconnect before it starts anything new.
    /// With a cluster nothing is restored here: no process drives another's
    /// rollouts yet.
    pub async fn restore_rollouts(&self) -> crate::store::StoreResult<usize> {
        if self.cluster().is_some() {
            return Ok(0);
        }
        let store = &self.effects().store;
        let open = store.open_rollouts().await?;
        let count = open.len();
        for (rollout, targets) in open {
            let Some(new) = restored(&rollout, targets) else {
                tracing::error!(rollout = %rollout.id, "a stored rollout no longer decodes; left as it was");
                continue;
            };
            let mut new = new;
            // A target the store says started but whose command was never
            // stored (a crash in between) never started.
            if let Some(restored) = new.restored.as_mut() {
                for ((_, request_id), state) in new.targets.iter().zip(restored.targets.iter_mut())
                {
                    if let TargetState::Command(s) = *state
                        && !s.is_terminal()
                    {
                        *state = match store.get_command(*request_id).await? {
                            Some(command) => TargetState::Command(command.state),
                            None => TargetState::Pending,
                        };
                    }
                }
            }
            self.input(HubInput::StartRollout(Box::new(new)));
        }
        Ok(count)
    }
}

/// The hub's rollout for a stored one.
fn restored(rollout: &RolloutRecord, targets: Vec<RolloutTargetRecord>) -> Option<NewRollout> {
    let strategy: Strategy = serde_json::from_value(rollout.strategy.clone()).ok()?;
    let message: CentralMessage = serde_json::from_value(rollout.message.clone()).ok()?;
    let timeout = match &message {
        CentralMessage::Execute(e) => e.timeout.map(Duration::from_millis),
        _ => None,
    }
    .or_else(|| CommandKind::from_name(message.message_type()).map(CommandKind::default_timeout))?;
    Some(NewRollout {
        rollout_id: rollout.id,
        requester: rollout.requester.clone(),
        strategy,
        targets: targets.iter().map(|t| (t.node_id, t.request_id)).collect(),
        message,
        timeout,
        start_at: rollout.start_at,
        restored: Some(Restored {
            state: rollout.state,
            targets: targets.iter().map(|t| t.state).collect(),
        }),
    })
}
