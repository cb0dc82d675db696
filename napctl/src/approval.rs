//! The approval chain's tooling (spec/protocol.md §8.2): an administrator
//! makes the approval root and certifies approvers' keys, offline; an
//! approver signs what they approve — after checking that central's digest
//! is the digest of the command it shows, so what they see is what they sign.

use std::time::Duration;

use anyhow::{Context as _, bail};
use aws_lc_rs::signature::Ed25519KeyPair;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use nap_core::crypto::AwsLc;
use nap_core::signed_approval::{self, Certificate, PublicKey, SignedCertificate};
use nap_core::wire::{CentralMessage, SignedApproval};
use nap_core::{NodeId, RequestId, WallTime};
use serde_json::Value;

use crate::keys;

/// The longest a certificate may be valid: approvers are re-certified, so
/// a lost key stops working on its own.
pub const MAX_VALIDITY: Duration = Duration::from_secs(400 * 24 * 3600);

/// Certifies `key` as `user`'s, from `not_before` for `validity`, with the
/// root key at `root`; the certificate's text.
pub fn certify(
    root: &std::path::Path,
    user: &str,
    key: PublicKey,
    not_before: WallTime,
    validity: Duration,
) -> anyhow::Result<String> {
    if validity.is_zero() || validity > MAX_VALIDITY {
        bail!("a certificate is valid for 1 to 400 days");
    }
    let root = keys::load(root)?;
    let millis = i64::try_from(validity.as_millis()).unwrap_or(i64::MAX);
    let certificate = Certificate {
        user: user.to_owned(),
        key,
        not_before,
        not_after: not_before.add_millis(millis),
    };
    let signature = root.sign(certificate.signed_text().as_bytes());
    let text = certificate.to_text(signature.as_ref());
    // What we wrote must read back: the user name's rules are the parser's.
    SignedCertificate::parse(&text).context("the certificate does not read back")?;
    Ok(text)
}

/// A pending approval as `GET /api/v1/approvals` lists it.
#[derive(Debug, Clone)]
pub struct Pending {
    pub request_id: RequestId,
    pub node_id: NodeId,
    pub message: CentralMessage,
    pub expires_at: WallTime,
    pub digest: String,
    pub requester: String,
    pub reason: String,
}

impl Pending {
    /// Reads one listed item, and refuses it unless its digest is the
    /// digest of the command it shows.
    pub fn from_listing(item: &Value) -> anyhow::Result<Self> {
        let field = |name: &str| {
            item.get(name)
                .cloned()
                .with_context(|| format!("the listing has no {name}"))
        };
        let text = |name: &str| -> anyhow::Result<String> {
            Ok(field(name)?.as_str().unwrap_or_default().to_owned())
        };
        let pending = Self {
            request_id: serde_json::from_value(field("requestId")?)?,
            node_id: serde_json::from_value(field("nodeId")?)?,
            message: serde_json::from_value(field("message")?)
                .context("the listed command does not read as a NAP command")?,
            expires_at: serde_json::from_value(field("expiresAt")?)?,
            digest: text("digest")?,
            requester: text("requester")?,
            reason: text("reason")?,
        };
        let ours = pending.computed_digest();
        if ours != pending.digest {
            bail!(
                "central's digest {} is not the digest of the command it shows ({ours}): not signing",
                pending.digest
            );
        }
        Ok(pending)
    }

    /// The digest of the command as shown (spec §8.1).
    pub fn computed_digest(&self) -> String {
        signed_approval::digest(
            &AwsLc,
            self.node_id,
            self.request_id,
            &self.message,
            self.expires_at,
        )
    }

    /// What the approver is asked to approve, for their terminal.
    pub fn describe(&self) -> String {
        let what = match &self.message {
            CentralMessage::Execute(e) => format!(
                "execute {} {:?} (timeout {} ms)",
                e.command,
                e.args,
                e.timeout.map_or("default".to_owned(), |t| t.to_string())
            ),
            other => serde_json::to_string(other).unwrap_or_default(),
        };
        format!(
            "request {}\n  node      {}\n  command   {what}\n  requester {}\n  reason    {}\n  expires   {}\n  digest    {}",
            self.request_id,
            self.node_id,
            self.requester,
            self.reason,
            self.expires_at,
            self.digest
        )
    }
}

/// Signs `digest` as the certificate's user with `key`.
pub fn sign(
    key: &Ed25519KeyPair,
    certificate_text: &str,
    digest: &str,
) -> anyhow::Result<SignedApproval> {
    let certificate = SignedCertificate::parse(certificate_text)?.certificate;
    if keys::public_of(key) != certificate.key {
        bail!(
            "the certificate is for key {}, not this key ({})",
            certificate.key,
            keys::public_of(key)
        );
    }
    let user = certificate.user;
    let signature = key.sign(&signed_approval::signing_bytes(&user, digest));
    Ok(SignedApproval {
        user,
        certificate: certificate_text.to_owned(),
        signature: STANDARD.encode(signature.as_ref()),
    })
}

#[cfg(test)]
mod tests {
    use nap_core::crypto::AwsLc;
    use nap_core::signed_approval::{ApprovalTrust, check_signature};
    use nap_core::wire::Execute;
    use serde_json::json;

    use super::*;

    fn listing(digest: Option<&str>) -> Value {
        let node = NodeId::from_u128(7);
        let id = RequestId::from_u128(9);
        let message = CentralMessage::Execute(Execute {
            request_id: Some(id),
            command: "docker".into(),
            args: vec!["ps".into()],
            timeout: None,
            hold_until: None,
            requested_by: Some("alice".into()),
            rollout_approval: None,
            requires_approval: true,
            approver: None,
        });
        let expires = WallTime::from_unix_millis(1_800_000_000_000).expect("time");
        let digest = digest.map_or_else(
            || signed_approval::digest(&AwsLc, node, id, &message, expires),
            str::to_owned,
        );
        json!({
            "requestId": id, "nodeId": node, "message": message, "expiresAt": expires,
            "digest": digest, "requester": "alice", "reason": "look",
        })
    }

    #[test]
    fn a_digest_that_is_not_the_shown_command_s_is_never_signed() {
        let error = Pending::from_listing(&listing(Some(&"0".repeat(64)))).expect_err("refused");
        assert!(error.to_string().contains("not signing"), "{error}");
        assert!(Pending::from_listing(&listing(None)).is_ok());
    }

    #[test]
    fn a_signature_made_here_is_one_the_node_accepts() {
        let dir = tempfile::tempdir().expect("dir");
        let root = keys::generate(&dir.path().join("root.key")).expect("root");
        let bob = keys::generate(&dir.path().join("bob.key")).expect("bob");
        let now = WallTime::from_unix_millis(1_700_000_000_000).expect("time");
        let certificate = certify(
            &dir.path().join("root.key"),
            "bob",
            bob,
            now,
            Duration::from_secs(86_400),
        )
        .expect("certify");
        let pending = Pending::from_listing(&listing(None)).expect("listing");
        let key = keys::load(&dir.path().join("bob.key")).expect("load");
        let signed = sign(&key, &certificate, &pending.digest).expect("sign");
        assert_eq!(signed.user, "bob");
        check_signature(&AwsLc, &signed, &pending.digest).expect("central's check");
        let trust = ApprovalTrust {
            roots: vec![root],
            revoked: Default::default(),
            crypto: std::sync::Arc::new(AwsLc),
        };
        let who = trust
            .verify(
                &signed,
                &pending.digest,
                Some("alice"),
                now.add_millis(1000),
            )
            .expect("the node's check");
        assert_eq!(who, "bob");
    }

    #[test]
    fn a_key_is_not_signed_for_with_someone_else_s_certificate() {
        let dir = tempfile::tempdir().expect("dir");
        keys::generate(&dir.path().join("root.key")).expect("root");
        let bob = keys::generate(&dir.path().join("bob.key")).expect("bob");
        keys::generate(&dir.path().join("mallory.key")).expect("mallory");
        let now = WallTime::from_unix_millis(1_700_000_000_000).expect("time");
        let certificate = certify(
            &dir.path().join("root.key"),
            "bob",
            bob,
            now,
            Duration::from_secs(86_400),
        )
        .expect("certify");
        let mallory = keys::load(&dir.path().join("mallory.key")).expect("load");
        let error = sign(&mallory, &certificate, &"a".repeat(64)).expect_err("refused");
        assert!(error.to_string().contains("not this key"), "{error}");
        assert!(
            certify(
                &dir.path().join("root.key"),
                "bob",
                bob,
                now,
                MAX_VALIDITY + Duration::from_secs(1)
            )
            .is_err(),
            "validity is bounded"
        );
    }
}
