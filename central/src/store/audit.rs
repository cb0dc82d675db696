//! The audit log's hash chain: each entry commits to its predecessor, so an
//! edited or deleted entry breaks every hash after it.

use aws_lc_rs::digest;
use nap_core::WallTime;
use serde::{Deserialize, Serialize};

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    pub seq: u64,
    pub at: WallTime,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub detail: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditEntry {
    /// The entry that follows `last` (the chain's newest `(seq, hash)`, or
    /// none for the first), hashed. `at` is taken at the stored precision.
    pub fn after(
        last: Option<(u64, String)>,
        at: WallTime,
        actor: &str,
        action: &str,
        subject: &str,
        detail: serde_json::Value,
    ) -> Self {
        let (seq, prev_hash) = match last {
            Some((seq, hash)) => (seq + 1, hash),
            None => (1, String::new()),
        };
        let at = stored_precision(at);
        let hash = chain_hash(&prev_hash, seq, at, actor, action, subject, &detail);
        Self {
            seq,
            at,
            actor: actor.to_owned(),
            action: action.to_owned(),
            subject: subject.to_owned(),
            detail,
            prev_hash,
            hash,
        }
    }
}

/// The hash of an entry: SHA-256 over the previous hash and the entry's
/// fields, each length-prefixed so no two field splits hash alike.
pub fn chain_hash(
    prev_hash: &str,
    seq: u64,
    at: WallTime,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &serde_json::Value,
) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    let detail = detail.to_string();
    let at = at.to_string();
    let seq = seq.to_string();
    for part in [prev_hash, &seq, &at, actor, action, subject, &detail] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    hex::encode(ctx.finish().as_ref())
}

/// Both backends store microseconds: hash what will be read back.
pub fn stored_precision(at: WallTime) -> WallTime {
    WallTime::from_unix_micros(at.as_datetime().timestamp_micros()).unwrap_or(at)
}

/// The first entry whose hash does not match, if any.
pub fn first_broken(entries: &[AuditEntry]) -> Option<u64> {
    let mut prev = String::new();
    for e in entries {
        let expected = chain_hash(
            &prev, e.seq, e.at, &e.actor, &e.action, &e.subject, &e.detail,
        );
        if e.prev_hash != prev || e.hash != expected {
            return Some(e.seq);
        }
        prev = e.hash.clone();
    }
    None
}

/// The one chained record a batch write adds to the audit log, in the same
/// transaction as the batch (spec §11): what the batch changed, so that a
/// fan-out's 10,000 results cost a few records, not one each.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchRecord {
    pub action: &'static str,
    pub subject: String,
    pub detail: serde_json::Value,
    pub at: WallTime,
}

/// Sessions opened and closed (node status) and command state changes.
pub fn state_batch(changes: &[super::StateChange]) -> Option<BatchRecord> {
    use super::StateChange;
    let mut sessions = Vec::new();
    let mut commands = Vec::new();
    let mut rollouts = Vec::new();
    let mut latest = None;
    for change in changes {
        match change {
            StateChange::Status {
                node_id,
                status,
                reason,
                at,
            } => {
                sessions.push(serde_json::json!({
                    "node": node_id, "status": status, "reason": reason, "at": at,
                }));
                latest = latest.max(Some(*at));
            }
            StateChange::Command {
                request_id,
                state,
                at,
            } => {
                commands.push(serde_json::json!({
                    "requestId": request_id, "state": state.as_str(), "at": at,
                }));
                latest = latest.max(Some(*at));
            }
            StateChange::Rollout {
                rollout_id,
                state,
                at,
            } => {
                rollouts.push(serde_json::json!({
                    "rolloutId": rollout_id, "state": state.as_str(), "at": at,
                }));
                latest = latest.max(Some(*at));
            }
            StateChange::RolloutTarget {
                rollout_id,
                node_id,
                state,
                at,
            } => {
                rollouts.push(serde_json::json!({
                    "rolloutId": rollout_id, "node": node_id, "state": state.as_str(), "at": at,
                }));
                latest = latest.max(Some(*at));
            }
        }
    }
    let mut subject = format!("{} sessions, {} commands", sessions.len(), commands.len());
    let mut detail = serde_json::json!({ "sessions": sessions, "commands": commands });
    if !rollouts.is_empty() {
        subject.push_str(&format!(", {} rollout changes", rollouts.len()));
        detail["rollouts"] = serde_json::Value::Array(rollouts);
    }
    Some(BatchRecord {
        action: "state.batch",
        subject,
        detail,
        at: latest?,
    })
}

/// Results recorded, with what the store decided of each.
pub fn results_batch(
    rows: &[(nap_core::NodeId, nap_core::wire::CommandResult)],
    records: &[nap_core::central::ResultRecord],
    at: WallTime,
) -> Option<BatchRecord> {
    use nap_core::central::ResultRecord;
    if rows.is_empty() {
        return None;
    }
    let results: Vec<serde_json::Value> = rows
        .iter()
        .zip(records)
        .map(|((node, result), record)| {
            let recorded = match record {
                ResultRecord::Stored { first: true } => "stored",
                ResultRecord::Stored { first: false } => "repeat",
                ResultRecord::WrongNode => "wrong_node",
                ResultRecord::Failed => "failed",
            };
            serde_json::json!({
                "requestId": result.request_id,
                "node": node,
                "success": result.success,
                "exitCode": result.exit_code,
                "recorded": recorded,
            })
        })
        .collect();
    Some(BatchRecord {
        action: "results.batch",
        subject: format!("{} results", results.len()),
        detail: serde_json::json!({ "results": results }),
        at,
    })
}
