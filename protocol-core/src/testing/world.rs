//! The world: agents, central, the network between them, and a clock that
//! jumps from one deadline to the next.

use core::net::{IpAddr, Ipv4Addr};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::Duration;

use super::central::{CentralEffect, CentralHost};
use super::network::NetConfig;
use crate::agent::{
    AgentConfig, AgentEngine, AgentEvent, AgentInput, AgentOutput, CommandOutcome, DialFailure,
    Task,
};
use crate::central::{
    Admit, Alarm, CommandState, HubConfig, HubInput, HubOutput, NodeLookup, RecordKey, RefusalKind,
    ResultRecord, SessionConfig, SessionInput, SessionOutput, Submission, ToSession, TokenCheck,
    Upgrade,
};
use crate::codec::{Limits, encode};
use crate::rng::Prng;
use crate::transport::{Epoch, SendClass};
use crate::wire::{
    AgentMessage, ApplicationMetrics, ApplicationStatus, CentralMessage, CheckStatus,
    CommandResult, CpuMetrics, DiskMetrics, HealthChecks, HealthDetails, Hello, Intervals,
    MemoryMetrics, NetworkMetrics, NodeStatus, SystemMetrics, TelemetryData,
};
use crate::{NodeId, RequestId, SessionId, Timestamp, WallTime};

use super::tokens::AUDIENCE;

/// What a simulated command does when run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// Exits 0 after this long, printing this.
    Succeed { after: Duration, stdout: String },
    /// Never exits on its own (until killed).
    Hang,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self::Succeed {
            after: Duration::from_millis(100),
            stdout: "ok\n".into(),
        }
    }
}

/// One simulated agent: the engine plus what its driver would do.
#[derive(Debug)]
pub struct AgentNode {
    pub engine: AgentEngine,
    pub node_id: NodeId,
    /// Behaviour of `execute` per command name (default: succeed quickly).
    pub behaviours: BTreeMap<String, Behaviour>,
    /// How many times each request was started: the at-most-once witness.
    pub runs: BTreeMap<RequestId, u32>,
    /// Tasks running now (not yet reported).
    pub running: BTreeSet<RequestId>,
    /// Every message the agent put on a wire, in order.
    pub sent: Vec<AgentMessage>,
    /// The send class of each of `sent`.
    pub sent_classes: Vec<SendClass>,
    /// Every message the agent received and decoded, in order.
    pub received: Vec<CentralMessage>,
    /// Tokens it mints carry a valid signature.
    pub signs_validly: bool,
    /// CPU usage reported in its samples.
    pub cpu: f64,
    /// Disk usage percent reported in its samples.
    pub disk: f64,
    /// Whether the driver answers `MintToken` (false: the refresh never happens).
    pub mints_tokens: bool,
    /// The last snapshot the driver persisted.
    pub saved: Option<crate::agent::AgentSnapshot>,
    /// Every event the engine emitted, stamped.
    pub events: Vec<(Timestamp, AgentEvent)>,
    /// Telemetry samples the agent took.
    pub samples_taken: u64,
    /// What the engine decided about a newly installed version: `true`
    /// kept (it connected), `false` rolled back.
    pub update_fates: Vec<bool>,
    /// TLS key updates the engine asked of each epoch's connection.
    pub key_updates: Vec<Epoch>,
    /// The address its connections come from (agents may share one, as
    /// behind a NAT).
    pub peer: IpAddr,
}

/// Stored telemetry keys, compact enough for millions of rows: per node, a
/// sorted list of timestamps (samples mostly arrive in order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TelemetryRows {
    by_node: BTreeMap<NodeId, Vec<WallTime>>,
    len: usize,
}

impl TelemetryRows {
    /// Stores a row; false if it was already there.
    pub fn insert(&mut self, (node, at): (NodeId, WallTime)) -> bool {
        let rows = self.by_node.entry(node).or_default();
        if rows.last().is_none_or(|last| *last < at) {
            rows.push(at);
        } else {
            match rows.binary_search(&at) {
                Ok(_) => return false,
                Err(i) => rows.insert(i, at),
            }
        }
        self.len += 1;
        true
    }

    pub fn contains(&self, (node, at): &(NodeId, WallTime)) -> bool {
        self.by_node
            .get(node)
            .is_some_and(|rows| rows.binary_search(at).is_ok())
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Rows stored for one node.
    pub fn count(&self, node: NodeId) -> usize {
        self.by_node.get(&node).map_or(0, Vec::len)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&NodeId, &WallTime)> {
        self.by_node
            .iter()
            .flat_map(|(n, rows)| rows.iter().map(move |t| (n, t)))
    }
}

/// What central stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Store {
    /// Telemetry rows, unique by (node, timestamp).
    pub telemetry: TelemetryRows,
    /// Telemetry messages that arrived (including replays).
    pub telemetry_received: u64,
    /// Samples the store refused (its queue was full): not acked.
    pub telemetry_refused: u64,
    /// The first result recorded per request.
    pub results: BTreeMap<RequestId, CommandResult>,
    /// Results that arrived (including re-sends).
    pub results_received: u64,
    /// Every state each command went through.
    pub command_states: BTreeMap<RequestId, Vec<CommandState>>,
    /// Status changes per node, in order.
    pub statuses: BTreeMap<NodeId, Vec<NodeStatus>>,
    /// Alerts, health and log lines.
    pub records: Vec<(NodeId, AgentMessage)>,
    /// The keys of the records stored, for storing each once.
    pub record_keys: BTreeSet<(NodeId, RecordKey)>,
    /// Refused upgrades, by reason.
    pub auth_failures: Vec<&'static str>,
    /// Which node each submitted command is for (as the operator API
    /// stores it before the hub sees it).
    pub commands: BTreeMap<RequestId, NodeId>,
    /// What central told an administrator.
    pub alarms: Vec<Alarm>,
    /// v0.3: every state each rollout went through.
    pub rollout_states: BTreeMap<crate::RolloutId, Vec<crate::central::rollout::RolloutState>>,
    /// v0.3: every state each rollout target went through.
    pub rollout_targets:
        BTreeMap<(crate::RolloutId, NodeId), Vec<crate::central::rollout::TargetState>>,
    /// v0.3: every control of a rollout and its verdict.
    pub rollout_controls: Vec<(
        crate::RolloutId,
        crate::central::RolloutControl,
        Result<crate::central::rollout::RolloutState, crate::central::ControlRefusal>,
    )>,
    /// v0.2: every decision on an approval request and its verdict.
    pub decisions: Vec<(
        RequestId,
        String,
        crate::central::approval::Decision,
        Result<crate::central::approval::Decided, crate::central::approval::ApprovalRefusal>,
    )>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pending {
    DialArrives {
        conn: u64,
        token: String,
        hello: Hello,
    },
    DialAnswer {
        conn: u64,
        failure: Option<DialFailure>,
    },
    ToCentral {
        conn: u64,
        text: String,
    },
    ToAgent {
        conn: u64,
        text: String,
    },
    ClosedToCentral {
        conn: u64,
        code: Option<crate::transport::CloseCode>,
    },
    ClosedToAgent {
        conn: u64,
        code: Option<crate::transport::CloseCode>,
    },
    /// A sample central's store made durable (after [`Ingest::delay`]).
    Stored {
        session_id: SessionId,
        node_id: NodeId,
        timestamp: WallTime,
    },
    TaskDone {
        agent: usize,
        request_id: RequestId,
        outcome: CommandOutcome,
    },
    HealthDone {
        agent: usize,
        request_id: RequestId,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Conn {
    agent: usize,
    epoch: Epoch,
    session: Option<SessionId>,
    agent_open: bool,
    central_open: bool,
}

/// How central's telemetry store behaves in a [`World`]: each sample is
/// durable `delay` after it arrives, and at most `queue` wait at once —
/// past that a sample is refused, as central's ingest queue refuses. The
/// default stores at once and never refuses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ingest {
    pub delay: Duration,
    pub queue: Option<usize>,
}

/// The simulated world.
#[derive(Debug)]
pub struct World {
    pub now: Timestamp,
    pub wall0: WallTime,
    pub net: NetConfig,
    pub agents: Vec<AgentNode>,
    /// Central: the real hub and sessions, run as its driver runs them.
    pub central: CentralHost,
    /// What a restarted central starts with.
    pub hub_config: HubConfig,
    pub registry: BTreeMap<NodeId, NodeLookup>,
    pub store: Store,
    /// Every output of every engine, stamped: two runs with one seed give the same trace.
    pub trace: Vec<String>,
    pub tracing: bool,
    /// Keep every message and event per agent (tests); off for large runs.
    pub recording: bool,
    /// Persist agent snapshots on `Persist` (off for large runs).
    pub persisting: bool,
    /// Broken protocol invariants the world saw (e.g. a send on a closed transport).
    pub violations: Vec<String>,
    /// The most outputs one engine call produced.
    pub max_outputs_per_call: usize,
    /// Central's telemetry store.
    pub ingest: Ingest,
    /// Samples waiting in it.
    ingest_waiting: usize,
    rng: Prng,
    conns: BTreeMap<u64, Conn>,
    conn_by_epoch: BTreeMap<(usize, Epoch), u64>,
    session_conn: BTreeMap<SessionId, u64>,
    queue: BinaryHeap<Reverse<(Timestamp, u64, u64)>>,
    /// The latest arrival scheduled per (connection, towards central): a
    /// stream delivers in order unless the reorder fault says otherwise.
    last_arrival: BTreeMap<(u64, bool), Timestamp>,
    /// Each engine's next deadline, indexed so a step does not scan them all.
    agent_due: Vec<Option<Timestamp>>,
    agent_index: BTreeSet<(Timestamp, usize)>,
    pending: BTreeMap<u64, Pending>,
    seq: u64,
    next_conn: u64,
    next_id: u128,
}

/// A plausible sample with the given CPU and disk use.
pub fn sample(cpu: f64, disk: f64) -> TelemetryData {
    let total = 100 * (1 << 30);
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let used = (disk / 100.0 * total as f64) as u64;
    TelemetryData {
        system: SystemMetrics {
            cpu: CpuMetrics {
                usage: cpu,
                per_core: vec![cpu, cpu],
            },
            load: [0.5, 0.4, 0.3],
            memory: MemoryMetrics {
                total: 8 << 30,
                used: 3 << 30,
            },
            swap: MemoryMetrics { total: 0, used: 0 },
            disks: vec![DiskMetrics {
                mount: "/".into(),
                total,
                used,
            }],
            network: NetworkMetrics {
                rx_bytes_per_sec: 1000,
                tx_bytes_per_sec: 500,
            },
            uptime: 3600,
            processes: 100,
        },
        containers: vec![],
        application: ApplicationMetrics {
            status: ApplicationStatus::Up,
            latency_ms: Some(3),
            metrics: BTreeMap::new(),
        },
        containers_unavailable: None,
    }
}

impl World {
    /// An empty world whose randomness all follows from `seed`.
    pub fn new(seed: u64) -> Self {
        let wall0 = WallTime::from_unix_millis(1_760_522_400_000).unwrap_or(WallTime::UNIX_EPOCH);
        let mut hub_config = HubConfig::new(AUDIENCE);
        hub_config.seed = seed ^ 0x5eed;
        let central = CentralHost::new(
            Timestamp::ZERO,
            wall0,
            hub_config.clone(),
            SessionConfig::default(),
        );
        Self {
            now: Timestamp::ZERO,
            wall0,
            net: NetConfig::default(),
            agents: Vec::new(),
            central,
            hub_config,
            registry: BTreeMap::new(),
            store: Store::default(),
            trace: Vec::new(),
            tracing: false,
            recording: true,
            persisting: true,
            violations: Vec::new(),
            max_outputs_per_call: 0,
            ingest: Ingest::default(),
            ingest_waiting: 0,
            rng: Prng::new(seed),
            conns: BTreeMap::new(),
            conn_by_epoch: BTreeMap::new(),
            session_conn: BTreeMap::new(),
            queue: BinaryHeap::new(),
            pending: BTreeMap::new(),
            last_arrival: BTreeMap::new(),
            agent_due: Vec::new(),
            agent_index: BTreeSet::new(),
            seq: 0,
            next_conn: 0,
            next_id: 1,
        }
    }

    /// Sets central's server-set intervals (before agents connect).
    pub fn set_intervals(&mut self, intervals: Intervals) {
        self.central.session_config = SessionConfig::with_intervals(intervals);
    }

    /// The wall clock now.
    pub fn wall(&self) -> WallTime {
        self.wall0
            .add_millis(i64::try_from(self.now.as_micros() / 1000).unwrap_or(i64::MAX))
    }

    /// A fresh deterministic UUID-shaped id.
    pub fn fresh_id(&mut self) -> u128 {
        self.next_id += 1;
        (0xABCD_u128 << 112) | self.next_id
    }

    /// Adds a registered agent for `node_id` with `config` (its node id is
    /// overwritten); returns its index.
    pub fn add_agent(&mut self, node_id: NodeId, mut config: AgentConfig) -> usize {
        config.node_id = node_id;
        let mut engine = AgentEngine::new(config);
        engine.handle_input(self.now, AgentInput::WallClock(self.wall()));
        self.registry.insert(node_id, NodeLookup::Active);
        self.agents.push(AgentNode {
            engine,
            node_id,
            behaviours: BTreeMap::new(),
            runs: BTreeMap::new(),
            running: BTreeSet::new(),
            sent: Vec::new(),
            sent_classes: Vec::new(),
            received: Vec::new(),
            signs_validly: true,
            cpu: 10.0,
            disk: 50.0,
            mints_tokens: true,
            saved: None,
            events: Vec::new(),
            samples_taken: 0,
            update_fates: Vec::new(),
            key_updates: Vec::new(),
            peer: IpAddr::V4(Ipv4Addr::from(
                0x0a00_0002_u32.wrapping_add(u32::try_from(self.agents.len()).unwrap_or(0)),
            )),
        });
        self.agent_due.push(None);
        let i = self.agents.len() - 1;
        self.index_agent(i);
        i
    }

    /// Records agent `i`'s next deadline in the index.
    fn index_agent(&mut self, i: usize) {
        let next = self.agents[i].engine.poll_timeout();
        if self.agent_due[i] != next {
            if let Some(old) = self.agent_due[i] {
                self.agent_index.remove(&(old, i));
            }
            if let Some(new) = next {
                self.agent_index.insert((new, i));
            }
            self.agent_due[i] = next;
        }
    }

    /// Feeds an input to agent `i` now and performs its outputs.
    pub fn agent_input(&mut self, i: usize, input: AgentInput) {
        self.agents[i].engine.handle_input(self.now, input);
        self.drain_agent(i);
    }

    /// Starts agent `i`.
    pub fn start(&mut self, i: usize) {
        self.agent_input(i, AgentInput::Start);
    }

    /// Replaces agent `i`'s engine with a fresh one restored from its last
    /// persisted snapshot, as after a crash and restart, and starts it.
    pub fn restart_agent(&mut self, i: usize, config: AgentConfig) {
        let node_id = self.agents[i].node_id;
        let mut config = config;
        config.node_id = node_id;
        let mut engine = AgentEngine::new(config);
        engine.handle_input(self.now, AgentInput::WallClock(self.wall()));
        if let Some(snapshot) = self.agents[i].saved.clone() {
            engine.restore(snapshot, self.wall());
        }
        // The old process is gone: its transports die with it, dials still
        // on their way included (the new process counts epochs from 1
        // again: nothing of the old one's may reach it).
        let conns: Vec<(u64, bool)> = self
            .conns
            .iter()
            .filter(|(_, c)| c.agent == i && c.agent_open)
            .map(|(id, c)| (*id, c.central_open))
            .collect();
        for (conn, central_open) in conns {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.agent_open = false;
            }
            if central_open {
                self.schedule(
                    self.net.latency,
                    Pending::ClosedToCentral { conn, code: None },
                );
            }
        }
        self.conn_by_epoch.retain(|(agent, _), _| *agent != i);
        self.agents[i].engine = engine;
        self.agents[i].running.clear();
        self.start(i);
    }

    /// Submits a command through the hub as the operator API would.
    pub fn submit(
        &mut self,
        node_id: NodeId,
        message: CentralMessage,
        timeout: Duration,
    ) -> CommandState {
        self.submit_with(node_id, message, timeout, None)
    }

    /// Submits a command that needs approval (v0.2).
    pub fn submit_for_approval(
        &mut self,
        node_id: NodeId,
        message: CentralMessage,
        timeout: Duration,
        approval: crate::central::approval::ApprovalRequest,
    ) -> CommandState {
        self.submit_with(node_id, message, timeout, Some(approval))
    }

    /// v0.3: starts a rollout of `message` to `targets` (request ids
    /// `1000 + i`, [`rollout_plan`]) now.
    pub fn start_rollout(
        &mut self,
        rollout_id: crate::RolloutId,
        targets: &[NodeId],
        message: CentralMessage,
        strategy: crate::central::rollout::Strategy,
    ) {
        self.start_rollout_with(rollout_id, targets, message, strategy, None);
    }

    /// v0.3: [`Self::start_rollout`], needing `approval` first (v0.2).
    pub fn start_rollout_with(
        &mut self,
        rollout_id: crate::RolloutId,
        targets: &[NodeId],
        message: CentralMessage,
        strategy: crate::central::rollout::Strategy,
        approval: Option<crate::central::NeedsApproval>,
    ) {
        let new = crate::central::NewRollout {
            rollout_id,
            requester: "alice".into(),
            strategy,
            targets: rollout_plan(targets),
            message,
            timeout: Duration::from_secs(30),
            start_at: self.wall(),
            restored: None,
            approval: approval.map(Box::new),
        };
        self.hub_input(HubInput::StartRollout(Box::new(new)));
    }

    /// v0.3: pauses, resumes or aborts a rollout; the verdict.
    pub fn control_rollout(
        &mut self,
        rollout_id: crate::RolloutId,
        control: crate::central::RolloutControl,
    ) -> Result<crate::central::rollout::RolloutState, crate::central::ControlRefusal> {
        self.hub_input(HubInput::ControlRollout {
            rollout_id,
            control,
        });
        self.store
            .rollout_controls
            .last()
            .map_or(Err(crate::central::ControlRefusal::Unknown), |c| {
                c.2.clone()
            })
    }

    /// A person decides on a command awaiting approval (v0.2); the verdict.
    pub fn decide(
        &mut self,
        request_id: RequestId,
        person: crate::central::approval::Person,
        decision: crate::central::approval::Decision,
    ) -> Result<crate::central::approval::Decided, crate::central::approval::ApprovalRefusal> {
        self.hub_input(HubInput::Decide {
            request_id,
            person,
            decision,
        });
        self.store.decisions.last().map_or(
            Err(crate::central::approval::ApprovalRefusal::NotPending),
            |d| d.3.clone(),
        )
    }

    fn submit_with(
        &mut self,
        node_id: NodeId,
        message: CentralMessage,
        timeout: Duration,
        approval: Option<crate::central::approval::ApprovalRequest>,
    ) -> CommandState {
        let request_id = command_request_id(&message).unwrap_or(RequestId::from_u128(0));
        // The store's key: a request id is accepted once, even by a restarted central.
        if let Some(state) = self
            .store
            .command_states
            .get(&request_id)
            .and_then(|s| s.last())
        {
            return *state;
        }
        self.store.commands.insert(request_id, node_id);
        let known = self.registry.get(&node_id) == Some(&NodeLookup::Active);
        let submission = Submission {
            node_id,
            request_id,
            message: Some(message),
            timeout,
            known,
            approval,
        };
        self.hub_input(HubInput::Submit(vec![submission]));
        self.store
            .command_states
            .get(&request_id)
            .and_then(|s| s.last())
            .copied()
            .unwrap_or(CommandState::Undeliverable)
    }

    /// Delivers a message straight to the node's live session, bypassing the
    /// hub's tracker (a duplicate, or a message the hub never sends).
    pub fn deliver_to(&mut self, node_id: NodeId, message: CentralMessage) -> bool {
        let Some(session_id) = self.central.hub.live_session(node_id) else {
            return false;
        };
        let event = ToSession::deliver_untracked(message);
        self.central
            .session_input(self.now, session_id, SessionInput::FromHub(event));
        self.perform_central();
        true
    }

    /// Gives central's hub an input now and performs what follows.
    pub fn hub_input(&mut self, input: HubInput) {
        self.central.hub_input(self.now, input);
        self.perform_central();
    }

    /// Sends a raw text frame from agent `i`'s current transport to central.
    pub fn frame_to_central(&mut self, i: usize, text: &str) {
        let epoch = self.agents[i].engine.epoch();
        if let Some(conn) = self.conn_of(i, epoch) {
            self.schedule(
                self.net.latency,
                Pending::ToCentral {
                    conn,
                    text: text.to_owned(),
                },
            );
        }
    }

    /// Revokes a node: its live session closes with 4003 and it can no longer connect.
    pub fn revoke(&mut self, node_id: NodeId) {
        self.registry.insert(node_id, NodeLookup::Revoked);
        self.hub_input(HubInput::Revoke(node_id));
    }

    /// Drains central, as before a graceful shutdown.
    pub fn drain(&mut self) {
        self.hub_input(HubInput::Drain);
    }

    /// Cuts every transport abruptly: both ends see a close without a code.
    pub fn cut_transports(&mut self) {
        let conns: Vec<u64> = self.conns.keys().copied().collect();
        for conn in conns {
            let Some(c) = self.conns.get(&conn).copied() else {
                continue;
            };
            if c.agent_open {
                self.schedule(
                    self.net.latency,
                    Pending::ClosedToAgent { conn, code: None },
                );
            }
            if c.central_open {
                self.schedule(
                    self.net.latency,
                    Pending::ClosedToCentral { conn, code: None },
                );
            }
        }
    }

    /// Central crashes and restarts: sessions and the hub's memory are lost,
    /// the store survives; agents see their transports reset.
    pub fn restart_central(&mut self) {
        let mut reset = Vec::new();
        for (conn, c) in &mut self.conns {
            c.central_open = false;
            if c.agent_open {
                reset.push(*conn);
            }
        }
        for conn in reset {
            self.schedule(
                self.net.latency,
                Pending::ClosedToAgent { conn, code: None },
            );
        }
        self.session_conn.clear();
        let session_config = self.central.session_config.clone();
        self.central = CentralHost::new(
            self.now,
            self.wall(),
            self.hub_config.clone(),
            session_config,
        );
    }

    /// Starts or ends a partition.
    pub fn set_partitioned(&mut self, partitioned: bool) {
        self.net.partitioned = partitioned;
    }

    /// When the next thing happens.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        let agents = self.agent_index.first().map(|(t, _)| *t);
        let queue = self.queue.peek().map(|Reverse((t, _, _))| *t);
        [agents, queue, self.central.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Advances to the next deadline (no later than `limit`) and handles
    /// everything due then. Returns false when nothing is due before `limit`.
    pub fn step(&mut self, limit: Timestamp) -> bool {
        let Some(next) = self.next_deadline() else {
            self.now = self.now.max(limit);
            return false;
        };
        if next > limit {
            self.now = self.now.max(limit);
            return false;
        }
        self.now = self.now.max(next);
        let now = self.now;
        while let Some(Reverse((t, _, id))) = self.queue.peek().copied() {
            if t > now {
                break;
            }
            self.queue.pop();
            if let Some(p) = self.pending.remove(&id) {
                self.deliver(p);
            }
        }
        while let Some(&(t, i)) = self.agent_index.first() {
            if t > now {
                break;
            }
            self.agents[i].engine.handle_timeout(now);
            self.drain_agent(i);
            // A timer still due (it re-armed for now) waits for the next step.
            if self.agent_due[i].is_some_and(|t| t <= now) {
                break;
            }
        }
        if self.central.poll_timeout().is_some_and(|t| t <= now) {
            self.central.handle_timeout(now);
        }
        self.perform_central();
        true
    }

    /// Runs until `until`.
    pub fn run_until(&mut self, until: Timestamp) {
        while self.step(until) {}
    }

    /// Runs for `d` more.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    /// Runs until `done` holds or `within` has passed; returns whether it held.
    pub fn run_until_true(
        &mut self,
        within: Duration,
        mut done: impl FnMut(&World) -> bool,
    ) -> bool {
        let until = self.now + within;
        loop {
            if done(self) {
                return true;
            }
            if !self.step(until) {
                return done(self);
            }
        }
    }

    fn trace_line(&mut self, line: impl FnOnce() -> String) {
        if self.tracing {
            let text = line();
            self.trace.push(format!("{} {text}", self.now));
        }
    }

    fn queue_pending(&mut self, at: Timestamp, p: Pending) {
        self.seq += 1;
        self.pending.insert(self.seq, p);
        self.queue.push(Reverse((at, self.seq, self.seq)));
    }

    fn schedule(&mut self, after: Duration, p: Pending) {
        let at = self.now + after;
        self.queue_pending(at, p);
    }

    /// A frame's trip: latency, jitter and the configured faults.
    fn transmit(&mut self, p: Pending) {
        if self.net.partitioned {
            return;
        }
        let faults = self.net.faults;
        if self.rng.between(0, 999) < u64::from(faults.loss_permille) {
            return;
        }
        let delay = self.net.latency + self.rng.duration_between(Duration::ZERO, self.net.jitter);
        let stream = match &p {
            Pending::ToCentral { conn, .. } => (*conn, true),
            Pending::ToAgent { conn, .. } => (*conn, false),
            _ => (0, false),
        };
        let mut at = self.now + delay;
        if self.rng.between(0, 999) < u64::from(faults.reorder_permille) {
            // Held back past frames sent after it.
            at = at
                + self
                    .rng
                    .duration_between(Duration::ZERO, self.net.latency.saturating_mul(10));
        } else {
            // In order behind everything already on the way.
            let last = self
                .last_arrival
                .get(&stream)
                .copied()
                .unwrap_or(Timestamp::ZERO);
            at = at.max(last);
            self.last_arrival.insert(stream, at);
        }
        if self.rng.between(0, 999) < u64::from(faults.duplicate_permille) {
            self.queue_pending(at + self.net.latency, p.clone());
        }
        self.queue_pending(at, p);
    }

    /// A close travels behind the frames already on the way, like a TCP FIN.
    fn transmit_close(&mut self, p: Pending) {
        let stream = match &p {
            Pending::ClosedToCentral { conn, .. } => (*conn, true),
            Pending::ClosedToAgent { conn, .. } => (*conn, false),
            _ => (0, false),
        };
        let last = self
            .last_arrival
            .get(&stream)
            .copied()
            .unwrap_or(Timestamp::ZERO);
        let at = (self.now + self.net.latency).max(last);
        self.last_arrival.insert(stream, at);
        self.queue_pending(at, p);
    }

    fn conn_of(&self, agent: usize, epoch: Epoch) -> Option<u64> {
        self.conn_by_epoch.get(&(agent, epoch)).copied()
    }

    fn make_token(&mut self, i: usize, lifetime: Duration) -> String {
        let jti = crate::TokenId::from_u128(self.fresh_id());
        let a = &self.agents[i];
        let iat = self.wall().unix_seconds();
        let exp = iat + i64::try_from(lifetime.as_secs()).unwrap_or(3600);
        super::tokens::mint(a.node_id, jti, iat, exp, a.signs_validly)
    }

    /// A sample is durable: its row is written, and its session (if still
    /// open) acks it.
    fn store_sample(&mut self, session_id: SessionId, node_id: NodeId, timestamp: WallTime) {
        self.store.telemetry.insert((node_id, timestamp));
        let input = SessionInput::TelemetryStored(timestamp);
        self.central.session_input(self.now, session_id, input);
    }

    fn check_token(&self, token: &str) -> TokenCheck {
        super::tokens::check(token, &self.registry)
    }

    fn drain_agent(&mut self, i: usize) {
        self.drain_agent_outputs(i);
        self.index_agent(i);
    }

    fn drain_agent_outputs(&mut self, i: usize) {
        let mut count = 0;
        while let Some(output) = self.agents[i].engine.poll_output() {
            count += 1;
            self.max_outputs_per_call = self.max_outputs_per_call.max(count);
            self.trace_line(|| format!("agent{i} {output:?}"));
            match output {
                AgentOutput::MintToken { lifetime } => {
                    if self.agents[i].mints_tokens {
                        let token = self.make_token(i, lifetime);
                        self.agents[i]
                            .engine
                            .handle_input(self.now, AgentInput::TokenMinted { token, lifetime });
                    }
                }
                AgentOutput::Dial {
                    epoch,
                    token,
                    hello,
                } => {
                    self.next_conn += 1;
                    let conn = self.next_conn;
                    self.conn_by_epoch.insert((i, epoch), conn);
                    self.conns.insert(
                        conn,
                        Conn {
                            agent: i,
                            epoch,
                            session: None,
                            agent_open: true,
                            central_open: false,
                        },
                    );
                    if self.net.partitioned {
                        self.schedule(
                            Duration::from_secs(3),
                            Pending::DialAnswer {
                                conn,
                                failure: Some(DialFailure::Network),
                            },
                        );
                    } else {
                        let arrives = Pending::DialArrives { conn, token, hello };
                        self.schedule(self.net.latency, arrives);
                    }
                }
                AgentOutput::Send {
                    epoch,
                    message,
                    class,
                } => {
                    if self.recording {
                        self.agents[i].sent.push(message.clone());
                        self.agents[i].sent_classes.push(class);
                    }
                    let open = self
                        .conn_of(i, epoch)
                        .and_then(|c| self.conns.get(&c))
                        .is_some_and(|c| c.agent_open);
                    if !open {
                        let text = format!("agent{i} sent {message:?} on closed {epoch}");
                        self.violations.push(text);
                    }
                    if let Some(conn) = self.conn_of(i, epoch) {
                        let text = encode(&message).unwrap_or_default();
                        self.transmit(Pending::ToCentral { conn, text });
                    }
                }
                AgentOutput::Close { epoch, code, .. } => {
                    if let Some(conn) = self.conn_of(i, epoch) {
                        if let Some(c) = self.conns.get_mut(&conn) {
                            c.agent_open = false;
                        }
                        if !self.net.partitioned {
                            self.transmit_close(Pending::ClosedToCentral {
                                conn,
                                code: Some(code),
                            });
                        }
                    }
                }
                AgentOutput::SampleTelemetry => {
                    self.agents[i].samples_taken += 1;
                    let data = sample(self.agents[i].cpu, self.agents[i].disk);
                    self.agents[i]
                        .engine
                        .handle_input(self.now, AgentInput::TelemetrySample(data));
                }
                AgentOutput::CheckHealth => {
                    self.agents[i].engine.handle_input(
                        self.now,
                        AgentInput::HealthReport {
                            request_id: None,
                            checks: all_ok(),
                            details: HealthDetails::default(),
                        },
                    );
                }
                AgentOutput::Run { request_id, task } => {
                    *self.agents[i].runs.entry(request_id).or_default() += 1;
                    self.agents[i].running.insert(request_id);
                    match task {
                        Task::HealthCheck { .. } => {
                            self.schedule(
                                Duration::from_millis(10),
                                Pending::HealthDone {
                                    agent: i,
                                    request_id,
                                },
                            );
                        }
                        Task::Execute(approved) => {
                            let name = approved
                                .program
                                .rsplit('/')
                                .next()
                                .unwrap_or_default()
                                .to_owned();
                            let behaviour = self.agents[i]
                                .behaviours
                                .get(&name)
                                .cloned()
                                .unwrap_or_default();
                            if let Behaviour::Succeed { after, stdout } = behaviour {
                                let outcome = CommandOutcome {
                                    success: true,
                                    exit_code: Some(0),
                                    stdout,
                                    ..CommandOutcome::default()
                                };
                                self.schedule(
                                    after,
                                    Pending::TaskDone {
                                        agent: i,
                                        request_id,
                                        outcome,
                                    },
                                );
                            }
                        }
                        Task::Deploy { .. } | Task::UpdateAgent { .. } => {
                            let outcome = CommandOutcome {
                                success: true,
                                exit_code: Some(0),
                                stdout: "done\n".into(),
                                ..CommandOutcome::default()
                            };
                            self.schedule(
                                Duration::from_secs(1),
                                Pending::TaskDone {
                                    agent: i,
                                    request_id,
                                    outcome,
                                },
                            );
                        }
                    }
                }
                AgentOutput::Kill { request_id } => {
                    let outcome = CommandOutcome {
                        success: false,
                        exit_code: Some(-9),
                        ..CommandOutcome::default()
                    };
                    self.schedule(
                        Duration::from_millis(1),
                        Pending::TaskDone {
                            agent: i,
                            request_id,
                            outcome,
                        },
                    );
                }
                AgentOutput::Persist => {
                    if self.persisting {
                        let snapshot = self.agents[i].engine.snapshot();
                        self.agents[i].saved = Some(snapshot);
                    }
                }
                AgentOutput::Event(event) => {
                    if self.recording {
                        self.agents[i].events.push((self.now, event));
                    }
                }
                AgentOutput::ConfirmUpdate => self.agents[i].update_fates.push(true),
                AgentOutput::RollBackUpdate => self.agents[i].update_fates.push(false),
                AgentOutput::StreamLogs { .. } => {}
                AgentOutput::UpdateTrafficKeys { epoch } => self.agents[i].key_updates.push(epoch),
            }
        }
    }

    fn deliver(&mut self, p: Pending) {
        match p {
            Pending::DialArrives { conn, token, hello } => self.admit(conn, &token, hello),
            Pending::DialAnswer { conn, failure } => {
                let Some(c) = self.conns.get(&conn).copied().filter(|c| c.agent_open) else {
                    return;
                };
                let input = match failure {
                    None => AgentInput::Connected { epoch: c.epoch },
                    Some(reason) => AgentInput::DialFailed {
                        epoch: c.epoch,
                        reason,
                    },
                };
                self.agent_input(c.agent, input);
            }
            Pending::ToCentral { conn, text } => {
                let Some(c) = self.conns.get(&conn).copied() else {
                    return;
                };
                if let (true, Some(session)) = (c.central_open, c.session) {
                    self.central
                        .session_input(self.now, session, SessionInput::Frame(text));
                    self.perform_central();
                }
            }
            Pending::ToAgent { conn, text } => {
                let Some(c) = self.conns.get(&conn).copied() else {
                    return;
                };
                if c.agent_open {
                    if self.recording
                        && let Ok(message) =
                            crate::decode::<CentralMessage>(&text, &Limits::default())
                    {
                        self.agents[c.agent].received.push(message);
                    }
                    self.agent_input(
                        c.agent,
                        AgentInput::Frame {
                            epoch: c.epoch,
                            text,
                        },
                    );
                }
            }
            Pending::ClosedToCentral { conn, code } => {
                let Some(c) = self.conns.get_mut(&conn) else {
                    return;
                };
                if !c.central_open {
                    return;
                }
                c.central_open = false;
                if let Some(session) = c.session {
                    self.central
                        .session_input(self.now, session, SessionInput::Closed { code });
                    self.perform_central();
                }
            }
            Pending::ClosedToAgent { conn, code } => {
                let Some(c) = self.conns.get_mut(&conn) else {
                    return;
                };
                if !c.agent_open {
                    return;
                }
                c.agent_open = false;
                let (agent, epoch) = (c.agent, c.epoch);
                self.agent_input(agent, AgentInput::Closed { epoch, code });
            }
            Pending::Stored {
                session_id,
                node_id,
                timestamp,
            } => {
                self.ingest_waiting -= 1;
                self.store_sample(session_id, node_id, timestamp);
            }
            Pending::TaskDone {
                agent,
                request_id,
                outcome,
            } => {
                if self.agents[agent].running.remove(&request_id) {
                    self.agent_input(
                        agent,
                        AgentInput::CommandFinished {
                            request_id,
                            outcome,
                        },
                    );
                }
            }
            Pending::HealthDone { agent, request_id } => {
                if self.agents[agent].running.remove(&request_id) {
                    self.agent_input(
                        agent,
                        AgentInput::HealthReport {
                            request_id: Some(request_id),
                            checks: all_ok(),
                            details: HealthDetails::default(),
                        },
                    );
                }
            }
        }
    }

    fn admit(&mut self, conn: u64, token: &str, hello: Hello) {
        let Some(c) = self.conns.get(&conn).copied() else {
            return;
        };
        if !c.agent_open {
            return;
        }
        let peer = Some(self.agents[c.agent].peer);
        let session_id = SessionId::from_u128(self.fresh_id());
        let verdict = match self.central.hub.screen(self.now, 0) {
            Some(refusal) => Admit::Refused(refusal),
            None => {
                let upgrade = Upgrade {
                    session_id,
                    peer,
                    token: Some(self.check_token(token)),
                    hello,
                };
                self.central.admit(self.now, self.wall(), &upgrade)
            }
        };
        match verdict {
            Admit::Accepted(admission) => {
                self.session_conn.insert(admission.session_id, conn);
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.session = Some(admission.session_id);
                    c.central_open = true;
                }
                self.schedule(
                    self.net.latency,
                    Pending::DialAnswer {
                        conn,
                        failure: None,
                    },
                );
            }
            Admit::Refused(refusal) => {
                self.store.auth_failures.push(match refusal.kind {
                    RefusalKind::Throttled => "throttled",
                    RefusalKind::Busy => "busy",
                    RefusalKind::Unauthorized => refusal.reason,
                });
                self.trace_line(|| format!("central refused {refusal:?}"));
                // As the agent's transport reads the HTTP answer.
                let retry_after = refusal.retry_after.map(|d| d.as_secs());
                let failure =
                    DialFailure::from_http_status(refusal.kind.http_status(), retry_after);
                self.schedule(
                    self.net.latency + refusal.hold,
                    Pending::DialAnswer {
                        conn,
                        failure: Some(failure),
                    },
                );
            }
        }
        self.perform_central();
    }

    /// Performs central's effects with the world's stand-ins until none
    /// are left. (Events between the hub and the sessions never come out
    /// here: the central host forwards them.)
    fn perform_central(&mut self) {
        while let Some(effect) = self.central.poll_effect() {
            self.trace_line(|| format!("central {effect:?}"));
            match effect {
                CentralEffect::Session {
                    session_id,
                    node_id,
                    output,
                } => self.perform_session(session_id, node_id, output),
                CentralEffect::Hub(output) => self.perform_hub(output),
            }
        }
    }

    fn perform_session(&mut self, session_id: SessionId, node_id: NodeId, output: SessionOutput) {
        let conn = self.session_conn.get(&session_id).copied();
        match output {
            SessionOutput::Send(message) => {
                if !conn
                    .and_then(|c| self.conns.get(&c))
                    .is_some_and(|c| c.central_open)
                {
                    let text =
                        format!("session {session_id} sent {message:?} on a closed transport");
                    self.violations.push(text);
                }
                if let Some(conn) = conn {
                    let text = encode(&message).unwrap_or_default();
                    self.transmit(Pending::ToAgent { conn, text });
                }
            }
            SessionOutput::Close { code, .. } => {
                self.session_conn.remove(&session_id);
                if let Some(conn) = conn {
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.central_open = false;
                    }
                    if !self.net.partitioned {
                        self.transmit_close(Pending::ClosedToAgent {
                            conn,
                            code: Some(code),
                        });
                    }
                }
            }
            SessionOutput::StoreTelemetry(t) => {
                self.store.telemetry_received += 1;
                if self.ingest.queue.is_some_and(|q| self.ingest_waiting >= q) {
                    self.store.telemetry_refused += 1;
                    let input = SessionInput::TelemetryRefused(t);
                    self.central.session_input(self.now, session_id, input);
                } else if self.ingest.delay.is_zero() {
                    self.store_sample(session_id, t.node_id, t.timestamp);
                } else {
                    self.ingest_waiting += 1;
                    self.schedule(
                        self.ingest.delay,
                        Pending::Stored {
                            session_id,
                            node_id: t.node_id,
                            timestamp: t.timestamp,
                        },
                    );
                }
            }
            SessionOutput::VerifyToken { token } => {
                let check = Box::new(self.check_token(&token));
                let input = SessionInput::TokenVerified(check);
                self.central.session_input(self.now, session_id, input);
            }
            SessionOutput::Record { message, ack } => {
                // Stored once per key, as central's store does (kept only
                // when recording: large runs do not look at them).
                if self.recording
                    && ack.is_none_or(|key| self.store.record_keys.insert((node_id, key)))
                {
                    self.store.records.push((node_id, *message));
                }
                if let Some(key) = ack {
                    let input = SessionInput::RecordStored(key);
                    self.central.session_input(self.now, session_id, input);
                }
            }
            SessionOutput::Alarm(alarm) => self.store.alarms.push(alarm),
            SessionOutput::ToHub(_) | SessionOutput::Event(_) => {}
        }
    }

    fn perform_hub(&mut self, output: HubOutput) {
        match output {
            HubOutput::StatusChanged {
                node_id, status, ..
            } => {
                self.store.statuses.entry(node_id).or_default().push(status);
            }
            HubOutput::CommandChanged {
                request_id, state, ..
            } => {
                self.store
                    .command_states
                    .entry(request_id)
                    .or_default()
                    .push(state);
            }
            HubOutput::RecordResult {
                session_id,
                node_id,
                result,
            } => {
                self.store.results_received += 1;
                let owner = self.store.commands.get(&result.request_id).copied();
                let record = if owner.is_some_and(|owner| owner != node_id) {
                    ResultRecord::WrongNode
                } else {
                    let first = !self.store.results.contains_key(&result.request_id);
                    if first {
                        self.store
                            .results
                            .insert(result.request_id, (*result).clone());
                    }
                    ResultRecord::Stored { first }
                };
                let input = HubInput::ResultRecorded {
                    session_id,
                    node_id,
                    result,
                    record,
                };
                self.central.hub_input(self.now, input);
            }
            HubOutput::Alarm(alarm) => self.store.alarms.push(alarm),
            HubOutput::RolloutStart {
                node_id,
                request_id,
                message,
                timeout,
                ..
            } => {
                // As central's driver: stored (tagged), then submitted.
                self.store.commands.insert(request_id, node_id);
                let known = self.registry.get(&node_id) == Some(&NodeLookup::Active);
                let submission = Submission {
                    node_id,
                    request_id,
                    message: Some(message),
                    timeout,
                    known,
                    approval: None,
                };
                self.central
                    .hub_input(self.now, HubInput::Submit(vec![submission]));
            }
            HubOutput::RolloutChanged { rollout_id, state } => self
                .store
                .rollout_states
                .entry(rollout_id)
                .or_default()
                .push(state),
            HubOutput::RolloutTargetChanged {
                rollout_id,
                node_id,
                state,
            } => self
                .store
                .rollout_targets
                .entry((rollout_id, node_id))
                .or_default()
                .push(state),
            HubOutput::RolloutControlled {
                rollout_id,
                control,
                verdict,
            } => self
                .store
                .rollout_controls
                .push((rollout_id, control, verdict)),
            HubOutput::ApprovalDecided {
                request_id,
                person,
                decision,
                verdict,
                ..
            } => self
                .store
                .decisions
                .push((request_id, person, decision, verdict)),
            output @ (HubOutput::Claim { .. }
            | HubOutput::Vacate { .. }
            | HubOutput::LoadOpenCommands { .. }
            | HubOutput::Locate { .. }) => {
                let left = self.central.answer_alone(self.now, output);
                debug_assert!(left.is_none());
            }
            HubOutput::ExpireQueued { .. } | HubOutput::ToSession { .. } => {}
        }
    }
}

/// Every health check passing.
pub(crate) fn all_ok() -> HealthChecks {
    HealthChecks {
        agent: CheckStatus::Ok,
        containers: CheckStatus::Ok,
        disk: CheckStatus::Ok,
        memory: CheckStatus::Ok,
        database: CheckStatus::Ok,
    }
}

/// The `requestId` of a command message.
pub(crate) fn command_request_id(message: &CentralMessage) -> Option<RequestId> {
    message.request_id()
}

/// The targets of a rollout [`World::start_rollout`] starts: each node with
/// request id `1000 + i`, in order.
pub fn rollout_plan(targets: &[NodeId]) -> Vec<(NodeId, RequestId)> {
    targets
        .iter()
        .enumerate()
        .map(|(i, node)| (*node, RequestId::from_u128(1000 + i as u128)))
        .collect()
}
