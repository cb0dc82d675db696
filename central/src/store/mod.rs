//! Central's storage: one trait, two backends (embedded SQLite by default,
//! PostgreSQL/TimescaleDB for fleets) that pass the same test suite.

pub mod anchor;
mod any;
mod audit;
mod net_changes;
pub mod postgres;
pub mod sqlite;

use std::future::Future;
use std::time::Duration;

use nap_core::central::rollout::{RolloutState, TargetState};
use nap_core::central::{CommandState, ResultRecord};
use nap_core::wire::{
    Alert, CentralMessage, CommandResult, Health, NodeStatus, SignedApproval, Telemetry,
};
use nap_core::{NodeId, RequestId, RolloutId, TokenId, WallTime};
use serde::{Deserialize, Serialize};

pub use any::AnyStore;
pub use audit::{AuditEntry, BatchRecord, chain_hash, first_broken};
pub use net_changes::NetChanges;

/// A storage failure. Callers retry what they must not lose.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(String),
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    Conflict,
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A registered node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    pub id: NodeId,
    pub name: String,
    pub public_key_pem: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub created_at: WallTime,
    pub revoked: bool,
    pub status: Option<NodeStatus>,
    pub last_seen: Option<WallTime>,
    pub agent_version: Option<String>,
}

/// One telemetry point as the API returns it: raw, or a bucket's averages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TelemetryPoint {
    pub timestamp: WallTime,
    pub cpu: f64,
    pub memory: f64,
    pub disk: f64,
    /// Samples behind this point (1 for raw samples).
    pub samples: u64,
    /// The full sample, for raw points.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

/// A command and where it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandRecord {
    pub request_id: RequestId,
    pub node_id: NodeId,
    pub kind: String,
    pub message: serde_json::Value,
    pub state: CommandState,
    pub requester: String,
    pub approver: Option<String>,
    pub timeout_ms: u64,
    pub created_at: WallTime,
    pub updated_at: WallTime,
    pub result: Option<CommandResult>,
    /// v0.2: its approval request, when it needs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<StoredApproval>,
}

/// v0.2: an approval request as the store keeps it (spec §8.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredApproval {
    pub requester: String,
    /// The seed's `approver`: a user, `group:NAME`, or none.
    pub approver: Option<String>,
    pub min_approvals: u8,
    pub reason: String,
    /// Hex SHA-256 of the command's canonical encoding.
    pub digest: String,
    pub expires_at: WallTime,
    #[serde(default)]
    pub approved_by: Vec<String>,
    /// The approvers' signatures, for nodes that verify them (§8.2).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<SignedApproval>,
}

impl StoredApproval {
    /// The request as the hub takes it.
    pub fn to_request(&self) -> nap_core::central::approval::ApprovalRequest {
        nap_core::central::approval::ApprovalRequest {
            requester: self.requester.clone(),
            approvers: nap_core::central::approval::Approvers::parse(self.approver.as_deref()),
            min_approvals: self.min_approvals,
            reason: self.reason.clone(),
            digest: self.digest.clone(),
            expires_at: self.expires_at,
            approved_by: self.approved_by.clone(),
            signatures: self.signatures.clone(),
        }
    }
}

/// One of the hub's decisions, as the store records it.
#[derive(Debug, Clone, PartialEq)]
pub enum StateChange {
    /// A node's status changed (history row and current status).
    Status {
        node_id: NodeId,
        status: NodeStatus,
        reason: Option<String>,
        at: WallTime,
    },
    /// A command changed state; a terminal state is final.
    Command {
        request_id: RequestId,
        state: CommandState,
        at: WallTime,
    },
    /// v0.3: a rollout changed state.
    Rollout {
        rollout_id: RolloutId,
        state: RolloutState,
        at: WallTime,
    },
    /// v0.3: a rollout target changed state.
    RolloutTarget {
        rollout_id: RolloutId,
        node_id: NodeId,
        state: TargetState,
        at: WallTime,
    },
}

/// v0.3: a rollout as stored (spec §8.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutRecord {
    pub id: RolloutId,
    pub requester: String,
    /// The command every target gets (its `requestId` is each target's).
    pub message: serde_json::Value,
    /// The strategy as requested.
    pub strategy: serde_json::Value,
    /// The absolute numbers it runs by.
    pub limits: serde_json::Value,
    pub selector: Option<String>,
    pub state: RolloutState,
    /// When it starts (its deadline counts from here).
    pub start_at: WallTime,
    pub created_at: WallTime,
    pub updated_at: WallTime,
    /// v0.2: its approval request, when it needs one (spec §8.4).
    pub approval: Option<StoredApproval>,
}

/// v0.3: one target of a rollout, in its order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutTargetRecord {
    pub position: u32,
    pub node_id: NodeId,
    pub request_id: RequestId,
    pub state: TargetState,
}

/// An API token's identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub name: String,
    pub role: String,
    /// The person the token belongs to; `None`: the token's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

impl TokenRecord {
    /// The person behind the token.
    pub fn user(&self) -> &str {
        self.user.as_deref().unwrap_or(&self.name)
    }
}

/// A node token id to spend: kept until `keep_until` (the token's expiry
/// plus the allowed skew), after which the token is refused as expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpentToken {
    pub jti: TokenId,
    pub node_id: NodeId,
    pub keep_until: WallTime,
}

/// A stored alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertRecord {
    pub node_id: NodeId,
    pub received_at: WallTime,
    pub alert: Alert,
}

/// The storage interface. Every method is one transaction.
pub trait Storage: Send + Sync + 'static {
    /// Applies the versioned migrations not yet applied.
    fn migrate(&self) -> impl Future<Output = StoreResult<()>> + Send;

    fn add_node(&self, node: NodeRecord) -> impl Future<Output = StoreResult<()>> + Send;
    fn list_nodes(&self) -> impl Future<Output = StoreResult<Vec<NodeRecord>>> + Send;
    fn get_node(&self, id: NodeId) -> impl Future<Output = StoreResult<Option<NodeRecord>>> + Send;
    /// Every revoked node.
    fn revoked_nodes(&self) -> impl Future<Output = StoreResult<Vec<NodeId>>> + Send;
    /// Marks the node revoked; false if there is no such node.
    fn revoke_node(&self, id: NodeId) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Records a status change (history) and the node's current status.
    fn record_status(
        &self,
        id: NodeId,
        status: NodeStatus,
        reason: Option<String>,
        at: WallTime,
    ) -> impl Future<Output = StoreResult<()>> + Send {
        self.apply_state_changes(vec![StateChange::Status {
            node_id: id,
            status,
            reason,
            at,
        }])
    }
    /// Updates last-seen (and the agent version, if known).
    fn touch_node(
        &self,
        id: NodeId,
        at: WallTime,
        agent_version: Option<String>,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Status changes of a node, oldest first.
    fn status_history(
        &self,
        id: NodeId,
    ) -> impl Future<Output = StoreResult<Vec<(WallTime, NodeStatus)>>> + Send;

    /// Stores a batch; a sample already stored (same node and timestamp) is
    /// skipped. Returns how many rows were new.
    fn insert_telemetry(
        &self,
        batch: &[Telemetry],
    ) -> impl Future<Output = StoreResult<u64>> + Send;
    /// Raw samples, or averages per `bucket`, in `[from, to)`.
    fn query_telemetry(
        &self,
        id: NodeId,
        from: WallTime,
        to: WallTime,
        bucket: Option<Duration>,
    ) -> impl Future<Output = StoreResult<Vec<TelemetryPoint>>> + Send;
    /// Rows stored for a node (all time).
    fn count_telemetry(&self, id: NodeId) -> impl Future<Output = StoreResult<u64>> + Send;

    fn insert_health(
        &self,
        id: NodeId,
        at: WallTime,
        health: &Health,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    fn insert_alert(
        &self,
        id: NodeId,
        at: WallTime,
        alert: &Alert,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    fn list_alerts(&self, limit: u32)
    -> impl Future<Output = StoreResult<Vec<AlertRecord>>> + Send;

    fn insert_command(
        &self,
        command: CommandRecord,
    ) -> impl Future<Output = StoreResult<()>> + Send {
        self.insert_commands(vec![command])
    }
    /// Inserts commands in one transaction: all, or none and `Conflict` if
    /// any request id exists already (a broadcast is one decision).
    fn insert_commands(
        &self,
        commands: Vec<CommandRecord>,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    fn set_command_state(
        &self,
        id: RequestId,
        state: CommandState,
        at: WallTime,
    ) -> impl Future<Output = StoreResult<()>> + Send {
        self.apply_state_changes(vec![StateChange::Command {
            request_id: id,
            state,
            at,
        }])
    }
    /// Applies status and command-state changes in order, in one
    /// transaction: all or none (one commit for a burst of the hub's
    /// decisions, not one per decision).
    fn apply_state_changes(
        &self,
        changes: Vec<StateChange>,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Records results in one transaction, in order, each command's first
    /// result only: per row, `Stored { first }` (`first` false when the
    /// command already had one, from the store or earlier in the batch, or
    /// is unknown), or `WrongNode` when the command belongs to another node
    /// (nothing stored). All rows or none: an error means none was stored.
    fn record_results(
        &self,
        rows: Vec<(NodeId, CommandResult)>,
        at: WallTime,
    ) -> impl Future<Output = StoreResult<Vec<ResultRecord>>> + Send;
    /// Records one result from `node_id` (see [`Self::record_results`]).
    fn record_result(
        &self,
        node_id: NodeId,
        result: &CommandResult,
        at: WallTime,
    ) -> impl Future<Output = StoreResult<ResultRecord>> + Send {
        let rows = vec![(node_id, result.clone())];
        async move {
            let mut records = self.record_results(rows, at).await?;
            records
                .pop()
                .ok_or_else(|| StoreError::Database("no answer for the result".into()))
        }
    }
    fn get_command(
        &self,
        id: RequestId,
    ) -> impl Future<Output = StoreResult<Option<CommandRecord>>> + Send;

    /// v0.3: stores a new rollout with its targets, in one transaction;
    /// `Conflict` if its id exists.
    fn insert_rollout(
        &self,
        rollout: RolloutRecord,
        targets: Vec<RolloutTargetRecord>,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// v0.3: a rollout and its targets, in order.
    fn get_rollout(
        &self,
        id: RolloutId,
    ) -> impl Future<Output = StoreResult<Option<(RolloutRecord, Vec<RolloutTargetRecord>)>>> + Send;
    /// v0.3: the ids of the rollouts not ended, oldest first.
    fn open_rollout_ids(&self) -> impl Future<Output = StoreResult<Vec<RolloutId>>> + Send {
        async move {
            let open = self.rollouts_in(&RolloutState::OPEN).await?;
            Ok(open.into_iter().map(|r| r.id).collect())
        }
    }
    /// v0.3 with v0.2: the rollouts awaiting approval, oldest first.
    fn rollouts_awaiting_approval(
        &self,
    ) -> impl Future<Output = StoreResult<Vec<RolloutRecord>>> + Send {
        self.rollouts_in(&[RolloutState::AwaitingApproval])
    }
    /// v0.3: the rollouts in one of `states`, oldest first (by index: the
    /// driver asks every tick, and ended rollouts pile up).
    fn rollouts_in(
        &self,
        states: &[RolloutState],
    ) -> impl Future<Output = StoreResult<Vec<RolloutRecord>>> + Send;
    /// v0.3: rollouts, newest first, created before `before` when given.
    fn list_rollouts(
        &self,
        before: Option<(WallTime, RolloutId)>,
        limit: u32,
    ) -> impl Future<Output = StoreResult<Vec<RolloutRecord>>> + Send;
    /// The stored state of each of these commands that exists (any order).
    fn command_states(
        &self,
        ids: Vec<RequestId>,
    ) -> impl Future<Output = StoreResult<Vec<(RequestId, CommandState)>>> + Send;
    /// Commands not yet delivered or answered, oldest first (to restore the hub).
    fn open_commands(&self) -> impl Future<Output = StoreResult<Vec<CommandRecord>>> + Send;
    /// These nodes' commands not yet delivered or answered, oldest first
    /// (for the central instance that has just taken the nodes; one query
    /// for a burst of admissions).
    fn open_commands_for(
        &self,
        nodes: Vec<NodeId>,
    ) -> impl Future<Output = StoreResult<Vec<CommandRecord>>> + Send;
    /// Marks `expired` every command still queued that was created before
    /// `created_before`; returns their ids. (With several central instances
    /// no hub holds a command for an offline node: the store is its queue.)
    fn expire_queued_commands(
        &self,
        created_before: WallTime,
        at: WallTime,
    ) -> impl Future<Output = StoreResult<Vec<RequestId>>> + Send;

    /// Spends node token ids in one transaction: per row, true when the id
    /// was unspent (it is now spent), false when it was spent before —
    /// earlier, at another process, or by an earlier row of the same batch.
    /// All rows or none: an error means none was spent.
    fn spend_token_ids(
        &self,
        tokens: Vec<SpentToken>,
    ) -> impl Future<Output = StoreResult<Vec<bool>>> + Send;
    /// Forgets spent token ids kept until before `now`; returns how many.
    fn forget_spent_token_ids(
        &self,
        now: WallTime,
    ) -> impl Future<Output = StoreResult<u64>> + Send;

    /// Appends to the audit hash chain; returns the new entry.
    fn append_audit(
        &self,
        actor: &str,
        action: &str,
        subject: &str,
        detail: serde_json::Value,
        at: WallTime,
    ) -> impl Future<Output = StoreResult<AuditEntry>> + Send;
    /// The newest entries, newest first.
    fn list_audit(&self, limit: u32) -> impl Future<Output = StoreResult<Vec<AuditEntry>>> + Send;
    /// Every entry, oldest first (for verification).
    fn all_audit(&self) -> impl Future<Output = StoreResult<Vec<AuditEntry>>> + Send;

    fn create_api_token(
        &self,
        hash: &str,
        record: TokenRecord,
        at: WallTime,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Puts `user` in `group` (a no-op when it is there).
    fn add_to_group(&self, user: &str, group: &str)
    -> impl Future<Output = StoreResult<()>> + Send;
    /// The groups `user` is in.
    fn groups_of(&self, user: &str) -> impl Future<Output = StoreResult<Vec<String>>> + Send;
    /// v0.2: `user` approved the command (with this signature, if they
    /// signed): counted in its stored request.
    fn add_approver(
        &self,
        request_id: RequestId,
        user: &str,
        signature: Option<&SignedApproval>,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// v0.2: `user` approved the rollout (with this signature, if they
    /// signed): counted in its stored request.
    fn add_rollout_approver(
        &self,
        rollout_id: RolloutId,
        user: &str,
        signature: Option<&SignedApproval>,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// v0.2: commands whose approval request is still pending.
    fn pending_approvals(&self) -> impl Future<Output = StoreResult<Vec<CommandRecord>>> + Send;

    fn find_api_token(
        &self,
        hash: &str,
    ) -> impl Future<Output = StoreResult<Option<TokenRecord>>> + Send;

    /// Stores an admin notification (auth failures, critical alerts).
    fn insert_event(
        &self,
        kind: &str,
        detail: serde_json::Value,
        at: WallTime,
    ) -> impl Future<Output = StoreResult<()>> + Send;
}

/// The name of a command kind as stored.
/// What each of a batch of results does, given who owns each command and
/// whether it already has a result (`owners`); the rows to write are those
/// answered `Stored { first: true }`. Both backends decide with this.
pub(crate) fn sort_results(
    rows: &[(NodeId, CommandResult)],
    mut owners: std::collections::HashMap<RequestId, (NodeId, bool)>,
) -> Vec<ResultRecord> {
    rows.iter()
        .map(
            |(node_id, result)| match owners.get_mut(&result.request_id) {
                Some((owner, _)) if owner != node_id => ResultRecord::WrongNode,
                Some((_, answered)) if !*answered => {
                    *answered = true;
                    ResultRecord::Stored { first: true }
                }
                _ => ResultRecord::Stored { first: false },
            },
        )
        .collect()
}

pub fn command_kind(message: &CentralMessage) -> &'static str {
    nap_core::codec::Message::message_type(message)
}

/// A stored `state` column read back.
pub(crate) fn parse_state(state: &str) -> StoreResult<CommandState> {
    CommandState::from_name(state)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown command state {state:?}")))
}

/// The rollout state named `name`.
pub(crate) fn parse_rollout_state(name: &str) -> Option<RolloutState> {
    serde_json::from_value(serde_json::Value::String(name.to_owned())).ok()
}

/// The summary numbers kept beside each sample for fast queries.
pub(crate) fn telemetry_summary(t: &Telemetry) -> (f64, f64, f64) {
    let s = &t.data.system;
    let pct = |used: u64, total: u64| {
        #[allow(clippy::cast_precision_loss)]
        if total == 0 {
            0.0
        } else {
            used as f64 * 100.0 / total as f64
        }
    };
    let disk = s
        .disks
        .iter()
        .map(|d| pct(d.used, d.total))
        .fold(0.0, f64::max);
    (s.cpu.usage, pct(s.memory.used, s.memory.total), disk)
}

/// A node status as stored.
pub(crate) fn status_str(s: NodeStatus) -> &'static str {
    match s {
        NodeStatus::Online => "online",
        NodeStatus::Degraded => "degraded",
        NodeStatus::Offline => "offline",
    }
}

/// A stored node status read back.
pub(crate) fn parse_status(s: &str) -> Option<NodeStatus> {
    match s {
        "online" => Some(NodeStatus::Online),
        "degraded" => Some(NodeStatus::Degraded),
        "offline" => Some(NodeStatus::Offline),
        _ => None,
    }
}
