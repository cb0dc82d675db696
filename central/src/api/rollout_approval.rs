//! v0.3 with v0.2: a rollout that needs approval (spec §8.4). It is
//! approved once, as a whole: the approvers sign one digest covering the
//! command, the rollout and the root of its targets' tree, and nothing
//! starts before the last approval needed. Each target's command then
//! carries the approval and its own proof, so that a node which verifies
//! approvals itself (§8.2) checks that it is one of the approved targets.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use axum::extract::{Path, State};
use axum::{Extension, Json};
use nap_core::central::approval::{ApprovalPolicy, Decision, Requirement};
use nap_core::central::rollout::Strategy;
use nap_core::central::{NeedsApproval, RolloutControl};
use nap_core::crypto::AwsLc;
use nap_core::target_set::TargetSet;
use nap_core::wire::CentralMessage;
use nap_core::{NodeId, RequestId, RolloutId, WallTime};
use serde_json::Value;

use super::approvals;
use super::caller::Caller;
use super::commands::CommandTemplate;
use super::error::{ApiError, bad_request};
use super::tokens::Role;
use crate::hub::HubHandle;
use crate::store::{NodeRecord, StoredApproval};

/// What a rollout's approval needs, over all its targets.
#[derive(Debug, Clone)]
pub(super) struct Needed {
    pub reason: String,
    pub requirement: Requirement,
}

/// What approval a rollout of `template` to `targets` needs: each target's
/// requirement by the request and central's rules (spec §8.1) — a rule
/// that covers any target needs the request to ask for approval — and of
/// them the most approvals any asks for, under the one approver they name.
pub(super) fn requirement(
    template: &CommandTemplate,
    targets: &[NodeId],
    registry: &[NodeRecord],
    policy: &ApprovalPolicy,
) -> Result<Option<Needed>, ApiError> {
    let by_id: HashMap<NodeId, &NodeRecord> = registry.iter().map(|n| (n.id, n)).collect();
    let mut seen: BTreeSet<&BTreeMap<String, String>> = BTreeSet::new();
    let empty = BTreeMap::new();
    let mut needed: Option<Needed> = None;
    for node_id in targets {
        let labels = by_id.get(node_id).map_or(&empty, |n| &n.labels);
        if !seen.insert(labels) {
            continue;
        }
        let Some((reason, requirement)) = template
            .requirement(labels, policy)
            .map_err(|e| ApiError(e.0, format!("node {node_id}: {}", e.1)))?
        else {
            continue;
        };
        needed = Some(match needed {
            None => Needed {
                reason,
                requirement,
            },
            Some(mut so_far) => {
                if so_far.requirement.approver != requirement.approver {
                    return Err(bad_request(format!(
                        "approval rules name different approvers for this rollout's targets \
                         ({:?} and {:?}): roll out to each group of nodes separately",
                        so_far.requirement.approver, requirement.approver
                    )));
                }
                so_far.requirement.min_approvals = so_far
                    .requirement
                    .min_approvals
                    .max(requirement.min_approvals);
                so_far
            }
        });
    }
    Ok(needed)
}

/// The command every target gets, as the approval covers it: who asked and
/// who approves are in it; it is not held by the node (the approval comes
/// before it is sent, with it).
pub(super) fn approved_message(message: &mut CentralMessage, requester: &str, needed: &Needed) {
    if let CentralMessage::Execute(execute) = message {
        execute.requires_approval = false;
        execute.hold_until = None;
        execute.requested_by = Some(requester.to_owned());
        execute.approver.clone_from(&needed.requirement.approver);
    }
}

/// The rollout an approval is asked for, as it is stored.
pub(super) struct Asked<'a> {
    pub rollout_id: RolloutId,
    pub requester: &'a str,
    /// The command every target gets ([`approved_message`]).
    pub message: &'a CentralMessage,
    /// Each target and its command's request id, in order.
    pub planned: &'a [(NodeId, RequestId)],
    pub strategy: &'a Strategy,
    pub start_at: WallTime,
}

/// The approval request to store and the hub's. The digest is signed to
/// last until the rollout's deadline; the request itself expires at the
/// configured request time or the deadline, whichever is first.
pub(super) fn request(
    asked: &Asked<'_>,
    needed: &Needed,
    now: WallTime,
    policy: &ApprovalPolicy,
) -> (StoredApproval, NeedsApproval) {
    let targets = TargetSet::new(&AwsLc, asked.planned);
    let valid_until = asked.strategy.deadline_at(asked.start_at);
    let ttl = i64::try_from(policy.request_ttl.as_millis()).unwrap_or(i64::MAX);
    let expires_at = now.add_millis(ttl).min(valid_until);
    let stored = StoredApproval {
        requester: asked.requester.to_owned(),
        approver: needed.requirement.approver.clone(),
        min_approvals: needed.requirement.min_approvals,
        reason: needed.reason.clone(),
        digest: nap_core::signed_approval::rollout_digest(
            &AwsLc,
            asked.rollout_id,
            targets.len(),
            &targets.root(),
            asked.message,
            valid_until,
        ),
        expires_at,
        approved_by: Vec::new(),
        signatures: Vec::new(),
    };
    let hub = NeedsApproval {
        request: stored.to_request(),
        targets,
        valid_until,
    };
    (stored, hub)
}

/// The root of a stored rollout's targets' tree, hex: what its digest
/// covers, for an approver's tool to check against the targets it lists.
pub(super) fn targets_root(planned: &[(NodeId, RequestId)]) -> String {
    hex::encode(TargetSet::new(&AwsLc, planned).root())
}

/// `POST /api/v1/rollouts/{id}/approve` `{"digest": …}` (and a signature
/// with its certificate, for nodes that verify approvals).
pub(super) async fn approve(
    State(hub): State<HubHandle>,
    Extension(who): Extension<Caller>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let decision = approvals::approval(&who, &body)?;
    decide(hub, who, id, decision).await
}

/// `POST /api/v1/rollouts/{id}/reject` `{"reason": …}`.
pub(super) async fn reject(
    State(hub): State<HubHandle>,
    Extension(who): Extension<Caller>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let decision = approvals::rejection(&body)?;
    decide(hub, who, id, decision).await
}

async fn decide(
    hub: HubHandle,
    who: Caller,
    id: String,
    decision: Decision,
) -> Result<Json<Value>, ApiError> {
    let caller = who.needs(Role::Operator)?.clone();
    let person = approvals::person(&hub, &caller).await?;
    super::rollout_control::control(hub, caller, id, RolloutControl::Decide { person, decision })
        .await
}
