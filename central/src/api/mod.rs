//! The operator HTTP API under `/api/v1` (spec/openapi.json): one file per
//! resource. Bearer API tokens carry a role: viewers read, operators also
//! send commands, admins also manage nodes. Every error is JSON
//! `{"error": "..."}`.

mod approvals;
mod broadcast;
mod caller;
mod commands;
mod error;
mod guard;
mod nodes;
mod records;
mod rollout_approval;
mod rollout_control;
mod rollouts;
mod serve;
mod system;
pub mod tokens;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::hub::HubHandle;

pub use error::ApiError;
pub use guard::Guard;
pub use serve::{ApiLimits, serve};

/// The committed OpenAPI document, served as is.
pub const OPENAPI: &str = include_str!("../../../spec/openapi.json");

/// The largest body any route takes.
pub const MAX_BODY: usize = broadcast::BROADCAST_BODY_LIMIT;

/// The API router, every route behind the guard (authentication before the
/// body, the per-token rate, the body's deadline).
pub fn router(hub: HubHandle, config: &crate::ServeConfig) -> Router {
    let guard = Guard::new(hub.clone(), config, MAX_BODY);
    Router::new()
        .route("/healthz", get(system::healthz))
        .route("/metrics", get(system::metrics))
        .route("/api/v1/openapi.json", get(system::openapi))
        .route("/api/v1/nodes", get(nodes::list_nodes))
        .route("/api/v1/nodes/{id}", get(nodes::get_node))
        .route("/api/v1/nodes/{id}/telemetry", get(nodes::telemetry))
        .route(
            "/api/v1/nodes/{id}/commands",
            post(commands::submit_command),
        )
        .route(
            "/api/v1/commands/broadcast",
            post(broadcast::broadcast)
                .layer(DefaultBodyLimit::max(broadcast::BROADCAST_BODY_LIMIT)),
        )
        .route("/api/v1/commands/{id}", get(commands::get_command))
        .route("/api/v1/commands/{id}/approve", post(approvals::approve))
        .route("/api/v1/commands/{id}/reject", post(approvals::reject))
        .route("/api/v1/commands/{id}/cancel", post(approvals::cancel))
        .route("/api/v1/approvals", get(approvals::list))
        .route(
            "/api/v1/rollouts",
            get(rollouts::list)
                .post(rollouts::create)
                .layer(DefaultBodyLimit::max(broadcast::BROADCAST_BODY_LIMIT)),
        )
        .route("/api/v1/rollouts/{id}", get(rollouts::get))
        .route("/api/v1/rollouts/{id}/pause", post(rollout_control::pause))
        .route(
            "/api/v1/rollouts/{id}/resume",
            post(rollout_control::resume),
        )
        .route("/api/v1/rollouts/{id}/abort", post(rollout_control::abort))
        .route(
            "/api/v1/rollouts/{id}/approve",
            post(rollout_approval::approve),
        )
        .route(
            "/api/v1/rollouts/{id}/reject",
            post(rollout_approval::reject),
        )
        .route("/api/v1/alerts", get(records::alerts))
        .route("/api/v1/audit", get(records::audit))
        .layer(axum::middleware::from_fn_with_state(guard, guard::guard))
        .with_state(hub)
}

/// Route paths, for the test that the OpenAPI document covers them all.
pub const ROUTES: &[&str] = &[
    "/healthz",
    "/metrics",
    "/api/v1/openapi.json",
    "/api/v1/nodes",
    "/api/v1/nodes/{id}",
    "/api/v1/nodes/{id}/telemetry",
    "/api/v1/nodes/{id}/commands",
    "/api/v1/commands/broadcast",
    "/api/v1/commands/{id}",
    "/api/v1/commands/{id}/approve",
    "/api/v1/commands/{id}/reject",
    "/api/v1/commands/{id}/cancel",
    "/api/v1/approvals",
    "/api/v1/rollouts",
    "/api/v1/rollouts/{id}",
    "/api/v1/rollouts/{id}/pause",
    "/api/v1/rollouts/{id}/resume",
    "/api/v1/rollouts/{id}/abort",
    "/api/v1/rollouts/{id}/approve",
    "/api/v1/rollouts/{id}/reject",
    "/api/v1/alerts",
    "/api/v1/audit",
];
