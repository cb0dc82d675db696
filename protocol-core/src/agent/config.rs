//! The agent engine's parameters. Defaults follow spec/protocol.md.

use std::time::Duration;

use crate::NodeId;
use crate::alerts::AlertRule;
use crate::backoff::BackoffConfig;
use crate::codec::Limits;
use crate::policy::Policy;
use crate::wire::{Feature, Features, Intervals};

/// Everything the agent engine is configured with.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node_id: NodeId,
    /// Seed of the engine's PRNG (jitter). Different per node.
    pub seed: u64,
    pub backoff: BackoffConfig,
    /// `welcome` must arrive this soon after the upgrade.
    pub welcome_timeout: Duration,
    /// A dial that has not connected or failed by then is abandoned.
    pub connect_timeout: Duration,
    /// How long the node tokens the driver mints for the engine live
    /// (central refuses more than an hour).
    pub token_lifetime: Duration,
    /// How long a close may wait for central's close frame (and, on a
    /// shutdown, for the last frames to be written) before the transport
    /// is dropped.
    pub close_linger: Duration,
    /// A `pong` must answer a `ping` this soon.
    pub pong_timeout: Duration,
    /// Intervals used until central's `welcome` sets them.
    pub intervals: Intervals,
    /// Refresh the token at this fraction of its lifetime…
    pub refresh_at: f64,
    /// …give or take this fraction of its lifetime.
    pub refresh_jitter: f64,
    pub policy: Policy,
    /// Commands running at once.
    pub max_running: usize,
    /// Commands waiting for a slot; past this the answer is `busy`.
    pub max_queued: usize,
    /// After a kill, how long to wait for the driver's report before
    /// recording the timeout anyway.
    pub kill_grace: Duration,
    /// How long a v0.2 held command waits for its approval.
    pub approval_window: Duration,
    /// Telemetry samples kept while central has not acked them.
    pub telemetry_buffer: usize,
    /// Periodic health reports kept until acked (a day at one per 5 min would
    /// be 288; the newest hour is what an operator reads).
    pub health_buffer: usize,
    /// Alerts kept while disconnected.
    pub alert_buffer: usize,
    /// Results kept until acked.
    pub outbox_limit: usize,
    /// Request ids remembered for dedupe.
    pub record_limit: usize,
    pub alert_rules: Vec<AlertRule>,
    /// Limits on central's messages.
    pub limits: Limits,
    /// How often an established connection updates its TLS traffic keys
    /// (zero: never; rustls still does at the cipher's limit).
    pub key_update_interval: Duration,
    /// An established connection is closed and made afresh after this long…
    pub max_connection_age: Duration,
    /// …plus up to this much, drawn per connection, so a fleet that
    /// connected together does not reconnect together.
    pub connection_age_spread: Duration,
    /// The agent's own version, announced on every upgrade.
    pub agent_version: Option<String>,
    /// What this engine speaks beyond the `nap.v1` base, announced on every
    /// upgrade (spec/protocol.md §1.1).
    pub features: Features,
}

impl AgentConfig {
    /// The defaults of the spec for `node_id`, with a policy that allows nothing.
    pub fn new(node_id: NodeId, seed: u64) -> Self {
        Self {
            node_id,
            seed,
            backoff: BackoffConfig::default(),
            welcome_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(30),
            token_lifetime: Duration::from_secs(3600),
            close_linger: Duration::from_secs(2),
            pong_timeout: Duration::from_secs(10),
            intervals: Intervals::default(),
            refresh_at: 0.8,
            refresh_jitter: 0.05,
            policy: Policy::deny_all(),
            max_running: 4,
            max_queued: 16,
            kill_grace: Duration::from_secs(15),
            approval_window: Duration::from_secs(3600),
            telemetry_buffer: 1440,
            health_buffer: 12,
            alert_buffer: 100,
            outbox_limit: 1000,
            record_limit: 10_000,
            alert_rules: AlertRule::defaults(),
            limits: Limits::default(),
            key_update_interval: Duration::from_secs(3600),
            max_connection_age: Duration::from_secs(24 * 3600),
            connection_age_spread: Duration::from_secs(3600),
            agent_version: None,
            features: [Feature::Approval, Feature::Acks].into_iter().collect(),
        }
    }
}

/// Server-set intervals, clamped so a zero or absurd value cannot spin the engine.
pub(crate) fn clamp_interval(millis: u64) -> Duration {
    Duration::from_millis(millis.clamp(1_000, 86_400_000))
}
