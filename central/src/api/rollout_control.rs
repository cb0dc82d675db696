//! v0.3: an operator's say on a running rollout — pause, resume, abort, and
//! (v0.2, spec §8.4) a decision on its approval — handed to the hub that
//! drives it, audited, and answered with its verdict.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use nap_core::RolloutId;
use nap_core::central::approval::Decision;
use nap_core::central::{ControlRefusal, RolloutControl};
use serde_json::{Value, json};

use super::caller::Caller;
use super::error::{ApiError, bad_request, internal};
use super::tokens::Role;
use crate::hub::HubHandle;
use crate::store::Storage;

pub(super) fn parse_rollout(id: &str) -> Result<RolloutId, ApiError> {
    id.parse()
        .map_err(|_| bad_request(format!("{id:?} is not a rollout id (a UUID)")))
}

pub(super) async fn control(
    hub: HubHandle,
    who: Caller,
    id: String,
    control: RolloutControl,
) -> Result<Json<Value>, ApiError> {
    let who = who.needs(Role::Operator)?;
    let id = parse_rollout(&id)?;
    let verdict = hub
        .control_rollout(id, control.clone())
        .await
        .ok_or_else(|| {
            ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "the hub did not answer".into(),
            )
        })?;
    let store = &hub.effects().store;
    let (action, reason, signed) = match &control {
        RolloutControl::Pause => ("rollout.pause", None, false),
        RolloutControl::Resume => ("rollout.resume", None, false),
        RolloutControl::Abort => ("rollout.abort", None, false),
        RolloutControl::Decide { decision, .. } => match decision {
            Decision::Approve { signature, .. } => ("rollout.approve", None, signature.is_some()),
            Decision::Reject { reason } => ("rollout.reject", Some(reason.clone()), false),
            Decision::Cancel => ("rollout.cancel", None, false),
        },
    };
    let mut detail = match &verdict {
        Ok(state) => json!({ "state": state, "role": who.role.as_str() }),
        Err(refusal) => json!({ "refused": refusal.to_string(), "role": who.role.as_str() }),
    };
    if matches!(control, RolloutControl::Decide { .. }) {
        detail["reason"] = json!(reason);
        detail["signed"] = json!(signed);
    }
    store
        .append_audit(
            who.user(),
            action,
            &id.to_string(),
            detail,
            hub.clock().wall(),
        )
        .await
        .map_err(internal)?;
    match verdict {
        Ok(state) if matches!(control, RolloutControl::Decide { .. }) => {
            let approval = store
                .get_rollout(id)
                .await
                .map_err(internal)?
                .and_then(|(r, _)| r.approval);
            Ok(Json(json!({
                "rolloutId": id,
                "state": state,
                "approvedBy": approval.as_ref().map(|a| &a.approved_by),
                "minApprovals": approval.as_ref().map(|a| a.min_approvals),
            })))
        }
        Ok(state) => Ok(Json(json!({ "rolloutId": id, "state": state }))),
        Err(ControlRefusal::Approval(refusal)) => Err(super::approvals::refused(&refusal)),
        Err(ControlRefusal::Refused(refusal)) => {
            Err(ApiError(StatusCode::CONFLICT, refusal.to_string()))
        }
        Err(ControlRefusal::Unknown) => match store.get_rollout(id).await.map_err(internal)? {
            Some((r, _)) if r.state.is_terminal() => Err(ApiError(
                StatusCode::CONFLICT,
                format!("the rollout has ended ({})", r.state.as_str()),
            )),
            Some(_) => Err(ApiError(
                StatusCode::CONFLICT,
                "no central process drives this rollout now".into(),
            )),
            None => Err(ApiError(StatusCode::NOT_FOUND, format!("no rollout {id}"))),
        },
    }
}

pub(super) async fn pause(
    State(hub): State<HubHandle>,
    Extension(who): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    control(hub, who, id, RolloutControl::Pause).await
}

pub(super) async fn resume(
    State(hub): State<HubHandle>,
    Extension(who): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    control(hub, who, id, RolloutControl::Resume).await
}

pub(super) async fn abort(
    State(hub): State<HubHandle>,
    Extension(who): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    control(hub, who, id, RolloutControl::Abort).await
}
