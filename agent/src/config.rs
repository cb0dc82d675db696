//! `agent.toml`: where central is, who this node is, and what it may do.
//! Every value can also be given by flag or `NAP_AGENT_*` environment
//! variable for the handful that differ per host (see `main.rs`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use nap_core::NodeId;
use nap_core::policy::{AnchoredPattern, ArgRule, ArgRules, CommandRule, Policy};
use nap_core::signed_approval::{ApprovalTrust, PublicKey};
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `wss://host:port/v1/agent`.
    pub central: String,
    /// The CA that signs central's certificate (the only one trusted).
    pub ca: PathBuf,
    pub node_id: NodeId,
    /// The node's Ed25519 private key (PKCS#8 PEM, mode 0600).
    pub key: PathBuf,
    /// Outbox, request record, telemetry buffer and audit log.
    pub state_dir: PathBuf,
    #[serde(default = "default_audience")]
    pub audience: String,
    #[serde(default = "default_running")]
    pub max_running: usize,
    /// How long each node token the agent signs lives, in seconds (central
    /// refuses more than 3600).
    #[serde(default = "default_token_lifetime")]
    pub token_lifetime_s: u64,
    /// What the agent keeps until central acks it, across outages and
    /// restarts: telemetry samples, periodic health reports, alerts.
    #[serde(default = "default_telemetry_buffer")]
    pub telemetry_buffer: usize,
    #[serde(default = "default_health_buffer")]
    pub health_buffer: usize,
    #[serde(default = "default_alert_buffer")]
    pub alert_buffer: usize,
    /// How long a close waits for central's close frame (and, on a stop,
    /// for the last frames to go out), in milliseconds.
    #[serde(default = "default_close_linger")]
    pub close_linger_ms: u64,
    /// How often a connection updates its TLS traffic keys, in
    /// milliseconds (0: only when rustls must).
    #[serde(default = "default_key_update_interval")]
    pub key_update_interval_ms: u64,
    /// A connection is replaced after this many seconds (plus up to an
    /// hour drawn per connection); 0: never.
    #[serde(default = "default_max_connection_age")]
    pub max_connection_age_s: u64,
    #[serde(default)]
    pub sandbox: SandboxConfig,
    #[serde(default)]
    pub commands: BTreeMap<String, CommandEntry>,
    #[serde(default)]
    pub deploy: BTreeMap<String, DeployRecipe>,
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub application: ApplicationConfig,
    #[serde(default)]
    pub containers: ContainerConfig,
    #[serde(default)]
    pub update: UpdateConfig,
    /// The approval roots this node trusts (spec §8.2).
    #[serde(default)]
    pub approval: ApprovalConfig,
}

/// `[approval]`: what certifies the people whose signed approvals a
/// command with `approval = "required"` needs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalConfig {
    /// Approval roots' public keys, `ed25519:<base64>`; two while a root is
    /// replaced.
    pub roots: Vec<String>,
    /// Approver keys no longer accepted, `ed25519:<base64>`.
    pub revoked: Vec<String>,
}

/// Whether an allow-list entry needs approval verified on the node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalMode {
    /// Central's approval rules alone decide.
    #[default]
    None,
    /// The node runs it only with enough signed approvals it verifies.
    Required,
}

fn default_audience() -> String {
    "nap-central".into()
}

fn default_token_lifetime() -> u64 {
    3600
}

fn default_telemetry_buffer() -> usize {
    1440
}

fn default_health_buffer() -> usize {
    12
}

fn default_alert_buffer() -> usize {
    100
}

fn default_close_linger() -> u64 {
    2000
}

fn default_key_update_interval() -> u64 {
    3_600_000
}

fn default_max_connection_age() -> u64 {
    86_400
}

fn default_running() -> usize {
    4
}

/// The unprivileged user commands run as unless configured otherwise.
pub const DEFAULT_RUN_AS: &str = "nap-run";

/// How commands run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    /// The user commands run as (default `nap-run`, which the package
    /// creates); `root` keeps the agent's. Only a root agent switches: one
    /// started as another user runs commands as itself. An allow-list entry
    /// or deploy recipe may name its own user.
    pub run_as: Option<String>,
    pub cpu_seconds: u64,
    pub memory_bytes: u64,
    pub open_files: u64,
    pub processes: u64,
    /// Bytes of stdout and of stderr kept; the rest is cut (`truncated`).
    pub output_cap_bytes: usize,
    /// Between SIGTERM and SIGKILL on a timeout.
    pub kill_grace_ms: u64,
    /// Landlock: commands may read these paths and write only the writable ones.
    pub landlock: bool,
    pub readable: Vec<PathBuf>,
    pub writable: Vec<PathBuf>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            run_as: Some(DEFAULT_RUN_AS.to_owned()),
            cpu_seconds: 300,
            memory_bytes: 1 << 30,
            open_files: 256,
            processes: 256,
            output_cap_bytes: 64 * 1024,
            kill_grace_ms: 5_000,
            landlock: true,
            readable: [
                "/usr", "/bin", "/sbin", "/lib", "/lib64", "/etc", "/proc", "/sys", "/dev", "/var",
                "/opt", "/srv", "/run",
            ]
            .iter()
            .map(PathBuf::from)
            .collect(),
            writable: vec![PathBuf::from("/tmp"), PathBuf::from("/dev/null")],
        }
    }
}

/// One allow-list entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandEntry {
    /// Absolute path of the program.
    pub program: PathBuf,
    /// Rules for the arguments, by position.
    #[serde(default)]
    pub args: Vec<ArgSpec>,
    /// Rule for any further arguments (up to `max_extra`).
    pub rest: Option<ArgSpec>,
    #[serde(default)]
    pub max_extra: usize,
    #[serde(default = "default_timeout")]
    pub max_timeout_ms: u64,
    /// Environment of the child (everything else is cleared).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The user it runs as (`root` only where it must); default: the
    /// sandbox's `run_as`.
    pub run_as: Option<String>,
    /// `"required"`: run only with signed approvals this node verifies.
    #[serde(default)]
    pub approval: ApprovalMode,
    /// With `approval = "required"`, how many distinct approvers (1–5,
    /// default 1).
    pub min_approvals: Option<u8>,
}

fn default_timeout() -> u64 {
    30_000
}

/// One argument rule: a literal, `{ one_of = [...] }` or `{ pattern = "..." }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ArgSpec {
    Literal(String),
    OneOf { one_of: Vec<String> },
    Pattern { pattern: String },
}

impl ArgSpec {
    fn rule(&self) -> anyhow::Result<ArgRule> {
        Ok(match self {
            Self::Literal(s) => ArgRule::Literal(s.clone()),
            Self::OneOf { one_of } => ArgRule::OneOf(one_of.clone()),
            Self::Pattern { pattern } => ArgRule::Pattern(
                AnchoredPattern::new(pattern)
                    .with_context(|| format!("invalid pattern {pattern:?}"))?,
            ),
        })
    }
}

/// A deploy recipe: steps run in order; `{branch}` in an argument is replaced
/// by the validated branch name, as one argument.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRecipe {
    pub steps: Vec<DeployStep>,
    /// The user the steps run as; default: the sandbox's `run_as`.
    pub run_as: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployStep {
    pub program: PathBuf,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// Health check thresholds and targets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    pub disk_warning: f64,
    pub disk_critical: f64,
    pub memory_warning: f64,
    pub memory_critical: f64,
    /// `tcp://host:port` or `postgres://…`.
    pub database: Option<String>,
    pub database_timeout_ms: u64,
    /// Containers that must be running.
    pub containers: Vec<String>,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            disk_warning: 80.0,
            disk_critical: 95.0,
            memory_warning: 90.0,
            memory_critical: 97.0,
            database: None,
            database_timeout_ms: 3_000,
            containers: Vec::new(),
        }
    }
}

/// The application this node serves.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApplicationConfig {
    /// Answers 2xx when the application is up.
    pub health_url: Option<String>,
    /// A Prometheus text endpoint; the `metrics` listed are reported.
    pub metrics_url: Option<String>,
    pub metrics: Vec<String>,
}

/// The container engine.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContainerConfig {
    /// `unix:///run/podman/podman.sock`; default: `DOCKER_HOST`, then the Docker socket.
    pub socket: Option<String>,
}

/// Self-update.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpdateConfig {
    /// The Ed25519 public key (SPKI PEM) that signs releases.
    pub release_key: Option<PathBuf>,
    /// A new version that does not establish a session within this is rolled back.
    pub rollback_after_ms: u64,
    /// The binary to replace (default: this one).
    pub binary: Option<PathBuf>,
}

impl Default for UpdateConfig {
    fn default() -> Self {
        Self {
            release_key: None,
            rollback_after_ms: 120_000,
            binary: None,
        }
    }
}

impl CommandEntry {
    fn required_approvals(&self, name: &str) -> anyhow::Result<u8> {
        use nap_core::central::approval::{MAX_APPROVALS, MIN_APPROVALS};
        match (self.approval, self.min_approvals) {
            (ApprovalMode::None, None) => Ok(0),
            (ApprovalMode::None, Some(_)) => {
                anyhow::bail!("command {name}: min_approvals needs approval = \"required\"")
            }
            (ApprovalMode::Required, None) => Ok(MIN_APPROVALS),
            (ApprovalMode::Required, Some(n)) if (MIN_APPROVALS..=MAX_APPROVALS).contains(&n) => {
                Ok(n)
            }
            (ApprovalMode::Required, Some(n)) => anyhow::bail!(
                "command {name}: min_approvals {n} must be {MIN_APPROVALS} to {MAX_APPROVALS}"
            ),
        }
    }
}

impl ApprovalConfig {
    fn trust(&self) -> anyhow::Result<Option<ApprovalTrust>> {
        if self.roots.is_empty() {
            return Ok(None);
        }
        let key = |text: &String| {
            PublicKey::parse(text)
                .with_context(|| format!("[approval]: {text:?} is not an ed25519:<base64> key"))
        };
        Ok(Some(ApprovalTrust {
            roots: self.roots.iter().map(key).collect::<anyhow::Result<_>>()?,
            revoked: self
                .revoked
                .iter()
                .map(key)
                .collect::<anyhow::Result<_>>()?,
            crypto: std::sync::Arc::new(nap_core::crypto::AwsLc),
        }))
    }
}

impl FileConfig {
    /// Reads and checks the file, with `NAP_AGENT_*` environment variables
    /// over it (nested keys with `__`: `NAP_AGENT_SANDBOX__CPU_SECONDS=60`) and
    /// `overrides` (the command-line flags) over both.
    pub fn load(path: &std::path::Path) -> anyhow::Result<Self> {
        Self::load_with(path, &serde_json::json!({}))
    }

    /// As [`Self::load`], with flags given as a JSON object of keys.
    pub fn load_with(
        path: &std::path::Path,
        overrides: &serde_json::Value,
    ) -> anyhow::Result<Self> {
        use figment::providers::{Env, Format as _, Serialized, Toml};
        if !path.exists() {
            anyhow::bail!(
                "{} does not exist (see agent/agent.example.toml)",
                path.display()
            );
        }
        let config: Self = figment::Figment::new()
            .merge(Toml::file_exact(path))
            .merge(Env::prefixed("NAP_AGENT_").split("__").ignore(&["config"]))
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(|e| anyhow::anyhow!("in {}: {e}", path.display()))?;
        config.policy()?;
        Ok(config)
    }

    /// The allow-list as the core's policy.
    pub fn policy(&self) -> anyhow::Result<Policy> {
        let mut policy = Policy::deny_all();
        for (name, entry) in &self.commands {
            if !entry.program.is_absolute() {
                anyhow::bail!(
                    "command {name}: program {} must be an absolute path",
                    entry.program.display()
                );
            }
            let fixed = entry
                .args
                .iter()
                .map(ArgSpec::rule)
                .collect::<anyhow::Result<Vec<_>>>()?;
            let args = match &entry.rest {
                Some(rest) => ArgRules::Variadic {
                    fixed,
                    rest: rest.rule()?,
                    max: entry.max_extra,
                },
                None => ArgRules::Exact(fixed),
            };
            policy.allow(
                name.clone(),
                CommandRule {
                    program: entry.program.display().to_string(),
                    args,
                    max_timeout: Duration::from_millis(entry.max_timeout_ms),
                    env: entry.env.clone(),
                    run_as: entry.run_as.clone(),
                    required_approvals: entry.required_approvals(name)?,
                },
            );
        }
        policy.approval_trust = self.approval.trust()?;
        if policy.approval_trust.is_none()
            && let Some(name) = self
                .commands
                .iter()
                .find(|(_, e)| e.approval == ApprovalMode::Required)
                .map(|(name, _)| name)
        {
            anyhow::bail!(
                "command {name}: approval = \"required\" needs [approval] roots (the approval root's public key)"
            );
        }
        for (env, recipe) in &self.deploy {
            if let Some(step) = recipe.steps.iter().find(|s| !s.program.is_absolute()) {
                anyhow::bail!(
                    "deploy {env}: program {} must be an absolute path",
                    step.program.display()
                );
            }
            policy.allow_deploy_env(env.clone());
        }
        Ok(policy)
    }
}
