//! The load report: JSON, a human summary, and PNG charts.

use std::collections::BTreeMap;
use std::path::Path;

use nap_core::{NodeId, RequestId};
use serde::Serialize;

use super::LoadConfig;
use super::proto::WorkerStats;

/// One point of the run's time series.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Point {
    pub t_s: f64,
    pub connected: usize,
    pub dials: u64,
    pub handshaking: usize,
    pub central_rss_kib: u64,
    pub central_cpu_ms: u64,
}

/// One central crash and the fleet's return.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Storm {
    pub back_s: f64,
    pub handshakes: u64,
    pub handshakes_per_s: f64,
}

/// A fleet catching up after an outage (`replay`, `outage`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CatchUp {
    /// Unacked samples per node when central was back (or at the start).
    pub backlog_per_node: usize,
    pub outage_s: f64,
    pub restarted_mid_outage: bool,
    /// Seconds from central's return (or the start) until every node was
    /// connected again: bounded by the backoff each node was in, not by
    /// the replay.
    pub reconnect_s: f64,
    /// Seconds from central's return (or the start) until every node was
    /// connected with at most one sample unacked.
    pub catch_up_s: f64,
    pub samples_replayed: u64,
    /// Sessions central closed with 1008 over the whole run.
    pub policy_closes: u64,
    pub agent_restarts: u64,
}

/// One rollout through the operator API (`rollout`), to its end.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutRun {
    pub state: String,
    pub strategy: serde_json::Value,
    pub limits: nap_core::central::rollout::Limits,
    /// Targets per final state.
    pub counts: BTreeMap<String, u64>,
    /// From the request until it ended with nothing in flight.
    pub seconds: f64,
    /// Central processes killed while it ran (`--crash-centrals`).
    #[serde(default)]
    pub central_crashes: usize,
    /// Nodes made to fail its command (`--fail-percent`).
    #[serde(default)]
    pub failing_nodes: usize,
}

impl RolloutRun {
    /// Failures: every terminal state but succeeded, cancelled and skipped.
    pub fn failed(&self) -> u64 {
        self.counts
            .iter()
            .filter(|(s, _)| {
                !matches!(
                    s.as_str(),
                    "succeeded" | "cancelled" | "skipped" | "pending" | "queued" | "sent"
                )
            })
            .map(|(_, n)| n)
            .sum()
    }
}

/// What the workers' final lines add up to.
#[derive(Debug, Default)]
pub struct Sample {
    pub stats: WorkerStats,
    pub rtt: Vec<u64>,
    pub samples: BTreeMap<NodeId, u64>,
    pub commands: BTreeMap<RequestId, i64>,
    pub duplicate_commands: usize,
}

impl Sample {
    pub fn add_worker(
        &mut self,
        stats: &WorkerStats,
        rtt: &[u64],
        samples: Vec<(NodeId, u64)>,
        commands: Vec<(RequestId, i64)>,
    ) {
        self.stats.add(stats);
        if self.rtt.len() < rtt.len() {
            self.rtt.resize(rtt.len(), 0);
        }
        for (total, n) in self.rtt.iter_mut().zip(rtt) {
            *total += n;
        }
        self.samples.extend(samples);
        for (request, at) in commands {
            if self.commands.insert(request, at).is_some() {
                self.duplicate_commands += 1;
            }
        }
    }
}

/// Percentiles of a set of values.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Spread {
    pub count: u64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Spread {
    fn of(values: &mut [f64]) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        values.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let i = ((values.len() as f64 - 1.0) * q).round() as usize;
            values[i.min(values.len() - 1)]
        };
        Self {
            count: values.len() as u64,
            p50: at(0.50),
            p99: at(0.99),
            max: values[values.len() - 1],
        }
    }

    /// From counts per millisecond.
    fn of_histogram(buckets: &[u64]) -> Self {
        let count: u64 = buckets.iter().sum();
        if count == 0 {
            return Self::default();
        }
        let at = |q: f64| {
            let rank = ((count as f64 - 1.0) * q).round() as u64;
            let mut seen = 0;
            for (ms, n) in buckets.iter().enumerate() {
                seen += n;
                if seen > rank {
                    return ms as f64;
                }
            }
            (buckets.len() - 1) as f64
        };
        let max = buckets.iter().rposition(|n| *n > 0).unwrap_or(0) as f64;
        Self {
            count,
            p50: at(0.50),
            p99: at(0.99),
            max,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Intervals {
    pub heartbeat_ms: u64,
    pub telemetry_ms: u64,
    pub health_ms: u64,
    /// How much faster than the seed's 60 s telemetry the run went.
    pub telemetry_compression: f64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Telemetry {
    pub taken: u64,
    pub stored: u64,
    /// Dropped by the agents' buffer bound (counted as `droppedSamples`).
    pub dropped_by_bound: u64,
    /// Nodes with fewer rows stored than the samples they took and kept.
    pub nodes_with_loss: usize,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Commands {
    pub sent: usize,
    pub received: usize,
    /// A node ran a request id twice.
    pub received_twice: usize,
    pub terminal: usize,
    pub succeeded: usize,
    /// Seconds until the one broadcast request was answered (every command
    /// stored, audited and handed to the instance holding its node).
    pub submit_s: f64,
    /// Seconds from the first submission until every node had received its command.
    pub all_received_s: f64,
    /// Seconds from the first submission until every result was recorded.
    pub all_recorded_s: f64,
    /// Per command, submission to arrival at the node, milliseconds.
    pub delivery_ms: Spread,
    /// Per command, creation to its terminal state in the store, milliseconds.
    pub recorded_ms: Spread,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Process {
    /// Central processes sharing the port (their figures are summed).
    pub processes: usize,
    pub rss_idle_mib: f64,
    pub rss_connected_mib: f64,
    /// (Connected − idle) / nodes.
    pub rss_per_connection_kib: f64,
    pub cpu_s: f64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Wire {
    /// TLS records over the steady window, both directions, all nodes.
    pub bytes: u64,
    pub window_s: f64,
    /// At the run's intervals.
    pub bytes_per_node_minute: f64,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadReport {
    pub nodes: usize,
    pub workers: usize,
    pub scenario: &'static str,
    pub database: &'static str,
    pub seed: u64,
    /// Nodes started per second (`None`: all at once).
    pub ramp_per_s: Option<u32>,
    pub intervals: Intervals,
    pub time_to_connect_s: f64,
    pub connect_handshakes_per_s: f64,
    pub peak_handshakes_in_flight: usize,
    pub dials: u64,
    pub failed_dials: u64,
    pub central_crashes: Vec<Storm>,
    /// Central crashes during the chaos scenario (not waited out one by one).
    pub chaos_central_crashes: usize,
    pub max_backoff_s: f64,
    pub backoff_cap_s: f64,
    pub rtt_ms: Spread,
    /// Pings per millisecond of round trip (the last bucket holds the
    /// slower ones), up to the slowest seen.
    pub rtt_histogram: Vec<u64>,
    pub telemetry: Telemetry,
    pub commands: Option<Commands>,
    pub central: Option<Process>,
    pub simulator_cpu_s: f64,
    pub simulator_rss_mib: f64,
    pub wire: Wire,
    pub transport_cuts: u64,
    pub transport_stalls: u64,
    pub catch_up: Option<CatchUp>,
    pub rollout: Option<RolloutRun>,
    pub series: Vec<Point>,
}

/// Everything `build` reads.
pub struct Inputs<'a> {
    pub config: &'a LoadConfig,
    pub database: &'static str,
    pub workers: usize,
    pub time_to_connect: f64,
    pub at_connect: &'a WorkerStats,
    /// Seconds, and the totals at the start and end of the steady window.
    pub steady: (f64, &'a WorkerStats, &'a WorkerStats),
    pub storms: &'a [Storm],
    pub chaos_crashes: usize,
    pub peak_handshaking: usize,
    pub sample: &'a Sample,
    pub stored: &'a BTreeMap<NodeId, u64>,
    #[allow(clippy::type_complexity)]
    pub fanout: Option<(
        &'a BTreeMap<RequestId, i64>,
        f64,
        f64,
        f64,
        &'a [(RequestId, String, i64)],
    )>,
    /// Central's idle RSS, connected RSS (KiB) and CPU milliseconds,
    /// summed over its processes.
    pub central: (u64, u64, u64),
    pub central_processes: usize,
    pub catch_up: Option<CatchUp>,
    pub rollout: Option<RolloutRun>,
    pub series: Vec<Point>,
}

pub fn build(i: Inputs<'_>) -> LoadReport {
    let n = i.config.nodes;
    let s = &i.sample.stats;
    // Per node, `kept` is what it took less what its bound dropped: fewer
    // stored is a loss. (More can be stored: a dropped sample that had been
    // sent on an earlier connection and stored, its ack lost — the store
    // keeps it once, and the node counted it as dropped.)
    let nodes_with_loss = i
        .sample
        .samples
        .iter()
        .filter(|(id, kept)| i.stored.get(id).copied().unwrap_or(0) < **kept)
        .count();
    let (steady_s, from, to) = i.steady;
    let bytes =
        (to.bytes_sent + to.bytes_received).saturating_sub(from.bytes_sent + from.bytes_received);
    let commands = i
        .fanout
        .map(|(submitted, submit_s, received_s, recorded_s, ages)| {
            let mut delivery: Vec<f64> = submitted
                .iter()
                .filter_map(|(request, at)| {
                    i.sample
                        .commands
                        .get(request)
                        .map(|arrived| (arrived - at) as f64)
                })
                .collect();
            let mut recorded: Vec<f64> = ages.iter().map(|(_, _, ms)| *ms as f64).collect();
            Commands {
                sent: submitted.len(),
                received: submitted
                    .keys()
                    .filter(|r| i.sample.commands.contains_key(r))
                    .count(),
                received_twice: i.sample.duplicate_commands,
                terminal: ages
                    .iter()
                    .filter(|(_, state, _)| !matches!(state.as_str(), "queued" | "sent"))
                    .count(),
                succeeded: ages
                    .iter()
                    .filter(|(_, state, _)| state == "succeeded")
                    .count(),
                submit_s,
                all_received_s: received_s + submit_s,
                all_recorded_s: recorded_s + received_s + submit_s,
                delivery_ms: Spread::of(&mut delivery),
                recorded_ms: Spread::of(&mut recorded),
            }
        });
    let (idle, connected, cpu_ms) = i.central;
    let central = (connected > 0).then(|| Process {
        processes: i.central_processes,
        rss_idle_mib: idle as f64 / 1024.0,
        rss_connected_mib: connected as f64 / 1024.0,
        rss_per_connection_kib: connected.saturating_sub(idle) as f64 / n.max(1) as f64,
        cpu_s: cpu_ms as f64 / 1000.0,
    });
    let c = i.config;
    LoadReport {
        nodes: n,
        workers: i.workers,
        scenario: c.scenario.name(),
        database: i.database,
        seed: c.seed,
        ramp_per_s: c.ramp_per_s,
        intervals: Intervals {
            heartbeat_ms: c.heartbeat_ms,
            telemetry_ms: c.telemetry_ms,
            health_ms: c.health_ms,
            telemetry_compression: 60_000.0 / c.telemetry_ms.max(1) as f64,
        },
        time_to_connect_s: i.time_to_connect,
        connect_handshakes_per_s: i.at_connect.dials as f64 / i.time_to_connect.max(0.001),
        peak_handshakes_in_flight: i.peak_handshaking,
        dials: s.dials,
        failed_dials: s.failed_dials,
        central_crashes: i.storms.to_vec(),
        chaos_central_crashes: i.chaos_crashes,
        max_backoff_s: s.max_backoff_ms as f64 / 1000.0,
        backoff_cap_s: nap_core::backoff::BackoffConfig::default()
            .cap
            .as_secs_f64(),
        rtt_ms: Spread::of_histogram(&i.sample.rtt),
        rtt_histogram: {
            let last = i
                .sample
                .rtt
                .iter()
                .rposition(|n| *n > 0)
                .map_or(0, |k| k + 1);
            i.sample.rtt[..last].to_vec()
        },
        telemetry: Telemetry {
            taken: s.samples,
            stored: i.stored.values().sum(),
            dropped_by_bound: s.dropped,
            nodes_with_loss,
        },
        commands,
        central,
        simulator_cpu_s: s.cpu_ms as f64 / 1000.0,
        simulator_rss_mib: s.rss_kib as f64 / 1024.0,
        wire: Wire {
            bytes,
            window_s: steady_s,
            bytes_per_node_minute: bytes as f64 / n.max(1) as f64 / (steady_s / 60.0).max(1e-9),
        },
        transport_cuts: s.cuts,
        transport_stalls: s.stalls,
        catch_up: i.catch_up,
        rollout: i.rollout,
        series: i.series,
    }
}

impl LoadReport {
    /// What went wrong, if anything: lost telemetry, a node that never came
    /// back or waited past the cap, a command run twice or never answered.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        let t = &self.telemetry;
        if t.stored + t.dropped_by_bound < t.taken || t.stored > t.taken || t.nodes_with_loss > 0 {
            out.push(format!(
                "telemetry lost: {} taken, {} stored, {} dropped by the bound, {} nodes lost some",
                t.taken, t.stored, t.dropped_by_bound, t.nodes_with_loss
            ));
        }
        if self.max_backoff_s > self.backoff_cap_s {
            out.push(format!(
                "a node waited {} s, past the {} s backoff cap",
                self.max_backoff_s, self.backoff_cap_s
            ));
        }
        if let Some(r) = &self.rollout
            && r.failed() > u64::try_from(r.limits.max_errors).unwrap_or(u64::MAX) + 1
        {
            out.push(format!(
                "rollout: {} failures, past maxErrors + 1 = {} in strict mode",
                r.failed(),
                r.limits.max_errors + 1
            ));
        }
        if let Some(r) = &self.rollout
            && r.failing_nodes == 0
            && r.state != "succeeded"
        {
            out.push(format!(
                "rollout: no node fails, yet it ended {} ({:?})",
                r.state, r.counts
            ));
        }
        if let Some(c) = &self.catch_up
            && c.policy_closes > 0
        {
            out.push(format!(
                "{} sessions closed with 1008 while catching up",
                c.policy_closes
            ));
        }
        if let Some(c) = &self.commands {
            if c.received_twice > 0 {
                out.push(format!("{} commands ran twice", c.received_twice));
            }
            if c.received != c.sent || c.terminal != c.sent {
                out.push(format!(
                    "commands: {} sent, {} received, {} terminal",
                    c.sent, c.received, c.terminal
                ));
            }
        }
        out
    }

    /// A few lines for a person.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} nodes ({} workers), {} on {}, telemetry every {} ms (×{:.0})\n",
            self.nodes,
            self.workers,
            self.scenario,
            self.database,
            self.intervals.telemetry_ms,
            self.intervals.telemetry_compression
        );
        if let Some(rate) = self.ramp_per_s {
            s += &format!("started at {rate} nodes/s\n");
        }
        s += &format!(
            "connected in {:.1} s ({:.0} handshakes/s, peak {} in flight); {} dials, {} failed\n",
            self.time_to_connect_s,
            self.connect_handshakes_per_s,
            self.peak_handshakes_in_flight,
            self.dials,
            self.failed_dials
        );
        for (k, storm) in self.central_crashes.iter().enumerate() {
            s += &format!(
                "central crash {}: all back in {:.1} s ({} handshakes, {:.0}/s)\n",
                k + 1,
                storm.back_s,
                storm.handshakes,
                storm.handshakes_per_s
            );
        }
        s += &format!(
            "longest backoff {:.1} s (cap {:.0} s); ping RTT p50 {} ms, p99 {} ms, max {} ms over {} pings\n",
            self.max_backoff_s,
            self.backoff_cap_s,
            self.rtt_ms.p50,
            self.rtt_ms.p99,
            self.rtt_ms.max,
            self.rtt_ms.count
        );
        s += &format!(
            "telemetry: {} taken, {} stored, {} dropped by the buffer's bound, {} nodes lost some\n",
            self.telemetry.taken,
            self.telemetry.stored,
            self.telemetry.dropped_by_bound,
            self.telemetry.nodes_with_loss
        );
        if let Some(r) = &self.rollout {
            s += &format!(
                "rollout: {} after {:.1} s; {} targets (canary {}, {} at a time, {} failures tolerated, strict); {:?}\n",
                r.state,
                r.seconds,
                r.limits.targets,
                r.limits.canary,
                r.limits.max_concurrency,
                r.limits.max_errors,
                r.counts
            );
            if r.central_crashes > 0 {
                s += &format!(
                    "  {} central processes killed while it ran (each in turn; the driver among them)\n",
                    r.central_crashes
                );
            }
        }
        if let Some(c) = &self.catch_up {
            s += &format!(
                "catch-up: {} samples per node{}{}; every node reconnected {:.1} s and caught up {:.1} s after {} (replay {:.1} s, {:.0} samples/s); {} closes with 1008, {} agent restarts\n",
                c.backlog_per_node,
                if c.outage_s > 0.0 {
                    format!(" after a {:.0} s outage", c.outage_s)
                } else {
                    String::new()
                },
                if c.restarted_mid_outage {
                    ", agents restarted mid-outage"
                } else {
                    ""
                },
                c.reconnect_s,
                c.catch_up_s,
                if c.outage_s > 0.0 {
                    "central's return"
                } else {
                    "the start"
                },
                c.catch_up_s - c.reconnect_s,
                c.samples_replayed as f64 / (c.catch_up_s - c.reconnect_s).max(0.001),
                c.policy_closes,
                c.agent_restarts
            );
        }
        if let Some(c) = &self.commands {
            s += &format!(
                "fan-out: {} sent, {} received ({} twice), {} terminal; all received {:.2} s, all recorded {:.2} s; delivery p50 {} ms, p99 {} ms, max {} ms\n",
                c.sent,
                c.received,
                c.received_twice,
                c.terminal,
                c.all_received_s,
                c.all_recorded_s,
                c.delivery_ms.p50,
                c.delivery_ms.p99,
                c.delivery_ms.max
            );
        }
        if let Some(c) = &self.central {
            s += &format!(
                "central ({} process{}): RSS {:.0} MiB idle, {:.0} MiB connected ({:.1} KiB per connection), CPU {:.1} s\n",
                c.processes,
                if c.processes == 1 { "" } else { "es" },
                c.rss_idle_mib,
                c.rss_connected_mib,
                c.rss_per_connection_kib,
                c.cpu_s
            );
        }
        s += &format!(
            "simulator: CPU {:.1} s, RSS {:.0} MiB; wire {:.0} bytes per node-minute over {:.0} s",
            self.simulator_cpu_s,
            self.simulator_rss_mib,
            self.wire.bytes_per_node_minute,
            self.wire.window_s
        );
        if self.transport_cuts + self.transport_stalls > 0 {
            s += &format!(
                "; chaos: {} cuts, {} stalls, {} central crashes",
                self.transport_cuts, self.transport_stalls, self.chaos_central_crashes
            );
        }
        s
    }

    /// Writes the charts beside the JSON report `path`, named after it.
    pub fn charts(&self, path: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let prefix = path.file_stem().and_then(|s| s.to_str()).unwrap_or("load");
        super::charts::write(self, dir, prefix)
    }
}
