//! The hub: what spans sessions. Admission (token checks, `jti` replay, the
//! penalty per address and claimed node, coalesced refusal notices, the
//! answer when saturated), the one live session per
//! node (a newer one supersedes the older with 4002), node status, the
//! command tracker with its terminal states, the offline queue, drain, and
//! — with several central processes — when a node is let go to another.
//!
//! Sessions are separate engines owned by their connections; the hub names
//! them by `SessionId` and talks to them only through [`ToHub`] and
//! [`ToSession`]. What it needs done (store, claim, alarm) it asks for as
//! [`HubOutput`]s and hears the outcome back as a [`HubInput`].

mod admission;
mod approval;
mod rollout;

use core::net::IpAddr;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use crate::rng::Prng;
use crate::timer::Timers;
use crate::transport::CloseCode;
use crate::wire::{CentralMessage, CommandResult, Features, Hello, NodeStatus};
use crate::{NodeId, RequestId, RolloutId, SessionId, Timestamp, WallAnchor, WallTime};

use super::alarm::{Alarm, ApprovalEvent};
use super::approval::{ApprovalPolicy, ApprovalRefusal, Decided, Decision, Pending, Person};
use super::auth::{
    AuthPolicy, AuthRejection, ReplayWindow, SpentRecord, TokenCheck, ValidToken, check_token,
};
use super::command::{CommandState, ResultRecord, Submission, TrackedCommand};
use super::events::{ToHub, ToHubKind, ToSession, ToSessionKind};
use super::rollout::{RolloutState, TargetState};

pub use admission::{AdmissionConfig, Refusal, RefusalKind};
use admission::{Notices, Source, Throttle};
pub use rollout::{
    ControlRefusal, NeedsApproval, NewRollout, Restored, RolloutControl, RolloutWatch,
};

/// Parameters of the hub.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HubConfig {
    pub auth: AuthPolicy,
    pub admission: AdmissionConfig,
    /// How long a command may wait for an offline node before it expires.
    pub command_ttl: Duration,
    /// How long past its own timeout central waits for a sent command's result.
    pub result_grace: Duration,
    /// How long a finished command stays in memory (the store keeps it for good).
    pub finished_retention: Duration,
    /// Commands queued per offline node; past this, new ones are undeliverable.
    pub max_queued_per_node: usize,
    /// Drain spreads reconnections at this many per second.
    pub drain_rate_per_sec: u32,
    /// The shortest drain delay.
    pub drain_min: Duration,
    /// One of several central processes (DESIGN.md §5): nodes are claimed
    /// in presence when they connect, a session's end asks presence who holds
    /// the node now, and commands for offline nodes wait in the store.
    pub clustered: bool,
    /// With `clustered`: how often the store is swept — for queued commands
    /// past their time to live (no hub holds a command for an offline node),
    /// and for open commands of the nodes held here that this hub has not
    /// heard of (their cross-process notice was lost).
    pub sweep_every: Duration,
    /// v0.2: how long approvals are collected and a complete one may wait
    /// for its node.
    pub approval: ApprovalPolicy,
    /// v0.3: after a restart, how long a restored rollout waits for its
    /// targets' nodes to reconnect before it starts anything new.
    pub rollout_hold: Duration,
    /// Seed of the hub's PRNG (drain spread, `Retry-After` draws).
    pub seed: u64,
}

impl HubConfig {
    /// The defaults for `audience`.
    pub fn new(audience: impl Into<String>) -> Self {
        Self {
            auth: AuthPolicy::new(audience),
            admission: AdmissionConfig::default(),
            command_ttl: Duration::from_secs(3600),
            result_grace: Duration::from_secs(300),
            finished_retention: Duration::from_secs(60),
            max_queued_per_node: 1000,
            drain_rate_per_sec: 200,
            drain_min: Duration::from_secs(5),
            clustered: false,
            sweep_every: Duration::from_secs(60),
            approval: ApprovalPolicy::default(),
            rollout_hold: Duration::from_secs(60),
            seed: 0,
        }
    }
}

/// An upgrade to admit, with the driver's findings.
#[derive(Debug, Clone, PartialEq)]
pub struct Upgrade {
    /// The id the session gets if admitted.
    pub session_id: SessionId,
    pub peer: Option<IpAddr>,
    /// The bearer token's findings; `None` when there was no token.
    pub token: Option<TokenCheck>,
    /// What the agent announced (its version and features).
    pub hello: Hello,
}

/// An admitted connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Admission {
    pub node_id: NodeId,
    pub session_id: SessionId,
    pub token_expires_at: WallTime,
}

/// The hub's answer to an upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[must_use]
pub enum Admit {
    /// Create the session ([`super::CentralSession::new`]).
    Accepted(Admission),
    /// Answer with this refusal.
    Refused(Refusal),
}

/// Where presence says a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Presence {
    Nobody,
    /// This process, on this session.
    Here(SessionId),
    /// Another process.
    Elsewhere,
}

/// An input to the hub.
#[derive(Debug, Clone, PartialEq)]
pub enum HubInput {
    /// A wall-clock reading at this call's `now`.
    WallClock(WallTime),
    /// An event from one of this hub's sessions.
    FromSession { session_id: SessionId, event: ToHub },
    /// Commands to track: new ones, or those that were open when this
    /// process started. Each is delivered at once if its node is online
    /// here, queued otherwise.
    Submit(Vec<Submission>),
    /// With `clustered`: these sessions' nodes are claimed in presence, and
    /// these are their open commands from the store (answer to
    /// [`HubOutput::Claim`]).
    TakenOver {
        sessions: Vec<(NodeId, SessionId)>,
        commands: Vec<Submission>,
    },
    /// With `clustered`: the open commands in the store of these sessions'
    /// nodes (answer to [`HubOutput::LoadOpenCommands`]). Those the hub does
    /// not track yet — their notice from another process was lost — are
    /// delivered; those it tracks are ignored (at least once, deduplicated
    /// by request id).
    Swept {
        sessions: Vec<(NodeId, SessionId)>,
        commands: Vec<Submission>,
    },
    /// An admitted upgrade never became a session (the upgrade failed).
    NeverOpened(Admission),
    /// An operator revoked the node.
    Revoke(NodeId),
    /// Central is shutting down: drain every live session.
    Drain,
    /// With `clustered`: another process claims the node.
    ClaimedElsewhere(NodeId),
    /// Who holds the node (answer to [`HubOutput::Locate`]); `None` when
    /// presence could not be asked.
    Located {
        node_id: NodeId,
        presence: Option<Presence>,
    },
    /// The ended session's presence is cleared if it was still its own, and
    /// this is who holds the node (answer to [`HubOutput::Vacate`]).
    Vacated {
        node_id: NodeId,
        session_id: SessionId,
        presence: Option<Presence>,
    },
    /// v0.2: a person decides on a command that awaits approval; the verdict
    /// comes out as [`HubOutput::ApprovalDecided`].
    Decide {
        request_id: RequestId,
        person: Person,
        decision: Decision,
    },
    /// v0.3: start driving a rollout here (spec §8.3).
    StartRollout(Box<NewRollout>),
    /// v0.3: pause, resume or abort a rollout driven here; the verdict
    /// comes out as [`HubOutput::RolloutControlled`].
    ControlRollout {
        rollout_id: RolloutId,
        control: RolloutControl,
    },
    /// v0.3, with `clustered`: whether presence says another process holds
    /// each of these nodes — the driver reads it for the targets of the
    /// rollouts driven here that this process does not hold
    /// ([`CentralHub::rollout_watch`]). A node held here is this hub's own
    /// to judge, and ignored.
    RolloutPresence(Vec<(NodeId, bool)>),
    /// v0.3, with `clustered`: the stored states of rollout targets'
    /// commands this hub does not track (their nodes are held elsewhere; the
    /// holder writes the states), as the driver read them.
    RolloutCommands(Vec<(RequestId, CommandState)>),
    /// v0.3, with `clustered`: another process drives the rollouts now (it
    /// holds the lease): forget them; what was started runs on as ordinary
    /// commands.
    DropRollouts,
    /// What the store did with a result (answer to [`HubOutput::RecordResult`]).
    ResultRecorded {
        session_id: SessionId,
        node_id: NodeId,
        result: Box<CommandResult>,
        record: ResultRecord,
    },
}

/// Work for the driver.
#[derive(Debug, Clone, PartialEq)]
pub enum HubOutput {
    /// Give this to the session as [`super::SessionInput::FromHub`].
    ToSession {
        session_id: SessionId,
        event: ToSession,
    },
    /// Store: a node's status changed.
    StatusChanged {
        node_id: NodeId,
        status: NodeStatus,
        reason: Option<String>,
    },
    /// Store: a command changed state; terminal states are reported exactly once.
    CommandChanged {
        request_id: RequestId,
        node_id: NodeId,
        state: CommandState,
    },
    /// Store this result unless its command belongs to another node; answer
    /// with [`HubInput::ResultRecorded`].
    RecordResult {
        session_id: SessionId,
        node_id: NodeId,
        result: Box<CommandResult>,
    },
    /// Cluster: claim the node for this session in presence, tell the other
    /// processes, load its open commands; answer with [`HubInput::TakenOver`].
    Claim {
        node_id: NodeId,
        session_id: SessionId,
    },
    /// Cluster: clear the ended session's presence; answer with
    /// [`HubInput::Vacated`].
    Vacate {
        node_id: NodeId,
        session_id: SessionId,
    },
    /// Cluster: ask presence who holds the node; answer with [`HubInput::Located`].
    Locate { node_id: NodeId },
    /// Store: expire the commands still queued that were created before this.
    ExpireQueued { created_before: WallTime },
    /// Cluster sweep: load the open commands of these sessions' nodes from
    /// the store; answer with [`HubInput::Swept`].
    LoadOpenCommands { sessions: Vec<(NodeId, SessionId)> },
    /// Tell an administrator.
    Alarm(Alarm),
    /// v0.2: what became of a decision (store it, audit it, answer whoever
    /// asked); `node_id` is the command's, when the hub tracks it.
    ApprovalDecided {
        request_id: RequestId,
        node_id: Option<NodeId>,
        person: String,
        decision: Decision,
        verdict: Result<Decided, ApprovalRefusal>,
    },
    /// v0.3: a rollout started a target. Store this command, tagged with
    /// the rollout, then submit it ([`HubInput::Submit`]) like any other.
    RolloutStart {
        rollout_id: RolloutId,
        node_id: NodeId,
        request_id: RequestId,
        requester: String,
        message: CentralMessage,
        timeout: Duration,
    },
    /// v0.3 store: a rollout's state changed.
    RolloutChanged {
        rollout_id: RolloutId,
        state: RolloutState,
    },
    /// v0.3 store: a rollout target's state changed.
    RolloutTargetChanged {
        rollout_id: RolloutId,
        node_id: NodeId,
        state: TargetState,
    },
    /// v0.3: what became of a control (answer whoever asked; audit it).
    RolloutControlled {
        rollout_id: RolloutId,
        control: RolloutControl,
        verdict: Result<RolloutState, ControlRefusal>,
    },
}

/// The hub's named deadlines. Due at the same instant, they fire in this
/// order: a rollout's deadline before the expiry of its targets' commands
/// (which it set), so the rollout ends `deadline_passed`, not halted by them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HubTimer {
    /// v0.3: a rollout's next deadline (start, bake, slot, deadline).
    Rollout(RolloutId),
    /// A queued command's time to live, a sent command's result deadline,
    /// or a finished command's time in memory.
    Command(RequestId),
    /// With `clustered`: the store sweep (expired queued commands, and
    /// commands whose notice never arrived).
    Sweep,
    /// The first refusal notice window to end: what it held back is told.
    Notices,
}

/// The hub engine.
#[derive(Debug, Clone)]
pub struct CentralHub {
    config: HubConfig,
    rng: Prng,
    anchor: WallAnchor,
    now: Timestamp,
    replay: ReplayWindow,
    throttle: Throttle,
    notices: Notices,
    live: BTreeMap<NodeId, SessionId>,
    /// What each live node announced it speaks.
    features: BTreeMap<NodeId, Features>,
    status: BTreeMap<NodeId, NodeStatus>,
    commands: BTreeMap<RequestId, TrackedCommand>,
    queued: BTreeMap<NodeId, VecDeque<RequestId>>,
    /// v0.3: the rollouts driven here, and whose target each started
    /// command is (until it ends).
    rollouts: BTreeMap<RolloutId, rollout::Hosted>,
    rollout_of: BTreeMap<RequestId, (RolloutId, NodeId)>,
    /// With `clustered`: the rollouts' targets presence says another process
    /// holds, as the driver last read it.
    held_elsewhere: BTreeSet<NodeId>,
    timers: Timers<HubTimer>,
    out: VecDeque<HubOutput>,
}

impl CentralHub {
    pub fn new(config: HubConfig) -> Self {
        let mut timers = Timers::default();
        if config.clustered {
            timers.set(HubTimer::Sweep, Timestamp::ZERO + config.sweep_every);
        }
        Self {
            rng: Prng::new(config.seed),
            config,
            anchor: WallAnchor::new(Timestamp::ZERO, WallTime::UNIX_EPOCH),
            now: Timestamp::ZERO,
            replay: ReplayWindow::default(),
            throttle: Throttle::default(),
            notices: Notices::default(),
            live: BTreeMap::new(),
            features: BTreeMap::new(),
            status: BTreeMap::new(),
            commands: BTreeMap::new(),
            queued: BTreeMap::new(),
            rollouts: BTreeMap::new(),
            rollout_of: BTreeMap::new(),
            held_elsewhere: BTreeSet::new(),
            timers,
            out: VecDeque::new(),
        }
    }

    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// The wall clock at `now`.
    pub fn wall_at(&self, now: Timestamp) -> WallTime {
        self.anchor.wall_at(now)
    }

    pub fn handle_input(&mut self, now: Timestamp, input: HubInput) {
        self.advance(now);
        match input {
            HubInput::WallClock(wall) => self.anchor = WallAnchor::new(self.now, wall),
            HubInput::FromSession { session_id, event } => self.on_session(session_id, event.0),
            HubInput::Submit(commands) => {
                for command in commands {
                    self.submit(command);
                }
            }
            HubInput::TakenOver { sessions, commands } | HubInput::Swept { sessions, commands } => {
                self.submit_held(&sessions, commands);
            }
            HubInput::NeverOpened(admission) => {
                self.session_closed(admission.node_id, admission.session_id);
            }
            HubInput::Revoke(node_id) => self.revoke(node_id),
            HubInput::Drain => self.drain(),
            HubInput::ClaimedElsewhere(node_id) => {
                if self.live.contains_key(&node_id) {
                    // A node that left for another process and came straight
                    // back must not be sent away by the older claim.
                    self.out.push_back(HubOutput::Locate { node_id });
                } else {
                    self.release(node_id);
                }
            }
            HubInput::Located { node_id, presence } => match (presence, self.live.get(&node_id)) {
                (Some(Presence::Here(held)), Some(live)) if held == *live => {}
                // Held elsewhere, or presence cannot say: the claim stands.
                _ => self.release(node_id),
            },
            HubInput::Vacated {
                node_id,
                session_id,
                presence,
            } => {
                if presence == Some(Presence::Elsewhere) {
                    // The new holder reports the node online; an offline
                    // written here could land after it.
                    self.release(node_id);
                }
                self.session_closed(node_id, session_id);
            }
            HubInput::ResultRecorded {
                session_id,
                node_id,
                result,
                record,
            } => self.result_recorded(session_id, node_id, &result, record),
            HubInput::Decide {
                request_id,
                person,
                decision,
            } => self.decide(request_id, person, decision),
            HubInput::StartRollout(new) => self.start_rollout(*new),
            HubInput::ControlRollout {
                rollout_id,
                control,
            } => self.control_rollout(rollout_id, control),
            HubInput::RolloutPresence(nodes) => self.rollout_presence(nodes),
            HubInput::RolloutCommands(states) => self.rollout_commands(states),
            HubInput::DropRollouts => self.drop_rollouts(),
        }
    }

    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.advance(now);
        while let Some(timer) = self.timers.pop_due(self.now) {
            match timer {
                HubTimer::Command(request_id) => self.command_due(request_id),
                HubTimer::Sweep => {
                    let ttl =
                        i64::try_from(self.config.command_ttl.as_millis()).unwrap_or(i64::MAX);
                    let created_before = self.anchor.wall_at(self.now).add_millis(-ttl);
                    self.out
                        .push_back(HubOutput::ExpireQueued { created_before });
                    if !self.live.is_empty() {
                        let sessions = self.live_sessions().collect();
                        self.out.push_back(HubOutput::LoadOpenCommands { sessions });
                    }
                    self.timers
                        .set(HubTimer::Sweep, self.now + self.config.sweep_every);
                }
                HubTimer::Notices => {
                    let alarms = self.notices.close_due(self.now);
                    self.out.extend(alarms.into_iter().map(HubOutput::Alarm));
                    self.arm_notices();
                }
                HubTimer::Rollout(rollout_id) => self.rollout_due(rollout_id),
            }
        }
    }

    #[must_use]
    pub fn poll_output(&mut self) -> Option<HubOutput> {
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.timers.next()
    }

    /// Every armed timer.
    pub fn timers(&self) -> impl Iterator<Item = (&HubTimer, Timestamp)> {
        self.timers.iter()
    }

    /// Screens an upgrade before anything else is done for it. Only
    /// central's own state counts here, never the peer's address: a token
    /// that verifies is admitted whatever other hosts behind the same address
    /// did (spec §3).
    ///
    /// `store_backlog` is how many state changes wait to be written: past
    /// the configured bound new nodes are told to come back later (503)
    /// instead of adding to what the store cannot keep up with — the writer
    /// never drops a change, so this is where its back-pressure goes.
    pub fn screen(&mut self, now: Timestamp, store_backlog: usize) -> Option<Refusal> {
        self.advance(now);
        (store_backlog > self.config.admission.max_store_backlog)
            .then(|| admission::busy(&self.config.admission, &mut self.rng))
    }

    /// The answer to an upgrade when handshakes are saturated (503, with a
    /// `Retry-After` drawn from the configured range).
    pub fn busy(&mut self, now: Timestamp) -> Refusal {
        self.advance(now);
        admission::busy(&self.config.admission, &mut self.rng)
    }

    /// Checks an upgrade's token. Admitted, the node's older session, if
    /// any, is superseded (4002) and the new one becomes its live session;
    /// the caller creates the session. Refused, the address and the claimed
    /// node are penalised and an administrator told (coalesced). A token
    /// whose id cannot be checked now is answered 503: central's failure,
    /// not the peer's.
    pub fn admit(&mut self, now: Timestamp, upgrade: &Upgrade) -> Admit {
        self.advance(now);
        let verdict = match &upgrade.token {
            None => Err(AuthRejection::Missing),
            Some(token) => self.accept_token(token),
        };
        let valid = match verdict {
            Ok(valid) => valid,
            Err(AuthRejection::Unverifiable) => {
                return Admit::Refused(admission::busy(&self.config.admission, &mut self.rng));
            }
            Err(rejection) => {
                let claimed = upgrade.token.as_ref().and_then(TokenCheck::claimed_node);
                return Admit::Refused(self.refuse(upgrade.peer, claimed, rejection));
            }
        };
        self.features
            .insert(valid.node_id, upgrade.hello.features.clone());
        if let Some(old) = self.live.insert(valid.node_id, upgrade.session_id) {
            self.terminate(
                old,
                CloseCode::Superseded,
                "superseded by a newer connection",
            );
        }
        Admit::Accepted(Admission {
            node_id: valid.node_id,
            session_id: upgrade.session_id,
            token_expires_at: valid.expires_at,
        })
    }

    /// Checks a node token for something other than a session (an artifact
    /// download): every claim but the `jti`, which a download does not spend.
    pub fn authorize(
        &mut self,
        now: Timestamp,
        peer: Option<IpAddr>,
        token: Option<&TokenCheck>,
    ) -> Option<Refusal> {
        self.advance(now);
        let wall = self.anchor.wall_at(self.now);
        let verdict = token.map_or(Err(AuthRejection::Missing), |token| {
            check_token(&self.config.auth, wall, token)
        });
        let claimed = token.and_then(TokenCheck::claimed_node);
        verdict
            .err()
            .map(|rejection| self.refuse(peer, claimed, rejection))
    }

    /// The node's live session, if it has one.
    pub fn live_session(&self, node_id: NodeId) -> Option<SessionId> {
        self.live.get(&node_id).copied()
    }

    /// Every node with a live session, and that session.
    pub fn live_sessions(&self) -> impl Iterator<Item = (NodeId, SessionId)> + '_ {
        self.live.iter().map(|(n, s)| (*n, *s))
    }

    /// How many nodes have a live session.
    pub fn live_count(&self) -> usize {
        self.live.len()
    }

    /// A node's last known status.
    pub fn status(&self, node_id: NodeId) -> Option<NodeStatus> {
        self.status.get(&node_id).copied()
    }

    /// A tracked command (finished ones are kept for `finished_retention`).
    pub fn command(&self, request_id: RequestId) -> Option<&TrackedCommand> {
        self.commands.get(&request_id)
    }

    /// Commands waiting for an offline node.
    pub fn queued_for(&self, node_id: NodeId) -> usize {
        self.queued.get(&node_id).map_or(0, VecDeque::len)
    }

    /// Token ids held in the replay window.
    pub fn replay_window_len(&self) -> usize {
        self.replay.len()
    }

    /// Source addresses with failed attempts remembered.
    pub fn penalised_addresses(&self) -> usize {
        self.throttle.len()
    }

    fn accept_token(&mut self, token: &TokenCheck) -> Result<ValidToken, AuthRejection> {
        let wall = self.anchor.wall_at(self.now);
        let valid = check_token(&self.config.auth, wall, token)?;
        self.spend(token, valid)
    }

    /// A token that passed its checks spends its id: refused if the durable
    /// record or this hub's window has it already.
    fn spend(
        &mut self,
        token: &TokenCheck,
        valid: ValidToken,
    ) -> Result<ValidToken, AuthRejection> {
        match token.spent {
            SpentRecord::Spent => return Err(AuthRejection::Replayed),
            SpentRecord::Unavailable => return Err(AuthRejection::Unverifiable),
            SpentRecord::Unspent => {}
        }
        let wall = self.anchor.wall_at(self.now);
        if !self
            .replay
            .consume(wall, self.config.auth.max_skew, valid.jti, valid.expires_at)
        {
            return Err(AuthRejection::Replayed);
        }
        Ok(valid)
    }

    /// A refused token: counted against its address and the node it claims
    /// (the penalty is the larger count's), answered 401 held for the
    /// penalty, or 429 past the limit; an administrator is told once per
    /// address and reason per window.
    fn refuse(
        &mut self,
        peer: Option<IpAddr>,
        claimed: Option<NodeId>,
        rejection: AuthRejection,
    ) -> Refusal {
        let sources = [peer.map(Source::Address), claimed.map(Source::Node)];
        let failures = self.throttle.fail(
            &self.config.admission,
            self.now,
            sources.into_iter().flatten(),
        );
        if let Some(alarm) =
            self.notices
                .note(&self.config.admission, self.now, peer, rejection.reason())
        {
            self.out.push_back(HubOutput::Alarm(alarm));
            self.arm_notices();
        }
        admission::refusal(&self.config.admission, rejection, failures)
    }

    /// Arms the notice timer for the first open window to end, if any.
    fn arm_notices(&mut self) {
        if let Some(next) = self.notices.next_due() {
            self.timers.set(HubTimer::Notices, next);
        }
    }

    fn on_session(&mut self, session_id: SessionId, event: ToHubKind) {
        match event {
            ToHubKind::Opened { node_id } => self.session_opened(node_id, session_id),
            ToHubKind::Status {
                node_id,
                status,
                reason,
            } => {
                if self.live.get(&node_id) == Some(&session_id) {
                    self.set_status(node_id, status, reason);
                }
            }
            ToHubKind::Result { node_id, result } => {
                let owner = self.commands.get(&result.request_id).map(|c| c.node_id);
                if owner.is_some_and(|owner| owner != node_id) {
                    // A node cannot answer another node's command.
                    self.tell_session(session_id, ToSessionKind::ResultRefused(result.request_id));
                } else {
                    // The store is the arbiter: it knows commands this hub
                    // does not (sent by an earlier process, or another one).
                    self.out.push_back(HubOutput::RecordResult {
                        session_id,
                        node_id,
                        result,
                    });
                }
            }
            ToHubKind::Refresh { node_id, check } => {
                let verdict = self.check_refresh(node_id, &check);
                self.tell_session(session_id, ToSessionKind::RefreshChecked(verdict));
            }
            ToHubKind::Closed { node_id } => {
                if self.config.clustered {
                    self.out.push_back(HubOutput::Vacate {
                        node_id,
                        session_id,
                    });
                } else {
                    self.session_closed(node_id, session_id);
                }
            }
        }
    }

    /// Checks a `token_refresh` token for the node of a live session.
    fn check_refresh(
        &mut self,
        node_id: NodeId,
        token: &TokenCheck,
    ) -> Result<WallTime, AuthRejection> {
        let wall = self.anchor.wall_at(self.now);
        let valid = check_token(&self.config.auth, wall, token)?;
        if valid.node_id != node_id {
            return Err(AuthRejection::WrongNode);
        }
        Ok(self.spend(token, valid)?.expires_at)
    }

    /// The session has sent `welcome`: the node is online and its queued
    /// commands are delivered, in order.
    fn session_opened(&mut self, node_id: NodeId, session_id: SessionId) {
        if self.live.get(&node_id) != Some(&session_id) {
            return;
        }
        self.set_status(node_id, NodeStatus::Online, None);
        if self.config.clustered {
            self.out.push_back(HubOutput::Claim {
                node_id,
                session_id,
            });
        }
        // Sent before but never answered: the transport may have died with
        // it in flight. The agent runs a request at most once, so sending it
        // again is safe, and it is the only way it gets an answer sooner
        // than its deadline.
        let unanswered: Vec<(RequestId, CommandState)> = self
            .commands
            .iter()
            .filter(|(_, c)| {
                c.node_id == node_id
                    && matches!(
                        c.state,
                        CommandState::Sent | CommandState::Held | CommandState::Approved
                    )
            })
            .map(|(id, c)| (*id, c.state))
            .collect();
        for (request_id, state) in unanswered {
            self.send_command(request_id, session_id);
            if state == CommandState::Approved {
                // Released again, or for the first time (approved while the
                // node was away).
                self.release_to(request_id, session_id);
            }
        }
        let queued = self.queued.remove(&node_id).unwrap_or_default();
        for request_id in queued {
            self.deliver(request_id, session_id);
        }
    }

    /// A session ended. If it was the node's live one, the node is offline;
    /// a superseded session's end changes nothing.
    fn session_closed(&mut self, node_id: NodeId, session_id: SessionId) {
        if self.live.get(&node_id) == Some(&session_id) {
            self.live.remove(&node_id);
            self.features.remove(&node_id);
            self.set_status(node_id, NodeStatus::Offline, Some("disconnected".into()));
        }
    }

    /// An operator revoked the node: its live session closes with 4003.
    fn revoke(&mut self, node_id: NodeId) {
        if let Some(session_id) = self.live.remove(&node_id) {
            self.features.remove(&node_id);
            self.terminate(session_id, CloseCode::Revoked, "node revoked");
            self.set_status(node_id, NodeStatus::Offline, Some("revoked".into()));
        }
    }

    /// The node is now held by another central process (DESIGN.md §5). Its
    /// session here, if any, closes with 4002, and the hub forgets the
    /// node's open commands without changing their state: the process that
    /// holds the node now loads them from the store and reports what becomes
    /// of them. No status change either: the new holder reports the node
    /// online, and an offline written here could land after it.
    fn release(&mut self, node_id: NodeId) {
        if let Some(session_id) = self.live.remove(&node_id) {
            self.features.remove(&node_id);
            self.terminate(
                session_id,
                CloseCode::Superseded,
                "superseded by a connection to another central instance",
            );
        }
        // Forgotten, so that a return here reports `online` afresh.
        self.status.remove(&node_id);
        self.queued.remove(&node_id);
        let open: Vec<RequestId> = self
            .commands
            .iter()
            .filter(|(_, c)| c.node_id == node_id && !c.state.is_terminal())
            .map(|(id, _)| *id)
            .collect();
        for request_id in open {
            self.commands.remove(&request_id);
            self.timers.stop(&HubTimer::Command(request_id));
        }
    }

    /// Submits the commands of the nodes still held by the sessions they
    /// were loaded for (a node that moved on meanwhile gets them where it is).
    fn submit_held(&mut self, sessions: &[(NodeId, SessionId)], commands: Vec<Submission>) {
        let held: BTreeMap<NodeId, SessionId> = sessions
            .iter()
            .copied()
            .filter(|(node, session)| self.live.get(node) == Some(session))
            .collect();
        for command in commands {
            if held.contains_key(&command.node_id) {
                self.submit(command);
            }
        }
    }

    fn submit(&mut self, submission: Submission) {
        let Submission {
            node_id,
            request_id,
            message,
            timeout,
            known,
            approval,
        } = submission;
        if self.commands.contains_key(&request_id) {
            return;
        }
        let Some(message) = message else {
            // A stored command that no longer decodes cannot be sent.
            self.changed(request_id, node_id, CommandState::Failed);
            return;
        };
        let approval = approval.map(Pending::new);
        let full = self
            .queued
            .get(&node_id)
            .is_some_and(|q| q.len() >= self.config.max_queued_per_node);
        let online = self.live.get(&node_id).copied();
        let state = if !known || (online.is_none() && full) {
            CommandState::Undeliverable
        } else {
            CommandState::Queued
        };
        self.commands.insert(
            request_id,
            TrackedCommand {
                node_id,
                message,
                state,
                timeout,
                // Complete already: loaded back after a restart, its release
                // may have gone out before — never say it expired unrun.
                released: approval.as_ref().is_some_and(Pending::complete),
                approval,
            },
        );
        self.changed(request_id, node_id, state);
        if state == CommandState::Undeliverable {
            self.finished(request_id);
            return;
        }
        match online {
            Some(session_id) => self.deliver(request_id, session_id),
            None => {
                self.queued
                    .entry(node_id)
                    .or_default()
                    .push_back(request_id);
                let due = match self
                    .commands
                    .get(&request_id)
                    .and_then(|c| c.approval.as_ref())
                {
                    // Complete already (restored from the store): the node
                    // must be back within the release time.
                    Some(p) if p.complete() => self.now + self.config.approval.release_ttl,
                    Some(p) => self.at_wall(p.request.expires_at),
                    // A rollout's target expires with the rollout's
                    // deadline, not after the usual time to live.
                    None => match self.rollout_deadline(request_id) {
                        Some(deadline) => deadline.min(self.now + self.config.command_ttl),
                        None => self.now + self.config.command_ttl,
                    },
                };
                self.timers.set(HubTimer::Command(request_id), due);
            }
        }
    }

    fn result_recorded(
        &mut self,
        session_id: SessionId,
        node_id: NodeId,
        result: &CommandResult,
        record: ResultRecord,
    ) {
        let request_id = result.request_id;
        match record {
            ResultRecord::Stored { .. } => {
                let wall = self.anchor.wall_at(self.now);
                if let Some(command) = self.commands.get_mut(&request_id)
                    && command.node_id == node_id
                    && !command.state.is_terminal()
                {
                    // The node's hold and the request end at one moment; the
                    // node's answer may beat central's own timer to it.
                    let expired_hold = command.state == CommandState::Held
                        && command
                            .approval
                            .as_ref()
                            .is_some_and(|p| !p.complete() && wall >= p.request.expires_at);
                    let state = if expired_hold {
                        CommandState::ApprovalExpired
                    } else {
                        CommandState::of_result(result)
                    };
                    command.state = state;
                    self.changed(request_id, node_id, state);
                    self.finished(request_id);
                }
                self.tell_session(session_id, ToSessionKind::ResultStored(request_id));
            }
            ResultRecord::WrongNode => {
                self.tell_session(session_id, ToSessionKind::ResultRefused(request_id));
            }
            // Not acked: the node keeps the result in its outbox and sends
            // it again.
            ResultRecord::Failed => {}
        }
    }

    /// Drains every live session, spreading reconnections at the configured rate.
    fn drain(&mut self) {
        let rate = u64::from(self.config.drain_rate_per_sec.max(1));
        let count = u64::try_from(self.live.len()).unwrap_or(u64::MAX);
        // The fleet returns over [min, min + count / rate]: at the admission
        // rate central can take.
        let window =
            self.config.drain_min + Duration::from_millis(count.saturating_mul(1000) / rate);
        let sessions: Vec<SessionId> = self.live.values().copied().collect();
        for session_id in sessions {
            let reconnect_after = self.rng.duration_between(self.config.drain_min, window);
            self.tell_session(session_id, ToSessionKind::Drain { reconnect_after });
        }
    }

    fn command_due(&mut self, request_id: RequestId) {
        let approval_end = self.approval_due(request_id);
        let Some(command) = self.commands.get_mut(&request_id) else {
            return;
        };
        let node_id = command.node_id;
        let state = match (approval_end, command.state) {
            (Some(end), _) => end,
            (None, CommandState::Queued) => CommandState::Expired,
            (None, CommandState::Sent) => CommandState::TimedOut,
            // Its time in memory is over.
            (None, _) => {
                self.commands.remove(&request_id);
                return;
            }
        };
        command.state = state;
        if let Some(queue) = self.queued.get_mut(&node_id) {
            queue.retain(|id| *id != request_id);
        }
        self.changed(request_id, node_id, state);
        self.finished(request_id);
    }

    fn deliver(&mut self, request_id: RequestId, session_id: SessionId) {
        let Some(command) = self.commands.get_mut(&request_id) else {
            return;
        };
        if command.state != CommandState::Queued {
            return;
        }
        let node_id = command.node_id;
        let speaks = self
            .features
            .get(&node_id)
            .is_some_and(|f| f.allow(&command.message));
        if !speaks {
            command.state = CommandState::Undeliverable;
            self.changed(request_id, node_id, CommandState::Undeliverable);
            self.finished(request_id);
            return;
        }
        if command.approval.is_some() {
            self.deliver_for_approval(request_id, session_id);
            return;
        }
        command.state = CommandState::Sent;
        let deadline = self.now + command.timeout + self.config.result_grace;
        self.timers.set(HubTimer::Command(request_id), deadline);
        self.changed(request_id, node_id, CommandState::Sent);
        self.send_command(request_id, session_id);
    }

    /// Sends a tracked command to the node's session — if the node speaks
    /// what the command needs; a node that does not (an older agent) can
    /// never run it, and the command is undeliverable.
    fn send_command(&mut self, request_id: RequestId, session_id: SessionId) {
        let Some(command) = self.commands.get_mut(&request_id) else {
            return;
        };
        let node_id = command.node_id;
        if self
            .features
            .get(&node_id)
            .is_some_and(|f| f.allow(&command.message))
        {
            let message = Box::new(command.message.clone());
            self.tell_session(session_id, ToSessionKind::Deliver(message));
        } else {
            command.state = CommandState::Undeliverable;
            self.changed(request_id, node_id, CommandState::Undeliverable);
            self.finished(request_id);
        }
    }

    /// A command reached its terminal state: it stays in memory a while
    /// (a late or re-sent result is checked against it), then goes.
    fn finished(&mut self, request_id: RequestId) {
        self.timers.set(
            HubTimer::Command(request_id),
            self.now + self.config.finished_retention,
        );
    }

    fn terminate(&mut self, session_id: SessionId, code: CloseCode, reason: &'static str) {
        self.tell_session(session_id, ToSessionKind::Terminate { code, reason });
    }

    fn tell_session(&mut self, session_id: SessionId, event: ToSessionKind) {
        self.out.push_back(HubOutput::ToSession {
            session_id,
            event: ToSession(event),
        });
    }

    fn changed(&mut self, request_id: RequestId, node_id: NodeId, state: CommandState) {
        self.out.push_back(HubOutput::CommandChanged {
            request_id,
            node_id,
            state,
        });
        if state == CommandState::ApprovalExpired {
            self.out.push_back(HubOutput::Alarm(Alarm::Approval {
                request_id,
                node_id: Some(node_id),
                event: ApprovalEvent::Expired,
            }));
        }
        self.rollout_heard(request_id, state);
    }

    fn set_status(&mut self, node_id: NodeId, status: NodeStatus, reason: Option<String>) {
        if self.status.insert(node_id, status) != Some(status) {
            self.out.push_back(HubOutput::StatusChanged {
                node_id,
                status,
                reason,
            });
            if !self.rollouts.is_empty() {
                self.rollouts_see(node_id, status);
            }
        }
    }

    fn advance(&mut self, now: Timestamp) {
        self.now = self.now.max(now);
    }
}
