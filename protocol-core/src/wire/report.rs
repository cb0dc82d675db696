//! `status` and `alert` (node → central).

use serde::{Deserialize, Serialize};

use super::real;
use crate::{AlertId, NodeId, WallTime};

/// The node's own view of its state. Central derives `offline` by itself too
/// when it stops hearing from a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "testing", derive(proptest_derive::Arbitrary))]
pub struct Status {
    pub node_id: NodeId,
    pub status: NodeStatus,
    pub timestamp: WallTime,
    /// Why, for `degraded` and `offline`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A node's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "testing", derive(proptest_derive::Arbitrary))]
pub enum NodeStatus {
    Online,
    Degraded,
    Offline,
}

/// An alert raised (or resolved) by one of the agent's rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "testing", derive(proptest_derive::Arbitrary))]
pub struct Alert {
    pub severity: Severity,
    pub message: String,
    #[serde(default)]
    pub data: AlertData,
    /// The rule that raised it, so central can pair `firing` with `resolved`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "AlertState::is_firing")]
    pub state: AlertState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<WallTime>,
    /// Set by an agent that keeps the alert until central acks it
    /// (`ack.alert`); central stores an alert once per id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_id: Option<AlertId>,
}

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "testing", derive(proptest_derive::Arbitrary))]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

/// An alert fires once when its rule trips and resolves once when it clears.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "testing", derive(proptest_derive::Arbitrary))]
pub enum AlertState {
    #[default]
    Firing,
    Resolved,
}

impl AlertState {
    fn is_firing(&self) -> bool {
        *self == Self::Firing
    }
}

/// The measurements behind an alert, as in the seed's examples (`cpu`,
/// `duration`, `disk`, `available`) plus the few a rule may add.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "testing", derive(proptest_derive::Arbitrary))]
pub struct AlertData {
    /// CPU use in percent.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "real::option"
    )]
    #[cfg_attr(feature = "testing", proptest(strategy = "real::arb::option()"))]
    pub cpu: Option<f64>,
    /// Memory use in percent.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "real::option"
    )]
    #[cfg_attr(feature = "testing", proptest(strategy = "real::arb::option()"))]
    pub memory: Option<f64>,
    /// Disk use in percent.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "real::option"
    )]
    #[cfg_attr(feature = "testing", proptest(strategy = "real::arb::option()"))]
    pub disk: Option<f64>,
    /// The filesystem `disk` refers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<String>,
    /// Free space, human readable (`3GB`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available: Option<String>,
    /// Seconds the condition has held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<u64>,
    /// The rule's threshold.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "real::option"
    )]
    #[cfg_attr(feature = "testing", proptest(strategy = "real::arb::option()"))]
    pub threshold: Option<f64>,
}
