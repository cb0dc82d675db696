//! PostgreSQL through tokio-postgres (pooled by deadpool). Telemetry goes in
//! with binary COPY into a per-transaction staging table, then one
//! `INSERT … ON CONFLICT DO NOTHING`, which makes replays idempotent. With
//! TimescaleDB the table is a hypertable; without, it is range-partitioned
//! by day.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use nap_core::central::ResultRecord;
use nap_core::central::rollout::{RolloutState, TargetState};
use nap_core::wire::{Alert, CommandResult, Health, NodeStatus, SignedApproval, Telemetry};
use nap_core::{NodeId, RequestId, RolloutId, WallTime};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{Json, Type};
use tokio_postgres::{NoTls, Row};
use uuid::Uuid;

use super::{
    AlertRecord, AuditEntry, CommandRecord, NodeRecord, RolloutRecord, RolloutTargetRecord,
    SpentToken, StateChange, Storage, StoreError, StoreResult, TelemetryPoint, TokenRecord,
    parse_rollout_state, parse_status, status_str, telemetry_summary,
};

/// How telemetry is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TelemetryMode {
    Timescale,
    Partitioned,
}

/// TimescaleDB's view of the telemetry table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimescaleFacts {
    pub hypertable: bool,
    pub compression: bool,
    /// Background jobs by application name.
    pub jobs: Vec<String>,
    pub continuous_aggregate: bool,
}

/// The PostgreSQL backend.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    /// Permits for what nodes write in bulk (telemetry, health, alerts,
    /// events): fewer than the pool holds, so that a slow database filling
    /// up with those never keeps admission (node lookups, spent tokens),
    /// commands or the operator API waiting for a connection.
    bulk: Arc<Semaphore>,
}

/// Connections kept from bulk writes when the pool has more than two.
const RESERVED: usize = 2;

/// A connection taken for a bulk write, with its permit.
struct BulkClient {
    client: deadpool_postgres::Object,
    _permit: OwnedSemaphorePermit,
}

impl std::ops::Deref for BulkClient {
    type Target = deadpool_postgres::Object;
    fn deref(&self) -> &Self::Target {
        &self.client
    }
}

impl std::ops::DerefMut for BulkClient {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.client
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

/// The error with its causes: tokio-postgres puts the server's message in
/// the source ("db error: ERROR: relation … does not exist").
fn db(e: impl std::error::Error) -> StoreError {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    StoreError::Database(text)
}

/// A unique violation is `Conflict` (the row exists); anything else is the
/// database's error.
fn conflict_or_db(e: &tokio_postgres::Error) -> StoreError {
    if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
        StoreError::Conflict
    } else {
        db(e)
    }
}

fn ts(t: WallTime) -> DateTime<Utc> {
    t.as_datetime()
}

fn wall(t: DateTime<Utc>) -> WallTime {
    WallTime::from(t)
}

fn uuid(id: impl Into<Uuid>) -> Uuid {
    id.into()
}

impl PgStore {
    /// Counts `user`'s approval in the stored request of the row `id` of
    /// `table` (keyed by `key`): once per person, in one statement, so two
    /// processes counting at once both land.
    async fn add_approver_to(
        &self,
        table: &'static str,
        key: &'static str,
        id: Uuid,
        user: &str,
        signature: Option<&SignedApproval>,
    ) -> StoreResult<()> {
        let client = self.client().await?;
        let signatures = match signature {
            Some(s) => serde_json::json!([s]),
            None => serde_json::json!([]),
        };
        client
            .execute(
                &format!(
                    "UPDATE {table} SET approval = jsonb_set(jsonb_set(approval, '{{approvedBy}}',
                         COALESCE(approval->'approvedBy', '[]'::jsonb) || to_jsonb($2::text)),
                         '{{signatures}}', COALESCE(approval->'signatures', '[]'::jsonb) || $3::jsonb)
                     WHERE {key} = $1 AND approval IS NOT NULL
                       AND NOT COALESCE(approval->'approvedBy', '[]'::jsonb) ? $2"
                ),
                &[&uuid(id), &user, &signatures],
            )
            .await
            .map_err(db)?;
        Ok(())
    }
    /// Connects to `url` (a `postgres://` URL). With `schema`, every
    /// connection works in that schema (created if missing): tests use one
    /// schema each.
    pub async fn connect(url: &str, schema: Option<&str>, pool_size: usize) -> StoreResult<Self> {
        let mut config: tokio_postgres::Config = url.parse().map_err(db)?;
        config.connect_timeout(Duration::from_secs(5));
        if let Some(schema) = schema {
            let (client, conn) = config.connect(NoTls).await.map_err(db)?;
            let task = tokio::spawn(conn);
            client
                .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
                .await
                .map_err(db)?;
            drop(client);
            let _ = task.await;
            config.options(format!("-c search_path=\"{schema}\",public"));
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(5)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(db)?;
        let bulk = if pool_size > RESERVED {
            pool_size - RESERVED
        } else {
            1
        };
        Ok(Self {
            pool,
            bulk: Arc::new(Semaphore::new(bulk)),
        })
    }

    /// Drops a schema and everything in it (tests start from a clean one).
    pub async fn drop_schema(url: &str, schema: &str) -> StoreResult<()> {
        let config: tokio_postgres::Config = url.parse().map_err(db)?;
        let (client, conn) = config.connect(NoTls).await.map_err(db)?;
        let task = tokio::spawn(conn);
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .await
            .map_err(db)?;
        drop(client);
        let _ = task.await;
        Ok(())
    }

    async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        self.pool.get().await.map_err(db)
    }

    /// A connection for a bulk write: waits for a permit first (without
    /// the pool's timeout: a write waiting its turn has not failed).
    async fn bulk_client(&self) -> StoreResult<BulkClient> {
        let permit = Arc::clone(&self.bulk)
            .acquire_owned()
            .await
            .map_err(|e| StoreError::Database(e.to_string()))?;
        Ok(BulkClient {
            client: self.client().await?,
            _permit: permit,
        })
    }

    /// How telemetry is laid out (after `migrate`).
    pub async fn telemetry_mode(&self) -> StoreResult<TelemetryMode> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT value FROM settings WHERE key = 'telemetry_mode'",
                &[],
            )
            .await
            .map_err(db)?;
        match row.map(|r| r.get::<_, String>(0)).as_deref() {
            Some("timescaledb") => Ok(TelemetryMode::Timescale),
            _ => Ok(TelemetryMode::Partitioned),
        }
    }

    /// What TimescaleDB reports about the telemetry table (for tests and `--check`).
    pub async fn timescale_facts(&self) -> StoreResult<TimescaleFacts> {
        let client = self.client().await?;
        let hypertable = client
            .query_opt("SELECT 1 FROM timescaledb_information.hypertables WHERE hypertable_name = 'telemetry'", &[])
            .await
            .map_err(db)?
            .is_some();
        let compression = client
            .query_opt(
                "SELECT 1 FROM timescaledb_information.hypertables WHERE hypertable_name = 'telemetry' AND compression_enabled",
                &[],
            )
            .await
            .map_err(db)?
            .is_some();
        let jobs = client
            .query(
                "SELECT application_name FROM timescaledb_information.jobs ORDER BY job_id",
                &[],
            )
            .await
            .map_err(db)?
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect();
        let continuous_aggregate = client
            .query_opt("SELECT 1 FROM timescaledb_information.continuous_aggregates WHERE view_name = 'telemetry_1m'", &[])
            .await
            .map_err(db)?
            .is_some();
        Ok(TimescaleFacts {
            hypertable,
            compression,
            jobs,
            continuous_aggregate,
        })
    }

    /// Inserts telemetry with plain `INSERT`s instead of `COPY`, for servers
    /// that do not speak the COPY sub-protocol (PGlite, the TimescaleDB test
    /// fixture). Same idempotence; slower.
    pub async fn insert_telemetry_plain(&self, batch: &[Telemetry]) -> StoreResult<u64> {
        let mut client = self.bulk_client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let mut inserted = 0;
        for t in batch {
            let (cpu, memory, disk) = telemetry_summary(t);
            let data =
                serde_json::to_value(&t.data).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            inserted += tx
                .execute(
                    "INSERT INTO telemetry (node_id, ts, cpu, memory, disk, data) VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (node_id, ts) DO NOTHING",
                    &[&uuid(t.node_id.0), &ts(t.timestamp), &cpu, &memory, &disk, &data],
                )
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(inserted)
    }

    /// Partitioned mode: makes the daily partitions around `now` and drops
    /// those older than `retention`. Timescale mode: its own jobs do this.
    pub async fn maintain(&self, now: WallTime, retention: Duration) -> StoreResult<()> {
        if self.telemetry_mode().await? != TelemetryMode::Partitioned {
            return Ok(());
        }
        let client = self.client().await?;
        let today = now.as_datetime().date_naive();
        // Yesterday (replays after an outage) through the day after tomorrow.
        let yesterday = today - chrono::Days::new(1);
        for day in yesterday.iter_days().take(4) {
            let next = day + chrono::Days::new(1);
            let name = format!("telemetry_{}", day.format("%Y%m%d"));
            let sql = format!(
                "CREATE TABLE IF NOT EXISTS {name} PARTITION OF telemetry FOR VALUES FROM ('{day} 00:00:00+00') TO ('{next} 00:00:00+00')"
            );
            if let Err(e) = client.batch_execute(&sql).await {
                // Rows for that day already sit in the default partition.
                tracing::warn!(partition = %name, error = %e, "could not create telemetry partition");
            }
        }
        let horizon = now.as_datetime()
            - chrono::TimeDelta::from_std(retention).unwrap_or(chrono::TimeDelta::MAX);
        let rows = client
            .query(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                 JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'telemetry' AND c.relname ~ '^telemetry_[0-9]{8}$'",
                &[],
            )
            .await
            .map_err(db)?;
        for row in rows {
            let name: String = row.get(0);
            let Ok(day) = chrono::NaiveDate::parse_from_str(&name["telemetry_".len()..], "%Y%m%d")
            else {
                continue;
            };
            if day
                .and_hms_opt(0, 0, 0)
                .map(|d| d.and_utc() + chrono::TimeDelta::days(1))
                < Some(horizon)
            {
                client
                    .batch_execute(&format!("DROP TABLE IF EXISTS {name}"))
                    .await
                    .map_err(db)?;
                tracing::info!(partition = %name, "dropped telemetry partition past retention");
            }
        }
        Ok(())
    }
}

fn node_from_row(r: &Row) -> NodeRecord {
    let labels: Json<std::collections::BTreeMap<String, String>> = r.get(3);
    let status: Option<String> = r.get(6);
    NodeRecord {
        id: NodeId::from(r.get::<_, Uuid>(0)),
        name: r.get(1),
        public_key_pem: r.get(2),
        labels: labels.0,
        created_at: wall(r.get(4)),
        revoked: r.get::<_, Option<DateTime<Utc>>>(5).is_some(),
        status: status.as_deref().and_then(parse_status),
        last_seen: r.get::<_, Option<DateTime<Utc>>>(7).map(wall),
        agent_version: r.get(8),
    }
}

const NODE_COLUMNS: &str =
    "id, name, public_key_pem, labels, created_at, revoked_at, status, last_seen, agent_version";
/// Migrations after the first (which depends on TimescaleDB being there).
const LATER_MIGRATIONS: &[(i64, &str)] = &[
    (2, include_str!("sql/postgres_0002.sql")),
    (3, include_str!("sql/postgres_0003.sql")),
    (4, include_str!("sql/postgres_0004.sql")),
    (5, include_str!("sql/postgres_0005.sql")),
    (6, include_str!("sql/postgres_0006.sql")),
    (7, include_str!("sql/postgres_0007.sql")),
];

const ROLLOUT_COLUMNS: &str = "id, requester, message, strategy, limits, selector, state, start_at, created_at, updated_at, approval";

fn rollout_from_row(r: &Row) -> StoreResult<RolloutRecord> {
    let state: String = r.get(6);
    let approval: Option<serde_json::Value> = r.get(10);
    Ok(RolloutRecord {
        id: RolloutId::from(r.get::<_, Uuid>(0)),
        requester: r.get(1),
        message: r.get(2),
        strategy: r.get(3),
        limits: r.get(4),
        selector: r.get(5),
        state: parse_rollout_state(&state).ok_or(StoreError::Corrupt(state))?,
        start_at: wall(r.get(7)),
        created_at: wall(r.get(8)),
        updated_at: wall(r.get(9)),
        approval: approval
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
    })
}

const COMMAND_COLUMNS: &str = "request_id, node_id, kind, message, state, requester, approver, timeout_ms, created_at, updated_at, result, approval";

fn command_from_row(r: &Row) -> StoreResult<CommandRecord> {
    let result: Option<serde_json::Value> = r.get(10);
    let approval: Option<serde_json::Value> = r.get(11);
    Ok(CommandRecord {
        request_id: RequestId::from(r.get::<_, Uuid>(0)),
        node_id: NodeId::from(r.get::<_, Uuid>(1)),
        kind: r.get(2),
        message: r.get(3),
        state: super::parse_state(r.get(4))?,
        requester: r.get(5),
        approver: r.get(6),
        timeout_ms: u64::try_from(r.get::<_, i64>(7)).unwrap_or(0),
        created_at: wall(r.get(8)),
        updated_at: wall(r.get(9)),
        result: result
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        approval: approval
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
    })
}

/// Appends one entry to the audit chain inside `tx` (the caller commits).
/// The chain is a sequence: one appender at a time across all processes,
/// by a lock held to the commit — taken last, so its holder waits for
/// nothing else.
async fn chain_append(
    tx: &tokio_postgres::Transaction<'_>,
    actor: &str,
    action: &str,
    subject: &str,
    detail: serde_json::Value,
    at: WallTime,
) -> StoreResult<AuditEntry> {
    tx.execute("SELECT pg_advisory_xact_lock(7046171)", &[])
        .await
        .map_err(db)?;
    let last = tx
        .query_opt("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", &[])
        .await
        .map_err(db)?;
    let last = last.map(|r| {
        (
            u64::try_from(r.get::<_, i64>(0)).unwrap_or(0),
            r.get::<_, String>(1),
        )
    });
    let e = AuditEntry::after(last, at, actor, action, subject, detail);
    tx.execute(
        "INSERT INTO audit (seq, at, actor, action, subject, detail, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[&i64::try_from(e.seq).unwrap_or(i64::MAX), &ts(e.at), &e.actor, &e.action, &e.subject, &e.detail, &e.prev_hash, &e.hash],
    )
    .await
    .map_err(db)?;
    Ok(e)
}

/// The batch's own audit record, in its transaction.
async fn audit_batch(
    tx: &tokio_postgres::Transaction<'_>,
    record: Option<super::BatchRecord>,
) -> StoreResult<()> {
    if let Some(r) = record {
        chain_append(tx, "central", r.action, &r.subject, r.detail, r.at).await?;
    }
    Ok(())
}

fn audit_from_row(r: &Row) -> AuditEntry {
    AuditEntry {
        seq: u64::try_from(r.get::<_, i64>(0)).unwrap_or(0),
        at: wall(r.get(1)),
        actor: r.get(2),
        action: r.get(3),
        subject: r.get(4),
        detail: r.get(5),
        prev_hash: r.get(6),
        hash: r.get(7),
    }
}

impl Storage for PgStore {
    async fn migrate(&self) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        // One migrator at a time, whichever central instance starts first.
        tx.execute("SELECT pg_advisory_xact_lock(7046170)", &[])
            .await
            .map_err(db)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .await
        .map_err(db)?;
        let done = tx
            .query_opt(
                "SELECT version FROM schema_migrations WHERE version = 1",
                &[],
            )
            .await
            .map_err(db)?;
        if done.is_none() {
            tx.batch_execute(include_str!("sql/postgres_0001.sql"))
                .await
                .map_err(db)?;
            let timescale = tx
                .query_opt(
                    "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'",
                    &[],
                )
                .await
                .map_err(db)?
                .is_some();
            if timescale {
                tx.batch_execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
                    .await
                    .map_err(db)?;
                tx.batch_execute(include_str!("sql/postgres_timescale.sql"))
                    .await
                    .map_err(db)?;
            } else {
                tx.batch_execute(include_str!("sql/postgres_partitioned.sql"))
                    .await
                    .map_err(db)?;
            }
            tx.execute("INSERT INTO schema_migrations (version) VALUES (1)", &[])
                .await
                .map_err(db)?;
        }
        for (version, sql) in LATER_MIGRATIONS {
            let done = tx
                .query_opt(
                    "SELECT version FROM schema_migrations WHERE version = $1",
                    &[version],
                )
                .await
                .map_err(db)?;
            if done.is_none() {
                tx.batch_execute(sql).await.map_err(db)?;
                tx.execute(
                    "INSERT INTO schema_migrations (version) VALUES ($1)",
                    &[version],
                )
                .await
                .map_err(db)?;
            }
        }
        tx.commit().await.map_err(db)?;
        // Give the connection back first: a pool may hold just one (PGlite).
        drop(client);
        self.maintain(WallTime::from(Utc::now()), Duration::from_secs(90 * 86_400))
            .await
    }

    async fn add_node(&self, node: NodeRecord) -> StoreResult<()> {
        let client = self.client().await?;
        let n = client
            .execute(
                "INSERT INTO nodes (id, name, public_key_pem, labels, created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                &[&uuid(node.id.0), &node.name, &node.public_key_pem, &Json(&node.labels), &ts(node.created_at)],
            )
            .await
            .map_err(db)?;
        if n == 0 {
            Err(StoreError::Conflict)
        } else {
            Ok(())
        }
    }

    async fn list_nodes(&self) -> StoreResult<Vec<NodeRecord>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY name, id"),
                &[],
            )
            .await
            .map_err(db)?;
        Ok(rows.iter().map(node_from_row).collect())
    }

    async fn get_node(&self, id: NodeId) -> StoreResult<Option<NodeRecord>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {NODE_COLUMNS} FROM nodes WHERE id = $1"),
                &[&uuid(id.0)],
            )
            .await
            .map_err(db)?;
        Ok(row.as_ref().map(node_from_row))
    }

    async fn revoked_nodes(&self) -> StoreResult<Vec<NodeId>> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT id FROM nodes WHERE revoked_at IS NOT NULL", &[])
            .await
            .map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| NodeId::from(r.get::<_, Uuid>(0)))
            .collect())
    }

    async fn revoke_node(&self, id: NodeId) -> StoreResult<bool> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE nodes SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1",
                &[&uuid(id.0)],
            )
            .await
            .map_err(db)?;
        Ok(n > 0)
    }

    async fn touch_node(
        &self,
        id: NodeId,
        at: WallTime,
        agent_version: Option<String>,
    ) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE nodes SET last_seen = GREATEST(last_seen, $2), agent_version = COALESCE($3, agent_version) WHERE id = $1",
                &[&uuid(id.0), &ts(at), &agent_version],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn status_history(&self, id: NodeId) -> StoreResult<Vec<(WallTime, NodeStatus)>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT at, status FROM status_history WHERE node_id = $1 ORDER BY at, id",
                &[&uuid(id.0)],
            )
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                let status: String = r.get(1);
                parse_status(&status)
                    .map(|s| (wall(r.get(0)), s))
                    .ok_or(StoreError::Corrupt(status))
            })
            .collect()
    }

    async fn insert_telemetry(&self, batch: &[Telemetry]) -> StoreResult<u64> {
        if batch.is_empty() {
            return Ok(0);
        }
        let mut client = self.bulk_client().await?;
        let tx = client.transaction().await.map_err(db)?;
        tx.batch_execute(
            "CREATE TEMP TABLE IF NOT EXISTS telemetry_stage (node_id UUID, ts TIMESTAMPTZ, cpu DOUBLE PRECISION,
             memory DOUBLE PRECISION, disk DOUBLE PRECISION, data JSONB) ON COMMIT DELETE ROWS",
        )
        .await
        .map_err(db)?;
        let sink = tx
            .copy_in("COPY telemetry_stage (node_id, ts, cpu, memory, disk, data) FROM STDIN (FORMAT binary)")
            .await
            .map_err(db)?;
        let types = [
            Type::UUID,
            Type::TIMESTAMPTZ,
            Type::FLOAT8,
            Type::FLOAT8,
            Type::FLOAT8,
            Type::JSONB,
        ];
        let writer = BinaryCopyInWriter::new(sink, &types);
        futures_util::pin_mut!(writer);
        for t in batch {
            let (cpu, memory, disk) = telemetry_summary(t);
            let data =
                serde_json::to_value(&t.data).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            writer
                .as_mut()
                .write(&[
                    &uuid(t.node_id.0),
                    &ts(t.timestamp),
                    &cpu,
                    &memory,
                    &disk,
                    &data,
                ])
                .await
                .map_err(db)?;
        }
        writer.finish().await.map_err(db)?;
        let inserted = tx
            .execute(
                "INSERT INTO telemetry (node_id, ts, cpu, memory, disk, data)
                 SELECT DISTINCT ON (node_id, ts) node_id, ts, cpu, memory, disk, data FROM telemetry_stage
                 ON CONFLICT (node_id, ts) DO NOTHING",
                &[],
            )
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(inserted)
    }

    async fn query_telemetry(
        &self,
        id: NodeId,
        from: WallTime,
        to: WallTime,
        bucket: Option<Duration>,
    ) -> StoreResult<Vec<TelemetryPoint>> {
        let client = self.client().await?;
        match bucket {
            None => {
                let rows = client
                    .query(
                        "SELECT ts, cpu, memory, disk, data FROM telemetry WHERE node_id = $1 AND ts >= $2 AND ts < $3 ORDER BY ts",
                        &[&uuid(id.0), &ts(from), &ts(to)],
                    )
                    .await
                    .map_err(db)?;
                Ok(rows
                    .iter()
                    .map(|r| TelemetryPoint {
                        timestamp: wall(r.get(0)),
                        cpu: r.get(1),
                        memory: r.get(2),
                        disk: r.get(3),
                        samples: 1,
                        data: Some(r.get(4)),
                    })
                    .collect())
            }
            Some(bucket) => {
                let seconds = i64::try_from(bucket.as_secs().max(1)).unwrap_or(i64::MAX);
                let rows = client
                    .query(
                        "SELECT to_timestamp(floor(extract(epoch FROM ts)::float8 / $4::float8) * $4::float8) AS b,
                                avg(cpu), avg(memory), avg(disk), count(*)
                         FROM telemetry WHERE node_id = $1 AND ts >= $2 AND ts < $3 GROUP BY b ORDER BY b",
                        &[&uuid(id.0), &ts(from), &ts(to), &(seconds as f64)],
                    )
                    .await
                    .map_err(db)?;
                Ok(rows
                    .iter()
                    .map(|r| TelemetryPoint {
                        timestamp: wall(r.get(0)),
                        cpu: r.get(1),
                        memory: r.get(2),
                        disk: r.get(3),
                        samples: u64::try_from(r.get::<_, i64>(4)).unwrap_or(0),
                        data: None,
                    })
                    .collect())
            }
        }
    }

    async fn count_telemetry(&self, id: NodeId) -> StoreResult<u64> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT count(*) FROM telemetry WHERE node_id = $1",
                &[&uuid(id.0)],
            )
            .await
            .map_err(db)?;
        Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
    }

    async fn insert_health(&self, id: NodeId, at: WallTime, health: &Health) -> StoreResult<()> {
        let client = self.bulk_client().await?;
        let overall = format!("{:?}", health.overall()).to_lowercase();
        client
            .execute(
                "INSERT INTO health (node_id, at, overall, report) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (node_id, at) DO NOTHING",
                &[&uuid(id.0), &ts(at), &overall, &Json(health)],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn insert_alert(&self, id: NodeId, at: WallTime, alert: &Alert) -> StoreResult<()> {
        let client = self.bulk_client().await?;
        let severity = format!("{:?}", alert.severity).to_lowercase();
        client
            .execute(
                "INSERT INTO alerts (node_id, at, severity, body, alert_id) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (alert_id) DO NOTHING",
                &[
                    &uuid(id.0),
                    &ts(at),
                    &severity,
                    &Json(alert),
                    &alert.alert_id.map(|a| a.0),
                ],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn list_alerts(&self, limit: u32) -> StoreResult<Vec<AlertRecord>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT node_id, at, body FROM alerts ORDER BY at DESC, id DESC LIMIT $1",
                &[&i64::from(limit)],
            )
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                let body: serde_json::Value = r.get(2);
                Ok(AlertRecord {
                    node_id: NodeId::from(r.get::<_, Uuid>(0)),
                    received_at: wall(r.get(1)),
                    alert: serde_json::from_value(body)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                })
            })
            .collect()
    }

    async fn insert_commands(&self, commands: Vec<CommandRecord>) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        // COPY: a fan-out's 10,000 commands in one stream, about twice as
        // fast as one INSERT of arrays. A request id that exists already
        // fails the whole COPY (a unique violation): all or none, as the
        // contract says.
        let sink = tx
            .copy_in(
                "COPY commands (request_id, node_id, kind, message, state, requester, approver, timeout_ms, created_at, updated_at, approval)
                 FROM STDIN (FORMAT binary)",
            )
            .await
            .map_err(db)?;
        let types = [
            Type::UUID,
            Type::UUID,
            Type::TEXT,
            Type::JSONB,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::INT8,
            Type::TIMESTAMPTZ,
            Type::TIMESTAMPTZ,
            Type::JSONB,
        ];
        let writer = BinaryCopyInWriter::new(sink, &types);
        futures_util::pin_mut!(writer);
        for c in &commands {
            let approval = c
                .approval
                .as_ref()
                .map(|a| serde_json::to_value(a).map_err(|e| StoreError::Corrupt(e.to_string())))
                .transpose()?;
            let written = writer
                .as_mut()
                .write(&[
                    &uuid(c.request_id.0),
                    &uuid(c.node_id.0),
                    &c.kind,
                    &c.message,
                    &c.state.as_str(),
                    &c.requester,
                    &c.approver,
                    &i64::try_from(c.timeout_ms).unwrap_or(i64::MAX),
                    &ts(c.created_at),
                    &ts(c.updated_at),
                    &approval,
                ])
                .await;
            if let Err(e) = written {
                return Err(conflict_or_db(&e));
            }
        }
        if let Err(e) = writer.finish().await {
            return Err(conflict_or_db(&e));
        }
        tx.commit().await.map_err(db)
    }

    async fn apply_state_changes(&self, changes: Vec<StateChange>) -> StoreResult<()> {
        // One statement per table, whatever the batch holds: row by row, a
        // fan-out's 40,000 changes are 40,000 round trips.
        let net = super::NetChanges::of(&changes);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        if !net.status_history.is_empty() {
            let h = &net.status_history;
            let ids: Vec<Uuid> = h.iter().map(|c| uuid(c.0.0)).collect();
            let ats: Vec<DateTime<Utc>> = h.iter().map(|c| ts(c.1)).collect();
            let statuses: Vec<&str> = h.iter().map(|c| status_str(c.2)).collect();
            let reasons: Vec<Option<&str>> = h.iter().map(|c| c.3.as_deref()).collect();
            tx.execute(
                "INSERT INTO status_history (node_id, at, status, reason)
                 SELECT * FROM UNNEST($1::uuid[], $2::timestamptz[], $3::text[], $4::text[])",
                &[&ids, &ats, &statuses, &reasons],
            )
            .await
            .map_err(db)?;
            let ids: Vec<Uuid> = net.nodes.iter().map(|c| uuid(c.0.0)).collect();
            let statuses: Vec<&str> = net.nodes.iter().map(|c| status_str(c.1)).collect();
            let ats: Vec<DateTime<Utc>> = net.nodes.iter().map(|c| ts(c.2)).collect();
            tx.execute(
                "UPDATE nodes SET status = n.status, last_seen = GREATEST(nodes.last_seen, n.at)
                 FROM UNNEST($1::uuid[], $2::text[], $3::timestamptz[]) AS n(id, status, at)
                 WHERE nodes.id = n.id",
                &[&ids, &statuses, &ats],
            )
            .await
            .map_err(db)?;
        }
        if !net.commands.is_empty() {
            let ids: Vec<Uuid> = net.commands.iter().map(|c| uuid(c.0.0)).collect();
            let states: Vec<&str> = net.commands.iter().map(|c| c.1.as_str()).collect();
            let ats: Vec<DateTime<Utc>> = net.commands.iter().map(|c| ts(c.2)).collect();
            tx.execute(
                "UPDATE commands SET state = c.state, updated_at = c.at
                 FROM UNNEST($1::uuid[], $2::text[], $3::timestamptz[]) AS c(id, state, at)
                 WHERE commands.request_id = c.id
                   AND commands.state IN ('queued', 'sent', 'held', 'approved')",
                &[&ids, &states, &ats],
            )
            .await
            .map_err(db)?;
        }
        for (rollout_id, state, at) in &net.rollouts {
            tx.execute(
                "UPDATE rollouts SET state = $2, updated_at = $3 WHERE id = $1",
                &[&uuid(rollout_id.0), &state.as_str(), &ts(*at)],
            )
            .await
            .map_err(db)?;
        }
        if !net.targets.is_empty() {
            let t = &net.targets;
            let rollouts: Vec<Uuid> = t.iter().map(|c| uuid(c.0.0)).collect();
            let nodes: Vec<Uuid> = t.iter().map(|c| uuid(c.1.0)).collect();
            let states: Vec<&str> = t.iter().map(|c| c.2.as_str()).collect();
            let ats: Vec<DateTime<Utc>> = t.iter().map(|c| ts(c.3)).collect();
            tx.execute(
                "UPDATE rollout_targets SET state = t.state, updated_at = t.at
                 FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[])
                   AS t(rollout_id, node_id, state, at)
                 WHERE rollout_targets.rollout_id = t.rollout_id
                   AND rollout_targets.node_id = t.node_id",
                &[&rollouts, &nodes, &states, &ats],
            )
            .await
            .map_err(db)?;
        }
        audit_batch(&tx, super::audit::state_batch(&changes)).await?;
        tx.commit().await.map_err(db)
    }

    async fn record_results(
        &self,
        rows: Vec<(NodeId, CommandResult)>,
        at: WallTime,
    ) -> StoreResult<Vec<ResultRecord>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let ids: Vec<Uuid> = rows.iter().map(|(_, r)| uuid(r.request_id.0)).collect();
        // Locked: a result arriving at another process at once waits here.
        // In key order, so that two processes locking overlapping batches
        // wait for each other rather than deadlock.
        let owners = tx
            .query(
                "SELECT request_id, node_id, result IS NOT NULL FROM commands
                 WHERE request_id = ANY($1) ORDER BY request_id FOR UPDATE",
                &[&ids],
            )
            .await
            .map_err(db)?
            .iter()
            .map(|row| {
                let id: Uuid = row.get(0);
                let node: Uuid = row.get(1);
                (RequestId(id), (NodeId(node), row.get::<_, bool>(2)))
            })
            .collect();
        let records = super::sort_results(&rows, owners);
        let (first_ids, first_results): (Vec<Uuid>, Vec<Json<&CommandResult>>) = rows
            .iter()
            .zip(&records)
            .filter(|(_, r)| **r == ResultRecord::Stored { first: true })
            .map(|((_, result), _)| (uuid(result.request_id.0), Json(result)))
            .unzip();
        if !first_ids.is_empty() {
            tx.execute(
                "UPDATE commands c SET result = v.result, updated_at = $3
                 FROM unnest($1::uuid[], $2::jsonb[]) AS v(request_id, result)
                 WHERE c.request_id = v.request_id AND c.result IS NULL",
                &[&first_ids, &first_results, &ts(at)],
            )
            .await
            .map_err(db)?;
        }
        audit_batch(&tx, super::audit::results_batch(&rows, &records, at)).await?;
        tx.commit().await.map_err(db)?;
        Ok(records)
    }

    async fn spend_token_ids(&self, tokens: Vec<SpentToken>) -> StoreResult<Vec<bool>> {
        let client = self.client().await?;
        let jtis: Vec<Uuid> = tokens.iter().map(|t| uuid(t.jti.0)).collect();
        let nodes: Vec<Uuid> = tokens.iter().map(|t| uuid(t.node_id.0)).collect();
        let until: Vec<DateTime<Utc>> = tokens.iter().map(|t| ts(t.keep_until)).collect();
        // One statement, so all or none; a duplicate within the batch is
        // skipped like one spent before, and only the first copy is new.
        let inserted: std::collections::HashSet<Uuid> = client
            .query(
                "INSERT INTO spent_tokens (jti, node_id, keep_until)
                 SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[])
                 ON CONFLICT (jti) DO NOTHING RETURNING jti",
                &[&jtis, &nodes, &until],
            )
            .await
            .map_err(db)?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let mut first = std::collections::HashSet::new();
        Ok(jtis
            .iter()
            .map(|jti| inserted.contains(jti) && first.insert(*jti))
            .collect())
    }

    async fn forget_spent_token_ids(&self, now: WallTime) -> StoreResult<u64> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM spent_tokens WHERE keep_until < $1",
                &[&ts(now)],
            )
            .await
            .map_err(db)
    }

    async fn get_command(&self, id: RequestId) -> StoreResult<Option<CommandRecord>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {COMMAND_COLUMNS} FROM commands WHERE request_id = $1"),
                &[&uuid(id.0)],
            )
            .await
            .map_err(db)?;
        row.as_ref().map(command_from_row).transpose()
    }

    async fn insert_rollout(
        &self,
        rollout: RolloutRecord,
        targets: Vec<RolloutTargetRecord>,
    ) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let inserted = tx
            .execute(
                "INSERT INTO rollouts (id, requester, message, strategy, limits, selector, state, start_at, created_at, updated_at, approval)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING",
                &[
                    &uuid(rollout.id.0),
                    &rollout.requester,
                    &rollout.message,
                    &rollout.strategy,
                    &rollout.limits,
                    &rollout.selector,
                    &rollout.state.as_str(),
                    &ts(rollout.start_at),
                    &ts(rollout.created_at),
                    &ts(rollout.updated_at),
                    &rollout
                        .approval
                        .as_ref()
                        .map(|a| serde_json::to_value(a).unwrap_or_default()),
                ],
            )
            .await
            .map_err(db)?;
        if inserted == 0 {
            return Err(StoreError::Conflict);
        }
        let positions: Vec<i32> = targets
            .iter()
            .map(|t| i32::try_from(t.position).unwrap_or(i32::MAX))
            .collect();
        let nodes: Vec<Uuid> = targets.iter().map(|t| uuid(t.node_id.0)).collect();
        let requests: Vec<Uuid> = targets.iter().map(|t| uuid(t.request_id.0)).collect();
        let states: Vec<&str> = targets.iter().map(|t| t.state.as_str()).collect();
        tx.execute(
            "INSERT INTO rollout_targets (rollout_id, position, node_id, request_id, state, updated_at)
             SELECT $1, * , $6 FROM unnest($2::int4[], $3::uuid[], $4::uuid[], $5::text[])",
            &[
                &uuid(rollout.id.0),
                &positions,
                &nodes,
                &requests,
                &states,
                &ts(rollout.created_at),
            ],
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn get_rollout(
        &self,
        id: RolloutId,
    ) -> StoreResult<Option<(RolloutRecord, Vec<RolloutTargetRecord>)>> {
        let client = self.client().await?;
        let Some(row) = client
            .query_opt(
                &format!("SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE id = $1"),
                &[&uuid(id.0)],
            )
            .await
            .map_err(db)?
        else {
            return Ok(None);
        };
        let rollout = rollout_from_row(&row)?;
        let rows = client
            .query(
                "SELECT position, node_id, request_id, state FROM rollout_targets
                 WHERE rollout_id = $1 ORDER BY position",
                &[&uuid(id.0)],
            )
            .await
            .map_err(db)?;
        let targets = rows
            .iter()
            .map(|r| {
                let state: String = r.get(3);
                Ok(RolloutTargetRecord {
                    position: u32::try_from(r.get::<_, i32>(0)).unwrap_or(0),
                    node_id: NodeId::from(r.get::<_, Uuid>(1)),
                    request_id: RequestId::from(r.get::<_, Uuid>(2)),
                    state: TargetState::from_name(&state).ok_or(StoreError::Corrupt(state))?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Some((rollout, targets)))
    }

    async fn list_rollouts(
        &self,
        before: Option<(WallTime, RolloutId)>,
        limit: u32,
    ) -> StoreResult<Vec<RolloutRecord>> {
        let client = self.client().await?;
        let rows = match before {
            Some((at, id)) => client
                .query(
                    &format!(
                        "SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE (created_at, id) < ($1, $2)
                         ORDER BY created_at DESC, id DESC LIMIT $3"
                    ),
                    &[&ts(at), &uuid(id.0), &i64::from(limit)],
                )
                .await,
            None => client
                .query(
                    &format!(
                        "SELECT {ROLLOUT_COLUMNS} FROM rollouts ORDER BY created_at DESC, id DESC LIMIT $1"
                    ),
                    &[&i64::from(limit)],
                )
                .await,
        }
        .map_err(db)?;
        rows.iter().map(rollout_from_row).collect()
    }

    async fn rollouts_in(&self, states: &[RolloutState]) -> StoreResult<Vec<RolloutRecord>> {
        let client = self.client().await?;
        let names: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
        let rows = client
            .query(
                &format!(
                    "SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE state = ANY($1)
                     ORDER BY created_at, id"
                ),
                &[&names],
            )
            .await
            .map_err(db)?;
        rows.iter().map(rollout_from_row).collect()
    }

    async fn open_commands(&self) -> StoreResult<Vec<CommandRecord>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!("SELECT {COMMAND_COLUMNS} FROM commands WHERE state IN ('queued', 'sent', 'held', 'approved') ORDER BY created_at"),
                &[],
            )
            .await
            .map_err(db)?;
        rows.iter().map(command_from_row).collect()
    }

    async fn command_states(
        &self,
        ids: Vec<RequestId>,
    ) -> StoreResult<Vec<(RequestId, nap_core::central::CommandState)>> {
        let client = self.client().await?;
        let ids: Vec<Uuid> = ids.iter().map(|r| uuid(r.0)).collect();
        let rows = client
            .query(
                "SELECT request_id, state FROM commands WHERE request_id = ANY($1)",
                &[&ids],
            )
            .await
            .map_err(db)?;
        rows.iter()
            .map(|row| {
                let state: &str = row.get(1);
                let state = nap_core::central::CommandState::from_name(state)
                    .ok_or_else(|| StoreError::Corrupt(format!("command state {state:?}")))?;
                Ok((RequestId::from(row.get::<_, Uuid>(0)), state))
            })
            .collect()
    }

    async fn open_commands_for(&self, nodes: Vec<NodeId>) -> StoreResult<Vec<CommandRecord>> {
        let client = self.client().await?;
        let ids: Vec<Uuid> = nodes.iter().map(|n| uuid(n.0)).collect();
        let rows = client
            .query(
                &format!("SELECT {COMMAND_COLUMNS} FROM commands WHERE node_id = ANY($1) AND state IN ('queued', 'sent', 'held', 'approved') ORDER BY created_at"),
                &[&ids],
            )
            .await
            .map_err(db)?;
        rows.iter().map(command_from_row).collect()
    }

    async fn expire_queued_commands(
        &self,
        created_before: WallTime,
        at: WallTime,
    ) -> StoreResult<Vec<RequestId>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "UPDATE commands SET state = 'expired', updated_at = $2
                 WHERE state = 'queued' AND created_at < $1 RETURNING request_id",
                &[&ts(created_before), &ts(at)],
            )
            .await
            .map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| RequestId::from(r.get::<_, Uuid>(0)))
            .collect())
    }

    async fn append_audit(
        &self,
        actor: &str,
        action: &str,
        subject: &str,
        detail: serde_json::Value,
        at: WallTime,
    ) -> StoreResult<AuditEntry> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let entry = chain_append(&tx, actor, action, subject, detail, at).await?;
        tx.commit().await.map_err(db)?;
        Ok(entry)
    }

    async fn list_audit(&self, limit: u32) -> StoreResult<Vec<AuditEntry>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT seq, at, actor, action, subject, detail, prev_hash, hash FROM audit ORDER BY seq DESC LIMIT $1",
                &[&i64::from(limit)],
            )
            .await
            .map_err(db)?;
        Ok(rows.iter().map(audit_from_row).collect())
    }

    async fn all_audit(&self) -> StoreResult<Vec<AuditEntry>> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT seq, at, actor, action, subject, detail, prev_hash, hash FROM audit ORDER BY seq", &[])
            .await
            .map_err(db)?;
        Ok(rows.iter().map(audit_from_row).collect())
    }

    async fn create_api_token(
        &self,
        hash: &str,
        record: TokenRecord,
        at: WallTime,
    ) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO api_tokens (hash, name, role, created_at, user_name) VALUES ($1, $2, $3, $4, $5)",
                &[&hash, &record.name, &record.role, &ts(at), &record.user],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn find_api_token(&self, hash: &str) -> StoreResult<Option<TokenRecord>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT name, role, user_name FROM api_tokens WHERE hash = $1",
                &[&hash],
            )
            .await
            .map_err(db)?;
        Ok(row.map(|r| TokenRecord {
            name: r.get(0),
            role: r.get(1),
            user: r.get(2),
        }))
    }

    async fn add_to_group(&self, user: &str, group: &str) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO user_groups (user_name, group_name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&user, &group],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn groups_of(&self, user: &str) -> StoreResult<Vec<String>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT group_name FROM user_groups WHERE user_name = $1 ORDER BY group_name",
                &[&user],
            )
            .await
            .map_err(db)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn add_approver(
        &self,
        request_id: RequestId,
        user: &str,
        signature: Option<&SignedApproval>,
    ) -> StoreResult<()> {
        self.add_approver_to("commands", "request_id", request_id.0, user, signature)
            .await
    }

    async fn add_rollout_approver(
        &self,
        rollout_id: RolloutId,
        user: &str,
        signature: Option<&SignedApproval>,
    ) -> StoreResult<()> {
        self.add_approver_to("rollouts", "id", rollout_id.0, user, signature)
            .await
    }

    async fn pending_approvals(&self) -> StoreResult<Vec<CommandRecord>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!("SELECT {COMMAND_COLUMNS} FROM commands WHERE approval IS NOT NULL AND state IN ('queued', 'held') ORDER BY created_at"),
                &[],
            )
            .await
            .map_err(db)?;
        rows.iter().map(command_from_row).collect()
    }

    async fn insert_event(
        &self,
        kind: &str,
        detail: serde_json::Value,
        at: WallTime,
    ) -> StoreResult<()> {
        let client = self.bulk_client().await?;
        client
            .execute(
                "INSERT INTO events (at, kind, detail) VALUES ($1, $2, $3)",
                &[&ts(at), &kind, &detail],
            )
            .await
            .map_err(db)?;
        Ok(())
    }
}
