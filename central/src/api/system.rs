//! Liveness, metrics and the API's own description.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::OPENAPI;
use crate::hub::HubHandle;
use crate::store::Storage;

pub(super) async fn healthz(State(hub): State<HubHandle>) -> Response {
    match hub.effects().store.list_alerts(1).await {
        Ok(_) => {
            Json(json!({ "status": "ok", "connections": hub.effects().metrics.connections.get() }))
                .into_response()
        }
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "degraded", "database": e.to_string() })),
        )
            .into_response(),
    }
}

pub(super) async fn metrics(State(hub): State<HubHandle>) -> Response {
    hub.effects()
        .metrics
        .ingest_queue_depth
        .set(i64::try_from(hub.effects().telemetry.depth()).unwrap_or(i64::MAX));
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        hub.effects().metrics.render(),
    )
        .into_response()
}

pub(super) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}
