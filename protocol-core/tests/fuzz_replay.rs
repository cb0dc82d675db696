//! Every fuzz target (`fuzz/`) on the stable toolchain: the committed
//! corpus files, then a few thousand seeded random inputs each.

use nap_core::rng::Prng;
use nap_core::testing::fuzz::TARGETS;

#[test]
fn every_committed_corpus_file_passes() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let mut files = 0;
    for (name, target) in TARGETS {
        let dir = root.join(name);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let data = std::fs::read(entry.path()).expect("corpus file");
            target(&data);
            files += 1;
        }
    }
    assert!(
        files >= TARGETS.len(),
        "only {files} corpus files under {}",
        root.display()
    );
}

#[test]
fn random_inputs_pass_every_target() {
    for (i, (name, target)) in TARGETS.iter().enumerate() {
        let mut rng = Prng::new(0xF022 + i as u64);
        for case in 0..3000 {
            let len = usize::try_from(rng.between(0, 512)).unwrap_or(0);
            let data: Vec<u8> = (0..len).map(|_| rng.between(0, 255) as u8).collect();
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{name} case {case} failed on {data:?}");
        }
    }
}
