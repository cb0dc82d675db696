//! The real agent: the generic [`Runner`] with the machine as its host —
//! the node key signs tokens, the collectors sample, the sandboxed executor
//! runs, the state file persists, the audit log records. Every protocol
//! decision is the engine's; this file only performs and reports.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nap_core::agent::{
    AgentConfig, AgentEngine, AgentEvent, AgentInput, AgentSnapshot, Decision, Task,
};
use nap_core::wire::{Intervals, TelemetryData};
use nap_core::{NodeId, RequestId, WallTime};
use tokio::sync::Mutex;

use crate::audit::AuditLog;
use crate::config::FileConfig;
use crate::executor::{Executor, Job};
use crate::keys::NodeKey;
use crate::runner::{Dialer, Host, Inputs, Runner};
use crate::state::StateFile;
use crate::telemetry::Sampler;

/// How long the token that downloads an update artifact lives.
const DOWNLOAD_TOKEN_LIFETIME: Duration = Duration::from_secs(300);

/// What the driver was asked to do at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Stopped (signal) or revoked.
    Stopped,
    Revoked,
    /// A new binary is installed: exit with the restart code.
    Restart,
}

/// The running agent.
#[derive(Debug)]
pub struct Driver {
    runner: Runner<Machine>,
    key_updates: Arc<std::sync::atomic::AtomicU64>,
}

/// The machine, as the agent's host.
pub struct Machine {
    config: FileConfig,
    key: NodeKey,
    tls: Arc<rustls::ClientConfig>,
    executor: Executor,
    sampler: Arc<Mutex<Sampler>>,
    last_sample: Arc<std::sync::Mutex<Option<TelemetryData>>>,
    audit: AuditLog,
    state: StateFile,
    exit: Option<Exit>,
    /// Update tasks started: their success means a new binary is installed.
    updates: std::collections::HashSet<RequestId>,
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machine")
            .field("node_id", &self.config.node_id)
            .finish_non_exhaustive()
    }
}

impl Driver {
    pub fn new(config: FileConfig, key: NodeKey, trampoline: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.state_dir)?;
        let tls = crate::transport::tls_config(&config.ca)?;
        let mut core = AgentConfig::new(config.node_id, seed(config.node_id));
        core.policy = config.policy()?;
        core.max_running = config.max_running.max(1);
        core.agent_version = Some(env!("CARGO_PKG_VERSION").to_owned());
        core.token_lifetime = Duration::from_secs(config.token_lifetime_s.clamp(60, 3600));
        core.telemetry_buffer = config.telemetry_buffer;
        core.health_buffer = config.health_buffer;
        core.alert_buffer = config.alert_buffer;
        core.close_linger = Duration::from_millis(config.close_linger_ms.clamp(100, 30_000));
        core.intervals = Intervals::default();
        core.key_update_interval = Duration::from_millis(config.key_update_interval_ms);
        core.max_connection_age = Duration::from_secs(config.max_connection_age_s);
        // The engine waits this long after a kill before recording the timeout anyway.
        core.kill_grace =
            Duration::from_millis(config.sandbox.kill_grace_ms) + Duration::from_secs(5);
        let mut engine = AgentEngine::new(core);
        let state = StateFile::new(&config.state_dir);
        if let Some(snapshot) = state.load() {
            tracing::info!(
                requests = snapshot.requests.len(),
                telemetry = snapshot.telemetry.len(),
                "restored the outbox, the request record and buffered telemetry"
            );
            engine.restore(snapshot, WallTime::from(chrono::Utc::now()));
        }
        let audit = AuditLog::open(&config.state_dir.join("audit.jsonl"))?;
        let key_updates = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let dialer = Dialer {
            url: config.central.clone(),
            tls: Arc::clone(&tls),
            options: crate::transport::DialOptions {
                key_updates: Some(Arc::clone(&key_updates)),
                ..Default::default()
            },
        };
        let machine = Machine {
            executor: Executor::new(config.sandbox.clone(), trampoline),
            sampler: Arc::new(Mutex::new(Sampler::new(
                config.containers.clone(),
                config.application.clone(),
            )?)),
            last_sample: Arc::new(std::sync::Mutex::new(None)),
            config,
            key,
            tls,
            audit,
            state,
            exit: None,
            updates: std::collections::HashSet::new(),
        };
        Ok(Self {
            runner: Runner::new(engine, machine, dialer),
            key_updates,
        })
    }

    /// TLS key updates sent so far, on every connection.
    pub fn key_updates(&self) -> Arc<std::sync::atomic::AtomicU64> {
        Arc::clone(&self.key_updates)
    }

    /// Runs until stopped, revoked or restarting for an update.
    pub async fn run(mut self) -> anyhow::Result<Exit> {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let state_dir = self.runner.host.config.state_dir.clone();
        let runner = &mut self.runner;
        runner.input(AgentInput::WallClock(WallTime::from(chrono::Utc::now())));
        if let Some(pending) = crate::update::pending(&state_dir) {
            // The engine keeps this version only if it reaches central in time.
            let deadline = WallTime::from_unix_millis(pending.deadline.saturating_mul(1000))
                .unwrap_or(WallTime::UNIX_EPOCH);
            runner.input(AgentInput::UpdateOnProbation { deadline });
        }
        runner.input(AgentInput::Start);
        let mut wall_tick = tokio::time::interval(Duration::from_secs(60));
        // systemd: ready once started; the watchdog is petted from this loop,
        // so a wedged driver is restarted.
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        let watchdog = sd_notify::watchdog_enabled();
        let mut pet = tokio::time::interval(watchdog.map_or(Duration::from_secs(3600), |w| w / 2));
        loop {
            runner.perform();
            if let Some(exit) = runner.host.exit {
                // `status offline` and the close frame are written before
                // the process goes.
                runner.finish_closing().await;
                return Ok(exit);
            }
            let deadline = runner.deadline();
            tokio::select! {
                Some(input) = runner.recv() => runner.input(input),
                () = tokio::time::sleep_until(deadline.into()) => runner.handle_timeout(),
                _ = wall_tick.tick() => runner.input(AgentInput::WallClock(WallTime::from(chrono::Utc::now()))),
                _ = pet.tick() => {
                    if watchdog.is_some() {
                        let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                    }
                }
                _ = tokio::signal::ctrl_c() => stop(runner),
                _ = term.recv() => stop(runner),
            }
        }
    }
}

fn stop(runner: &mut Runner<Machine>) {
    tracing::info!("stopping: reporting offline and closing");
    runner.input(AgentInput::Shutdown);
}

impl Host for Machine {
    fn mint(&mut self, lifetime: Duration) -> anyhow::Result<String> {
        self.key
            .token(self.config.node_id, &self.config.audience, lifetime)
    }

    fn sample(&mut self, inputs: &Inputs) {
        let (sampler, last, tx) = (
            Arc::clone(&self.sampler),
            Arc::clone(&self.last_sample),
            inputs.clone(),
        );
        tokio::spawn(async move {
            let sample = sampler.lock().await.sample().await;
            *last
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(sample.clone());
            let _ = tx.send(AgentInput::TelemetrySample(sample)).await;
        });
    }

    fn check_health(&mut self, request_id: Option<RequestId>, inputs: &Inputs) {
        let (config, last, sampler, tx) = (
            self.config.health.clone(),
            Arc::clone(&self.last_sample),
            Arc::clone(&self.sampler),
            inputs.clone(),
        );
        tokio::spawn(async move {
            let cached = last
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            let sample = match cached {
                Some(s) if request_id.is_none() => s,
                _ => sampler.lock().await.sample().await,
            };
            let (checks, details) = crate::health::check(&config, &sample).await;
            let _ = tx
                .send(AgentInput::HealthReport {
                    request_id,
                    checks,
                    details,
                })
                .await;
        });
    }

    fn run(&mut self, request_id: RequestId, task: Task, inputs: &Inputs) {
        let jobs = match &task {
            Task::Execute(approved) => vec![Job {
                program: approved.program.clone(),
                args: approved.args.clone(),
                env: approved.env.clone(),
                run_as: approved.run_as.clone(),
            }],
            Task::Deploy { env, branch, .. } => match self.config.deploy.get(env) {
                Some(recipe) => recipe
                    .steps
                    .iter()
                    .map(|step| Job {
                        program: step.program.display().to_string(),
                        args: step
                            .args
                            .iter()
                            .map(|a| a.replace("{branch}", branch))
                            .collect(),
                        env: step.env.clone(),
                        run_as: recipe.run_as.clone(),
                    })
                    .collect(),
                None => Vec::new(),
            },
            Task::HealthCheck { .. } => return self.check_health(Some(request_id), inputs),
            Task::UpdateAgent { version, .. } => {
                return self.update(request_id, version.clone(), inputs);
            }
        };
        self.audit("run", Some(request_id), serde_json::json!({ "jobs": jobs.iter().map(|j| (&j.program, &j.args)).collect::<Vec<_>>() }));
        let (executor, tx) = (self.executor.clone(), inputs.clone());
        tokio::spawn(async move {
            let outcome = executor.run(request_id, jobs).await;
            let _ = tx
                .send(AgentInput::CommandFinished {
                    request_id,
                    outcome,
                })
                .await;
        });
    }

    fn kill(&mut self, request_id: RequestId) {
        self.audit(
            "kill",
            Some(request_id),
            serde_json::json!({ "reason": "timeout" }),
        );
        let executor = self.executor.clone();
        tokio::spawn(async move { executor.kill(request_id).await });
    }

    fn confirm_update(&mut self) {
        crate::update::confirm(&self.config.state_dir);
    }

    fn roll_back_update(&mut self) {
        if let Some(pending) = crate::update::pending(&self.config.state_dir)
            && let Err(e) = crate::update::roll_back(&self.config.state_dir, &pending)
        {
            tracing::error!(error = %e, "cannot roll the update back");
        }
        self.exit = Some(Exit::Restart);
    }

    fn persist(&mut self, snapshot: &AgentSnapshot) {
        if let Err(e) = self.state.save(snapshot) {
            tracing::error!(error = %e, "cannot persist the outbox and request record");
        }
    }

    fn event(&mut self, event: AgentEvent) {
        match event {
            AgentEvent::CommandDecision {
                request_id,
                what,
                decision,
            } => {
                let (name, reason) = match &decision {
                    Decision::Blocked(refusal) => ("denied", Some(refusal.to_string())),
                    Decision::Started => ("allowed", None),
                    Decision::Queued => ("queued", None),
                    Decision::Held => ("held", None),
                    Decision::Busy => ("busy", None),
                    Decision::Duplicate => ("duplicate", None),
                    Decision::Invalid(why) => ("invalid", Some((*why).to_owned())),
                    Decision::ApprovalRefused(refusal) => {
                        ("approval_refused", Some(refusal.to_string()))
                    }
                };
                if matches!(
                    decision,
                    Decision::Blocked(_) | Decision::ApprovalRefused(_)
                ) {
                    tracing::warn!(request = ?request_id, %what, reason = ?reason, "command blocked");
                }
                self.audit(
                    "decision",
                    request_id,
                    serde_json::json!({ "what": what, "decision": name, "reason": reason }),
                );
            }
            AgentEvent::CommandCompleted { result } => {
                let success = result.success;
                let update_installed = self.updates.remove(&result.request_id) && success;
                self.audit(
                    "outcome",
                    Some(result.request_id),
                    serde_json::json!({ "success": success, "exitCode": result.exit_code, "error": result.error, "truncated": result.truncated }),
                );
                if update_installed {
                    // The engine persisted the result (its Persist precedes this
                    // event): the restarted agent delivers it.
                    self.exit = Some(Exit::Restart);
                }
            }
            AgentEvent::Established { session_id, .. } => {
                tracing::info!(%session_id, "connected to central");
            }
            AgentEvent::Disconnected { reason, .. } => {
                tracing::warn!(?reason, "disconnected from central")
            }
            AgentEvent::BackoffScheduled { delay, attempt } => {
                tracing::info!(?delay, attempt, "reconnecting later")
            }
            AgentEvent::Revoked => {
                tracing::error!("central revoked this node: not reconnecting");
                self.exit = Some(Exit::Revoked);
            }
            AgentEvent::Stopped => self.exit = Some(Exit::Stopped),
            AgentEvent::InvalidFrame { error } => {
                tracing::warn!(%error, "invalid message from central ignored")
            }
            AgentEvent::Unexpected { message_type } => {
                tracing::warn!(message_type, "unexpected message from central ignored")
            }
            AgentEvent::FrameDropped { epoch } => {
                tracing::warn!(%epoch, "send queue full: a frame was dropped (unacked data is sent again)")
            }
            AgentEvent::TelemetryDropped { total } => {
                tracing::warn!(total, "telemetry buffer full: oldest samples dropped")
            }
            AgentEvent::Connecting { .. } | AgentEvent::RoundTrip { .. } => {}
        }
    }
}

impl Machine {
    fn update(&mut self, request_id: RequestId, version: String, inputs: &Inputs) {
        self.updates.insert(request_id);
        let config = self.config.clone();
        let (tls, tx) = (Arc::clone(&self.tls), inputs.clone());
        let token = self
            .key
            .token(config.node_id, &config.audience, DOWNLOAD_TOKEN_LIFETIME);
        self.audit(
            "update",
            Some(request_id),
            serde_json::json!({ "version": version }),
        );
        tokio::spawn(async move {
            let result = async {
                let token = token?;
                let release_key = config.update.release_key.as_ref().ok_or_else(|| {
                    anyhow::anyhow!("no release key is configured: updates are refused")
                })?;
                let release_key = std::fs::read_to_string(release_key)?;
                let base = config
                    .central
                    .replacen("wss://", "https://", 1)
                    .split("/v1/")
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let path = format!(
                    "/v1/artifacts/nap-agent/{version}/{}",
                    crate::update::TARGET
                );
                let artifact = crate::update::fetch(&base, Arc::clone(&tls), &token, &path).await?;
                let manifest =
                    crate::update::fetch(&base, tls, &token, &format!("{path}.manifest")).await?;
                let manifest = crate::update::verify(
                    &artifact,
                    &String::from_utf8_lossy(&manifest),
                    &release_key,
                    &version,
                    crate::update::VERSION,
                )?;
                tracing::info!(%manifest, "release verified");
                let binary = match &config.update.binary {
                    Some(b) => b.clone(),
                    None => std::env::current_exe()?,
                };
                crate::update::install(
                    &binary,
                    &config.state_dir,
                    &version,
                    &artifact,
                    Duration::from_millis(config.update.rollback_after_ms),
                )?;
                anyhow::Ok(())
            }
            .await;
            let outcome = match result {
                Ok(()) => nap_core::agent::CommandOutcome {
                    success: true,
                    stdout: format!("installed {version}; restarting"),
                    ..Default::default()
                },
                Err(e) => nap_core::agent::CommandOutcome {
                    success: false,
                    error: Some(nap_core::wire::CommandError {
                        code: nap_core::wire::ErrorCode::Internal,
                        message: format!("update to {version} refused: {e:#}"),
                    }),
                    ..Default::default()
                },
            };
            let _ = tx
                .send(AgentInput::CommandFinished {
                    request_id,
                    outcome,
                })
                .await;
        });
    }

    fn audit(&mut self, event: &str, request_id: Option<RequestId>, detail: serde_json::Value) {
        if let Err(e) = self
            .audit
            .record(event, request_id.map(|r| r.to_string()), detail)
        {
            tracing::error!(error = %e, "cannot write the audit log");
        }
    }
}

/// The engine's PRNG seed: different per node and per start.
fn seed(node_id: NodeId) -> u64 {
    let bytes = node_id.as_uuid().as_bytes();
    let id = u64::from_le_bytes(bytes[..8].try_into().unwrap_or([0; 8]));
    id ^ u64::try_from(chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)).unwrap_or(0)
}
