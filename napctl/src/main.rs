//! `napctl`: NAP from an operator's terminal. Every command that talks to
//! central is a client of the public operator API (`NAP_API_URL`,
//! `NAP_API_TOKEN`, `NAP_API_CA`); the approval-key commands work offline.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use nap_core::WallTime;
use nap_core::signed_approval::PublicKey;
use serde_json::{Value, json};

mod api;
mod approval;
mod keys;
mod rollout_approval;

use api::Api;

#[derive(Debug, Parser)]
#[command(name = "napctl", version, about = "NAP's operator command line")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct Connection {
    /// The operator API, `http://HOST:PORT` or `https://HOST:PORT`.
    #[arg(long, env = "NAP_API_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Your API token.
    #[arg(long, env = "NAP_API_TOKEN", hide_env_values = true)]
    token: String,
    /// The CA that signed the API's certificate (for https).
    #[arg(long, env = "NAP_API_CA")]
    ca: Option<PathBuf>,
}

impl Connection {
    fn api(&self) -> anyhow::Result<Api> {
        Api::new(&self.url, &self.token, self.ca.as_deref())
    }
}

/// An approver's key and certificate, to sign with (spec §8.2).
#[derive(Debug, clap::Args)]
struct Signing {
    /// Your approver key (from `napctl approval keygen`).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Your approver certificate (from `napctl approval certify`).
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Commands awaiting approval.
    Approvals {
        /// Only those you may approve.
        #[arg(long)]
        mine: bool,
        #[command(flatten)]
        connection: Connection,
    },
    /// Approve a command: shows it, checks that central's digest is the
    /// command's, and — with your key and certificate — signs it.
    Approve {
        /// Its request id.
        id: String,
        #[command(flatten)]
        signing: Signing,
        #[command(flatten)]
        connection: Connection,
    },
    /// Reject a command awaiting approval.
    Reject {
        id: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Withdraw your own request (or, as an administrator, anyone's).
    Cancel {
        id: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Approval keys (spec §8.2), offline.
    #[command(subcommand)]
    Approval(ApprovalCommand),
    /// Rollouts (spec §8.3, §8.4).
    #[command(subcommand)]
    Rollout(RolloutCommand),
}

#[derive(Debug, Subcommand)]
enum RolloutCommand {
    /// Approve a rollout: reads it and all its targets, checks that
    /// central's digest covers exactly that command and those targets, and
    /// — with your key and certificate — signs it.
    Approve {
        /// Its rollout id.
        id: String,
        #[command(flatten)]
        signing: Signing,
        #[command(flatten)]
        connection: Connection,
    },
    /// Reject a rollout awaiting approval.
    Reject {
        id: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        connection: Connection,
    },
}

#[derive(Debug, Subcommand)]
enum ApprovalCommand {
    /// Make a key: an approver's, or the approval root (keep that one
    /// offline); prints its public half.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Certify an approver's public key with the approval root.
    Certify {
        /// The approval root's key.
        #[arg(long)]
        root: PathBuf,
        /// The approver's user name (as their API token says).
        #[arg(long)]
        user: String,
        /// The approver's public key, `ed25519:<base64>`.
        #[arg(long)]
        key: String,
        /// How long the certificate is valid, in days (at most 400).
        #[arg(long, default_value_t = 90)]
        days: u64,
        /// Where to write it (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if let Err(e) = run(Cli::parse()).await {
        eprintln!("napctl: {e:#}");
        std::process::exit(1);
    }
}

// A command line's output is its purpose.
#[allow(clippy::print_stdout)]
async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Approvals { mine, connection } => {
            let path = if mine {
                "/api/v1/approvals?mine=true"
            } else {
                "/api/v1/approvals"
            };
            let listing = connection.api()?.get(path).await?;
            for item in listing["approvals"].as_array().into_iter().flatten() {
                if let Some(rollout) = item["rolloutId"].as_str() {
                    println!(
                        "rollout {rollout}\n  command   {}\n  targets   {}\n  requester {}\n  reason    {}\n  expires   {}\n  (napctl rollout approve {rollout} checks its targets before signing)\n",
                        item["message"],
                        item["targets"],
                        item["requester"],
                        item["reason"],
                        item["expiresAt"]
                    );
                    continue;
                }
                match approval::Pending::from_listing(item) {
                    Ok(pending) => println!("{}\n", pending.describe()),
                    Err(e) => println!("{}: {e:#}\n", item["requestId"]),
                }
            }
        }
        Command::Approve {
            id,
            signing,
            connection,
        } => {
            let api = connection.api()?;
            let listing = api.get("/api/v1/approvals").await?;
            let item = listing["approvals"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|item| item["requestId"].as_str() == Some(id.as_str()))
                .with_context(|| format!("no command {id} awaits approval"))?;
            let pending = approval::Pending::from_listing(item)?;
            println!("{}", pending.describe());
            let body = approval_body(&pending.digest, signing)?;
            let answer = api
                .post(&format!("/api/v1/commands/{id}/approve"), &body)
                .await?;
            println!("{}", answer_line(&answer));
        }
        Command::Reject {
            id,
            reason,
            connection,
        } => {
            let answer = connection
                .api()?
                .post(
                    &format!("/api/v1/commands/{id}/reject"),
                    &json!({ "reason": reason }),
                )
                .await?;
            println!("{}", answer_line(&answer));
        }
        Command::Cancel { id, connection } => {
            let answer = connection
                .api()?
                .post(&format!("/api/v1/commands/{id}/cancel"), &json!({}))
                .await?;
            println!("{}", answer_line(&answer));
        }
        Command::Rollout(RolloutCommand::Approve {
            id,
            signing,
            connection,
        }) => {
            let api = connection.api()?;
            let pending = rollout_approval::PendingRollout::fetch(&api, &id).await?;
            println!("{}", pending.describe());
            let body = approval_body(&pending.digest, signing)?;
            let answer = api
                .post(&format!("/api/v1/rollouts/{id}/approve"), &body)
                .await?;
            println!("{}", answer["state"].as_str().unwrap_or_default());
        }
        Command::Rollout(RolloutCommand::Reject {
            id,
            reason,
            connection,
        }) => {
            let answer = connection
                .api()?
                .post(
                    &format!("/api/v1/rollouts/{id}/reject"),
                    &json!({ "reason": reason }),
                )
                .await?;
            println!("{}", answer["state"].as_str().unwrap_or_default());
        }
        Command::Approval(ApprovalCommand::Keygen { out }) => {
            let public = keys::generate(&out)?;
            println!("{public}");
        }
        Command::Approval(ApprovalCommand::Certify {
            root,
            user,
            key,
            days,
            out,
        }) => {
            let key = PublicKey::parse(&key)
                .with_context(|| format!("{key:?} is not an ed25519:<base64> key"))?;
            let since_epoch = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .context("the system clock is before 1970")?;
            let now = WallTime::from_unix_millis(i64::try_from(since_epoch.as_millis())?)
                .context("the system clock is out of range")?;
            let validity = Duration::from_secs(days.saturating_mul(24 * 3600));
            let text = approval::certify(&root, &user, key, now, validity)?;
            match out {
                Some(path) => std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => print!("{text}"),
            }
        }
    }
    Ok(())
}

/// An approval of `digest`, signed with `key` under `cert` when given.
fn approval_body(digest: &str, signing: Signing) -> anyhow::Result<Value> {
    let mut body = json!({ "digest": digest });
    if let (Some(key), Some(cert)) = (signing.key, signing.cert) {
        let key = keys::load(&key)?;
        let text = std::fs::read_to_string(&cert)
            .with_context(|| format!("reading {}", cert.display()))?;
        let signed = approval::sign(&key, &text, digest)?;
        body["signature"] = json!(signed.signature);
        body["certificate"] = json!(signed.certificate);
    }
    Ok(body)
}

fn answer_line(answer: &Value) -> String {
    match answer["state"].as_str() {
        Some("pending") => format!(
            "counted: {} of {} approvals",
            answer["approvals"], answer["needed"]
        ),
        Some(state) => state.to_owned(),
        None => answer.to_string(),
    }
}
