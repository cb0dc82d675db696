//! A virtual node: the real agent driver (`nap_agent::runner`) over a real
//! TLS WebSocket, with a synthetic host — telemetry from a seeded random
//! walk, healthy checks, commands that succeed at once — that counts what
//! the load report needs. One tokio task per node, no threads.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nap_agent::keys::NodeKey;
use nap_agent::runner::{Dialer, Host, Inputs, Runner};
use nap_agent::transport::DialOptions;
use nap_core::agent::Disconnect;
use nap_core::agent::{
    AgentConfig, AgentEngine, AgentEvent, AgentInput, AgentSnapshot, CommandOutcome,
    ConnectionState, Task,
};
use nap_core::rng::Prng;
use nap_core::testing::sample;
use nap_core::transport::{CloseCode, Epoch};
use nap_core::wire::{CheckStatus, HealthChecks, HealthDetails};
use nap_core::{NodeId, RequestId, WallTime};

/// Round-trip times are counted per millisecond up to this; beyond, in one bucket.
pub const RTT_BUCKETS: usize = 2001;

/// Shared counters the demo and load reports read.
#[derive(Debug)]
pub struct Fleet {
    pub connected: AtomicUsize,
    /// Telemetry samples taken by all nodes.
    pub samples: AtomicU64,
    /// Per node, samples taken.
    pub samples_per_node: Vec<AtomicU64>,
    /// Per node, samples the buffer's bound dropped (counted in
    /// `droppedSamples`), over all of the node's restarts.
    pub dropped_per_node: Vec<AtomicU64>,
    /// Per node, samples not yet acked by central (updated every loop turn).
    pub buffered: Vec<AtomicUsize>,
    /// Stop taking samples (the load test's final phase, to drain the buffers).
    pub quiesce: AtomicBool,
    /// Dials made (handshakes attempted) by all nodes.
    pub dials: AtomicU64,
    /// Dials that failed (refused, reset, 503…).
    pub failed_dials: AtomicU64,
    /// Dials started and not yet answered.
    pub handshaking: AtomicUsize,
    /// The longest backoff any node scheduled, in milliseconds.
    pub max_backoff_ms: AtomicU64,
    /// Ping round trips, by millisecond.
    pub rtt: Vec<AtomicU64>,
    /// Bytes on the wire (TLS records), both directions.
    pub wire: Arc<nap_agent::transport::WireBytes>,
    /// Commands that reached a node: request id and wall-clock millisecond.
    pub commands: Mutex<Vec<(RequestId, i64)>>,
    /// Whether nodes with a [`Chaos`] setting inflict their faults now.
    pub chaos_on: AtomicBool,
    /// Transports cut and stalls begun by the chaos scenario.
    pub cuts: AtomicU64,
    pub stalls: AtomicU64,
    /// Nodes with more than one sample waiting for its ack (one may be the
    /// live sample on its way): those still catching up.
    pub behind: AtomicUsize,
    /// Sessions central closed with 1008 (over a budget).
    pub policy_closes: AtomicU64,
    /// Agent processes restarted from what they persisted.
    pub restarts: AtomicU64,
}

impl Fleet {
    /// Counters for `nodes` nodes.
    pub fn new(nodes: usize) -> Self {
        Self {
            connected: AtomicUsize::new(0),
            samples: AtomicU64::new(0),
            samples_per_node: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
            dropped_per_node: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
            buffered: (0..nodes).map(|_| AtomicUsize::new(0)).collect(),
            quiesce: AtomicBool::new(false),
            dials: AtomicU64::new(0),
            failed_dials: AtomicU64::new(0),
            handshaking: AtomicUsize::new(0),
            max_backoff_ms: AtomicU64::new(0),
            rtt: (0..RTT_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            wire: Arc::default(),
            commands: Mutex::new(Vec::new()),
            chaos_on: AtomicBool::new(false),
            cuts: AtomicU64::new(0),
            stalls: AtomicU64::new(0),
            behind: AtomicUsize::new(0),
            policy_closes: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
        }
    }
}

/// Faults a node inflicts on its own transport (the `chaos` scenario).
#[derive(Debug, Clone, Copy)]
pub struct Chaos {
    /// Mean time between faults, per node.
    pub mean_interval: Duration,
}

/// One node's identity and where it connects.
#[derive(Debug)]
pub struct NodeSpec {
    pub index: usize,
    pub node_id: NodeId,
    pub key: NodeKey,
    pub url: String,
    pub tls: Arc<rustls::ClientConfig>,
    pub seed: u64,
    pub dial: DialOptions,
    pub chaos: Option<Chaos>,
    /// Samples the node starts with, unacked, a minute apart up to now: a
    /// node restarted after a long outage (the `replay` scenario).
    pub backlog: usize,
    /// Keep what the engine persists, for a restart (a copy of the whole
    /// buffer per node: off unless the run restarts agents).
    pub persist: bool,
    /// Every command it runs fails (exit 1).
    pub fails: bool,
}

/// The audience virtual nodes' tokens name (central's default).
const AUDIENCE: &str = "nap-central";

/// A synthetic machine that counts what it is asked to do.
struct Synthetic {
    index: usize,
    node_id: NodeId,
    key: NodeKey,
    seed: u64,
    rng: Prng,
    cpu: f64,
    fleet: Arc<Fleet>,
    /// The epoch being dialled, until it is answered.
    dialing: Option<Epoch>,
    /// What the engine last asked to persist (a restart starts from it).
    persisted: Option<AgentSnapshot>,
    keep_persisted: bool,
    fails: bool,
}

impl Synthetic {
    fn command_reached(&self, request_id: RequestId) {
        if let Ok(mut commands) = self.fleet.commands.lock() {
            commands.push((request_id, chrono::Utc::now().timestamp_millis()));
        }
    }

    /// An input the transport reports: a dial answered ends a handshake.
    fn observe(&mut self, input: &AgentInput) {
        if let AgentInput::Connected { epoch } | AgentInput::DialFailed { epoch, .. } = input
            && self.dialing == Some(*epoch)
        {
            self.dialing = None;
            self.fleet.handshaking.fetch_sub(1, Ordering::Relaxed);
            if matches!(input, AgentInput::DialFailed { .. }) {
                self.fleet.failed_dials.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The transport was cut while dialling: that handshake failed.
    fn cut(&mut self) {
        if self.dialing.take().is_some() {
            self.fleet.handshaking.fetch_sub(1, Ordering::Relaxed);
            self.fleet.failed_dials.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Host for Synthetic {
    fn mint(&mut self, lifetime: Duration) -> anyhow::Result<String> {
        self.key.token(self.node_id, AUDIENCE, lifetime)
    }

    fn sample(&mut self, inputs: &Inputs) {
        if self.fleet.quiesce.load(Ordering::Relaxed) {
            return;
        }
        self.fleet.samples.fetch_add(1, Ordering::Relaxed);
        if let Some(n) = self.fleet.samples_per_node.get(self.index) {
            n.fetch_add(1, Ordering::Relaxed);
        }
        // A random walk around the node's usual load.
        let step = f64::from(u32::try_from(self.rng.between(0, 100)).unwrap_or(50)) / 10.0 - 5.0;
        self.cpu = (self.cpu + step).clamp(1.0, 99.0);
        let disk = 40.0 + f64::from(u32::try_from(self.seed % 30).unwrap_or(0));
        let data = sample((self.cpu * 10.0).round() / 10.0, disk);
        let _ = inputs.try_send(AgentInput::TelemetrySample(data));
    }

    fn check_health(&mut self, request_id: Option<RequestId>, inputs: &Inputs) {
        if let Some(request_id) = request_id {
            self.command_reached(request_id);
        }
        let checks = HealthChecks {
            agent: CheckStatus::Ok,
            containers: CheckStatus::Ok,
            disk: CheckStatus::Ok,
            memory: CheckStatus::Ok,
            database: CheckStatus::Unknown,
        };
        let _ = inputs.try_send(AgentInput::HealthReport {
            request_id,
            checks,
            details: HealthDetails::default(),
        });
    }

    fn run(&mut self, request_id: RequestId, _task: Task, inputs: &Inputs) {
        self.command_reached(request_id);
        let outcome = if self.fails {
            CommandOutcome {
                success: false,
                exit_code: Some(1),
                stdout: "failed (virtual node made to fail)\n".into(),
                ..CommandOutcome::default()
            }
        } else {
            CommandOutcome {
                success: true,
                exit_code: Some(0),
                stdout: "ok (virtual node)\n".into(),
                ..CommandOutcome::default()
            }
        };
        let _ = inputs.try_send(AgentInput::CommandFinished {
            request_id,
            outcome,
        });
    }

    fn kill(&mut self, _request_id: RequestId) {}

    fn persist(&mut self, snapshot: &AgentSnapshot) {
        if self.keep_persisted {
            self.persisted = Some(snapshot.clone());
        }
    }

    fn event(&mut self, event: AgentEvent) {
        let fleet = &self.fleet;
        match event {
            AgentEvent::Connecting { epoch, .. } => {
                fleet.dials.fetch_add(1, Ordering::Relaxed);
                if self.dialing.replace(epoch).is_none() {
                    fleet.handshaking.fetch_add(1, Ordering::Relaxed);
                }
            }
            AgentEvent::BackoffScheduled { delay, .. } => {
                let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
                fleet.max_backoff_ms.fetch_max(ms, Ordering::Relaxed);
            }
            AgentEvent::Disconnected {
                reason: Disconnect::Closed(Some(CloseCode::Policy)),
                ..
            } => {
                fleet.policy_closes.fetch_add(1, Ordering::Relaxed);
            }
            AgentEvent::RoundTrip { rtt_ms } => {
                let bucket = usize::try_from(rtt_ms)
                    .unwrap_or(usize::MAX)
                    .min(RTT_BUCKETS - 1);
                fleet.rtt[bucket].fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

/// A day's outage as a restarted node holds it: `n` samples a minute apart,
/// the last one taken now.
fn backlog(node_id: NodeId, n: usize, now: WallTime, cpu: f64) -> AgentSnapshot {
    let telemetry = (0..n)
        .map(|i| {
            let minutes_ago = i64::try_from(n - i).unwrap_or(i64::MAX);
            nap_core::wire::Telemetry {
                node_id,
                timestamp: now.add_millis(-minutes_ago * 60_000),
                data: sample(cpu, 40.0),
                dropped_samples: 0,
            }
        })
        .collect();
    AgentSnapshot {
        version: AgentSnapshot::VERSION,
        requests: Vec::new(),
        telemetry,
        alerts: Vec::new(),
        health: Vec::new(),
    }
}

/// How one life of the agent process ended.
enum End {
    Stopped,
    /// Killed, to be started again from what it persisted.
    Crashed,
}

/// What a simulated node allows: `uptime`, no arguments (what rollouts and
/// `det`'s commands send).
pub(crate) fn virtual_policy() -> nap_core::policy::Policy {
    use nap_core::policy::{ArgRules, CommandRule, Policy};
    let mut policy = Policy::deny_all();
    policy.allow(
        "uptime",
        CommandRule {
            run_as: None,
            required_approvals: 0,
            program: "/usr/bin/uptime".into(),
            args: ArgRules::Exact(vec![]),
            max_timeout: Duration::from_secs(30),
            env: std::collections::BTreeMap::new(),
        },
    );
    policy
}

/// Runs one virtual node until `stop` fires; each change of `restart`
/// kills its process and starts it again from what it persisted.
pub async fn run(
    spec: NodeSpec,
    fleet: Arc<Fleet>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    mut restart: tokio::sync::watch::Receiver<u64>,
) {
    let NodeSpec {
        index,
        node_id,
        key,
        url,
        tls,
        seed,
        dial,
        chaos,
        backlog: backlog_len,
        persist,
        fails,
    } = spec;
    let mut rng = Prng::new(seed);
    let cpu = 20.0 + f64::from(u32::try_from(rng.between(0, 30)).unwrap_or(0));
    let mut host = Synthetic {
        index,
        node_id,
        key,
        seed,
        rng: Prng::new(seed ^ 0x5a5a),
        cpu,
        fleet: Arc::clone(&fleet),
        dialing: None,
        persisted: None,
        keep_persisted: persist,
        fails,
    };
    let mut config = AgentConfig::new(node_id, seed);
    config.policy = virtual_policy();
    config.agent_version = Some(concat!(env!("CARGO_PKG_VERSION"), "-virtual").to_owned());
    config.telemetry_buffer = config.telemetry_buffer.max(backlog_len);
    let dialer = Dialer {
        url,
        tls,
        options: dial,
    };
    if backlog_len > 0 {
        let now = WallTime::from(chrono::Utc::now());
        host.persisted = Some(backlog(node_id, backlog_len, now, cpu));
        let taken = u64::try_from(backlog_len).unwrap_or(u64::MAX);
        fleet.samples.fetch_add(taken, Ordering::Relaxed);
        if let Some(n) = fleet.samples_per_node.get(index) {
            n.fetch_add(taken, Ordering::Relaxed);
        }
    }
    loop {
        let wall = WallTime::from(chrono::Utc::now());
        let mut engine = AgentEngine::new(config.clone());
        if let Some(snapshot) = host.persisted.take() {
            engine.restore(snapshot, wall);
        }
        let runner = Runner::new(engine, host, dialer.clone());
        let (end, runner) = live(runner, &fleet, &mut rng, chaos, &mut stop, &mut restart).await;
        match end {
            End::Stopped => return,
            End::Crashed => {
                host = runner.crash();
                host.cut();
                fleet.restarts.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// One life of the agent process.
async fn live(
    mut runner: Runner<Synthetic>,
    fleet: &Fleet,
    rng: &mut Prng,
    chaos: Option<Chaos>,
    stop: &mut tokio::sync::watch::Receiver<bool>,
    restart: &mut tokio::sync::watch::Receiver<u64>,
) -> (End, Runner<Synthetic>) {
    let index = runner.host.index;
    let dropped_before = fleet
        .dropped_per_node
        .get(index)
        .map_or(0, |d| d.load(Ordering::Relaxed));
    let mut established = false;
    let mut behind = false;
    let mut next_fault =
        chaos.map(|c| Instant::now() + rng.duration_between(Duration::ZERO, c.mean_interval * 2));
    runner.input(AgentInput::WallClock(WallTime::from(chrono::Utc::now())));
    runner.input(AgentInput::Start);
    let end = loop {
        runner.perform();
        let buffered = runner.engine.buffered_telemetry();
        if let Some(slot) = fleet.buffered.get(index) {
            slot.store(buffered, Ordering::Relaxed);
        }
        if let Some(slot) = fleet.dropped_per_node.get(index) {
            slot.store(
                dropped_before + runner.engine.dropped_telemetry(),
                Ordering::Relaxed,
            );
        }
        if (buffered > 1) != behind {
            behind = buffered > 1;
            if behind {
                fleet.behind.fetch_add(1, Ordering::Relaxed);
            } else {
                fleet.behind.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let is_established = runner.engine.state() == ConnectionState::Established {};
        if is_established != established {
            established = is_established;
            if established {
                fleet.connected.fetch_add(1, Ordering::Relaxed);
            } else {
                fleet.connected.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let mut deadline = runner.deadline();
        if let Some(at) = next_fault {
            deadline = deadline.min(at);
        }
        tokio::select! {
            Some(input) = runner.recv() => {
                runner.host.observe(&input);
                runner.input(input);
            }
            () = tokio::time::sleep_until(deadline.into()) => {
                let instant = Instant::now();
                if let (Some(at), Some(c)) = (next_fault, chaos)
                    && at <= instant
                {
                    next_fault =
                        Some(instant + rng.duration_between(Duration::ZERO, c.mean_interval * 2));
                    if fleet.chaos_on.load(Ordering::Relaxed) {
                        if rng.between(0, 1) == 0 {
                            // The network drops the connection: no close frame.
                            if runner.cut() {
                                runner.host.cut();
                                fleet.cuts.fetch_add(1, Ordering::Relaxed);
                            }
                        } else {
                            // The path stalls: frames wait, then go in order.
                            let until = instant
                                + rng.duration_between(Duration::from_secs(1), Duration::from_secs(5));
                            if runner.stall(until) {
                                fleet.stalls.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
                runner.handle_timeout();
            }
            Ok(()) = restart.changed() => break End::Crashed,
            _ = stop.changed() => {
                runner.input(AgentInput::Shutdown);
                runner.perform();
                runner.close_all().await;
                break End::Stopped;
            }
        }
    };
    // This life's contributions to the fleet's gauges end with it.
    if established {
        fleet.connected.fetch_sub(1, Ordering::Relaxed);
    }
    if behind {
        fleet.behind.fetch_sub(1, Ordering::Relaxed);
    }
    if matches!(end, End::Stopped) && runner.host.dialing.is_some() {
        fleet.handshaking.fetch_sub(1, Ordering::Relaxed);
    }
    (end, runner)
}
