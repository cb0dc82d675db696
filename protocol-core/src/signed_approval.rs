//! Approvals a node verifies itself (spec/protocol.md §8.2), so that a
//! compromised central alone cannot run a command whose allow-list entry
//! says `approval = "required"`.
//!
//! The chain has two links. An **approval root** (an Ed25519 key an
//! administrator keeps offline; the node is configured with its public key,
//! like the CA) signs **approver certificates**: a short text binding a
//! person's name to their own Ed25519 key for a bounded time. An approver
//! signs [`signing_bytes`] — the command's digest and their name — with
//! that key. The node checks each signature, its certificate, the root, the
//! validity period and the revocation list, and counts distinct people.
//!
//! A certificate reads, every line ending in `\n`:
//!
//! ```text
//! nap-approver 1
//! user alice
//! key ed25519:<base64 of the 32-byte public key>
//! not-before 2026-12-01T00:00:00Z
//! not-after 2027-03-01T00:00:00Z
//! signature ed25519:<base64 of the root's signature over every byte above>
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::central::approval::{canonical_bytes, rollout_canonical_bytes};
use crate::crypto::Crypto;
use crate::signed_text::{self, SplitError};
use crate::target_set::{Hash, root_from_proof};
use crate::wire::{CentralMessage, Execute, SignedApproval};
use crate::{NodeId, RequestId, RolloutId, WallTime};

const MAGIC: &str = "nap-approver 1";

/// The digest an approval is bound to: hex SHA-256 of the command's
/// canonical encoding ([`canonical_bytes`], spec §8.1). Central, the node
/// and the approver's tool all compute it here.
pub fn digest(
    crypto: &dyn Crypto,
    node_id: NodeId,
    request_id: RequestId,
    message: &CentralMessage,
    expires_at: WallTime,
) -> String {
    let canonical = canonical_bytes(node_id, request_id, message, expires_at);
    hex::encode(crypto.sha256(&canonical))
}

/// The digest a rollout's approval is bound to (spec §8.4): hex SHA-256 of
/// [`rollout_canonical_bytes`], over `targets` targets whose tree has `root`.
pub fn rollout_digest(
    crypto: &dyn Crypto,
    rollout_id: RolloutId,
    targets: usize,
    root: &Hash,
    message: &CentralMessage,
    expires_at: WallTime,
) -> String {
    let canonical = rollout_canonical_bytes(rollout_id, targets, root, message, expires_at);
    hex::encode(crypto.sha256(&canonical))
}

/// What an approver signs: a versioned line naming them and one naming the
/// digest, so a signature is for one person and one command only.
pub fn signing_bytes(user: &str, digest: &str) -> Vec<u8> {
    format!("nap-approve 1\nuser {user}\ndigest {digest}\n").into_bytes()
}

/// An Ed25519 public key, written `ed25519:<base64>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// Reads `ed25519:<base64>`.
    pub fn parse(text: &str) -> Option<Self> {
        let raw = STANDARD
            .decode(text.trim().strip_prefix("ed25519:")?)
            .ok()?;
        Some(Self(raw.try_into().ok()?))
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ed25519:{}", STANDARD.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What an approval root certifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    pub user: String,
    pub key: PublicKey,
    pub not_before: WallTime,
    pub not_after: WallTime,
}

/// A certificate as read, with the bytes its signature covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCertificate {
    pub certificate: Certificate,
    pub signed: Vec<u8>,
    pub signature: Vec<u8>,
}

/// Why a certificate could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
pub enum CertificateError {
    #[error("not an approver certificate (it must start with `{MAGIC}`)")]
    NotACertificate,
    #[error("the certificate has no {0} line")]
    Missing(&'static str),
    #[error("the certificate's {field} is invalid: {value:?}")]
    Invalid { field: &'static str, value: String },
    #[error("the certificate has an unknown line: {0:?}")]
    Unknown(String),
}

impl Certificate {
    /// The signed part: every line but the signature.
    pub fn signed_text(&self) -> String {
        format!(
            "{MAGIC}\nuser {}\nkey {}\nnot-before {}\nnot-after {}\n",
            self.user, self.key, self.not_before, self.not_after
        )
    }

    /// The whole certificate, given the root's signature over
    /// [`signed_text`](Self::signed_text).
    pub fn to_text(&self, signature: &[u8]) -> String {
        format!(
            "{}signature ed25519:{}\n",
            self.signed_text(),
            STANDARD.encode(signature)
        )
    }
}

impl SignedCertificate {
    /// Reads a certificate. The signature line must be the last, and the
    /// signed bytes are exactly the lines before it.
    pub fn parse(text: &str) -> Result<Self, CertificateError> {
        let text = signed_text::split(text, MAGIC).map_err(|e| match e {
            SplitError::NotOurs => CertificateError::NotACertificate,
            SplitError::Unsigned => CertificateError::Missing("signature"),
        })?;
        let (mut user, mut key, mut not_before, mut not_after) = (None, None, None, None);
        for &(line, name, value) in &text.fields {
            let invalid = |field| CertificateError::Invalid {
                field,
                value: value.to_owned(),
            };
            match name {
                "user" if valid_user(value) => user = Some(value.to_owned()),
                "user" => return Err(invalid("user")),
                "key" => key = Some(PublicKey::parse(value).ok_or_else(|| invalid("key"))?),
                "not-before" => {
                    not_before = Some(value.parse().map_err(|_| invalid("not-before"))?)
                }
                "not-after" => not_after = Some(value.parse().map_err(|_| invalid("not-after"))?),
                _ => return Err(CertificateError::Unknown(line.to_owned())),
            }
        }
        let signature = text.signature.map_err(|line| CertificateError::Invalid {
            field: "signature",
            value: line.to_owned(),
        })?;
        Ok(Self {
            certificate: Certificate {
                user: user.ok_or(CertificateError::Missing("user"))?,
                key: key.ok_or(CertificateError::Missing("key"))?,
                not_before: not_before.ok_or(CertificateError::Missing("not-before"))?,
                not_after: not_after.ok_or(CertificateError::Missing("not-after"))?,
            },
            signed: text.signed.as_bytes().to_vec(),
            signature,
        })
    }
}

/// A user name as certificates and API identities spell it.
fn valid_user(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
}

/// What a node trusts to certify approvers.
#[derive(Debug, Clone)]
pub struct ApprovalTrust {
    /// Approval roots; more than one while a root is being replaced.
    pub roots: Vec<PublicKey>,
    /// Approver keys no longer accepted, whatever their certificate says.
    pub revoked: BTreeSet<PublicKey>,
    pub crypto: Arc<dyn Crypto>,
}

/// Why one signed approval does not count.
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
pub enum SignatureRefusal {
    #[error("{user}: {error}")]
    Certificate {
        user: String,
        error: CertificateError,
    },
    #[error("{user}: the certificate is not signed by an approval root this node trusts")]
    UntrustedCertificate { user: String },
    #[error("{user}: the certificate is for {certified}")]
    WrongUser { user: String, certified: String },
    #[error(
        "{user}: the certificate is not valid at {now} (valid from {not_before} to {not_after})"
    )]
    OutsideValidity {
        user: String,
        now: WallTime,
        not_before: WallTime,
        not_after: WallTime,
    },
    #[error("{user}: the approver key {key} is revoked")]
    Revoked { user: String, key: PublicKey },
    #[error("{user}: the signature does not verify over this command's digest")]
    BadSignature { user: String },
    #[error("{user} requested the command and cannot approve it")]
    Requester { user: String },
    #[error("{user} signed more than once; counted once")]
    Repeated { user: String },
}

/// Why a node refuses to release a held command.
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ReleaseRefusal {
    #[error("this command needs signed approvals and no approval root is configured on this node")]
    NoTrust,
    #[error("the rollout approval's proof does not fit a set of its size")]
    RolloutProof,
    #[error("the rollout approval ended at {expires} (now {now})")]
    RolloutExpired { expires: WallTime, now: WallTime },
    #[error("{}", describe_short(*needed, valid, refused))]
    TooFew {
        needed: u8,
        /// The people whose approvals verified.
        valid: Vec<String>,
        refused: Vec<SignatureRefusal>,
    },
}

fn describe_short(needed: u8, valid: &[String], refused: &[SignatureRefusal]) -> String {
    let mut text = format!(
        "needs {needed} signed approval(s) from distinct approvers, {} verified",
        valid.len()
    );
    if !refused.is_empty() {
        let reasons: Vec<String> = refused.iter().map(ToString::to_string).collect();
        text.push_str("; refused: ");
        text.push_str(&reasons.join("; "));
    }
    text
}

impl ApprovalTrust {
    /// Checks one signed approval of `digest` at `now`, and who gave it.
    pub fn verify(
        &self,
        approval: &SignedApproval,
        digest: &str,
        requester: Option<&str>,
        now: WallTime,
    ) -> Result<String, SignatureRefusal> {
        let cert = check_signature(self.crypto.as_ref(), approval, digest)?;
        let user = approval.user.clone();
        let trusted = self.roots.iter().any(|root| {
            self.crypto
                .verify_ed25519(&root.0, &cert.signed, &cert.signature)
        });
        if !trusted {
            return Err(SignatureRefusal::UntrustedCertificate { user });
        }
        let certified = cert.certificate;
        if now < certified.not_before || now > certified.not_after {
            return Err(SignatureRefusal::OutsideValidity {
                user,
                now,
                not_before: certified.not_before,
                not_after: certified.not_after,
            });
        }
        if self.revoked.contains(&certified.key) {
            return Err(SignatureRefusal::Revoked {
                user,
                key: certified.key,
            });
        }
        if requester == Some(user.as_str()) {
            return Err(SignatureRefusal::Requester { user });
        }
        Ok(user)
    }

    /// Whether `approvals` hold at least `needed` valid signatures of
    /// `digest` by distinct people other than the requester; who they are.
    pub fn admit(
        &self,
        approvals: &[SignedApproval],
        digest: &str,
        requester: Option<&str>,
        needed: u8,
        now: WallTime,
    ) -> Result<Vec<String>, ReleaseRefusal> {
        let mut valid = BTreeSet::new();
        let mut refused = Vec::new();
        for approval in approvals {
            match self.verify(approval, digest, requester, now) {
                Ok(user) if !valid.insert(user.clone()) => {
                    refused.push(SignatureRefusal::Repeated { user });
                }
                Ok(_) => {}
                Err(refusal) => refused.push(refusal),
            }
        }
        if valid.len() >= usize::from(needed.max(1)) {
            Ok(valid.into_iter().collect())
        } else {
            Err(ReleaseRefusal::TooFew {
                needed: needed.max(1),
                valid: valid.into_iter().collect(),
                refused,
            })
        }
    }
}

impl ApprovalTrust {
    /// Whether the rollout approval `execute` carries admits it on this
    /// node (`node_id`): the proof leads from this target's leaf — this
    /// node, the command's request id — to a root, and at least `needed`
    /// approvers other than `requestedBy` signed the rollout's digest over
    /// that root (spec §8.4). A target outside the set gets another root,
    /// so the signatures do not verify.
    pub fn admit_rollout(
        &self,
        node_id: NodeId,
        execute: &Execute,
        needed: u8,
        now: WallTime,
    ) -> Result<Vec<String>, ReleaseRefusal> {
        let (Some(request_id), Some(approval)) = (execute.request_id, &execute.rollout_approval)
        else {
            return Err(ReleaseRefusal::RolloutProof);
        };
        let proof: Option<Vec<Hash>> = approval
            .proof
            .iter()
            .map(|h| hex::decode(h).ok()?.try_into().ok())
            .collect();
        let count = approval.targets as usize;
        let root = proof
            .and_then(|proof| {
                root_from_proof(
                    self.crypto.as_ref(),
                    node_id,
                    request_id,
                    approval.index as usize,
                    count,
                    &proof,
                )
            })
            .ok_or(ReleaseRefusal::RolloutProof)?;
        if now > approval.expires {
            return Err(ReleaseRefusal::RolloutExpired {
                expires: approval.expires,
                now,
            });
        }
        let digest = rollout_digest(
            self.crypto.as_ref(),
            approval.rollout_id,
            count,
            &root,
            &CentralMessage::Execute(execute.clone()),
            approval.expires,
        );
        let requester = execute.requested_by.as_deref();
        self.admit(&approval.approvals, &digest, requester, needed, now)
    }
}

/// The part of [`ApprovalTrust::verify`] that needs no root: the
/// certificate reads, is the signer's, and its key signed `digest`. Central
/// checks this when an approval is given, so a mistyped key is refused at
/// once rather than on the node; only the node's check is a guarantee.
pub fn check_signature(
    crypto: &dyn Crypto,
    approval: &SignedApproval,
    digest: &str,
) -> Result<SignedCertificate, SignatureRefusal> {
    let user = approval.user.clone();
    let cert = SignedCertificate::parse(&approval.certificate).map_err(|error| {
        SignatureRefusal::Certificate {
            user: user.clone(),
            error,
        }
    })?;
    if cert.certificate.user != user {
        return Err(SignatureRefusal::WrongUser {
            user,
            certified: cert.certificate.user,
        });
    }
    let signature = STANDARD.decode(&approval.signature).unwrap_or_default();
    let message = signing_bytes(&user, digest);
    if !crypto.verify_ed25519(&cert.certificate.key.0, &message, &signature) {
        return Err(SignatureRefusal::BadSignature { user });
    }
    Ok(cert)
}
