//! The hub's link to the other central processes: the queue of claims of
//! the nodes whose sessions open here, and presence answers. It decides
//! nothing: the hub does, from what this reports (`cluster_tasks` feeds it).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use nap_core::central::{Presence, Submission};
use std::collections::HashSet;

use nap_core::{NodeId, RolloutId, SessionId};
use tokio::sync::mpsc;

use crate::cluster::{Cluster, Dispatch};
use crate::store::CommandRecord;

/// Claims waiting to be made.
pub(super) type Claims = mpsc::Receiver<(NodeId, SessionId)>;

#[derive(Debug)]
pub struct ClusterLink {
    cluster: Cluster,
    claims: mpsc::Sender<(NodeId, SessionId)>,
    pending: Mutex<Option<Claims>>,
    /// v0.3: how long the lease on driving the rollouts lasts.
    pub(super) rollout_lease: Duration,
    /// v0.3: this process holds that lease (its hub drives the rollouts).
    driving: AtomicBool,
    /// v0.3: the rollouts handed to the hub since this process took the
    /// lease: one the hub has forgotten (it ended) is not restored again
    /// while the store's copy of its end is still being written.
    handed: Mutex<HashSet<RolloutId>>,
}

impl ClusterLink {
    /// `capacity`: claims that may wait (one per admission in flight);
    /// `rollout_lease`: how long the lease on driving the rollouts lasts.
    pub fn new(cluster: Cluster, capacity: usize, rollout_lease: Duration) -> Self {
        let (claims, rx) = mpsc::channel(capacity.max(1));
        Self {
            cluster,
            claims,
            pending: Mutex::new(Some(rx)),
            rollout_lease,
            driving: AtomicBool::new(false),
            handed: Mutex::new(HashSet::new()),
        }
    }

    /// Whether this process drives the cluster's rollouts now.
    pub fn driving(&self) -> bool {
        self.driving.load(Ordering::Acquire)
    }

    /// Takes or gives up driving; either way, what was handed is forgotten.
    pub(super) fn set_driving(&self, driving: bool) {
        self.handed().clear();
        self.driving.store(driving, Ordering::Release);
    }

    /// Marks the rollout handed to the hub; false if it was already.
    pub(super) fn hand(&self, rollout_id: RolloutId) -> bool {
        self.handed().insert(rollout_id)
    }

    fn handed(&self) -> std::sync::MutexGuard<'_, HashSet<RolloutId>> {
        self.handed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The claims queue's receiving side, once (for the take-over task).
    pub(super) fn take_claims(&self) -> Option<Claims> {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
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
        timeout: Duration::from_millis(command.timeout_ms),
        known,
        approval: command
            .approval
            .as_ref()
            .map(crate::store::StoredApproval::to_request),
    }
}

/// A command from another process, as the hub takes it.
pub(super) fn dispatched(command: Dispatch) -> Submission {
    Submission {
        node_id: command.node_id,
        request_id: command.request_id,
        message: Some(command.message),
        timeout: Duration::from_millis(command.timeout_ms),
        known: true,
        approval: command
            .approval
            .as_ref()
            .map(crate::store::StoredApproval::to_request),
    }
}
