//! The agent engine's state beside the lifecycle machine, and the small
//! operations every part of the engine uses (send, arm, emit).

use std::collections::VecDeque;
use std::time::Duration;

use super::buffers::{AckQueue, TelemetryBuffer};
use super::commands::CommandTable;
use super::config::{AgentConfig, clamp_interval};
use super::io::{AgentEvent, AgentOutput};
use crate::alerts::AlertEngine;
use crate::backoff::Backoff;
use crate::rng::Prng;
use crate::timer::Timers;
use crate::transport::{CloseCode, Epoch, InvalidBudget, SendClass};
use crate::wire::{AgentMessage, Intervals, NodeStatus, Status};
use crate::{RequestId, SessionId, Timestamp, WallAnchor, WallTime};

/// The agent engine's named timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AgentTimer {
    /// A dial must connect or fail by then.
    Connect,
    /// The backoff delay ends: dial again.
    Reconnect,
    /// `welcome` must have arrived by then.
    Welcome,
    /// Send the next `ping`.
    Heartbeat,
    /// The `pong` must have arrived by then.
    Pong,
    /// Two heartbeat intervals without inbound traffic: the transport is dead.
    Silence,
    /// The connection has been healthy long enough to reset the backoff.
    HealthyReset,
    /// Ask for a fresh token and send `token_refresh`.
    TokenRefresh,
    /// Update the connection's TLS traffic keys (spec §11).
    KeyUpdate,
    /// The connection has lived its span: close it and connect afresh.
    ConnectionAge,
    /// Take the next telemetry sample.
    Telemetry,
    /// Run the periodic health checks.
    Health,
    /// A command's deadline: approval window, timeout, or kill grace.
    Command(RequestId),
    /// A newly installed agent version must have connected by then, or it
    /// is rolled back.
    UpdateProbation,
}

/// Whether there is a transport, and in what state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    None,
    Dialing,
    Open,
}

#[derive(Clone)]
pub(crate) struct Ctx {
    pub(crate) config: AgentConfig,
    pub(crate) rng: Prng,
    pub(crate) timers: Timers<AgentTimer>,
    pub(crate) out: VecDeque<AgentOutput>,
    pub(crate) now: Timestamp,
    pub(crate) anchor: WallAnchor,
    pub(crate) epoch: Epoch,
    pub(crate) transport: Transport,
    pub(crate) established: bool,
    /// A newly installed version that has not connected yet.
    pub(crate) on_probation: bool,
    pub(crate) backoff: Backoff,
    /// A delay decided by what ended the connection (drain, 4002, 503…),
    /// used instead of the ordinary schedule by the next backoff.
    pub(crate) next_delay: Option<Duration>,
    /// A freshly minted token not yet used.
    pub(crate) token: Option<String>,
    pub(crate) token_lifetime: Duration,
    pub(crate) intervals: Intervals,
    pub(crate) session: Option<SessionId>,
    /// The `ping` awaiting its `pong`: its timestamp and when it was sent.
    pub(crate) ping: Option<(u64, Timestamp)>,
    pub(crate) invalid: InvalidBudget,
    pub(crate) commands: CommandTable,
    pub(crate) telemetry: TelemetryBuffer,
    pub(crate) alerts: AlertEngine,
    /// Alerts until central acks them (or, from a central that does not
    /// ack, until sent).
    pub(crate) pending_alerts: AckQueue<crate::wire::Alert>,
    /// Periodic health reports until central acks them.
    pub(crate) pending_health: AckQueue<crate::wire::Health>,
    /// The session's central acks health and alerts (`welcome.features`).
    pub(crate) central_acks: bool,
    pub(crate) status: (NodeStatus, Option<String>),
    pub(crate) status_sent: Option<NodeStatus>,
}

impl Ctx {
    pub(crate) fn new(config: AgentConfig) -> Self {
        Self {
            rng: Prng::new(config.seed),
            timers: Timers::default(),
            out: VecDeque::new(),
            now: Timestamp::ZERO,
            anchor: WallAnchor::new(Timestamp::ZERO, WallTime::UNIX_EPOCH),
            epoch: Epoch::default(),
            transport: Transport::None,
            established: false,
            on_probation: false,
            backoff: Backoff::default(),
            next_delay: None,
            token: None,
            token_lifetime: Duration::ZERO,
            intervals: config.intervals,
            session: None,
            ping: None,
            invalid: InvalidBudget::default(),
            commands: CommandTable::default(),
            telemetry: TelemetryBuffer::new(config.telemetry_buffer),
            alerts: AlertEngine::new(config.alert_rules.clone()),
            pending_alerts: AckQueue::new(config.alert_buffer),
            pending_health: AckQueue::new(config.health_buffer),
            central_acks: false,
            status: (NodeStatus::Online, None),
            status_sent: None,
            config,
        }
    }

    pub(crate) fn wall(&self) -> WallTime {
        self.anchor.wall_at(self.now)
    }

    pub(crate) fn emit(&mut self, output: AgentOutput) {
        self.out.push_back(output);
    }

    pub(crate) fn event(&mut self, event: AgentEvent) {
        self.out.push_back(AgentOutput::Event(event));
    }

    /// Sends on the established session; a no-op otherwise (callers keep
    /// what must survive an outage in their own buffers).
    /// Sends `message` in the class its type has (what was just taken is
    /// `Live`); false when no session is up.
    pub(crate) fn send(&mut self, message: impl Into<AgentMessage>) -> bool {
        let message = message.into();
        let class = match &message {
            AgentMessage::Ping(_)
            | AgentMessage::Pong(_)
            | AgentMessage::Status(_)
            | AgentMessage::TokenRefresh(_) => SendClass::Control,
            AgentMessage::CommandResult(_) => SendClass::Commands,
            _ => SendClass::Live,
        };
        self.send_as(message, class)
    }

    /// Sends `message` in `class`; false when no session is up.
    pub(crate) fn send_as(&mut self, message: impl Into<AgentMessage>, class: SendClass) -> bool {
        if !self.established {
            return false;
        }
        self.out.push_back(AgentOutput::Send {
            epoch: self.epoch,
            message: message.into(),
            class,
        });
        true
    }

    pub(crate) fn arm_in(&mut self, timer: AgentTimer, after: Duration) {
        self.timers.set(timer, self.now + after);
    }

    pub(crate) fn close(&mut self, code: CloseCode, reason: &'static str) {
        if self.transport != Transport::None {
            self.out.push_back(AgentOutput::Close {
                epoch: self.epoch,
                code,
                reason,
                linger: self.config.close_linger,
            });
            self.transport = Transport::None;
        }
    }

    pub(crate) fn heartbeat(&self) -> Duration {
        clamp_interval(self.intervals.heartbeat)
    }

    /// Sends the node's status if it changed since last sent on this session.
    pub(crate) fn send_status_if_changed(&mut self) {
        let (status, reason) = self.status.clone();
        if self.status_sent == Some(status) || !self.established {
            return;
        }
        let message = Status {
            node_id: self.config.node_id,
            status,
            timestamp: self.wall(),
            reason,
        };
        if self.send(message) {
            self.status_sent = Some(status);
        }
    }
}
