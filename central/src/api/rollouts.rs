//! v0.3 rollouts (spec §8.3): the seed's `broadcast` with a strategy.
//! Targets are resolved once, here, from the registry — node ids or names,
//! `"all"`, and/or a label selector — and each gets its own request id now;
//! the hub's rollout engine decides when each starts.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use nap_core::central::rollout::{
    ErrorMode, Limits, RolloutState, Selector, Strategy, TargetState,
};
use nap_core::central::{Alarm, ApprovalEvent, NewRollout};
use nap_core::wire::{BroadcastParams, CommandKind};
use nap_core::{NodeId, RequestId, RolloutId, WallTime};
use serde::Deserialize;
use serde_json::{Value, json};

use super::caller::Caller;
use super::commands::{CommandTemplate, parse_body};
use super::error::{ApiError, bad_request, internal};
use super::rollout_approval::{self, Needed};
use super::rollout_control::parse_rollout;
use super::tokens::Role;
use crate::hub::HubHandle;
use crate::store::{NodeRecord, RolloutRecord, RolloutTargetRecord, Storage, StoredApproval};

/// `POST /api/v1/rollouts`: the seed's `broadcast` message, plus a
/// selector, a strategy, a start time and a dry run.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RolloutRequest {
    /// `"broadcast"` when given (the seed's message type).
    #[serde(rename = "type")]
    message_type: Option<String>,
    command: CommandKind,
    /// Node ids or names, or `"all"`.
    targets: Option<Value>,
    /// Labels every target must have (`role=web,env=prod`).
    selector: Option<String>,
    #[serde(default)]
    params: BroadcastParams,
    #[serde(default)]
    strategy: Strategy,
    /// When it starts (RFC 3339); now when absent.
    start_at: Option<WallTime>,
    /// Resolve and show the numbers; start nothing.
    #[serde(default)]
    dry_run: bool,
    /// v0.2: the rollout needs approval before anything starts (spec
    /// §8.4), with a reason; `minApprovals` and `approver` as for one
    /// command.
    #[serde(default)]
    requires_approval: bool,
    reason: Option<String>,
    min_approvals: Option<u8>,
    approver: Option<String>,
}

/// Most targets one rollout (or broadcast) may name.
pub(super) const MAX_TARGETS: usize = 100_000;

/// A rollout runs at most this long.
const MAX_DEADLINE_S: u64 = 30 * 24 * 3600;

fn checked(strategy: Strategy) -> Result<Strategy, ApiError> {
    let deadline_s = strategy.deadline.as_secs();
    if deadline_s == 0 || deadline_s > MAX_DEADLINE_S {
        return Err(bad_request(format!(
            "strategy.deadlineS must be 1 to {MAX_DEADLINE_S}"
        )));
    }
    Ok(strategy)
}

fn limits_json(limits: &Limits, strategy: &Strategy) -> Value {
    let mut v = serde_json::to_value(limits).unwrap_or_default();
    if strategy.error_mode == ErrorMode::Strict && limits.max_errors == 0 {
        v["note"] = json!("strict mode with maxErrors 0 starts one target at a time");
    }
    v
}

pub(super) async fn create(
    State(hub): State<HubHandle>,
    Extension(who): Extension<Caller>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let who = who.needs(Role::Operator)?;
    let request: RolloutRequest = serde_json::from_value(parse_body(&body)?)
        .map_err(|e| bad_request(format!("not a rollout request: {e}")))?;
    if request
        .message_type
        .as_deref()
        .is_some_and(|t| t != "broadcast")
    {
        return Err(bad_request("type, when given, is \"broadcast\""));
    }
    let mut body = serde_json::to_value(&request.params).map_err(internal)?;
    body["type"] = json!(request.command.as_str());
    if request.requires_approval {
        body["requiresApproval"] = json!(true);
    }
    for (name, value) in [
        ("reason", request.reason.map(Value::from)),
        ("minApprovals", request.min_approvals.map(Value::from)),
        ("approver", request.approver.map(Value::from)),
    ] {
        if let Some(value) = value {
            body[name] = value;
        }
    }
    let plan = Plan {
        template: CommandTemplate::parse(body)?,
        targets: Targets::Named(request.targets),
        selector: request.selector,
        strategy: request.strategy,
        start_at: request.start_at,
    };
    let registry = hub.effects().store.list_nodes().await.map_err(internal)?;
    let prepared = prepare(&hub, plan, &registry)?;
    if request.dry_run {
        return Ok(Json(json!({
            "dryRun": true,
            "limits": limits_json(&prepared.limits, &prepared.strategy),
            "approval": prepared.approval.as_ref().map(|n| json!({
                "minApprovals": n.requirement.min_approvals,
                "approver": n.requirement.approver,
            })),
            "targets": prepared.targets,
        }))
        .into_response());
    }
    let started = start(&hub, who, prepared, false).await?;
    let state = if started.approval.is_some() {
        RolloutState::AwaitingApproval
    } else {
        RolloutState::Scheduled
    };
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "rolloutId": started.rollout_id,
            "state": state,
            "limits": limits_json(&started.limits, &started.strategy),
            "targets": started.planned.len(),
            "approval": started.approval,
        })),
    )
        .into_response())
}

/// A rollout asked for: by `POST /api/v1/rollouts` or by a broadcast.
pub(super) struct Plan {
    pub template: CommandTemplate,
    pub targets: Targets,
    pub selector: Option<String>,
    pub strategy: Strategy,
    pub start_at: Option<WallTime>,
}

/// A plan's targets.
pub(super) enum Targets {
    /// As the request names them: node ids or names, `"all"`, or none
    /// (the selector's).
    Named(Option<Value>),
    /// Checked already against the registry given with them.
    Resolved(Vec<NodeId>),
}

/// A plan checked against the registry, its numbers worked out.
pub(super) struct Prepared {
    targets: Vec<NodeId>,
    selector: Option<Selector>,
    strategy: Strategy,
    limits: Limits,
    message: nap_core::wire::CentralMessage,
    timeout_ms: u64,
    start_at: Option<WallTime>,
    /// v0.2: the approval it needs first.
    approval: Option<Needed>,
}

/// A rollout stored and handed to the hub.
pub(super) struct Started {
    pub rollout_id: RolloutId,
    pub strategy: Strategy,
    pub limits: Limits,
    /// Each target and its command's request id, in order.
    pub planned: Vec<(NodeId, RequestId)>,
    /// v0.2: the approval request it awaits.
    pub approval: Option<StoredApproval>,
}

/// Resolves the targets against `registry` and checks what would stop the
/// rollout.
pub(super) fn prepare(
    hub: &HubHandle,
    plan: Plan,
    registry: &[NodeRecord],
) -> Result<Prepared, ApiError> {
    let strategy = checked(plan.strategy)?;
    let selector = plan
        .selector
        .as_deref()
        .map(str::parse::<Selector>)
        .transpose()
        .map_err(|e| bad_request(e.to_string()))?;
    let (message, timeout_ms) = plan.template.instance(RequestId::from_u128(0))?;
    let targets = match plan.targets {
        Targets::Named(named) => resolve(named.as_ref(), selector.as_ref(), registry)?,
        Targets::Resolved(ids) => ids,
    };
    let policy = hub.read(|h| h.config().approval.clone());
    let approval = rollout_approval::requirement(&plan.template, &targets, registry, &policy)?;
    let limits = Limits::of(&strategy, targets.len());
    Ok(Prepared {
        targets,
        selector,
        strategy,
        limits,
        message,
        timeout_ms,
        start_at: plan.start_at,
        approval,
    })
}

/// Stores the rollout and its targets, audits it, and hands it to the hub.
/// `broadcast`: it came as `POST /api/v1/commands/broadcast`.
pub(super) async fn start(
    hub: &HubHandle,
    who: &Caller,
    prepared: Prepared,
    broadcast: bool,
) -> Result<Started, ApiError> {
    let Prepared {
        targets,
        selector,
        strategy,
        limits,
        mut message,
        timeout_ms,
        start_at,
        approval,
    } = prepared;
    let now = hub.clock().wall();
    let start_at = start_at.unwrap_or(now);
    let rollout_id = RolloutId::from(uuid::Uuid::new_v4());
    let planned: Vec<(NodeId, RequestId)> = targets
        .iter()
        .map(|n| (*n, RequestId::from(uuid::Uuid::new_v4())))
        .collect();
    let approval = approval.map(|needed| {
        rollout_approval::approved_message(&mut message, who.user(), &needed);
        let policy = hub.read(|h| h.config().approval.clone());
        let asked = rollout_approval::Asked {
            rollout_id,
            requester: who.user(),
            message: &message,
            planned: &planned,
            strategy: &strategy,
            start_at,
        };
        rollout_approval::request(&asked, &needed, now, &policy)
    });
    let (stored_approval, needs_approval) = approval.unzip();
    let record = RolloutRecord {
        id: rollout_id,
        requester: who.user().to_owned(),
        message: serde_json::to_value(&message).map_err(internal)?,
        strategy: serde_json::to_value(&strategy).map_err(internal)?,
        limits: serde_json::to_value(limits).map_err(internal)?,
        selector: selector.as_ref().map(ToString::to_string),
        state: if stored_approval.is_some() {
            RolloutState::AwaitingApproval
        } else {
            RolloutState::Scheduled
        },
        start_at,
        created_at: now,
        updated_at: now,
        approval: stored_approval.clone(),
    };
    let rows = planned
        .iter()
        .enumerate()
        .map(|(i, (node_id, request_id))| RolloutTargetRecord {
            position: u32::try_from(i).unwrap_or(u32::MAX),
            node_id: *node_id,
            request_id: *request_id,
            state: TargetState::Pending,
        })
        .collect();
    let store = &hub.effects().store;
    store.insert_rollout(record, rows).await.map_err(internal)?;
    store
        .append_audit(
            who.user(),
            "rollout.create",
            &rollout_id.to_string(),
            json!({
                "command": message,
                "strategy": strategy,
                "limits": limits,
                "selector": selector.as_ref().map(ToString::to_string),
                "targets": targets.len(),
                "broadcast": broadcast,
                "approval": stored_approval,
                "role": who.role.as_str(),
            }),
            now,
        )
        .await
        .map_err(internal)?;
    hub.drive_new_rollout(NewRollout {
        rollout_id,
        requester: who.user().to_owned(),
        strategy: strategy.clone(),
        targets: planned.clone(),
        message,
        timeout: Duration::from_millis(timeout_ms),
        start_at,
        restored: None,
        approval: needs_approval.map(Box::new),
    })
    .await;
    if let Some(approval) = &stored_approval {
        hub.effects().alarm(Alarm::RolloutApproval {
            rollout_id,
            event: ApprovalEvent::Requested {
                requester: approval.requester.clone(),
                reason: approval.reason.clone(),
                approver: approval.approver.clone(),
                min_approvals: approval.min_approvals,
            },
        });
    }
    Ok(Started {
        rollout_id,
        strategy,
        limits,
        planned,
        approval: stored_approval,
    })
}

/// The targets a request names, in order: its list (ids or names) or
/// `"all"`, narrowed by the selector; or every node the selector matches.
/// Revoked nodes are never targets; a listed one is an error.
fn resolve(
    targets: Option<&Value>,
    selector: Option<&Selector>,
    registry: &[NodeRecord],
) -> Result<Vec<NodeId>, ApiError> {
    let selected = |n: &NodeRecord| selector.is_none_or(|s| s.matches(&n.labels));
    let chosen: Vec<NodeId> = match targets {
        None if selector.is_none() => {
            return Err(bad_request(
                "name the targets (node ids or names, or \"all\"), a selector, or both",
            ));
        }
        None => registry
            .iter()
            .filter(|n| !n.revoked && selected(n))
            .map(|n| n.id)
            .collect(),
        Some(Value::String(all)) if all == "all" => registry
            .iter()
            .filter(|n| !n.revoked && selected(n))
            .map(|n| n.id)
            .collect(),
        Some(Value::Array(list)) => {
            if list.len() > MAX_TARGETS {
                return Err(bad_request(format!(
                    "at most {MAX_TARGETS} targets per rollout"
                )));
            }
            let by_id: HashMap<NodeId, &NodeRecord> = registry.iter().map(|n| (n.id, n)).collect();
            let mut by_name: BTreeMap<&str, Vec<&NodeRecord>> = BTreeMap::new();
            for n in registry {
                by_name.entry(n.name.as_str()).or_default().push(n);
            }
            let mut seen = HashSet::with_capacity(list.len());
            let mut chosen = Vec::with_capacity(list.len());
            for entry in list {
                let name = entry
                    .as_str()
                    .ok_or_else(|| bad_request("targets are strings: node ids or names"))?;
                let node = match name.parse::<NodeId>().ok().and_then(|id| by_id.get(&id)) {
                    Some(node) => *node,
                    None => match by_name.get(name).map(Vec::as_slice) {
                        Some([node]) => *node,
                        Some(_) => {
                            return Err(bad_request(format!(
                                "{name:?} names several nodes: use their ids"
                            )));
                        }
                        None => {
                            return Err(ApiError(
                                StatusCode::NOT_FOUND,
                                format!("no node {name:?}"),
                            ));
                        }
                    },
                };
                if node.revoked {
                    return Err(ApiError(
                        StatusCode::CONFLICT,
                        format!("node {name:?} is revoked"),
                    ));
                }
                if !seen.insert(node.id) {
                    return Err(bad_request(format!("{name:?} is named twice")));
                }
                if selected(node) {
                    chosen.push(node.id);
                }
            }
            chosen
        }
        Some(_) => {
            return Err(bad_request(
                "targets must be a list of node ids or names, or \"all\"",
            ));
        }
    };
    if chosen.is_empty() {
        return Err(bad_request(
            "no node matches: the rollout would have no target",
        ));
    }
    Ok(chosen)
}

#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    /// The last rollout id of the previous page.
    after: Option<String>,
    limit: Option<u32>,
}

const PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

fn rollout_json(r: &RolloutRecord) -> Value {
    json!({
        "rolloutId": r.id,
        "state": r.state,
        "requester": r.requester,
        "command": r.message,
        "strategy": r.strategy,
        "limits": r.limits,
        "selector": r.selector,
        "startAt": r.start_at,
        "createdAt": r.created_at,
        "updatedAt": r.updated_at,
        "approval": r.approval,
    })
}

/// `GET /api/v1/rollouts`: newest first, a page at a time.
pub(super) async fn list(
    State(hub): State<HubHandle>,
    Extension(who): Extension<Caller>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    who.needs(Role::Viewer)?;
    let limit = query.limit.unwrap_or(PAGE).clamp(1, MAX_PAGE);
    let store = &hub.effects().store;
    let before = match query.after.as_deref() {
        None => None,
        Some(after) => {
            let id = parse_rollout(after)?;
            let (r, _) = store
                .get_rollout(id)
                .await
                .map_err(internal)?
                .ok_or_else(|| bad_request(format!("after: no rollout {after}")))?;
            Some((r.created_at, r.id))
        }
    };
    let page = store.list_rollouts(before, limit).await.map_err(internal)?;
    let next = (page.len() == limit as usize)
        .then(|| page.last().map(|r| r.id))
        .flatten();
    Ok(Json(json!({
        "rollouts": page.iter().map(rollout_json).collect::<Vec<_>>(),
        "next": next,
    })))
}

#[derive(Debug, Deserialize)]
pub(super) struct TargetsQuery {
    /// The first target's position in the page.
    offset: Option<u32>,
    limit: Option<u32>,
    /// Only targets in this state.
    state: Option<String>,
}

/// `GET /api/v1/rollouts/{id}`: its state, counts by target state, and a
/// page of its targets in order.
pub(super) async fn get(
    State(hub): State<HubHandle>,
    Extension(who): Extension<Caller>,
    Path(id): Path<String>,
    Query(query): Query<TargetsQuery>,
) -> Result<Json<Value>, ApiError> {
    who.needs(Role::Viewer)?;
    let id = parse_rollout(&id)?;
    let (rollout, targets) = hub
        .effects()
        .store
        .get_rollout(id)
        .await
        .map_err(internal)?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no rollout {id}")))?;
    let wanted = query
        .state
        .as_deref()
        .map(|s| {
            TargetState::from_name(s).ok_or_else(|| bad_request(format!("no target state {s:?}")))
        })
        .transpose()?;
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for t in &targets {
        *counts.entry(t.state.as_str()).or_default() += 1;
    }
    let offset = query.offset.unwrap_or(0) as usize;
    let limit = query.limit.unwrap_or(PAGE).clamp(1, MAX_PAGE) as usize;
    let matching: Vec<&RolloutTargetRecord> = targets
        .iter()
        .filter(|t| wanted.is_none_or(|w| t.state == w))
        .collect();
    let page: Vec<Value> = matching
        .iter()
        .skip(offset)
        .take(limit)
        .map(|t| {
            json!({
                "position": t.position,
                "nodeId": t.node_id,
                "requestId": t.request_id,
                "state": t.state,
            })
        })
        .collect();
    let next = (offset + page.len() < matching.len()).then_some(offset + page.len());
    let mut body = rollout_json(&rollout);
    body["counts"] = json!(counts);
    body["targetCount"] = json!(targets.len());
    body["targets"] = json!(page);
    body["nextOffset"] = json!(next);
    if rollout.approval.is_some() {
        let planned: Vec<(NodeId, RequestId)> =
            targets.iter().map(|t| (t.node_id, t.request_id)).collect();
        body["targetsRoot"] = json!(rollout_approval::targets_root(&planned));
    }
    Ok(Json(body))
}
