//! `nap-central serve`: binds the agent and API listeners, runs until a
//! signal, then drains agents, closes with 1001 and flushes storage.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;

use crate::app::App;
use crate::config::ServeConfig;

/// A started central.
#[derive(Debug)]
pub struct Running {
    pub app: Arc<App>,
    pub agent_addr: SocketAddr,
    pub api_addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Binds `addr`. `shared`: several central processes of one cluster share
/// the port (SO_REUSEPORT, DESIGN.md §5). Alone, central binds it
/// exclusively, so that a second one fails with "address in use" instead of
/// silently taking half of the connections it cannot route.
pub(crate) fn bind(addr: SocketAddr, shared: bool) -> anyhow::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(shared)?;
    socket
        .bind(addr)
        .with_context(|| format!("binding {addr}"))?;
    Ok(socket.listen(4096)?)
}

/// Opens storage, restores open commands, binds and serves.
pub async fn start(config: ServeConfig) -> anyhow::Result<Running> {
    let tls = crate::tls::server_config(&config.tls_cert, &config.tls_key)?;
    let shared = config.redis.is_some();
    let agent_listener = bind(config.listen, shared)?;
    let api_listener = bind(config.api_listen, shared)?;
    let agent_addr = agent_listener.local_addr()?;
    let api_addr = api_listener.local_addr()?;
    let app = App::start(config).await?;
    let restored = app.restore_commands().await?;
    if restored > 0 {
        tracing::info!(restored, "open commands restored from the store");
    }
    let (stop, stopped) = watch::channel(false);
    let wait = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let agents = tokio::spawn(crate::endpoint::serve(
        Arc::clone(&app),
        agent_listener,
        tls,
        wait(stopped.clone()),
    ));
    let router = crate::api::router(Arc::clone(&app));
    let api_stop = wait(stopped);
    let api = tokio::spawn(async move {
        if let Err(e) = axum::serve(api_listener, router)
            .with_graceful_shutdown(api_stop)
            .await
        {
            tracing::error!(error = %e, "operator API stopped");
        }
    });
    tracing::info!(%agent_addr, %api_addr, "nap-central is serving");
    Ok(Running {
        app,
        agent_addr,
        api_addr,
        stop,
        tasks: vec![agents, api],
    })
}

impl Running {
    /// Graceful shutdown: stop accepting, drain every agent (each is told
    /// when to come back, then closed with 1001), flush telemetry.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.app.with_hub(|hub, now| hub.drain(now));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.app.metrics.connections.get() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        while self.app.ingest.depth() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for task in self.tasks {
            task.abort();
        }
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
