//! The hub's link to the other central processes: claims of the nodes whose
//! sessions open here (batched, with their open commands loaded from the
//! store afterwards — in that order, see `cluster::presence`), notices from
//! the bus turned into hub inputs, presence answers, and the presence
//! refresh. It decides nothing: the hub does, from what this reports.

use std::sync::{Arc, Mutex, PoisonError};

use nap_core::central::{HubInput, Presence, Submission};
use nap_core::{NodeId, SessionId};
use tokio::sync::mpsc;

use super::handle::HubHandle;
use crate::cluster::{Cluster, Dispatch, Notice, PRESENCE_TTL};
use crate::effects::{RetryPolicy, retry};
use crate::events::AppEvent;
use crate::store::{CommandRecord, Storage};

/// Admissions claimed and loaded per batch.
const TAKE_OVER_BATCH: usize = 512;

type Claims = mpsc::Receiver<(NodeId, SessionId)>;

#[derive(Debug)]
pub struct ClusterLink {
    cluster: Cluster,
    claims: mpsc::Sender<(NodeId, SessionId)>,
    pending: Mutex<Option<Claims>>,
}

impl ClusterLink {
    /// `capacity`: claims that may wait (one per admission in flight).
    pub fn new(cluster: Cluster, capacity: usize) -> Self {
        let (claims, rx) = mpsc::channel(capacity.max(1));
        Self {
            cluster,
            claims,
            pending: Mutex::new(Some(rx)),
        }
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Starts the take-overs, the notice forwarding and the presence refresh.
    pub(super) fn start(&self, hub: &HubHandle) {
        let rx = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(rx) = rx {
            tokio::spawn(take_overs(hub.clone(), self.cluster.clone(), rx));
        }
        let metrics = Arc::clone(&hub.effects().metrics);
        let notices = crate::cluster::listen(self.cluster.clone(), metrics);
        tokio::spawn(forward_notices(hub.clone(), self.cluster.clone(), notices));
        tokio::spawn(refresh_presence(hub.clone(), self.cluster.clone()));
    }

    /// Queues a claim of the node for this session.
    pub(super) fn claim(&self, node_id: NodeId, session_id: SessionId) {
        if self.claims.try_send((node_id, session_id)).is_err() {
            // Bounded by max_connections: full means far more admissions in
            // flight than connections allowed. The presence refresh claims
            // the node; its commands come when it next connects.
            tracing::error!(node = %node_id, "take-over queue is full");
        }
    }

    /// Who holds the node, after clearing `vacated`'s entry if it is still
    /// that session's; `None` when Redis cannot say.
    pub(super) async fn presence(
        &self,
        node_id: NodeId,
        vacated: Option<SessionId>,
    ) -> Option<Presence> {
        let answer = match vacated {
            Some(session_id) => self.cluster.vacate(node_id, session_id).await,
            None => self.cluster.locate(&[node_id]).await.map(|holders| {
                holders
                    .into_iter()
                    .next()
                    .unwrap_or(crate::cluster::Holder::Nobody)
            }),
        };
        match answer {
            Ok(holder) => Some(holder.presence()),
            Err(e) => {
                tracing::warn!(error = %e, node = %node_id, "cannot ask presence");
                None
            }
        }
    }
}

/// A stored command as the hub takes it back (`None` if it no longer decodes).
pub(super) fn submission(command: CommandRecord, known: bool) -> Submission {
    let message = serde_json::from_value(command.message)
        .inspect_err(|e| tracing::error!(request = %command.request_id, error = %e, "a stored command does not decode"))
        .ok();
    Submission {
        node_id: command.node_id,
        request_id: command.request_id,
        message,
        timeout: std::time::Duration::from_millis(command.timeout_ms),
        known,
    }
}

/// A command from another process, as the hub takes it.
pub(super) fn dispatched(command: Dispatch) -> Submission {
    Submission {
        node_id: command.node_id,
        request_id: command.request_id,
        message: Some(command.message),
        timeout: std::time::Duration::from_millis(command.timeout_ms),
        known: true,
    }
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
        }
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
