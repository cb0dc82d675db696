//! The backend chosen at start-up, behind the one `Storage` trait.

use std::time::Duration;

use nap_core::central::ResultRecord;
use nap_core::central::rollout::RolloutState;
use nap_core::wire::{Alert, CommandResult, Health, NodeStatus, SignedApproval, Telemetry};
use nap_core::{NodeId, RequestId, RolloutId, WallTime};

use super::postgres::PgStore;
use super::sqlite::SqliteStore;
use super::{
    AlertRecord, AuditEntry, CommandRecord, NodeRecord, RolloutRecord, RolloutTargetRecord,
    SpentToken, StateChange, Storage, StoreError, StoreResult, TelemetryPoint, TokenRecord,
};

/// SQLite or PostgreSQL.
#[derive(Debug, Clone)]
pub enum AnyStore {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

impl AnyStore {
    /// Opens the database named by `--db`: `sqlite:PATH` or `postgres://…`.
    pub async fn open(db: &str, pool: usize) -> StoreResult<Self> {
        if let Some(path) = db.strip_prefix("sqlite:") {
            Ok(Self::Sqlite(SqliteStore::open(std::path::Path::new(path))?))
        } else if db.starts_with("postgres://") || db.starts_with("postgresql://") {
            Ok(Self::Postgres(PgStore::connect(db, None, pool).await?))
        } else {
            Err(StoreError::Database(format!(
                "unsupported database {db:?}: use sqlite:PATH or a postgres:// URL"
            )))
        }
    }

    /// Periodic upkeep: partitions and retention.
    pub async fn maintain(&self, now: WallTime) -> StoreResult<()> {
        match self {
            Self::Sqlite(_) => Ok(()),
            Self::Postgres(pg) => pg.maintain(now, Duration::from_secs(90 * 86_400)).await,
        }
    }
}

macro_rules! delegate {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match $self {
            AnyStore::Sqlite(s) => s.$method($($arg),*).await,
            AnyStore::Postgres(s) => s.$method($($arg),*).await,
        }
    };
}

impl Storage for AnyStore {
    async fn migrate(&self) -> StoreResult<()> {
        delegate!(self.migrate())
    }
    async fn add_node(&self, node: NodeRecord) -> StoreResult<()> {
        delegate!(self.add_node(node))
    }
    async fn list_nodes(&self) -> StoreResult<Vec<NodeRecord>> {
        delegate!(self.list_nodes())
    }
    async fn get_node(&self, id: NodeId) -> StoreResult<Option<NodeRecord>> {
        delegate!(self.get_node(id))
    }
    async fn revoked_nodes(&self) -> StoreResult<Vec<NodeId>> {
        delegate!(self.revoked_nodes())
    }
    async fn revoke_node(&self, id: NodeId) -> StoreResult<bool> {
        delegate!(self.revoke_node(id))
    }
    async fn touch_node(
        &self,
        id: NodeId,
        at: WallTime,
        agent_version: Option<String>,
    ) -> StoreResult<()> {
        delegate!(self.touch_node(id, at, agent_version))
    }
    async fn status_history(&self, id: NodeId) -> StoreResult<Vec<(WallTime, NodeStatus)>> {
        delegate!(self.status_history(id))
    }
    async fn insert_telemetry(&self, batch: &[Telemetry]) -> StoreResult<u64> {
        delegate!(self.insert_telemetry(batch))
    }
    async fn query_telemetry(
        &self,
        id: NodeId,
        from: WallTime,
        to: WallTime,
        bucket: Option<Duration>,
    ) -> StoreResult<Vec<TelemetryPoint>> {
        delegate!(self.query_telemetry(id, from, to, bucket))
    }
    async fn count_telemetry(&self, id: NodeId) -> StoreResult<u64> {
        delegate!(self.count_telemetry(id))
    }
    async fn insert_health(&self, id: NodeId, at: WallTime, health: &Health) -> StoreResult<()> {
        delegate!(self.insert_health(id, at, health))
    }
    async fn insert_alert(&self, id: NodeId, at: WallTime, alert: &Alert) -> StoreResult<()> {
        delegate!(self.insert_alert(id, at, alert))
    }
    async fn list_alerts(&self, limit: u32) -> StoreResult<Vec<AlertRecord>> {
        delegate!(self.list_alerts(limit))
    }
    async fn insert_commands(&self, commands: Vec<CommandRecord>) -> StoreResult<()> {
        delegate!(self.insert_commands(commands))
    }
    async fn apply_state_changes(&self, changes: Vec<StateChange>) -> StoreResult<()> {
        delegate!(self.apply_state_changes(changes))
    }
    async fn record_results(
        &self,
        rows: Vec<(NodeId, CommandResult)>,
        at: WallTime,
    ) -> StoreResult<Vec<ResultRecord>> {
        delegate!(self.record_results(rows, at))
    }
    async fn spend_token_ids(&self, tokens: Vec<SpentToken>) -> StoreResult<Vec<bool>> {
        delegate!(self.spend_token_ids(tokens))
    }
    async fn forget_spent_token_ids(&self, now: WallTime) -> StoreResult<u64> {
        delegate!(self.forget_spent_token_ids(now))
    }
    async fn get_command(&self, id: RequestId) -> StoreResult<Option<CommandRecord>> {
        delegate!(self.get_command(id))
    }

    async fn insert_rollout(
        &self,
        rollout: RolloutRecord,
        targets: Vec<RolloutTargetRecord>,
    ) -> StoreResult<()> {
        delegate!(self.insert_rollout(rollout, targets))
    }

    async fn get_rollout(
        &self,
        id: RolloutId,
    ) -> StoreResult<Option<(RolloutRecord, Vec<RolloutTargetRecord>)>> {
        delegate!(self.get_rollout(id))
    }

    async fn list_rollouts(
        &self,
        before: Option<(WallTime, RolloutId)>,
        limit: u32,
    ) -> StoreResult<Vec<RolloutRecord>> {
        delegate!(self.list_rollouts(before, limit))
    }
    async fn command_states(
        &self,
        ids: Vec<RequestId>,
    ) -> StoreResult<Vec<(RequestId, nap_core::central::CommandState)>> {
        delegate!(self.command_states(ids))
    }
    async fn open_commands(&self) -> StoreResult<Vec<CommandRecord>> {
        delegate!(self.open_commands())
    }
    async fn open_commands_for(&self, nodes: Vec<NodeId>) -> StoreResult<Vec<CommandRecord>> {
        delegate!(self.open_commands_for(nodes))
    }
    async fn expire_queued_commands(
        &self,
        created_before: WallTime,
        at: WallTime,
    ) -> StoreResult<Vec<RequestId>> {
        delegate!(self.expire_queued_commands(created_before, at))
    }
    async fn append_audit(
        &self,
        actor: &str,
        action: &str,
        subject: &str,
        detail: serde_json::Value,
        at: WallTime,
    ) -> StoreResult<AuditEntry> {
        delegate!(self.append_audit(actor, action, subject, detail, at))
    }
    async fn list_audit(&self, limit: u32) -> StoreResult<Vec<AuditEntry>> {
        delegate!(self.list_audit(limit))
    }
    async fn all_audit(&self) -> StoreResult<Vec<AuditEntry>> {
        delegate!(self.all_audit())
    }
    async fn create_api_token(
        &self,
        hash: &str,
        record: TokenRecord,
        at: WallTime,
    ) -> StoreResult<()> {
        delegate!(self.create_api_token(hash, record, at))
    }
    async fn add_to_group(&self, user: &str, group: &str) -> StoreResult<()> {
        delegate!(self.add_to_group(user, group))
    }
    async fn groups_of(&self, user: &str) -> StoreResult<Vec<String>> {
        delegate!(self.groups_of(user))
    }
    async fn add_approver(
        &self,
        request_id: RequestId,
        user: &str,
        signature: Option<&SignedApproval>,
    ) -> StoreResult<()> {
        delegate!(self.add_approver(request_id, user, signature))
    }
    async fn rollouts_in(&self, states: &[RolloutState]) -> StoreResult<Vec<RolloutRecord>> {
        delegate!(self.rollouts_in(states))
    }
    async fn add_rollout_approver(
        &self,
        rollout_id: RolloutId,
        user: &str,
        signature: Option<&SignedApproval>,
    ) -> StoreResult<()> {
        delegate!(self.add_rollout_approver(rollout_id, user, signature))
    }
    async fn pending_approvals(&self) -> StoreResult<Vec<CommandRecord>> {
        delegate!(self.pending_approvals())
    }
    async fn find_api_token(&self, hash: &str) -> StoreResult<Option<TokenRecord>> {
        delegate!(self.find_api_token(hash))
    }
    async fn insert_event(
        &self,
        kind: &str,
        detail: serde_json::Value,
        at: WallTime,
    ) -> StoreResult<()> {
        delegate!(self.insert_event(kind, detail, at))
    }
}
