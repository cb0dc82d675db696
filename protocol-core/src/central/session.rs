//! One central session: one authenticated connection of one node. It owns
//! the connection's liveness, token expiry, rate limit and invalid-message
//! accounting, checks that what the node sends is about itself, acks what
//! the driver has made durable, and sends what the hub routes to it. It
//! talks to the hub only through [`ToHub`] and [`ToSession`].

use std::collections::VecDeque;
use std::time::Duration;

use crate::codec::{DecodeError, Limits, decode};
use crate::timer::Timers;
use crate::transport::{CloseCode, InvalidBudget};
use crate::wire::{
    Ack, AgentMessage, AlertState, CentralMessage, Drain, Feature, Features, Intervals, Pong,
    Severity, Telemetry, Welcome,
};
use crate::{AlertId, NodeId, PROTOCOL_VERSION, SessionId, Timestamp, WallAnchor, WallTime};

use super::alarm::Alarm;
use super::auth::TokenCheck;
use super::events::{ToHub, ToHubKind, ToSession, ToSessionKind};
use super::hub::Admission;
use super::pacing::TelemetryPacing;
use super::rate::TokenBucket;

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
    /// Telemetry samples a node may have in flight (sent, not yet acked),
    /// announced in `welcome`. Telemetry is paced by this window, not by
    /// the rate: a replay after an outage runs as fast as central stores.
    /// The store's refusals cut it and acks grow it back to this (spec §7.1).
    pub telemetry_window: u32,
    /// How long a sample the store refused is held before it is offered again.
    pub ingest_retry: Duration,
    /// How long a closing session waits for the node's close frame before
    /// the transport is dropped.
    pub close_linger: Duration,
    /// What central speaks beyond the `nap.v1` base, announced in `welcome`.
    pub features: Features,
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
            telemetry_window: 32,
            ingest_retry: Duration::from_secs(1),
            close_linger: Duration::from_secs(2),
            // What this central implements beyond the base.
            features: [Feature::Acks].into_iter().collect(),
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
    /// A text frame that is not UTF-8: the session closes with 1007.
    InvalidUtf8,
    /// The transport refused a frame over the size limit before reading it.
    FrameTooLarge { size: usize },
    /// The transport closed.
    Closed { code: Option<CloseCode> },
    /// An event from the hub.
    FromHub(ToSession),
    /// The driver made this sample durable: ack it.
    TelemetryStored(WallTime),
    /// The driver could not take this sample (its queue is full): the
    /// session holds it, offers it again after `ingest_retry`, and cuts the
    /// node's window (spec §7.1).
    TelemetryRefused(Box<Telemetry>),
    /// The driver stored the record asked for with
    /// [`SessionOutput::Record`] whose `ack` this is: ack it.
    RecordStored(RecordKey),
    /// The driver's findings on the token asked for with
    /// [`SessionOutput::VerifyToken`].
    TokenVerified(Box<TokenCheck>),
    /// A wall-clock reading at this call's `now`.
    WallClock(WallTime),
}

/// Work for the driver.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionOutput {
    /// Send this message to the node.
    Send(CentralMessage),
    /// Close the transport with this code, waiting up to `linger` for the
    /// node's close frame; the session is over.
    Close {
        code: CloseCode,
        reason: &'static str,
        linger: Duration,
    },
    /// Give this to the hub as [`super::HubInput::FromSession`].
    ToHub(ToHub),
    /// Store this sample; answer with `TelemetryStored` once durable.
    /// (The large payloads are boxed: a session's output queue keeps its
    /// capacity, and every idle connection holds one.)
    StoreTelemetry(Box<Telemetry>),
    /// Verify this token's signature against the node's registered key and
    /// answer with [`SessionInput::TokenVerified`].
    VerifyToken { token: String },
    /// Keep this (alert, health, log line); once stored, answer with
    /// [`SessionInput::RecordStored`] carrying `ack` when there is one.
    /// Storing is idempotent on the key: a record sent again is kept once.
    Record {
        message: Box<AgentMessage>,
        ack: Option<RecordKey>,
    },
    /// Tell an administrator.
    Alarm(Alarm),
    /// Something worth a log line or a metric.
    Event(SessionEvent),
}

/// What identifies a stored record for its ack (and for storing it once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordKey {
    /// A periodic health report, by its timestamp.
    Health(WallTime),
    /// An alert, by its id.
    Alert(AlertId),
}

impl RecordKey {
    /// The key of `message`, if it is a record the node waits to see acked:
    /// a periodic `health` with its timestamp, an `alert` with its id.
    pub fn of(message: &AgentMessage) -> Option<Self> {
        match message {
            AgentMessage::Health(h) if h.request_id.is_none() => h.timestamp.map(Self::Health),
            AgentMessage::Alert(a) => a.alert_id.map(Self::Alert),
            _ => None,
        }
    }

    fn ack(self) -> Ack {
        match self {
            Self::Health(at) => Ack::health(at),
            Self::Alert(id) => Ack::alert(id),
        }
    }
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
    /// A sample past the telemetry window (twice what `welcome` granted,
    /// leaving room for re-sends of samples still being stored); dropped.
    OverTelemetryWindow,
    /// A `token_refresh` was refused (the session closes with 4001).
    RefreshRefused { reason: &'static str },
    /// The session ended.
    Ended {
        code: Option<CloseCode>,
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
    /// Offer the samples the store refused again.
    IngestRetry,
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
    /// The message rate, one budget per class of message (telemetry has
    /// its window instead): a flood of one class never spends another's.
    buckets: [TokenBucket; 3],
    /// The node's telemetry window and the samples being stored.
    pacing: TelemetryPacing,
    refresh_pending: bool,
}

impl CentralSession {
    /// A session for an admitted upgrade; queues `welcome` at once, then
    /// tells the hub the node is online.
    pub fn new(
        now: Timestamp,
        wall: WallTime,
        admission: Admission,
        config: SessionConfig,
    ) -> Self {
        let Admission {
            node_id,
            session_id,
            token_expires_at,
        } = admission;
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
            buckets: std::array::from_fn(|_| {
                TokenBucket::new(now, config.rate_per_sec, config.rate_burst)
            }),
            pacing: TelemetryPacing::new(config.telemetry_window),
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
                features: session
                    .config
                    .features
                    .iter()
                    .map(|f| f.as_str().to_owned())
                    .collect(),
                telemetry_window: Some(session.config.telemetry_window.max(1)),
            })));
        session.tell_hub(ToHubKind::Opened { node_id });
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
            SessionInput::InvalidUtf8 => {
                self.event(SessionEvent::Invalid {
                    error: DecodeError::NotUtf8 { valid_up_to: 0 },
                });
                // RFC 6455 §8.1: fail the connection, saying why.
                self.close(CloseCode::InvalidPayload, "invalid UTF-8");
            }
            SessionInput::FrameTooLarge { size } => self.on_invalid(DecodeError::TooLarge {
                size,
                limit: self.config.limits.max_message_bytes,
            }),
            SessionInput::Closed { code } => self.end(code, "transport closed"),
            SessionInput::FromHub(event) => self.on_hub(event.0),
            SessionInput::TelemetryStored(timestamp) => {
                let ack = self.pacing.stored(timestamp);
                self.send(ack);
            }
            SessionInput::RecordStored(key) => self.send(key.ack()),
            SessionInput::TelemetryRefused(sample) => {
                let retry = self.config.ingest_retry;
                if self.pacing.refused(self.now, retry, sample) {
                    self.timers.set(SessionTimer::IngestRetry, self.now + retry);
                }
            }
            SessionInput::TokenVerified(check) => self.tell_hub(ToHubKind::Refresh {
                node_id: self.node_id,
                check,
            }),
            SessionInput::WallClock(wall) => self.anchor = WallAnchor::new(self.now, wall),
        }
    }

    /// The telemetry window the node is held to now (spec §7.1).
    pub fn telemetry_window(&self) -> u32 {
        self.pacing.window()
    }

    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.now = self.now.max(now);
        while let Some(timer) = self.timers.pop_due(self.now) {
            match timer {
                SessionTimer::Liveness => self.close(CloseCode::GoingAway, "node silent"),
                SessionTimer::TokenExpiry => self.close(CloseCode::TokenExpired, "token expired"),
                SessionTimer::IngestRetry => {
                    for sample in self.pacing.retry() {
                        self.out.push_back(SessionOutput::StoreTelemetry(sample));
                    }
                }
            }
        }
    }

    #[must_use]
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

    fn tell_hub(&mut self, event: ToHubKind) {
        self.out.push_back(SessionOutput::ToHub(ToHub(event)));
    }

    fn on_hub(&mut self, event: ToSessionKind) {
        match event {
            ToSessionKind::Deliver(message) => self.send(*message),
            ToSessionKind::ResultStored(request_id) => self.send(Ack::result(request_id)),
            ToSessionKind::ResultRefused(request_id) => {
                // Acked all the same, so that the node stops sending it.
                self.send(Ack::result(request_id));
                self.refuse("command_result", "result for another node's command");
            }
            ToSessionKind::RefreshChecked(verdict) => {
                self.refresh_pending = false;
                match verdict {
                    Ok(expires_at) => self.arm_token_expiry(expires_at),
                    Err(rejection) => {
                        self.event(SessionEvent::RefreshRefused {
                            reason: rejection.reason(),
                        });
                        self.close(CloseCode::TokenExpired, "token refresh rejected");
                    }
                }
            }
            ToSessionKind::Terminate { code, reason } => self.close(code, reason),
            ToSessionKind::Drain { reconnect_after } => {
                let reconnect_after =
                    u64::try_from(reconnect_after.as_millis()).unwrap_or(u64::MAX);
                self.send(Drain {
                    reconnect_after,
                    reason: Some("central is shutting down".into()),
                });
                self.close(CloseCode::GoingAway, "central shutting down");
            }
        }
    }

    fn close(&mut self, code: CloseCode, reason: &'static str) {
        if !self.open {
            return;
        }
        self.out.push_back(SessionOutput::Close {
            code,
            reason,
            linger: self.config.close_linger,
        });
        self.end(Some(code), reason);
    }

    /// The session is over: its timers stop and the hub is told, once.
    fn end(&mut self, code: Option<CloseCode>, reason: &'static str) {
        if !self.open {
            return;
        }
        self.open = false;
        self.timers.retain(|_| false);
        self.event(SessionEvent::Ended { code, reason });
        self.tell_hub(ToHubKind::Closed {
            node_id: self.node_id,
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
            self.close(CloseCode::TooBig, "message too big");
        } else if self.invalid.record(self.now) {
            self.close(CloseCode::Policy, "too many invalid messages");
        }
    }

    fn refuse(&mut self, message_type: &'static str, why: &'static str) {
        self.event(SessionEvent::Refused { message_type, why });
        if self.invalid.record(self.now) {
            self.close(CloseCode::Policy, "too many invalid messages");
        }
    }

    /// Each class of message has its own budget: telemetry the window
    /// `welcome` granted; control (ping, pong, status, token refresh),
    /// command results, and records (health, alerts, log lines) each the
    /// message rate. A replay never uses up what pings, results and status
    /// need, and neither does a burst of records.
    fn within_budget(&mut self, message: &AgentMessage) -> bool {
        if matches!(message, AgentMessage::Telemetry(_)) {
            // Twice the window: a sample the node re-sent because its ack
            // was slow may arrive while the first copy is still being stored.
            if self.pacing.has_room() {
                return true;
            }
            self.event(SessionEvent::OverTelemetryWindow);
            if self.invalid.record(self.now) {
                self.close(CloseCode::Policy, "over the telemetry window");
            }
            return false;
        }
        if self.buckets[budget_class(message)].take(self.now) {
            return true;
        }
        self.event(SessionEvent::RateLimited);
        if self.invalid.record(self.now) {
            self.close(CloseCode::Policy, "over the message rate limit");
        }
        false
    }

    fn on_frame(&mut self, text: &str) {
        let message = match decode::<AgentMessage>(text, &self.config.limits) {
            Ok(message) => message,
            // Ten in a window close the session: garbage needs no rate.
            Err(error) => return self.on_invalid(error),
        };
        if !self.within_budget(&message) {
            return;
        }
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
                self.pacing.handed_over();
                self.out
                    .push_back(SessionOutput::StoreTelemetry(Box::new(t)));
            }
            AgentMessage::CommandResult(r) => self.tell_hub(ToHubKind::Result {
                node_id: self.node_id,
                result: Box::new(r),
            }),
            AgentMessage::Status(s) if s.node_id != self.node_id => {
                self.refuse(message_type, "status for another node");
            }
            AgentMessage::Status(s) => self.tell_hub(ToHubKind::Status {
                node_id: self.node_id,
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
                    .push_back(SessionOutput::VerifyToken { token: r.token });
            }
            AgentMessage::Alert(alert) => {
                if alert.severity == Severity::Critical && alert.state == AlertState::Firing {
                    self.out
                        .push_back(SessionOutput::Alarm(Alarm::CriticalAlert {
                            node_id: self.node_id,
                            alert: Box::new(alert.clone()),
                        }));
                }
                self.record(AgentMessage::Alert(alert));
            }
            other @ (AgentMessage::Health(_) | AgentMessage::LogLine(_)) => self.record(other),
        }
    }

    fn record(&mut self, message: AgentMessage) {
        let ack = RecordKey::of(&message);
        self.out.push_back(SessionOutput::Record {
            message: Box::new(message),
            ack,
        });
    }
}

/// Which of a session's message budgets `message` spends (spec §9): 0
/// control, 1 command results, 2 records.
fn budget_class(message: &AgentMessage) -> usize {
    match message {
        AgentMessage::Ping(_)
        | AgentMessage::Pong(_)
        | AgentMessage::Status(_)
        | AgentMessage::TokenRefresh(_) => 0,
        AgentMessage::CommandResult(_) => 1,
        _ => 2,
    }
}
