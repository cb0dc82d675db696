//! Alerts and the audit log.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};

use super::caller::caller;
use super::error::{ApiError, internal};
use super::tokens::Role;
use crate::hub::HubHandle;
use crate::store::Storage;

#[derive(Debug, Deserialize)]
pub(super) struct Limit {
    limit: Option<u32>,
}

pub(super) async fn alerts(
    State(hub): State<HubHandle>,
    headers: HeaderMap,
    Query(q): Query<Limit>,
) -> Result<Json<Value>, ApiError> {
    caller(&hub, &headers, Role::Viewer).await?;
    let alerts = hub
        .effects()
        .store
        .list_alerts(q.limit.unwrap_or(100).min(1000))
        .await
        .map_err(internal)?;
    Ok(Json(json!({ "alerts": alerts })))
}

pub(super) async fn audit(
    State(hub): State<HubHandle>,
    headers: HeaderMap,
    Query(q): Query<Limit>,
) -> Result<Json<Value>, ApiError> {
    caller(&hub, &headers, Role::Viewer).await?;
    let entries = hub
        .effects()
        .store
        .list_audit(q.limit.unwrap_or(100).min(1000))
        .await
        .map_err(internal)?;
    Ok(Json(json!({ "entries": entries })))
}
