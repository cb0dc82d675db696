//! Central as an actor: the real [`CentralHub`] and one [`CentralSession`]
//! per accepted connection, with a driver that does what central's own
//! driver does and a store that survives a crash.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::time::Duration;

use stateright::actor::{Id, Out};

use super::wire::{Conn, Packet, Tick, Wire};
use super::{ModelActor, ModelSpec, ModelStorage, instant, send, wall_at};
use crate::central::{
    CentralHub, CentralSession, CommandState, HubConfig, HubOutput, NodeLookup, ResultOutcome,
    SessionConfig, SessionInput, SessionOutput,
};
use crate::codec::encode;
use crate::testing::tokens;
use crate::wire::{CentralMessage, Execute};
use crate::{NodeId, RequestId, SessionId, Timestamp};

/// A command as the store keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredCommand {
    pub node_id: NodeId,
    pub message: CentralMessage,
    pub timeout: Duration,
    pub state: CommandState,
}

/// What survives a central crash: the database, and the network's memory of
/// which connections were ever opened (a TCP connection is accepted once,
/// whatever duplicate of its handshake still wanders the network).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CentralStore {
    /// Starts of central: 1 for the first process, 2 after a crash…
    pub generation: u32,
    pub now: Timestamp,
    pub commands: BTreeMap<RequestId, StoredCommand>,
    /// Terminal states written per command: the at-most-once witness.
    pub terminal_writes: BTreeMap<RequestId, u32>,
    pub revoked: BTreeSet<NodeId>,
    /// Every admitted session: its node, the generation that admitted it,
    /// and whether the node was revoked at the time.
    pub admitted: BTreeMap<SessionId, (NodeId, u32, bool)>,
    pub seen: BTreeSet<(Id, Conn)>,
}

impl CentralStore {
    fn key(&self) -> impl Hash + Eq + '_ {
        let commands: Vec<_> = self.commands.iter().map(|(id, c)| (*id, c.state)).collect();
        let admitted: Vec<_> = self.admitted.values().collect();
        (
            self.generation,
            commands,
            &self.terminal_writes,
            &self.revoked,
            admitted,
            &self.seen,
        )
    }
}

impl Hash for CentralStore {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

/// A session and the connection it lives on.
#[derive(Debug, Clone)]
pub struct Live {
    pub agent: Id,
    pub conn: Conn,
    pub session: CentralSession,
}

/// One central process.
#[derive(Debug, Clone)]
pub struct CentralState {
    pub hub: CentralHub,
    pub sessions: BTreeMap<SessionId, Live>,
    conns: BTreeMap<(Id, Conn), SessionId>,
    /// Connections this process closed (frames still arriving on them are
    /// dropped, not answered with a reset).
    closed: BTreeSet<(Id, Conn)>,
    pub now: Timestamp,
    pub store: CentralStore,
    registry: BTreeMap<NodeId, NodeLookup>,
    session_config: SessionConfig,
    next_session: u64,
}

/// The central actor's parameters.
#[derive(Debug, Clone)]
pub struct CentralActor {
    pub spec: ModelSpec,
}

impl CentralActor {
    pub(super) fn start(
        &self,
        storage: Option<&CentralStore>,
        o: &mut Out<ModelActor>,
    ) -> CentralState {
        let first = storage.is_none();
        let mut store = storage.cloned().unwrap_or_default();
        store.generation += 1;
        let mut hub_config = HubConfig::new(tokens::AUDIENCE);
        hub_config.seed = u64::from(store.generation);
        let mut hub = CentralHub::new(hub_config);
        hub.set_wall_clock(store.now, wall_at(store.now));
        let mut registry: BTreeMap<NodeId, NodeLookup> = self
            .spec
            .agents
            .iter()
            .map(|node| (*node, NodeLookup::Active))
            .collect();
        for node in &store.revoked {
            registry.insert(*node, NodeLookup::Revoked);
        }
        let mut state = CentralState {
            hub,
            sessions: BTreeMap::new(),
            conns: BTreeMap::new(),
            closed: BTreeSet::new(),
            now: store.now,
            store,
            registry,
            session_config: SessionConfig::with_intervals(self.spec.intervals),
            next_session: 0,
        };
        if first {
            for (node_id, request_id) in &self.spec.commands {
                let message = CentralMessage::Execute(Execute {
                    request_id: Some(*request_id),
                    command: "uptime".into(),
                    args: vec![],
                    timeout: Some(10_000),
                    requires_approval: false,
                    approver: None,
                });
                state.store.commands.insert(
                    *request_id,
                    StoredCommand {
                        node_id: *node_id,
                        message,
                        timeout: Duration::from_secs(10),
                        state: CommandState::Queued,
                    },
                );
            }
        }
        // As central's `restore_commands`: what was open is submitted again.
        let open: Vec<(RequestId, StoredCommand)> = state
            .store
            .commands
            .iter()
            .filter(|(_, c)| !c.state.is_terminal())
            .map(|(id, c)| (*id, c.clone()))
            .collect();
        for (request_id, c) in open {
            let known = state.registry.get(&c.node_id) == Some(&NodeLookup::Active);
            state.hub.submit(
                state.now, c.node_id, request_id, c.message, c.timeout, known,
            );
        }
        if let Some(node) = self.spec.revoke
            && !state.store.revoked.contains(&node)
        {
            o.set_timer(Tick::Revoke, instant());
        }
        state.settle(o);
        state.finish(o);
        state
    }

    pub(super) fn on_msg(
        &self,
        state: &mut CentralState,
        src: Id,
        packet: Packet,
        o: &mut Out<ModelActor>,
    ) {
        state.now = state.now.max(packet.sent_at);
        match packet.body {
            Wire::Upgrade { conn, token } => state.upgrade(src, conn, &token, o),
            Wire::Text { conn, text } => {
                let Some(session_id) = state.conns.get(&(src, conn)).copied() else {
                    state.reset(src, conn, o);
                    return;
                };
                state.session_input(session_id, SessionInput::Frame(text), o);
            }
            Wire::Closed { conn, code } => {
                if let Some(session_id) = state.conns.get(&(src, conn)).copied() {
                    state.session_input(session_id, SessionInput::Closed { code }, o);
                    state.session_ended(session_id);
                }
            }
            Wire::Accepted { .. } | Wire::Refused { .. } => {}
        }
        state.settle(o);
        state.finish(o);
    }

    pub(super) fn on_timeout(
        &self,
        state: &mut CentralState,
        tick: &Tick,
        o: &mut Out<ModelActor>,
    ) {
        match tick {
            Tick::Engine => {
                if let Some(next) = state.next_deadline() {
                    state.now = state.now.max(next);
                }
                let now = state.now;
                if state.hub.poll_timeout().is_some_and(|t| t <= now) {
                    state.hub.handle_timeout(now);
                }
                let due: Vec<SessionId> = state
                    .sessions
                    .iter()
                    .filter(|(_, l)| l.session.poll_timeout().is_some_and(|t| t <= now))
                    .map(|(id, _)| *id)
                    .collect();
                for session_id in due {
                    if let Some(live) = state.sessions.get_mut(&session_id) {
                        live.session.handle_timeout(now);
                    }
                    state.drain_session(session_id, o);
                }
            }
            Tick::Revoke => {
                if let Some(node) = self.spec.revoke {
                    state.registry.insert(node, NodeLookup::Revoked);
                    state.store.revoked.insert(node);
                    state.hub.revoke(node);
                }
            }
            Tick::Finish(_) => return,
        }
        state.settle(o);
        state.finish(o);
    }
}

impl CentralState {
    fn upgrade(&mut self, agent: Id, conn: Conn, token: &str, o: &mut Out<ModelActor>) {
        if !self.store.seen.insert((agent, conn)) {
            return; // a duplicate of a handshake already answered
        }
        let check = tokens::check(token, &self.registry);
        self.next_session += 1;
        let session_id = SessionId::from_u128(
            (u128::from(self.store.generation) << 64) | u128::from(self.next_session),
        );
        match self.hub.admit(self.now, &check, session_id) {
            Ok(admission) => {
                let session = CentralSession::new(
                    self.now,
                    wall_at(self.now),
                    admission.node_id,
                    session_id,
                    admission.token_expires_at,
                    self.session_config.clone(),
                );
                let revoked = self.store.revoked.contains(&admission.node_id);
                self.store.admitted.insert(
                    session_id,
                    (admission.node_id, self.store.generation, revoked),
                );
                self.sessions.insert(
                    session_id,
                    Live {
                        agent,
                        conn,
                        session,
                    },
                );
                self.conns.insert((agent, conn), session_id);
                send(o, agent, self.now, Wire::Accepted { conn });
                self.drain_session(session_id, o);
                self.hub
                    .session_opened(self.now, admission.node_id, session_id);
            }
            Err(_) => send(o, agent, self.now, Wire::Refused { conn }),
        }
    }

    /// A frame on a connection this process does not have: it belonged to
    /// an earlier process, and the kernel answers it with a reset.
    fn reset(&mut self, agent: Id, conn: Conn, o: &mut Out<ModelActor>) {
        if self.closed.contains(&(agent, conn)) {
            return;
        }
        self.closed.insert((agent, conn));
        send(o, agent, self.now, Wire::Closed { conn, code: None });
    }

    fn session_input(
        &mut self,
        session_id: SessionId,
        input: SessionInput,
        o: &mut Out<ModelActor>,
    ) {
        if let Some(live) = self.sessions.get_mut(&session_id) {
            live.session.handle_input(self.now, input);
        }
        self.drain_session(session_id, o);
    }

    fn session_ended(&mut self, session_id: SessionId) {
        if let Some(live) = self.sessions.remove(&session_id) {
            self.conns.remove(&(live.agent, live.conn));
            self.closed.insert((live.agent, live.conn));
            self.hub
                .session_closed(self.now, live.session.node_id(), session_id);
        }
    }

    fn drain_session(&mut self, session_id: SessionId, o: &mut Out<ModelActor>) {
        loop {
            let Some(live) = self.sessions.get_mut(&session_id) else {
                return;
            };
            let (agent, conn, node_id) = (live.agent, live.conn, live.session.node_id());
            let Some(output) = live.session.poll_output() else {
                return;
            };
            match output {
                SessionOutput::Send(message) => {
                    let text = encode(&message).unwrap_or_default();
                    send(o, agent, self.now, Wire::Text { conn, text });
                }
                SessionOutput::Close { code, .. } => {
                    send(
                        o,
                        agent,
                        self.now,
                        Wire::Closed {
                            conn,
                            code: Some(code),
                        },
                    );
                    self.session_ended(session_id);
                }
                SessionOutput::StoreTelemetry(t) => {
                    self.session_input(session_id, SessionInput::TelemetryStored(t.timestamp), o);
                }
                SessionOutput::StoreResult(result) => {
                    // Recorded and Unknown results are stored (keyed by
                    // request id); a duplicate changes nothing.
                    let _: ResultOutcome = self.hub.result_received(self.now, node_id, &result);
                    self.session_input(
                        session_id,
                        SessionInput::ResultStored(result.request_id),
                        o,
                    );
                }
                SessionOutput::CheckRefresh { token } => {
                    let check = tokens::check(&token, &self.registry);
                    let verdict = self.hub.check_refresh(self.now, node_id, &check);
                    self.session_input(session_id, SessionInput::RefreshChecked(verdict), o);
                }
                SessionOutput::Status { status, reason } => {
                    self.hub
                        .status_reported(node_id, session_id, status, reason);
                }
                SessionOutput::Record(_) | SessionOutput::Event(_) => {}
            }
        }
    }

    /// Performs the hub's outputs until none are left.
    fn settle(&mut self, o: &mut Out<ModelActor>) {
        while let Some(output) = self.hub.poll_output() {
            match output {
                HubOutput::Deliver {
                    session_id,
                    message,
                } => self.session_input(session_id, SessionInput::Deliver(message), o),
                HubOutput::Terminate {
                    session_id,
                    code,
                    reason,
                } => self.session_input(session_id, SessionInput::Terminate { code, reason }, o),
                HubOutput::Drain {
                    session_id,
                    reconnect_after,
                } => self.session_input(session_id, SessionInput::Drain { reconnect_after }, o),
                HubOutput::StatusChanged { .. } => {}
                HubOutput::CommandChanged {
                    request_id, state, ..
                } => {
                    if let Some(c) = self.store.commands.get_mut(&request_id) {
                        c.state = state;
                    }
                    if state.is_terminal() {
                        *self.store.terminal_writes.entry(request_id).or_default() += 1;
                    }
                }
            }
        }
    }

    /// Re-arms the engine timer and saves the store.
    fn finish(&mut self, o: &mut Out<ModelActor>) {
        if self.next_deadline().is_some() {
            o.set_timer(Tick::Engine, instant());
        } else {
            o.cancel_timer(Tick::Engine);
        }
        self.store.now = self.now;
        o.save(ModelStorage::Central(self.store.clone()));
    }

    fn next_deadline(&self) -> Option<Timestamp> {
        self.sessions
            .values()
            .filter_map(|l| l.session.poll_timeout())
            .chain(self.hub.poll_timeout())
            .min()
    }

    /// How long until the next deadline.
    pub fn next_delay(&self) -> Option<Duration> {
        self.next_deadline().map(|t| t.saturating_since(self.now))
    }

    /// Live (open) sessions per node.
    pub fn open_sessions(&self) -> BTreeMap<NodeId, usize> {
        let mut open = BTreeMap::new();
        for live in self.sessions.values().filter(|l| l.session.is_open()) {
            *open.entry(live.session.node_id()).or_default() += 1;
        }
        open
    }

    fn key(&self) -> impl Hash + Eq + '_ {
        let sessions: Vec<_> = self
            .sessions
            .values()
            .map(|l| {
                let timers: Vec<_> = l
                    .session
                    .timers()
                    .map(|(t, at)| (*t, at.saturating_since(self.now)))
                    .collect();
                (
                    l.agent,
                    l.conn,
                    l.session.node_id(),
                    l.session.is_open(),
                    timers,
                )
            })
            .collect();
        let hub_due = self
            .hub
            .poll_timeout()
            .map(|t| t.saturating_since(self.now));
        (sessions, hub_due, self.store.key(), &self.closed)
    }
}

impl Hash for CentralState {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl PartialEq for CentralState {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
