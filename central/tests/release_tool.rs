//! `nap-central release keygen` and `release sign`: the operator's key is
//! private and never replaced; what is published is what nodes verify.

use std::os::unix::fs::PermissionsExt as _;

use aws_lc_rs::signature::{ED25519, UnparsedPublicKey};
use nap_central::release::{Release, generate_key, sign};
use nap_core::release::SignedManifest;

#[test]
fn keygen_writes_a_private_key_only_its_owner_reads_and_never_replaces_one() {
    let dir = tempfile::tempdir().expect("dir");
    let (key, public) = generate_key(dir.path()).expect("keygen");
    let mode = std::fs::metadata(&key).expect("key").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        std::fs::read_to_string(&public)
            .expect("pub")
            .contains("PUBLIC KEY")
    );
    let before = std::fs::read(&key).expect("read");
    let err = generate_key(dir.path()).expect_err("an existing key is kept");
    assert!(format!("{err:#}").contains("never replaced"), "{err:#}");
    assert_eq!(std::fs::read(&key).expect("read"), before);
}

#[test]
fn sign_publishes_the_binary_and_a_manifest_its_public_key_verifies() {
    let dir = tempfile::tempdir().expect("dir");
    let (key, public) = generate_key(&dir.path().join("keys")).expect("keygen");
    let binary = dir.path().join("nap-agent");
    std::fs::write(&binary, b"\x7fELF build").expect("write");
    let artifacts = dir.path().join("artifacts");
    let release = Release {
        binary: &binary,
        version: "1.2.0",
        target: "x86_64-unknown-linux-gnu",
        min_version: Some("1.0.0"),
    };
    let manifest = sign(&key, &release, &artifacts).expect("sign");
    let published = artifacts.join("nap-agent/1.2.0/x86_64-unknown-linux-gnu");
    assert_eq!(std::fs::read(&published).expect("binary"), b"\x7fELF build");
    let signed = SignedManifest::parse(&std::fs::read_to_string(&manifest).expect("manifest"))
        .expect("parses");
    assert_eq!(signed.manifest.version.to_string(), "1.2.0");
    assert_eq!(signed.manifest.min_version.to_string(), "1.0.0");
    let spki = pem::parse(std::fs::read_to_string(&public).expect("pub")).expect("pem");
    UnparsedPublicKey::new(&ED25519, &spki.contents()[12..])
        .verify(&signed.signed, &signed.signature)
        .expect("the signature verifies with release.pub");
    assert!(
        signed
            .manifest
            .admit(
                "1.2.0",
                "1.1.0",
                "x86_64-unknown-linux-gnu",
                aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b"\x7fELF build").as_ref()
            )
            .is_ok()
    );
}

#[test]
fn sign_refuses_a_shared_key_and_versions_that_make_no_sense() {
    let dir = tempfile::tempdir().expect("dir");
    let (key, _) = generate_key(dir.path()).expect("keygen");
    let binary = dir.path().join("nap-agent");
    std::fs::write(&binary, b"build").expect("write");
    let artifacts = dir.path().join("artifacts");
    let release = |version, min_version, target| Release {
        binary: &binary,
        version,
        target,
        min_version,
    };
    let err = |r: Release<'_>| format!("{:#}", sign(&key, &r, &artifacts).expect_err("refused"));
    assert!(err(release("1.2", None, "x86_64-unknown-linux-gnu")).contains("not a version"));
    assert!(err(release("1.2.0", Some("2.0.0"), "x86_64-unknown-linux-gnu")).contains("above"));
    assert!(err(release("1.2.0", None, "../etc")).contains("target triple"));
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    assert!(err(release("1.2.0", None, "x86_64-unknown-linux-gnu")).contains("readable by others"));
    assert!(!artifacts.exists(), "nothing was published");
}
