//! What central reports as it works, for tests and the simulator to wait on
//! instead of sleeping. Status and command events are sent once the change
//! is stored.

use nap_core::central::CommandState;
use nap_core::wire::NodeStatus;
use nap_core::{NodeId, RequestId, SessionId, WallTime};
use tokio::sync::broadcast;

/// Something that happened.
#[derive(Debug, Clone, PartialEq)]
pub enum AppEvent {
    SessionOpened {
        node_id: NodeId,
        session_id: SessionId,
    },
    SessionClosed {
        node_id: NodeId,
        session_id: SessionId,
    },
    Status {
        node_id: NodeId,
        status: NodeStatus,
    },
    Command {
        request_id: RequestId,
        state: CommandState,
    },
    /// v0.3: a rollout's state, stored.
    Rollout {
        rollout_id: nap_core::RolloutId,
        state: nap_core::central::rollout::RolloutState,
    },
    /// v0.3: a rollout target's state, stored.
    RolloutTarget {
        rollout_id: nap_core::RolloutId,
        node_id: NodeId,
        state: nap_core::central::rollout::TargetState,
    },
    /// v0.3: the hub's verdict on a rollout control.
    RolloutControlled {
        rollout_id: nap_core::RolloutId,
        control: nap_core::central::RolloutControl,
        verdict:
            Result<nap_core::central::rollout::RolloutState, nap_core::central::ControlRefusal>,
    },
    /// v0.3, with a cluster: this process has taken (or given up) the
    /// lease on driving the rollouts.
    RolloutDriver {
        driving: bool,
    },
    /// With a cluster: this process has claimed the node and loaded its
    /// open commands.
    TakenOver {
        node_id: NodeId,
        session_id: SessionId,
    },
    TelemetryStored {
        node_id: NodeId,
        timestamp: WallTime,
    },
    ResultStored {
        request_id: RequestId,
    },
    AuthFailed {
        reason: &'static str,
    },
    /// The agent listener stopped (at capacity) or started again.
    Listening {
        accepting: bool,
    },
    /// A write failed and will be retried (the database is down or refusing).
    StorageError {
        operation: &'static str,
    },
    /// v0.2: a decision on an approval request was taken (or refused).
    ApprovalDecided {
        request_id: RequestId,
        person: String,
        verdict: Result<
            nap_core::central::approval::Decided,
            nap_core::central::approval::ApprovalRefusal,
        >,
    },
    /// The audit chain's head up to `seq` is checkpointed in the anchor.
    AuditAnchored {
        seq: u64,
    },
}

/// Where events go; cheap to clone.
#[derive(Debug, Clone)]
pub struct Events(broadcast::Sender<AppEvent>);

impl Events {
    pub fn new() -> Self {
        Self(broadcast::channel(4096).0)
    }

    pub fn emit(&self, event: AppEvent) {
        let _ = self.0.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<AppEvent> {
        self.0.subscribe()
    }
}

/// The first event on `events` that `pick` maps to a value, within
/// `within`; `None` when the time passes or the stream ends first. A
/// receiver that lagged goes on with what it has not missed.
pub async fn first<T>(
    events: &mut broadcast::Receiver<AppEvent>,
    within: std::time::Duration,
    mut pick: impl FnMut(AppEvent) -> Option<T>,
) -> Option<T> {
    tokio::time::timeout(within, async {
        loop {
            match events.recv().await {
                Ok(event) => {
                    if let Some(value) = pick(event) {
                        return Some(value);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .await
    .ok()
    .flatten()
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}
