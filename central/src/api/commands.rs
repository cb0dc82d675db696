//! Commands: one node's, and where each stands.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use std::collections::BTreeMap;

use nap_core::central::approval::{ApprovalPolicy, Asked, Requirement};
use nap_core::central::{Alarm, ApprovalEvent, CommandState};
use nap_core::wire::{CentralMessage, CommandKind, Execute};
use nap_core::{Limits, RequestId, WallTime};
use serde_json::{Value, json};

use super::caller::Caller;
use super::error::{ApiError, bad_request, internal};
use super::nodes::parse_node;
use super::tokens::Role;
use crate::cluster::Dispatch;
use crate::hub::HubHandle;
use crate::store::{CommandRecord, NodeRecord, Storage, StoredApproval};

/// An operator's command, checked, before it gets its request id.
#[derive(Clone)]
pub(super) struct CommandTemplate {
    kind: CommandKind,
    body: serde_json::Map<String, Value>,
    /// v0.2: the request's reason and what it asked for, when the
    /// `execute` says `requiresApproval`.
    approval: Option<(String, Asked)>,
}

impl CommandTemplate {
    pub(super) fn parse(body: Value) -> Result<Self, ApiError> {
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
        if body.contains_key("holdUntil") {
            return Err(bad_request(
                "holdUntil is set by central from the request's expiry; leave it out",
            ));
        }
        let mut body = body;
        let approval = Self::approval(&mut body, kind)?;
        let template = Self {
            kind,
            body,
            approval,
        };
        // Checked once here, so that each copy below decodes too.
        template.instance(RequestId::from_u128(0))?;
        Ok(template)
    }

    /// Takes the approval fields out of the body (they are central's, not
    /// the wire's): `reason` and `minApprovals`, with `requiresApproval`.
    fn approval(
        body: &mut serde_json::Map<String, Value>,
        kind: CommandKind,
    ) -> Result<Option<(String, Asked)>, ApiError> {
        use nap_core::central::approval::{MAX_APPROVALS, MIN_APPROVALS};
        let reason = body.remove("reason");
        let min = body.remove("minApprovals");
        let wanted = body.get("requiresApproval").and_then(Value::as_bool) == Some(true);
        if !wanted {
            if reason.is_some() || min.is_some() {
                return Err(bad_request(
                    "reason and minApprovals go with requiresApproval: true",
                ));
            }
            return Ok(None);
        }
        if kind != CommandKind::Execute {
            return Err(bad_request("requiresApproval is for execute"));
        }
        let reason = reason
            .as_ref()
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .ok_or_else(|| bad_request("a command that needs approval needs a reason"))?;
        let min_approvals = min
            .map(|v| {
                v.as_u64()
                    .and_then(|n| u8::try_from(n).ok())
                    .filter(|n| (MIN_APPROVALS..=MAX_APPROVALS).contains(n))
                    .ok_or_else(|| {
                        bad_request(format!(
                            "minApprovals must be {MIN_APPROVALS} to {MAX_APPROVALS}"
                        ))
                    })
            })
            .transpose()?;
        let approver = body
            .get("approver")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned);
        Ok(Some((
            reason.to_owned(),
            Asked {
                min_approvals,
                approver,
            },
        )))
    }

    /// What this command needs on a node labelled `labels`: the request and
    /// central's approval rules together (spec §8.1). Only `execute` is
    /// ruled; the approver a rule names goes into the command.
    pub(super) fn requirement(
        &self,
        labels: &BTreeMap<String, String>,
        policy: &ApprovalPolicy,
    ) -> Result<Option<(String, Requirement)>, ApiError> {
        let command = match self.body.get("command").and_then(Value::as_str) {
            Some(command) if self.kind == CommandKind::Execute => command,
            _ => return Ok(None),
        };
        let asked = self.approval.as_ref().map(|(_, asked)| asked);
        let needed = policy
            .requirement(command, labels, asked)
            .map_err(|e| bad_request(e.to_string()))?;
        Ok(needed
            .zip(self.approval.as_ref().map(|(reason, _)| reason.clone()))
            .map(|(needed, reason)| (reason, needed)))
    }

    /// The command with this request id, and the time the node may take.
    pub(super) fn instance(
        &self,
        request_id: RequestId,
    ) -> Result<(CentralMessage, u64), ApiError> {
        self.instance_until(request_id, None)
    }

    /// [`Self::instance`], held by the node until `hold.0` and requested by
    /// `hold.1` (v0.2). Central alone sets those two fields: a client's are
    /// dropped.
    fn instance_until(
        &self,
        request_id: RequestId,
        hold: Option<(WallTime, &str)>,
    ) -> Result<(CentralMessage, u64), ApiError> {
        let mut body = self.body.clone();
        body.insert("requestId".into(), json!(request_id));
        body.remove("holdUntil");
        body.remove("requestedBy");
        if let Some((until, requester)) = hold {
            body.insert("holdUntil".into(), json!(until));
            body.insert("requestedBy".into(), json!(requester));
        }
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

    /// Whether the request asked for approval (`requiresApproval`).
    pub(super) fn asks_for_approval(&self) -> bool {
        self.approval.is_some()
    }

    /// The stored record and the dispatch of this command for `node`.
    fn for_node(
        &self,
        node: &NodeRecord,
        requester: &str,
        now: WallTime,
        policy: &ApprovalPolicy,
    ) -> Result<(CommandRecord, Dispatch), ApiError> {
        let node_id = node.id;
        let request_id = RequestId::from(uuid::Uuid::new_v4());
        let needed = self.requirement(&node.labels, policy)?;
        let expires_at = needed.as_ref().map(|_| {
            now.add_millis(i64::try_from(policy.request_ttl.as_millis()).unwrap_or(i64::MAX))
        });
        let mut ruled = self.clone();
        if let Some((_, needed)) = &needed {
            ruled.body.insert("approver".into(), json!(needed.approver));
        }
        let (message, timeout_ms) =
            ruled.instance_until(request_id, expires_at.map(|at| (at, requester)))?;
        let approval = match (&needed, expires_at) {
            (Some((reason, needed)), Some(expires_at)) => Some(StoredApproval {
                requester: requester.to_owned(),
                approver: needed.approver.clone(),
                min_approvals: needed.min_approvals,
                reason: reason.clone(),
                digest: nap_core::signed_approval::digest(
                    &nap_core::crypto::AwsLc,
                    node_id,
                    request_id,
                    &message,
                    expires_at,
                ),
                expires_at,
                approved_by: Vec::new(),
                signatures: Vec::new(),
            }),
            _ => None,
        };
        let record = CommandRecord {
            request_id,
            node_id,
            kind: self.kind.as_str().to_owned(),
            message: serde_json::to_value(&message).map_err(internal)?,
            state: CommandState::Queued,
            requester: requester.to_owned(),
            approver: approval.as_ref().and_then(|a| a.approver.clone()),
            timeout_ms,
            created_at: now,
            updated_at: now,
            result: None,
            approval: approval.clone(),
        };
        let dispatch = Dispatch {
            node_id,
            request_id,
            message,
            timeout_ms,
            approval,
        };
        Ok((record, dispatch))
    }
}

pub(super) fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
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
    let policy = hub.read(|h| h.config().approval.clone());
    let (record, dispatch) = template.for_node(&node, who.user(), now, &policy)?;
    let request_id = record.request_id;
    let approval = record.approval.clone();
    hub.effects()
        .store
        .insert_command(record)
        .await
        .map_err(internal)?;
    hub.effects()
        .store
        .append_audit(
            who.user(),
            "command.submit",
            &request_id.to_string(),
            json!({
                "nodeId": node_id,
                "message": dispatch.message,
                "role": who.role.as_str(),
                "token": who.name,
                "approval": approval,
            }),
            now,
        )
        .await
        .map_err(internal)?;
    hub.dispatch(vec![dispatch]).await;
    let mut answer = json!({ "requestId": request_id });
    if let Some(a) = approval {
        hub.effects().alarm(Alarm::Approval {
            request_id,
            node_id: Some(node_id),
            event: ApprovalEvent::Requested {
                requester: a.requester.clone(),
                reason: a.reason.clone(),
                approver: a.approver.clone(),
                min_approvals: a.min_approvals,
            },
        });
        answer["digest"] = json!(a.digest);
        answer["expiresAt"] = json!(a.expires_at);
    }
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
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
