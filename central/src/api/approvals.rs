//! v0.2 approval (spec §8.1): the requests awaiting decision, and approve,
//! reject and cancel. The hub decides; a handler hands it the person and the
//! decision and answers with its verdict.

use std::collections::BTreeSet;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use nap_core::RequestId;
use nap_core::central::approval::{ApprovalRefusal, Approvers, Decided, Decision, Person};
use nap_core::crypto::AwsLc;
use nap_core::signed_approval::check_signature;
use nap_core::wire::SignedApproval;
use serde::Deserialize;
use serde_json::{Value, json};

use super::caller::Caller;
use super::error::{ApiError, bad_request, internal};
use super::tokens::Role;
use crate::hub::{DecideError, HubHandle};
use crate::store::{Storage, StoredApproval};

#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    /// Only the requests the caller may approve.
    #[serde(default)]
    mine: bool,
}

/// `GET /api/v1/approvals[?mine=true]`: commands awaiting approval, with
/// the digest an approval must name.
pub(super) async fn list(
    State(hub): State<HubHandle>,
    Extension(who): Extension<Caller>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let who = who.needs(Role::Viewer)?;
    let person = person(&hub, who).await?;
    let pending = hub
        .effects()
        .store
        .pending_approvals()
        .await
        .map_err(internal)?;
    let rollouts = hub
        .effects()
        .store
        .rollouts_awaiting_approval()
        .await
        .map_err(internal)?;
    // What a request asks, and whether the caller is one to answer it.
    let listed = |a: StoredApproval, mut item: Value| -> Option<Value> {
        let may =
            a.requester != person.user && Approvers::parse(a.approver.as_deref()).admits(&person);
        if query.mine && !may {
            return None;
        }
        item["requester"] = json!(a.requester);
        item["approver"] = json!(a.approver);
        item["reason"] = json!(a.reason);
        item["minApprovals"] = json!(a.min_approvals);
        item["approvedBy"] = json!(a.approved_by);
        item["digest"] = json!(a.digest);
        item["expiresAt"] = json!(a.expires_at);
        item["youMayApprove"] = json!(may);
        Some(item)
    };
    let mut items: Vec<Value> = pending
        .into_iter()
        .filter_map(|c| {
            let item = json!({
                "requestId": c.request_id,
                "nodeId": c.node_id,
                "state": c.state,
                "message": c.message,
            });
            listed(c.approval?, item)
        })
        .collect();
    // Rollouts, approved once as a whole (spec §8.4).
    items.extend(rollouts.into_iter().filter_map(|r| {
        let item = json!({
            "rolloutId": r.id,
            "state": r.state,
            "message": r.message,
            "targets": r.limits["targets"],
        });
        listed(r.approval?, item)
    }));
    Ok(Json(json!({ "approvals": items })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ApproveBody {
    /// The digest of the command being approved (from `GET /api/v1/approvals`).
    digest: String,
    /// The approver's Ed25519 signature over the digest, base64 (§8.2).
    signature: Option<String>,
    /// The approver certificate for the key that signed.
    certificate: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RejectBody {
    reason: String,
}

/// `POST /api/v1/commands/{id}/approve` `{"digest": …}`.
pub(super) async fn approve(
    State(hub): State<HubHandle>,
    Extension(who): Extension<Caller>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let decision = approval(&who, &body)?;
    decide(&hub, &who, &id, decision).await
}

/// The approval an `approve` body gives, its signature checked against its
/// certificate.
pub(super) fn approval(who: &Caller, body: &[u8]) -> Result<Decision, ApiError> {
    let body: ApproveBody = parse(body)?;
    let signature = match (body.signature, body.certificate) {
        (None, None) => None,
        (Some(signature), Some(certificate)) => {
            let signed = SignedApproval {
                user: who.user().to_owned(),
                certificate,
                signature,
            };
            // A mistyped key or a wrong certificate is refused now, not on
            // the node hours later; the node's own check is the guarantee.
            check_signature(&AwsLc, &signed, &body.digest)
                .map_err(|e| bad_request(format!("signature: {e}")))?;
            Some(signed)
        }
        _ => return Err(bad_request("signature and certificate go together")),
    };
    Ok(Decision::Approve {
        digest: body.digest,
        signature,
    })
}

/// The rejection a `reject` body gives.
pub(super) fn rejection(body: &[u8]) -> Result<Decision, ApiError> {
    let body: RejectBody = parse(body)?;
    Ok(Decision::Reject {
        reason: body.reason,
    })
}

/// `POST /api/v1/commands/{id}/reject` `{"reason": …}`.
pub(super) async fn reject(
    State(hub): State<HubHandle>,
    Extension(who): Extension<Caller>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let decision = rejection(&body)?;
    decide(&hub, &who, &id, decision).await
}

/// `POST /api/v1/commands/{id}/cancel`.
pub(super) async fn cancel(
    State(hub): State<HubHandle>,
    Extension(who): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    decide(&hub, &who, &id, Decision::Cancel).await
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| bad_request(format!("body: {e}")))
}

pub(super) async fn person(hub: &HubHandle, who: &Caller) -> Result<Person, ApiError> {
    let groups = hub
        .effects()
        .store
        .groups_of(who.user())
        .await
        .map_err(internal)?;
    Ok(Person {
        user: who.user().to_owned(),
        groups: groups.into_iter().collect::<BTreeSet<_>>(),
        admin: who.role >= Role::Admin,
    })
}

async fn decide(
    hub: &HubHandle,
    who: &Caller,
    id: &str,
    decision: Decision,
) -> Result<Response, ApiError> {
    let who = who.needs(Role::Operator)?;
    let request_id: RequestId = id
        .parse()
        .map_err(|_| bad_request(format!("{id:?} is not a request id")))?;
    let person = person(hub, who).await?;
    let verdict = hub
        .decide(request_id, person, decision)
        .await
        .map_err(|e| match e {
            DecideError::NodeAway(_) => ApiError(StatusCode::CONFLICT, e.to_string()),
            DecideError::NoAnswer | DecideError::Cluster(_) => {
                ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
        })?;
    match verdict {
        Ok(decided) => {
            let (state, more) = match decided {
                Decided::Counted { approvals, needed } => (
                    "pending",
                    json!({ "approvals": approvals, "needed": needed }),
                ),
                Decided::Approved => ("approved", Value::Null),
                Decided::Rejected => ("rejected", Value::Null),
                Decided::Cancelled => ("cancelled", Value::Null),
            };
            let mut answer = json!({ "requestId": request_id, "state": state });
            if let (Value::Object(more), Some(answer)) = (more, answer.as_object_mut()) {
                answer.extend(more);
            }
            Ok((StatusCode::OK, Json(answer)).into_response())
        }
        Err(refusal) => Err(refused(&refusal)),
    }
}

/// The answer to a refused decision.
pub(super) fn refused(refusal: &ApprovalRefusal) -> ApiError {
    let status = match refusal {
        ApprovalRefusal::OwnRequest
        | ApprovalRefusal::NotAnApprover(_)
        | ApprovalRefusal::NotRequester
        | ApprovalRefusal::NotOwnSignature { .. } => StatusCode::FORBIDDEN,
        ApprovalRefusal::NotPending
        | ApprovalRefusal::AlreadyApproved
        | ApprovalRefusal::DigestMismatch => StatusCode::CONFLICT,
        ApprovalRefusal::ReasonRequired => StatusCode::BAD_REQUEST,
    };
    ApiError(status, refusal.to_string())
}
