//! The embedded default: one SQLite file, no server to install. Calls run on
//! tokio's blocking pool; the connection is serialised by a mutex (SQLite
//! allows one writer anyway), in WAL mode so readers do not wait on it.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nap_core::central::rollout::{RolloutState, TargetState};
use nap_core::central::{CommandState, ResultRecord};
use nap_core::wire::{Alert, CommandResult, Health, NodeStatus, SignedApproval, Telemetry};
use nap_core::{NodeId, RequestId, RolloutId, WallTime};
use rusqlite::{Connection, OptionalExtension, params};

use super::{
    AlertRecord, AuditEntry, CommandRecord, NodeRecord, RolloutRecord, RolloutTargetRecord,
    SpentToken, StateChange, Storage, StoreError, StoreResult, TelemetryPoint, TokenRecord,
    parse_rollout_state, parse_status, status_str, telemetry_summary,
};

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("sql/sqlite_0001.sql")),
    (2, include_str!("sql/sqlite_0002.sql")),
    (3, include_str!("sql/sqlite_0003.sql")),
    (4, include_str!("sql/sqlite_0004.sql")),
    (5, include_str!("sql/sqlite_0005.sql")),
    (6, include_str!("sql/sqlite_0006.sql")),
    (7, include_str!("sql/sqlite_0007.sql")),
];

/// The SQLite backend.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

fn micros(t: WallTime) -> i64 {
    t.as_datetime().timestamp_micros()
}

fn from_micros(v: i64) -> WallTime {
    WallTime::from_unix_micros(v).unwrap_or(WallTime::UNIX_EPOCH)
}

fn json<T: serde::Serialize>(v: &T) -> StoreResult<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn parse<T: serde::de::DeserializeOwned>(s: &str) -> StoreResult<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl SqliteStore {
    /// Opens (creating) the database file.
    pub fn open(path: &Path) -> StoreResult<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Database(e.to_string()))?;
        }
        let conn = Connection::open(path).map_err(db)?;
        Self::configure(conn)
    }

    /// An in-memory database (tests).
    pub fn memory() -> StoreResult<Self> {
        Self::configure(Connection::open_in_memory().map_err(db)?)
    }

    fn configure(conn: Connection) -> StoreResult<Self> {
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(db)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(db)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| StoreError::Database("connection mutex poisoned".into()))?;
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Database(e.to_string()))?
    }
}

fn node_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(NodeRecord, String)> {
    let id: String = row.get(0)?;
    let labels: String = row.get(3)?;
    let status: Option<String> = row.get(6)?;
    Ok((
        NodeRecord {
            id: id.parse().unwrap_or(NodeId::from_u128(0)),
            name: row.get(1)?,
            public_key_pem: row.get(2)?,
            labels: serde_json::from_str(&labels).unwrap_or_default(),
            created_at: from_micros(row.get(4)?),
            revoked: row.get::<_, Option<i64>>(5)?.is_some(),
            status: status.as_deref().and_then(parse_status),
            last_seen: row.get::<_, Option<i64>>(7)?.map(from_micros),
            agent_version: row.get(8)?,
        },
        id,
    ))
}

const NODE_COLUMNS: &str =
    "id, name, public_key_pem, labels, created_at, revoked_at, status, last_seen, agent_version";

const ROLLOUT_COLUMNS: &str = "id, requester, message, strategy, limits, selector, state, start_at, created_at, updated_at, approval";

/// A rollout row, with its JSON and state still to parse.
type RolloutRow = (
    String,
    String,
    [String; 3],
    Option<String>,
    String,
    [i64; 3],
    Option<String>,
);

fn rollout_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RolloutRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        [r.get(2)?, r.get(3)?, r.get(4)?],
        r.get(5)?,
        r.get(6)?,
        [r.get(7)?, r.get(8)?, r.get(9)?],
        r.get(10)?,
    ))
}

/// What carries an approval request: a command, or a rollout.
#[derive(Clone, Copy)]
enum Approvable {
    Command,
    Rollout,
}

/// Counts `user`'s approval in the stored request of the command or
/// rollout `id` (once per person), in one transaction.
fn add_approver_to(
    conn: &mut Connection,
    what: Approvable,
    id: String,
    user: String,
    signature: Option<SignedApproval>,
) -> StoreResult<()> {
    let (select, update) = match what {
        Approvable::Command => (
            "SELECT approval FROM commands WHERE request_id = ?1",
            "UPDATE commands SET approval = ?2 WHERE request_id = ?1",
        ),
        Approvable::Rollout => (
            "SELECT approval FROM rollouts WHERE id = ?1",
            "UPDATE rollouts SET approval = ?2 WHERE id = ?1",
        ),
    };
    let tx = conn.transaction().map_err(db)?;
    let stored: Option<Option<String>> = tx
        .query_row(select, [&id], |r| r.get(0))
        .optional()
        .map_err(db)?;
    let Some(Some(text)) = stored else {
        return Ok(());
    };
    let mut approval: super::StoredApproval =
        serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    if !approval.approved_by.contains(&user) {
        approval.approved_by.push(user);
        approval.signatures.extend(signature);
    }
    tx.execute(
        update,
        params![id, serde_json::to_string(&approval).unwrap_or_default()],
    )
    .map_err(db)?;
    tx.commit().map_err(db)
}

fn finish_rollout(row: RolloutRow) -> StoreResult<RolloutRecord> {
    let (
        id,
        requester,
        [message, strategy, limits],
        selector,
        state,
        [start, created, updated],
        approval,
    ) = row;
    let json =
        |text: String| serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(e.to_string()));
    Ok(RolloutRecord {
        id: id.parse().map_err(|_| StoreError::Corrupt(id.clone()))?,
        requester,
        message: json(message)?,
        strategy: json(strategy)?,
        limits: json(limits)?,
        selector,
        state: parse_rollout_state(&state).ok_or(StoreError::Corrupt(state))?,
        start_at: from_micros(start),
        created_at: from_micros(created),
        updated_at: from_micros(updated),
        approval: approval
            .map(|text| serde_json::from_str(&text))
            .transpose()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
    })
}

/// A command row, with its result and state still to parse.
type CommandRow = (CommandRecord, String, Option<String>, String);

fn command_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<CommandRow> {
    let id: String = row.get(0)?;
    let node: String = row.get(1)?;
    let message: String = row.get(3)?;
    let result: Option<String> = row.get(10)?;
    let approval: Option<String> = row.get(11)?;
    Ok((
        CommandRecord {
            request_id: id.parse().unwrap_or(RequestId::from_u128(0)),
            node_id: node.parse().unwrap_or(NodeId::from_u128(0)),
            kind: row.get(2)?,
            message: serde_json::from_str(&message).unwrap_or(serde_json::Value::Null),
            state: CommandState::Queued,
            requester: row.get(5)?,
            approver: row.get(6)?,
            timeout_ms: u64::try_from(row.get::<_, i64>(7)?).unwrap_or(0),
            created_at: from_micros(row.get(8)?),
            updated_at: from_micros(row.get(9)?),
            result: None,
            approval: approval.and_then(|a| serde_json::from_str(&a).ok()),
        },
        id,
        result,
        row.get(4)?,
    ))
}

const COMMAND_COLUMNS: &str = "request_id, node_id, kind, message, state, requester, approver, timeout_ms, created_at, updated_at, result, approval";

fn finish_command(row: CommandRow) -> StoreResult<CommandRecord> {
    let (mut record, _, result, state) = row;
    record.result = result.as_deref().map(parse).transpose()?;
    record.state = super::parse_state(&state)?;
    Ok(record)
}

/// Appends one entry to the audit chain inside `tx` (the caller commits).
fn chain_append(
    tx: &rusqlite::Transaction<'_>,
    actor: &str,
    action: &str,
    subject: &str,
    detail: serde_json::Value,
    at: WallTime,
) -> StoreResult<AuditEntry> {
    let last: Option<(i64, String)> = tx
        .query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(db)?;
    let last = last.map(|(seq, hash)| (u64::try_from(seq).unwrap_or(0), hash));
    let e = AuditEntry::after(last, at, actor, action, subject, detail);
    tx.execute(
        "INSERT INTO audit (seq, at, actor, action, subject, detail, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![i64::try_from(e.seq).unwrap_or(i64::MAX), micros(e.at), e.actor, e.action, e.subject, e.detail.to_string(), e.prev_hash, e.hash],
    )
    .map_err(db)?;
    Ok(e)
}

/// The batch's own audit record, in its transaction.
fn audit_batch(
    tx: &rusqlite::Transaction<'_>,
    record: Option<super::BatchRecord>,
) -> StoreResult<()> {
    if let Some(r) = record {
        chain_append(tx, "central", r.action, &r.subject, r.detail, r.at)?;
    }
    Ok(())
}

fn audit_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<AuditEntry> {
    let detail: String = row.get(5)?;
    Ok(AuditEntry {
        seq: u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0),
        at: from_micros(row.get(1)?),
        actor: row.get(2)?,
        action: row.get(3)?,
        subject: row.get(4)?,
        detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
        prev_hash: row.get(6)?,
        hash: row.get(7)?,
    })
}

impl Storage for SqliteStore {
    async fn migrate(&self) -> StoreResult<()> {
        self.with(|conn| {
            conn.execute_batch(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
            )
            .map_err(db)?;
            for (version, sql) in MIGRATIONS {
                let done: Option<i64> = conn
                    .query_row("SELECT version FROM schema_migrations WHERE version = ?1", [version], |r| r.get(0))
                    .optional()
                    .map_err(db)?;
                if done.is_none() {
                    let tx = conn.transaction().map_err(db)?;
                    tx.execute_batch(sql).map_err(db)?;
                    tx.execute(
                        "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, strftime('%s','now'))",
                        [version],
                    )
                    .map_err(db)?;
                    tx.commit().map_err(db)?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn add_node(&self, node: NodeRecord) -> StoreResult<()> {
        self.with(move |conn| {
            let labels = json(&node.labels)?;
            let inserted = conn
                .execute(
                    "INSERT OR IGNORE INTO nodes (id, name, public_key_pem, labels, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![node.id.to_string(), node.name, node.public_key_pem, labels, micros(node.created_at)],
                )
                .map_err(db)?;
            if inserted == 0 { Err(StoreError::Conflict) } else { Ok(()) }
        })
        .await
    }

    async fn list_nodes(&self) -> StoreResult<Vec<NodeRecord>> {
        self.with(|conn| {
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT {NODE_COLUMNS} FROM nodes ORDER BY name, id"
                ))
                .map_err(db)?;
            let rows = stmt.query_map([], node_from_row).map_err(db)?;
            rows.map(|r| r.map(|(n, _)| n).map_err(db)).collect()
        })
        .await
    }

    async fn get_node(&self, id: NodeId) -> StoreResult<Option<NodeRecord>> {
        self.with(move |conn| {
            conn.query_row(
                &format!("SELECT {NODE_COLUMNS} FROM nodes WHERE id = ?1"),
                [id.to_string()],
                node_from_row,
            )
            .optional()
            .map(|r| r.map(|(n, _)| n))
            .map_err(db)
        })
        .await
    }

    async fn revoked_nodes(&self) -> StoreResult<Vec<NodeId>> {
        self.with(|conn| {
            let mut stmt = conn
                .prepare("SELECT id FROM nodes WHERE revoked_at IS NOT NULL")
                .map_err(db)?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(db)?;
            rows.map(|r| {
                let id = r.map_err(db)?;
                id.parse().map_err(|_| StoreError::Corrupt(id))
            })
            .collect()
        })
        .await
    }

    async fn revoke_node(&self, id: NodeId) -> StoreResult<bool> {
        self.with(move |conn| {
            let changed = conn
                .execute(
                    "UPDATE nodes SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
                    params![id.to_string(), micros(WallTime::from(chrono::Utc::now()))],
                )
                .map_err(db)?;
            Ok(changed > 0)
        })
        .await
    }

    async fn touch_node(
        &self,
        id: NodeId,
        at: WallTime,
        agent_version: Option<String>,
    ) -> StoreResult<()> {
        self.with(move |conn| {
            conn.execute(
                "UPDATE nodes SET last_seen = MAX(COALESCE(last_seen, 0), ?2), agent_version = COALESCE(?3, agent_version) WHERE id = ?1",
                params![id.to_string(), micros(at), agent_version],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn status_history(&self, id: NodeId) -> StoreResult<Vec<(WallTime, NodeStatus)>> {
        self.with(move |conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT at, status FROM status_history WHERE node_id = ?1 ORDER BY at, rowid",
                )
                .map_err(db)?;
            let rows = stmt
                .query_map([id.to_string()], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                })
                .map_err(db)?;
            let mut out = Vec::new();
            for row in rows {
                let (at, status) = row.map_err(db)?;
                let status =
                    parse_status(&status).ok_or_else(|| StoreError::Corrupt(status.clone()))?;
                out.push((from_micros(at), status));
            }
            Ok(out)
        })
        .await
    }

    async fn insert_telemetry(&self, batch: &[Telemetry]) -> StoreResult<u64> {
        let rows: Vec<(String, i64, f64, f64, f64, String)> = batch
            .iter()
            .map(|t| {
                let (cpu, mem, disk) = telemetry_summary(t);
                Ok((
                    t.node_id.to_string(),
                    micros(t.timestamp),
                    cpu,
                    mem,
                    disk,
                    json(&t.data)?,
                ))
            })
            .collect::<StoreResult<_>>()?;
        self.with(move |conn| {
            let tx = conn.transaction().map_err(db)?;
            let mut inserted = 0u64;
            {
                let mut stmt = tx
                    .prepare_cached(
                        "INSERT OR IGNORE INTO telemetry (node_id, ts, cpu, memory, disk, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )
                    .map_err(db)?;
                for (node, ts, cpu, mem, disk, data) in &rows {
                    inserted += stmt.execute(params![node, ts, cpu, mem, disk, data]).map_err(db)? as u64;
                }
            }
            tx.commit().map_err(db)?;
            Ok(inserted)
        })
        .await
    }

    async fn query_telemetry(
        &self,
        id: NodeId,
        from: WallTime,
        to: WallTime,
        bucket: Option<Duration>,
    ) -> StoreResult<Vec<TelemetryPoint>> {
        self.with(move |conn| {
            let (from, to) = (micros(from), micros(to));
            let mut out = Vec::new();
            match bucket {
                None => {
                    let mut stmt = conn
                        .prepare("SELECT ts, cpu, memory, disk, data FROM telemetry WHERE node_id = ?1 AND ts >= ?2 AND ts < ?3 ORDER BY ts")
                        .map_err(db)?;
                    let rows = stmt
                        .query_map(params![id.to_string(), from, to], |r| {
                            Ok((r.get::<_, i64>(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get::<_, String>(4)?))
                        })
                        .map_err(db)?;
                    for row in rows {
                        let (ts, cpu, memory, disk, data) = row.map_err(db)?;
                        out.push(TelemetryPoint {
                            timestamp: from_micros(ts),
                            cpu,
                            memory,
                            disk,
                            samples: 1,
                            data: Some(parse(&data)?),
                        });
                    }
                }
                Some(bucket) => {
                    let width = i64::try_from(bucket.as_micros()).unwrap_or(i64::MAX).max(1);
                    let mut stmt = conn
                        .prepare(
                            "SELECT (ts / ?4) * ?4 AS b, AVG(cpu), AVG(memory), AVG(disk), COUNT(*) FROM telemetry
                             WHERE node_id = ?1 AND ts >= ?2 AND ts < ?3 GROUP BY b ORDER BY b",
                        )
                        .map_err(db)?;
                    let rows = stmt
                        .query_map(params![id.to_string(), from, to, width], |r| {
                            Ok((r.get::<_, i64>(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get::<_, i64>(4)?))
                        })
                        .map_err(db)?;
                    for row in rows {
                        let (b, cpu, memory, disk, n) = row.map_err(db)?;
                        out.push(TelemetryPoint {
                            timestamp: from_micros(b),
                            cpu,
                            memory,
                            disk,
                            samples: u64::try_from(n).unwrap_or(0),
                            data: None,
                        });
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    async fn count_telemetry(&self, id: NodeId) -> StoreResult<u64> {
        self.with(move |conn| {
            conn.query_row(
                "SELECT COUNT(*) FROM telemetry WHERE node_id = ?1",
                [id.to_string()],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(db)
        })
        .await
    }

    async fn insert_health(&self, id: NodeId, at: WallTime, health: &Health) -> StoreResult<()> {
        let body = json(health)?;
        let overall = format!("{:?}", health.overall()).to_lowercase();
        self.with(move |conn| {
            conn.execute(
                "INSERT INTO health (node_id, at, overall, report) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (node_id, at) DO NOTHING",
                params![id.to_string(), micros(at), overall, body],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn insert_alert(&self, id: NodeId, at: WallTime, alert: &Alert) -> StoreResult<()> {
        let body = json(alert)?;
        let severity = format!("{:?}", alert.severity).to_lowercase();
        let alert_id = alert.alert_id.map(|a| a.to_string());
        self.with(move |conn| {
            conn.execute(
                "INSERT INTO alerts (node_id, at, severity, body, alert_id) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (alert_id) DO NOTHING",
                params![id.to_string(), micros(at), severity, body, alert_id],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn list_alerts(&self, limit: u32) -> StoreResult<Vec<AlertRecord>> {
        self.with(move |conn| {
            let mut stmt = conn
                .prepare("SELECT node_id, at, body FROM alerts ORDER BY at DESC, id DESC LIMIT ?1")
                .map_err(db)?;
            let rows = stmt
                .query_map([limit], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })
                .map_err(db)?;
            let mut out = Vec::new();
            for row in rows {
                let (node, at, body) = row.map_err(db)?;
                out.push(AlertRecord {
                    node_id: node
                        .parse()
                        .map_err(|_| StoreError::Corrupt(node.clone()))?,
                    received_at: from_micros(at),
                    alert: parse(&body)?,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn insert_commands(&self, commands: Vec<CommandRecord>) -> StoreResult<()> {
        self.with(move |conn| {
            let tx = conn.transaction().map_err(db)?;
            {
                let mut insert = tx
                    .prepare(
                        "INSERT OR IGNORE INTO commands (request_id, node_id, kind, message, state, requester, approver, timeout_ms, created_at, updated_at, approval)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                    )
                    .map_err(db)?;
                for c in commands {
                    let inserted = insert
                        .execute(params![
                            c.request_id.to_string(),
                            c.node_id.to_string(),
                            c.kind,
                            c.message.to_string(),
                            c.state.as_str(),
                            c.requester,
                            c.approver,
                            i64::try_from(c.timeout_ms).unwrap_or(i64::MAX),
                            micros(c.created_at),
                            micros(c.updated_at),
                            c.approval.as_ref().map(|a| serde_json::to_string(a).unwrap_or_default())
                        ])
                        .map_err(db)?;
                    if inserted == 0 {
                        // Dropping the transaction rolls back what went before.
                        return Err(StoreError::Conflict);
                    }
                }
            }
            tx.commit().map_err(db)
        })
        .await
    }

    async fn apply_state_changes(&self, changes: Vec<StateChange>) -> StoreResult<()> {
        self.with(move |conn| {
            let tx = conn.transaction().map_err(db)?;
            for change in &changes {
                match change {
                    StateChange::Status {
                        node_id,
                        status,
                        reason,
                        at,
                    } => {
                        let (id, status, at) = (node_id.to_string(), status_str(*status), micros(*at));
                        tx.prepare_cached(
                            "INSERT INTO status_history (node_id, at, status, reason) VALUES (?1, ?2, ?3, ?4)",
                        )
                        .and_then(|mut st| st.execute(params![id, at, status, reason]))
                        .map_err(db)?;
                        tx.prepare_cached(
                            "UPDATE nodes SET status = ?2, last_seen = MAX(COALESCE(last_seen, 0), ?3) WHERE id = ?1",
                        )
                        .and_then(|mut st| st.execute(params![id, status, at]))
                        .map_err(db)?;
                    }
                    StateChange::Command {
                        request_id,
                        state,
                        at,
                    } => {
                        tx.prepare_cached(
                            "UPDATE commands SET state = ?2, updated_at = ?3 WHERE request_id = ?1
                             AND state IN ('queued', 'sent', 'held', 'approved')",
                        )
                        .and_then(|mut st| {
                            st.execute(params![request_id.to_string(), state.as_str(), micros(*at)])
                        })
                        .map_err(db)?;
                    }
                    StateChange::Rollout {
                        rollout_id,
                        state,
                        at,
                    } => {
                        tx.prepare_cached(
                            "UPDATE rollouts SET state = ?2, updated_at = ?3 WHERE id = ?1",
                        )
                        .and_then(|mut st| {
                            st.execute(params![rollout_id.to_string(), state.as_str(), micros(*at)])
                        })
                        .map_err(db)?;
                    }
                    StateChange::RolloutTarget {
                        rollout_id,
                        node_id,
                        state,
                        at,
                    } => {
                        tx.prepare_cached(
                            "UPDATE rollout_targets SET state = ?3, updated_at = ?4
                             WHERE rollout_id = ?1 AND node_id = ?2",
                        )
                        .and_then(|mut st| {
                            st.execute(params![
                                rollout_id.to_string(),
                                node_id.to_string(),
                                state.as_str(),
                                micros(*at)
                            ])
                        })
                        .map_err(db)?;
                    }
                }
            }
            audit_batch(&tx, super::audit::state_batch(&changes))?;
            tx.commit().map_err(db)
        })
        .await
    }

    async fn record_results(
        &self,
        rows: Vec<(NodeId, CommandResult)>,
        at: WallTime,
    ) -> StoreResult<Vec<ResultRecord>> {
        self.with(move |conn| {
            let tx = conn.transaction().map_err(db)?;
            let mut owners = std::collections::HashMap::new();
            {
                let mut owner = tx
                    .prepare_cached(
                        "SELECT node_id, result IS NOT NULL FROM commands WHERE request_id = ?1",
                    )
                    .map_err(db)?;
                for (_, result) in &rows {
                    let found = owner
                        .query_row([result.request_id.to_string()], |row| {
                            Ok((row.get::<_, String>(0)?, row.get::<_, bool>(1)?))
                        })
                        .optional()
                        .map_err(db)?;
                    if let Some((node, answered)) = found {
                        let node = node
                            .parse::<NodeId>()
                            .map_err(|e| StoreError::Corrupt(format!("node id {node}: {e}")))?;
                        owners.insert(result.request_id, (node, answered));
                    }
                }
            }
            let records = super::sort_results(&rows, owners);
            {
                let mut update = tx
                    .prepare_cached(
                        "UPDATE commands SET result = ?2, updated_at = ?3 WHERE request_id = ?1 AND result IS NULL",
                    )
                    .map_err(db)?;
                for ((_, result), record) in rows.iter().zip(&records) {
                    if *record == (ResultRecord::Stored { first: true }) {
                        update
                            .execute(params![result.request_id.to_string(), json(result)?, micros(at)])
                            .map_err(db)?;
                    }
                }
            }
            audit_batch(&tx, super::audit::results_batch(&rows, &records, at))?;
            tx.commit().map_err(db)?;
            Ok(records)
        })
        .await
    }

    async fn spend_token_ids(&self, tokens: Vec<SpentToken>) -> StoreResult<Vec<bool>> {
        self.with(move |conn| {
            let tx = conn.transaction().map_err(db)?;
            let mut spent = Vec::with_capacity(tokens.len());
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT OR IGNORE INTO spent_tokens (jti, node_id, keep_until) VALUES (?1, ?2, ?3)",
                    )
                    .map_err(db)?;
                for token in &tokens {
                    let inserted = insert
                        .execute(params![
                            token.jti.to_string(),
                            token.node_id.to_string(),
                            micros(token.keep_until)
                        ])
                        .map_err(db)?;
                    spent.push(inserted == 1);
                }
            }
            tx.commit().map_err(db)?;
            Ok(spent)
        })
        .await
    }

    async fn forget_spent_token_ids(&self, now: WallTime) -> StoreResult<u64> {
        self.with(move |conn| {
            let gone = conn
                .execute(
                    "DELETE FROM spent_tokens WHERE keep_until < ?1",
                    [micros(now)],
                )
                .map_err(db)?;
            Ok(u64::try_from(gone).unwrap_or(u64::MAX))
        })
        .await
    }

    async fn get_command(&self, id: RequestId) -> StoreResult<Option<CommandRecord>> {
        self.with(move |conn| {
            conn.query_row(
                &format!("SELECT {COMMAND_COLUMNS} FROM commands WHERE request_id = ?1"),
                [id.to_string()],
                command_from_row,
            )
            .optional()
            .map_err(db)?
            .map(finish_command)
            .transpose()
        })
        .await
    }

    async fn insert_rollout(
        &self,
        rollout: RolloutRecord,
        targets: Vec<RolloutTargetRecord>,
    ) -> StoreResult<()> {
        self.with(move |conn| {
            let tx = conn.transaction().map_err(db)?;
            let inserted = tx
                .execute(
                    "INSERT OR IGNORE INTO rollouts (id, requester, message, strategy, limits, selector, state, start_at, created_at, updated_at, approval)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                    params![
                        rollout.id.to_string(),
                        rollout.requester,
                        rollout.message.to_string(),
                        rollout.strategy.to_string(),
                        rollout.limits.to_string(),
                        rollout.selector,
                        rollout.state.as_str(),
                        micros(rollout.start_at),
                        micros(rollout.created_at),
                        micros(rollout.updated_at),
                        rollout
                            .approval
                            .as_ref()
                            .map(|a| serde_json::to_string(a).unwrap_or_default()),
                    ],
                )
                .map_err(db)?;
            if inserted == 0 {
                return Err(StoreError::Conflict);
            }
            {
                let mut st = tx
                    .prepare_cached(
                        "INSERT INTO rollout_targets (rollout_id, position, node_id, request_id, state, updated_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )
                    .map_err(db)?;
                for t in &targets {
                    st.execute(params![
                        rollout.id.to_string(),
                        t.position,
                        t.node_id.to_string(),
                        t.request_id.to_string(),
                        t.state.as_str(),
                        micros(rollout.created_at),
                    ])
                    .map_err(db)?;
                }
            }
            tx.commit().map_err(db)
        })
        .await
    }

    async fn get_rollout(
        &self,
        id: RolloutId,
    ) -> StoreResult<Option<(RolloutRecord, Vec<RolloutTargetRecord>)>> {
        self.with(move |conn| {
            let Some(row) = conn
                .query_row(
                    &format!("SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE id = ?1"),
                    [id.to_string()],
                    rollout_from_row,
                )
                .optional()
                .map_err(db)?
            else {
                return Ok(None);
            };
            let rollout = finish_rollout(row)?;
            let mut stmt = conn
                .prepare(
                    "SELECT position, node_id, request_id, state FROM rollout_targets
                     WHERE rollout_id = ?1 ORDER BY position",
                )
                .map_err(db)?;
            let rows = stmt
                .query_map([id.to_string()], |r| {
                    Ok((
                        r.get::<_, u32>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                })
                .map_err(db)?;
            let mut targets = Vec::new();
            for row in rows {
                let (position, node, request, state) = row.map_err(db)?;
                targets.push(RolloutTargetRecord {
                    position,
                    node_id: node.parse().map_err(|_| StoreError::Corrupt(node))?,
                    request_id: request.parse().map_err(|_| StoreError::Corrupt(request))?,
                    state: TargetState::from_name(&state).ok_or(StoreError::Corrupt(state))?,
                });
            }
            Ok(Some((rollout, targets)))
        })
        .await
    }

    async fn rollouts_in(&self, states: &[RolloutState]) -> StoreResult<Vec<RolloutRecord>> {
        let names: Vec<String> = states.iter().map(|s| s.as_str().to_owned()).collect();
        self.with(move |conn| {
            let marks = vec!["?"; names.len()].join(", ");
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE state IN ({marks})
                     ORDER BY created_at, id"
                ))
                .map_err(db)?;
            let rows = stmt
                .query_map(rusqlite::params_from_iter(names.iter()), rollout_from_row)
                .map_err(db)?;
            rows.map(|r| finish_rollout(r.map_err(db)?)).collect()
        })
        .await
    }

    async fn list_rollouts(
        &self,
        before: Option<(WallTime, RolloutId)>,
        limit: u32,
    ) -> StoreResult<Vec<RolloutRecord>> {
        self.with(move |conn| {
            let (at, id) = before.map_or((i64::MAX, String::new()), |(at, id)| {
                (micros(at), id.to_string())
            });
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT {ROLLOUT_COLUMNS} FROM rollouts
                     WHERE ?1 = '' OR created_at < ?2 OR (created_at = ?2 AND id < ?1)
                     ORDER BY created_at DESC, id DESC LIMIT ?3"
                ))
                .map_err(db)?;
            let rows = stmt
                .query_map(params![id, at, limit], rollout_from_row)
                .map_err(db)?;
            rows.map(|r| r.map_err(db).and_then(finish_rollout))
                .collect()
        })
        .await
    }

    async fn open_commands(&self) -> StoreResult<Vec<CommandRecord>> {
        self.with(|conn| {
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT {COMMAND_COLUMNS} FROM commands WHERE state IN ('queued', 'sent', 'held', 'approved') ORDER BY created_at, rowid"
                ))
                .map_err(db)?;
            let rows = stmt.query_map([], command_from_row).map_err(db)?;
            rows.map(|r| r.map_err(db).and_then(finish_command)).collect()
        })
        .await
    }

    async fn command_states(
        &self,
        ids: Vec<RequestId>,
    ) -> StoreResult<Vec<(RequestId, CommandState)>> {
        self.with(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT state FROM commands WHERE request_id = ?1")
                .map_err(db)?;
            let mut found = Vec::new();
            for id in ids {
                let state: Option<String> = stmt
                    .query_row([id.to_string()], |row| row.get(0))
                    .optional()
                    .map_err(db)?;
                if let Some(state) = state {
                    let state = CommandState::from_name(&state)
                        .ok_or_else(|| StoreError::Corrupt(format!("command state {state:?}")))?;
                    found.push((id, state));
                }
            }
            Ok(found)
        })
        .await
    }

    async fn open_commands_for(&self, nodes: Vec<NodeId>) -> StoreResult<Vec<CommandRecord>> {
        self.with(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {COMMAND_COLUMNS} FROM commands WHERE node_id = ?1 AND state IN ('queued', 'sent', 'held', 'approved') ORDER BY created_at, rowid"
                ))
                .map_err(db)?;
            let mut open = Vec::new();
            for node in nodes {
                let rows = stmt.query_map([node.to_string()], command_from_row).map_err(db)?;
                for row in rows {
                    open.push(row.map_err(db).and_then(finish_command)?);
                }
            }
            open.sort_by_key(|c| c.created_at);
            Ok(open)
        })
        .await
    }

    async fn expire_queued_commands(
        &self,
        created_before: WallTime,
        at: WallTime,
    ) -> StoreResult<Vec<RequestId>> {
        self.with(move |conn| {
            let mut stmt = conn
                .prepare(
                    "UPDATE commands SET state = 'expired', updated_at = ?2
                     WHERE state = 'queued' AND created_at < ?1 RETURNING request_id",
                )
                .map_err(db)?;
            let rows = stmt
                .query_map(params![micros(created_before), micros(at)], |r| {
                    r.get::<_, String>(0)
                })
                .map_err(db)?;
            rows.map(|r| {
                let text = r.map_err(db)?;
                text.parse::<RequestId>()
                    .map_err(|e| StoreError::Database(format!("stored request id {text:?}: {e}")))
            })
            .collect()
        })
        .await
    }

    async fn append_audit(
        &self,
        actor: &str,
        action: &str,
        subject: &str,
        detail: serde_json::Value,
        at: WallTime,
    ) -> StoreResult<AuditEntry> {
        let (actor, action, subject) = (actor.to_owned(), action.to_owned(), subject.to_owned());
        self.with(move |conn| {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(db)?;
            let entry = chain_append(&tx, &actor, &action, &subject, detail, at)?;
            tx.commit().map_err(db)?;
            Ok(entry)
        })
        .await
    }

    async fn list_audit(&self, limit: u32) -> StoreResult<Vec<AuditEntry>> {
        self.with(move |conn| {
            let mut stmt = conn
                .prepare("SELECT seq, at, actor, action, subject, detail, prev_hash, hash FROM audit ORDER BY seq DESC LIMIT ?1")
                .map_err(db)?;
            let rows = stmt.query_map([limit], audit_from_row).map_err(db)?;
            rows.map(|r| r.map_err(db)).collect()
        })
        .await
    }

    async fn all_audit(&self) -> StoreResult<Vec<AuditEntry>> {
        self.with(|conn| {
            let mut stmt = conn
                .prepare("SELECT seq, at, actor, action, subject, detail, prev_hash, hash FROM audit ORDER BY seq")
                .map_err(db)?;
            let rows = stmt.query_map([], audit_from_row).map_err(db)?;
            rows.map(|r| r.map_err(db)).collect()
        })
        .await
    }

    async fn create_api_token(
        &self,
        hash: &str,
        record: TokenRecord,
        at: WallTime,
    ) -> StoreResult<()> {
        let hash = hash.to_owned();
        self.with(move |conn| {
            conn.execute(
                "INSERT INTO api_tokens (hash, name, role, created_at, user_name) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![hash, record.name, record.role, micros(at), record.user],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn add_to_group(&self, user: &str, group: &str) -> StoreResult<()> {
        let (user, group) = (user.to_owned(), group.to_owned());
        self.with(move |conn| {
            conn.execute(
                "INSERT OR IGNORE INTO user_groups (user_name, group_name) VALUES (?1, ?2)",
                params![user, group],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn groups_of(&self, user: &str) -> StoreResult<Vec<String>> {
        let user = user.to_owned();
        self.with(move |conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT group_name FROM user_groups WHERE user_name = ?1 ORDER BY group_name",
                )
                .map_err(db)?;
            let rows = stmt.query_map([user], |r| r.get(0)).map_err(db)?;
            rows.map(|r| r.map_err(db)).collect()
        })
        .await
    }

    async fn add_rollout_approver(
        &self,
        rollout_id: RolloutId,
        user: &str,
        signature: Option<&SignedApproval>,
    ) -> StoreResult<()> {
        let (user, signature) = (user.to_owned(), signature.cloned());
        self.with(move |conn| {
            add_approver_to(
                conn,
                Approvable::Rollout,
                rollout_id.to_string(),
                user,
                signature,
            )
        })
        .await
    }

    async fn add_approver(
        &self,
        request_id: RequestId,
        user: &str,
        signature: Option<&SignedApproval>,
    ) -> StoreResult<()> {
        let (user, signature) = (user.to_owned(), signature.cloned());
        self.with(move |conn| {
            add_approver_to(
                conn,
                Approvable::Command,
                request_id.to_string(),
                user,
                signature,
            )
        })
        .await
    }

    async fn pending_approvals(&self) -> StoreResult<Vec<CommandRecord>> {
        self.with(|conn| {
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT {COMMAND_COLUMNS} FROM commands WHERE approval IS NOT NULL AND state IN ('queued', 'held') ORDER BY created_at, rowid"
                ))
                .map_err(db)?;
            let rows = stmt.query_map([], command_from_row).map_err(db)?;
            rows.map(|r| r.map_err(db).and_then(finish_command)).collect()
        })
        .await
    }

    async fn find_api_token(&self, hash: &str) -> StoreResult<Option<TokenRecord>> {
        let hash = hash.to_owned();
        self.with(move |conn| {
            conn.query_row(
                "SELECT name, role, user_name FROM api_tokens WHERE hash = ?1",
                [hash],
                |r| {
                    Ok(TokenRecord {
                        name: r.get(0)?,
                        role: r.get(1)?,
                        user: r.get(2)?,
                    })
                },
            )
            .optional()
            .map_err(db)
        })
        .await
    }

    async fn insert_event(
        &self,
        kind: &str,
        detail: serde_json::Value,
        at: WallTime,
    ) -> StoreResult<()> {
        let kind = kind.to_owned();
        self.with(move |conn| {
            conn.execute(
                "INSERT INTO events (at, kind, detail) VALUES (?1, ?2, ?3)",
                params![micros(at), kind, detail.to_string()],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }
}
