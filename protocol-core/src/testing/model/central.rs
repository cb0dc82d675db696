//! Central as an actor: the real hub and one real session per accepted
//! connection, forwarded by the same [`CentralHost`] as `World` uses, with
//! stand-in effects and a store that survives a crash.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::time::Duration;

use stateright::actor::{Id, Out};

use super::wire::{Conn, Packet, Tick, Wire};
use super::{
    BOB_KEY, MALLORY_KEY, ModelActor, ModelDecision, ModelSpec, ModelStorage, REQUESTER, ROOT_KEY,
    UNTRUSTED_ROOT_KEY, instant, send, wall_at,
};
use crate::central::approval::{ApprovalRequest, Approvers, Decided, Decision, Person};
use crate::central::{
    Admit, CommandState, HubConfig, HubInput, HubOutput, NodeLookup, ResultRecord, SessionConfig,
    SessionInput, SessionOutput, Submission, Upgrade,
};
use crate::codec::encode;
use crate::signed_approval::{self, Certificate, PublicKey};
use crate::testing::central::{CentralEffect, CentralHost};
use crate::testing::crypto::Symbolic;
use crate::testing::tokens;
use crate::wire::{CentralMessage, Execute, SignedApproval};
use crate::{NodeId, RequestId, SessionId, Timestamp, WallTime};

/// The digest the model's approval requests carry.
const DIGEST: &str = "model-digest";

/// Who takes a model decision on `command`, and what it is.
fn person_and_decision(
    decision: ModelDecision,
    request_id: RequestId,
    command: &StoredCommand,
) -> (Person, Decision) {
    let person = |user: &str| Person {
        user: user.into(),
        groups: BTreeSet::new(),
        admin: false,
    };
    let approve = |digest: &str| Decision::Approve {
        digest: digest.into(),
        signature: None,
    };
    let signed = |user: &str, root: u8, key: u8| Decision::Approve {
        digest: DIGEST.into(),
        signature: Some(sign(user, root, key, request_id, command)),
    };
    match decision {
        ModelDecision::Approve => (person("bob"), approve(DIGEST)),
        ModelDecision::ApproveOwn => (person(REQUESTER), approve(DIGEST)),
        ModelDecision::ApproveEdited => (person("bob"), approve("edited")),
        ModelDecision::Reject => (
            person("bob"),
            Decision::Reject {
                reason: "model".into(),
            },
        ),
        ModelDecision::Cancel => (person(REQUESTER), Decision::Cancel),
        ModelDecision::ApproveSigned => (person("bob"), signed("bob", ROOT_KEY, BOB_KEY)),
        ModelDecision::ApproveForged => (
            person("mallory"),
            signed("mallory", UNTRUSTED_ROOT_KEY, MALLORY_KEY),
        ),
    }
}

/// `user`'s signed approval of `command` as its node computes the digest,
/// with their key `key` certified by `root`.
fn sign(
    user: &str,
    root: u8,
    key: u8,
    request_id: RequestId,
    command: &StoredCommand,
) -> SignedApproval {
    use base64::Engine as _;
    let expires_at = command
        .approval
        .as_ref()
        .map_or(WallTime::UNIX_EPOCH, |a| a.expires_at);
    let digest = signed_approval::digest(
        &Symbolic,
        command.node_id,
        request_id,
        &command.message,
        expires_at,
    );
    let certificate = Certificate {
        user: user.into(),
        key: PublicKey(Symbolic::public_key(key)),
        not_before: WallTime::UNIX_EPOCH,
        not_after: expires_at.add_millis(24 * 3_600_000),
    };
    let text = certificate.to_text(&Symbolic::sign(root, certificate.signed_text().as_bytes()));
    SignedApproval {
        user: user.into(),
        certificate: text,
        signature: base64::engine::general_purpose::STANDARD.encode(Symbolic::sign(
            key,
            &signed_approval::signing_bytes(user, &digest),
        )),
    }
}

/// A command as the store keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredCommand {
    pub node_id: NodeId,
    pub message: CentralMessage,
    pub timeout: Duration,
    pub state: CommandState,
    /// v0.2: its approval request, with the approvals counted so far.
    pub approval: Option<ApprovalRequest>,
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
    /// v0.2: how many times each command was approved (the decision that
    /// completed its approvals).
    pub approved: BTreeMap<RequestId, u32>,
    /// v0.2: the model decisions already taken (each is taken once, by a
    /// person, whatever crashes happen around it).
    pub decided: BTreeSet<u8>,
    pub revoked: BTreeSet<NodeId>,
    /// Every admitted session: its node, the generation that admitted it,
    /// and whether the node was revoked at the time.
    pub admitted: BTreeMap<SessionId, (NodeId, u32, bool)>,
    pub seen: BTreeSet<(Id, Conn)>,
}

impl CentralStore {
    fn key(&self) -> impl Hash + Eq + '_ {
        let commands: Vec<_> = self
            .commands
            .iter()
            .map(|(id, c)| (*id, c.state, c.approval.as_ref().map(|a| &a.approved_by)))
            .collect();
        let admitted: Vec<_> = self.admitted.values().collect();
        (
            self.generation,
            commands,
            &self.terminal_writes,
            &self.approved,
            &self.decided,
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

/// One central process.
#[derive(Debug, Clone)]
pub struct CentralState {
    pub central: CentralHost,
    /// Each session's agent and connection.
    links: BTreeMap<SessionId, (Id, Conn)>,
    conns: BTreeMap<(Id, Conn), SessionId>,
    /// Connections this process closed (frames still arriving on them are
    /// dropped, not answered with a reset).
    closed: BTreeSet<(Id, Conn)>,
    pub now: Timestamp,
    pub store: CentralStore,
    registry: BTreeMap<NodeId, NodeLookup>,
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
        let central = CentralHost::new(
            store.now,
            wall_at(store.now),
            hub_config,
            SessionConfig::with_intervals(self.spec.intervals),
        );
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
            central,
            links: BTreeMap::new(),
            conns: BTreeMap::new(),
            closed: BTreeSet::new(),
            now: store.now,
            store,
            registry,
            next_session: 0,
        };
        if first {
            let approving = self.spec.approval.is_some();
            let expires_at = wall_at(state.now).add_millis(4 * 3_600_000);
            for (node_id, request_id) in &self.spec.commands {
                let message = CentralMessage::Execute(Execute {
                    request_id: Some(*request_id),
                    command: "uptime".into(),
                    args: vec![],
                    timeout: Some(10_000),
                    hold_until: approving.then_some(expires_at),
                    requested_by: approving.then(|| REQUESTER.to_owned()),
                    rollout_approval: None,
                    requires_approval: approving,
                    approver: None,
                });
                let approval = approving.then(|| ApprovalRequest {
                    requester: REQUESTER.into(),
                    approvers: Approvers::Anyone,
                    min_approvals: 1,
                    reason: "model".into(),
                    digest: DIGEST.into(),
                    expires_at,
                    approved_by: Vec::new(),
                    signatures: Vec::new(),
                });
                state.store.commands.insert(
                    *request_id,
                    StoredCommand {
                        node_id: *node_id,
                        message,
                        timeout: Duration::from_secs(10),
                        state: CommandState::Queued,
                        approval,
                    },
                );
            }
        }
        // The decisions not taken yet are still to be taken.
        for n in 0..self.spec.approval.as_ref().map_or(0, Vec::len) {
            let n = u8::try_from(n).unwrap_or(u8::MAX);
            if !state.store.decided.contains(&n) {
                o.set_timer(Tick::Decide(n), instant());
            }
        }
        // As central's start-up: what was open is submitted again.
        let open: Vec<Submission> = state
            .store
            .commands
            .iter()
            .filter(|(_, c)| !c.state.is_terminal())
            .map(|(id, c)| Submission {
                node_id: c.node_id,
                request_id: *id,
                message: Some(c.message.clone()),
                timeout: c.timeout,
                known: state.registry.get(&c.node_id) == Some(&NodeLookup::Active),
                approval: c.approval.clone(),
            })
            .collect();
        state.central.hub_input(state.now, HubInput::Submit(open));
        if let Some(node) = self.spec.revoke
            && !state.store.revoked.contains(&node)
        {
            o.set_timer(Tick::Revoke, instant());
        }
        state.perform(o);
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
            Wire::Upgrade { conn, token, hello } => state.upgrade(src, conn, &token, hello, o),
            Wire::Text { conn, text } => {
                let Some(session_id) = state.conns.get(&(src, conn)).copied() else {
                    state.reset(src, conn, o);
                    return;
                };
                state
                    .central
                    .session_input(state.now, session_id, SessionInput::Frame(text));
            }
            Wire::Closed { conn, code } => {
                if let Some(session_id) = state.conns.get(&(src, conn)).copied() {
                    state.unlink(session_id);
                    state.central.session_input(
                        state.now,
                        session_id,
                        SessionInput::Closed { code },
                    );
                }
            }
            Wire::Accepted { .. } | Wire::Refused { .. } => {}
        }
        state.perform(o);
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
                if let Some(next) = state.central.poll_timeout() {
                    state.now = state.now.max(next);
                }
                state.central.handle_timeout(state.now);
            }
            Tick::Revoke => {
                if let Some(node) = self.spec.revoke {
                    state.registry.insert(node, NodeLookup::Revoked);
                    state.store.revoked.insert(node);
                    state.central.hub_input(state.now, HubInput::Revoke(node));
                }
            }
            Tick::Decide(n) => {
                state.store.decided.insert(*n);
                let taken = self
                    .spec
                    .approval
                    .as_ref()
                    .and_then(|d| d.get(usize::from(*n)));
                if let Some(decision) = taken {
                    let commands: Vec<_> = state
                        .store
                        .commands
                        .iter()
                        .map(|(id, c)| (*id, person_and_decision(*decision, *id, c)))
                        .collect();
                    for (request_id, (person, decision)) in commands {
                        let input = HubInput::Decide {
                            request_id,
                            person,
                            decision,
                        };
                        state.central.hub_input(state.now, input);
                    }
                }
            }
            Tick::Finish(_) => return,
        }
        state.perform(o);
        state.finish(o);
    }
}

impl CentralState {
    fn upgrade(
        &mut self,
        agent: Id,
        conn: Conn,
        token: &str,
        hello: crate::wire::Hello,
        o: &mut Out<ModelActor>,
    ) {
        if !self.store.seen.insert((agent, conn)) {
            return; // a duplicate of a handshake already answered
        }
        self.next_session += 1;
        let upgrade = Upgrade {
            session_id: SessionId::from_u128(
                (u128::from(self.store.generation) << 64) | u128::from(self.next_session),
            ),
            peer: None,
            token: Some(tokens::check(token, &self.registry)),
            hello,
        };
        match self.central.admit(self.now, wall_at(self.now), &upgrade) {
            Admit::Accepted(admission) => {
                let revoked = self.store.revoked.contains(&admission.node_id);
                self.store.admitted.insert(
                    admission.session_id,
                    (admission.node_id, self.store.generation, revoked),
                );
                self.links.insert(admission.session_id, (agent, conn));
                self.conns.insert((agent, conn), admission.session_id);
                send(o, agent, self.now, Wire::Accepted { conn });
            }
            Admit::Refused(_) => send(o, agent, self.now, Wire::Refused { conn }),
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

    /// The session's connection is gone (closed by either side).
    fn unlink(&mut self, session_id: SessionId) -> Option<(Id, Conn)> {
        let link = self.links.remove(&session_id)?;
        self.conns.remove(&link);
        self.closed.insert(link);
        Some(link)
    }

    /// Performs central's effects with the model's stand-ins.
    fn perform(&mut self, o: &mut Out<ModelActor>) {
        while let Some(effect) = self.central.poll_effect() {
            match effect {
                CentralEffect::Session {
                    session_id, output, ..
                } => self.perform_session(session_id, output, o),
                CentralEffect::Hub(output) => self.perform_hub(output),
            }
        }
    }

    fn perform_session(
        &mut self,
        session_id: SessionId,
        output: SessionOutput,
        o: &mut Out<ModelActor>,
    ) {
        match output {
            SessionOutput::Send(message) => {
                if let Some((agent, conn)) = self.links.get(&session_id).copied() {
                    let text = encode(&message).unwrap_or_default();
                    send(o, agent, self.now, Wire::Text { conn, text });
                }
            }
            SessionOutput::Close { code, .. } => {
                if let Some((agent, conn)) = self.unlink(session_id) {
                    let closed = Wire::Closed {
                        conn,
                        code: Some(code),
                    };
                    send(o, agent, self.now, closed);
                }
            }
            SessionOutput::StoreTelemetry(t) => {
                let input = SessionInput::TelemetryStored(t.timestamp);
                self.central.session_input(self.now, session_id, input);
            }
            SessionOutput::VerifyToken { token } => {
                let check = Box::new(tokens::check(&token, &self.registry));
                let input = SessionInput::TokenVerified(check);
                self.central.session_input(self.now, session_id, input);
            }
            SessionOutput::ToHub(_)
            | SessionOutput::Record { .. }
            | SessionOutput::Alarm(_)
            | SessionOutput::Event(_) => {}
        }
    }

    fn perform_hub(&mut self, output: HubOutput) {
        match output {
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
            HubOutput::RecordResult {
                session_id,
                node_id,
                result,
            } => {
                let owner = self
                    .store
                    .commands
                    .get(&result.request_id)
                    .map(|c| c.node_id);
                let record = if owner.is_some_and(|owner| owner != node_id) {
                    ResultRecord::WrongNode
                } else {
                    // Which result was first does not change what follows.
                    ResultRecord::Stored { first: true }
                };
                let input = HubInput::ResultRecorded {
                    session_id,
                    node_id,
                    result,
                    record,
                };
                self.central.hub_input(self.now, input);
            }
            output @ (HubOutput::Claim { .. }
            | HubOutput::Vacate { .. }
            | HubOutput::LoadOpenCommands { .. }
            | HubOutput::Locate { .. }) => {
                let left = self.central.answer_alone(self.now, output);
                debug_assert!(left.is_none());
            }
            HubOutput::ApprovalDecided {
                request_id,
                person,
                decision,
                verdict,
                ..
            } => {
                // As central's driver: a counted approval is stored with the
                // command, so a restarted hub loads it back.
                if let Ok(decided @ (Decided::Counted { .. } | Decided::Approved)) = verdict
                    && let Some(a) = self
                        .store
                        .commands
                        .get_mut(&request_id)
                        .and_then(|c| c.approval.as_mut())
                {
                    a.approved_by.push(person);
                    if let Decision::Approve {
                        signature: Some(signed),
                        ..
                    } = decision
                    {
                        a.signatures.push(signed);
                    }
                    if decided == Decided::Approved {
                        *self.store.approved.entry(request_id).or_default() += 1;
                    }
                }
            }
            HubOutput::StatusChanged { .. }
            | HubOutput::ExpireQueued { .. }
            | HubOutput::Alarm(_)
            | HubOutput::ToSession { .. } => {}
            // The protocol models start no rollout (the rollout engine has
            // its own model).
            HubOutput::RolloutStart { .. }
            | HubOutput::RolloutChanged { .. }
            | HubOutput::RolloutTargetChanged { .. }
            | HubOutput::RolloutControlled { .. } => {}
        }
    }

    /// Re-arms the engine timer and saves the store.
    fn finish(&mut self, o: &mut Out<ModelActor>) {
        if self.central.poll_timeout().is_some() {
            o.set_timer(Tick::Engine, instant());
        } else {
            o.cancel_timer(Tick::Engine);
        }
        self.store.now = self.now;
        o.save(ModelStorage::Central(self.store.clone()));
    }

    /// How long until the next deadline.
    pub fn next_delay(&self) -> Option<Duration> {
        self.central
            .poll_timeout()
            .map(|t| t.saturating_since(self.now))
    }

    /// Live (open) sessions per node.
    pub fn open_sessions(&self) -> BTreeMap<NodeId, usize> {
        self.central.open_sessions()
    }

    fn key(&self) -> impl Hash + Eq + '_ {
        let sessions: Vec<_> = self
            .central
            .sessions
            .iter()
            .map(|(id, s)| {
                let timers: Vec<_> = s
                    .timers()
                    .map(|(t, at)| (*t, at.saturating_since(self.now)))
                    .collect();
                (self.links.get(id), s.node_id(), s.is_open(), timers)
            })
            .collect();
        let hub_timers: Vec<_> = self
            .central
            .hub
            .timers()
            .map(|(t, at)| (*t, at.saturating_since(self.now)))
            .collect();
        (sessions, hub_timers, self.store.key(), &self.closed)
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
