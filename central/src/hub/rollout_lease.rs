//! v0.3 with several central processes: one of them drives the rollouts.
//! It holds a lease in Redis, renewed every fifth of its length; when it
//! stops renewing (it died, or lost Redis), another takes the lease and
//! restores every rollout not ended from the store, as after a restart.
//!
//! With each renewal the driver reads what its hub's rollouts need from the
//! rest of the cluster — whether the nodes of targets not yet started are
//! held by another process — and starts the rollouts other processes stored
//! whose notice it missed; more often ([`WATCH_EVERY`]) it reads the stored
//! states of started targets' commands that another process delivers, so
//! that a slot freed elsewhere is used again soon. It decides nothing: the
//! hub's engines do.

use std::time::Duration;

use nap_core::NodeId;
use nap_core::central::HubInput;
use tokio::time::Instant;

use super::handle::HubHandle;
use crate::cluster::{Cluster, Holder, Lease};
use crate::events::AppEvent;
use crate::store::Storage as _;

/// How often the driver reads the states of its targets' commands that
/// other processes deliver (at most; the lease's renewal may be sooner).
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// Takes, keeps or gives up the lease, and does the driver's reading.
pub(super) async fn drive(hub: HubHandle, cluster: Cluster, lease: Duration) {
    let renew_every = lease / 5;
    let mut every = tokio::time::interval(WATCH_EVERY.min(renew_every));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut kept_at: Option<Instant> = None;
    let mut renewed_at: Option<Instant> = None;
    loop {
        every.tick().await;
        if renewed_at.is_some_and(|at| at.elapsed() < renew_every) {
            if hub.cluster().is_some_and(|l| l.driving()) {
                read_commands(&hub).await;
            }
            continue;
        }
        renewed_at = Some(Instant::now());
        let driving = hub.cluster().is_some_and(|l| l.driving());
        match cluster.rollout_lease(lease).await {
            Ok(Lease::Taken | Lease::Kept) => {
                kept_at = Some(Instant::now());
                if !driving {
                    take_over(&hub, None).await;
                }
            }
            Ok(Lease::HeldElsewhere) => {
                kept_at = None;
                if driving {
                    give_up(&hub, "another process holds the lease");
                }
            }
            Err(e) => {
                hub.effects().metrics.db_error("redis_rollout_lease");
                tracing::warn!(error = %e, "cannot renew the rollout lease");
                // Stopped before it can have passed to another process.
                if driving && kept_at.is_none_or(|at| at.elapsed() >= lease * 3 / 5) {
                    give_up(&hub, "the lease could not be renewed");
                    kept_at = None;
                }
            }
        }
        if hub.cluster().is_some_and(|l| l.driving()) {
            read_for_rollouts(&hub, &cluster).await;
        }
    }
}

/// Restores every rollout not ended, as after a restart (their nodes may be
/// reconnecting from the process that died) — but `fresh`, a rollout this
/// process has just stored, which its caller starts.
pub(super) async fn take_over(hub: &HubHandle, fresh: Option<nap_core::RolloutId>) {
    tracing::info!("this process drives the cluster's rollouts now");
    if let Some(link) = hub.cluster() {
        link.set_driving(true);
        if let Some(id) = fresh {
            link.hand(id);
        }
    }
    hub.effects()
        .events
        .emit(AppEvent::RolloutDriver { driving: true });
    match hub.load_open_rollouts(false).await {
        Ok(0) => {}
        Ok(count) => tracing::info!(rollouts = count, "rollouts taken over from the store"),
        Err(e) => {
            hub.effects().metrics.db_error("rollouts_take_over");
            tracing::error!(error = %e, "cannot load the open rollouts; the next tick tries again");
        }
    }
}

fn give_up(hub: &HubHandle, why: &str) {
    tracing::warn!(why, "this process no longer drives the cluster's rollouts");
    if let Some(link) = hub.cluster() {
        link.set_driving(false);
    }
    hub.input(HubInput::DropRollouts);
    hub.effects()
        .events
        .emit(AppEvent::RolloutDriver { driving: false });
}

/// Feeds the hub what its rollouts need from the other processes, and
/// starts the stored rollouts it does not drive yet.
async fn read_for_rollouts(hub: &HubHandle, cluster: &Cluster) {
    if let Err(e) = hub.load_open_rollouts(true).await {
        hub.effects().metrics.db_error("open_rollouts");
        tracing::warn!(error = %e, "cannot read the open rollouts; the next tick tries again");
    }
    let watch = hub.read(nap_core::central::CentralHub::rollout_watch);
    if !watch.nodes.is_empty() {
        tell_presence(hub, cluster, &watch.nodes).await;
    }
    read_commands(hub).await;
}

/// Feeds the hub the stored states of its started targets' commands that
/// another process delivers.
async fn read_commands(hub: &HubHandle) {
    let commands = hub.read(|h| h.rollout_watch().commands);
    if commands.is_empty() {
        return;
    }
    match hub.effects().store.command_states(commands).await {
        Ok(states) => hub.input(HubInput::RolloutCommands(states)),
        Err(e) => {
            hub.effects().metrics.db_error("rollout_command_states");
            tracing::warn!(error = %e, "cannot read the rollout targets' command states");
        }
    }
}

/// Tells the hub which of these nodes another process holds.
pub(super) async fn tell_presence(hub: &HubHandle, cluster: &Cluster, nodes: &[NodeId]) {
    match cluster.locate(nodes).await {
        Ok(holders) => {
            let presence = nodes
                .iter()
                .zip(holders)
                .map(|(node, holder)| (*node, matches!(holder, Holder::Elsewhere(_))))
                .collect();
            hub.input(HubInput::RolloutPresence(presence));
        }
        Err(e) => {
            hub.effects().metrics.db_error("redis_locate");
            tracing::warn!(error = %e, nodes = nodes.len(), "cannot locate rollout targets; the next tick tries again");
        }
    }
}

impl HubHandle {
    /// At shutdown: gives up the lease on driving the rollouts, if held.
    pub async fn release_rollouts(&self) {
        let Some(link) = self.cluster() else {
            return;
        };
        if !link.driving() {
            return;
        }
        link.set_driving(false);
        self.input(HubInput::DropRollouts);
        if let Err(e) = link.cluster().release_rollout_lease().await {
            tracing::warn!(error = %e, "cannot give up the rollout lease; it runs out by itself");
        }
    }
}
