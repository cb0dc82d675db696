//! `nap-core` decides and never performs: no clock, socket, file or random
//! source appears in its source, and no IO crate among its dependencies.

use std::path::{Path, PathBuf};

const FORBIDDEN: &[&str] = &[
    "Instant::now",
    "SystemTime::now",
    "Utc::now",
    "Local::now",
    "thread_rng",
    "rand::rng(",
    "OsRng",
    "getrandom",
    "std::net",
    "std::fs",
    "std::io::stdin",
    "std::thread",
    "std::env",
    "tokio",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_core_reads_no_clock_socket_file_or_random_source() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../protocol-core/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(
        files.len() > 20,
        "found only {} files under {}",
        files.len(),
        src.display()
    );
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("utf-8 source");
        for (n, line) in text.lines().enumerate() {
            for word in FORBIDDEN {
                if line.contains(word) {
                    found.push(format!("{}:{}: {word}", file.display(), n + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "nap-core must stay sans-IO:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_core_forbids_unsafe_code() {
    let lib = include_str!("../../protocol-core/src/lib.rs");
    assert!(lib.contains("#![forbid(unsafe_code)]"));
}

#[test]
fn the_core_depends_on_no_io_crate() {
    let manifest = include_str!("../../protocol-core/Cargo.toml");
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .expect("a [dependencies] table");
    for crate_name in [
        "tokio",
        "mio",
        "socket2",
        "getrandom",
        "rand =",
        "reqwest",
        "hyper",
    ] {
        assert!(
            !deps.contains(crate_name),
            "nap-core depends on {crate_name}"
        );
    }
}
