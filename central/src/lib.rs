//! nap-central: a thin tokio driver around `nap-core`'s central hub and
//! sessions, with storage, the operator API and the admin tooling.
//!
//! The layers, outside in (imports run this way only):
//!
//! ```text
//! runtime ──▶ agents/ (sockets, upgrade, session tasks) ──▶ hub/ (the core's hub, forwarded) ──▶ effects/ ──▶ store/
//!        └──▶ api/ (operator HTTP) ─────────────────────────┘          └──▶ cluster/ (Redis)
//! ```

pub mod agents;
pub mod api;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod effects;
pub mod events;
#[doc(hidden)]
pub mod fuzz;
pub mod hub;
pub mod metrics;
pub mod release;
pub mod runtime;
pub mod store;
pub mod tls;

pub use config::ServeConfig;
pub use events::AppEvent;
pub use runtime::Running;
