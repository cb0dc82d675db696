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
