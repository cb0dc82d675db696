//! v0.3: what the hub's rollouts ask for, performed. A target the engine
//! starts becomes an ordinary command — stored (its rollout's requester,
//! its own request id), then dispatched like any other; a control's verdict
//! is audited and announced to whoever asked.

use std::time::Duration;

use nap_core::central::approval::Decision;
use nap_core::central::rollout::{RolloutState, Strategy, TargetState};
use nap_core::central::{
    CommandState, ControlRefusal, HubInput, NeedsApproval, NewRollout, Restored, RolloutControl,
};
use nap_core::codec::Message as _;
use nap_core::crypto::AwsLc;
use nap_core::target_set::TargetSet;
use nap_core::wire::{CentralMessage, CommandKind};
use nap_core::{NodeId, RequestId, RolloutId};
use serde_json::json;

use super::handle::HubHandle;
use crate::cluster::{Dispatch, Lease, Notice};
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
            state: CommandState::Queued,
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
    if let (
        Ok(_),
        RolloutControl::Decide {
            person,
            decision: Decision::Approve { signature, .. },
        },
    ) = (&verdict, &control)
        && let Err(e) = effects
            .store
            .add_rollout_approver(rollout_id, &person.user, signature.as_ref())
            .await
    {
        // The hub holds it; only a restart before the rollout starts loses it.
        effects.metrics.db_error("add_rollout_approver");
        tracing::error!(error = %e, rollout = %rollout_id, "cannot store a rollout approval");
    }
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
    /// Whether this process drives the rollouts: always when it is alone;
    /// with several, while it holds the lease.
    pub fn drives_rollouts(&self) -> bool {
        self.cluster().is_none_or(|link| link.driving())
    }

    /// Pauses, resumes or aborts a rollout; the verdict, or `None` if no
    /// hub answered in time. With several processes, a rollout another
    /// process drives is controlled there, and its verdict comes back.
    pub async fn control_rollout(
        &self,
        rollout_id: RolloutId,
        control: RolloutControl,
    ) -> Option<Result<RolloutState, ControlRefusal>> {
        let Some(link) = self.cluster() else {
            return self.control_rollout_here(rollout_id, control).await;
        };
        if link.driving() {
            return self.control_rollout_here(rollout_id, control).await;
        }
        let cluster = link.cluster();
        let driver = match cluster.rollout_driver().await {
            Ok(Some(driver)) if driver != cluster.instance() => driver,
            Ok(_) => return self.control_rollout_here(rollout_id, control).await,
            Err(e) => {
                self.effects().metrics.db_error("redis_rollout_driver");
                tracing::warn!(error = %e, rollout = %rollout_id, "cannot find the rollouts' driver");
                return None;
            }
        };
        // Listening before asking: the verdict cannot pass unseen.
        let mut events = self.effects().events.subscribe();
        let notice = Notice::ControlRollout {
            from: cluster.instance().to_owned(),
            rollout_id,
            control: control.clone(),
        };
        match cluster.tell(&driver, &notice).await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                self.effects().metrics.db_error("redis_publish");
                tracing::warn!(error = %e, rollout = %rollout_id, "cannot reach the rollouts' driver");
                return None;
            }
        }
        wait_for_verdict(&mut events, rollout_id, &control).await
    }

    /// [`Self::control_rollout`] by this process's hub alone.
    pub(super) async fn control_rollout_here(
        &self,
        rollout_id: RolloutId,
        control: RolloutControl,
    ) -> Option<Result<RolloutState, ControlRefusal>> {
        // Listening before asking: the verdict cannot pass unseen.
        let mut events = self.effects().events.subscribe();
        self.input(HubInput::ControlRollout {
            rollout_id,
            control: control.clone(),
        });
        wait_for_verdict(&mut events, rollout_id, &control).await
    }

    /// Hands a rollout just stored to the process that drives the
    /// rollouts: this one's hub (after asking presence where its targets
    /// are, with several processes), or the driver elsewhere, told over
    /// the bus. With no driver now, the next one to take the lease finds it
    /// in the store.
    pub async fn drive_new_rollout(&self, new: NewRollout) {
        let Some(link) = self.cluster() else {
            self.input(HubInput::StartRollout(Box::new(new)));
            return;
        };
        if link.driving() {
            link.hand(new.rollout_id);
            self.start_here(new).await;
            return;
        }
        let cluster = link.cluster();
        let rollout_id = new.rollout_id;
        let mut driver = cluster.rollout_driver().await;
        if let Ok(None) = driver {
            // Nobody drives: this process takes the lease now rather than
            // leave the rollout to wait for the next tick's restore.
            if let Ok(Lease::Taken | Lease::Kept) = cluster.rollout_lease(link.rollout_lease).await
            {
                super::rollout_lease::take_over(self, Some(rollout_id)).await;
                self.start_here(new).await;
                return;
            }
            // Another took it meanwhile: that one is told.
            driver = cluster.rollout_driver().await;
        }
        let told = match driver {
            Ok(Some(driver)) => cluster
                .tell(&driver, &Notice::RolloutStored { rollout_id })
                .await
                .map(|listening| listening.then_some(driver)),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        match told {
            Ok(Some(driver)) => {
                tracing::debug!(rollout = %rollout_id, %driver, "rollout handed to its driver")
            }
            Ok(None) => {
                tracing::warn!(rollout = %rollout_id, "no process drives the rollouts now; the next to take the lease starts it")
            }
            Err(e) => {
                self.effects().metrics.db_error("redis_publish");
                tracing::warn!(error = %e, rollout = %rollout_id, "cannot tell the rollouts' driver; it finds the rollout in the store");
            }
        }
    }

    /// Hands the hub every rollout the store has not seen end (before the
    /// open commands, so that what its started targets become is heard);
    /// each waits for its nodes to reconnect before it starts anything new.
    /// With several processes nothing is restored here: the process that
    /// takes the lease on driving them does it.
    pub async fn restore_rollouts(&self) -> crate::store::StoreResult<usize> {
        if self.cluster().is_some() {
            return Ok(0);
        }
        self.load_open_rollouts(false).await
    }

    /// Hands the hub the rollouts the store has not seen end (with several
    /// processes, those not handed to it already since this process took
    /// the lease); how many. `fresh`: one never started (scheduled, every target pending)
    /// starts as new, without the hold for reconnecting nodes — it was
    /// stored by another process just now, not left by a crash.
    pub(super) async fn load_open_rollouts(&self, fresh: bool) -> crate::store::StoreResult<usize> {
        let store = &self.effects().store;
        let mut loaded = 0;
        for id in store.open_rollout_ids().await? {
            if self.cluster().is_some_and(|link| !link.hand(id)) {
                continue;
            }
            let Some((rollout, targets)) = store.get_rollout(id).await? else {
                continue;
            };
            self.start_stored(&rollout, targets, fresh).await?;
            loaded += 1;
        }
        Ok(loaded)
    }

    /// With several processes: a rollout another process has just stored,
    /// started here if this process drives the rollouts and has not yet.
    pub(super) async fn start_handed(
        &self,
        rollout_id: RolloutId,
    ) -> crate::store::StoreResult<()> {
        let Some(link) = self.cluster() else {
            return Ok(());
        };
        if !link.driving() || !link.hand(rollout_id) {
            return Ok(());
        }
        if let Some((rollout, targets)) = self.effects().store.get_rollout(rollout_id).await? {
            self.start_stored(&rollout, targets, true).await?;
        }
        Ok(())
    }

    /// Starts a stored rollout in this hub.
    pub(super) async fn start_stored(
        &self,
        rollout: &RolloutRecord,
        targets: Vec<RolloutTargetRecord>,
        fresh: bool,
    ) -> crate::store::StoreResult<()> {
        let never_started = rollout.state == RolloutState::Scheduled
            && targets.iter().all(|t| t.state == TargetState::Pending);
        let Some(mut new) = restored(rollout, targets) else {
            tracing::error!(rollout = %rollout.id, "a stored rollout no longer decodes; left as it was");
            return Ok(());
        };
        if fresh && never_started {
            new.restored = None;
        }
        // The targets' commands as stored: newer than the rollout's own
        // rows, which may lag (written by a process that then died); the
        // hub takes them over the rows, and brings the rows up to date.
        if let Some(restored) = new.restored.as_mut() {
            let open: Vec<RequestId> = new
                .targets
                .iter()
                .zip(&restored.targets)
                .filter(|(_, state)| !state.is_terminal())
                .map(|((_, request_id), _)| *request_id)
                .collect();
            let stored = self.effects().store.command_states(open).await?;
            restored.commands = Some(stored.into_iter().collect());
        }
        self.start_here(new).await;
        Ok(())
    }

    /// Starts a rollout in this process's hub: with several processes,
    /// after telling it which of its targets' nodes other processes hold
    /// (so that none is taken for offline at its first step).
    async fn start_here(&self, new: NewRollout) {
        if let Some(link) = self.cluster() {
            let nodes: Vec<NodeId> = new.targets.iter().map(|(n, _)| *n).collect();
            super::rollout_lease::tell_presence(self, link.cluster(), &nodes).await;
        }
        self.input(HubInput::StartRollout(Box::new(new)));
    }
}

async fn wait_for_verdict(
    events: &mut tokio::sync::broadcast::Receiver<AppEvent>,
    rollout_id: RolloutId,
    control: &RolloutControl,
) -> Option<Result<RolloutState, ControlRefusal>> {
    crate::events::first(events, VERDICT_WAIT, |event| match event {
        AppEvent::RolloutControlled {
            rollout_id: r,
            control: c,
            verdict,
        } if r == rollout_id && c == *control => Some(verdict),
        _ => None,
    })
    .await
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
    let plan: Vec<(NodeId, RequestId)> =
        targets.iter().map(|t| (t.node_id, t.request_id)).collect();
    let approval = rollout.approval.as_ref().map(|stored| {
        Box::new(NeedsApproval {
            request: stored.to_request(),
            targets: TargetSet::new(&AwsLc, &plan),
            valid_until: strategy.deadline_at(rollout.start_at),
        })
    });
    Some(NewRollout {
        rollout_id: rollout.id,
        requester: rollout.requester.clone(),
        strategy,
        targets: plan,
        approval,
        message,
        timeout,
        start_at: rollout.start_at,
        restored: Some(Restored {
            state: rollout.state,
            targets: targets.iter().map(|t| t.state).collect(),
            commands: None,
        }),
    })
}
