//! `nap-sim load`: virtual nodes (the core's agent engine, one tokio task
//! each) over real TLS WebSockets against a central spawned in this process.
//! Scenarios: `steady`, and `reconnect-storm` (central restarts mid-run).
//! Intervals are shortened (they are server-set) to compress time; the
//! report says by how much. The run fails when telemetry is lost or the
//! fleet does not come back.
//!
//! One process holds both ends of every connection, so it is bounded by the
//! file-descriptor limit (about 9,000 nodes here); larger runs need the
//! multi-process split that is still to come.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nap_agent::keys::NodeKey;
use nap_central::store::{NodeRecord, Storage};
use nap_core::NodeId;
use serde::Serialize;

use crate::virtual_node::{self, Fleet};

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub nodes: usize,
    pub duration: Duration,
    pub storm: bool,
    pub db: Option<String>,
    pub seed: u64,
}

/// What the run measured.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadReport {
    pub nodes: usize,
    pub scenario: &'static str,
    pub database: String,
    /// Real seconds per simulated minute of telemetry (60 s → this).
    pub telemetry_interval_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub time_to_connect_s: f64,
    pub handshakes_per_s: f64,
    pub storm_reconnect_s: Option<f64>,
    pub max_backoff_s: f64,
    pub dials: u64,
    pub telemetry_taken: u64,
    pub telemetry_stored: u64,
    pub rss_mib: f64,
    pub rss_per_connection_kib: f64,
}

fn rss_kib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| {
                    l.strip_prefix("VmRSS:")
                        .map(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                })
                .flatten()
        })
        .unwrap_or(0.0)
}

async fn wait_until(
    what: &str,
    limit: Duration,
    mut done: impl FnMut() -> bool,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    while !done() {
        if started.elapsed() > limit {
            bail!("{what}: not within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(started.elapsed().as_secs_f64())
}

#[allow(clippy::print_stdout)]
pub async fn run(config: LoadConfig) -> anyhow::Result<LoadReport> {
    let dir = tempfile_dir()?;
    let certs = nap_central::tls::write_dev_certs(&dir.join("certs"))?;
    let db = config
        .db
        .clone()
        .unwrap_or_else(|| format!("sqlite:{}", dir.join("central.db").display()));
    let central_config = nap_central::ServeConfig {
        listen: "127.0.0.1:0".parse()?,
        api_listen: "127.0.0.1:0".parse()?,
        tls_cert: certs.cert.clone(),
        tls_key: certs.key.clone(),
        db: db.clone(),
        heartbeat_ms: 5_000,
        telemetry_ms: 2_000,
        health_ms: 30_000,
        offline_grace_ms: 5_000,
        max_handshakes: 512,
        max_connections: 19_000,
        ..nap_central::ServeConfig::default()
    };
    let running = nap_central::server::start(central_config.clone())
        .await
        .context("central")?;
    let port = running.agent_addr.port();
    let url = format!("wss://localhost:{port}/v1/agent");
    let tls = nap_agent::transport::tls_config(&certs.ca)?;
    let fleet = Arc::new(Fleet::new(config.nodes));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut ids = Vec::with_capacity(config.nodes);
    let mut tasks = Vec::with_capacity(config.nodes);
    for k in 0..config.nodes {
        let (key, _) = NodeKey::generate()?;
        let id = NodeId::from(uuid::Uuid::new_v4());
        running
            .app
            .store
            .add_node(NodeRecord {
                id,
                name: format!("load-{k:05}"),
                public_key_pem: key.public_pem(),
                labels: BTreeMap::new(),
                created_at: nap_core::WallTime::from(chrono::Utc::now()),
                revoked: false,
                status: None,
                last_seen: None,
                agent_version: None,
            })
            .await?;
        ids.push(id);
        tasks.push((id, key));
    }
    let rss_before = rss_kib();
    let started = Instant::now();
    let mut handles = Vec::with_capacity(config.nodes);
    for (k, (id, key)) in tasks.into_iter().enumerate() {
        handles.push(tokio::spawn(virtual_node::run(
            k,
            id,
            key,
            url.clone(),
            Arc::clone(&tls),
            config.seed.wrapping_add(k as u64),
            Arc::clone(&fleet),
            stopped.clone(),
        )));
    }
    let n = config.nodes;
    let time_to_connect = wait_until("all nodes connected", Duration::from_secs(120), || {
        fleet.connected.load(Ordering::Relaxed) >= n
    })
    .await?;
    let dials_at_connect = fleet.dials.load(Ordering::Relaxed);
    println!("{n} nodes connected in {time_to_connect:.1} s");
    let rss_connected = rss_kib();

    let mut running = running;
    let mut storm_reconnect = None;
    if config.storm {
        tokio::time::sleep(config.duration / 2).await;
        println!("reconnect storm: restarting central");
        running.shutdown().await;
        // Connections drop as the drain closes them; the fleet backs off and returns.
        wait_until("the fleet noticed", Duration::from_secs(30), || {
            fleet.connected.load(Ordering::Relaxed) < n
        })
        .await?;
        let mut restarted = central_config.clone();
        restarted.listen = format!("127.0.0.1:{port}").parse()?;
        running = nap_central::server::start(restarted)
            .await
            .context("central restart")?;
        let back = wait_until("all nodes back", Duration::from_secs(400), || {
            fleet.connected.load(Ordering::Relaxed) >= n
        })
        .await?;
        println!("all {n} nodes back {back:.1} s after the restart");
        storm_reconnect = Some(back);
        tokio::time::sleep(config.duration / 2).await;
    } else {
        tokio::time::sleep(config.duration).await;
    }

    // Stop sampling, let every buffer drain, then count.
    fleet.quiesce.store(true, Ordering::Relaxed);
    wait_until("every sample acked", Duration::from_secs(120), || {
        fleet
            .buffered
            .iter()
            .all(|b| b.load(Ordering::Relaxed) == 0)
    })
    .await?;
    let taken = fleet.samples.load(Ordering::Relaxed);
    let mut stored = 0;
    for id in &ids {
        stored += running.app.store.count_telemetry(*id).await?;
    }
    let report = LoadReport {
        nodes: n,
        scenario: if config.storm {
            "reconnect-storm"
        } else {
            "steady"
        },
        database: if db.starts_with("sqlite:") {
            "sqlite".into()
        } else {
            "postgresql".into()
        },
        telemetry_interval_ms: central_config.telemetry_ms,
        heartbeat_interval_ms: central_config.heartbeat_ms,
        time_to_connect_s: time_to_connect,
        handshakes_per_s: dials_at_connect as f64 / time_to_connect.max(0.001),
        storm_reconnect_s: storm_reconnect,
        max_backoff_s: fleet.max_backoff_ms.load(Ordering::Relaxed) as f64 / 1000.0,
        dials: fleet.dials.load(Ordering::Relaxed),
        telemetry_taken: taken,
        telemetry_stored: stored,
        rss_mib: rss_connected / 1024.0,
        rss_per_connection_kib: (rss_connected - rss_before) / n.max(1) as f64,
    };
    let _ = stop.send(true);
    for h in handles {
        let _ = tokio::time::timeout(Duration::from_secs(5), h).await;
    }
    running.shutdown().await;
    let _ = started;
    Ok(report)
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("nap-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
