//! A worker process of `nap-sim load`: a slice of the fleet, dialling from
//! its own source address, reporting on stdout and taking orders on stdin.
//! Several workers keep every process under the machine's limit of open
//! files (one per connection) and spread the simulator over the cores.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use nap_agent::keys::NodeKey;
use nap_agent::transport::DialOptions;
use tokio::io::AsyncBufReadExt as _;

use super::proto::{NodeEntry, Order, WorkerLine, WorkerStats, process_usage};
use crate::virtual_node::{self, Chaos, Fleet, NodeSpec};

/// What one worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub url: String,
    pub ca: std::path::PathBuf,
    pub nodes_file: std::path::PathBuf,
    pub source: Option<std::net::IpAddr>,
    pub seed: u64,
    pub chaos: Option<Duration>,
    /// Nodes started per second (all at once when unset).
    pub start_per_s: Option<f64>,
    /// Samples each node starts with, unacked (the `replay` scenario).
    pub backlog: usize,
    /// Keep each node's persisted state, for `Order::Restart`.
    pub persist: bool,
}

fn stats(fleet: &Fleet) -> WorkerStats {
    let (cpu_ms, rss_kib) = process_usage(std::process::id()).unwrap_or_default();
    WorkerStats {
        connected: fleet.connected.load(Ordering::Relaxed),
        handshaking: fleet.handshaking.load(Ordering::Relaxed),
        dials: fleet.dials.load(Ordering::Relaxed),
        failed_dials: fleet.failed_dials.load(Ordering::Relaxed),
        samples: fleet.samples.load(Ordering::Relaxed),
        buffered: fleet
            .buffered
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .sum(),
        max_backoff_ms: fleet.max_backoff_ms.load(Ordering::Relaxed),
        bytes_sent: fleet.wire.sent.load(Ordering::Relaxed),
        bytes_received: fleet.wire.received.load(Ordering::Relaxed),
        commands_received: fleet.commands.lock().map(|c| c.len()).unwrap_or(0),
        cuts: fleet.cuts.load(Ordering::Relaxed),
        stalls: fleet.stalls.load(Ordering::Relaxed),
        behind: fleet.behind.load(Ordering::Relaxed),
        policy_closes: fleet.policy_closes.load(Ordering::Relaxed),
        restarts: fleet.restarts.load(Ordering::Relaxed),
        dropped: fleet
            .dropped_per_node
            .iter()
            .map(|d| d.load(Ordering::Relaxed))
            .sum(),
        cpu_ms,
        rss_kib,
    }
}

fn say(line: &WorkerLine) {
    let mut out = std::io::stdout().lock();
    if let Ok(text) = serde_json::to_string(line) {
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }
}

pub async fn run(config: WorkerConfig) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&config.nodes_file)
        .with_context(|| format!("reading {}", config.nodes_file.display()))?;
    let entries: Vec<NodeEntry> = text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .context("parsing the nodes file")?;
    let tls = nap_agent::transport::tls_config(&config.ca)?;
    let fleet = Arc::new(Fleet::new(entries.len()));
    let dial = DialOptions {
        local_addr: config.source,
        counters: Some(Arc::clone(&fleet.wire)),
        key_updates: None,
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (restart, restarts) = tokio::sync::watch::channel(0u64);
    let mut handles = Vec::with_capacity(entries.len());
    let mut pace = config
        .start_per_s
        .filter(|r| *r > 0.0)
        .map(|r| tokio::time::interval(Duration::from_secs_f64(1.0 / r)));
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    for (index, entry) in entries.iter().enumerate() {
        if let Some(pace) = &mut pace {
            // Starting at a pace: keep reporting meanwhile.
            loop {
                tokio::select! {
                    _ = pace.tick() => break,
                    _ = tick.tick() => say(&WorkerLine::Stats(stats(&fleet))),
                }
            }
        }
        let spec = NodeSpec {
            index,
            node_id: entry.id,
            key: NodeKey::from_pem(&entry.key_pem)?,
            url: config.url.clone(),
            tls: Arc::clone(&tls),
            seed: config.seed.wrapping_add(index as u64),
            dial: dial.clone(),
            chaos: config.chaos.map(|mean_interval| Chaos { mean_interval }),
            backlog: config.backlog,
            persist: config.persist,
            fails: entry.fails,
        };
        handles.push(tokio::spawn(virtual_node::run(
            spec,
            Arc::clone(&fleet),
            stopped.clone(),
            restarts.clone(),
        )));
        // Spread the first dials a little: a worker starting 5,000 nodes in
        // one instant measures its own scheduler, not central.
        if index % 100 == 99 {
            tokio::task::yield_now().await;
        }
    }
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            _ = tick.tick() => say(&WorkerLine::Stats(stats(&fleet))),
            line = lines.next_line() => {
                let order = match line {
                    Ok(Some(text)) => serde_json::from_str::<Order>(&text).ok(),
                    // The coordinator is gone: stop.
                    Ok(None) | Err(_) => Some(Order::Stop),
                };
                match order {
                    Some(Order::Quiesce) => fleet.quiesce.store(true, Ordering::Relaxed),
                    Some(Order::ChaosOn) => fleet.chaos_on.store(true, Ordering::Relaxed),
                    Some(Order::ChaosOff) => fleet.chaos_on.store(false, Ordering::Relaxed),
                    Some(Order::Restart) => restart.send_modify(|n| *n += 1),
                    Some(Order::Stop) => break,
                    None => {}
                }
            }
        }
    }
    let _ = stop.send(true);
    for h in handles {
        let _ = tokio::time::timeout(Duration::from_secs(5), h).await;
    }
    // What each node should have stored: what it took, less what its
    // buffer's bound dropped (and reported as `droppedSamples`).
    let samples = entries
        .iter()
        .zip(fleet.samples_per_node.iter().zip(&fleet.dropped_per_node))
        .map(|(e, (taken, dropped))| {
            let kept = taken
                .load(Ordering::Relaxed)
                .saturating_sub(dropped.load(Ordering::Relaxed));
            (e.id, kept)
        })
        .collect();
    let commands = fleet.commands.lock().map(|c| c.clone()).unwrap_or_default();
    say(&WorkerLine::Final {
        stats: stats(&fleet),
        rtt: fleet
            .rtt
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect(),
        samples,
        commands,
    });
    Ok(())
}
