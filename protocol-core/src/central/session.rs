//! One central session: one authenticated connection of one node. It owns
//! the connection's liveness, token expiry, rate limit and invalid-message
//! accounting, checks that what the node sends is about itself, acks what
//! the driver has made durable, and sends what the hub routes to it.

use std::collections::VecDeque;
use std::time::Duration;

use crate::codec::{DecodeError, Limits, decode};
use crate::timer::Timers;
use crate::transport::{InvalidBudget, close};
use crate::wire::{
    Ack, AgentMessage, CentralMessage, CommandResult, Drain, Intervals, NodeStatus, Pong,
    Telemetry, Welcome,
};
use crate::{NodeId, PROTOCOL_VERSION, RequestId, SessionId, Timestamp, WallAnchor, WallTime};

use super::auth::AuthRejection;

/// Parameters of every session.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionConfig {
    pub intervals: Intervals,
    pub limits: Limits,
    /// Silence after which the node is offline: 2 × heartbeat + 15 s.
    pub offline_after: Duration,
    /// Invalid messages allowed per window before closing with 1008.
    pub invalid_limit: u32,
    pub invalid_window: Duration,
    /// Sustained messages per second, and the burst above it.
    pub rate_per_sec: u32,
    pub rate_burst: u32,
}

impl Default for SessionConfig {
    fn default() -> Self {
        let intervals = Intervals::default();
        Self::with_intervals(intervals)
    }
}

impl SessionConfig {
    /// The spec's parameters for these intervals.
    pub fn with_intervals(intervals: Intervals) -> Self {
        Self {
            intervals,
            limits: Limits::default(),
            offline_after: Duration::from_millis(intervals.heartbeat.saturating_mul(2))
                + Duration::from_secs(15),
            invalid_limit: 10,
            invalid_window: Duration::from_secs(60),
            rate_per_sec: 20,
            rate_burst: 200,
        }
    }
}

/// An input to a session.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionInput {
    /// A text frame from the node.
    Frame(String),
    /// A binary frame (never valid in this protocol).
    BinaryFrame,
    /// The transport closed.
    Closed { code: Option<u16> },
    /// The hub routes a message to this node.
    Deliver(CentralMessage),
    /// The driver made this result durable: ack it.
    ResultStored(RequestId),
    /// The driver made this sample durable: ack it.
    TelemetryStored(WallTime),
    /// The outcome of checking a `token_refresh` token.
    RefreshChecked(Result<WallTime, AuthRejection>),
    /// The hub (or an operator) ends the session with this code.
    Terminate { code: u16, reason: &'static str },
    /// Central is shutting down: ask the node to come back after `reconnect_after`.
    Drain { reconnect_after: Duration },
    /// A wall-clock reading at this call's `now`.
    WallClock(WallTime),
}

/// Work for the driver.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionOutput {
    /// Send this message to the node.
    Send(CentralMessage),
    /// Close the transport with this code; the session is over.
    Close { code: u16, reason: &'static str },
    /// Store this sample; answer with `TelemetryStored` once durable.
    /// (The large payloads are boxed: a session's output queue keeps its
    /// capacity, and every idle connection holds one.)
    StoreTelemetry(Box<Telemetry>),
    /// Record this result; answer with `ResultStored` once durable.
    StoreResult(Box<CommandResult>),
    /// Check this token (signature, claims, replay, same node); answer with
    /// `RefreshChecked`.
    CheckRefresh { token: String },
    /// The node reported its status.
    Status {
        status: NodeStatus,
        reason: Option<String>,
    },
    /// Anything else the node sent that central keeps (alert, health, log line).
    Record(Box<AgentMessage>),
    /// Something worth a log line or a metric.
    Event(SessionEvent),
}

/// Session events for logs and metrics.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionEvent {
    /// A message arrived (by type, for the messages-in metric).
    Received { message_type: &'static str },
    /// A frame was not a valid message; it was ignored.
    Invalid { error: DecodeError },
    /// A valid message broke a rule (e.g. names another node); ignored.
    Refused {
        message_type: &'static str,
        why: &'static str,
    },
    /// Over the rate limit; the message was dropped (the node re-sends what
    /// is not acked).
    RateLimited,
    /// The session ended.
    Ended {
        code: Option<u16>,
        reason: &'static str,
    },
}

/// Named deadlines of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SessionTimer {
    /// Nothing heard for `offline_after`.
    Liveness,
    /// The session's token expires.
    TokenExpiry,
}

/// One connection's engine.
#[derive(Debug, Clone)]
pub struct CentralSession {
    node_id: NodeId,
    session_id: SessionId,
    config: SessionConfig,
    anchor: WallAnchor,
    now: Timestamp,
    open: bool,
    timers: Timers<SessionTimer>,
    out: VecDeque<SessionOutput>,
    invalid: InvalidBudget,
    bucket: TokenBucket,
    refresh_pending: bool,
}

impl CentralSession {
    /// A session for an authenticated upgrade; queues `welcome` at once.
    pub fn new(
        now: Timestamp,
        wall: WallTime,
        node_id: NodeId,
        session_id: SessionId,
        token_expires_at: WallTime,
        config: SessionConfig,
    ) -> Self {
        let max_message_bytes = u32::try_from(config.limits.max_message_bytes).unwrap_or(u32::MAX);
        let mut session = Self {
            node_id,
            session_id,
            anchor: WallAnchor::new(now, wall),
            now,
            open: true,
            timers: Timers::default(),
            out: VecDeque::new(),
            invalid: InvalidBudget::new(config.invalid_limit, config.invalid_window),
            bucket: TokenBucket::new(now, config.rate_per_sec, config.rate_burst),
            refresh_pending: false,
            config,
        };
        session
            .out
            .push_back(SessionOutput::Send(CentralMessage::Welcome(Welcome {
                protocol_version: PROTOCOL_VERSION.to_owned(),
                session_id,
                node_id,
                server_time: wall,
                intervals: session.config.intervals,
                max_message_bytes,
            })));
        session
            .timers
            .set(SessionTimer::Liveness, now + session.config.offline_after);
        session.arm_token_expiry(token_expires_at);
        session
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    pub fn session_id(&self) -> SessionId {
        self.session_id
    }

    /// Whether the session still has a live transport.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Invalid messages received in all.
    pub fn invalid_messages(&self) -> u64 {
        self.invalid.total()
    }

    /// Every armed timer.
    pub fn timers(&self) -> impl Iterator<Item = (&SessionTimer, Timestamp)> {
        self.timers.iter()
    }

    pub fn handle_input(&mut self, now: Timestamp, input: SessionInput) {
        self.now = self.now.max(now);
        if !self.open {
            return; // nothing is sent on a closed session
        }
        match input {
            SessionInput::Frame(text) => self.on_frame(&text),
            SessionInput::BinaryFrame => self.on_invalid(DecodeError::NotAnObject),
            SessionInput::Closed { code } => {
                self.open = false;
                self.timers.retain(|_| false);
                self.event(SessionEvent::Ended {
                    code,
                    reason: "transport closed",
                });
            }
            SessionInput::Deliver(message) => self.send(message),
            SessionInput::ResultStored(request_id) => self.send(Ack::result(request_id)),
            SessionInput::TelemetryStored(timestamp) => self.send(Ack::telemetry(timestamp)),
            SessionInput::RefreshChecked(verdict) => {
                self.refresh_pending = false;
                match verdict {
                    Ok(expires_at) => self.arm_token_expiry(expires_at),
                    Err(_) => self.close(close::TOKEN_EXPIRED, "token refresh rejected"),
                }
            }
            SessionInput::Terminate { code, reason } => self.close(code, reason),
            SessionInput::Drain { reconnect_after } => {
                let reconnect_after =
                    u64::try_from(reconnect_after.as_millis()).unwrap_or(u64::MAX);
                self.send(Drain {
                    reconnect_after,
                    reason: Some("central is shutting down".into()),
                });
                self.close(close::GOING_AWAY, "central shutting down");
            }
            SessionInput::WallClock(wall) => self.anchor = WallAnchor::new(self.now, wall),
        }
    }

    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.now = self.now.max(now);
        while let Some(timer) = self.timers.pop_due(self.now) {
            match timer {
                SessionTimer::Liveness => self.close(close::GOING_AWAY, "node silent"),
                SessionTimer::TokenExpiry => self.close(close::TOKEN_EXPIRED, "token expired"),
            }
        }
    }

    pub fn poll_output(&mut self) -> Option<SessionOutput> {
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.timers.next()
    }

    fn send(&mut self, message: impl Into<CentralMessage>) {
        self.out.push_back(SessionOutput::Send(message.into()));
    }

    fn event(&mut self, event: SessionEvent) {
        self.out.push_back(SessionOutput::Event(event));
    }

    fn close(&mut self, code: u16, reason: &'static str) {
        if !self.open {
            return;
        }
        self.open = false;
        self.timers.retain(|_| false);
        self.out.push_back(SessionOutput::Close { code, reason });
        self.event(SessionEvent::Ended {
            code: Some(code),
            reason,
        });
    }

    fn arm_token_expiry(&mut self, expires_at: WallTime) {
        let wall_now = self.anchor.wall_at(self.now);
        let remaining_ms = expires_at
            .unix_millis()
            .saturating_sub(wall_now.unix_millis())
            .max(0);
        let remaining = Duration::from_millis(u64::try_from(remaining_ms).unwrap_or(0));
        self.timers
            .set(SessionTimer::TokenExpiry, self.now + remaining);
    }

    fn on_invalid(&mut self, error: DecodeError) {
        let too_big = matches!(error, DecodeError::TooLarge { .. });
        self.event(SessionEvent::Invalid { error });
        if too_big {
            self.close(close::TOO_BIG, "message too big");
        } else if self.invalid.record(self.now) {
            self.close(close::POLICY, "too many invalid messages");
        }
    }

    fn refuse(&mut self, message_type: &'static str, why: &'static str) {
        self.event(SessionEvent::Refused { message_type, why });
        if self.invalid.record(self.now) {
            self.close(close::POLICY, "too many invalid messages");
        }
    }

    fn on_frame(&mut self, text: &str) {
        if !self.bucket.take(self.now) {
            self.event(SessionEvent::RateLimited);
            if self.invalid.record(self.now) {
                self.close(close::POLICY, "over the message rate limit");
            }
            return;
        }
        let message = match decode::<AgentMessage>(text, &self.config.limits) {
            Ok(message) => message,
            Err(error) => return self.on_invalid(error),
        };
        let message_type = crate::codec::Message::message_type(&message);
        self.timers
            .set(SessionTimer::Liveness, self.now + self.config.offline_after);
        self.event(SessionEvent::Received { message_type });
        match message {
            AgentMessage::Ping(ping) => self.send(Pong {
                timestamp: ping.timestamp,
            }),
            AgentMessage::Pong(_) => {}
            AgentMessage::Telemetry(t) if t.node_id != self.node_id => {
                self.refuse(message_type, "telemetry for another node");
            }
            AgentMessage::Telemetry(t) => {
                self.out
                    .push_back(SessionOutput::StoreTelemetry(Box::new(t)));
            }
            AgentMessage::CommandResult(r) => {
                self.out.push_back(SessionOutput::StoreResult(Box::new(r)));
            }
            AgentMessage::Status(s) if s.node_id != self.node_id => {
                self.refuse(message_type, "status for another node");
            }
            AgentMessage::Status(s) => self.out.push_back(SessionOutput::Status {
                status: s.status,
                reason: s.reason,
            }),
            AgentMessage::Health(h) if h.node_id.is_some_and(|n| n != self.node_id) => {
                self.refuse(message_type, "health for another node");
            }
            AgentMessage::TokenRefresh(_) if self.refresh_pending => {
                self.refuse(message_type, "a refresh is already being checked");
            }
            AgentMessage::TokenRefresh(r) => {
                self.refresh_pending = true;
                self.out
                    .push_back(SessionOutput::CheckRefresh { token: r.token });
            }
            other @ (AgentMessage::Alert(_)
            | AgentMessage::Health(_)
            | AgentMessage::LogLine(_)) => {
                self.out.push_back(SessionOutput::Record(Box::new(other)));
            }
        }
    }
}

/// A token bucket on the monotonic clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct TokenBucket {
    /// Tokens in thousandths, so refill needs no floats.
    milli_tokens: u64,
    per_sec: u64,
    burst: u64,
    last: Timestamp,
}

impl TokenBucket {
    fn new(now: Timestamp, per_sec: u32, burst: u32) -> Self {
        Self {
            milli_tokens: u64::from(burst) * 1000,
            per_sec: u64::from(per_sec),
            burst: u64::from(burst),
            last: now,
        }
    }

    fn take(&mut self, now: Timestamp) -> bool {
        let elapsed_us = now.as_micros().saturating_sub(self.last.as_micros());
        self.last = now;
        let refill = elapsed_us.saturating_mul(self.per_sec) / 1000;
        self.milli_tokens = (self.milli_tokens.saturating_add(refill)).min(self.burst * 1000);
        if self.milli_tokens >= 1000 {
            self.milli_tokens -= 1000;
            true
        } else {
            false
        }
    }
}
