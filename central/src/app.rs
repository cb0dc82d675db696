//! The running service's shared state, and the glue that performs the hub's
//! outputs: routing to sessions, and writing status and command changes to
//! the store in order.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nap_core::central::{
    CentralHub, CommandState, HubConfig, HubOutput, SessionConfig, SessionInput,
};
use nap_core::wire::NodeStatus;
use nap_core::{NodeId, RequestId, SessionId, WallTime};
use tokio::sync::{Notify, Semaphore, broadcast, mpsc};

use crate::clock::Clock;
use crate::cluster::{Cluster, Dispatch, Holder, TakeOvers};
use crate::config::ServeConfig;
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::store::{AnyStore, CommandRecord, StateChange, Storage};

/// Something tests and the simulator can wait for instead of sleeping.
/// Status and command events are sent once the change is stored.
#[derive(Debug, Clone, PartialEq)]
pub enum AppEvent {
    SessionOpened {
        node_id: NodeId,
        session_id: SessionId,
    },
    SessionClosed {
        node_id: NodeId,
        session_id: SessionId,
    },
    Status {
        node_id: NodeId,
        status: NodeStatus,
    },
    Command {
        request_id: RequestId,
        state: CommandState,
    },
    /// With a cluster: this instance has claimed the node and loaded its
    /// open commands.
    TakenOver {
        node_id: NodeId,
        session_id: SessionId,
    },
    TelemetryStored {
        node_id: NodeId,
        timestamp: WallTime,
    },
    ResultStored {
        request_id: RequestId,
    },
    AuthFailed {
        reason: &'static str,
    },
    /// The agent listener stopped (at capacity) or started again.
    Listening {
        accepting: bool,
    },
    /// A write failed and will be retried (the database is down or refusing).
    StorageError {
        operation: &'static str,
    },
}

/// Failed auth attempts per source address.
#[derive(Debug, Default)]
pub struct Throttle {
    failures: HashMap<IpAddr, (Instant, u32)>,
}

impl Throttle {
    const WINDOW: Duration = Duration::from_secs(60);
    const LIMIT: u32 = 10;

    /// Records a failure; returns how long to hold the answer.
    pub fn fail(&mut self, ip: IpAddr) -> Duration {
        let now = Instant::now();
        if self.failures.len() > 100_000 {
            self.failures
                .retain(|_, (since, _)| now.duration_since(*since) < Self::WINDOW);
        }
        let entry = self.failures.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= Self::WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
        Duration::from_millis(u64::from(entry.1.min(10)) * 100)
    }

    /// Whether the address has failed too often lately.
    pub fn blocked(&self, ip: IpAddr) -> bool {
        self.failures
            .get(&ip)
            .is_some_and(|(since, n)| *n >= Self::LIMIT && since.elapsed() < Self::WINDOW)
    }
}

/// The service.
#[derive(Debug)]
pub struct App {
    pub config: ServeConfig,
    pub store: AnyStore,
    pub clock: Clock,
    pub hub: Mutex<CentralHub>,
    pub hub_timers: Notify,
    pub routes: Mutex<HashMap<SessionId, crate::connection::Inbox>>,
    pub session_config: SessionConfig,
    pub metrics: Metrics,
    pub notifier: Notifier,
    pub ingest: Ingest,
    pub events: broadcast::Sender<AppEvent>,
    pub handshakes: Arc<Semaphore>,
    pub throttle: Mutex<Throttle>,
    /// Set when this process is one of several (`redis` configured).
    pub cluster: Option<Cluster>,
    takeovers: Option<TakeOvers>,
    writes: mpsc::Sender<StateChange>,
}

impl App {
    /// Opens and migrates the store and starts the background tasks.
    pub async fn start(config: ServeConfig) -> anyhow::Result<Arc<Self>> {
        let store = AnyStore::open(&config.db, config.db_pool).await?;
        store.migrate().await?;
        let cluster = match &config.redis {
            Some(url) => Some(
                Cluster::connect(url, &config.redis_prefix)
                    .await
                    .map_err(|e| anyhow::anyhow!("connecting to Redis at {url}: {e}"))?,
            ),
            None => None,
        };
        Ok(Self::with_store(config, store, cluster))
    }

    /// The service over an opened, migrated store.
    pub fn with_store(config: ServeConfig, store: AnyStore, cluster: Option<Cluster>) -> Arc<Self> {
        let clock = Clock::default();
        let mut hub_config = HubConfig::new(config.audience.clone());
        hub_config.seed = u64::from_le_bytes(
            uuid::Uuid::new_v4().as_bytes()[..8]
                .try_into()
                .unwrap_or([0; 8]),
        );
        let mut hub = CentralHub::new(hub_config);
        hub.set_wall_clock(clock.now(), clock.wall());
        let mut session_config = SessionConfig::with_intervals(config.intervals());
        session_config.offline_after = config.offline_after();
        session_config.limits.max_message_bytes = config.max_message_bytes;
        let (events, _) = broadcast::channel(4096);
        let (writes, writes_rx) = mpsc::channel(100_000);
        let metrics = Metrics::new();
        let (ingest, ingest_rx) = Ingest::channel(config.ingest_queue);
        let (takeovers, takeovers_rx) = match cluster {
            Some(_) => {
                let (tx, rx) = mpsc::channel(config.max_connections.max(1));
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let app = Arc::new(Self {
            notifier: Notifier::new(config.webhook.clone()),
            handshakes: Arc::new(Semaphore::new(config.max_handshakes.max(1))),
            config,
            store,
            clock,
            hub: Mutex::new(hub),
            hub_timers: Notify::new(),
            routes: Mutex::new(HashMap::new()),
            session_config,
            metrics,
            ingest,
            events,
            throttle: Mutex::new(Throttle::default()),
            cluster,
            takeovers,
            writes,
        });
        tokio::spawn(crate::ingest::run(Arc::clone(&app), ingest_rx));
        tokio::spawn(writer(Arc::clone(&app), writes_rx));
        tokio::spawn(hub_timer(Arc::clone(&app)));
        tokio::spawn(maintenance(Arc::clone(&app)));
        tokio::spawn(revocations(Arc::clone(&app)));
        crate::notify::start(&app);
        if let (Some(cluster), Some(rx)) = (&app.cluster, takeovers_rx) {
            crate::cluster::start(&app, cluster, rx);
        }
        app
    }

    /// Reloads commands that were queued or sent when central last stopped.
    /// One of several instances restores nothing: it loads a node's open
    /// commands when it takes the node (`take_over`).
    pub async fn restore_commands(self: &Arc<Self>) -> anyhow::Result<usize> {
        if self.cluster.is_some() {
            return Ok(0);
        }
        let open = self.store.open_commands().await?;
        let count = open.len();
        for c in open {
            let Ok(message) = serde_json::from_value(c.message.clone()) else {
                tracing::error!(request = %c.request_id, "stored command does not decode; marking it failed");
                self.store
                    .set_command_state(c.request_id, CommandState::Failed, self.clock.wall())
                    .await?;
                continue;
            };
            let known = matches!(self.store.get_node(c.node_id).await?, Some(n) if !n.revoked);
            let timeout = Duration::from_millis(c.timeout_ms);
            self.with_hub(|hub, now| {
                hub.submit(now, c.node_id, c.request_id, message, timeout, known)
            });
        }
        Ok(count)
    }

    /// Sends stored commands on their way: to this hub for nodes held here
    /// (or for every node, with no cluster: the hub queues for offline
    /// ones), to the holding instance for nodes held elsewhere. A command
    /// for a node nobody holds waits in the store for the node's return.
    pub async fn dispatch(self: &Arc<Self>, commands: Vec<Dispatch>) {
        let Some(cluster) = &self.cluster else {
            self.submit_here(commands);
            return;
        };
        let (here, elsewhere): (Vec<Dispatch>, Vec<Dispatch>) = {
            let hub = self.lock_hub();
            commands
                .into_iter()
                .partition(|c| hub.live_session(c.node_id).is_some())
        };
        self.submit_here(here);
        if elsewhere.is_empty() {
            return;
        }
        let nodes: Vec<NodeId> = elsewhere.iter().map(|c| c.node_id).collect();
        let holders = match cluster.locate(&nodes).await {
            Ok(holders) => holders,
            Err(e) => {
                self.metrics.db_error("redis_locate");
                tracing::warn!(error = %e, commands = elsewhere.len(), "cannot locate nodes; their commands wait in the store until they reconnect");
                return;
            }
        };
        let mut by_instance: HashMap<String, Vec<Dispatch>> = HashMap::new();
        for (command, holder) in elsewhere.into_iter().zip(holders) {
            if let Holder::Elsewhere(instance) = holder {
                by_instance.entry(instance).or_default().push(command);
            }
        }
        for (instance, commands) in by_instance {
            let count = commands.len();
            match cluster.send(&instance, commands).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!(%instance, count, "the holding instance is gone; its nodes' commands wait in the store until they reconnect")
                }
                Err(e) => {
                    self.metrics.db_error("redis_publish");
                    tracing::warn!(error = %e, %instance, count, "cannot hand commands over; they wait in the store until their nodes reconnect");
                }
            }
        }
    }

    /// Submits commands to this instance's hub.
    pub fn submit_here(self: &Arc<Self>, commands: Vec<Dispatch>) {
        if commands.is_empty() {
            return;
        }
        self.with_hub(|hub, now| {
            for c in commands {
                let timeout = Duration::from_millis(c.timeout_ms);
                hub.submit(now, c.node_id, c.request_id, c.message, timeout, true);
            }
        });
    }

    /// A session here has started: with a cluster, the node is claimed and
    /// its open commands loaded, in a batch with the other new sessions
    /// (`cluster::take_overs`).
    pub fn take_over(&self, node_id: NodeId, session_id: SessionId) {
        if let Some(takeovers) = &self.takeovers
            && takeovers.try_send((node_id, session_id)).is_err()
        {
            // Bounded by max_connections: full means far more admissions in
            // flight than connections allowed. The presence refresh claims
            // the node; its commands come when it next connects.
            self.metrics.db_error("take_over_queue_full");
            tracing::error!(node = %node_id, "take-over queue is full");
        }
    }

    /// Submits stored open commands of newly taken nodes whose session here
    /// is still the live one.
    pub fn submit_open(
        self: &Arc<Self>,
        sessions: &[(NodeId, SessionId)],
        open: Vec<CommandRecord>,
    ) {
        if open.is_empty() {
            return;
        }
        let live: std::collections::HashSet<NodeId> = {
            let hub = self.lock_hub();
            sessions
                .iter()
                .filter(|(node, session)| hub.live_session(*node) == Some(*session))
                .map(|(node, _)| *node)
                .collect()
        };
        let commands = open
            .into_iter()
            .filter(|c| live.contains(&c.node_id))
            .filter_map(|c| match serde_json::from_value(c.message) {
                Ok(message) => Some(Dispatch {
                    node_id: c.node_id,
                    request_id: c.request_id,
                    message,
                    timeout_ms: c.timeout_ms,
                }),
                Err(e) => {
                    tracing::error!(request = %c.request_id, error = %e, "a stored command does not decode; leaving it");
                    None
                }
            })
            .collect();
        self.submit_here(commands);
    }

    /// A session here has ended. With a cluster, a node that another
    /// instance now holds is let go without a status change (the holder
    /// writes `online`; an `offline` from here could land after it).
    pub async fn session_ended(self: &Arc<Self>, node_id: NodeId, session_id: SessionId) {
        if let Some(cluster) = &self.cluster {
            match cluster.vacate(node_id, session_id).await {
                Ok(Holder::Elsewhere(_)) => self.with_hub(|hub, _| hub.release(node_id)),
                Ok(_) => {}
                Err(e) => {
                    self.metrics.db_error("redis_vacate");
                    tracing::warn!(error = %e, node = %node_id, "cannot clear the node's presence; it expires by itself");
                }
            }
        }
        self.with_hub(|hub, now| hub.session_closed(now, node_id, session_id));
    }

    /// The hub, for a look or a change without outputs (a panic elsewhere
    /// while holding it leaves it usable: its state is whole between calls).
    pub fn lock_hub(&self) -> std::sync::MutexGuard<'_, CentralHub> {
        self.hub
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `f` on the hub with the current time, then performs its outputs.
    pub fn with_hub<T>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut CentralHub, nap_core::Timestamp) -> T,
    ) -> T {
        let (value, outputs) = {
            let mut hub = self.lock_hub();
            let now = self.clock.now();
            hub.set_wall_clock(now, self.clock.wall());
            let value = f(&mut hub, now);
            (
                value,
                std::iter::from_fn(|| hub.poll_output()).collect::<Vec<_>>(),
            )
        };
        for output in outputs {
            self.perform(output);
        }
        self.hub_timers.notify_one();
        value
    }

    /// Sends an input to a session's connection task.
    pub fn route(&self, session_id: SessionId, input: SessionInput) {
        let sender = self
            .routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&session_id)
            .cloned();
        if let Some(sender) = sender
            && sender.try_send(Box::new(input)).is_err()
        {
            tracing::warn!(session = %session_id, "session inbox full or closed; input dropped");
        }
    }

    pub fn emit(&self, event: AppEvent) {
        let _ = self.events.send(event);
    }

    fn perform(self: &Arc<Self>, output: HubOutput) {
        let at = self.clock.wall();
        match output {
            HubOutput::Deliver {
                session_id,
                message,
            } => self.route(session_id, SessionInput::Deliver(message)),
            HubOutput::Terminate {
                session_id,
                code,
                reason,
            } => {
                self.route(session_id, SessionInput::Terminate { code, reason });
            }
            HubOutput::Drain {
                session_id,
                reconnect_after,
            } => {
                self.route(session_id, SessionInput::Drain { reconnect_after });
            }
            HubOutput::StatusChanged {
                node_id,
                status,
                reason,
            } => {
                self.queue_write(StateChange::Status {
                    node_id,
                    status,
                    reason,
                    at,
                });
            }
            HubOutput::CommandChanged {
                request_id, state, ..
            } => {
                self.queue_write(StateChange::Command {
                    request_id,
                    state,
                    at,
                });
            }
        }
    }

    fn queue_write(&self, write: StateChange) {
        if let Err(e) = self.writes.try_send(write) {
            self.metrics.db_error("write_queue_full");
            tracing::error!("state write queue is full; dropping {:?}", e.into_inner());
        }
    }
}

/// Most state changes one transaction carries.
const WRITE_BATCH: usize = 512;

/// Applies the hub's state changes to the store, in order, retrying. What
/// queued up while a write was in flight goes in the next transaction
/// together: a burst (a fan-out to 10,000 nodes, a fleet reconnecting) costs
/// a few commits, not one per decision.
async fn writer(app: Arc<App>, mut rx: mpsc::Receiver<StateChange>) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    while rx.recv_many(&mut batch, WRITE_BATCH).await > 0 {
        let mut delay = Duration::from_millis(100);
        while let Err(e) = app.store.apply_state_changes(batch.clone()).await {
            app.metrics.db_error("state_write");
            tracing::error!(error = %e, "writing {} state changes failed; retrying in {delay:?}", batch.len());
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
        // Announced once stored, so whoever waits can read it back.
        for write in batch.drain(..) {
            app.emit(match write {
                StateChange::Status {
                    node_id, status, ..
                } => AppEvent::Status { node_id, status },
                StateChange::Command {
                    request_id, state, ..
                } => AppEvent::Command { request_id, state },
            });
        }
    }
}

/// Fires the hub's timers (command expiry and result deadlines).
async fn hub_timer(app: Arc<App>) {
    loop {
        let next = app.lock_hub().poll_timeout();
        match next {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(app.clock.instant(at).into()) => {
                        app.with_hub(|hub, now| hub.handle_timeout(now));
                    }
                    () = app.hub_timers.notified() => {}
                }
            }
            None => app.hub_timers.notified().await,
        }
        // Keep the hub's memory to live commands (the store has the rest).
        app.lock_hub().forget_finished();
    }
}

/// Partitions and retention, hourly.
async fn maintenance(app: Arc<App>) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        every.tick().await;
        if let Err(e) = app.store.maintain(app.clock.wall()).await {
            app.metrics.db_error("maintenance");
            tracing::error!(error = %e, "storage maintenance failed");
        }
    }
}

/// Closes the live sessions of nodes revoked by any process (the CLI writes
/// to the store directly), within a second or two.
async fn revocations(app: Arc<App>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        every.tick().await;
        match app.store.revoked_nodes().await {
            Ok(revoked) => {
                for node_id in revoked {
                    let live = app.lock_hub().live_session(node_id).is_some();
                    if live {
                        tracing::info!(node = %node_id, "node revoked: closing its session with 4003");
                        app.with_hub(|hub, _| hub.revoke(node_id));
                    }
                }
            }
            Err(e) => {
                app.metrics.db_error("revoked_nodes");
                tracing::warn!(error = %e, "could not read revocations");
            }
        }
    }
}
