//! The operator HTTP API under `/api/v1` (spec/openapi.json). Bearer API
//! tokens carry a role: viewers read, operators also send commands, admins
//! also manage nodes. Every error is JSON `{"error": "..."}`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use nap_core::wire::CentralMessage;
use nap_core::{Limits, NodeId, RequestId, WallTime};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::App;
use crate::auth::{Role, token_hash};
use crate::cluster::Dispatch;
use crate::store::{CommandRecord, NodeRecord, Storage};

/// The committed OpenAPI document, served as is.
pub const OPENAPI: &str = include_str!("../../spec/openapi.json");

/// An API error.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "API request failed");
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
}

/// Who is calling.
#[derive(Debug, Clone)]
struct Caller {
    name: String,
    role: Role,
}

async fn caller(app: &App, headers: &HeaderMap, needs: Role) -> Result<Caller, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError(StatusCode::UNAUTHORIZED, "missing bearer token".into()))?;
    let record = app
        .store
        .find_api_token(&token_hash(token))
        .await
        .map_err(internal)?
        .ok_or_else(|| ApiError(StatusCode::UNAUTHORIZED, "unknown token".into()))?;
    let role = Role::parse(&record.role).ok_or_else(|| internal("stored role is unknown"))?;
    if role < needs {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "this needs the {} role; the token has {}",
                needs.as_str(),
                role.as_str()
            ),
        ));
    }
    Ok(Caller {
        name: record.name,
        role,
    })
}

/// The API router.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/nodes", get(list_nodes))
        .route("/api/v1/nodes/{id}", get(get_node))
        .route("/api/v1/nodes/{id}/telemetry", get(telemetry))
        .route("/api/v1/nodes/{id}/commands", post(submit_command))
        .route(
            "/api/v1/commands/broadcast",
            post(broadcast).layer(DefaultBodyLimit::max(BROADCAST_BODY_LIMIT)),
        )
        .route("/api/v1/commands/{id}", get(get_command))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/audit", get(audit))
        .with_state(app)
}

async fn healthz(State(app): State<Arc<App>>) -> Response {
    match app.store.list_alerts(1).await {
        Ok(_) => Json(json!({ "status": "ok", "connections": app.metrics.connections.get() }))
            .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "degraded", "database": e.to_string() })),
        )
            .into_response(),
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    app.metrics
        .ingest_queue_depth
        .set(i64::try_from(app.ingest.depth()).unwrap_or(i64::MAX));
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
        .into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

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

fn parse_node(id: &str) -> Result<NodeId, ApiError> {
    id.parse()
        .map_err(|_| bad_request(format!("{id:?} is not a node id (a UUID)")))
}

async fn list_nodes(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    caller(&app, &headers, Role::Viewer).await?;
    let nodes = app.store.list_nodes().await.map_err(internal)?;
    Ok(Json(
        json!({ "nodes": nodes.iter().map(node_json).collect::<Vec<_>>() }),
    ))
}

async fn get_node(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller(&app, &headers, Role::Viewer).await?;
    let node = app
        .store
        .get_node(parse_node(&id)?)
        .await
        .map_err(internal)?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no node {id}")))?;
    Ok(Json(node_json(&node)))
}

#[derive(Debug, Deserialize)]
struct TelemetryQuery {
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

async fn telemetry(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<TelemetryQuery>,
) -> Result<Json<Value>, ApiError> {
    caller(&app, &headers, Role::Viewer).await?;
    let node = parse_node(&id)?;
    let now = app.clock.wall();
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
    let points = app
        .store
        .query_telemetry(node, from, to, bucket)
        .await
        .map_err(internal)?;
    Ok(Json(
        json!({ "nodeId": node, "from": from, "to": to, "points": points }),
    ))
}

/// The command kinds an operator may send.
const COMMAND_TYPES: [&str; 4] = ["execute", "deploy", "health_check", "update_agent"];

/// An operator's command, checked, before it gets its request id.
struct CommandTemplate {
    kind: String,
    body: serde_json::Map<String, Value>,
}

impl CommandTemplate {
    fn parse(body: Value) -> Result<Self, ApiError> {
        let Value::Object(body) = body else {
            return Err(bad_request("the command must be a JSON object"));
        };
        let kind = body
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if !COMMAND_TYPES.contains(&kind.as_str()) {
            return Err(bad_request(format!(
                "type must be one of {}",
                COMMAND_TYPES.join(", ")
            )));
        }
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
            CentralMessage::Execute(e) => e.timeout.unwrap_or(30_000),
            _ => 600_000,
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
            kind: self.kind.clone(),
            message: serde_json::to_value(&message).map_err(internal)?,
            state: "queued".into(),
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

async fn submit_command(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let who = caller(&app, &headers, Role::Operator).await?;
    let node_id = parse_node(&id)?;
    let template = CommandTemplate::parse(parse_body(&body)?)?;
    let node = app.store.get_node(node_id).await.map_err(internal)?;
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
    let now = app.clock.wall();
    let (record, dispatch) = template.for_node(node_id, &who.name, now)?;
    let request_id = record.request_id;
    app.store.insert_command(record).await.map_err(internal)?;
    app.store
        .append_audit(
            &who.name,
            "command.submit",
            &request_id.to_string(),
            json!({ "nodeId": node_id, "message": dispatch.message, "role": who.role.as_str() }),
            now,
        )
        .await
        .map_err(internal)?;
    app.dispatch(vec![dispatch]).await;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "requestId": request_id })),
    )
        .into_response())
}

/// Most nodes one broadcast may name.
const MAX_BROADCAST: usize = 100_000;

/// Room for `MAX_BROADCAST` quoted node ids and the command.
const BROADCAST_BODY_LIMIT: usize = 8 << 20;

/// `POST /api/v1/commands/broadcast`: one command to many nodes, as one
/// decision — one transaction for the commands, one audit record, one
/// hand-over per central instance. `nodes` is a list of node ids or `"all"`
/// (every node not revoked). A list naming an unknown or revoked node is
/// refused whole.
async fn broadcast(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let who = caller(&app, &headers, Role::Operator).await?;
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
    let registry = app.store.list_nodes().await.map_err(internal)?;
    let targets = broadcast_targets(&nodes, &registry)?;
    let now = app.clock.wall();
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
    app.store.insert_commands(records).await.map_err(internal)?;
    app.store
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
    app.dispatch(dispatches).await;
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

async fn get_command(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller(&app, &headers, Role::Viewer).await?;
    let request_id: RequestId = id
        .parse()
        .map_err(|_| bad_request(format!("{id:?} is not a request id")))?;
    let command = app
        .store
        .get_command(request_id)
        .await
        .map_err(internal)?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no command {id}")))?;
    Ok(Json(json!({
        "requestId": command.request_id,
        "nodeId": command.node_id,
        "type": command.kind,
        "state": command.state,
        "message": command.message,
        "result": command.result,
        "requester": command.requester,
        "createdAt": command.created_at,
        "updatedAt": command.updated_at,
    })))
}

#[derive(Debug, Deserialize)]
struct Limit {
    limit: Option<u32>,
}

async fn alerts(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<Limit>,
) -> Result<Json<Value>, ApiError> {
    caller(&app, &headers, Role::Viewer).await?;
    let alerts = app
        .store
        .list_alerts(q.limit.unwrap_or(100).min(1000))
        .await
        .map_err(internal)?;
    Ok(Json(json!({ "alerts": alerts })))
}

async fn audit(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<Limit>,
) -> Result<Json<Value>, ApiError> {
    caller(&app, &headers, Role::Viewer).await?;
    let entries = app
        .store
        .list_audit(q.limit.unwrap_or(100).min(1000))
        .await
        .map_err(internal)?;
    Ok(Json(json!({ "entries": entries })))
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
    "/api/v1/alerts",
    "/api/v1/audit",
];
