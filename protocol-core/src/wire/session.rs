//! Session messages that DESIGN.md §3 adds to the seed: `welcome`, `ping`,
//! `pong`, `ack`, `token_refresh` and `drain`.

use serde::{Deserialize, Serialize};

use crate::{AlertId, NodeId, RequestId, SessionId, WallTime};

/// Central → node, first message after the upgrade: the session is
/// authenticated and these are its parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "testing", derive(proptest_derive::Arbitrary))]
pub struct Welcome {
    /// `nap.v1`.
    pub protocol_version: String,
    pub session_id: SessionId,
    pub node_id: NodeId,
    /// Central's wall clock when it sent this, so the agent can see its skew.
    pub server_time: WallTime,
    pub intervals: Intervals,
    /// The largest message central accepts, in bytes.
    pub max_message_bytes: u32,
    /// What central speaks beyond the `nap.v1` base, by name (§1.1); an
    /// agent ignores names it does not know. Absent from a central that
    /// predates features.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(
        feature = "testing",
        proptest(
            strategy = "proptest::collection::vec(proptest::arbitrary::any::<String>(), 0..3)"
        )
    )]
    pub features: Vec<String>,
    /// The most `telemetry` samples the node may have sent on this session
    /// and not yet seen acked (§5.2): replay is paced by acks, and acks by
    /// what central can store. Absent from a central that predates it; the
    /// agent then uses [`Welcome::DEFAULT_TELEMETRY_WINDOW`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry_window: Option<u32>,
}

impl Welcome {
    /// The window an agent keeps when `welcome` names none: small enough
    /// that a central without windows never sees a burst over its rate limit.
    pub const DEFAULT_TELEMETRY_WINDOW: u32 = 8;

    /// The window this `welcome` grants, at least one sample.
    pub fn telemetry_window(&self) -> u32 {
        self.telemetry_window
            .unwrap_or(Self::DEFAULT_TELEMETRY_WINDOW)
            .max(1)
    }
}

/// Server-set periods in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "testing", derive(proptest_derive::Arbitrary))]
pub struct Intervals {
    pub heartbeat: u64,
    pub telemetry: u64,
    pub health: u64,
}

impl Default for Intervals {
    /// The seed's periods: ping every 30 s, telemetry every 60 s, health every 5 min.
    fn default() -> Self {
        Self {
            heartbeat: 30_000,
            telemetry: 60_000,
            health: 300_000,
        }
    }
}

/// Keepalive, either direction. `timestamp` is the sender's Unix time in
/// milliseconds (the seed's `Date.now()`), echoed by the `pong`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "testing", derive(proptest_derive::Arbitrary))]
pub struct Ping {
    pub timestamp: u64,
}

/// The answer to a `ping`, echoing its `timestamp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "testing", derive(proptest_derive::Arbitrary))]
pub struct Pong {
    pub timestamp: u64,
}

/// Central → node: something the node sent is durably stored and may leave
/// the node's outbox. Exactly one of `requestId`, `telemetry`, `health` and
/// `alert` is present; a telemetry ack may also carry the session's new
/// telemetry window (spec §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(
    feature = "schema",
    schemars(extend("oneOf" = [
        { "required": ["requestId"] },
        { "required": ["telemetry"] },
        { "required": ["health"] },
        { "required": ["alert"] }
    ], "dependentRequired" = { "telemetryWindow": ["telemetry"] }))
)]
pub struct Ack {
    /// The `command_result` for this request is recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<RequestId>,
    /// The `telemetry` sample with this timestamp is stored (each sample is
    /// acked on its own, so a wall clock that steps back loses nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<WallTime>,
    /// The periodic `health` report with this timestamp is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<WallTime>,
    /// The `alert` with this `alertId` is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<AlertId>,
    /// With `telemetry`: from now on, at most this many samples of the
    /// backlog in flight (central adjusts it to what its store ingests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1)))]
    pub telemetry_window: Option<u32>,
}

impl Ack {
    /// Acknowledge a command result.
    pub fn result(request_id: RequestId) -> Self {
        Self {
            request_id: Some(request_id),
            ..Self::none()
        }
    }

    fn none() -> Self {
        Self {
            request_id: None,
            telemetry: None,
            health: None,
            alert: None,
            telemetry_window: None,
        }
    }

    /// Acknowledge the health report taken at `timestamp`.
    pub fn health(timestamp: WallTime) -> Self {
        Self {
            health: Some(timestamp),
            ..Self::none()
        }
    }

    /// Acknowledge the alert `alert_id`.
    pub fn alert(alert_id: AlertId) -> Self {
        Self {
            alert: Some(alert_id),
            ..Self::none()
        }
    }

    /// Acknowledge the sample taken at `timestamp`.
    pub fn telemetry(timestamp: WallTime) -> Self {
        Self {
            telemetry: Some(timestamp),
            ..Self::none()
        }
    }

    /// Acknowledge the sample taken at `timestamp` and set the window.
    pub fn telemetry_with_window(timestamp: WallTime, window: u32) -> Self {
        Self {
            telemetry: Some(timestamp),
            telemetry_window: Some(window),
            ..Self::none()
        }
    }
}

#[cfg(feature = "testing")]
impl proptest::arbitrary::Arbitrary for Ack {
    type Parameters = ();
    type Strategy = proptest::strategy::BoxedStrategy<Self>;

    fn arbitrary_with((): ()) -> Self::Strategy {
        use proptest::prelude::*;
        prop_oneof![
            any::<RequestId>().prop_map(Ack::result),
            any::<WallTime>().prop_map(Ack::telemetry),
            (any::<WallTime>(), 1..=64u32).prop_map(|(t, w)| Ack::telemetry_with_window(t, w)),
            any::<WallTime>().prop_map(Ack::health),
            any::<AlertId>().prop_map(Ack::alert),
        ]
        .boxed()
    }
}

/// Node → central: a fresh token for the live session, sent before the
/// current one expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "testing", derive(proptest_derive::Arbitrary))]
pub struct TokenRefresh {
    pub token: String,
}

/// Central → node, before a graceful shutdown: close, then reconnect after
/// `reconnectAfter` milliseconds (spread per node so the fleet does not
/// return at once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "testing", derive(proptest_derive::Arbitrary))]
pub struct Drain {
    pub reconnect_after: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
