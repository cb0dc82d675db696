//! Every message of the protocol, by direction.
//!
//! A message is a JSON object whose `type` names it; its other fields are
//! camelCase, as in the seed document. [`AgentMessage`] is what a node sends,
//! [`CentralMessage`] what central sends, and [`OperatorMessage`] what an
//! operator asks of central (v0.3 `broadcast`). `ping` and `pong` travel both
//! ways. spec/protocol.md is the normative description of each.

mod broadcast;
mod command;
mod features;
mod health;
mod logs;
pub(crate) mod real;
mod report;
mod session;
mod telemetry;

use serde::{Deserialize, Serialize};

pub use broadcast::{Broadcast, BroadcastParams};
pub use command::{
    Command, CommandError, CommandKind, CommandResult, Deploy, ErrorCode, Execute, ExecuteApproved,
    HealthCheck, RolloutApproval, SignedApproval, UpdateAgent,
};
pub use features::{Feature, Features, Hello};
pub use health::{CheckDetail, CheckStatus, Health, HealthChecks, HealthDetails};
pub use logs::{LogLine, StreamLogs};
pub use report::{Alert, AlertData, AlertState, NodeStatus, Severity, Status};
pub use session::{Ack, Drain, Intervals, Ping, Pong, TokenRefresh, Welcome};
pub use telemetry::{
    ApplicationMetrics, ApplicationStatus, ContainerHealth, ContainerMetrics, ContainerState,
    CpuMetrics, DiskMetrics, MemoryMetrics, NetworkMetrics, SystemMetrics, Telemetry,
    TelemetryData,
};

use crate::codec::DecodeError;

/// Rules across fields that serde's derive cannot state. The codec calls
/// this after a message decodes, so a peer's message either satisfies them
/// or is refused with the path of the offending field.
pub trait Validate {
    /// `Ok` when the message is well formed beyond its field types.
    fn validate(&self) -> Result<(), DecodeError> {
        Ok(())
    }
}

impl Validate for Ack {
    fn validate(&self) -> Result<(), DecodeError> {
        let keys = usize::from(self.request_id.is_some())
            + usize::from(self.telemetry.is_some())
            + usize::from(self.health.is_some())
            + usize::from(self.alert.is_some());
        if keys == 1 {
            match self.telemetry_window {
                Some(_) if self.telemetry.is_none() => Err(DecodeError::InvalidValue {
                    path: "$.telemetryWindow".into(),
                    reason: "telemetryWindow comes only with a telemetry ack".into(),
                }),
                Some(0) => Err(DecodeError::InvalidValue {
                    path: "$.telemetryWindow".into(),
                    reason: "a telemetry window is at least 1".into(),
                }),
                _ => Ok(()),
            }
        } else {
            Err(DecodeError::InvalidValue {
                path: "$".into(),
                reason: "an ack carries exactly one of requestId, telemetry, health and alert"
                    .into(),
            })
        }
    }
}

macro_rules! no_cross_field_rules {
    ($($ty:ty),+ $(,)?) => { $(impl Validate for $ty {})+ };
}

no_cross_field_rules!(
    Telemetry,
    CommandResult,
    Status,
    Alert,
    Health,
    Ping,
    Pong,
    TokenRefresh,
    LogLine,
    Welcome,
    Execute,
    ExecuteApproved,
    Deploy,
    HealthCheck,
    UpdateAgent,
    Drain,
    StreamLogs,
    Broadcast,
);

/// Something that is shown every message type of a direction with its Rust
/// type (the JSON Schemas are made this way, from the one table below).
#[cfg(feature = "schema")]
pub trait MessageTypes {
    fn visit<T: schemars::JsonSchema>(&mut self, tag: &'static str);
}

/// Declares a direction's message enum, internally tagged by `type`, and
/// its codec dispatch on that tag.
macro_rules! direction {
    (
        $(#[$doc:meta])*
        pub enum $name:ident {
            $( $(#[$vdoc:meta])* $variant:ident($ty:ty) = $tag:literal, )+
        }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "type")]
        #[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
        #[cfg_attr(feature = "testing", derive(proptest_derive::Arbitrary))]
        pub enum $name {
            $( $(#[$vdoc])* #[serde(rename = $tag)] $variant($ty), )+
        }

        impl crate::codec::Message for $name {
            const TYPES: &'static [&'static str] = &[$($tag),+];

            fn message_type(&self) -> &'static str {
                match self {
                    $( Self::$variant(_) => $tag, )+
                }
            }

            fn decode_body(message_type: &str, text: &str) -> Result<Self, DecodeError> {
                match message_type {
                    $( $tag => {
                        let body: $ty = crate::codec::decode_body(text)?;
                        body.validate()?;
                        Ok(Self::$variant(body))
                    } )+
                    other => Err(DecodeError::UnknownType {
                        found: other.to_owned(),
                        expected: Self::TYPES,
                    }),
                }
            }
        }

        #[cfg(feature = "schema")]
        impl $name {
            /// Shows `visitor` each message type of this direction, by tag.
            pub fn visit_types(visitor: &mut impl MessageTypes) {
                $( visitor.visit::<$ty>($tag); )+
            }
        }

        $( impl From<$ty> for $name {
            fn from(message: $ty) -> Self {
                Self::$variant(message)
            }
        } )+
    };
}

direction! {
    /// Node → central.
    pub enum AgentMessage {
        /// A telemetry sample (every telemetry interval; replayed after an outage).
        Telemetry(Telemetry) = "telemetry",
        /// The outcome of a command; re-sent until acked.
        CommandResult(CommandResult) = "command_result",
        /// The node's own status.
        Status(Status) = "status",
        /// An alert fired or resolved.
        Alert(Alert) = "alert",
        /// Health check results.
        Health(Health) = "health",
        /// Keepalive.
        Ping(Ping) = "ping",
        /// Answer to central's ping.
        Pong(Pong) = "pong",
        /// A fresh token for the live session.
        TokenRefresh(TokenRefresh) = "token_refresh",
        /// v0.4: one streamed log line.
        LogLine(LogLine) = "log_line",
    }
}

direction! {
    /// Central → node.
    pub enum CentralMessage {
        /// First message of a session.
        Welcome(Welcome) = "welcome",
        /// Keepalive.
        Ping(Ping) = "ping",
        /// Answer to the node's ping.
        Pong(Pong) = "pong",
        /// A result or telemetry is durably stored.
        Ack(Ack) = "ack",
        /// Run an allow-listed program.
        Execute(Execute) = "execute",
        /// v0.2: release a held `execute`.
        ExecuteApproved(ExecuteApproved) = "execute_approved",
        /// Run a deploy recipe.
        Deploy(Deploy) = "deploy",
        /// Report health now.
        HealthCheck(HealthCheck) = "health_check",
        /// Replace the agent binary.
        UpdateAgent(UpdateAgent) = "update_agent",
        /// Central is shutting down: come back later.
        Drain(Drain) = "drain",
        /// v0.4: stream a service's logs.
        StreamLogs(StreamLogs) = "stream_logs",
    }
}

direction! {
    /// Operator → central (through the operator API, never the agent channel).
    pub enum OperatorMessage {
        /// v0.3: one command for many nodes.
        Broadcast(Broadcast) = "broadcast",
    }
}

/// Every message type name, across all directions, each once.
pub fn all_message_types() -> Vec<&'static str> {
    use crate::codec::Message;
    let mut all: Vec<&'static str> = Vec::new();
    for name in AgentMessage::TYPES
        .iter()
        .chain(CentralMessage::TYPES)
        .chain(OperatorMessage::TYPES)
    {
        if !all.contains(name) {
            all.push(name);
        }
    }
    all
}
