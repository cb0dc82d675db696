//! Release manifests: what a node accepts and what it refuses, once the
//! signature has verified (the driver's part).

use nap_core::release::{Manifest, ManifestError, SignedManifest, UpdateRefusal};

const TARGET: &str = "x86_64-unknown-linux-gnu";

fn manifest(version: &str, min: &str) -> Manifest {
    Manifest {
        version: version.parse().expect("version"),
        target: TARGET.into(),
        sha256: [7; 32],
        min_version: min.parse().expect("min"),
    }
}

#[test]
fn a_manifest_round_trips_and_signs_exactly_the_lines_above_its_signature() {
    let m = manifest("1.4.0", "1.2.0");
    let file = m.to_file("c2lnbmF0dXJl");
    let parsed = SignedManifest::parse(&file).expect("parses");
    assert_eq!(parsed.manifest, m);
    assert_eq!(parsed.signed, m.signed_text().into_bytes());
    assert_eq!(parsed.signature, b"signature");
}

#[test]
fn a_newer_release_for_this_target_and_digest_is_admitted() {
    let m = manifest("1.4.0", "1.2.0");
    assert_eq!(m.admit("1.4.0", "1.3.9", TARGET, &[7; 32]), Ok(()));
    assert_eq!(m.admit("1.4.0", "1.2.0", TARGET, &[7; 32]), Ok(()));
}

#[test]
fn a_downgrade_or_the_same_version_is_refused() {
    let m = manifest("1.4.0", "0.0.0");
    for running in ["1.4.0", "1.5.0", "2.0.0"] {
        assert!(
            matches!(
                m.admit("1.4.0", running, TARGET, &[7; 32]),
                Err(UpdateRefusal::NotNewer { .. })
            ),
            "running {running}"
        );
    }
    // A pre-release is older than its release.
    assert!(m.admit("1.4.0", "1.4.0-rc.1", TARGET, &[7; 32]).is_ok());
}

#[test]
fn a_release_for_another_target_another_version_or_another_binary_is_refused() {
    let m = manifest("1.4.0", "0.0.0");
    assert!(matches!(
        m.admit("1.4.0", "1.0.0", "aarch64-unknown-linux-gnu", &[7; 32]),
        Err(UpdateRefusal::WrongTarget { .. })
    ));
    // An old signed manifest offered for a new version number.
    assert!(matches!(
        m.admit("9.0.0", "1.0.0", TARGET, &[7; 32]),
        Err(UpdateRefusal::NotRequested { .. })
    ));
    assert_eq!(
        m.admit("1.4.0", "1.0.0", TARGET, &[8; 32]),
        Err(UpdateRefusal::DigestMismatch)
    );
}

#[test]
fn a_node_below_the_minimum_version_is_refused() {
    let m = manifest("2.0.0", "1.5.0");
    assert!(matches!(
        m.admit("2.0.0", "1.4.9", TARGET, &[7; 32]),
        Err(UpdateRefusal::TooOld { .. })
    ));
    assert!(matches!(
        m.admit("2.0.0", "not-a-version", TARGET, &[7; 32]),
        Err(UpdateRefusal::RunningVersion(_))
    ));
}

#[test]
fn a_malformed_manifest_is_a_clear_error() {
    let good = manifest("1.4.0", "1.2.0").to_file("c2ln");
    assert_eq!(
        SignedManifest::parse("sha256:00\ned25519:AAAA\n"),
        Err(ManifestError::NotAManifest)
    );
    assert_eq!(SignedManifest::parse(""), Err(ManifestError::NotAManifest));
    assert_eq!(
        SignedManifest::parse("nap-release 1\nversion 1.0.0\n"),
        Err(ManifestError::Missing("signature"))
    );
    let no_min = good.replace("min-version 1.2.0\n", "");
    assert_eq!(
        SignedManifest::parse(&no_min),
        Err(ManifestError::Missing("min-version"))
    );
    let extra = good.replace("target ", "rollout now\ntarget ");
    assert!(matches!(
        SignedManifest::parse(&extra),
        Err(ManifestError::Unknown(_))
    ));
    for (from, to, field) in [
        ("version 1.4.0", "version 1.4", "version"),
        ("sha256 0707", "sha256 zz07", "sha256"),
        (
            "signature ed25519:c2ln",
            "signature ed25519:!!",
            "signature",
        ),
        ("signature ed25519:c2ln", "signature rsa:c2ln", "signature"),
    ] {
        let bad = good.replace(from, to);
        assert!(
            matches!(SignedManifest::parse(&bad), Err(ManifestError::Invalid { field: f, .. }) if f == field),
            "{to}: {:?}",
            SignedManifest::parse(&bad)
        );
    }
}
