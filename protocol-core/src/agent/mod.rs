//! The agent's connection engine: one per agent (or per virtual node in the
//! simulator). Sans-IO in the style of quinn-proto: the driver feeds inputs
//! and timeouts with the current time, then drains outputs.
//!
//! ```text
//! loop {
//!     engine.handle_input(now, input)  |  engine.handle_timeout(now)
//!     while let Some(output) = engine.poll_output() { perform(output) }
//!     sleep until engine.poll_timeout()
//! }
//! ```

mod buffers;
mod commands;
mod config;
mod context;
mod io;
mod lifecycle;
mod sampling;
mod snapshot;

use statig::blocking::{IntoStateMachineExt, StateMachine};

pub use config::AgentConfig;
pub use context::{AgentTimer, Transport};
pub use io::{
    AgentEvent, AgentInput, AgentOutput, CommandOutcome, Decision, DialFailure, Disconnect, Task,
};
pub use lifecycle::State as ConnectionState;
pub use snapshot::{AgentSnapshot, RecordedRequest};

use context::Ctx;
use lifecycle::{Event, Lifecycle};

use crate::codec::decode;
use crate::transport::Epoch;
use crate::wire::CentralMessage;
use crate::{SessionId, Timestamp, WallAnchor};

/// The agent engine. Cloning it forks the whole engine (the model checker
/// explores both branches of every choice).
#[derive(Clone)]
pub struct AgentEngine {
    machine: StateMachine<Lifecycle>,
    ctx: Ctx,
}

impl std::fmt::Debug for AgentEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentEngine")
            .field("state", self.machine.state())
            .field("epoch", &self.ctx.epoch)
            .finish_non_exhaustive()
    }
}

impl AgentEngine {
    /// An idle engine; give it a [`AgentInput::WallClock`] and [`AgentInput::Start`].
    pub fn new(config: AgentConfig) -> Self {
        let mut ctx = Ctx::new(config);
        let mut machine = Lifecycle.state_machine();
        machine.init_with_context(&mut ctx);
        Self { machine, ctx }
    }

    /// Feeds one input observed at `now`.
    pub fn handle_input(&mut self, now: Timestamp, input: AgentInput) {
        self.advance(now);
        match input {
            AgentInput::Start => self.dispatch(Event::Start),
            AgentInput::Shutdown => self.dispatch(Event::Shutdown),
            AgentInput::WallClock(wall) => self.ctx.anchor = WallAnchor::new(now, wall),
            AgentInput::TokenMinted { token, lifetime } => {
                self.ctx.token = Some(token);
                self.ctx.token_lifetime = lifetime;
                self.dispatch(Event::TokenMinted);
            }
            AgentInput::Connected { epoch } if self.current(epoch) => {
                self.dispatch(Event::Connected)
            }
            AgentInput::DialFailed { epoch, reason } if self.current(epoch) => {
                self.dispatch(Event::DialFailed(reason));
            }
            AgentInput::Closed { epoch, code } if self.current(epoch) => {
                self.dispatch(Event::Closed(code));
            }
            AgentInput::UpdateOnProbation { deadline } => {
                let left = self.ctx.anchor.wall_at(self.ctx.now).until(deadline);
                self.ctx.on_probation = true;
                self.ctx.arm_in(AgentTimer::UpdateProbation, left);
            }
            // Closing would only replay the same burst into the same full
            // queue (a livelock on a slow link after an outage): the frame
            // is dropped instead, and what needed an ack stays unacked and is
            // sent again after two telemetry intervals.
            AgentInput::SendQueueFull { epoch } if self.current(epoch) => {
                self.ctx.event(AgentEvent::FrameDropped { epoch });
            }
            AgentInput::Frame { epoch, text } if self.current(epoch) => self.on_frame(&text),
            AgentInput::FrameFault { epoch, fault } if self.current(epoch) => {
                self.dispatch(Event::FrameFault(fault));
            }
            AgentInput::Connected { .. }
            | AgentInput::DialFailed { .. }
            | AgentInput::Closed { .. }
            | AgentInput::SendQueueFull { .. }
            | AgentInput::Frame { .. }
            | AgentInput::FrameFault { .. } => {} // a stale transport's leftovers
            AgentInput::TelemetrySample(data) => {
                if self.is_running() {
                    self.ctx.telemetry_sampled(data);
                }
            }
            AgentInput::HealthReport {
                request_id: Some(request_id),
                checks,
                details,
            } => self.ctx.health_check_finished(request_id, checks, details),
            AgentInput::HealthReport {
                request_id: None,
                checks,
                details,
            } => {
                if self.is_running() {
                    self.ctx.health_reported(checks, details);
                }
            }
            AgentInput::CommandFinished {
                request_id,
                outcome,
            } => self.ctx.command_finished(request_id, outcome),
            AgentInput::LogLine {
                request_id,
                service,
                line,
            } => {
                let message = crate::wire::LogLine {
                    line,
                    timestamp: self.ctx.wall(),
                    request_id,
                    service: Some(service),
                };
                self.ctx.send(message);
            }
        }
    }

    /// Fires every timer due at `now`. A call with nothing due does nothing.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.advance(now);
        while let Some(timer) = self.ctx.timers.pop_due(now) {
            match timer {
                AgentTimer::Telemetry => self.ctx.telemetry_due(),
                AgentTimer::Health => self.ctx.health_due(),
                AgentTimer::Command(id) => self.ctx.command_deadline(id),
                AgentTimer::UpdateProbation => {
                    self.ctx.on_probation = false;
                    self.ctx.emit(AgentOutput::RollBackUpdate);
                }
                other => self.dispatch(Event::Timer(other)),
            }
        }
    }

    /// The next output for the driver. Drain until `None` after every `handle_*`.
    pub fn poll_output(&mut self) -> Option<AgentOutput> {
        self.ctx.out.pop_front()
    }

    /// When `handle_timeout` must be called next.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.ctx.timers.next()
    }

    /// The lifecycle state.
    pub fn state(&self) -> ConnectionState {
        *self.machine.state()
    }

    /// The current transport epoch.
    pub fn epoch(&self) -> Epoch {
        self.ctx.epoch
    }

    /// The session central named in its last `welcome`.
    pub fn session(&self) -> Option<SessionId> {
        self.ctx.session
    }

    /// Every armed timer, for tests and model checkers.
    pub fn timers(&self) -> impl Iterator<Item = (&AgentTimer, Timestamp)> {
        self.ctx.timers.iter()
    }

    /// Commands running now.
    pub fn running_commands(&self) -> usize {
        self.ctx.commands.running
    }

    /// Results waiting for central's ack.
    pub fn outbox_len(&self) -> usize {
        self.ctx.commands.outbox.len()
    }

    /// Telemetry samples waiting for central's ack.
    pub fn buffered_telemetry(&self) -> usize {
        self.ctx.telemetry.len()
    }

    /// Telemetry samples sent on this connection and not yet acked (at
    /// most the window `welcome` granted).
    pub fn telemetry_in_flight(&self) -> usize {
        self.ctx.telemetry.in_flight()
    }

    /// How many backlog samples may be in flight now (what central granted).
    pub fn telemetry_window(&self) -> usize {
        self.ctx.telemetry.window()
    }

    /// Telemetry samples dropped from the full buffer since start.
    pub fn dropped_telemetry(&self) -> u64 {
        self.ctx.telemetry.total_drops()
    }

    /// Periodic health reports waiting for central's ack (or a connection).
    pub fn pending_health(&self) -> usize {
        self.ctx.pending_health.len()
    }

    /// Alerts waiting for central's ack (or a connection).
    pub fn pending_alerts(&self) -> usize {
        self.ctx.pending_alerts.len()
    }

    /// Invalid messages received from central since start.
    pub fn invalid_messages(&self) -> u64 {
        self.ctx.invalid.total()
    }

    /// Requests remembered for dedupe.
    pub fn recorded_requests(&self) -> usize {
        self.ctx.commands.entries.len()
    }

    fn advance(&mut self, now: Timestamp) {
        // Time never runs backwards inside the engine, whatever the driver says.
        self.ctx.now = self.ctx.now.max(now);
    }

    fn current(&self, epoch: Epoch) -> bool {
        epoch == self.ctx.epoch && self.ctx.transport != Transport::None
    }

    fn is_running(&self) -> bool {
        !matches!(
            self.state(),
            ConnectionState::Idle {} | ConnectionState::Stopped {} | ConnectionState::Revoked {}
        )
    }

    fn dispatch(&mut self, event: Event) {
        self.machine.handle_with_context(&event, &mut self.ctx);
    }

    fn on_frame(&mut self, text: &str) {
        let message = match decode::<CentralMessage>(text, &self.ctx.config.limits) {
            Ok(message) => message,
            Err(error) => {
                self.ctx.event(AgentEvent::InvalidFrame { error });
                if self.ctx.invalid.record(self.ctx.now) {
                    self.dispatch(Event::TooManyInvalid);
                }
                return;
            }
        };
        self.dispatch(Event::Inbound);
        let established = self.ctx.established;
        let message = match message.into_command() {
            Ok(command) if established => return self.ctx.receive_command(command),
            // Nothing runs before the session is established.
            Ok(command) => return self.unexpected(command.message_type()),
            Err(message) => message,
        };
        match message {
            CentralMessage::Welcome(welcome) => self.dispatch(Event::Welcome(welcome)),
            CentralMessage::Ping(ping) if established => {
                self.ctx.send(crate::wire::Pong {
                    timestamp: ping.timestamp,
                });
            }
            CentralMessage::Pong(pong) => self.dispatch(Event::Pong(pong.timestamp)),
            CentralMessage::Drain(drain) => {
                self.dispatch(Event::Drain(std::time::Duration::from_millis(
                    drain.reconnect_after,
                )));
            }
            CentralMessage::Ack(ack) if established => {
                if let Some(request_id) = ack.request_id {
                    self.ctx.result_acked(request_id);
                }
                if let Some(timestamp) = ack.telemetry {
                    self.ctx.telemetry_acked(timestamp, ack.telemetry_window);
                }
                self.ctx.record_acked(&ack);
            }
            CentralMessage::StreamLogs(s) if established => {
                self.ctx.emit(AgentOutput::StreamLogs {
                    request_id: s.request_id,
                    service: s.service,
                    follow: s.follow,
                    lines: s.lines,
                });
            }
            // Valid, but not now (before `welcome`).
            other => self.unexpected(crate::codec::Message::message_type(&other)),
        }
    }

    fn unexpected(&mut self, message_type: &'static str) {
        self.ctx.event(AgentEvent::Unexpected { message_type });
        if self.ctx.invalid.record(self.ctx.now) {
            self.dispatch(Event::TooManyInvalid);
        }
    }
}
