//! Alerts and the audit log.

use axum::extract::{Query, State};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::caller::Caller;
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
    Extension(who): Extension<Caller>,
    Query(q): Query<Limit>,
) -> Result<Json<Value>, ApiError> {
    who.needs(Role::Viewer)?;
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
    Extension(who): Extension<Caller>,
    Query(q): Query<Limit>,
) -> Result<Json<Value>, ApiError> {
    who.needs(Role::Viewer)?;
    let entries = hub
        .effects()
        .store
        .list_audit(q.limit.unwrap_or(100).min(1000))
        .await
        .map_err(internal)?;
    Ok(Json(json!({ "entries": entries })))
}
