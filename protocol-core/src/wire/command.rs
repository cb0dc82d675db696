//! Commands (central → node) and their results (node → central).
//!
//! Every command carries a `requestId`: the agent runs a request at most once,
//! answers a repeat from its record, and keeps the result in its outbox until
//! central acknowledges it. The seed's abbreviated v0.2 `execute` and its
//! `update_agent` example omit the id, so the field is optional on the wire;
//! a v1 agent refuses an `execute` without one (it could not be deduplicated).

use serde::{Deserialize, Serialize};

use super::real;
use crate::{RequestId, RolloutId, WallTime};

/// Run an allow-listed program. Never a shell: `command` names an entry of the
/// agent's allow-list and `args` are passed as separate arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "testing", derive(proptest_derive::Arbitrary))]
pub struct Execute {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<RequestId>,
    pub command: String,
    #[serde(default)]
    #[cfg_attr(
        feature = "testing",
        proptest(
            strategy = "proptest::collection::vec(proptest::arbitrary::any::<String>(), 0..4)"
        )
    )]
    pub args: Vec<String>,
    /// Milliseconds the command may run before it is killed; absent means the
    /// allow-list entry's maximum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    /// v0.2: hold the command until an `execute_approved` for it arrives.
    #[serde(default, skip_serializing_if = "real::is_false")]
    pub requires_approval: bool,
    /// v0.2: who is asked to approve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approver: Option<String>,
    /// v0.2: with `requiresApproval`, when the hold ends — the moment
    /// central's request expires; absent, the agent's own window (1 h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_until: Option<WallTime>,
    /// v0.2: with `requiresApproval`, who asked for the command — covered
    /// by the approval's digest, so a node can refuse a requester's own
    /// signature (spec §8.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// v0.3 with v0.2: the approval of the rollout this command is a target
    /// of, for a node whose allow-list entry requires signed approvals — the
    /// node checks it and runs the command at once (spec §8.4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "testing", proptest(value = "None"))]
    pub rollout_approval: Option<RolloutApproval>,
}

/// v0.3 with v0.2: a rollout's approval as one of its targets receives it:
/// the approvers signed the rollout's digest (its command, its id, its
/// expiry and the root of its targets' tree), and the proof leads from this
/// target's leaf — its node and this command's request id — to that root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RolloutApproval {
    pub rollout_id: RolloutId,
    /// How many targets the approved set holds.
    pub targets: u32,
    /// This target's place among them, from 0.
    pub index: u32,
    /// Hex SHA-256 hashes: the siblings from this target's leaf up to the
    /// root.
    pub proof: Vec<String>,
    /// When the approval ends: the rollout's deadline.
    pub expires: WallTime,
    /// Who approved, as in `execute_approved`.
    pub approved_by: String,
    /// The approvers' signatures over the rollout's digest.
    pub approvals: Vec<SignedApproval>,
}

/// v0.2: a human approved a held `execute`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "testing", derive(proptest_derive::Arbitrary))]
pub struct ExecuteApproved {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<RequestId>,
    pub command: String,
    pub approved_by: String,
    /// The approvers' signatures over the command's digest, for an
    /// allow-list entry that requires approval on the node (spec §8.2).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(
        feature = "testing",
        proptest(
            strategy = "proptest::collection::vec(proptest::arbitrary::any::<SignedApproval>(), 0..2)"
        )
    )]
    pub approvals: Vec<SignedApproval>,
}

/// v0.2: one approver's signature, with the certificate that says the key
/// is theirs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "testing", derive(proptest_derive::Arbitrary))]
pub struct SignedApproval {
    /// Who approved (the certificate's `user`).
    pub user: String,
    /// The approver certificate, as its text.
    pub certificate: String,
    /// Base64 Ed25519 signature over `nap-approve 1\nuser <user>\ndigest <digest>\n`.
    pub signature: String,
}

/// Run the configured deploy recipe for `env` with `branch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "testing", derive(proptest_derive::Arbitrary))]
pub struct Deploy {
    pub request_id: RequestId,
    pub env: String,
    pub branch: String,
}

/// Run the health checks now and report them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "testing", derive(proptest_derive::Arbitrary))]
pub struct HealthCheck {
    pub request_id: RequestId,
}

/// Replace the agent with `version`, fetched from central and verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "testing", derive(proptest_derive::Arbitrary))]
pub struct UpdateAgent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<RequestId>,
    pub version: String,
}

/// The outcome of one command. Optional fields beyond the seed's carry detail
/// for operators; `error` is present exactly when the agent did not run the
/// command to completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "testing", derive(proptest_derive::Arbitrary))]
pub struct CommandResult {
    pub request_id: RequestId,
    pub success: bool,
    /// Standard output (capped), or a summary for non-process commands.
    #[serde(default)]
    pub result: String,
    pub timestamp: WallTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Output was cut at the agent's cap.
    #[serde(default, skip_serializing_if = "real::is_false")]
    pub truncated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<CommandError>,
}

/// Why a command did not complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "testing", derive(proptest_derive::Arbitrary))]
pub struct CommandError {
    pub code: ErrorCode,
    pub message: String,
}

/// The agent's command error codes (spec/protocol.md, "Command errors").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "testing", derive(proptest_derive::Arbitrary))]
pub enum ErrorCode {
    /// Not on the allow-list, or arguments refused by its rules.
    Blocked,
    /// The operating system refused (user, file mode, sandbox).
    PermissionDenied,
    /// The program or recipe does not exist.
    NotFound,
    /// Killed after its timeout.
    Timeout,
    /// The command queue is full.
    Busy,
    /// The message was understood but cannot be acted on (e.g. no requestId).
    InvalidRequest,
    /// A fault in the agent itself.
    Internal,
    /// A code from a newer agent.
    #[serde(other)]
    Unknown,
}

/// The four command kinds, as named in `broadcast`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "testing", derive(proptest_derive::Arbitrary))]
pub enum CommandKind {
    Execute,
    Deploy,
    HealthCheck,
    UpdateAgent,
}

impl CommandKind {
    /// Every kind, in order.
    pub const ALL: [Self; 4] = [
        Self::Execute,
        Self::Deploy,
        Self::HealthCheck,
        Self::UpdateAgent,
    ];

    /// The message type that carries it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Execute => "execute",
            Self::Deploy => "deploy",
            Self::HealthCheck => "health_check",
            Self::UpdateAgent => "update_agent",
        }
    }

    /// The kind carried by the message type `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// How long a node may take when the command names no timeout of its
    /// own (central waits this, plus its grace, for the result).
    pub fn default_timeout(self) -> std::time::Duration {
        match self {
            Self::Execute => std::time::Duration::from_secs(30),
            Self::Deploy | Self::HealthCheck | Self::UpdateAgent => {
                std::time::Duration::from_secs(600)
            }
        }
    }
}

/// A message from central that asks the node to act, by kind. Matching on
/// it is exhaustive: a new command type must be handled wherever commands
/// are, or the build fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Execute(Execute),
    /// v0.2: releases a held `execute`.
    ExecuteApproved(ExecuteApproved),
    Deploy(Deploy),
    HealthCheck(HealthCheck),
    UpdateAgent(UpdateAgent),
}

impl Command {
    /// The message type that carries it.
    pub fn message_type(&self) -> &'static str {
        match self {
            Self::Execute(_) => "execute",
            Self::ExecuteApproved(_) => "execute_approved",
            Self::Deploy(_) => "deploy",
            Self::HealthCheck(_) => "health_check",
            Self::UpdateAgent(_) => "update_agent",
        }
    }

    /// The command's request id (central always sends one).
    pub fn request_id(&self) -> Option<RequestId> {
        match self {
            Self::Execute(m) => m.request_id,
            Self::ExecuteApproved(m) => m.request_id,
            Self::Deploy(m) => Some(m.request_id),
            Self::HealthCheck(m) => Some(m.request_id),
            Self::UpdateAgent(m) => m.request_id,
        }
    }
}

impl super::CentralMessage {
    /// The command this message carries, or the message itself if it is
    /// not one. Exhaustive, so a new message type must say here whether it
    /// is a command.
    // The message comes back as it was (moved, not copied onto the heap):
    // boxing it would allocate for every message that is not a command.
    #[allow(clippy::result_large_err)]
    pub fn into_command(self) -> Result<Command, Self> {
        match self {
            Self::Execute(m) => Ok(Command::Execute(m)),
            Self::ExecuteApproved(m) => Ok(Command::ExecuteApproved(m)),
            Self::Deploy(m) => Ok(Command::Deploy(m)),
            Self::HealthCheck(m) => Ok(Command::HealthCheck(m)),
            Self::UpdateAgent(m) => Ok(Command::UpdateAgent(m)),
            other @ (Self::Welcome(_)
            | Self::Ping(_)
            | Self::Pong(_)
            | Self::Ack(_)
            | Self::Drain(_)
            | Self::StreamLogs(_)) => Err(other),
        }
    }

    /// The request id of a command or a log stream.
    pub fn request_id(&self) -> Option<RequestId> {
        match self {
            Self::StreamLogs(m) => m.request_id,
            other => other
                .clone()
                .into_command()
                .ok()
                .and_then(|c| c.request_id()),
        }
    }
}
