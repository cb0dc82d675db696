//! nap-central: a thin tokio driver around `nap-core`'s central session and
//! hub, with storage, the operator API and the admin tooling.

pub mod api;
pub mod app;
pub mod auth;
pub mod clock;
pub mod cluster;
pub mod config;
mod connection;
mod endpoint;
#[doc(hidden)]
pub mod fuzz;
mod ingest;
pub mod metrics;
mod notify;
pub mod server;
pub mod store;
pub mod tls;

pub use app::{App, AppEvent};
pub use config::ServeConfig;
