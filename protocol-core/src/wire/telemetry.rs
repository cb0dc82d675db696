//! `telemetry` (node → central, every telemetry interval): one sample of the
//! host, its containers and the application it serves.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::real;
use crate::{NodeId, WallTime};

/// One telemetry sample. `timestamp` is when it was taken, not when it was
/// sent: samples buffered during an outage keep their original time, and
/// central stores each (nodeId, timestamp) once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "testing", derive(proptest_derive::Arbitrary))]
pub struct Telemetry {
    pub node_id: NodeId,
    pub timestamp: WallTime,
    pub data: TelemetryData,
    /// Samples the agent had to drop from its offline buffer since it last
    /// reported; absent when zero.
    #[serde(default, skip_serializing_if = "real::is_zero")]
    pub dropped_samples: u64,
}

/// What one sample carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "testing", derive(proptest_derive::Arbitrary))]
pub struct TelemetryData {
    pub system: SystemMetrics,
    #[cfg_attr(
        feature = "testing",
        proptest(
            strategy = "proptest::collection::vec(proptest::arbitrary::any::<ContainerMetrics>(), 0..4)"
        )
    )]
    pub containers: Vec<ContainerMetrics>,
    pub application: ApplicationMetrics,
    /// Set when no container engine could be asked; `containers` is then
    /// empty because it is unknown, not because nothing runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containers_unavailable: Option<String>,
}

/// The host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "testing", derive(proptest_derive::Arbitrary))]
pub struct SystemMetrics {
    pub cpu: CpuMetrics,
    /// Load averages over 1, 5 and 15 minutes.
    #[serde(serialize_with = "real::triple")]
    #[cfg_attr(feature = "testing", proptest(strategy = "real::arb::load()"))]
    pub load: [f64; 3],
    pub memory: MemoryMetrics,
    pub swap: MemoryMetrics,
    #[cfg_attr(
        feature = "testing",
        proptest(
            strategy = "proptest::collection::vec(proptest::arbitrary::any::<DiskMetrics>(), 0..4)"
        )
    )]
    pub disks: Vec<DiskMetrics>,
    pub network: NetworkMetrics,
    /// Seconds since the host booted.
    pub uptime: u64,
    /// Number of processes.
    pub processes: u32,
}

/// CPU use in percent (0–100) over the last sampling period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "testing", derive(proptest_derive::Arbitrary))]
pub struct CpuMetrics {
    #[serde(serialize_with = "real::f64")]
    #[cfg_attr(feature = "testing", proptest(strategy = "real::arb::f64()"))]
    pub usage: f64,
    #[serde(default, serialize_with = "real::slice")]
    #[cfg_attr(feature = "testing", proptest(strategy = "real::arb::vec()"))]
    pub per_core: Vec<f64>,
}

/// Memory or swap, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "testing", derive(proptest_derive::Arbitrary))]
pub struct MemoryMetrics {
    pub total: u64,
    pub used: u64,
}

/// One mounted filesystem, in bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "testing", derive(proptest_derive::Arbitrary))]
pub struct DiskMetrics {
    pub mount: String,
    pub total: u64,
    pub used: u64,
}

/// Network throughput over all interfaces but loopback, in bytes per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "testing", derive(proptest_derive::Arbitrary))]
pub struct NetworkMetrics {
    pub rx_bytes_per_sec: u64,
    pub tx_bytes_per_sec: u64,
}

/// One container as the engine reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "testing", derive(proptest_derive::Arbitrary))]
pub struct ContainerMetrics {
    pub id: String,
    pub name: String,
    pub image: String,
    pub state: ContainerState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<ContainerHealth>,
    /// CPU use in percent of one core.
    #[serde(serialize_with = "real::f64")]
    #[cfg_attr(feature = "testing", proptest(strategy = "real::arb::f64()"))]
    pub cpu: f64,
    /// Memory in use, in bytes.
    pub memory: u64,
    pub restarts: u32,
}

/// A container's lifecycle state. A state this version does not know reads as `unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "testing", derive(proptest_derive::Arbitrary))]
pub enum ContainerState {
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
    #[serde(other)]
    Unknown,
}

/// A container's health check result, when it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "testing", derive(proptest_derive::Arbitrary))]
pub enum ContainerHealth {
    Starting,
    Healthy,
    Unhealthy,
    #[serde(other)]
    Unknown,
}

/// The application the node serves, as its configured probe sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "testing", derive(proptest_derive::Arbitrary))]
pub struct ApplicationMetrics {
    pub status: ApplicationStatus,
    /// Probe round trip in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Selected gauges from the application's Prometheus endpoint.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        serialize_with = "real::map"
    )]
    #[cfg_attr(feature = "testing", proptest(strategy = "real::arb::map()"))]
    pub metrics: BTreeMap<String, f64>,
}

/// Whether the application answers its probe; `unknown` when none is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "testing", derive(proptest_derive::Arbitrary))]
pub enum ApplicationStatus {
    Up,
    Down,
    #[serde(other)]
    Unknown,
}
