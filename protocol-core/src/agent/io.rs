//! What goes into and comes out of the agent engine.

use std::time::Duration;

use crate::policy::{Approved, Refusal};
use crate::transport::{CloseCode, Epoch, FrameFault, SendClass};
use crate::wire::{
    AgentMessage, CommandError, CommandResult, HealthChecks, HealthDetails, Hello, TelemetryData,
};
use crate::{DecodeError, RequestId, SessionId, WallTime};

/// An input to [`super::AgentEngine::handle_input`].
#[derive(Debug, Clone, PartialEq)]
pub enum AgentInput {
    /// Begin: connect and start sampling.
    Start,
    /// Stop gracefully: report `offline`, close, do not reconnect.
    Shutdown,
    /// A reading of the wall clock, taken at this call's `now`. Give one before
    /// `Start` and whenever the wall clock may have been adjusted.
    WallClock(WallTime),
    /// The token asked for by [`AgentOutput::MintToken`], valid for `lifetime` from now.
    TokenMinted { token: String, lifetime: Duration },
    /// The upgrade of the dial of `epoch` succeeded.
    Connected { epoch: Epoch },
    /// The dial of `epoch` failed.
    DialFailed { epoch: Epoch, reason: DialFailure },
    /// A text frame arrived on `epoch`.
    Frame { epoch: Epoch, text: String },
    /// A frame on `epoch` could not be read as text (over the size limit,
    /// or not UTF-8); the engine closes with the matching code.
    FrameFault { epoch: Epoch, fault: FrameFault },
    /// This process is a newly installed version that must reach central
    /// (an established session) by `deadline`, or be rolled back.
    UpdateOnProbation { deadline: WallTime },
    /// The transport of `epoch` cannot take more frames now (its send
    /// queue is full); the frame that did not fit was dropped.
    SendQueueFull { epoch: Epoch },
    /// The transport of `epoch` closed, with the peer's close code if it sent one.
    Closed {
        epoch: Epoch,
        code: Option<CloseCode>,
    },
    /// The sample asked for by [`AgentOutput::SampleTelemetry`].
    TelemetrySample(TelemetryData),
    /// Health check results, for a request or for the periodic report.
    HealthReport {
        request_id: Option<RequestId>,
        checks: HealthChecks,
        details: HealthDetails,
    },
    /// A task started by [`AgentOutput::Run`] ended (or was killed).
    CommandFinished {
        request_id: RequestId,
        outcome: CommandOutcome,
    },
    /// A log line for a `stream_logs` request.
    LogLine {
        request_id: Option<RequestId>,
        service: String,
        line: String,
    },
}

/// Why a dial did not produce a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DialFailure {
    /// Central answered 401: the token was refused.
    Unauthorized,
    /// Central answered 503, asking to come back after this long.
    Unavailable { retry_after: Duration },
    /// Anything else: refused, reset, TLS failure, timeout.
    Network,
}

impl DialFailure {
    /// How long to wait when a 429 or 503 names no readable `Retry-After`.
    pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(30);

    /// What an HTTP answer to the upgrade means (spec/protocol.md §4):
    /// 401 and 403 refuse the token; 429 and 503 ask to come back after
    /// `Retry-After` seconds; anything else counts as a network failure.
    pub fn from_http_status(status: u16, retry_after_secs: Option<u64>) -> Self {
        match status {
            401 | 403 => Self::Unauthorized,
            429 | 503 => Self::Unavailable {
                retry_after: retry_after_secs
                    .map_or(Self::DEFAULT_RETRY_AFTER, Duration::from_secs),
            },
            _ => Self::Network,
        }
    }
}

/// How a task ended, as the driver saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandOutcome {
    pub success: bool,
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// Output was cut at the cap.
    pub truncated: bool,
    /// Set when the task could not run or failed for a reason other than its
    /// exit status (not found, permission denied, internal).
    pub error: Option<CommandError>,
}

/// Work for the driver. The agent engine emits these from `poll_output`.
// Outputs are moved once from the queue to the driver; boxing the large
// `Send` variant would cost an allocation per message for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum AgentOutput {
    /// Sign a fresh token valid for `lifetime` and answer with
    /// [`AgentInput::TokenMinted`].
    MintToken { lifetime: Duration },
    /// Open a connection to central with this token, announcing `hello`
    /// on the upgrade; report on `epoch`.
    Dial {
        epoch: Epoch,
        token: String,
        hello: Hello,
    },
    /// Send a message on `epoch`, ahead of anything less urgent waiting.
    Send {
        epoch: Epoch,
        message: AgentMessage,
        class: SendClass,
    },
    /// Close the transport of `epoch` with this code.
    Close {
        epoch: Epoch,
        code: CloseCode,
        reason: &'static str,
        /// How long the driver may wait for the transport to finish the
        /// close (central's close frame back) before dropping it — on a
        /// shutdown, before the process exits.
        linger: Duration,
    },
    /// Update the TLS traffic keys of `epoch`'s connection in both
    /// directions (a TLS 1.3 KeyUpdate asking the peer to update too).
    UpdateTrafficKeys { epoch: Epoch },
    /// The newly installed version connected: keep it.
    ConfirmUpdate,
    /// The newly installed version did not connect in time: put the
    /// previous one back and restart.
    RollBackUpdate,
    /// Take a telemetry sample and answer with [`AgentInput::TelemetrySample`].
    SampleTelemetry,
    /// Run the health checks and answer with [`AgentInput::HealthReport`]
    /// (periodic: no request id).
    CheckHealth,
    /// Start a task; answer with [`AgentInput::CommandFinished`] (or, for a
    /// health check, [`AgentInput::HealthReport`] with this request id).
    Run { request_id: RequestId, task: Task },
    /// Kill the task's whole process group (SIGTERM, grace, SIGKILL), then
    /// report it finished.
    Kill { request_id: RequestId },
    /// Start (or restart) streaming a service's log; send lines as [`AgentInput::LogLine`].
    StreamLogs {
        request_id: Option<RequestId>,
        service: String,
        follow: bool,
        lines: Option<u32>,
    },
    /// The outbox or the request record changed: save [`super::AgentEngine::snapshot`]
    /// before acting on the outputs that follow.
    Persist,
    /// Something happened worth a log line, a metric or an audit record.
    Event(AgentEvent),
}

/// A task the engine allowed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Task {
    /// An allow-listed program, resolved by the policy.
    Execute(Approved),
    /// The deploy recipe of `env` with `branch` (both validated).
    Deploy {
        env: String,
        branch: String,
        timeout: Duration,
    },
    /// The health checks, answered with a `HealthReport` carrying the request id.
    HealthCheck { timeout: Duration },
    /// Fetch, verify and install this version, then restart.
    UpdateAgent { version: String, timeout: Duration },
}

impl Task {
    /// How long the task may run before it is killed.
    pub fn timeout(&self) -> Duration {
        match self {
            Self::Execute(a) => a.timeout,
            Self::Deploy { timeout, .. }
            | Self::HealthCheck { timeout }
            | Self::UpdateAgent { timeout, .. } => *timeout,
        }
    }
}

/// Things the driver may log, count or audit.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentEvent {
    /// Dialling central.
    Connecting { epoch: Epoch, attempt: u32 },
    /// `welcome` arrived.
    Established { epoch: Epoch, session_id: SessionId },
    /// The connection ended.
    Disconnected { epoch: Epoch, reason: Disconnect },
    /// The next dial waits this long.
    BackoffScheduled { delay: Duration, attempt: u32 },
    /// Central revoked this node; the agent will not reconnect.
    Revoked,
    /// The engine stopped after a shutdown.
    Stopped,
    /// A frame that is not a valid message was ignored.
    InvalidFrame { error: DecodeError },
    /// A frame arrived that is valid but out of place (e.g. a command before `welcome`).
    Unexpected { message_type: &'static str },
    /// A round trip measured by ping/pong.
    RoundTrip { rtt_ms: u64 },
    /// Audit: a command request and the engine's decision on it.
    CommandDecision {
        request_id: Option<RequestId>,
        what: String,
        decision: Decision,
    },
    /// Audit: a command ended; its result is in the outbox.
    CommandCompleted { result: CommandResult },
    /// The transport's send queue was full and a frame was dropped; what
    /// it carried that needs an ack is sent again.
    FrameDropped { epoch: Epoch },
    /// Telemetry samples were dropped from the full offline buffer.
    TelemetryDropped { total: u64 },
}

/// What the engine decided about a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed and started.
    Started,
    /// Allowed, waiting for a free slot.
    Queued,
    /// Held until approved (v0.2).
    Held,
    /// Refused by the policy.
    Blocked(Refusal),
    /// The queue is full.
    Busy,
    /// Already seen: answered from the record (or ignored while it runs).
    Duplicate,
    /// Not actionable (e.g. an `execute` without `requestId`).
    Invalid(&'static str),
    /// A release whose signed approvals the node's own check refused
    /// (spec §8.2): the command never runs.
    ApprovalRefused(crate::signed_approval::ReleaseRefusal),
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Disconnect {
    /// The peer or the network closed it, with this close code if any.
    Closed(Option<CloseCode>),
    /// No `welcome` in time.
    NoWelcome,
    /// No pong in time, or no traffic for two heartbeat intervals.
    Dead,
    /// Central asked us to drain.
    Drained,
    /// Too many invalid messages from central.
    Invalid,
    /// Central sent a frame that could not be read (1009 or 1007 sent back).
    Fault(FrameFault),
    /// The agent is shutting down.
    Shutdown,
    /// The connection reached its maximum age (a fresh handshake, fresh keys).
    Aged,
}
