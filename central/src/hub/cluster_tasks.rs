//! The cluster's background work for the hub: claims of the nodes whose
//! sessions open here (batched, with their open commands loaded from the
//! store afterwards — in that order, see `cluster::presence`), notices from
//! the bus turned into hub inputs, the presence refresh, and the sweep that
//! loads the open commands of the nodes held here (for a notice that was
//! lost on the bus).

use std::sync::Arc;

use nap_core::central::HubInput;
use nap_core::central::RolloutControl;
use nap_core::central::approval::{Decision, Person};
use nap_core::{NodeId, RequestId, RolloutId, SessionId};
use tokio::sync::mpsc;

use super::cluster_link::{Claims, dispatched, submission};
use super::handle::HubHandle;
use crate::cluster::{Cluster, Notice, PRESENCE_TTL};
use crate::effects::{RetryPolicy, retry};
use crate::events::AppEvent;
use crate::store::Storage;

/// Admissions claimed and loaded per batch.
const TAKE_OVER_BATCH: usize = 512;

/// Starts the take-overs, the notice forwarding, the presence refresh and
/// the rollout lease, when this process is one of several; their tasks, to
/// stop at shutdown.
pub fn start(hub: &HubHandle) -> Vec<tokio::task::JoinHandle<()>> {
    let Some(link) = hub.cluster() else {
        return Vec::new();
    };
    let cluster = link.cluster().clone();
    let mut tasks = Vec::new();
    if let Some(rx) = link.take_claims() {
        tasks.push(tokio::spawn(take_overs(hub.clone(), cluster.clone(), rx)));
    }
    let metrics = Arc::clone(&hub.effects().metrics);
    let notices = crate::cluster::listen(cluster.clone(), metrics);
    tasks.push(tokio::spawn(forward_notices(
        hub.clone(),
        cluster.clone(),
        notices,
    )));
    tasks.push(tokio::spawn(refresh_presence(hub.clone(), cluster.clone())));
    tasks.push(tokio::spawn(super::rollout_lease::drive(
        hub.clone(),
        cluster,
        link.rollout_lease,
    )));
    tasks
}

/// Claims nodes whose sessions have started here and loads their open
/// commands from the store. What queued up meanwhile goes together: a fleet
/// reconnecting costs one Redis round trip and one query per batch.
async fn take_overs(hub: HubHandle, cluster: Cluster, mut rx: Claims) {
    let mut batch = Vec::with_capacity(TAKE_OVER_BATCH);
    while rx.recv_many(&mut batch, TAKE_OVER_BATCH).await > 0 {
        let metrics = Arc::clone(&hub.effects().metrics);
        if let Err(e) = cluster.claim(&batch).await {
            metrics.db_error("redis_claim");
            tracing::warn!(error = %e, nodes = batch.len(), "cannot claim nodes in Redis; the next presence refresh will");
        }
        let nodes: Vec<NodeId> = batch.iter().map(|(n, _)| *n).collect();
        let store = hub.effects().store.clone();
        let open = retry(RetryPolicy::UNTIL_DONE, "open_commands", &metrics, || {
            store.open_commands_for(nodes.clone())
        })
        .await
        .unwrap_or_default();
        let commands = open.into_iter().map(|c| submission(c, true)).collect();
        hub.input(HubInput::TakenOver {
            sessions: batch.clone(),
            commands,
        });
        for (node_id, session_id) in batch.drain(..) {
            hub.effects().events.emit(AppEvent::TakenOver {
                node_id,
                session_id,
            });
        }
    }
}

/// Loads the open commands of the nodes these sessions hold, a batch at a
/// time, for the hub to pick out what it never heard of. A failed load is
/// left to the next sweep.
pub(super) fn sweep(hub: HubHandle, sessions: Vec<(NodeId, SessionId)>) {
    tokio::spawn(async move {
        for batch in sessions.chunks(TAKE_OVER_BATCH) {
            let nodes: Vec<NodeId> = batch.iter().map(|(n, _)| *n).collect();
            let open = match hub.effects().store.open_commands_for(nodes).await {
                Ok(open) => open,
                Err(e) => {
                    hub.effects().metrics.db_error("sweep_open_commands");
                    tracing::warn!(error = %e, "cannot sweep open commands; the next sweep will");
                    return;
                }
            };
            if open.is_empty() {
                continue;
            }
            let commands = open.into_iter().map(|c| submission(c, true)).collect();
            hub.input(HubInput::Swept {
                sessions: batch.to_vec(),
                commands,
            });
        }
    });
}

async fn forward_notices(hub: HubHandle, cluster: Cluster, mut notices: mpsc::Receiver<Notice>) {
    while let Some(notice) = notices.recv().await {
        match notice {
            Notice::Claimed { instance, node_id } if instance != cluster.instance() => {
                hub.input(HubInput::ClaimedElsewhere(node_id));
            }
            Notice::Claimed { .. } => {}
            Notice::Commands { commands } => {
                let commands = commands.into_iter().map(dispatched).collect();
                hub.input(HubInput::Submit(commands));
            }
            Notice::Decide {
                from,
                request_id,
                person,
                decision,
            } => {
                tokio::spawn(decide_for(
                    hub.clone(),
                    cluster.clone(),
                    from,
                    request_id,
                    person,
                    decision,
                ));
            }
            Notice::Decided {
                request_id,
                person,
                verdict,
            } => hub.effects().events.emit(AppEvent::ApprovalDecided {
                request_id,
                person,
                verdict,
            }),
            Notice::RolloutStored { rollout_id } => {
                let hub = hub.clone();
                tokio::spawn(async move {
                    if let Err(e) = hub.start_handed(rollout_id).await {
                        hub.effects().metrics.db_error("rollout_handed");
                        tracing::warn!(error = %e, rollout = %rollout_id, "cannot load a rollout handed over; the next tick finds it");
                    }
                });
            }
            Notice::ControlRollout {
                from,
                rollout_id,
                control,
            } => {
                tokio::spawn(control_for(
                    hub.clone(),
                    cluster.clone(),
                    from,
                    rollout_id,
                    control,
                ));
            }
            Notice::RolloutControlled {
                rollout_id,
                control,
                verdict,
            } => hub.effects().events.emit(AppEvent::RolloutControlled {
                rollout_id,
                control,
                verdict,
            }),
        }
    }
}

/// Controls a rollout driven here for the process `from`, whose operator
/// is waiting, and tells it the verdict (this hub has audited it).
async fn control_for(
    hub: HubHandle,
    cluster: Cluster,
    from: String,
    rollout_id: RolloutId,
    control: RolloutControl,
) {
    let Some(verdict) = hub.control_rollout_here(rollout_id, control.clone()).await else {
        tracing::warn!(rollout = %rollout_id, %from, "the hub did not answer a rollout control from another process");
        return;
    };
    let notice = Notice::RolloutControlled {
        rollout_id,
        control,
        verdict,
    };
    if let Err(e) = cluster.tell(&from, &notice).await {
        hub.effects().metrics.db_error("redis_publish");
        tracing::warn!(error = %e, rollout = %rollout_id, %from, "cannot return a rollout control's verdict; it stands (see the audit chain)");
    }
}

/// Decides here for the process `from`, whose operator is waiting, and
/// tells it the verdict (this hub has recorded and audited it).
async fn decide_for(
    hub: HubHandle,
    cluster: Cluster,
    from: String,
    request_id: RequestId,
    person: Person,
    decision: Decision,
) {
    let user = person.user.clone();
    let Some(verdict) = hub.decide_here(request_id, person, decision).await else {
        tracing::warn!(request = %request_id, %from, "the hub did not answer a decision from another process");
        return;
    };
    let notice = Notice::Decided {
        request_id,
        person: user,
        verdict,
    };
    if let Err(e) = cluster.tell(&from, &notice).await {
        hub.effects().metrics.db_error("redis_publish");
        tracing::warn!(error = %e, request = %request_id, %from, "cannot return a verdict; the decision stands (see the audit chain)");
    }
}

/// Refreshes the presence of every node held here, every third of its TTL.
async fn refresh_presence(hub: HubHandle, cluster: Cluster) {
    let mut every = tokio::time::interval(PRESENCE_TTL / 3);
    loop {
        every.tick().await;
        let live: Vec<(NodeId, SessionId)> = hub.read(|h| h.live_sessions().collect());
        if let Err(e) = cluster.refresh(&live).await {
            hub.effects().metrics.db_error("redis_refresh");
            tracing::warn!(error = %e, nodes = live.len(), "cannot refresh presence");
        }
    }
}
