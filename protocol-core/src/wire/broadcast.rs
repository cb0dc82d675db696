//! v0.3 `broadcast`: one command for many nodes. It is an operator request to
//! central, which fans it out as one ordinary command (with its own
//! `requestId`) per target; it never crosses the agent channel.

use serde::{Deserialize, Serialize};

use super::command::CommandKind;

/// Send `command` to every node in `targets` (node ids or names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "testing", derive(proptest_derive::Arbitrary))]
pub struct Broadcast {
    pub command: CommandKind,
    #[cfg_attr(
        feature = "testing",
        proptest(
            strategy = "proptest::collection::vec(proptest::arbitrary::any::<String>(), 0..4)"
        )
    )]
    pub targets: Vec<String>,
    /// The command's own fields, as in the single-node message.
    #[serde(default, skip_serializing_if = "BroadcastParams::is_empty")]
    pub params: BroadcastParams,
}

/// Fields of the broadcast command; which apply depends on `command`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "testing", derive(proptest_derive::Arbitrary))]
pub struct BroadcastParams {
    /// `execute`: the allow-listed command name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(
        feature = "testing",
        proptest(
            strategy = "proptest::collection::vec(proptest::arbitrary::any::<String>(), 0..4)"
        )
    )]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    /// `deploy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// `update_agent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl BroadcastParams {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}
