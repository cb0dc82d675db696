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
    /// Load: virtual nodes over real TLS against a central spawned here.
    Load {
        #[arg(long, default_value_t = 500)]
        nodes: usize,
        /// Seconds of steady running.
        #[arg(long, default_value_t = 30)]
        duration: u64,
        #[arg(long, default_value = "steady", value_parser = ["steady", "reconnect-storm"])]
        scenario: String,
        /// `postgres://…`; default: SQLite in a temporary directory.
        #[arg(long)]
        db: Option<String>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Write the report as JSON here.
        #[arg(long)]
        report: Option<std::path::PathBuf>,
    },
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
            seed,
            report,
        } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "error".into()),
                )
                .with_writer(std::io::stderr)
                .init();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let config = load::LoadConfig {
                nodes,
                duration: std::time::Duration::from_secs(duration),
                storm: scenario == "reconnect-storm",
                db,
                seed,
            };
            let r = runtime.block_on(load::run(config))?;
            let json = serde_json::to_string_pretty(&r)?;
            println!("{json}");
            if let Some(path) = report {
                std::fs::write(path, &json)?;
            }
            if r.telemetry_taken != r.telemetry_stored {
                eprintln!(
                    "TELEMETRY LOST: {} taken, {} stored",
                    r.telemetry_taken, r.telemetry_stored
                );
                std::process::exit(1);
            }
            if r.max_backoff_s > 300.0 {
                eprintln!(
                    "a node waited {} s, past the 300 s backoff cap",
                    r.max_backoff_s
                );
                std::process::exit(1);
            }
        }
        Command::Demo {
            nodes,
            dir,
            listen,
            api_listen,
        } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "warn".into()),
                )
                .with_writer(std::io::stderr)
                .init();
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
                     {} commands, {} answered; {} partitions, {} transport cuts, {} central crashes; invariants held",
                    r.nodes,
                    r.simulated_hours,
                    r.wall_ms as f64 / 1000.0,
                    r.seed,
                    r.samples_taken,
                    r.telemetry_stored,
                    r.commands_submitted,
                    r.commands_answered,
                    r.partitions,
                    r.transport_cuts,
                    r.central_crashes
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
