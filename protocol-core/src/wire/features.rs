//! Protocol versions and features (spec/protocol.md §1.1). `nap.v1` is the
//! base every peer speaks; what later versions add is a [`Feature`] that a
//! peer announces — the agent on its upgrade request ([`Hello`]), central in
//! `welcome` — so that a fleet of mixed versions keeps working: central
//! never sends a node a message the node did not announce.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::CentralMessage;

/// A part of the protocol beyond the `nap.v1` base.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "testing", derive(proptest_derive::Arbitrary))]
pub enum Feature {
    /// v0.2: `execute` with `requiresApproval` is held until `execute_approved`.
    Approval,
    /// v0.4: `stream_logs` and `log_line`.
    Logs,
    /// Periodic `health` and `alert`s are acked (`ack.health`, `ack.alert`):
    /// a node that knows central acks them keeps each until it is.
    Acks,
}

impl Feature {
    /// Every feature, in order.
    pub const ALL: [Self; 3] = [Self::Approval, Self::Logs, Self::Acks];

    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approval => "approval",
            Self::Logs => "logs",
            Self::Acks => "acks",
        }
    }

    /// The feature named `name`, if this version knows it.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == name)
    }

    /// The feature a node must speak to be sent `message` (`None`: the base).
    pub fn required_by(message: &CentralMessage) -> Option<Self> {
        match message {
            CentralMessage::Execute(e) if e.requires_approval => Some(Self::Approval),
            CentralMessage::ExecuteApproved(_) => Some(Self::Approval),
            CentralMessage::StreamLogs(_) => Some(Self::Logs),
            CentralMessage::Welcome(_)
            | CentralMessage::Ping(_)
            | CentralMessage::Pong(_)
            | CentralMessage::Ack(_)
            | CentralMessage::Execute(_)
            | CentralMessage::Deploy(_)
            | CentralMessage::HealthCheck(_)
            | CentralMessage::UpdateAgent(_)
            | CentralMessage::Drain(_) => None,
        }
    }
}

/// A set of features.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Features(BTreeSet<Feature>);

impl Features {
    /// No feature: a peer of the `nap.v1` base only (an agent from before
    /// features were announced sends none).
    pub fn none() -> Self {
        Self::default()
    }

    /// Every feature this build of the protocol knows.
    pub fn all() -> Self {
        Feature::ALL.into_iter().collect()
    }

    pub fn contains(&self, feature: Feature) -> bool {
        self.0.contains(&feature)
    }

    pub fn iter(&self) -> impl Iterator<Item = Feature> + '_ {
        self.0.iter().copied()
    }

    /// Whether a peer with these features may be sent `message`.
    pub fn allow(&self, message: &CentralMessage) -> bool {
        Feature::required_by(message).is_none_or(|f| self.contains(f))
    }

    /// The `Nap-Features` header's value: names separated by commas.
    pub fn header_value(&self) -> String {
        self.iter()
            .map(Feature::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Reads a `Nap-Features` header; names this version does not know are
    /// skipped (a newer agent may speak more).
    pub fn parse(value: &str) -> Self {
        value
            .split(',')
            .filter_map(|name| Feature::from_name(name.trim()))
            .collect()
    }
}

impl FromIterator<Feature> for Features {
    fn from_iter<I: IntoIterator<Item = Feature>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

/// What an agent announces on its upgrade request.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hello {
    /// The agent's own version (`Nap-Agent-Version`), for operators and the
    /// update rules.
    pub agent_version: Option<String>,
    /// What it speaks beyond the base (`Nap-Features`).
    pub features: Features,
}

impl Hello {
    /// The header naming the agent's version.
    pub const AGENT_VERSION_HEADER: &'static str = "nap-agent-version";
    /// The header listing the agent's features.
    pub const FEATURES_HEADER: &'static str = "nap-features";
    /// Longest agent version kept.
    const MAX_VERSION: usize = 64;

    /// The headers to send, as (name, value).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![(Self::FEATURES_HEADER, self.features.header_value())];
        if let Some(version) = &self.agent_version {
            headers.push((Self::AGENT_VERSION_HEADER, version.clone()));
        }
        headers
    }

    /// Reads the announcement from the request's headers (absent headers:
    /// an agent of the base protocol).
    pub fn from_headers(agent_version: Option<&str>, features: Option<&str>) -> Self {
        let agent_version = agent_version
            .map(str::trim)
            .filter(|v| !v.is_empty() && v.len() <= Self::MAX_VERSION)
            .filter(|v| v.bytes().all(|b| b.is_ascii_graphic()))
            .map(str::to_owned);
        Self {
            agent_version,
            features: features.map(Features::parse).unwrap_or_default(),
        }
    }
}
