//! Central's fuzz targets (`fuzz/`) on the stable toolchain: the committed
//! corpus files, then seeded random inputs, including flipped bytes of a
//! genuine token.

use nap_central::fuzz::TARGETS;
use nap_core::rng::Prng;

#[test]
fn every_committed_corpus_file_passes() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    for (name, target) in TARGETS {
        let dir = root.join(name);
        let entries: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .flatten()
            .collect();
        assert!(!entries.is_empty(), "no corpus for {name}");
        for entry in entries {
            let data = std::fs::read(entry.path()).expect("corpus file");
            target(&data);
        }
    }
}

#[test]
fn random_inputs_pass_every_target() {
    for (i, (name, target)) in TARGETS.iter().enumerate() {
        let mut rng = Prng::new(0xCE27 + i as u64);
        for case in 0..2000 {
            let len = usize::try_from(rng.between(0, 256)).unwrap_or(0);
            let data: Vec<u8> = (0..len).map(|_| rng.between(0, 255) as u8).collect();
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{name} case {case} failed on {data:?}");
        }
    }
}

/// The genuine token verifies and is admitted: the jwt target's invariant
/// has something to hold on to.
#[test]
fn the_genuine_token_verifies() {
    let token = nap_central::fuzz::signed_token();
    let node = nap_central::fuzz::node();
    let check = nap_central::agents::tokens::inspect_with(token, Some(&node));
    assert!(check.signature_valid);
    // One flipped byte in the signature, and it no longer does.
    let mut forged = token.to_owned().into_bytes();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).expect("ascii");
    assert!(!nap_central::agents::tokens::inspect_with(&forged, Some(&node)).signature_valid);
}
