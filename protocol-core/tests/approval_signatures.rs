//! v0.2 approvals a node verifies itself (spec §8.2): a signature counts
//! only if its certificate is signed by a trusted root, is the signer's, is
//! valid now, its key is not revoked, it covers this command's digest, and
//! its signer is not the requester; distinct people are counted once.

use std::collections::BTreeSet;
use std::sync::Arc;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use nap_core::WallTime;
use nap_core::crypto::AwsLc;
use nap_core::signed_approval::{
    ApprovalTrust, Certificate, PublicKey, ReleaseRefusal, SignatureRefusal, signing_bytes,
};
use nap_core::wire::SignedApproval;

const DIGEST: &str = "5e1f";

fn key(seed: u8) -> Ed25519KeyPair {
    Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).expect("a key")
}

fn public(pair: &Ed25519KeyPair) -> PublicKey {
    PublicKey(pair.public_key().as_ref().try_into().expect("32 bytes"))
}

fn at(day: i64) -> WallTime {
    WallTime::from_unix_millis(1_800_000_000_000 + day * 86_400_000).expect("in range")
}

fn certificate(root: &Ed25519KeyPair, user: &str, key: &Ed25519KeyPair) -> String {
    let cert = Certificate {
        user: user.into(),
        key: public(key),
        not_before: at(0),
        not_after: at(90),
    };
    let signature = root.sign(cert.signed_text().as_bytes());
    cert.to_text(signature.as_ref())
}

fn signed(root: &Ed25519KeyPair, user: &str, key: &Ed25519KeyPair, digest: &str) -> SignedApproval {
    SignedApproval {
        user: user.into(),
        certificate: certificate(root, user, key),
        signature: STANDARD.encode(key.sign(&signing_bytes(user, digest)).as_ref()),
    }
}

fn trust(root: &Ed25519KeyPair) -> ApprovalTrust {
    ApprovalTrust {
        roots: vec![public(root)],
        revoked: BTreeSet::new(),
        crypto: Arc::new(AwsLc),
    }
}

fn verify(
    trust: &ApprovalTrust,
    approval: &SignedApproval,
    day: i64,
) -> Result<String, SignatureRefusal> {
    trust.verify(approval, DIGEST, Some("alice"), at(day))
}

#[test]
fn a_certified_approver_s_signature_of_this_digest_counts() {
    let root = key(1);
    let bob = signed(&root, "bob", &key(2), DIGEST);
    assert_eq!(verify(&trust(&root), &bob, 1), Ok("bob".to_owned()));
}

#[test]
fn a_signature_of_another_command_is_refused() {
    let root = key(1);
    let bob = signed(&root, "bob", &key(2), "edited");
    assert_eq!(
        verify(&trust(&root), &bob, 1),
        Err(SignatureRefusal::BadSignature { user: "bob".into() })
    );
}

#[test]
fn a_forged_signature_is_refused() {
    let root = key(1);
    let mut bob = signed(&root, "bob", &key(2), DIGEST);
    // Mallory signs with her own key under bob's certificate.
    bob.signature = STANDARD.encode(key(9).sign(&signing_bytes("bob", DIGEST)).as_ref());
    assert_eq!(
        verify(&trust(&root), &bob, 1),
        Err(SignatureRefusal::BadSignature { user: "bob".into() })
    );
}

#[test]
fn a_certificate_from_an_untrusted_root_is_refused() {
    let bob = signed(&key(7), "bob", &key(2), DIGEST);
    assert_eq!(
        verify(&trust(&key(1)), &bob, 1),
        Err(SignatureRefusal::UntrustedCertificate { user: "bob".into() })
    );
}

#[test]
fn an_expired_or_not_yet_valid_certificate_is_refused() {
    let root = key(1);
    let bob = signed(&root, "bob", &key(2), DIGEST);
    assert!(matches!(
        verify(&trust(&root), &bob, 91),
        Err(SignatureRefusal::OutsideValidity { .. })
    ));
    assert!(matches!(
        verify(&trust(&root), &bob, -1),
        Err(SignatureRefusal::OutsideValidity { .. })
    ));
}

#[test]
fn a_revoked_key_is_refused() {
    let root = key(1);
    let bob = signed(&root, "bob", &key(2), DIGEST);
    let mut trust = trust(&root);
    trust.revoked.insert(public(&key(2)));
    assert!(matches!(
        verify(&trust, &bob, 1),
        Err(SignatureRefusal::Revoked { .. })
    ));
}

#[test]
fn another_person_s_certificate_does_not_make_a_signature_theirs() {
    let root = key(1);
    let mut carol = signed(&root, "carol", &key(3), DIGEST);
    carol.user = "bob".into();
    assert_eq!(
        verify(&trust(&root), &carol, 1),
        Err(SignatureRefusal::WrongUser {
            user: "bob".into(),
            certified: "carol".into()
        })
    );
}

#[test]
fn the_requester_s_own_signature_never_counts() {
    let root = key(1);
    let alice = signed(&root, "alice", &key(4), DIGEST);
    assert_eq!(
        verify(&trust(&root), &alice, 1),
        Err(SignatureRefusal::Requester {
            user: "alice".into()
        })
    );
}

#[test]
fn distinct_people_are_counted_once_each() {
    let root = key(1);
    let trust = trust(&root);
    let bob = signed(&root, "bob", &key(2), DIGEST);
    let twice = [bob.clone(), bob.clone()];
    assert!(matches!(
        trust.admit(&twice, DIGEST, Some("alice"), 2, at(1)),
        Err(ReleaseRefusal::TooFew { needed: 2, .. })
    ));
    let carol = signed(&root, "carol", &key(3), DIGEST);
    assert_eq!(
        trust.admit(&[bob, carol], DIGEST, Some("alice"), 2, at(1)),
        Ok(vec!["bob".to_owned(), "carol".to_owned()])
    );
}

#[test]
fn a_node_verifying_with_no_signatures_refuses() {
    let root = key(1);
    assert!(matches!(
        trust(&root).admit(&[], DIGEST, Some("alice"), 1, at(1)),
        Err(ReleaseRefusal::TooFew { needed: 1, .. })
    ));
}
