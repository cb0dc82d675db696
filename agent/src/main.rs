//! The `nap-agent` command.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use nap_agent::config::FileConfig;
use nap_agent::driver::{Driver, Exit};
use nap_agent::keys::NodeKey;
use nap_core::NodeId;

#[derive(Debug, Parser)]
#[command(name = "nap-agent", version, about = "NAP agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Make this node's key and print its public key for `nap-central node add`.
    Init {
        #[arg(long, env = "NAP_AGENT_NODE_ID")]
        node_id: Option<NodeId>,
        #[arg(long, env = "NAP_AGENT_KEY", default_value = "/etc/nap/node.key")]
        key: PathBuf,
    },
    /// Run the agent. Flags override the file and `NAP_AGENT_*` variables.
    Run {
        #[arg(long, env = "NAP_AGENT_CONFIG", default_value = "/etc/nap/agent.toml")]
        config: PathBuf,
        /// Central's agent endpoint (`wss://…/v1/agent`).
        #[arg(long)]
        central: Option<String>,
        /// The CA that signs central's certificate.
        #[arg(long)]
        ca: Option<PathBuf>,
        #[arg(long)]
        node_id: Option<NodeId>,
        /// The node's private key.
        #[arg(long)]
        key: Option<PathBuf>,
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Any other key, `table.key=value` (TOML value syntax); repeatable.
        #[arg(long = "set", value_parser = parse_set)]
        set: Vec<(String, toml::Value)>,
    },
    /// Check the configuration and the key, then exit.
    CheckConfig {
        #[arg(long, env = "NAP_AGENT_CONFIG", default_value = "/etc/nap/agent.toml")]
        config: PathBuf,
    },
    /// Print the version.
    Version,
    /// Verify the local audit log's hash chain.
    AuditVerify {
        #[arg(long)]
        log: PathBuf,
    },
    /// Internal: the sandbox trampoline the executor runs commands through.
    #[command(hide = true)]
    SandboxExec { spec: String },
}

#[allow(clippy::print_stdout)]
fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::SandboxExec { spec } = &cli.command {
        std::process::exit(nap_agent::sandbox::exec(spec));
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Init { node_id, key } => {
            let node_id = node_id.unwrap_or_else(|| NodeId::from(uuid::Uuid::new_v4()));
            let node = if key.exists() {
                NodeKey::load(&key)?
            } else {
                let (node, pem) = NodeKey::generate()?;
                if let Some(dir) = key.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                write_private(&key, &pem)?;
                node
            };
            println!("# node id: {node_id}");
            println!("# key: {}", key.display());
            print!("{}", node.public_pem());
        }
        Command::Run {
            config,
            central,
            ca,
            node_id,
            key,
            state_dir,
            set,
        } => {
            let mut overrides = serde_json::Map::new();
            let mut put = |k: &str, v: Option<serde_json::Value>| {
                if let Some(v) = v {
                    overrides.insert(k.to_owned(), v);
                }
            };
            put("central", central.map(Into::into));
            put("ca", ca.map(|p| p.display().to_string().into()));
            put("node_id", node_id.map(|n| n.to_string().into()));
            put("key", key.map(|p| p.display().to_string().into()));
            put(
                "state_dir",
                state_dir.map(|p| p.display().to_string().into()),
            );
            let mut overrides = serde_json::Value::Object(overrides);
            for (path, value) in set {
                let mut at = &mut overrides;
                let parts: Vec<&str> = path.split('.').collect();
                for (i, part) in parts.iter().enumerate() {
                    let map = at.as_object_mut().context("--set paths must name tables")?;
                    if i + 1 == parts.len() {
                        map.insert((*part).to_owned(), serde_json::to_value(&value)?);
                        break;
                    }
                    at = map
                        .entry((*part).to_owned())
                        .or_insert_with(|| serde_json::json!({}));
                }
            }
            let file = FileConfig::load_with(&config, &overrides)?;
            let key = NodeKey::load(&file.key)?;
            if !nap_agent::sandbox::landlock_supported() {
                tracing::warn!(
                    "this kernel does not enforce Landlock: commands run without filesystem restrictions"
                );
            }
            let trampoline = std::env::current_exe().context("locating this binary")?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let exit =
                runtime.block_on(async { Driver::new(file, key, trampoline)?.run().await })?;
            match exit {
                Exit::Stopped => {}
                Exit::Revoked => std::process::exit(3),
                Exit::Restart => std::process::exit(nap_agent::update::EXIT_RESTART),
            }
        }
        Command::CheckConfig { config } => {
            let file = FileConfig::load(&config)?;
            NodeKey::load(&file.key)?;
            nap_agent::transport::tls_config(&file.ca)?;
            println!(
                "{}: ok ({} commands, {} deploy recipes)",
                config.display(),
                file.commands.len(),
                file.deploy.len()
            );
        }
        Command::Version => println!(
            "nap-agent {} {} (protocol {})",
            nap_agent::update::VERSION,
            nap_agent::update::TARGET,
            nap_core::PROTOCOL_VERSION
        ),
        Command::AuditVerify { log } => match nap_agent::audit::verify(&log)? {
            Ok(n) => println!("audit chain intact: {n} records"),
            Err(seq) => anyhow::bail!("audit chain broken at record {seq}"),
        },
        Command::SandboxExec { .. } => unreachable!("handled above"),
    }
    Ok(())
}

fn parse_set(s: &str) -> Result<(String, toml::Value), String> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not key=value"))?;
    let value = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_owned()));
    Ok((key.trim().to_owned(), value))
}

fn write_private(path: &std::path::Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}
