//! The connection lifecycle as a hierarchical state machine (statig):
//!
//! ```text
//! idle ─start─▶ ┌ disconnected ──────────────┐   ┌ connected ─────────────────────────┐
//!               │ connecting ◀──▶ backoff    │──▶│ awaiting_welcome ──▶ established   │
//!               └────────────────────────────┘◀──└────────────────────────────────────┘
//!                         └──────── shutdown ──▶ stopped        close 4003 ──▶ revoked
//! ```
//!
//! Handlers decide; `Ctx` holds the data and performs the bookkeeping.

use std::time::Duration;

use statig::prelude::*;

use super::context::{AgentTimer, Ctx, Transport};
use super::io::{AgentEvent, AgentOutput, DialFailure, Disconnect};
use crate::transport::{CloseCode, FrameFault};
use crate::wire::{Hello, NodeStatus, Ping, Status, TokenRefresh, Welcome};

/// What the lifecycle reacts to. Frames are decoded and filtered by the
/// engine first; only what concerns the connection arrives here.
#[derive(Debug)]
pub(crate) enum Event {
    Start,
    Shutdown,
    TokenMinted,
    Connected,
    DialFailed(DialFailure),
    Closed(Option<CloseCode>),
    /// The transport could not read a frame of central's.
    FrameFault(FrameFault),
    Welcome(Welcome),
    Drain(Duration),
    Pong(u64),
    /// Any valid message from central (liveness).
    Inbound,
    /// Central sent too many invalid messages.
    TooManyInvalid,
    Timer(AgentTimer),
}

/// The reconnect delay after closing an aged connection.
const AGED_RECONNECT: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(5));

/// The lifecycle's shared storage: none; everything lives in the context.
#[derive(Debug, Default, Clone)]
pub(crate) struct Lifecycle;

#[state_machine(
    initial = "State::idle()",
    state(derive(Debug, Clone, Copy, PartialEq, Eq, Hash)),
    superstate(derive(Debug))
)]
impl Lifecycle {
    #[state]
    fn idle(context: &mut Ctx, event: &Event) -> Outcome<State> {
        match event {
            Event::Start => {
                context.start_sampling();
                Transition(State::connecting())
            }
            Event::Shutdown => Transition(State::stopped()),
            _ => Handled,
        }
    }

    #[superstate]
    fn disconnected(event: &Event) -> Outcome<State> {
        match event {
            Event::Shutdown => Transition(State::stopped()),
            _ => Handled,
        }
    }

    #[state(
        superstate = "disconnected",
        entry_action = "enter_connecting",
        exit_action = "exit_connecting"
    )]
    fn connecting(context: &mut Ctx, event: &Event) -> Outcome<State> {
        match event {
            Event::TokenMinted if context.transport == Transport::None => {
                if let Some(token) = context.token.take() {
                    context.transport = Transport::Dialing;
                    let epoch = context.epoch;
                    let hello = Hello {
                        agent_version: context.config.agent_version.clone(),
                        features: context.config.features.clone(),
                    };
                    context.emit(AgentOutput::Dial {
                        epoch,
                        token,
                        hello,
                    });
                }
                Handled
            }
            Event::Connected => {
                context.transport = Transport::Open;
                Transition(State::awaiting_welcome())
            }
            Event::DialFailed(reason) => {
                context.transport = Transport::None;
                context.next_delay = Some(match reason {
                    DialFailure::Unauthorized => context
                        .backoff
                        .next_capped_delay(&context.config.backoff, &mut context.rng),
                    DialFailure::Unavailable { retry_after } => {
                        let spread = (*retry_after / 2).max(Duration::from_secs(1));
                        *retry_after + context.rng.duration_between(Duration::ZERO, spread)
                    }
                    DialFailure::Network => context
                        .backoff
                        .next_delay(&context.config.backoff, &mut context.rng),
                });
                Transition(State::backoff())
            }
            Event::Timer(AgentTimer::Connect) => {
                context.close(CloseCode::GoingAway, "connect timeout");
                Transition(State::backoff())
            }
            _ => Super,
        }
    }

    #[action]
    fn enter_connecting(context: &mut Ctx) {
        context.epoch = context.epoch.next();
        context.transport = Transport::None;
        let (epoch, attempt) = (context.epoch, context.backoff.attempt());
        context.event(AgentEvent::Connecting { epoch, attempt });
        // Covers minting the token too: a driver that never answers does not
        // stall the engine.
        context.arm_in(AgentTimer::Connect, context.config.connect_timeout);
        // Every dial needs a fresh token: central refuses a reused `jti`.
        let lifetime = context.config.token_lifetime;
        context.emit(AgentOutput::MintToken { lifetime });
    }

    #[action]
    fn exit_connecting(context: &mut Ctx) {
        context.timers.stop(&AgentTimer::Connect);
    }

    #[state(
        superstate = "disconnected",
        entry_action = "enter_backoff",
        exit_action = "exit_backoff"
    )]
    fn backoff(event: &Event) -> Outcome<State> {
        match event {
            Event::Timer(AgentTimer::Reconnect) => Transition(State::connecting()),
            _ => Super,
        }
    }

    #[action]
    fn enter_backoff(context: &mut Ctx) {
        let delay = match context.next_delay.take() {
            Some(delay) => delay,
            None => context
                .backoff
                .next_delay(&context.config.backoff, &mut context.rng),
        };
        context.arm_in(AgentTimer::Reconnect, delay);
        let attempt = context.backoff.attempt();
        context.event(AgentEvent::BackoffScheduled { delay, attempt });
    }

    #[action]
    fn exit_backoff(context: &mut Ctx) {
        context.timers.stop(&AgentTimer::Reconnect);
    }

    /// A transport is open: closes, shutdown and revocation are handled alike
    /// in both substates.
    #[superstate]
    fn connected(context: &mut Ctx, event: &Event) -> Outcome<State> {
        match event {
            Event::Closed(code) => {
                context.transport = Transport::None;
                let epoch = context.epoch;
                context.event(AgentEvent::Disconnected {
                    epoch,
                    reason: Disconnect::Closed(*code),
                });
                match *code {
                    Some(CloseCode::Revoked) => return Transition(State::revoked()),
                    Some(CloseCode::Superseded) => {
                        // Another connection of this node is live: never fight it.
                        let delay = context
                            .backoff
                            .next_capped_delay(&context.config.backoff, &mut context.rng);
                        context.next_delay = Some(delay);
                    }
                    _ => {}
                }
                Transition(State::backoff())
            }
            Event::TooManyInvalid => {
                context.drop_connection(CloseCode::Policy, Disconnect::Invalid)
            }
            Event::FrameFault(fault) => {
                context.drop_connection(fault.close_code(), Disconnect::Fault(*fault))
            }
            Event::Shutdown => Transition(State::stopped()),
            _ => Handled,
        }
    }

    #[state(
        superstate = "connected",
        entry_action = "enter_awaiting_welcome",
        exit_action = "exit_awaiting_welcome"
    )]
    fn awaiting_welcome(context: &mut Ctx, event: &Event) -> Outcome<State> {
        match event {
            Event::Welcome(welcome) if welcome.node_id == context.config.node_id => {
                context.session = Some(welcome.session_id);
                context.intervals = welcome.intervals;
                context
                    .telemetry
                    .start_connection(welcome.telemetry_window());
                context.central_acks = welcome
                    .features
                    .iter()
                    .any(|f| f == crate::wire::Feature::Acks.as_str());
                Transition(State::established())
            }
            Event::Welcome(_) => {
                context.drop_connection(CloseCode::ProtocolError, Disconnect::NoWelcome)
            }
            Event::Timer(AgentTimer::Welcome) => {
                context.drop_connection(CloseCode::ProtocolError, Disconnect::NoWelcome)
            }
            _ => Super,
        }
    }

    #[action]
    fn enter_awaiting_welcome(context: &mut Ctx) {
        context.arm_in(AgentTimer::Welcome, context.config.welcome_timeout);
    }

    #[action]
    fn exit_awaiting_welcome(context: &mut Ctx) {
        context.timers.stop(&AgentTimer::Welcome);
    }

    #[state(
        superstate = "connected",
        entry_action = "enter_established",
        exit_action = "exit_established"
    )]
    fn established(context: &mut Ctx, event: &Event) -> Outcome<State> {
        match event {
            Event::Shutdown => {
                // Said here, while the session is still up: by the time the
                // stopped state is entered this one has been left.
                context.send(Status {
                    node_id: context.config.node_id,
                    status: NodeStatus::Offline,
                    timestamp: context.wall(),
                    reason: Some("agent shutting down".into()),
                });
                Transition(State::stopped())
            }
            Event::Inbound => {
                let silence = context.heartbeat() * 2;
                context.arm_in(AgentTimer::Silence, silence);
                Handled
            }
            Event::Timer(AgentTimer::Heartbeat) => {
                let timestamp = u64::try_from(context.wall().unix_millis()).unwrap_or(0);
                context.ping = Some((timestamp, context.now));
                context.send(Ping { timestamp });
                context.arm_in(AgentTimer::Pong, context.config.pong_timeout);
                let heartbeat = context.heartbeat();
                context.arm_in(AgentTimer::Heartbeat, heartbeat);
                Handled
            }
            Event::Pong(timestamp) => {
                if let Some((sent, at)) = context.ping
                    && sent == *timestamp
                {
                    context.ping = None;
                    context.timers.stop(&AgentTimer::Pong);
                    let rtt_ms = u64::try_from(context.now.saturating_since(at).as_millis())
                        .unwrap_or(u64::MAX);
                    context.event(AgentEvent::RoundTrip { rtt_ms });
                }
                Handled
            }
            Event::Timer(AgentTimer::Pong | AgentTimer::Silence) => {
                context.drop_connection(CloseCode::GoingAway, Disconnect::Dead)
            }
            Event::Timer(AgentTimer::HealthyReset) => {
                context.backoff.reset();
                Handled
            }
            Event::Timer(AgentTimer::TokenRefresh) => {
                let lifetime = context.config.token_lifetime;
                context.emit(AgentOutput::MintToken { lifetime });
                Handled
            }
            Event::TokenMinted => {
                if let Some(token) = context.token.take() {
                    context.send(TokenRefresh { token });
                    context.arm_token_refresh();
                }
                Handled
            }
            Event::Drain(delay) => {
                context.next_delay = Some(*delay);
                context.drop_connection(CloseCode::Normal, Disconnect::Drained)
            }
            Event::Timer(AgentTimer::KeyUpdate) => {
                let epoch = context.epoch;
                context.emit(AgentOutput::UpdateTrafficKeys { epoch });
                context.arm_in(AgentTimer::KeyUpdate, context.config.key_update_interval);
                Handled
            }
            Event::Timer(AgentTimer::ConnectionAge) => {
                // A planned reconnect, not a failure: soon, not after a backoff.
                let delay = context
                    .rng
                    .duration_between(AGED_RECONNECT.0, AGED_RECONNECT.1);
                context.next_delay = Some(delay);
                context.drop_connection(CloseCode::Normal, Disconnect::Aged)
            }
            _ => Super,
        }
    }

    #[action]
    fn enter_established(context: &mut Ctx) {
        context.established = true;
        if std::mem::take(&mut context.on_probation) {
            // This version reached central: it stays.
            context.timers.stop(&AgentTimer::UpdateProbation);
            context.emit(AgentOutput::ConfirmUpdate);
        }
        context.status_sent = None;
        let epoch = context.epoch;
        if let Some(session_id) = context.session {
            context.event(AgentEvent::Established { epoch, session_id });
        }
        let heartbeat = context.heartbeat();
        context.arm_in(AgentTimer::Heartbeat, heartbeat);
        context.arm_in(AgentTimer::Silence, heartbeat * 2);
        context.arm_in(AgentTimer::HealthyReset, context.config.backoff.reset_after);
        context.arm_token_refresh();
        context.arm_key_rotation();
        context.rearm_sampling();
        context.send_status_if_changed();
        context.resend_outbox();
        context.send_telemetry();
        context.flush_records();
    }

    #[action]
    fn exit_established(context: &mut Ctx) {
        context.established = false;
        context.ping = None;
        for timer in [
            AgentTimer::Heartbeat,
            AgentTimer::Pong,
            AgentTimer::Silence,
            AgentTimer::HealthyReset,
            AgentTimer::TokenRefresh,
            AgentTimer::KeyUpdate,
            AgentTimer::ConnectionAge,
        ] {
            context.timers.stop(&timer);
        }
    }

    #[state(entry_action = "enter_revoked")]
    fn revoked(event: &Event) -> Outcome<State> {
        let _ = event;
        Handled
    }

    #[action]
    fn enter_revoked(context: &mut Ctx) {
        context.timers.retain(|_| false);
        context.event(AgentEvent::Revoked);
    }

    #[state(entry_action = "enter_stopped")]
    fn stopped(event: &Event) -> Outcome<State> {
        let _ = event;
        Handled
    }

    #[action]
    fn enter_stopped(context: &mut Ctx) {
        let epoch = context.epoch;
        if context.transport != Transport::None {
            context.event(AgentEvent::Disconnected {
                epoch,
                reason: Disconnect::Shutdown,
            });
        }
        context.close(CloseCode::Normal, "agent shutting down");
        context.timers.retain(|_| false);
        context.event(AgentEvent::Stopped);
    }
}

impl Ctx {
    /// Closes the transport on our side and backs off.
    fn drop_connection(&mut self, code: CloseCode, reason: Disconnect) -> Outcome<State> {
        let epoch = self.epoch;
        self.close(
            code,
            match reason {
                Disconnect::Dead => "liveness timeout",
                Disconnect::NoWelcome => "no valid welcome",
                Disconnect::Drained => "drained",
                Disconnect::Aged => "connection age",
                Disconnect::Invalid => "too many invalid messages",
                Disconnect::Fault(fault) => fault.reason(),
                Disconnect::Shutdown | Disconnect::Closed(_) => "closing",
            },
        );
        self.event(AgentEvent::Disconnected { epoch, reason });
        Transition(State::backoff())
    }

    /// Key updates every interval, and the connection's end of life: the
    /// maximum age plus a share of the spread drawn for this connection.
    fn arm_key_rotation(&mut self) {
        let interval = self.config.key_update_interval;
        if !interval.is_zero() {
            self.arm_in(AgentTimer::KeyUpdate, interval);
        }
        let age = self.config.max_connection_age;
        if !age.is_zero() {
            let spread = self
                .rng
                .duration_between(Duration::ZERO, self.config.connection_age_spread);
            self.arm_in(AgentTimer::ConnectionAge, age + spread);
        }
    }

    /// Ask for a new token at 80 % ± 5 % of the current one's lifetime.
    fn arm_token_refresh(&mut self) {
        if self.token_lifetime.is_zero() {
            return;
        }
        let lifetime = self.token_lifetime.as_secs_f64();
        let lo = lifetime * (self.config.refresh_at - self.config.refresh_jitter);
        let hi = lifetime * (self.config.refresh_at + self.config.refresh_jitter);
        let after = self.rng.duration_between(
            Duration::from_secs_f64(lo.max(0.0)),
            Duration::from_secs_f64(hi.max(0.0)),
        );
        self.arm_in(AgentTimer::TokenRefresh, after);
    }
}
