//! `POST /api/v1/commands/broadcast`: one command to many nodes, as the
//! rollout that starts every target at once (spec §8.3).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use nap_core::NodeId;
use nap_core::central::rollout::Strategy;
use serde_json::{Value, json};

use super::caller::Caller;
use super::commands::{CommandTemplate, parse_body};
use super::error::{ApiError, bad_request, internal};
use super::nodes::parse_node;
use super::rollouts::{self, MAX_TARGETS};
use super::tokens::Role;
use crate::hub::HubHandle;
use crate::store::{NodeRecord, Storage};

/// Room for `MAX_TARGETS` quoted node ids and the command.
pub(super) const BROADCAST_BODY_LIMIT: usize = 8 << 20;

/// `POST /api/v1/commands/broadcast`: one command to many nodes — a
/// rollout that starts every target at once (spec §8.3): no canary, 100 %
/// concurrency, no error limit, offline targets waiting for their node
/// until the usual hour is up. `nodes` is a list of node ids (or names) or
/// `"all"` (every node not revoked). A list naming an unknown or revoked
/// node is refused whole.
pub(super) async fn broadcast(
    State(hub): State<HubHandle>,
    Extension(who): Extension<Caller>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let who = who.needs(Role::Operator)?;
    let mut body = parse_body(&body)?;
    let Some(object) = body.as_object_mut() else {
        return Err(bad_request("body must be a JSON object"));
    };
    let (Some(nodes), Some(command)) = (object.remove("nodes"), object.remove("command")) else {
        return Err(bad_request(
            "body must have `nodes` (a list of node ids, or \"all\") and `command`",
        ));
    };
    if let Some(extra) = object.keys().next() {
        return Err(bad_request(format!("unknown field {extra:?}")));
    }
    let template = CommandTemplate::parse(command)?;
    if template.asks_for_approval() {
        return Err(bad_request(
            "a command that needs approval goes to one node: POST /api/v1/nodes/{id}/commands",
        ));
    }
    let registry = hub.effects().store.list_nodes().await.map_err(internal)?;
    let targets = broadcast_targets(&nodes, &registry)?;
    let plan = rollouts::Plan {
        template,
        targets: rollouts::Targets::Resolved(targets),
        selector: None,
        strategy: Strategy::all_at_once(BROADCAST_DEADLINE),
        start_at: None,
    };
    let prepared = rollouts::prepare(&hub, plan, &registry)?;
    let started = rollouts::start(&hub, who, prepared, true).await?;
    let issued: Vec<Value> = started
        .planned
        .iter()
        .map(|(node_id, request_id)| json!({ "nodeId": node_id, "requestId": request_id }))
        .collect();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "broadcastId": started.rollout_id,
            "rolloutId": started.rollout_id,
            "commands": issued,
        })),
    )
        .into_response())
}

/// A broadcast's targets wait this long for their node, as a queued
/// command does.
const BROADCAST_DEADLINE: std::time::Duration = std::time::Duration::from_secs(3600);

/// The nodes a broadcast names, checked against the registry.
fn broadcast_targets(nodes: &Value, registry: &[NodeRecord]) -> Result<Vec<NodeId>, ApiError> {
    if nodes.as_str() == Some("all") {
        return Ok(registry
            .iter()
            .filter(|n| !n.revoked)
            .map(|n| n.id)
            .collect());
    }
    let Some(list) = nodes.as_array() else {
        return Err(bad_request("nodes must be a list of node ids, or \"all\""));
    };
    if list.is_empty() {
        return Err(bad_request("nodes is empty"));
    }
    if list.len() > MAX_TARGETS {
        return Err(bad_request(format!(
            "at most {MAX_TARGETS} nodes per broadcast"
        )));
    }
    let known: std::collections::HashMap<NodeId, bool> =
        registry.iter().map(|n| (n.id, n.revoked)).collect();
    let mut seen = std::collections::HashSet::with_capacity(list.len());
    let mut targets = Vec::with_capacity(list.len());
    let mut unknown = Vec::new();
    let mut revoked = Vec::new();
    for entry in list {
        let id = entry
            .as_str()
            .ok_or_else(|| bad_request("nodes must be strings (node ids)"))
            .and_then(parse_node)?;
        if !seen.insert(id) {
            return Err(bad_request(format!("node {id} is named twice")));
        }
        match known.get(&id) {
            None => unknown.push(id.to_string()),
            Some(true) => revoked.push(id.to_string()),
            Some(false) => targets.push(id),
        }
    }
    let few = |ids: &[String]| ids.iter().take(10).cloned().collect::<Vec<_>>().join(", ");
    if !unknown.is_empty() {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("{} unknown node(s): {}", unknown.len(), few(&unknown)),
        ));
    }
    if !revoked.is_empty() {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("{} revoked node(s): {}", revoked.len(), few(&revoked)),
        ));
    }
    Ok(targets)
}
