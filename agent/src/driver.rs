//! The tokio driver: feeds the core's agent engine with time, frames and
//! results, and performs what it asks (dial, send, sample, run, kill,
//! persist). Every protocol decision is the engine's.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nap_core::agent::{
    AgentConfig, AgentEngine, AgentEvent, AgentInput, AgentOutput, Decision, Task,
};
use nap_core::transport::Epoch;
use nap_core::wire::{Intervals, TelemetryData};
use nap_core::{NodeId, RequestId, Timestamp, WallTime};
use tokio::sync::{Mutex, mpsc};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::audit::AuditLog;
use crate::config::FileConfig;
use crate::executor::{Executor, Job};
use crate::keys::NodeKey;
use crate::state::StateFile;
use crate::telemetry::Sampler;

/// How long a node token lives.
const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

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
pub struct Driver {
    engine: AgentEngine,
    base: Instant,
    config: FileConfig,
    key: NodeKey,
    tls: Arc<rustls::ClientConfig>,
    executor: Executor,
    sampler: Arc<Mutex<Sampler>>,
    last_sample: Arc<std::sync::Mutex<Option<TelemetryData>>>,
    audit: AuditLog,
    state: StateFile,
    tx: mpsc::Sender<AgentInput>,
    rx: mpsc::Receiver<AgentInput>,
    writers: HashMap<Epoch, mpsc::Sender<Message>>,
    exit: Option<Exit>,
    /// Update tasks started: their success means a new binary is installed.
    updates: std::collections::HashSet<RequestId>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("engine", &self.engine)
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
        core.intervals = Intervals::default();
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
            engine.restore(snapshot);
        }
        let audit = AuditLog::open(&config.state_dir.join("audit.jsonl"))?;
        let (tx, rx) = mpsc::channel(1024);
        Ok(Self {
            engine,
            base: Instant::now(),
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
            tx,
            rx,
            writers: HashMap::new(),
            exit: None,
            updates: std::collections::HashSet::new(),
        })
    }

    fn now(&self) -> Timestamp {
        Timestamp::from_micros(u64::try_from(self.base.elapsed().as_micros()).unwrap_or(u64::MAX))
    }

    fn instant(&self, at: Timestamp) -> Instant {
        self.base + Duration::from_micros(at.as_micros())
    }

    fn input(&mut self, input: AgentInput) {
        self.engine.handle_input(self.now(), input);
    }

    /// Runs until stopped, revoked or restarting for an update.
    pub async fn run(mut self) -> anyhow::Result<Exit> {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let update_deadline = crate::update::pending(&self.config.state_dir).map(|p| p.deadline);
        self.input(AgentInput::WallClock(WallTime::from(chrono::Utc::now())));
        self.input(AgentInput::Start);
        let mut wall_tick = tokio::time::interval(Duration::from_secs(60));
        // systemd: ready once started; the watchdog is petted from this loop,
        // so a wedged driver is restarted.
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        let watchdog = sd_notify::watchdog_enabled();
        let mut pet = tokio::time::interval(watchdog.map_or(Duration::from_secs(3600), |w| w / 2));
        loop {
            self.perform().await;
            if let Some(exit) = self.exit {
                return Ok(exit);
            }
            if let Some(deadline) = update_deadline
                && chrono::Utc::now().timestamp() > deadline
                && crate::update::pending(&self.config.state_dir).is_some()
            {
                if let Some(p) = crate::update::pending(&self.config.state_dir) {
                    crate::update::roll_back(&self.config.state_dir, &p)?;
                }
                return Ok(Exit::Restart);
            }
            let mut deadline = self.engine.poll_timeout().map_or_else(
                || Instant::now() + Duration::from_secs(3600),
                |t| self.instant(t),
            );
            if let Some(rollback_at) = update_deadline {
                // Wake when an unconfirmed update's time is up.
                let left =
                    u64::try_from(rollback_at + 1 - chrono::Utc::now().timestamp()).unwrap_or(0);
                deadline = deadline.min(Instant::now() + Duration::from_secs(left));
            }
            tokio::select! {
                Some(input) = self.rx.recv() => self.input(input),
                () = tokio::time::sleep_until(deadline.into()) => {
                    let now = self.now();
                    self.engine.handle_timeout(now);
                }
                _ = wall_tick.tick() => self.input(AgentInput::WallClock(WallTime::from(chrono::Utc::now()))),
                _ = pet.tick() => {
                    if watchdog.is_some() {
                        let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                    }
                }
                _ = tokio::signal::ctrl_c() => self.stop(),
                _ = term.recv() => self.stop(),
            }
        }
    }

    fn stop(&mut self) {
        tracing::info!("stopping: reporting offline and closing");
        self.input(AgentInput::Shutdown);
    }

    /// Performs every output the engine has, including those that feed it back.
    async fn perform(&mut self) {
        while let Some(output) = self.engine.poll_output() {
            match output {
                AgentOutput::MintToken => {
                    match self
                        .key
                        .token(self.config.node_id, &self.config.audience, TOKEN_LIFETIME)
                    {
                        Ok(token) => self.input(AgentInput::TokenMinted {
                            token,
                            lifetime: TOKEN_LIFETIME,
                        }),
                        Err(e) => {
                            tracing::error!(error = %e, "cannot sign a token; the engine will retry")
                        }
                    }
                }
                AgentOutput::Dial { epoch, token } => self.dial(epoch, token),
                AgentOutput::Send { epoch, message } => match nap_core::encode(&message) {
                    Ok(text) => {
                        if let Some(writer) = self.writers.get(&epoch)
                            && writer.try_send(Message::Text(text.into())).is_err()
                        {
                            tracing::warn!(%epoch, "send queue full: closing the connection");
                            self.writers.remove(&epoch);
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "cannot encode a message; dropped"),
                },
                AgentOutput::Close {
                    epoch,
                    code,
                    reason,
                } => {
                    if let Some(writer) = self.writers.remove(&epoch) {
                        let frame = CloseFrame {
                            code: CloseCode::from(code.as_u16()),
                            reason: reason.into(),
                        };
                        let _ = writer.try_send(Message::Close(Some(frame)));
                    }
                }
                AgentOutput::SampleTelemetry => {
                    let (sampler, last, tx) = (
                        Arc::clone(&self.sampler),
                        Arc::clone(&self.last_sample),
                        self.tx.clone(),
                    );
                    tokio::spawn(async move {
                        let sample = sampler.lock().await.sample().await;
                        *last
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) =
                            Some(sample.clone());
                        let _ = tx.send(AgentInput::TelemetrySample(sample)).await;
                    });
                }
                AgentOutput::CheckHealth => self.health(None),
                AgentOutput::Run { request_id, task } => self.run_task(request_id, task),
                AgentOutput::Kill { request_id } => {
                    self.audit(
                        "kill",
                        Some(request_id),
                        serde_json::json!({ "reason": "timeout" }),
                    );
                    let executor = self.executor.clone();
                    tokio::spawn(async move { executor.kill(request_id).await });
                }
                AgentOutput::StreamLogs { service, .. } => {
                    tracing::warn!(%service, "stream_logs is not supported by this agent yet; ignored");
                }
                AgentOutput::Persist => {
                    if let Err(e) = self.state.save(&self.engine.snapshot()) {
                        tracing::error!(error = %e, "cannot persist the outbox and request record");
                    }
                }
                AgentOutput::Event(event) => self.on_event(event),
            }
        }
    }

    fn dial(&mut self, epoch: Epoch, token: String) {
        let (writer, outgoing) = mpsc::channel::<Message>(256);
        self.writers.insert(epoch, writer);
        let (tls, url, tx) = (
            Arc::clone(&self.tls),
            self.config.central.clone(),
            self.tx.clone(),
        );
        tokio::spawn(crate::transport::connect(
            url,
            tls,
            token,
            epoch,
            tx,
            outgoing,
            crate::transport::DialOptions::default(),
        ));
    }

    fn health(&self, request_id: Option<RequestId>) {
        let (config, last, sampler, tx) = (
            self.config.health.clone(),
            Arc::clone(&self.last_sample),
            Arc::clone(&self.sampler),
            self.tx.clone(),
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

    fn run_task(&mut self, request_id: RequestId, task: Task) {
        let jobs = match &task {
            Task::Execute(approved) => vec![Job {
                program: approved.program.clone(),
                args: approved.args.clone(),
                env: approved.env.clone(),
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
                    })
                    .collect(),
                None => Vec::new(),
            },
            Task::HealthCheck { .. } => return self.health(Some(request_id)),
            Task::UpdateAgent { version, .. } => return self.update(request_id, version.clone()),
        };
        self.audit("run", Some(request_id), serde_json::json!({ "jobs": jobs.iter().map(|j| (&j.program, &j.args)).collect::<Vec<_>>() }));
        let (executor, tx) = (self.executor.clone(), self.tx.clone());
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

    fn update(&mut self, request_id: RequestId, version: String) {
        self.updates.insert(request_id);
        let config = self.config.clone();
        let (tls, tx) = (Arc::clone(&self.tls), self.tx.clone());
        let token = self
            .key
            .token(config.node_id, &config.audience, Duration::from_secs(300));
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
                let sig = crate::update::fetch(&base, tls, &token, &format!("{path}.sig")).await?;
                crate::update::verify(&artifact, &String::from_utf8_lossy(&sig), &release_key)?;
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

    fn on_event(&mut self, event: AgentEvent) {
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
                };
                if matches!(decision, Decision::Blocked(_)) {
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
                crate::update::confirm(&self.config.state_dir);
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
            AgentEvent::TelemetryDropped { total } => {
                tracing::warn!(total, "telemetry buffer full: oldest samples dropped")
            }
            AgentEvent::Connecting { .. } | AgentEvent::RoundTrip { .. } => {}
        }
    }
}

/// The engine's PRNG seed: different per node and per start.
fn seed(node_id: NodeId) -> u64 {
    let bytes = node_id.as_uuid().as_bytes();
    let id = u64::from_le_bytes(bytes[..8].try_into().unwrap_or([0; 8]));
    id ^ u64::try_from(chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)).unwrap_or(0)
}
