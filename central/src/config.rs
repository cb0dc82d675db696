//! `nap-central serve` configuration: defaults, then `central.toml`, then
//! `NAP_CENTRAL_*` environment variables, then command-line flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use nap_core::central::{HubConfig, SessionConfig};
use serde::{Deserialize, Serialize};

/// Everything `serve` needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    /// Agent endpoint (WSS).
    pub listen: SocketAddr,
    /// Operator HTTP API.
    pub api_listen: SocketAddr,
    /// Serve the operator API over TLS 1.3 with this certificate and key
    /// (both or neither).
    pub api_tls_cert: Option<PathBuf>,
    pub api_tls_key: Option<PathBuf>,
    /// Operator API connections held at once (its own budget: the agent
    /// endpoint's `max_connections` is separate).
    pub api_max_connections: usize,
    /// A request's headers (and a TLS handshake) must arrive within this, in ms.
    pub api_header_timeout_ms: u64,
    /// A request's body must arrive within this, in ms.
    pub api_body_timeout_ms: u64,
    /// A connection that moves no byte for this long is closed, in ms.
    pub api_idle_timeout_ms: u64,
    /// Requests per second (and burst) per operator API token.
    pub api_rate_per_s: u32,
    pub api_rate_burst: u32,
    /// When set, `/metrics` needs `Authorization: Bearer <this>`.
    pub metrics_token: Option<String>,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// `sqlite:PATH` or a `postgres://` URL.
    pub db: String,
    /// The JWT audience agents must name.
    pub audience: String,
    /// Where agent update artifacts live: `DIR/nap-agent/VERSION/TARGET` and `.sig`.
    pub artifacts: Option<PathBuf>,
    /// Server-set intervals, in milliseconds.
    pub heartbeat_ms: u64,
    pub telemetry_ms: u64,
    pub health_ms: u64,
    /// Added to twice the heartbeat before a silent node is offline, in milliseconds.
    pub offline_grace_ms: u64,
    /// Handshakes (TLS + HTTP upgrade + token check) in flight before new ones get 503.
    pub max_handshakes: usize,
    /// Connections held at once (each is a file descriptor).
    pub max_connections: usize,
    /// Largest message in bytes.
    pub max_message_bytes: usize,
    /// Admin notifications are POSTed here as JSON.
    pub webhook: Option<String>,
    /// CA certificates (PEM) an `https://` webhook is checked against;
    /// unset, the system's.
    pub webhook_ca: Option<PathBuf>,
    /// Where the audit chain's head is checkpointed, signed, outside the
    /// database (spec §11); its key is this path + `.key`. Unset: beside an
    /// SQLite database (`central.db` → `central.db.anchor`), none with
    /// PostgreSQL (a warning at start).
    pub audit_anchor: Option<PathBuf>,
    /// How often the head is checkpointed when it moved.
    pub audit_anchor_every_ms: u64,
    /// Telemetry rows waiting for the database before new samples are refused (not acked).
    pub ingest_queue: usize,
    /// Rows per write.
    pub ingest_batch: usize,
    /// PostgreSQL pool size.
    pub db_pool: usize,
    /// Redis (`redis://host:port/db`): set it to run several central
    /// processes as one (DESIGN.md §5); presence and command routing go
    /// through it. Unset, this process is the whole of central.
    pub redis: Option<String>,
    /// Prefix of this deployment's Redis keys and channels.
    pub redis_prefix: String,
    /// How long a command waits for an offline node before it expires, in seconds.
    pub command_ttl_s: u64,
    /// How long past a sent command's own timeout its result is awaited, in seconds.
    pub result_grace_s: u64,
    /// Commands queued per offline node; past this, new ones are undeliverable.
    pub max_queued_per_node: usize,
    /// With `redis`: how often the store is swept for expired queued
    /// commands and for commands whose notice from another process was lost
    /// (they are delivered by the sweep instead), in seconds.
    pub sweep_every_s: u64,
    /// v0.3: after a restart, how long a restored rollout waits for its
    /// targets' nodes to reconnect before it starts anything new, in seconds.
    pub rollout_hold_s: u64,
    /// v0.3, with `redis`: the lease on driving the cluster's rollouts lasts
    /// this long without a renewal (renewed every fifth of it): a driver
    /// that dies is replaced within about this long, in seconds.
    pub rollout_lease_s: u64,
    /// A drain (graceful shutdown) spreads the fleet's return at this many nodes per second.
    pub drain_rate_per_s: u32,
    /// Messages per second one node may send, and the burst above that.
    pub rate_per_s: u32,
    pub rate_burst: u32,
    /// Telemetry samples a node may have in flight (sent, not yet acked):
    /// replay after an outage is paced by this and by how fast samples are
    /// stored, not by the message rate.
    pub telemetry_window: u32,
    /// Invalid messages per minute before a node is closed with 1008.
    pub invalid_per_minute: u32,
    /// Refused tokens per minute from one address before its attempts get 429.
    pub auth_failures_per_minute: u32,
    /// State changes waiting for the database past which new connections
    /// get 503 (the writer never drops one; this is its back-pressure).
    pub store_backlog_limit: usize,
    /// v0.2 approval (spec §8.1): how long requests and releases last, and
    /// the rules that make commands need approval.
    pub approval: ApprovalSettings,
}

/// `[approval]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApprovalSettings {
    /// A request nobody decides in this time ends `approval_expired`.
    pub request_ttl_s: u64,
    /// A complete approval whose node is offline must reach it in this time.
    pub release_ttl_s: u64,
    /// `[[approval.rules]]`, in order.
    pub rules: Vec<ApprovalRuleSettings>,
}

impl Default for ApprovalSettings {
    fn default() -> Self {
        let policy = nap_core::central::approval::ApprovalPolicy::default();
        Self {
            request_ttl_s: policy.request_ttl.as_secs(),
            release_ttl_s: policy.release_ttl.as_secs(),
            rules: Vec::new(),
        }
    }
}

/// One `[[approval.rules]]`: the `execute` commands it matches need
/// approval by `min_approvals` people (and by `approver`, when named).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRuleSettings {
    /// The command; every command when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Node labels that must all match; every node when absent.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    #[serde(default = "one")]
    pub min_approvals: u8,
    /// A user, or `group:NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approver: Option<String>,
}

fn one() -> u8 {
    1
}

impl ApprovalSettings {
    /// The core's policy, or what is wrong with the settings.
    pub fn policy(&self) -> anyhow::Result<nap_core::central::approval::ApprovalPolicy> {
        use nap_core::central::approval::{
            ApprovalPolicy, ApprovalRule, MAX_APPROVALS, MIN_APPROVALS,
        };
        anyhow::ensure!(
            self.request_ttl_s > 0 && self.release_ttl_s > 0,
            "approval.request_ttl_s and approval.release_ttl_s must be above 0"
        );
        let mut rules = Vec::with_capacity(self.rules.len());
        for (n, rule) in (1..).zip(&self.rules) {
            anyhow::ensure!(
                (MIN_APPROVALS..=MAX_APPROVALS).contains(&rule.min_approvals),
                "approval rule {n}: min_approvals must be {MIN_APPROVALS} to {MAX_APPROVALS}"
            );
            let blank = |v: &Option<String>| v.as_deref().is_some_and(|v| v.trim().is_empty());
            anyhow::ensure!(
                !blank(&rule.command) && !blank(&rule.approver),
                "approval rule {n}: command and approver, when given, must not be empty"
            );
            rules.push(ApprovalRule {
                command: rule.command.clone(),
                labels: rule.labels.clone(),
                min_approvals: rule.min_approvals,
                approver: rule.approver.clone(),
            });
        }
        Ok(ApprovalPolicy {
            request_ttl: Duration::from_secs(self.request_ttl_s),
            release_ttl: Duration::from_secs(self.release_ttl_s),
            rules,
        })
    }
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8443".parse().expect("valid"),
            api_listen: "127.0.0.1:8080".parse().expect("valid"),
            api_tls_cert: None,
            api_tls_key: None,
            api_max_connections: 256,
            api_header_timeout_ms: 10_000,
            api_body_timeout_ms: 30_000,
            api_idle_timeout_ms: 60_000,
            api_rate_per_s: 50,
            api_rate_burst: 200,
            metrics_token: None,
            tls_cert: PathBuf::from("nap-data/certs/server.pem"),
            tls_key: PathBuf::from("nap-data/certs/server.key"),
            db: "sqlite:./nap-data/central.db".into(),
            audience: "nap-central".into(),
            artifacts: None,
            heartbeat_ms: 30_000,
            telemetry_ms: 60_000,
            health_ms: 300_000,
            offline_grace_ms: 15_000,
            max_handshakes: 256,
            max_connections: 19_000,
            max_message_bytes: nap_core::Limits::DEFAULT_MAX_MESSAGE_BYTES,
            webhook: None,
            webhook_ca: None,
            audit_anchor: None,
            audit_anchor_every_ms: 1_000,
            ingest_queue: 100_000,
            ingest_batch: 5_000,
            db_pool: 8,
            redis: None,
            redis_prefix: "nap".into(),
            command_ttl_s: 3600,
            result_grace_s: 300,
            max_queued_per_node: 1000,
            sweep_every_s: 60,
            rollout_hold_s: 60,
            rollout_lease_s: 10,
            drain_rate_per_s: 200,
            rate_per_s: 20,
            rate_burst: 200,
            telemetry_window: 32,
            invalid_per_minute: 10,
            auth_failures_per_minute: 10,
            store_backlog_limit: 50_000,
            approval: ApprovalSettings::default(),
        }
    }
}

impl ServeConfig {
    /// Layers the sources; `overrides` holds only the flags given.
    pub fn load(
        file: Option<&std::path::Path>,
        overrides: &serde_json::Value,
    ) -> Result<Self, Box<figment::Error>> {
        let mut figment = Figment::from(Serialized::defaults(Self::default()));
        let path = file.map_or_else(|| PathBuf::from("central.toml"), PathBuf::from);
        if file.is_some() || path.exists() {
            figment = figment.merge(Toml::file_exact(path));
        }
        figment
            .merge(Env::prefixed("NAP_CENTRAL_"))
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(Box::new)
    }

    /// The audit anchor's file: the configured one, or beside an SQLite
    /// database file.
    pub fn audit_anchor_path(&self) -> Option<PathBuf> {
        if let Some(path) = &self.audit_anchor {
            return Some(path.clone());
        }
        let file = self.db.strip_prefix("sqlite:")?;
        if file.is_empty() || file.starts_with(':') {
            return None;
        }
        let mut name = std::ffi::OsString::from(file);
        name.push(".anchor");
        Some(PathBuf::from(name))
    }

    /// The server-set intervals.
    pub fn intervals(&self) -> nap_core::wire::Intervals {
        nap_core::wire::Intervals {
            heartbeat: self.heartbeat_ms,
            telemetry: self.telemetry_ms,
            health: self.health_ms,
        }
    }

    /// Silence after which a node is offline.
    pub fn offline_after(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms.saturating_mul(2) + self.offline_grace_ms)
    }

    /// The hub's parameters; `seed` drives its PRNG.
    pub fn hub_config(&self, seed: u64) -> anyhow::Result<HubConfig> {
        let mut hub = HubConfig::new(self.audience.clone());
        hub.approval = self.approval.policy()?;
        hub.command_ttl = Duration::from_secs(self.command_ttl_s);
        hub.result_grace = Duration::from_secs(self.result_grace_s);
        hub.max_queued_per_node = self.max_queued_per_node;
        hub.drain_rate_per_sec = self.drain_rate_per_s;
        hub.admission.throttle_limit = self.auth_failures_per_minute;
        hub.admission.max_store_backlog = self.store_backlog_limit;
        hub.clustered = self.redis.is_some();
        hub.sweep_every = Duration::from_secs(self.sweep_every_s.max(1));
        hub.rollout_hold = Duration::from_secs(self.rollout_hold_s);
        hub.seed = seed;
        Ok(hub)
    }

    /// Every session's parameters.
    pub fn session_config(&self) -> SessionConfig {
        let mut session = SessionConfig::with_intervals(self.intervals());
        session.offline_after = self.offline_after();
        session.limits.max_message_bytes = self.max_message_bytes;
        session.rate_per_sec = self.rate_per_s;
        session.rate_burst = self.rate_burst;
        session.telemetry_window = self.telemetry_window;
        session.invalid_limit = self.invalid_per_minute;
        session
    }
}
