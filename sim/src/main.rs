//! `nap-sim`: the demo, and deterministic simulation of the fleet.

use clap::{Parser, Subcommand};

mod det;

#[derive(Debug, Parser)]
#[command(name = "nap-sim", version, about = "NAP simulator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
    match cli.command {
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
