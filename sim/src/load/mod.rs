//! `nap-sim load`: virtual nodes (the core's agent engine, one tokio task
//! each) over real TLS WebSockets against central, for load and chaos.
//!
//! The coordinator (this module) registers the nodes, starts central in its
//! own process (or uses one given by URL), splits the fleet over worker
//! processes that dial from source addresses 127.0.0.2, 127.0.0.3, … (each
//! under the 20,000-file limit of one process), runs the scenario, then
//! counts what the store holds per node against what every node sampled.
//!
//! Intervals are server-set, so the run compresses time by shortening them;
//! the report gives the intervals used.

mod central_proc;
mod charts;
pub mod proto;
mod report;
pub mod worker;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::{StreamExt as _, TryStreamExt as _};
use nap_agent::keys::NodeKey;
use nap_central::store::{AnyStore, NodeRecord, Storage, TokenRecord};
use nap_core::{NodeId, RequestId};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
use tokio::process::{ChildStdin, Command};

use central_proc::CentralSet;
pub use central_proc::serve as serve_central;
use proto::{NodeEntry, Order, WorkerLine, WorkerStats};
pub use report::LoadReport;
use report::{Point, Sample};

/// The scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Steady,
    ReconnectStorm,
    Chaos,
    Fanout,
    Replay,
    Outage,
    Rollout,
}

impl Scenario {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "steady" => Self::Steady,
            "reconnect-storm" => Self::ReconnectStorm,
            "chaos" => Self::Chaos,
            "fanout" => Self::Fanout,
            "replay" => Self::Replay,
            "outage" => Self::Outage,
            "rollout" => Self::Rollout,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Steady => "steady",
            Self::ReconnectStorm => "reconnect-storm",
            Self::Chaos => "chaos",
            Self::Fanout => "fanout",
            Self::Replay => "replay",
            Self::Outage => "outage",
            Self::Rollout => "rollout",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub nodes: usize,
    pub duration: Duration,
    pub scenario: Scenario,
    /// `postgres://…`; default SQLite in the run's directory.
    pub db: Option<String>,
    /// An already running central: its agent URL, operator API and CA.
    pub central: Option<ExternalCentral>,
    pub seed: u64,
    /// Nodes per worker process.
    pub per_worker: usize,
    pub heartbeat_ms: u64,
    pub telemetry_ms: u64,
    pub health_ms: u64,
    /// Central processes to start (at least enough for the nodes, at
    /// `PER_CENTRAL` each); more than one need `redis` and PostgreSQL.
    pub centrals: usize,
    pub redis: String,
    /// Nodes started per second across the fleet (all at once when unset).
    pub ramp_per_s: Option<u32>,
    /// `replay`: samples each node starts with.
    pub backlog: usize,
    /// `outage`: how long central is down.
    pub outage: Duration,
    /// `outage`: every agent restarts from its persisted state halfway.
    pub restart_mid_outage: bool,
    /// `rollout`: the share of nodes whose commands fail, in percent.
    pub fail_percent: u8,
    /// `rollout`: kill every central process in turn while it runs.
    pub crash_centrals: bool,
}

/// Connections one central process is given (of its 20,000 files).
pub const PER_CENTRAL: usize = 18_000;

/// A central this run does not start.
#[derive(Debug, Clone)]
pub struct ExternalCentral {
    pub url: String,
    pub api: String,
    pub ca: PathBuf,
}

/// The coordinator's view of one worker.
struct Worker {
    stdin: ChildStdin,
    child: tokio::process::Child,
    latest: Arc<Mutex<WorkerStats>>,
    last: tokio::sync::oneshot::Receiver<WorkerLine>,
}

/// Every worker's latest counters, summed.
fn total(workers: &[Worker]) -> WorkerStats {
    let mut t = WorkerStats::default();
    for w in workers {
        t.add(&w.latest.lock().map(|s| s.clone()).unwrap_or_default());
    }
    t
}

/// Lets the process hold as many files as the hard limit allows.
fn raise_open_files() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// Raises the open-file limit; for every process of a run.
pub fn prepare_process() {
    raise_open_files();
}

/// The run's shared state: workers, central, the time series.
struct Run {
    workers: Vec<Worker>,
    central: Option<CentralSet>,
    started: Instant,
    series: Vec<Point>,
    peak_handshaking: usize,
}

impl Run {
    /// Records one point of the series and returns the totals.
    fn sample(&mut self) -> WorkerStats {
        let t = total(&self.workers);
        self.peak_handshaking = self.peak_handshaking.max(t.handshaking);
        let (central_cpu_ms, central_rss_kib) =
            self.central.as_ref().map(|c| c.usage()).unwrap_or_default();
        self.series.push(Point {
            t_s: self.started.elapsed().as_secs_f64(),
            connected: t.connected,
            dials: t.dials,
            handshaking: t.handshaking,
            central_rss_kib,
            central_cpu_ms,
        });
        t
    }

    /// Samples every 250 ms until `done` holds; the seconds it took.
    async fn wait_until(
        &mut self,
        what: &str,
        limit: Duration,
        mut done: impl FnMut(&WorkerStats) -> bool,
    ) -> anyhow::Result<f64> {
        let started = Instant::now();
        loop {
            let t = self.sample();
            if done(&t) {
                return Ok(started.elapsed().as_secs_f64());
            }
            if started.elapsed() > limit {
                bail!("{what}: not within {limit:?} ({} connected)", t.connected);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Samples for `d`.
    async fn hold(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            self.sample();
            tokio::time::sleep(Duration::from_millis(500).min(until - Instant::now())).await;
        }
    }

    async fn order(&mut self, order: Order) -> anyhow::Result<()> {
        let line = format!("{}\n", serde_json::to_string(&order)?);
        for w in &mut self.workers {
            w.stdin.write_all(line.as_bytes()).await?;
            w.stdin.flush().await?;
        }
        Ok(())
    }
}

/// What differs between one worker and the next.
struct WorkerArgs {
    source: Option<String>,
    seed: u64,
    chaos: Option<Duration>,
    start_per_s: Option<f64>,
    backlog: usize,
    persist: bool,
}

async fn spawn_worker(
    nodes_file: &std::path::Path,
    url: &str,
    ca: &std::path::Path,
    args: WorkerArgs,
) -> anyhow::Result<Worker> {
    let WorkerArgs {
        source,
        seed,
        chaos,
        start_per_s,
        backlog,
        persist,
    } = args;
    let mut command = Command::new(std::env::current_exe()?);
    command
        .arg("worker")
        .arg("--url")
        .arg(url)
        .arg("--ca")
        .arg(ca)
        .arg("--nodes-file")
        .arg(nodes_file)
        .arg("--seed")
        .arg(seed.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    if let Some(source) = source {
        command.arg("--source").arg(source);
    }
    if let Some(mean) = chaos {
        command
            .arg("--chaos-mean-ms")
            .arg(mean.as_millis().to_string());
    }
    if let Some(rate) = start_per_s {
        command.arg("--start-per-s").arg(rate.to_string());
    }
    if backlog > 0 {
        command.arg("--backlog").arg(backlog.to_string());
    }
    if persist {
        command.arg("--persist");
    }
    let mut child = command.spawn().context("starting a worker")?;
    let stdin = child.stdin.take().context("worker stdin")?;
    let stdout = child.stdout.take().context("worker stdout")?;
    let latest = Arc::new(Mutex::new(WorkerStats::default()));
    let (last_tx, last) = tokio::sync::oneshot::channel();
    let slot = Arc::clone(&latest);
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let mut last_tx = Some(last_tx);
        while let Ok(Some(line)) = lines.next_line().await {
            match serde_json::from_str::<WorkerLine>(&line) {
                Ok(WorkerLine::Stats(s)) => {
                    if let Ok(mut l) = slot.lock() {
                        *l = s;
                    }
                }
                Ok(done @ WorkerLine::Final { .. }) => {
                    if let (WorkerLine::Final { stats, .. }, Ok(mut l)) = (&done, slot.lock()) {
                        *l = stats.clone();
                    }
                    if let Some(tx) = last_tx.take() {
                        let _ = tx.send(done);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "a worker said something unreadable"),
            }
        }
    });
    Ok(Worker {
        stdin,
        child,
        latest,
        last,
    })
}

async fn operator_token(store: &AnyStore) -> anyhow::Result<String> {
    let token = nap_central::api::tokens::new_api_token()?;
    let record = TokenRecord {
        name: "nap-sim-load".into(),
        role: nap_central::api::tokens::Role::Operator.as_str().into(),
        user: None,
    };
    store
        .create_api_token(
            &nap_central::api::tokens::token_hash(&token),
            record,
            nap_core::WallTime::from(chrono::Utc::now()),
        )
        .await?;
    Ok(token)
}

/// Sends one `health_check` to every node with one broadcast through the
/// operator API; the request ids, each with the instant it was submitted.
async fn fan_out(
    api: &str,
    token: &str,
    ids: &[NodeId],
) -> anyhow::Result<BTreeMap<RequestId, i64>> {
    let body = serde_json::json!({ "nodes": ids, "command": { "type": "health_check" } });
    let at = chrono::Utc::now().timestamp_millis();
    let (status, answer) =
        crate::http::post(&format!("{api}/api/v1/commands/broadcast"), token, &body).await?;
    if status != 202 {
        bail!("broadcast: {status} {answer}");
    }
    let commands = answer["commands"]
        .as_array()
        .context("the broadcast's answer lists no commands")?;
    if commands.len() != ids.len() {
        bail!(
            "broadcast to {} nodes issued {} commands",
            ids.len(),
            commands.len()
        );
    }
    commands
        .iter()
        .map(|c| Ok((serde_json::from_value(c["requestId"].clone())?, at)))
        .collect()
}

/// The `rollout` scenario's strategy: a canary, then 10 % at a time, at
/// most 1 % failing, strict — what an operator would start a deploy with.
fn rollout_request() -> serde_json::Value {
    serde_json::json!({
        "type": "broadcast",
        "command": "execute",
        "selector": "role=web",
        "params": { "command": "uptime" },
        "strategy": {
            "canary": "1%", "maxConcurrency": "10%", "maxErrors": "1%", "errorMode": "strict",
        },
    })
}

/// Starts one rollout through the operator API and follows it to its end.
#[allow(clippy::print_stdout)]
async fn roll_out(
    run: &mut Run,
    api: &str,
    token: &str,
    crash_centrals: bool,
) -> anyhow::Result<report::RolloutRun> {
    let request = rollout_request();
    let t0 = Instant::now();
    let (status, created) =
        crate::http::post(&format!("{api}/api/v1/rollouts"), token, &request).await?;
    if status != 201 {
        bail!("rollout: {status} {created}");
    }
    let id = created["rolloutId"]
        .as_str()
        .context("the rollout's answer has no id")?
        .to_owned();
    println!(
        "rollout {id}: {} targets, limits {}",
        created["targets"], created["limits"]
    );
    let url = format!("{api}/api/v1/rollouts/{id}?limit=1");
    // Each process in turn, a few seconds apart, once the rollout is under
    // way: whichever drives it dies once (each restarts).
    let mut crashes = if crash_centrals {
        run.central.as_ref().map_or(0, CentralSet::count)
    } else {
        0
    };
    let mut next_crash = t0 + Duration::from_secs(3);
    let mut crashed = 0;
    let report = loop {
        if crashes > 0 && Instant::now() >= next_crash {
            if let Some(central) = run.central.as_mut() {
                // The oldest process: after a turn, each one has died once.
                println!("crashing a central process during the rollout");
                central.crash_one(0).await?;
                crashed += 1;
            }
            crashes -= 1;
            next_crash = Instant::now() + Duration::from_secs(4);
        }
        // A process killed mid-request: ask again.
        let Ok((status, report)) = crate::http::get(&url, token).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        if status != 200 {
            bail!("rollout {id}: {status} {report}");
        }
        let state = report["state"].as_str().unwrap_or_default();
        let in_flight = ["queued", "sent", "held", "approved"]
            .iter()
            .filter_map(|s| report["counts"][s].as_u64())
            .sum::<u64>();
        if matches!(
            state,
            "succeeded" | "completed_with_skips" | "halted" | "aborted" | "deadline_passed"
        ) && in_flight == 0
        {
            break report;
        }
        if t0.elapsed() > Duration::from_secs(600) {
            bail!("rollout {id} still {state} after 600 s");
        }
        run.sample();
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let counts: BTreeMap<String, u64> = serde_json::from_value(report["counts"].clone())?;
    Ok(report::RolloutRun {
        state: report["state"].as_str().unwrap_or_default().to_owned(),
        strategy: request["strategy"].clone(),
        limits: serde_json::from_value(created["limits"].clone())?,
        counts,
        seconds: t0.elapsed().as_secs_f64(),
        central_crashes: crashed,
        failing_nodes: 0,
    })
}

#[allow(clippy::print_stdout, clippy::too_many_lines)]
pub async fn run(config: LoadConfig) -> anyhow::Result<LoadReport> {
    raise_open_files();
    let dir = std::env::temp_dir().join(format!("nap-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let n = config.nodes;
    let db = config
        .db
        .clone()
        .unwrap_or_else(|| format!("sqlite:{}", dir.join("central.db").display()));
    let store = AnyStore::open(&db, 4).await.context("opening the store")?;
    store.migrate().await?;

    // The fleet's identities, registered as an operator would.
    println!("registering {n} nodes");
    let mut entries = Vec::with_capacity(n);
    for k in 0..n {
        let (key, key_pem) = NodeKey::generate()?;
        let id = NodeId::from(uuid::Uuid::new_v4());
        store
            .add_node(NodeRecord {
                id,
                name: format!("load-{k:06}"),
                public_key_pem: key.public_pem(),
                labels: BTreeMap::from([("role".to_owned(), "web".to_owned())]),
                created_at: nap_core::WallTime::from(chrono::Utc::now()),
                revoked: false,
                status: None,
                last_seen: None,
                agent_version: None,
            })
            .await?;
        // Spread over the fleet, not the first ones: 37 is prime to 100.
        let fails = (k * 37) % 100 < usize::from(config.fail_percent);
        entries.push(NodeEntry { id, key_pem, fails });
    }
    let token = operator_token(&store).await?;

    // Central.
    let serve = nap_central::ServeConfig {
        listen: "127.0.0.1:0".parse()?,
        api_listen: "127.0.0.1:0".parse()?,
        db: db.clone(),
        heartbeat_ms: config.heartbeat_ms,
        telemetry_ms: config.telemetry_ms,
        health_ms: config.health_ms,
        offline_grace_ms: 5_000,
        max_handshakes: 512,
        max_connections: 19_000,
        ..nap_central::ServeConfig::default()
    };
    let centrals = config.centrals.max(n.div_ceil(PER_CENTRAL));
    if config.central.is_none() && centrals > 1 && db.starts_with("sqlite:") {
        bail!("{centrals} central processes share one database: give --db postgres://…");
    }
    let serve = nap_central::ServeConfig {
        redis: (centrals > 1).then(|| config.redis.clone()),
        redis_prefix: format!("nap-load-{}", std::process::id()),
        max_connections: PER_CENTRAL + 1_000,
        // Killed in turn: the rollout's wait for nodes to reconnect after
        // each take-over is shortened so that the run stays short.
        rollout_hold_s: if config.crash_centrals {
            10
        } else {
            serve.rollout_hold_s
        },
        ..serve
    };
    let (central, url, api, ca) = match &config.central {
        Some(external) => (
            None,
            external.url.clone(),
            external.api.clone(),
            external.ca.clone(),
        ),
        None => {
            let certs = nap_central::tls::write_dev_certs(&dir.join("certs"))?;
            let serve = nap_central::ServeConfig {
                tls_cert: certs.cert.clone(),
                tls_key: certs.key.clone(),
                ..serve
            };
            let central = CentralSet::start(serve, centrals).await?;
            let url = format!("wss://localhost:{}/v1/agent", central.agent_port);
            let api = format!("http://127.0.0.1:{}", central.api_port);
            (Some(central), url, api, certs.ca)
        }
    };
    let (central_cpu_start, central_rss_idle) =
        central.as_ref().map(|c| c.usage()).unwrap_or_default();

    // Workers, each with its slice and its source address.
    let per_worker = config.per_worker.max(1);
    let chaos = (config.scenario == Scenario::Chaos).then(|| Duration::from_secs(20));
    let mut workers = Vec::new();
    for (i, slice) in entries.chunks(per_worker).enumerate() {
        let file = dir.join(format!("worker-{i}.jsonl"));
        let lines: Vec<String> = slice
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<_, _>>()?;
        std::fs::write(&file, lines.join("\n"))?;
        let source = (i < 250).then(|| format!("127.0.0.{}", i + 2));
        let seed = config.seed.wrapping_mul(1_000_003).wrapping_add(i as u64);
        let start_per_s = config
            .ramp_per_s
            .map(|r| f64::from(r) * slice.len() as f64 / n.max(1) as f64);
        let backlog = if config.scenario == Scenario::Replay {
            config.backlog
        } else {
            0
        };
        let worker = WorkerArgs {
            source,
            seed,
            chaos,
            start_per_s,
            backlog,
            persist: config.scenario == Scenario::Outage && config.restart_mid_outage,
        };
        workers.push(spawn_worker(&file, &url, &ca, worker).await?);
    }
    let mut run = Run {
        workers,
        central,
        started: Instant::now(),
        series: Vec::new(),
        peak_handshaking: 0,
    };
    println!(
        "{n} nodes in {} worker processes against {url}",
        run.workers.len()
    );

    let time_to_connect = run
        .wait_until("all nodes connected", Duration::from_secs(600), |t| {
            t.connected >= n
        })
        .await?;
    let at_connect = run.sample();
    let (_, central_rss_connected) = run.central.as_ref().map(|c| c.usage()).unwrap_or_default();
    println!("{n} nodes connected in {time_to_connect:.1} s");
    let steady_from = (Instant::now(), at_connect.clone());

    let mut storms = Vec::new();
    let mut crashes = 0;
    let mut fanout = None;
    let mut catch_up = None;
    let mut rollout = None;
    match config.scenario {
        Scenario::Replay => {
            // Counted from the start: connecting is part of catching up.
            let started = run.started;
            let reconnect_s = started.elapsed().as_secs_f64();
            run.wait_until("every node caught up", Duration::from_secs(3600), |t| {
                t.behind == 0 && t.connected >= n
            })
            .await?;
            let t = run.sample();
            catch_up = Some(report::CatchUp {
                backlog_per_node: config.backlog,
                outage_s: 0.0,
                restarted_mid_outage: false,
                reconnect_s,
                catch_up_s: started.elapsed().as_secs_f64(),
                samples_replayed: (config.backlog * n) as u64,
                policy_closes: t.policy_closes,
                agent_restarts: t.restarts,
            });
            run.hold(config.duration).await;
        }
        Scenario::Outage => {
            catch_up = Some(outage(&mut run, &config, n).await?);
            run.hold(config.duration).await;
        }
        Scenario::Steady => run.hold(config.duration).await,
        Scenario::Rollout => {
            run.hold(Duration::from_secs(2)).await;
            let mut run_of = roll_out(&mut run, &api, &token, config.crash_centrals).await?;
            run_of.failing_nodes = entries.iter().filter(|e| e.fails).count();
            rollout = Some(run_of);
            run.hold(config.duration).await;
        }
        Scenario::ReconnectStorm => {
            run.hold(config.duration / 2).await;
            storms.push(restart_central(&mut run, n).await?);
            run.hold(config.duration / 2).await;
        }
        Scenario::Chaos => {
            // Central crashes at seeded moments while nodes cut and stall
            // their own transports.
            let mut rng = nap_core::rng::Prng::new(config.seed);
            let rounds = (config.duration.as_secs() / 60).max(1);
            run.order(Order::ChaosOn).await?;
            for _ in 0..rounds {
                let wait = rng.duration_between(Duration::from_secs(10), Duration::from_secs(50));
                run.hold(wait).await;
                if let Some(central) = run.central.as_mut() {
                    // One process of several: its nodes move to the others.
                    let which = usize::try_from(rng.between(0, 1 << 16)).unwrap_or(0);
                    println!("crashing a central process");
                    central.crash_one(which).await?;
                    crashes += 1;
                }
            }
            // Faults stop; the fleet must come back whole.
            run.order(Order::ChaosOff).await?;
            let back = run
                .wait_until(
                    "all nodes back after the chaos",
                    Duration::from_secs(400),
                    |t| t.connected >= n,
                )
                .await?;
            println!("chaos over: all {n} nodes back within {back:.1} s");
        }
        Scenario::Fanout => {
            run.hold(Duration::from_secs(2)).await;
            let ids: Vec<NodeId> = entries.iter().map(|e| e.id).collect();
            let t0 = Instant::now();
            let submitted = fan_out(&api, &token, &ids).await?;
            let submit_s = t0.elapsed().as_secs_f64();
            let received = run
                .wait_until(
                    "every node received its command",
                    Duration::from_secs(120),
                    |t| t.commands_received >= n,
                )
                .await?;
            let recorded = {
                let started = Instant::now();
                loop {
                    let open = store.open_commands().await?;
                    if open.is_empty() {
                        break started.elapsed().as_secs_f64();
                    }
                    if started.elapsed() > Duration::from_secs(120) {
                        bail!("{} commands still open after 120 s", open.len());
                    }
                    run.sample();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            };
            fanout = Some((submitted, submit_s, received, recorded));
            run.hold(config.duration).await;
        }
    }
    let steady_s = steady_from.0.elapsed().as_secs_f64();
    let before_quiesce = run.sample();

    // Stop sampling, let every buffer drain, then count.
    run.order(Order::Quiesce).await?;
    run.wait_until("every sample acked", Duration::from_secs(300), |t| {
        t.buffered == 0 && t.connected >= n
    })
    .await?;
    run.order(Order::Stop).await?;
    let mut finals = Vec::new();
    for w in std::mem::take(&mut run.workers) {
        let last = tokio::time::timeout(Duration::from_secs(60), w.last)
            .await
            .context("a worker did not finish")??;
        finals.push(last);
        let mut child = w.child;
        let _ = child.wait().await;
    }
    let (central_cpu_end, _) = run.central.as_ref().map(|c| c.usage()).unwrap_or_default();

    let mut sample = Sample::default();
    for line in finals {
        if let WorkerLine::Final {
            stats,
            rtt,
            samples,
            commands,
        } = line
        {
            sample.add_worker(&stats, &rtt, samples, commands);
        }
    }
    // Counted on the pool's four connections at once: one after another,
    // 10,000 counts over 14 M rows take a quarter of an hour.
    let counts: Vec<(NodeId, u64)> = futures_util::stream::iter(entries.iter().map(|e| {
        let store = &store;
        async move { Ok::<_, anyhow::Error>((e.id, store.count_telemetry(e.id).await?)) }
    }))
    .buffer_unordered(4)
    .try_collect()
    .await?;
    let stored: BTreeMap<NodeId, u64> = counts.into_iter().collect();
    let mut command_ages = Vec::new();
    if let Some((submitted, _, _, _)) = &fanout {
        for request in submitted.keys() {
            if let Some(c) = store.get_command(*request).await? {
                command_ages.push((
                    *request,
                    c.state.as_str().to_owned(),
                    c.updated_at.unix_millis() - c.created_at.unix_millis(),
                ));
            }
        }
    }
    let central_processes = run.central.as_ref().map_or(0, CentralSet::count);
    if let Some(c) = run.central.take() {
        c.stop().await?;
    }
    let report = report::build(report::Inputs {
        config: &config,
        database: if db.starts_with("sqlite:") {
            "sqlite"
        } else {
            "postgresql"
        },
        workers: entries.chunks(per_worker).len(),
        time_to_connect,
        at_connect: &at_connect,
        steady: (steady_s, &steady_from.1, &before_quiesce),
        storms: &storms,
        chaos_crashes: crashes,
        peak_handshaking: run.peak_handshaking,
        sample: &sample,
        stored: &stored,
        fanout: fanout
            .as_ref()
            .map(|(submitted, submit_s, received, recorded)| {
                (
                    submitted,
                    *submit_s,
                    *received,
                    *recorded,
                    command_ages.as_slice(),
                )
            }),
        central: (
            central_rss_idle,
            central_rss_connected,
            central_cpu_end.saturating_sub(central_cpu_start),
        ),
        central_processes,
        catch_up,
        rollout,
        series: std::mem::take(&mut run.series),
    });
    Ok(report)
}

/// Central is down for the configured outage while the fleet keeps
/// sampling (every agent restarting halfway, if asked); then how long until
/// every node has caught up once central is back.
#[allow(clippy::print_stdout)]
async fn outage(run: &mut Run, config: &LoadConfig, n: usize) -> anyhow::Result<report::CatchUp> {
    let Some(central) = run.central.as_mut() else {
        bail!("no central of ours to take down");
    };
    println!("central down for {:?}", config.outage);
    central.kill_all().await?;
    if config.restart_mid_outage {
        run.hold(config.outage / 2).await;
        println!("restarting every agent from what it persisted");
        run.order(Order::Restart).await?;
        run.hold(config.outage / 2).await;
    } else {
        run.hold(config.outage).await;
    }
    let at_return = run.sample();
    let Some(central) = run.central.as_mut() else {
        bail!("no central of ours to start");
    };
    central.start_all().await?;
    let back = Instant::now();
    println!("central back; {} samples buffered", at_return.buffered);
    let reconnect_s = run
        .wait_until(
            "every node reconnected after the outage",
            Duration::from_secs(900),
            |t| t.connected >= n,
        )
        .await?;
    run.wait_until(
        "every node caught up after the outage",
        Duration::from_secs(3600),
        |t| t.behind == 0 && t.connected >= n,
    )
    .await?;
    let t = run.sample();
    Ok(report::CatchUp {
        backlog_per_node: at_return.buffered / n.max(1),
        outage_s: config.outage.as_secs_f64(),
        restarted_mid_outage: config.restart_mid_outage,
        reconnect_s,
        catch_up_s: back.elapsed().as_secs_f64(),
        samples_replayed: at_return.buffered as u64,
        policy_closes: t.policy_closes,
        agent_restarts: t.restarts,
    })
}

/// Crashes central and starts it again on the same ports; how long until
/// every node was back, and the handshake rate meanwhile.
#[allow(clippy::print_stdout)]
async fn restart_central(run: &mut Run, n: usize) -> anyhow::Result<report::Storm> {
    let dials_before = run.sample().dials;
    let Some(central) = run.central.as_mut() else {
        bail!("no central of ours to restart");
    };
    println!("crashing central");
    central.crash_all().await?;
    let restarted_at = Instant::now();
    // The workers' counters lag by up to half a second: first see the fall.
    run.wait_until("the fleet noticed", Duration::from_secs(60), |t| {
        t.connected < n
    })
    .await?;
    run.wait_until("all nodes back", Duration::from_secs(400), |t| {
        t.connected >= n
    })
    .await?;
    let back = restarted_at.elapsed().as_secs_f64();
    let dials = run.sample().dials - dials_before;
    println!("all {n} nodes back {back:.1} s after the crash");
    Ok(report::Storm {
        back_s: back,
        handshakes: dials,
        handshakes_per_s: dials as f64 / back.max(0.001),
    })
}
