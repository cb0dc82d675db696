//! Commands: one node's, a broadcast to many, and where each stands.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use nap_core::central::CommandState;
use nap_core::wire::{CentralMessage, CommandKind, Execute};
use nap_core::{Limits, NodeId, RequestId, WallTime};
use serde_json::{Value, json};

use super::caller::Caller;
use super::error::{ApiError, bad_request, internal};
use super::nodes::parse_node;
use super::tokens::Role;
use crate::cluster::Dispatch;
use crate::hub::HubHandle;
use crate::store::{CommandRecord, NodeRecord, Storage};

/// An operator's command, checked, before it gets its request id.
struct CommandTemplate {
    kind: CommandKind,
    body: serde_json::Map<String, Value>,
}

impl CommandTemplate {
    fn parse(body: Value) -> Result<Self, ApiError> {
        let Value::Object(body) = body else {
            return Err(bad_request("the command must be a JSON object"));
        };
        let named = body.get("type").and_then(Value::as_str).unwrap_or_default();
        let Some(kind) = CommandKind::from_name(named) else {
            let kinds: Vec<&str> = CommandKind::ALL.iter().map(|k| k.as_str()).collect();
            return Err(bad_request(format!(
                "type must be one of {}",
                kinds.join(", ")
            )));
        };
        if body.contains_key("requestId") {
            return Err(bad_request(
                "requestId is assigned by central; leave it out",
            ));
        }
        let template = Self { kind, body };
        // Checked once here, so that each copy below decodes too.
        template.instance(RequestId::from_u128(0))?;
        Ok(template)
    }

    /// The command with this request id, and the time the node may take.
    fn instance(&self, request_id: RequestId) -> Result<(CentralMessage, u64), ApiError> {
        let mut body = self.body.clone();
        body.insert("requestId".into(), json!(request_id));
        let text = Value::Object(body).to_string();
        let message: CentralMessage =
            nap_core::decode(&text, &Limits::default()).map_err(|e| bad_request(e.to_string()))?;
        let timeout_ms = match &message {
            CentralMessage::Execute(Execute {
                timeout: Some(ms), ..
            }) => *ms,
            _ => u64::try_from(self.kind.default_timeout().as_millis()).unwrap_or(u64::MAX),
        };
        Ok((message, timeout_ms))
    }

    /// The stored record and the dispatch of this command for `node_id`.
    fn for_node(
        &self,
        node_id: NodeId,
        requester: &str,
        now: WallTime,
    ) -> Result<(CommandRecord, Dispatch), ApiError> {
        let request_id = RequestId::from(uuid::Uuid::new_v4());
        let (message, timeout_ms) = self.instance(request_id)?;
        let record = CommandRecord {
            request_id,
            node_id,
            kind: self.kind.as_str().to_owned(),
            message: serde_json::to_value(&message).map_err(internal)?,
            state: CommandState::Queued,
            requester: requester.to_owned(),
            approver: None,
            timeout_ms,
            created_at: now,
            updated_at: now,
            result: None,
        };
        let dispatch = Dispatch {
            node_id,
            request_id,
            message,
            timeout_ms,
        };
        Ok((record, dispatch))
    }
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    // Any content type: `curl -d '{…}'` sends form encoding by default.
    serde_json::from_slice(body).map_err(|e| bad_request(format!("body is not JSON: {e}")))
}

pub(super) async fn submit_command(
    State(hub): State<HubHandle>,
    Extension(who): Extension<Caller>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let who = who.needs(Role::Operator)?;
    let node_id = parse_node(&id)?;
    let template = CommandTemplate::parse(parse_body(&body)?)?;
    let node = hub
        .effects()
        .store
        .get_node(node_id)
        .await
        .map_err(internal)?;
    let Some(node) = node else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no node {node_id}"),
        ));
    };
    if node.revoked {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("node {node_id} is revoked"),
        ));
    }
    let now = hub.clock().wall();
    let (record, dispatch) = template.for_node(node_id, &who.name, now)?;
    let request_id = record.request_id;
    hub.effects()
        .store
        .insert_command(record)
        .await
        .map_err(internal)?;
    hub.effects()
        .store
        .append_audit(
            &who.name,
            "command.submit",
            &request_id.to_string(),
            json!({ "nodeId": node_id, "message": dispatch.message, "role": who.role.as_str() }),
            now,
        )
        .await
        .map_err(internal)?;
    hub.dispatch(vec![dispatch]).await;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "requestId": request_id })),
    )
        .into_response())
}

/// Most nodes one broadcast may name.
const MAX_BROADCAST: usize = 100_000;

/// Room for `MAX_BROADCAST` quoted node ids and the command.
pub(super) const BROADCAST_BODY_LIMIT: usize = 8 << 20;

/// `POST /api/v1/commands/broadcast`: one command to many nodes, as one
/// decision — one transaction for the commands, one audit record, one
/// hand-over per central instance. `nodes` is a list of node ids or `"all"`
/// (every node not revoked). A list naming an unknown or revoked node is
/// refused whole.
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
    let registry = hub.effects().store.list_nodes().await.map_err(internal)?;
    let targets = broadcast_targets(&nodes, &registry)?;
    let now = hub.clock().wall();
    let mut records = Vec::with_capacity(targets.len());
    let mut dispatches = Vec::with_capacity(targets.len());
    for node_id in targets {
        let (record, dispatch) = template.for_node(node_id, &who.name, now)?;
        records.push(record);
        dispatches.push(dispatch);
    }
    let issued: Vec<Value> = dispatches
        .iter()
        .map(|d| json!({ "nodeId": d.node_id, "requestId": d.request_id }))
        .collect();
    let broadcast_id = uuid::Uuid::new_v4();
    hub.effects()
        .store
        .insert_commands(records)
        .await
        .map_err(internal)?;
    hub.effects()
        .store
        .append_audit(
            &who.name,
            "command.broadcast",
            &broadcast_id.to_string(),
            json!({
                "command": Value::Object(template.body.clone()),
                "commands": issued,
                "role": who.role.as_str(),
            }),
            now,
        )
        .await
        .map_err(internal)?;
    hub.dispatch(dispatches).await;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "broadcastId": broadcast_id, "commands": issued })),
    )
        .into_response())
}

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
    if list.len() > MAX_BROADCAST {
        return Err(bad_request(format!(
            "at most {MAX_BROADCAST} nodes per broadcast"
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

pub(super) async fn get_command(
    State(hub): State<HubHandle>,
    Extension(who): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    who.needs(Role::Viewer)?;
    let request_id: RequestId = id
        .parse()
        .map_err(|_| bad_request(format!("{id:?} is not a request id")))?;
    let command = hub
        .effects()
        .store
        .get_command(request_id)
        .await
        .map_err(internal)?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no command {id}")))?;
    Ok(Json(json!({
        "requestId": command.request_id,
        "nodeId": command.node_id,
        "type": command.kind,
        "state": command.state.as_str(),
        "message": command.message,
        "result": command.result,
        "requester": command.requester,
        "createdAt": command.created_at,
        "updatedAt": command.updated_at,
    })))
}
