//! The socket side of central: the agent listener, the HTTP upgrade, the
//! per-session task, token crypto and update artifacts. Everything here
//! carries bytes to and from the core's engines through the hub handle.

mod answer;
mod artifacts;
mod listener;
mod routes;
mod session;
pub mod tokens;
mod upgrade;

use std::path::PathBuf;
use std::sync::Arc;

use nap_core::central::SessionConfig;
use tokio::sync::Semaphore;

use crate::hub::HubHandle;
use crate::metrics::Metrics;

pub use listener::{bind, serve};
pub use session::ws_config;

/// What the agent endpoint needs.
#[derive(Debug)]
pub struct AgentEndpoint {
    pub hub: HubHandle,
    pub session_config: SessionConfig,
    /// Upgrades in flight (token checks), each holding a permit until its
    /// session has sent `welcome`.
    pub handshakes: Arc<Semaphore>,
    /// TLS handshakes in flight at once.
    pub max_handshakes: usize,
    pub max_connections: usize,
    /// Several processes share the port (SO_REUSEPORT).
    pub shared_port: bool,
    pub artifacts: Option<PathBuf>,
}

impl AgentEndpoint {
    fn metrics(&self) -> &Metrics {
        &self.hub.effects().metrics
    }
}
