//! nap-agent: a thin tokio driver around `nap-core`'s agent engine, with the
//! collectors, the sandboxed executor and the updater.

pub mod audit;
pub mod config;
pub mod driver;
pub mod executor;
pub mod health;
pub mod keys;
pub mod probe;
pub mod runner;
pub mod sandbox;
pub mod state;
pub mod telemetry;
pub mod transport;
pub mod update;
