//! `nap-central serve`: opens the store, wires the handles (effects, hub,
//! cluster link, agent endpoint, API), binds the listeners, runs until a
//! signal, then drains agents, closes with 1001 and flushes storage.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use nap_core::central::HubInput;
use tokio::sync::{Semaphore, watch};

use crate::agents::{AgentEndpoint, bind};
use crate::clock::Clock;
use crate::cluster::Cluster;
use crate::config::ServeConfig;
use crate::effects::Effects;
use crate::events::Events;
use crate::hub::{ClusterLink, HubHandle};
use crate::metrics::Metrics;
use crate::store::{AnyStore, Storage};

/// A started central.
#[derive(Debug)]
pub struct Running {
    pub hub: HubHandle,
    pub config: ServeConfig,
    /// Upgrades in flight; exhausted, new ones get 503.
    pub handshakes: Arc<Semaphore>,
    pub agent_addr: SocketAddr,
    pub api_addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// A seed for the hub's PRNG: each process draws differently.
fn seed() -> u64 {
    let mut bytes = [0u8; 8];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        tracing::warn!("no randomness for the hub's seed; using 0");
    }
    u64::from_le_bytes(bytes)
}

/// Descriptors kept for everything but the two listeners' connections: the
/// database pool, Redis, webhook calls, files, the runtime itself.
const FD_RESERVE: u64 = 256;

/// Makes sure the process may open what the two connection budgets allow:
/// raises the soft descriptor limit to the hard one if need be, and failing
/// that lowers the agent endpoint's budget (with a warning) so that the
/// listener stops accepting before descriptors run out for the API, the
/// database and `/healthz`.
fn fit_descriptor_budget(config: &mut ServeConfig) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let to_u64 = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    let wanted = to_u64(config.max_connections)
        .saturating_add(to_u64(config.api_max_connections))
        .saturating_add(FD_RESERVE);
    let mut limit = soft;
    if wanted > soft && setrlimit(Resource::RLIMIT_NOFILE, wanted.min(hard), hard).is_ok() {
        limit = wanted.min(hard);
    }
    if wanted > limit {
        let room = limit
            .saturating_sub(to_u64(config.api_max_connections))
            .saturating_sub(FD_RESERVE);
        let room = usize::try_from(room).unwrap_or(usize::MAX).max(1);
        tracing::warn!(
            limit,
            configured = config.max_connections,
            lowered_to = room,
            "the open-file limit cannot hold max_connections agents besides the API's budget; lowering max_connections"
        );
        config.max_connections = room;
    }
}

/// Opens storage, restores open commands, binds and serves.
pub async fn start(mut config: ServeConfig) -> anyhow::Result<Running> {
    fit_descriptor_budget(&mut config);
    let tls = crate::tls::server_config(&config.tls_cert, &config.tls_key)?;
    // A bad webhook URL or CA fails the start, not the first notification.
    let webhook = config
        .webhook
        .as_deref()
        .map(|url| crate::effects::Webhook::new(url, config.webhook_ca.as_deref()))
        .transpose()?;
    let shared = config.redis.is_some();
    let agent_listener = bind(config.listen, shared)?;
    let api_listener = bind(config.api_listen, shared)?;
    let agent_addr = agent_listener.local_addr()?;
    let api_addr = api_listener.local_addr()?;

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
    let clock = Clock::default();
    let audit_anchor = match config.audit_anchor_path() {
        Some(path) => Some(Arc::new(
            crate::store::anchor::Anchor::open(&path)
                .map_err(|e| anyhow::anyhow!("audit anchor {}: {e:#}", path.display()))?,
        )),
        None => {
            tracing::warn!(
                "the audit chain is not anchored: set audit_anchor to a file outside the database (spec §11)"
            );
            None
        }
    };
    let effects = Effects::start(
        &config,
        webhook,
        audit_anchor,
        store,
        Arc::new(Metrics::new()),
        Events::new(),
        clock,
    );
    let lease = Duration::from_secs(config.rollout_lease_s.max(1));
    let link = cluster.map(|c| ClusterLink::new(c, config.max_connections, lease));
    let hub = HubHandle::start(config.hub_config(seed())?, effects, link);
    let cluster_tasks = crate::hub::start_cluster_work(&hub);
    hub.watch_revocations();
    let rollouts = hub.restore_rollouts().await?;
    if rollouts > 0 {
        tracing::info!(rollouts, "rollouts restored from the store");
    }
    let restored = hub.restore_commands().await?;
    if restored > 0 {
        tracing::info!(restored, "open commands restored from the store");
    }

    let handshakes = Arc::new(Semaphore::new(config.max_handshakes.max(1)));
    let endpoint = Arc::new(AgentEndpoint {
        hub: hub.clone(),
        session_config: config.session_config(),
        handshakes: Arc::clone(&handshakes),
        max_handshakes: config.max_handshakes,
        max_connections: config.max_connections,
        shared_port: shared,
        artifacts: config.artifacts.clone(),
    });
    let (stop, stopped) = watch::channel(false);
    let wait = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let agents = tokio::spawn(crate::agents::serve(
        endpoint,
        agent_listener,
        tls,
        wait(stopped.clone()),
    ));
    let router = crate::api::router(hub.clone(), &config);
    let api_tls = match (&config.api_tls_cert, &config.api_tls_key) {
        (Some(cert), Some(key)) => Some(crate::tls::server_config(cert, key)?),
        (None, None) => None,
        _ => anyhow::bail!("api_tls_cert and api_tls_key go together"),
    };
    let api = tokio::spawn(crate::api::serve(
        api_listener,
        router,
        api_tls,
        crate::api::ApiLimits::from_config(&config),
        wait(stopped),
    ));
    tracing::info!(%agent_addr, %api_addr, "nap-central is serving");
    Ok(Running {
        hub,
        config,
        handshakes,
        agent_addr,
        api_addr,
        stop,
        tasks: [agents, api].into_iter().chain(cluster_tasks).collect(),
    })
}

impl Running {
    pub fn store(&self) -> &AnyStore {
        &self.hub.effects().store
    }

    pub fn events(&self) -> &Events {
        &self.hub.effects().events
    }

    pub fn metrics(&self) -> &Metrics {
        &self.hub.effects().metrics
    }

    /// Graceful shutdown: stop accepting, drain every agent (each is told
    /// when to come back, then closed with 1001), flush telemetry.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.hub.input(HubInput::Drain);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let effects = self.hub.effects();
        while effects.metrics.connections.get() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        while effects.telemetry.depth() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for task in self.tasks {
            task.abort();
        }
        // Another process drives the rollouts from now on, without waiting
        // for the lease to run out.
        self.hub.release_rollouts().await;
        tracing::info!("nap-central stopped");
    }
}

/// Serves until SIGINT or SIGTERM.
pub async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    let running = start(config).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down: draining agents");
    running.shutdown().await;
    Ok(())
}
