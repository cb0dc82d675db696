//! The agent as an actor: the real [`AgentEngine`] and a driver that does
//! what the agent's driver does, with stand-ins for the token signer and the
//! processes it runs.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::time::Duration;

use stateright::actor::{Id, Out};

use super::wire::{Conn, Packet, Tick, Wire};
use super::{ModelActor, ModelStorage, instant, send, wall_at};
use crate::agent::{
    AgentConfig, AgentEngine, AgentInput, AgentOutput, AgentSnapshot, CommandOutcome,
    ConnectionState, DialFailure, Task,
};
use crate::codec::encode;
use crate::testing::world::all_ok;
use crate::testing::{sample, tokens};
use crate::transport::Epoch;
use crate::wire::HealthDetails;
use crate::{NodeId, RequestId, SessionId, Timestamp, TokenId};

/// What survives an agent crash: the persisted snapshot, and two things a
/// real process cannot lose either — the count of its incarnations and the
/// witness of every process it started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentStore {
    pub snapshot: Option<AgentSnapshot>,
    /// How many times each request was started, over every incarnation.
    pub runs: BTreeMap<RequestId, u32>,
    pub incarnations: u32,
    pub now: Timestamp,
}

impl AgentStore {
    /// The part of the store that decides the future (telemetry floats are
    /// not `Eq`; how many samples wait is what matters).
    fn key(&self) -> impl Hash + Eq + '_ {
        let requests: Vec<_> = self
            .snapshot
            .iter()
            .flat_map(|s| &s.requests)
            .map(|r| (r.request_id, r.acked, r.result.is_some()))
            .collect();
        let telemetry = self.snapshot.as_ref().map(|s| s.telemetry.len());
        (&self.runs, self.incarnations, requests, telemetry)
    }
}

impl Hash for AgentStore {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

/// One agent process.
#[derive(Debug, Clone)]
pub struct AgentState {
    pub engine: AgentEngine,
    pub node_id: NodeId,
    pub now: Timestamp,
    pub incarnation: u32,
    /// Tasks running now, and whether each is a health check.
    pub running: BTreeMap<RequestId, bool>,
    pub store: AgentStore,
    /// A task was started while the session was not established.
    pub ran_unauthenticated: bool,
    /// Sessions this process reached `Established` on (this incarnation).
    pub established_on: BTreeSet<SessionId>,
    next_jti: u64,
}

/// The agent actor's parameters.
#[derive(Debug, Clone)]
pub struct AgentActor {
    pub config: AgentConfig,
    pub central: Id,
}

impl AgentActor {
    pub(super) fn start(
        &self,
        storage: Option<&AgentStore>,
        o: &mut Out<ModelActor>,
    ) -> AgentState {
        let mut store = storage.cloned().unwrap_or_default();
        store.incarnations += 1;
        let mut config = self.config.clone();
        config.seed ^= u64::from(store.incarnations);
        let node_id = config.node_id;
        let now = store.now;
        let mut engine = AgentEngine::new(config);
        engine.handle_input(now, AgentInput::WallClock(wall_at(now)));
        if let Some(snapshot) = store.snapshot.clone() {
            engine.restore(snapshot, wall_at(now));
        }
        engine.handle_input(now, AgentInput::Start);
        let mut state = AgentState {
            engine,
            node_id,
            now,
            incarnation: store.incarnations,
            running: BTreeMap::new(),
            store,
            ran_unauthenticated: false,
            established_on: BTreeSet::new(),
            next_jti: 0,
        };
        state.drain(self.central, o);
        o.save(ModelStorage::Agent(state.store.clone()));
        state
    }

    pub(super) fn on_msg(&self, state: &mut AgentState, packet: Packet, o: &mut Out<ModelActor>) {
        state.now = state.now.max(packet.sent_at);
        let (conn, input) = match packet.body {
            Wire::Accepted { conn } => (conn, AgentInput::Connected { epoch: epoch(conn) }),
            Wire::Refused { conn } => (
                conn,
                AgentInput::DialFailed {
                    epoch: epoch(conn),
                    reason: DialFailure::Unauthorized,
                },
            ),
            Wire::Text { conn, text } => (
                conn,
                AgentInput::Frame {
                    epoch: epoch(conn),
                    text,
                },
            ),
            Wire::Closed { conn, code } => (
                conn,
                AgentInput::Closed {
                    epoch: epoch(conn),
                    code,
                },
            ),
            Wire::Upgrade { .. } => return,
        };
        if conn.incarnation != state.incarnation {
            return; // a socket of a process that no longer exists
        }
        state.engine.handle_input(state.now, input);
        state.drain(self.central, o);
    }

    pub(super) fn on_timeout(&self, state: &mut AgentState, tick: &Tick, o: &mut Out<ModelActor>) {
        match tick {
            Tick::Engine => {
                if let Some(deadline) = state.engine.poll_timeout() {
                    state.now = state.now.max(deadline);
                }
                state.engine.handle_timeout(state.now);
            }
            Tick::Finish(request_id) => {
                let Some(health) = state.running.remove(request_id) else {
                    return;
                };
                let input = if health {
                    AgentInput::HealthReport {
                        request_id: Some(*request_id),
                        checks: all_ok(),
                        details: HealthDetails::default(),
                    }
                } else {
                    AgentInput::CommandFinished {
                        request_id: *request_id,
                        outcome: CommandOutcome {
                            success: true,
                            exit_code: Some(0),
                            stdout: "ok\n".into(),
                            ..CommandOutcome::default()
                        },
                    }
                };
                state.engine.handle_input(state.now, input);
            }
            Tick::Revoke | Tick::Decide(_) => return,
        }
        state.drain(self.central, o);
    }
}

impl AgentState {
    fn conn(&self, epoch: Epoch) -> Conn {
        Conn {
            incarnation: self.incarnation,
            epoch: epoch.0,
        }
    }

    /// Performs the engine's outputs, as the agent's driver does.
    fn drain(&mut self, central: Id, o: &mut Out<ModelActor>) {
        while let Some(output) = self.engine.poll_output() {
            match output {
                AgentOutput::MintToken { lifetime } => {
                    self.next_jti += 1;
                    let jti = TokenId::from_u128(
                        (u128::from(self.incarnation) << 64) | u128::from(self.next_jti),
                    );
                    let iat = wall_at(self.now).unix_seconds();
                    let exp = iat + i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX);
                    let token = tokens::mint(self.node_id, jti, iat, exp, true);
                    self.engine
                        .handle_input(self.now, AgentInput::TokenMinted { token, lifetime });
                }
                AgentOutput::Dial {
                    epoch,
                    token,
                    hello,
                } => {
                    send(
                        o,
                        central,
                        self.now,
                        Wire::Upgrade {
                            conn: self.conn(epoch),
                            token,
                            hello,
                        },
                    );
                }
                AgentOutput::Send { epoch, message, .. } => {
                    let text = encode(&message).unwrap_or_default();
                    send(
                        o,
                        central,
                        self.now,
                        Wire::Text {
                            conn: self.conn(epoch),
                            text,
                        },
                    );
                }
                AgentOutput::Close { epoch, code, .. } => {
                    send(
                        o,
                        central,
                        self.now,
                        Wire::Closed {
                            conn: self.conn(epoch),
                            code: Some(code),
                        },
                    );
                }
                AgentOutput::SampleTelemetry => {
                    self.engine
                        .handle_input(self.now, AgentInput::TelemetrySample(sample(10.0, 50.0)));
                }
                AgentOutput::CheckHealth => {
                    self.engine.handle_input(
                        self.now,
                        AgentInput::HealthReport {
                            request_id: None,
                            checks: all_ok(),
                            details: HealthDetails::default(),
                        },
                    );
                }
                AgentOutput::Run { request_id, task } => {
                    *self.store.runs.entry(request_id).or_default() += 1;
                    if self.engine.state() != (ConnectionState::Established {}) {
                        self.ran_unauthenticated = true;
                    }
                    let health = matches!(task, Task::HealthCheck { .. });
                    self.running.insert(request_id, health);
                    o.set_timer(Tick::Finish(request_id), instant());
                }
                AgentOutput::Kill { request_id } => {
                    if self.running.remove(&request_id).is_some() {
                        o.cancel_timer(Tick::Finish(request_id));
                        let outcome = CommandOutcome {
                            success: false,
                            exit_code: Some(-9),
                            ..CommandOutcome::default()
                        };
                        self.engine.handle_input(
                            self.now,
                            AgentInput::CommandFinished {
                                request_id,
                                outcome,
                            },
                        );
                    }
                }
                AgentOutput::Persist => {
                    self.store.snapshot = Some(self.engine.snapshot());
                }
                AgentOutput::Event(_)
                | AgentOutput::StreamLogs { .. }
                | AgentOutput::ConfirmUpdate
                | AgentOutput::RollBackUpdate
                | AgentOutput::UpdateTrafficKeys { .. } => {}
            }
        }
        if self.engine.state() == (ConnectionState::Established {})
            && let Some(session) = self.engine.session()
        {
            self.established_on.insert(session);
        }
        if self.engine.poll_timeout().is_some() {
            o.set_timer(Tick::Engine, instant());
        } else {
            o.cancel_timer(Tick::Engine);
        }
        // The clock is saved too, so that a restarted process's clock goes
        // on from where it stopped, as a real one would.
        self.store.now = self.now;
        o.save(ModelStorage::Agent(self.store.clone()));
    }

    /// How long until the engine's next deadline.
    pub fn next_delay(&self) -> Option<Duration> {
        if !self.running.is_empty() {
            return Some(Duration::ZERO);
        }
        self.engine
            .poll_timeout()
            .map(|t| t.saturating_since(self.now))
    }

    /// What identifies this state to the checker. Absolute times and fresh
    /// ids grow without bound; the projection keeps what decides the future:
    /// the lifecycle state, each timer relative to now, the queues' sizes,
    /// what runs and what is stored.
    fn key(&self) -> impl Hash + Eq + '_ {
        let timers: Vec<_> = self
            .engine
            .timers()
            .map(|(t, at)| (*t, at.saturating_since(self.now)))
            .collect();
        (
            (
                self.engine.state(),
                self.engine.epoch(),
                self.engine.session().is_some(),
                timers,
            ),
            (
                self.engine.running_commands(),
                self.engine.outbox_len(),
                self.engine.buffered_telemetry(),
                self.engine.recorded_requests(),
                self.engine.pending_alerts(),
            ),
            (
                self.incarnation,
                &self.running,
                self.store.key(),
                self.ran_unauthenticated,
                self.established_on.len(),
            ),
        )
    }
}

impl Hash for AgentState {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl PartialEq for AgentState {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

fn epoch(conn: Conn) -> Epoch {
    Epoch(conn.epoch)
}
