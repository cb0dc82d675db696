//! A rollout's approval, from the approver's side (spec/protocol.md §8.4):
//! read the rollout and every one of its targets from central, compute the
//! targets' tree and the digest from what is shown, and refuse to sign
//! unless central's digest is that one — so what the approver sees (this
//! command, these nodes) is what they sign.

use anyhow::{Context as _, bail};
use nap_core::central::rollout::Strategy;
use nap_core::crypto::AwsLc;
use nap_core::signed_approval;
use nap_core::target_set::TargetSet;
use nap_core::wire::CentralMessage;
use nap_core::{NodeId, RequestId, RolloutId, WallTime};
use serde_json::Value;

use crate::api::Api;

/// Targets read per request.
const PAGE: usize = 1000;

/// A rollout awaiting approval, as central shows it, its digest checked.
#[derive(Debug, Clone)]
pub struct PendingRollout {
    pub rollout_id: RolloutId,
    pub message: CentralMessage,
    pub targets: Vec<(NodeId, RequestId)>,
    pub digest: String,
    pub requester: String,
    pub reason: String,
    pub valid_until: WallTime,
}

impl PendingRollout {
    /// Reads rollout `id` and all its targets, and checks the digest.
    pub async fn fetch(api: &Api, id: &str) -> anyhow::Result<Self> {
        let first = api
            .get(&format!("/api/v1/rollouts/{id}?offset=0&limit={PAGE}"))
            .await?;
        let mut pages = vec![first.clone()];
        let mut next = first["nextOffset"].as_u64();
        while let Some(offset) = next {
            let page = api
                .get(&format!(
                    "/api/v1/rollouts/{id}?offset={offset}&limit={PAGE}"
                ))
                .await?;
            next = page["nextOffset"].as_u64();
            pages.push(page);
        }
        let targets = pages
            .iter()
            .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
            .collect::<Vec<_>>();
        Self::from_listing(&first, &targets)
    }

    /// The rollout as `GET /api/v1/rollouts/{id}` shows it, with every
    /// target in order; refused unless its digest is that of what it shows.
    pub fn from_listing(rollout: &Value, targets: &[Value]) -> anyhow::Result<Self> {
        let field = |name: &str| {
            rollout
                .get(name)
                .cloned()
                .with_context(|| format!("the rollout has no {name}"))
        };
        let approval = field("approval")?;
        if approval.is_null() {
            bail!("this rollout needs no approval");
        }
        let strategy: Strategy = serde_json::from_value(field("strategy")?)
            .context("the rollout's strategy does not read")?;
        let start_at: WallTime = serde_json::from_value(field("startAt")?)?;
        let count = field("targetCount")?.as_u64().unwrap_or_default();
        if targets.len() as u64 != count {
            bail!(
                "central listed {} targets of {count}: not signing",
                targets.len()
            );
        }
        let targets = targets
            .iter()
            .map(|t| -> anyhow::Result<(NodeId, RequestId)> {
                Ok((
                    serde_json::from_value(t["nodeId"].clone())?,
                    serde_json::from_value(t["requestId"].clone())?,
                ))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let pending = Self {
            rollout_id: serde_json::from_value(field("rolloutId")?)?,
            message: serde_json::from_value(field("command")?)
                .context("the rollout's command does not read as a NAP command")?,
            targets,
            digest: text(&approval["digest"]),
            requester: text(&approval["requester"]),
            reason: text(&approval["reason"]),
            valid_until: strategy.deadline_at(start_at),
        };
        let ours = pending.computed_digest();
        if ours != pending.digest {
            bail!(
                "central's digest {} is not the digest of the command and targets it shows ({ours}): not signing",
                pending.digest
            );
        }
        Ok(pending)
    }

    /// The digest of the rollout as shown.
    pub fn computed_digest(&self) -> String {
        let tree = TargetSet::new(&AwsLc, &self.targets);
        signed_approval::rollout_digest(
            &AwsLc,
            self.rollout_id,
            tree.len(),
            &tree.root(),
            &self.message,
            self.valid_until,
        )
    }

    /// What the approver is asked to approve, for their terminal.
    pub fn describe(&self) -> String {
        let what = match &self.message {
            CentralMessage::Execute(e) => format!("execute {} {:?}", e.command, e.args),
            other => serde_json::to_string(other).unwrap_or_default(),
        };
        let shown: Vec<String> = self
            .targets
            .iter()
            .take(5)
            .map(|(n, _)| n.to_string())
            .collect();
        let more = self.targets.len().saturating_sub(shown.len());
        format!(
            "rollout {}\n  command   {what}\n  targets   {} ({}{})\n  requester {}\n  reason    {}\n  until     {}\n  digest    {}",
            self.rollout_id,
            self.targets.len(),
            shown.join(", "),
            if more > 0 {
                format!(", and {more} more")
            } else {
                String::new()
            },
            self.requester,
            self.reason,
            self.valid_until,
            self.digest
        )
    }
}

#[cfg(test)]
mod tests {
    use nap_core::wire::Execute;
    use serde_json::json;

    use super::*;

    fn listing(
        targets: &[(NodeId, RequestId)],
        digest_over: &[(NodeId, RequestId)],
    ) -> (Value, Vec<Value>) {
        let id = RolloutId::from_u128(3);
        let message = CentralMessage::Execute(Execute {
            request_id: None,
            command: "uptime".into(),
            args: vec![],
            timeout: None,
            hold_until: None,
            requested_by: Some("alice".into()),
            rollout_approval: None,
            requires_approval: false,
            approver: None,
        });
        let strategy = Strategy::default();
        let start = WallTime::from_unix_millis(1_800_000_000_000).expect("time");
        let tree = TargetSet::new(&AwsLc, digest_over);
        let digest = signed_approval::rollout_digest(
            &AwsLc,
            id,
            tree.len(),
            &tree.root(),
            &message,
            strategy.deadline_at(start),
        );
        let rollout = json!({
            "rolloutId": id, "command": message, "strategy": strategy, "startAt": start,
            "targetCount": targets.len(),
            "approval": { "digest": digest, "requester": "alice", "reason": "look" },
        });
        let listed = targets
            .iter()
            .map(|(n, r)| json!({ "nodeId": n, "requestId": r }))
            .collect();
        (rollout, listed)
    }

    #[test]
    fn a_digest_over_other_targets_than_those_shown_is_never_signed() {
        let shown: Vec<_> = (1..=3)
            .map(|i| (NodeId::from_u128(i), RequestId::from_u128(100 + i)))
            .collect();
        let (rollout, targets) = listing(&shown, &shown);
        assert!(PendingRollout::from_listing(&rollout, &targets).is_ok());
        let (rollout, targets) = listing(&shown, &shown[..2]);
        let error = PendingRollout::from_listing(&rollout, &targets).expect_err("refused");
        assert!(error.to_string().contains("not signing"), "{error}");
        let (rollout, _) = listing(&shown, &shown);
        let error = PendingRollout::from_listing(&rollout, &targets_of(&shown[..2]))
            .expect_err("a short listing");
        assert!(
            error.to_string().contains("listed 2 targets of 3"),
            "{error}"
        );
    }

    fn targets_of(t: &[(NodeId, RequestId)]) -> Vec<Value> {
        t.iter()
            .map(|(n, r)| json!({ "nodeId": n, "requestId": r }))
            .collect()
    }
}
