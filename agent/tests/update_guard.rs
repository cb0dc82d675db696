//! The update guard (`packaging/systemd/nap-agent-guard`), the shell script
//! systemd runs before every start and from a timer: it rolls an update back
//! without running the new build — one that crashes at start, fails its
//! config check or never reaches central.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nap_agent::update;

fn guard() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/systemd/nap-agent-guard")
}

/// Runs the guard as systemd would; returns its stderr.
fn run_guard(mode: &str, state: &Path, restart: &str) -> String {
    let out = Command::new("/bin/sh")
        .arg(guard())
        .arg(mode)
        .arg(state)
        .env("NAP_GUARD_RESTART", restart)
        .output()
        .expect("the guard runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// An installed update awaiting confirmation: `old` replaced by `new`.
fn installed(rollback_after: Duration) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("dir");
    let binary = dir.path().join("nap-agent");
    std::fs::write(&binary, b"old build").expect("write");
    update::install(&binary, dir.path(), "2.0.0", b"new build", rollback_after).expect("install");
    (dir, binary)
}

#[test]
fn a_new_build_that_never_stays_up_is_rolled_back_at_the_fourth_start() {
    let (dir, binary) = installed(Duration::from_secs(3600));
    for start in 1..=3 {
        let said = run_guard("start", dir.path(), "false");
        assert!(said.is_empty(), "start {start}: {said}");
        assert_eq!(std::fs::read(&binary).expect("read"), b"new build");
    }
    // Three starts and no confirmation (a crash at start, a failed
    // `check-config`, the watchdog): the fourth start gets the old build.
    let said = run_guard("start", dir.path(), "false");
    assert!(said.contains("rolled back"), "{said}");
    assert_eq!(std::fs::read(&binary).expect("read"), b"old build");
    assert!(update::pending(dir.path()).is_none(), "the marker is gone");
    assert!(
        run_guard("start", dir.path(), "false").is_empty(),
        "nothing more to do"
    );
}

#[test]
fn a_new_build_that_runs_but_never_confirms_is_rolled_back_by_the_timer_and_restarted() {
    let (dir, binary) = installed(Duration::ZERO);
    let restarted = dir.path().join("restarted");
    let said = run_guard(
        "check",
        dir.path(),
        &format!("touch {}", restarted.display()),
    );
    assert!(said.contains("deadline"), "{said}");
    assert_eq!(std::fs::read(&binary).expect("read"), b"old build");
    assert!(
        restarted.exists(),
        "the agent is restarted onto the old build"
    );
}

#[test]
fn a_confirmed_or_still_young_update_is_left_alone() {
    let (dir, binary) = installed(Duration::from_secs(3600));
    let restarted = dir.path().join("restarted");
    let restart = format!("touch {}", restarted.display());
    assert!(run_guard("check", dir.path(), &restart).is_empty());
    assert_eq!(std::fs::read(&binary).expect("read"), b"new build");
    assert!(!restarted.exists());
    update::confirm(dir.path());
    assert!(run_guard("start", dir.path(), &restart).is_empty());
    assert!(run_guard("check", dir.path(), &restart).is_empty());
    assert_eq!(std::fs::read(&binary).expect("read"), b"new build");
    assert!(!restarted.exists());
}
