//! `nap-sim`: the demo, and deterministic simulation of the fleet.

use clap::{Parser, Subcommand};

mod demo;
mod det;
mod http;
mod load;
mod virtual_node;

#[derive(Debug, Parser)]
#[command(name = "nap-sim", version, about = "NAP simulator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The whole system on this machine: central on SQLite, the real agent,
    /// N virtual nodes, a command through the API, then a live view.
    Demo {
        /// Virtual nodes beside the real agent.
        #[arg(long, default_value_t = 200)]
        nodes: usize,
        /// Where the demo keeps its certificates, database and state.
        #[arg(long, default_value = "nap-demo")]
        dir: std::path::PathBuf,
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: String,
        #[arg(long, default_value = "127.0.0.1:8080")]
        api_listen: String,
    },
    /// Load and chaos: virtual nodes over real TLS WebSockets, split over
    /// worker processes, against central (spawned in its own process, or
    /// given by `--central`).
    Load {
        #[arg(long, default_value_t = 500)]
        nodes: usize,
        /// Seconds of the scenario (after every node connected).
        #[arg(long, default_value_t = 30)]
        duration: u64,
        /// `replay`: every node starts with `--backlog` unacked samples (a day's
        /// outage ended by a restart) and all connect at once; `outage`:
        /// central is down for `--outage-s` while nodes keep sampling (and,
        /// with `--restart-mid-outage`, every agent restarts from what it
        /// persisted halfway through). Both report the catch-up.
        #[arg(long, default_value = "steady", value_parser = ["steady", "reconnect-storm", "chaos", "fanout", "replay", "outage", "rollout"])]
        scenario: String,
        /// `replay`: samples each node holds at the start (1,440: a day at 60 s).
        #[arg(long, default_value_t = 1440)]
        backlog: usize,
        /// `outage`: seconds central is down.
        #[arg(long, default_value_t = 60)]
        outage_s: u64,
        /// `outage`: restart every agent from its persisted state halfway through.
        #[arg(long)]
        restart_mid_outage: bool,
        /// `rollout`: the percentage of nodes whose commands fail (the
        /// rollout tolerates 1 %, strict, so 5 % halts it).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u8).range(0..=100))]
        fail_percent: u8,
        /// `rollout` with several `--centrals`: while it runs, kill every
        /// central process in turn (each restarts), so that the one driving
        /// the rollout dies and another takes it over from the store (after a
        /// 10 s wait for nodes to reconnect, not 60 s).
        #[arg(long)]
        crash_centrals: bool,
        /// `postgres://…`; default: SQLite in a temporary directory. With
        /// `--central`, the database that central uses.
        #[arg(long)]
        db: Option<String>,
        /// An already running central's agent URL (`wss://…/v1/agent`);
        /// needs `--api`, `--ca` and `--db`.
        #[arg(long, requires_all = ["api", "ca", "db"])]
        central: Option<String>,
        /// Its operator API (`http://…`).
        #[arg(long)]
        api: Option<String>,
        /// The CA its certificate chains to.
        #[arg(long)]
        ca: Option<std::path::PathBuf>,
        /// Start central in its own process (the default without `--central`).
        #[arg(long, conflicts_with = "central")]
        spawn_central: bool,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Nodes per worker process (each holds one file per node).
        #[arg(long, default_value_t = 4000)]
        per_worker: usize,
        /// Server-set intervals: shorter than the seed's to compress time.
        #[arg(long, default_value_t = 5_000)]
        heartbeat_ms: u64,
        #[arg(long, default_value_t = 2_000)]
        telemetry_ms: u64,
        #[arg(long, default_value_t = 30_000)]
        health_ms: u64,
        /// Write the report as JSON here, with the charts beside it.
        #[arg(long)]
        report: Option<std::path::PathBuf>,
        /// Central processes on one port (SO_REUSEPORT); at least one per
        /// 18,000 nodes. More than one need PostgreSQL and Redis.
        #[arg(long, default_value_t = 1)]
        centrals: usize,
        /// Redis for several central processes.
        #[arg(long, default_value = "redis://127.0.0.1:6379")]
        redis: String,
        /// Start the fleet at this many nodes per second instead of all at
        /// once (to measure holding N rather than N arriving together).
        #[arg(long)]
        ramp_per_s: Option<u32>,
    },
    /// Internal: one worker process of `load`.
    #[command(hide = true)]
    Worker {
        #[arg(long)]
        url: String,
        #[arg(long)]
        ca: std::path::PathBuf,
        #[arg(long)]
        nodes_file: std::path::PathBuf,
        #[arg(long)]
        source: Option<std::net::IpAddr>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long)]
        chaos_mean_ms: Option<u64>,
        #[arg(long)]
        start_per_s: Option<f64>,
        #[arg(long, default_value_t = 0)]
        backlog: usize,
        #[arg(long)]
        persist: bool,
    },
    /// Internal: central in its own process for `load`.
    #[command(hide = true)]
    Central { config: String },
    /// Internal: the sandbox trampoline of the demo's real agent.
    #[command(hide = true)]
    SandboxExec { spec: String },
    /// Deterministic simulation: engines through an in-memory network with faults.
    Det {
        #[arg(long, default_value_t = 1000)]
        nodes: u32,
        #[arg(long, default_value_t = 1)]
        hours: u32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Write the report as JSON here.
        #[arg(long)]
        report: Option<std::path::PathBuf>,
    },
}

/// Logs to stderr (stdout carries the workers' and central's lines).
fn init_tracing(default: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default.into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::SandboxExec { spec } = &cli.command {
        std::process::exit(nap_agent::sandbox::exec(spec));
    }
    match cli.command {
        Command::SandboxExec { .. } => unreachable!("handled above"),
        Command::Load {
            nodes,
            duration,
            scenario,
            db,
            central,
            api,
            ca,
            spawn_central: _,
            seed,
            per_worker,
            heartbeat_ms,
            telemetry_ms,
            health_ms,
            report,
            centrals,
            redis,
            ramp_per_s,
            backlog,
            outage_s,
            restart_mid_outage,
            fail_percent,
            crash_centrals,
        } => {
            init_tracing("error");
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let scenario = load::Scenario::parse(&scenario)
                .ok_or_else(|| anyhow::anyhow!("unknown scenario {scenario}"))?;
            let external = match (central, api, ca) {
                (Some(url), Some(api), Some(ca)) => Some(load::ExternalCentral { url, api, ca }),
                _ => None,
            };
            let config = load::LoadConfig {
                nodes,
                duration: std::time::Duration::from_secs(duration),
                scenario,
                db,
                central: external,
                seed,
                per_worker,
                heartbeat_ms,
                telemetry_ms,
                health_ms,
                centrals,
                redis,
                ramp_per_s,
                backlog,
                outage: std::time::Duration::from_secs(outage_s),
                restart_mid_outage,
                fail_percent,
                crash_centrals,
            };
            let r = runtime.block_on(load::run(config))?;
            println!("{}", r.summary());
            if let Some(path) = report {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                std::fs::write(&path, serde_json::to_string_pretty(&r)?)?;
                match r.charts(&path) {
                    Ok(files) => {
                        for f in files {
                            println!("chart: {}", f.display());
                        }
                    }
                    Err(e) => eprintln!("{e}"),
                }
                println!("report: {}", path.display());
            }
            let failures = r.failures();
            if !failures.is_empty() {
                for f in failures {
                    eprintln!("FAILED: {f}");
                }
                std::process::exit(1);
            }
        }
        Command::Worker {
            url,
            ca,
            nodes_file,
            source,
            seed,
            chaos_mean_ms,
            start_per_s,
            backlog,
            persist,
        } => {
            init_tracing("error");
            load::prepare_process();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            runtime.block_on(load::worker::run(load::worker::WorkerConfig {
                url,
                ca,
                nodes_file,
                source,
                seed,
                chaos: chaos_mean_ms.map(std::time::Duration::from_millis),
                start_per_s,
                backlog,
                persist,
            }))?;
        }
        Command::Central { config } => {
            init_tracing("error");
            load::prepare_process();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(load::serve_central(&config))?;
        }
        Command::Demo {
            nodes,
            dir,
            listen,
            api_listen,
        } => {
            init_tracing("warn");
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(demo::run(demo::DemoConfig {
                nodes,
                dir,
                listen,
                api_listen,
            }))?;
        }
        Command::Det {
            nodes,
            hours,
            seed,
            report,
        } => match det::run(det::DetConfig { nodes, hours, seed }) {
            Ok(r) => {
                println!(
                    "det: {} nodes × {} h simulated in {:.1} s wall (seed {}): {} samples taken, {} stored; \
                     {} commands, {} answered; {} partitions ({} of an hour to a day), {} transport cuts, {} central crashes, \
                     {} agent crashes, {} min store down, {} min store slow; invariants held",
                    r.nodes,
                    r.simulated_hours,
                    r.wall_ms as f64 / 1000.0,
                    r.seed,
                    r.samples_taken,
                    r.telemetry_stored,
                    r.commands_submitted,
                    r.commands_answered,
                    r.partitions + r.long_partitions,
                    r.long_partitions,
                    r.transport_cuts,
                    r.central_crashes,
                    r.agent_crashes,
                    r.store_outage_minutes,
                    r.slow_store_minutes
                );
                if let Some(path) = report {
                    std::fs::write(path, serde_json::to_string_pretty(&r)?)?;
                }
            }
            Err(v) => {
                eprintln!(
                    "INVARIANT VIOLATED at simulated minute {}: {}",
                    v.at_minute, v.what
                );
                eprintln!("replay: {}", v.replay);
                std::process::exit(1);
            }
        },
    }
    Ok(())
}
