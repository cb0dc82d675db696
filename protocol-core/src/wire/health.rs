//! `health` (node → central, every health interval and in answer to
//! `health_check`).

use serde::{Deserialize, Serialize};

use super::real;
use crate::{NodeId, RequestId, WallTime};

/// The result of the agent's health checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "testing", derive(proptest_derive::Arbitrary))]
pub struct Health {
    pub checks: HealthChecks,
    #[serde(default)]
    pub details: HealthDetails,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<NodeId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<WallTime>,
    /// Set when this report answers a `health_check`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<RequestId>,
}

impl Health {
    /// The worst status among the checks.
    pub fn overall(&self) -> CheckStatus {
        let c = &self.checks;
        [c.agent, c.containers, c.disk, c.memory, c.database]
            .into_iter()
            .max()
            .unwrap_or(CheckStatus::Ok)
    }
}

/// One status per check, as in the seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "testing", derive(proptest_derive::Arbitrary))]
pub struct HealthChecks {
    pub agent: CheckStatus,
    pub containers: CheckStatus,
    pub disk: CheckStatus,
    pub memory: CheckStatus,
    pub database: CheckStatus,
}

/// A check's verdict, ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "testing", derive(proptest_derive::Arbitrary))]
pub enum CheckStatus {
    Ok,
    /// Not configured or could not be determined.
    Unknown,
    Warning,
    Critical,
}

/// What each check saw; a check with nothing to add is absent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "testing", derive(proptest_derive::Arbitrary))]
pub struct HealthDetails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<CheckDetail>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containers: Option<CheckDetail>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<CheckDetail>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<CheckDetail>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<CheckDetail>,
}

/// A check's explanation: a human message, and the measured value and the
/// threshold it was compared with where there is one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "testing", derive(proptest_derive::Arbitrary))]
pub struct CheckDetail {
    pub message: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "real::option"
    )]
    #[cfg_attr(feature = "testing", proptest(strategy = "real::arb::option()"))]
    pub value: Option<f64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "real::option"
    )]
    #[cfg_attr(feature = "testing", proptest(strategy = "real::arb::option()"))]
    pub threshold: Option<f64>,
}
