//! Nodes and their telemetry.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use nap_core::{NodeId, WallTime};
use serde::Deserialize;
use serde_json::{Value, json};

use super::caller::Caller;
use super::error::{ApiError, bad_request, internal};
use super::tokens::Role;
use crate::hub::HubHandle;
use crate::store::{NodeRecord, Storage};

fn node_json(n: &NodeRecord) -> Value {
    json!({
        "id": n.id,
        "name": n.name,
        "status": if n.revoked { "revoked".to_owned() } else {
            n.status.map_or("offline".to_owned(), |s| format!("{s:?}").to_lowercase())
        },
        "lastSeen": n.last_seen,
        "agentVersion": n.agent_version,
        "labels": n.labels,
        "createdAt": n.created_at,
    })
}

pub(super) fn parse_node(id: &str) -> Result<NodeId, ApiError> {
    id.parse()
        .map_err(|_| bad_request(format!("{id:?} is not a node id (a UUID)")))
}

#[derive(Debug, Deserialize)]
pub(super) struct NodesQuery {
    /// Only nodes whose labels match (`role=web,env=prod`): what a
    /// rollout with this selector would target (revoked nodes never are).
    selector: Option<String>,
}

pub(super) async fn list_nodes(
    State(hub): State<HubHandle>,
    Extension(who): Extension<Caller>,
    Query(query): Query<NodesQuery>,
) -> Result<Json<Value>, ApiError> {
    who.needs(Role::Viewer)?;
    let selector = query
        .selector
        .as_deref()
        .map(str::parse::<nap_core::central::rollout::Selector>)
        .transpose()
        .map_err(|e| bad_request(e.to_string()))?;
    let nodes = hub.effects().store.list_nodes().await.map_err(internal)?;
    let listed: Vec<Value> = nodes
        .iter()
        .filter(|n| {
            selector
                .as_ref()
                .is_none_or(|s| !n.revoked && s.matches(&n.labels))
        })
        .map(node_json)
        .collect();
    Ok(Json(json!({ "nodes": listed })))
}

pub(super) async fn get_node(
    State(hub): State<HubHandle>,
    Extension(who): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    who.needs(Role::Viewer)?;
    let node = hub
        .effects()
        .store
        .get_node(parse_node(&id)?)
        .await
        .map_err(internal)?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no node {id}")))?;
    Ok(Json(node_json(&node)))
}

#[derive(Debug, Deserialize)]
pub(super) struct TelemetryQuery {
    from: Option<String>,
    to: Option<String>,
    /// Bucket width in seconds.
    bucket: Option<u64>,
}

fn parse_time(s: Option<&str>, default: WallTime, name: &str) -> Result<WallTime, ApiError> {
    s.map_or(Ok(default), |s| {
        s.parse()
            .map_err(|_| bad_request(format!("{name} must be an RFC 3339 timestamp, got {s:?}")))
    })
}

pub(super) async fn telemetry(
    State(hub): State<HubHandle>,
    Extension(who): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<TelemetryQuery>,
) -> Result<Json<Value>, ApiError> {
    who.needs(Role::Viewer)?;
    let node = parse_node(&id)?;
    let now = hub.clock().wall();
    let to = parse_time(q.to.as_deref(), now.add_millis(1), "to")?;
    let from = parse_time(q.from.as_deref(), to.add_millis(-3_600_000), "from")?;
    if from >= to {
        return Err(bad_request("from must be before to"));
    }
    let bucket = match q.bucket {
        Some(0) => return Err(bad_request("bucket must be at least 1 second")),
        Some(s) => Some(Duration::from_secs(s)),
        None => None,
    };
    let points = hub
        .effects()
        .store
        .query_telemetry(node, from, to, bucket)
        .await
        .map_err(internal)?;
    Ok(Json(
        json!({ "nodeId": node, "from": from, "to": to, "points": points }),
    ))
}
