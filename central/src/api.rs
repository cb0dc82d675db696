//! The operator HTTP API under `/api/v1` (spec/openapi.json). Bearer API
//! tokens carry a role: viewers read, operators also send commands, admins
//! also manage nodes. Every error is JSON `{"error": "..."}`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
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

async fn submit_command(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let who = caller(&app, &headers, Role::Operator).await?;
    let node_id = parse_node(&id)?;
    // Any content type: `curl -d '{…}'` sends form encoding by default.
    let mut body: Value =
        serde_json::from_slice(&body).map_err(|e| bad_request(format!("body is not JSON: {e}")))?;
    let Some(object) = body.as_object_mut() else {
        return Err(bad_request("body must be a JSON object"));
    };
    let kind = object
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
    if object.contains_key("requestId") {
        return Err(bad_request(
            "requestId is assigned by central; leave it out",
        ));
    }
    let request_id = RequestId::from(uuid::Uuid::new_v4());
    object.insert("requestId".into(), json!(request_id));
    let text = body.to_string();
    let message: CentralMessage =
        nap_core::decode(&text, &Limits::default()).map_err(|e| bad_request(e.to_string()))?;
    let timeout_ms = match &message {
        CentralMessage::Execute(e) => e.timeout.unwrap_or(30_000),
        _ => 600_000,
    };
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
    let record = CommandRecord {
        request_id,
        node_id,
        kind: kind.clone(),
        message: serde_json::to_value(&message).map_err(internal)?,
        state: "queued".into(),
        requester: who.name.clone(),
        approver: None,
        timeout_ms,
        created_at: now,
        updated_at: now,
        result: None,
    };
    app.store.insert_command(record).await.map_err(internal)?;
    app.store
        .append_audit(
            &who.name,
            "command.submit",
            &request_id.to_string(),
            json!({ "nodeId": node_id, "message": message, "role": who.role.as_str() }),
            now,
        )
        .await
        .map_err(internal)?;
    app.dispatch(vec![Dispatch {
        node_id,
        request_id,
        message,
        timeout_ms,
    }])
    .await;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "requestId": request_id })),
    )
        .into_response())
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
    "/api/v1/commands/{id}",
    "/api/v1/alerts",
    "/api/v1/audit",
];
