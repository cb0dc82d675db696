//! The hub: what spans sessions. Admission (token checks and `jti` replay),
//! the one live session per node (a newer one supersedes the older with
//! 4002), node status, the command tracker with its terminal states, the
//! offline queue, and drain. Sessions are separate engines owned by their
//! connections; the hub names them by `SessionId`.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use crate::rng::Prng;
use crate::timer::Timers;
use crate::transport::close;
use crate::wire::{CentralMessage, CommandResult, ErrorCode, NodeStatus};
use crate::{NodeId, RequestId, SessionId, Timestamp, WallAnchor, WallTime};

use super::auth::{AuthPolicy, AuthRejection, ReplayWindow, TokenCheck, check_token};

/// Parameters of the hub.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HubConfig {
    pub auth: AuthPolicy,
    /// How long a command may wait for an offline node before it expires.
    pub command_ttl: Duration,
    /// How long past its own timeout central waits for a sent command's result.
    pub result_grace: Duration,
    /// Commands queued per offline node; past this, new ones are undeliverable.
    pub max_queued_per_node: usize,
    /// Drain spreads reconnections at this many per second.
    pub drain_rate_per_sec: u32,
    /// The shortest drain delay.
    pub drain_min: Duration,
    /// Seed of the hub's PRNG (drain spread).
    pub seed: u64,
}

impl HubConfig {
    /// The defaults for `audience`.
    pub fn new(audience: impl Into<String>) -> Self {
        Self {
            auth: AuthPolicy::new(audience),
            command_ttl: Duration::from_secs(3600),
            result_grace: Duration::from_secs(300),
            max_queued_per_node: 1000,
            drain_rate_per_sec: 200,
            drain_min: Duration::from_secs(5),
            seed: 0,
        }
    }
}

/// A command's state at central (spec/protocol.md §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CommandState {
    /// Waiting for the node to be online.
    Queued,
    /// Delivered to a session; waiting for the result.
    Sent,
    Succeeded,
    Failed,
    TimedOut,
    Blocked,
    /// Waited for an offline node longer than its time to live.
    Expired,
    /// The node is unknown, revoked, or its queue is full.
    Undeliverable,
}

impl CommandState {
    /// Whether this state is final.
    pub fn is_terminal(self) -> bool {
        !matches!(self, Self::Queued | Self::Sent)
    }

    /// The name used in the API and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Sent => "sent",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::Blocked => "blocked",
            Self::Expired => "expired",
            Self::Undeliverable => "undeliverable",
        }
    }

    /// The terminal state a result stands for.
    pub fn of_result(result: &CommandResult) -> Self {
        match result.error.as_ref().map(|e| e.code) {
            None if result.success => Self::Succeeded,
            Some(ErrorCode::Timeout) => Self::TimedOut,
            Some(ErrorCode::Blocked) => Self::Blocked,
            _ => Self::Failed,
        }
    }
}

/// One tracked command.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackedCommand {
    pub node_id: NodeId,
    pub message: CentralMessage,
    pub state: CommandState,
    /// The command's own timeout (what the node may spend on it).
    pub timeout: Duration,
}

/// Work for the driver.
#[derive(Debug, Clone, PartialEq)]
pub enum HubOutput {
    /// Route this message to the session (its `SessionInput::Deliver`).
    Deliver {
        session_id: SessionId,
        message: CentralMessage,
    },
    /// End this session (its `SessionInput::Terminate`).
    Terminate {
        session_id: SessionId,
        code: u16,
        reason: &'static str,
    },
    /// Ask this session to drain (its `SessionInput::Drain`).
    Drain {
        session_id: SessionId,
        reconnect_after: Duration,
    },
    /// A node's status changed.
    StatusChanged {
        node_id: NodeId,
        status: NodeStatus,
        reason: Option<String>,
    },
    /// A command changed state; terminal states are reported exactly once.
    CommandChanged {
        request_id: RequestId,
        node_id: NodeId,
        state: CommandState,
    },
}

/// An admitted connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Admission {
    pub node_id: NodeId,
    pub session_id: SessionId,
    pub token_expires_at: WallTime,
}

/// What the hub did with a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResultOutcome {
    /// The first result for this command: it is now in this terminal state.
    Recorded(CommandState),
    /// Already terminal (a re-sent result, or a late one): nothing changes.
    Duplicate,
    /// No such command here (e.g. sent by an earlier central): store it as is.
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum HubTimer {
    Command(RequestId),
}

/// The hub engine.
#[derive(Debug, Clone)]
pub struct CentralHub {
    config: HubConfig,
    rng: Prng,
    anchor: WallAnchor,
    now: Timestamp,
    replay: ReplayWindow,
    live: BTreeMap<NodeId, SessionId>,
    status: BTreeMap<NodeId, NodeStatus>,
    commands: BTreeMap<RequestId, TrackedCommand>,
    queued: BTreeMap<NodeId, VecDeque<RequestId>>,
    timers: Timers<HubTimer>,
    out: VecDeque<HubOutput>,
}

impl CentralHub {
    pub fn new(config: HubConfig) -> Self {
        Self {
            rng: Prng::new(config.seed),
            config,
            anchor: WallAnchor::new(Timestamp::ZERO, WallTime::UNIX_EPOCH),
            now: Timestamp::ZERO,
            replay: ReplayWindow::default(),
            live: BTreeMap::new(),
            status: BTreeMap::new(),
            commands: BTreeMap::new(),
            queued: BTreeMap::new(),
            timers: Timers::default(),
            out: VecDeque::new(),
        }
    }

    /// A wall-clock reading at `now`.
    pub fn set_wall_clock(&mut self, now: Timestamp, wall: WallTime) {
        self.advance(now);
        self.anchor = WallAnchor::new(self.now, wall);
    }

    /// The wall clock at `now`.
    pub fn wall_at(&self, now: Timestamp) -> WallTime {
        self.anchor.wall_at(now)
    }

    /// Checks an upgrade's token. On success the node's older session, if
    /// any, is superseded (4002) and `session_id` becomes its live session;
    /// the caller then creates the session and calls [`Self::session_opened`].
    pub fn admit(
        &mut self,
        now: Timestamp,
        token: &TokenCheck,
        session_id: SessionId,
    ) -> Result<Admission, AuthRejection> {
        self.advance(now);
        let wall = self.anchor.wall_at(self.now);
        let valid = check_token(&self.config.auth, wall, token)?;
        if !self
            .replay
            .consume(wall, self.config.auth.max_skew, valid.jti, valid.expires_at)
        {
            return Err(AuthRejection::Replayed);
        }
        if let Some(old) = self.live.insert(valid.node_id, session_id) {
            self.out.push_back(HubOutput::Terminate {
                session_id: old,
                code: close::SUPERSEDED,
                reason: "superseded by a newer connection",
            });
        }
        Ok(Admission {
            node_id: valid.node_id,
            session_id,
            token_expires_at: valid.expires_at,
        })
    }

    /// Checks a `token_refresh` token for the node of a live session.
    pub fn check_refresh(
        &mut self,
        now: Timestamp,
        node_id: NodeId,
        token: &TokenCheck,
    ) -> Result<WallTime, AuthRejection> {
        self.advance(now);
        let wall = self.anchor.wall_at(self.now);
        let valid = check_token(&self.config.auth, wall, token)?;
        if valid.node_id != node_id {
            return Err(AuthRejection::WrongNode);
        }
        if !self
            .replay
            .consume(wall, self.config.auth.max_skew, valid.jti, valid.expires_at)
        {
            return Err(AuthRejection::Replayed);
        }
        Ok(valid.expires_at)
    }

    /// The session has sent `welcome`: the node is online and its queued
    /// commands are delivered, in order.
    pub fn session_opened(&mut self, now: Timestamp, node_id: NodeId, session_id: SessionId) {
        self.advance(now);
        if self.live.get(&node_id) != Some(&session_id) {
            return;
        }
        self.set_status(node_id, NodeStatus::Online, None);
        // Sent before but never answered: the transport may have died with
        // it in flight. The agent runs a request at most once, so sending it
        // again is safe, and it is the only way it gets an answer sooner
        // than its deadline.
        let unanswered: Vec<RequestId> = self
            .commands
            .iter()
            .filter(|(_, c)| c.node_id == node_id && c.state == CommandState::Sent)
            .map(|(id, _)| *id)
            .collect();
        for request_id in unanswered {
            if let Some(command) = self.commands.get(&request_id) {
                let message = command.message.clone();
                self.out.push_back(HubOutput::Deliver {
                    session_id,
                    message,
                });
            }
        }
        let queued = self.queued.remove(&node_id).unwrap_or_default();
        for request_id in queued {
            self.deliver(request_id, session_id);
        }
    }

    /// The node reported its status on its live session.
    pub fn status_reported(
        &mut self,
        node_id: NodeId,
        session_id: SessionId,
        status: NodeStatus,
        reason: Option<String>,
    ) {
        if self.live.get(&node_id) == Some(&session_id) {
            self.set_status(node_id, status, reason);
        }
    }

    /// A session ended. If it was the node's live one, the node is offline;
    /// a superseded session's end changes nothing.
    pub fn session_closed(&mut self, now: Timestamp, node_id: NodeId, session_id: SessionId) {
        self.advance(now);
        if self.live.get(&node_id) == Some(&session_id) {
            self.live.remove(&node_id);
            self.set_status(node_id, NodeStatus::Offline, Some("disconnected".into()));
        }
    }

    /// An operator revoked the node: its live session closes with 4003.
    pub fn revoke(&mut self, node_id: NodeId) {
        if let Some(session_id) = self.live.remove(&node_id) {
            self.out.push_back(HubOutput::Terminate {
                session_id,
                code: close::REVOKED,
                reason: "node revoked",
            });
            self.set_status(node_id, NodeStatus::Offline, Some("revoked".into()));
        }
    }

    /// The node is now held by another central instance (scale-out,
    /// DESIGN.md §5). Its session here, if any, closes with 4002, and the hub
    /// forgets the node's open commands without changing their state: the
    /// instance that holds the node now loads them from the store and
    /// reports what becomes of them. No status change either: the new holder
    /// reports the node online, and an offline written here could land after it.
    pub fn release(&mut self, node_id: NodeId) {
        if let Some(session_id) = self.live.remove(&node_id) {
            self.out.push_back(HubOutput::Terminate {
                session_id,
                code: close::SUPERSEDED,
                reason: "superseded by a connection to another central instance",
            });
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

    /// Submits a command for a node. `known` says whether the node is
    /// registered and not revoked. Delivered at once if the node is online,
    /// queued otherwise.
    pub fn submit(
        &mut self,
        now: Timestamp,
        node_id: NodeId,
        request_id: RequestId,
        message: CentralMessage,
        timeout: Duration,
        known: bool,
    ) -> CommandState {
        self.advance(now);
        if self.commands.contains_key(&request_id) {
            return self.commands[&request_id].state;
        }
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
            },
        );
        self.changed(request_id, node_id, state);
        if state == CommandState::Undeliverable {
            return state;
        }
        match online {
            Some(session_id) => self.deliver(request_id, session_id),
            None => {
                self.queued
                    .entry(node_id)
                    .or_default()
                    .push_back(request_id);
                self.timers.set(
                    HubTimer::Command(request_id),
                    self.now + self.config.command_ttl,
                );
            }
        }
        self.commands[&request_id].state
    }

    /// A node's result arrived (and the driver is storing it).
    pub fn result_received(
        &mut self,
        now: Timestamp,
        node_id: NodeId,
        result: &CommandResult,
    ) -> ResultOutcome {
        self.advance(now);
        let Some(command) = self.commands.get_mut(&result.request_id) else {
            return ResultOutcome::Unknown;
        };
        if command.node_id != node_id {
            // A node cannot answer another node's command.
            return ResultOutcome::Unknown;
        }
        if command.state.is_terminal() {
            return ResultOutcome::Duplicate;
        }
        let state = CommandState::of_result(result);
        command.state = state;
        self.timers.stop(&HubTimer::Command(result.request_id));
        self.changed(result.request_id, node_id, state);
        ResultOutcome::Recorded(state)
    }

    /// Drains every live session, spreading reconnections at the configured rate.
    pub fn drain(&mut self, now: Timestamp) {
        self.advance(now);
        let rate = u64::from(self.config.drain_rate_per_sec.max(1));
        let count = u64::try_from(self.live.len()).unwrap_or(u64::MAX);
        // The fleet returns over [min, min + count / rate]: at the admission
        // rate central can take.
        let window =
            self.config.drain_min + Duration::from_millis(count.saturating_mul(1000) / rate);
        let sessions: Vec<SessionId> = self.live.values().copied().collect();
        for session_id in sessions {
            let reconnect_after = self.rng.duration_between(self.config.drain_min, window);
            self.out.push_back(HubOutput::Drain {
                session_id,
                reconnect_after,
            });
        }
    }

    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.advance(now);
        while let Some(HubTimer::Command(request_id)) = self.timers.pop_due(self.now) {
            let Some(command) = self.commands.get_mut(&request_id) else {
                continue;
            };
            let node_id = command.node_id;
            let state = match command.state {
                CommandState::Queued => CommandState::Expired,
                CommandState::Sent => CommandState::TimedOut,
                _ => continue,
            };
            command.state = state;
            if let Some(queue) = self.queued.get_mut(&node_id) {
                queue.retain(|id| *id != request_id);
            }
            self.changed(request_id, node_id, state);
        }
    }

    pub fn poll_output(&mut self) -> Option<HubOutput> {
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.timers.next()
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

    /// A tracked command.
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

    /// Forgets terminal commands (the store keeps them); call periodically.
    pub fn forget_finished(&mut self) {
        self.commands.retain(|_, c| !c.state.is_terminal());
    }

    fn deliver(&mut self, request_id: RequestId, session_id: SessionId) {
        let Some(command) = self.commands.get_mut(&request_id) else {
            return;
        };
        if command.state != CommandState::Queued {
            return;
        }
        command.state = CommandState::Sent;
        let node_id = command.node_id;
        let deadline = self.now + command.timeout + self.config.result_grace;
        let message = command.message.clone();
        self.timers.set(HubTimer::Command(request_id), deadline);
        self.out.push_back(HubOutput::Deliver {
            session_id,
            message,
        });
        self.changed(request_id, node_id, CommandState::Sent);
    }

    fn changed(&mut self, request_id: RequestId, node_id: NodeId, state: CommandState) {
        self.out.push_back(HubOutput::CommandChanged {
            request_id,
            node_id,
            state,
        });
    }

    fn set_status(&mut self, node_id: NodeId, status: NodeStatus, reason: Option<String>) {
        if self.status.insert(node_id, status) != Some(status) {
            self.out.push_back(HubOutput::StatusChanged {
                node_id,
                status,
                reason,
            });
        }
    }

    fn advance(&mut self, now: Timestamp) {
        self.now = self.now.max(now);
    }
}
