//! The `nap-central` command.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use nap_central::agents::tokens::is_ed25519_public_key;
use nap_central::api::tokens::{Role, new_api_token, token_hash};
use nap_central::config::ServeConfig;
use nap_central::store::{AnyStore, NodeRecord, Storage, TokenRecord, first_broken};
use nap_core::NodeId;
use serde_json::{Map, Value, json};

#[derive(Debug, Parser)]
#[command(name = "nap-central", version, about = "NAP central service")]
struct Cli {
    /// Configuration file (default: ./central.toml if present).
    #[arg(long, global = true, env = "NAP_CENTRAL_CONFIG")]
    config: Option<PathBuf>,
    /// Database: sqlite:PATH or a postgres:// URL.
    #[arg(long, global = true)]
    db: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service.
    Serve(ServeArgs),
    /// Write a development CA and server certificate (localhost, 127.0.0.1).
    DevCerts {
        #[arg(long, default_value = "nap-data/certs")]
        out: PathBuf,
    },
    /// Manage registered nodes.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Manage operator API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Apply database migrations.
    Migrate,
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Groups of users, for approvals.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Agent releases: the release key and signed manifests.
    #[command(subcommand)]
    Release(ReleaseCommand),
}

#[derive(Debug, Subcommand)]
enum ReleaseCommand {
    /// Make a release key pair: DIR/release.key (keep it off central) and
    /// DIR/release.pub (for the nodes' `update.release_key`).
    Keygen {
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Sign a build and publish it where central serves updates.
    Sign {
        /// The release's private key (from `release keygen`).
        #[arg(long)]
        key: PathBuf,
        /// The agent binary.
        #[arg(long)]
        binary: PathBuf,
        #[arg(long)]
        version: String,
        /// Its target triple (as `nap-agent version` prints it).
        #[arg(long)]
        target: String,
        /// The oldest version that may upgrade to it directly.
        #[arg(long)]
        min_version: Option<String>,
        /// The artifacts directory central serves (its `artifacts`).
        #[arg(long)]
        artifacts: PathBuf,
    },
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Agent endpoint address (WSS).
    #[arg(long)]
    listen: Option<String>,
    /// Operator API address (HTTP).
    #[arg(long)]
    api_listen: Option<String>,
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// JWT audience agents must name.
    #[arg(long)]
    audience: Option<String>,
    /// Directory of agent update artifacts.
    #[arg(long)]
    artifacts: Option<PathBuf>,
    /// Heartbeat interval in milliseconds (server-set).
    #[arg(long)]
    heartbeat_ms: Option<u64>,
    /// Telemetry interval in milliseconds (server-set).
    #[arg(long)]
    telemetry_ms: Option<u64>,
    /// Health interval in milliseconds (server-set).
    #[arg(long)]
    health_ms: Option<u64>,
    /// Admin notification webhook (http://…).
    #[arg(long)]
    webhook: Option<String>,
    /// Redis URL: run as one of several central processes (DESIGN.md §5).
    #[arg(long)]
    redis: Option<String>,
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// Register a node by its public key.
    Add {
        #[arg(long)]
        id: NodeId,
        #[arg(long)]
        name: String,
        /// The agent's Ed25519 public key (PEM), as printed by `nap-agent init`.
        #[arg(long)]
        public_key: PathBuf,
        /// A label, `key=value`; repeatable.
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
    },
    /// List nodes.
    List,
    /// Revoke a node: its live session is closed with 4003 and it can no longer connect.
    Revoke { id: NodeId },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create an operator API token; it is printed once and stored only as a hash.
    Create {
        #[arg(long, value_enum)]
        role: Role,
        #[arg(long)]
        name: String,
        /// The person it belongs to (default: its name). One person with two
        /// tokens is one approver.
        #[arg(long)]
        user: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum GroupCommand {
    /// Put a user in a group (an approval request may name `group:NAME`).
    Add {
        #[arg(long)]
        group: String,
        #[arg(long)]
        user: String,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Walk the hash chain and report the first broken link.
    Verify,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not key=value"))?;
    if k.is_empty() {
        return Err("a label needs a key".into());
    }
    Ok((k.to_owned(), v.to_owned()))
}

fn overrides(cli: &Cli) -> Value {
    let mut map = Map::new();
    if let Some(db) = &cli.db {
        map.insert("db".into(), json!(db));
    }
    if let Command::Serve(a) = &cli.command {
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                map.insert(k.into(), v);
            }
        };
        put("listen", a.listen.clone().map(Value::from));
        put("api_listen", a.api_listen.clone().map(Value::from));
        put("tls_cert", a.tls_cert.as_ref().map(|p| json!(p)));
        put("tls_key", a.tls_key.as_ref().map(|p| json!(p)));
        put("audience", a.audience.clone().map(Value::from));
        put("artifacts", a.artifacts.as_ref().map(|p| json!(p)));
        put("heartbeat_ms", a.heartbeat_ms.map(Value::from));
        put("telemetry_ms", a.telemetry_ms.map(Value::from));
        put("health_ms", a.health_ms.map(Value::from));
        put("webhook", a.webhook.clone().map(Value::from));
        put("redis", a.redis.clone().map(Value::from));
    }
    Value::Object(map)
}

async fn store(config: &ServeConfig) -> anyhow::Result<AnyStore> {
    let store = AnyStore::open(&config.db, 2)
        .await
        .with_context(|| format!("opening {}", config.db))?;
    store.migrate().await.context("migrating")?;
    Ok(store)
}

#[allow(clippy::print_stdout)]
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let config = ServeConfig::load(cli.config.as_deref(), &overrides(&cli))
        .map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
    let now = nap_core::WallTime::from(chrono::Utc::now());
    match cli.command {
        Command::Serve(_) => nap_central::runtime::serve(config).await?,
        Command::DevCerts { out } => {
            let certs = nap_central::tls::write_dev_certs(&out)?;
            println!("CA:          {}", certs.ca.display());
            println!("certificate: {}", certs.cert.display());
            println!("key:         {}", certs.key.display());
        }
        Command::Migrate => {
            store(&config).await?;
            println!("database {} is up to date", config.db);
        }
        Command::Node(NodeCommand::Add {
            id,
            name,
            public_key,
            labels,
        }) => {
            let pem = std::fs::read_to_string(&public_key)
                .with_context(|| format!("reading {}", public_key.display()))?;
            if !is_ed25519_public_key(&pem) {
                bail!(
                    "{} is not an Ed25519 public key in PEM form",
                    public_key.display()
                );
            }
            let store = store(&config).await?;
            let record = NodeRecord {
                id,
                name: name.clone(),
                public_key_pem: pem,
                labels: labels.into_iter().collect::<BTreeMap<_, _>>(),
                created_at: now,
                revoked: false,
                status: None,
                last_seen: None,
                agent_version: None,
            };
            store
                .add_node(record)
                .await
                .with_context(|| format!("node {id} already exists"))?;
            store
                .append_audit(
                    "cli",
                    "node.add",
                    &id.to_string(),
                    json!({ "name": name }),
                    now,
                )
                .await?;
            println!("node {id} ({name}) registered");
        }
        Command::Node(NodeCommand::List) => {
            let store = store(&config).await?;
            for n in store.list_nodes().await? {
                let status = if n.revoked {
                    "revoked".to_owned()
                } else {
                    n.status
                        .map_or("offline".into(), |s| format!("{s:?}").to_lowercase())
                };
                let seen = n.last_seen.map_or("never".into(), |t| t.to_string());
                println!("{}  {:<24} {:<9} last seen {}", n.id, n.name, status, seen);
            }
        }
        Command::Node(NodeCommand::Revoke { id }) => {
            let store = store(&config).await?;
            if !store.revoke_node(id).await? {
                bail!("no node {id}");
            }
            store
                .append_audit("cli", "node.revoke", &id.to_string(), json!({}), now)
                .await?;
            println!("node {id} revoked; a running central closes its session with 4003");
        }
        Command::Token(TokenCommand::Create { role, name, user }) => {
            let store = store(&config).await?;
            let token = new_api_token()?;
            let record = TokenRecord {
                name: name.clone(),
                role: role.as_str().into(),
                user: user.clone(),
            };
            store
                .create_api_token(&token_hash(&token), record, now)
                .await?;
            store
                .append_audit(
                    "cli",
                    "token.create",
                    &name,
                    json!({ "role": role.as_str(), "user": user.as_deref().unwrap_or(&name) }),
                    now,
                )
                .await?;
            println!("{token}");
        }
        Command::Group(GroupCommand::Add { group, user }) => {
            let store = store(&config).await?;
            store.add_to_group(&user, &group).await?;
            store
                .append_audit("cli", "group.add", &group, json!({ "user": user }), now)
                .await?;
            println!("{user} is in group {group}");
        }
        Command::Release(ReleaseCommand::Keygen { dir }) => {
            let (key, public) = nap_central::release::generate_key(&dir)?;
            println!(
                "release key: {} (keep it offline)\npublic key: {} (copy it to each node's update.release_key)",
                key.display(),
                public.display()
            );
        }
        Command::Release(ReleaseCommand::Sign {
            key,
            binary,
            version,
            target,
            min_version,
            artifacts,
        }) => {
            let manifest = nap_central::release::sign(
                &key,
                &nap_central::release::Release {
                    binary: &binary,
                    version: &version,
                    target: &target,
                    min_version: min_version.as_deref(),
                },
                &artifacts,
            )?;
            println!("published {version} for {target}: {}", manifest.display());
        }
        Command::Audit(AuditCommand::Verify) => {
            let store = store(&config).await?;
            let entries = store.all_audit().await?;
            if let Some(seq) = first_broken(&entries) {
                bail!("audit chain broken at entry {seq} (of {})", entries.len());
            }
            let Some(path) = config.audit_anchor_path() else {
                println!(
                    "audit chain intact: {} entries (not anchored: set audit_anchor to detect truncation and rewrites)",
                    entries.len()
                );
                return Ok(());
            };
            let anchor = nap_central::store::anchor::Anchor::open(&path)?;
            match anchor.verify(&entries) {
                Ok(checkpoints) => println!(
                    "audit chain intact: {} entries; {checkpoints} checkpoints in {} agree",
                    entries.len(),
                    path.display()
                ),
                Err(e) => bail!(
                    "audit chain does not match its anchor {}: {e}",
                    path.display()
                ),
            }
        }
    }
    Ok(())
}
