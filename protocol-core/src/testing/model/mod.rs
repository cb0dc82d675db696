//! A [stateright] model of the protocol over the real engines: the agent
//! engine and central's hub and sessions, each wrapped as an actor with a
//! driver that does what the real drivers do. The checker explores every
//! interleaving of message deliveries, losses, duplicates, reorderings,
//! timer firings, crashes and recoveries up to a depth, and checks the
//! properties spec/protocol.md §13 lists.
//!
//! Time: each actor has its own clock, which jumps to its engine's next
//! deadline when its timer fires; any timer may fire at any point, so every
//! ordering of deadlines between actors is explored.
//!
//! The engines' state is not `Hash` (it holds a PRNG, floats and absolute
//! times). Each actor state hashes and compares a projection of it
//! (`key`): lifecycle states, timers relative to the actor's clock, queue
//! sizes, what ran and what is stored. Two states with one projection are
//! taken to be one; the projection keeps everything the properties read.

mod agent;
mod central;
pub mod rollout;
mod wire;

use std::borrow::Cow;
use std::ops::Range;
use std::time::Duration;

use stateright::actor::{
    Actor, ActorModel, ActorModelAction, ActorModelState, Id, LossyNetwork, Network, Out,
};
use stateright::{Expectation, Model};

pub use agent::{AgentActor, AgentState, AgentStore};
pub use central::{CentralActor, CentralState, CentralStore, StoredCommand};
pub use wire::{Conn, Packet, Tick, Wire};

use crate::agent::{AgentConfig, ConnectionState};
use crate::central::CommandState;
use crate::policy::{ArgRules, CommandRule, Policy};
use crate::wire::Intervals;
use crate::{NodeId, RequestId, Timestamp, WallTime};

/// The checked model.
pub type NapModel = ActorModel<ModelActor, ModelSpec>;
/// One state of it.
pub type NapState = ActorModelState<ModelActor>;

/// What the model holds: which agents, which commands, which faults.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    /// The node each agent process claims (two processes with one node id
    /// is the supersede case).
    pub agents: Vec<NodeId>,
    /// Commands the operator submitted before central's first start.
    pub commands: Vec<(NodeId, RequestId)>,
    /// This node is revoked at a moment the checker picks.
    pub revoke: Option<NodeId>,
    /// At most this many actors down at once (0: no crashes).
    pub max_crashes: usize,
    /// Messages may be lost.
    pub lossy: bool,
    /// Messages may be duplicated and reordered (otherwise each direction
    /// of each pair of actors is a FIFO).
    pub unordered: bool,
    pub intervals: Intervals,
    /// Check from every state that commands end once faults stop (costly).
    pub check_recovery: bool,
    /// v0.2: the commands need one approval, requested by `alice`; these
    /// decisions are taken at moments the checker picks.
    pub approval: Option<Vec<ModelDecision>>,
    /// v0.2: the agent's allow-list entry needs one signed approval it
    /// verifies itself (§8.2), certified by the model's approval root.
    pub node_guard: bool,
}

/// A decision the model's people may take (v0.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelDecision {
    /// Bob approves the command he was shown.
    Approve,
    /// Alice, the requester, approves her own request (always refused).
    ApproveOwn,
    /// Bob approves after the command was edited (another digest).
    ApproveEdited,
    /// Bob rejects it.
    Reject,
    /// Alice cancels it.
    Cancel,
    /// Bob approves with his signature, certified by the root the node
    /// trusts — the only valid signature in the model.
    ApproveSigned,
    /// Mallory approves with a signature certified by a root the node does
    /// not trust (central counts it: it does not know the node's roots).
    ApproveForged,
}

/// The requester of the model's approval requests.
pub const REQUESTER: &str = "alice";

impl ModelSpec {
    /// One agent for `node`, with one command submitted for it; a lossy,
    /// duplicating, reordering network; one crash at a time.
    pub fn one_agent(node: NodeId, request: RequestId) -> Self {
        Self {
            agents: vec![node],
            commands: vec![(node, request)],
            revoke: None,
            max_crashes: 1,
            lossy: true,
            unordered: true,
            // Telemetry and health far apart: they add traffic, not behaviour.
            intervals: Intervals {
                heartbeat: 30_000,
                telemetry: 3_600_000,
                health: 3_600_000,
            },
            check_recovery: false,
            approval: None,
            node_guard: false,
        }
    }

    /// The model: central is actor 0, agents follow in order.
    pub fn into_model(self) -> NapModel {
        let central = ModelActor::Central(CentralActor { spec: self.clone() });
        let agents: Vec<ModelActor> = self
            .agents
            .iter()
            .zip(1..)
            .map(|(node, seed)| {
                ModelActor::Agent(AgentActor {
                    config: agent_config(*node, seed, self.node_guard),
                    central: Id::from(0),
                })
            })
            .collect();
        let network = if self.unordered {
            Network::new_unordered_duplicating([])
        } else {
            Network::new_ordered([])
        };
        let lossy = if self.lossy {
            LossyNetwork::Yes
        } else {
            LossyNetwork::No
        };
        let max_crashes = self.max_crashes;
        let has_commands = !self.commands.is_empty();
        let revokes = self.revoke.is_some();
        let check_recovery = self.check_recovery;
        let approving = self.approval.is_some();
        let guarded = self.node_guard;
        let mut model = ActorModel::new(self, ())
            .actor(central)
            .actors(agents)
            .init_network(network)
            .lossy_network(lossy)
            .max_crashes(max_crashes)
            .within_boundary(clocks_close)
            .property(Expectation::Always, ONE_RUN, never_runs_twice)
            .property(Expectation::Always, ONE_RESULT, result_recorded_once)
            .property(
                Expectation::Always,
                AUTH_FIRST,
                nothing_runs_unauthenticated,
            )
            .property(Expectation::Always, REVOKED_OUT, revoked_never_established)
            .property(Expectation::Always, ONE_SESSION, one_live_session_per_node)
            .property(Expectation::Sometimes, ESTABLISHED, sometimes_established);
        if has_commands {
            model = model.property(Expectation::Sometimes, COMPLETED, sometimes_completed);
        }
        if max_crashes > 0 {
            model = model.property(Expectation::Sometimes, RECONNECTED, sometimes_reconnected);
        }
        if revokes {
            model = model.property(Expectation::Sometimes, REVOKED_STOPS, sometimes_revoked);
        }
        if check_recovery {
            model = model.property(Expectation::Always, RECOVERS, recovers_from_here);
        }
        if approving {
            model = model
                .property(Expectation::Always, APPROVED_FIRST, runs_only_approved)
                .property(Expectation::Always, NO_MEANS_NO, never_runs_refused)
                .property(Expectation::Always, APPROVED_ONCE, approved_at_most_once)
                .property(
                    Expectation::Sometimes,
                    APPROVED_RUNS,
                    sometimes_approved_and_run,
                );
        }
        if guarded {
            model = model.property(Expectation::Always, NODE_VERIFIES, runs_only_signed);
        }
        model
    }
}

/// Property names, as spec/protocol.md §13 lists them.
pub const ONE_RUN: &str = "a command never runs twice for one requestId";
pub const ONE_RESULT: &str = "a result is recorded at most once";
pub const AUTH_FIRST: &str = "nothing executes before the session is established";
pub const REVOKED_OUT: &str = "a revoked node never reaches established";
pub const ONE_SESSION: &str = "central never holds two live sessions for one node";
pub const ESTABLISHED: &str = "an agent reaches established";
pub const COMPLETED: &str = "a command completes";
pub const RECONNECTED: &str = "an agent reconnects after central crashed";
pub const REVOKED_STOPS: &str = "a revoked agent stops in Revoked";
pub const RECOVERS: &str =
    "every pending command reaches a terminal state once the network recovers";

pub const APPROVED_FIRST: &str = "no command requiring approval runs without an approval matching its digest by someone other than its requester";
pub const NO_MEANS_NO: &str = "a rejected, expired or cancelled command never runs";
pub const APPROVED_ONCE: &str = "a command is approved at most once";
pub const APPROVED_RUNS: &str = "an approved command runs";
pub const NODE_VERIFIES: &str = "a command the node guards runs only with a signed approval the node verifies, whatever central counted";

/// Steps the recovery check allows a state to settle in.
pub const RECOVERY_STEPS: usize = 400;

/// The model's approval root, and the approvers' keys (secrets of
/// [`Symbolic`](crate::testing::crypto::Symbolic)).
pub const ROOT_KEY: u8 = 1;
pub const BOB_KEY: u8 = 2;
pub const UNTRUSTED_ROOT_KEY: u8 = 3;
pub const MALLORY_KEY: u8 = 4;

/// The agent configuration of the model: `uptime` allowed (with `guarded`,
/// only with one signed approval certified by [`ROOT_KEY`]).
fn agent_config(node: NodeId, seed: u64, guarded: bool) -> AgentConfig {
    let mut config = AgentConfig::new(node, seed);
    let mut policy = Policy::deny_all();
    policy.allow(
        "uptime",
        CommandRule {
            run_as: None,
            required_approvals: u8::from(guarded),
            program: "/usr/bin/uptime".into(),
            args: ArgRules::Exact(vec![]),
            max_timeout: Duration::from_secs(30),
            env: std::collections::BTreeMap::new(),
        },
    );
    if guarded {
        use crate::signed_approval::{ApprovalTrust, PublicKey};
        use crate::testing::crypto::Symbolic;
        policy.approval_trust = Some(ApprovalTrust {
            roots: vec![PublicKey(Symbolic::public_key(ROOT_KEY))],
            revoked: std::collections::BTreeSet::new(),
            crypto: std::sync::Arc::new(Symbolic),
        });
    }
    config.policy = policy;
    config
}

/// How far apart the actors' clocks may drift: states beyond it are not
/// explored (one real time passes for everyone; a model whose central runs
/// hours ahead of its agents explores clock skew no deployment has).
pub const MAX_CLOCK_SPREAD: Duration = Duration::from_secs(600);

/// Sends `body` stamped with the sender's clock.
pub(crate) fn send(o: &mut Out<ModelActor>, to: Id, now: Timestamp, body: Wire) {
    o.send(to, Packet { sent_at: now, body });
}

fn clock(state: &ModelState) -> Timestamp {
    match state {
        ModelState::Central(c) => c.now,
        ModelState::Agent(a) => a.now,
    }
}

/// Whether the actors' clocks are within [`MAX_CLOCK_SPREAD`] of each other.
fn clocks_close(_: &ModelSpec, state: &NapState) -> bool {
    let clocks = state.actor_states.iter().map(|s| clock(s));
    let (min, max) = clocks.fold(
        (None, None),
        |(lo, hi): (Option<Timestamp>, Option<Timestamp>), t| {
            (
                Some(lo.map_or(t, |l| l.min(t))),
                Some(hi.map_or(t, |h| h.max(t))),
            )
        },
    );
    match (min, max) {
        (Some(lo), Some(hi)) => hi.saturating_since(lo) <= MAX_CLOCK_SPREAD,
        _ => true,
    }
}

/// A timer range for "may fire at any time": stateright treats every set
/// timer as able to fire next.
pub(crate) fn instant() -> Range<Duration> {
    Duration::ZERO..Duration::ZERO
}

/// The wall clock every actor reads at `now`: one origin, separate clocks.
pub(crate) fn wall_at(now: Timestamp) -> WallTime {
    let origin = WallTime::from_unix_millis(1_760_522_400_000).unwrap_or(WallTime::UNIX_EPOCH);
    origin.add_millis(i64::try_from(now.as_micros() / 1000).unwrap_or(i64::MAX))
}

/// Either actor. (Few and long-lived: their sizes do not matter.)
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum ModelActor {
    Central(CentralActor),
    Agent(AgentActor),
}

/// Either actor's state. (Each sits behind an `Arc` in the checker.)
#[derive(Debug, Clone, PartialEq, Hash)]
#[allow(clippy::large_enum_variant)]
pub enum ModelState {
    Central(CentralState),
    Agent(AgentState),
}

/// Either actor's non-volatile state.
#[derive(Debug, Clone, PartialEq, Hash)]
pub enum ModelStorage {
    Central(CentralStore),
    Agent(AgentStore),
}

impl Actor for ModelActor {
    type Msg = Packet;
    type Timer = Tick;
    type State = ModelState;
    type Storage = ModelStorage;
    type Random = ();

    fn on_start(&self, _id: Id, storage: &Option<ModelStorage>, o: &mut Out<Self>) -> ModelState {
        match self {
            Self::Central(actor) => {
                let storage = match storage {
                    Some(ModelStorage::Central(s)) => Some(s),
                    _ => None,
                };
                ModelState::Central(actor.start(storage, o))
            }
            Self::Agent(actor) => {
                let storage = match storage {
                    Some(ModelStorage::Agent(s)) => Some(s),
                    _ => None,
                };
                ModelState::Agent(actor.start(storage, o))
            }
        }
    }

    fn on_msg(
        &self,
        _id: Id,
        state: &mut Cow<'_, ModelState>,
        src: Id,
        msg: Packet,
        o: &mut Out<Self>,
    ) {
        match (self, state.to_mut()) {
            (Self::Central(actor), ModelState::Central(s)) => actor.on_msg(s, src, msg, o),
            (Self::Agent(actor), ModelState::Agent(s)) => actor.on_msg(s, msg, o),
            _ => {}
        }
    }

    fn on_timeout(&self, _id: Id, state: &mut Cow<'_, ModelState>, tick: &Tick, o: &mut Out<Self>) {
        match (self, state.to_mut()) {
            (Self::Central(actor), ModelState::Central(s)) => actor.on_timeout(s, tick, o),
            (Self::Agent(actor), ModelState::Agent(s)) => actor.on_timeout(s, tick, o),
            _ => {}
        }
    }
}

/// Central's state, if it is up.
pub fn central(state: &NapState) -> Option<&CentralState> {
    match state.actor_states.first().map(|s| &**s) {
        Some(ModelState::Central(c)) if !state.crashed[0] => Some(c),
        _ => None,
    }
}

/// Central's store (it survives crashes).
pub fn central_store(state: &NapState) -> Option<&CentralStore> {
    match state.actor_storages.first() {
        Some(Some(ModelStorage::Central(s))) => Some(s),
        _ => None,
    }
}

/// The agents that are up, with their actor index.
pub fn agents(state: &NapState) -> impl Iterator<Item = (usize, &AgentState)> {
    state
        .actor_states
        .iter()
        .enumerate()
        .filter(|(i, _)| !state.crashed[*i])
        .filter_map(|(i, s)| match &**s {
            ModelState::Agent(a) => Some((i, a)),
            ModelState::Central(_) => None,
        })
}

/// The agents' stores (they survive crashes).
pub fn agent_stores(state: &NapState) -> impl Iterator<Item = &AgentStore> {
    state.actor_storages.iter().filter_map(|s| match s {
        Some(ModelStorage::Agent(a)) => Some(a),
        _ => None,
    })
}

fn never_runs_twice(_: &NapModel, state: &NapState) -> bool {
    agent_stores(state).all(|s| s.runs.values().all(|n| *n <= 1))
}

fn result_recorded_once(_: &NapModel, state: &NapState) -> bool {
    central_store(state).is_none_or(|s| s.terminal_writes.values().all(|n| *n <= 1))
}

fn nothing_runs_unauthenticated(_: &NapModel, state: &NapState) -> bool {
    agents(state).all(|(_, a)| !a.ran_unauthenticated)
}

fn revoked_never_established(_: &NapModel, state: &NapState) -> bool {
    let Some(store) = central_store(state) else {
        return true;
    };
    // No session is admitted for a revoked node, and no agent sits in
    // `Established` on one that was.
    let admitted_revoked = |s| {
        store
            .admitted
            .get(s)
            .is_some_and(|(_, _, revoked)| *revoked)
    };
    store.admitted.values().all(|(_, _, revoked)| !revoked)
        && agents(state).all(|(_, a)| a.established_on.iter().all(|s| !admitted_revoked(s)))
}

fn one_live_session_per_node(_: &NapModel, state: &NapState) -> bool {
    central(state).is_none_or(|c| c.open_sessions().values().all(|n| *n <= 1))
}

fn established(a: &AgentState) -> bool {
    a.engine.state() == (ConnectionState::Established {})
}

fn sometimes_established(_: &NapModel, state: &NapState) -> bool {
    agents(state).any(|(_, a)| established(a))
}

fn sometimes_completed(_: &NapModel, state: &NapState) -> bool {
    central_store(state).is_some_and(|s| {
        s.commands
            .values()
            .any(|c| c.state == CommandState::Succeeded)
    })
}

fn runs_of(state: &NapState, request_id: RequestId) -> u32 {
    agent_stores(state)
        .map(|s| s.runs.get(&request_id).copied().unwrap_or(0))
        .sum()
}

fn runs_only_approved(_: &NapModel, state: &NapState) -> bool {
    let Some(store) = central_store(state) else {
        return true;
    };
    store.commands.iter().all(|(id, c)| {
        runs_of(state, *id) == 0
            || c.approval
                .as_ref()
                .is_some_and(|a| a.approved_by.iter().any(|u| u != REQUESTER))
    })
}

fn runs_only_signed(model: &NapModel, state: &NapState) -> bool {
    let signed = model.cfg.approval.as_ref().is_some_and(|decisions| {
        central_store(state).is_some_and(|s| {
            s.decided
                .iter()
                .any(|n| decisions.get(usize::from(*n)) == Some(&ModelDecision::ApproveSigned))
        })
    });
    signed || agent_stores(state).all(|s| s.runs.is_empty())
}

fn never_runs_refused(_: &NapModel, state: &NapState) -> bool {
    let Some(store) = central_store(state) else {
        return true;
    };
    store.commands.iter().all(|(id, c)| {
        !matches!(
            c.state,
            CommandState::Rejected | CommandState::ApprovalExpired | CommandState::Cancelled
        ) || runs_of(state, *id) == 0
    })
}

fn approved_at_most_once(_: &NapModel, state: &NapState) -> bool {
    central_store(state).is_none_or(|s| s.approved.values().all(|n| *n <= 1))
}

fn sometimes_approved_and_run(_: &NapModel, state: &NapState) -> bool {
    central_store(state).is_some_and(|s| {
        s.commands
            .iter()
            .any(|(id, c)| c.state == CommandState::Succeeded && s.approved.contains_key(id))
    })
}

fn sometimes_revoked(_: &NapModel, state: &NapState) -> bool {
    agents(state).any(|(_, a)| a.engine.state() == (ConnectionState::Revoked {}))
}

fn recovers_from_here(model: &NapModel, state: &NapState) -> bool {
    recovers(model, state, RECOVERY_STEPS)
}

fn sometimes_reconnected(_: &NapModel, state: &NapState) -> bool {
    let Some(store) = central_store(state) else {
        return false;
    };
    agents(state).any(|(_, a)| {
        established(a)
            && a.engine
                .session()
                .and_then(|s| store.admitted.get(&s))
                .is_some_and(|(_, generation, _)| *generation > 1)
    })
}

/// Whether every command the store holds reaches a terminal state when,
/// from `state`, the network stops losing messages and nothing crashes:
/// every message in flight is delivered once, then the actor whose next
/// deadline is nearest fires, and so on, for at most `max_steps`.
pub fn recovers(model: &NapModel, state: &NapState, max_steps: usize) -> bool {
    let mut state = state.clone();
    // Whatever is down comes back first.
    for i in 0..state.crashed.len() {
        if state.crashed[i]
            && let Some(next) = model.next_state(&state, ActorModelAction::Recover(Id::from(i)))
        {
            state = next;
        }
    }
    let mut delivered = std::collections::HashSet::new();
    let mut actions = Vec::new();
    for _ in 0..max_steps {
        if all_terminal(&state) {
            return true;
        }
        actions.clear();
        model.actions(&state, &mut actions);
        let delivery = actions
            .iter()
            .find(|a| matches!(a, ActorModelAction::Deliver { .. }) && !delivered.contains(*a));
        let action = match delivery {
            Some(a) => {
                delivered.insert(a.clone());
                a.clone()
            }
            None => match nearest_timer(&state, &actions) {
                Some(a) => a,
                None => return all_terminal(&state),
            },
        };
        match model.next_state(&state, action) {
            Some(next) => state = next,
            None => continue,
        }
    }
    all_terminal(&state)
}

fn all_terminal(state: &NapState) -> bool {
    central_store(state).is_some_and(|s| s.commands.values().all(|c| c.state.is_terminal()))
}

/// The timer of the actor whose deadline is nearest (revocation is an
/// operator's act, not the system's: it does not fire).
fn nearest_timer(
    state: &NapState,
    actions: &[ActorModelAction<Packet, Tick, ()>],
) -> Option<ActorModelAction<Packet, Tick, ()>> {
    actions
        .iter()
        .filter_map(|a| match a {
            // People's decisions are theirs, not the system's.
            ActorModelAction::Timeout(id, tick)
                if !matches!(tick, Tick::Revoke | Tick::Decide(_)) =>
            {
                let delay = match (&*state.actor_states[usize::from(*id)], tick) {
                    (_, Tick::Finish(_)) => Some(Duration::ZERO),
                    (ModelState::Agent(s), _) => s.next_delay(),
                    (ModelState::Central(s), _) => s.next_delay(),
                };
                delay.map(|d| (d, a))
            }
            _ => None,
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a.clone())
}
