//! v0.4 streaming logs: `stream_logs` (central → node) and `log_line`
//! (node → central).

use serde::{Deserialize, Serialize};

use crate::{RequestId, WallTime};

/// Ask for a service's log lines, optionally following new ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "testing", derive(proptest_derive::Arbitrary))]
pub struct StreamLogs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<RequestId>,
    pub service: String,
    #[serde(default)]
    pub follow: bool,
    /// How many past lines to send first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines: Option<u32>,
}

/// One log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "testing", derive(proptest_derive::Arbitrary))]
pub struct LogLine {
    pub line: String,
    pub timestamp: WallTime,
    /// The `stream_logs` request this line answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<RequestId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}
