//! Central as the in-memory harnesses run it: the real hub and one real
//! session per connection, with the events between them forwarded unread —
//! exactly what central's driver does across its tasks — and every effect
//! handed out as a [`CentralEffect`] for the harness to perform with its
//! stand-ins (network, store, token checks). `World` and the model checker
//! both run central through this, so neither has glue of its own.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::central::{
    Admit, CentralHub, CentralSession, HubConfig, HubInput, HubOutput, Presence, SessionConfig,
    SessionInput, SessionOutput, Upgrade,
};
use crate::{NodeId, SessionId, Timestamp, WallTime};

/// Something a harness performs for central.
#[derive(Debug, Clone, PartialEq)]
pub enum CentralEffect {
    /// A session's effect (never [`SessionOutput::ToHub`]: that is forwarded).
    Session {
        session_id: SessionId,
        node_id: NodeId,
        output: SessionOutput,
    },
    /// The hub's effect (never [`HubOutput::ToSession`]: that is forwarded).
    Hub(HubOutput),
}

/// The hub and its sessions.
#[derive(Debug, Clone)]
pub struct CentralHost {
    pub hub: CentralHub,
    pub sessions: BTreeMap<SessionId, CentralSession>,
    pub session_config: SessionConfig,
    effects: VecDeque<CentralEffect>,
    /// Each session's next deadline, indexed so that a step at 10,000
    /// sessions does not scan them all.
    session_due: BTreeMap<SessionId, Timestamp>,
    due_index: BTreeSet<(Timestamp, SessionId)>,
}

impl CentralHost {
    /// A freshly started central at `now`.
    pub fn new(
        now: Timestamp,
        wall: WallTime,
        hub_config: HubConfig,
        session_config: SessionConfig,
    ) -> Self {
        let mut hub = CentralHub::new(hub_config);
        hub.handle_input(now, HubInput::WallClock(wall));
        Self {
            hub,
            sessions: BTreeMap::new(),
            session_config,
            effects: VecDeque::new(),
            session_due: BTreeMap::new(),
            due_index: BTreeSet::new(),
        }
    }

    /// Admits an upgrade; on success the session exists and has queued its
    /// `welcome` (performed with the other effects).
    pub fn admit(&mut self, now: Timestamp, wall: WallTime, upgrade: &Upgrade) -> Admit {
        let verdict = self.hub.admit(now, upgrade);
        if let Admit::Accepted(admission) = verdict {
            let session = CentralSession::new(now, wall, admission, self.session_config.clone());
            self.sessions.insert(admission.session_id, session);
            self.drain_session(now, admission.session_id);
        }
        self.settle(now);
        verdict
    }

    /// Gives a session an input.
    pub fn session_input(&mut self, now: Timestamp, session_id: SessionId, input: SessionInput) {
        if let Some(session) = self.sessions.get_mut(&session_id) {
            session.handle_input(now, input);
        }
        self.drain_session(now, session_id);
        self.settle(now);
    }

    /// Gives the hub an input.
    pub fn hub_input(&mut self, now: Timestamp, input: HubInput) {
        self.hub.handle_input(now, input);
        self.settle(now);
    }

    /// Fires every engine's due timers.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        if self.hub.poll_timeout().is_some_and(|t| t <= now) {
            self.hub.handle_timeout(now);
        }
        let due: Vec<SessionId> = self
            .due_index
            .iter()
            .take_while(|(t, _)| *t <= now)
            .map(|(_, id)| *id)
            .collect();
        for session_id in due {
            if let Some(session) = self.sessions.get_mut(&session_id) {
                session.handle_timeout(now);
            }
            self.drain_session(now, session_id);
        }
        self.settle(now);
    }

    /// The earliest deadline of the hub and the sessions.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.due_index
            .first()
            .map(|(t, _)| *t)
            .into_iter()
            .chain(self.hub.poll_timeout())
            .min()
    }

    /// The next effect to perform.
    pub fn poll_effect(&mut self) -> Option<CentralEffect> {
        self.effects.pop_front()
    }

    /// Performs, as a process alone in the cluster would, an output that
    /// asks presence (claim, vacate, locate: this hub's own view is the
    /// truth); gives any other output back to the harness.
    pub fn answer_alone(&mut self, now: Timestamp, output: HubOutput) -> Option<HubOutput> {
        let input = match output {
            HubOutput::Claim {
                node_id,
                session_id,
            } => HubInput::TakenOver {
                sessions: vec![(node_id, session_id)],
                commands: vec![],
            },
            HubOutput::Vacate {
                node_id,
                session_id,
            } => HubInput::Vacated {
                node_id,
                session_id,
                presence: Some(Presence::Nobody),
            },
            // Alone, every command was submitted here: none was missed.
            HubOutput::LoadOpenCommands { sessions } => HubInput::Swept {
                sessions,
                commands: vec![],
            },
            HubOutput::Locate { node_id } => {
                let presence = self.hub.live_session(node_id).map(Presence::Here);
                HubInput::Located {
                    node_id,
                    presence: Some(presence.unwrap_or(Presence::Nobody)),
                }
            }
            other => return Some(other),
        };
        self.hub_input(now, input);
        None
    }

    /// Live (open) sessions per node.
    pub fn open_sessions(&self) -> BTreeMap<NodeId, usize> {
        let mut open = BTreeMap::new();
        for session in self.sessions.values().filter(|s| s.is_open()) {
            *open.entry(session.node_id()).or_default() += 1;
        }
        open
    }

    /// Forwards one session's outputs until it has none; a session that has
    /// ended is dropped once drained.
    fn drain_session(&mut self, now: Timestamp, session_id: SessionId) {
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        let node_id = session.node_id();
        while let Some(output) = session.poll_output() {
            match output {
                SessionOutput::ToHub(event) => self
                    .hub
                    .handle_input(now, HubInput::FromSession { session_id, event }),
                output => self.effects.push_back(CentralEffect::Session {
                    session_id,
                    node_id,
                    output,
                }),
            }
        }
        let next = if session.is_open() {
            session.poll_timeout()
        } else {
            self.sessions.remove(&session_id);
            None
        };
        if self.session_due.get(&session_id).copied() != next {
            if let Some(old) = self.session_due.remove(&session_id) {
                self.due_index.remove(&(old, session_id));
            }
            if let Some(new) = next {
                self.due_index.insert((new, session_id));
                self.session_due.insert(session_id, new);
            }
        }
    }

    /// Forwards the hub's outputs (and what they cause) until it has none.
    fn settle(&mut self, now: Timestamp) {
        while let Some(output) = self.hub.poll_output() {
            match output {
                HubOutput::ToSession { session_id, event } => {
                    if let Some(session) = self.sessions.get_mut(&session_id) {
                        session.handle_input(now, SessionInput::FromHub(event));
                    }
                    self.drain_session(now, session_id);
                }
                output => self.effects.push_back(CentralEffect::Hub(output)),
            }
        }
    }
}
