//! What workers and the coordinator say to each other: one JSON object per
//! line. Workers print [`WorkerLine`]s on stdout; the coordinator writes
//! [`Order`]s to their stdin.

use nap_core::{NodeId, RequestId};
use serde::{Deserialize, Serialize};

/// One node as a worker receives it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeEntry {
    pub id: NodeId,
    pub key_pem: String,
    /// Its commands fail (exit 1): the `rollout` scenario's failing share.
    #[serde(default)]
    pub fails: bool,
}

/// A worker's counters at one moment (cumulative since it started).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkerStats {
    pub connected: usize,
    pub handshaking: usize,
    pub dials: u64,
    pub failed_dials: u64,
    pub samples: u64,
    pub buffered: usize,
    pub max_backoff_ms: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub commands_received: usize,
    pub cuts: u64,
    pub stalls: u64,
    /// Nodes with more than one sample unacked (still catching up).
    pub behind: usize,
    /// Sessions central closed with 1008.
    pub policy_closes: u64,
    /// Agent processes restarted from what they persisted.
    pub restarts: u64,
    /// Samples the agents' buffer bound dropped (counted, not lost).
    pub dropped: u64,
    /// CPU time of the worker process (user + system), milliseconds.
    pub cpu_ms: u64,
    pub rss_kib: u64,
}

impl WorkerStats {
    /// Adds another worker's counters (the longest backoff is the larger).
    pub fn add(&mut self, other: &Self) {
        self.connected += other.connected;
        self.handshaking += other.handshaking;
        self.dials += other.dials;
        self.failed_dials += other.failed_dials;
        self.samples += other.samples;
        self.buffered += other.buffered;
        self.max_backoff_ms = self.max_backoff_ms.max(other.max_backoff_ms);
        self.bytes_sent += other.bytes_sent;
        self.bytes_received += other.bytes_received;
        self.commands_received += other.commands_received;
        self.cuts += other.cuts;
        self.stalls += other.stalls;
        self.behind += other.behind;
        self.policy_closes += other.policy_closes;
        self.restarts += other.restarts;
        self.dropped += other.dropped;
        self.cpu_ms += other.cpu_ms;
        self.rss_kib += other.rss_kib;
    }
}

/// What a worker prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerLine {
    Stats(WorkerStats),
    /// The last line, after `stop`.
    Final {
        stats: WorkerStats,
        /// Ping round trips by millisecond (the last bucket holds the rest).
        rtt: Vec<u64>,
        /// Samples taken per node, less those its buffer's bound dropped.
        samples: Vec<(NodeId, u64)>,
        /// Commands that reached a node, with the wall-clock millisecond.
        commands: Vec<(RequestId, i64)>,
    },
}

/// What the coordinator asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Start inflicting the chaos scenario's faults.
    ChaosOn,
    /// Stop them.
    ChaosOff,
    /// Stop taking samples so buffers drain.
    Quiesce,
    /// Kill every node's agent process and start it again from what it
    /// persisted (a crash and restart, e.g. mid-outage).
    Restart,
    /// Shut every node down and print the final line.
    Stop,
}

/// CPU time (user + system) and resident memory of a process, from /proc.
pub fn process_usage(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status.lines().find_map(|l| {
        l.strip_prefix("VmRSS:")
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    })?;
    // Linux reports CPU time in clock ticks of 1/100 s (USER_HZ).
    Some((ticks * 10, rss))
}
