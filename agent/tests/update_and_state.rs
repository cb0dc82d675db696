//! Self-update verification, installation and rollback; persisted state
//! across restarts and a corrupt state file; the key file's mode; health
//! checks against the real PostgreSQL.

use std::time::Duration;

use aws_lc_rs::digest;
use base64::Engine as _;
use nap_agent::keys::{NodeKey, sign_release};
use nap_agent::state::StateFile;
use nap_agent::update;
use nap_core::release::Manifest;

/// A manifest for `binary` signed by `key`.
fn signed(key: &NodeKey, binary: &[u8], version: &str, target: &str, min: &str) -> String {
    let mut sha256 = [0u8; 32];
    sha256.copy_from_slice(digest::digest(&digest::SHA256, binary).as_ref());
    let manifest = Manifest {
        version: version.parse().expect("version"),
        target: target.into(),
        sha256,
        min_version: min.parse().expect("min"),
    };
    let signature = sign_release(key, manifest.signed_text().as_bytes());
    manifest.to_file(&base64::engine::general_purpose::STANDARD.encode(signature))
}

#[test]
fn a_signed_release_verifies_and_anything_else_is_refused() {
    let (release, _) = NodeKey::generate().expect("key");
    let (impostor, _) = NodeKey::generate().expect("key");
    let key = release.public_pem();
    let binary = b"\x7fELF new agent";
    let good = signed(&release, binary, "2.0.0", update::TARGET, "0.1.0");
    let verify = |binary: &[u8], manifest: &str, requested: &str, running: &str| {
        update::verify(binary, manifest, &key, requested, running).map_err(|e| format!("{e:#}"))
    };
    assert!(verify(binary, &good, "2.0.0", "1.0.0").is_ok());

    let err = verify(b"\x7fELF evil agent", &good, "2.0.0", "1.0.0").expect_err("refused");
    assert!(err.contains("SHA-256"), "{err}");

    let wrong_signer = signed(&impostor, binary, "2.0.0", update::TARGET, "0.1.0");
    let err = verify(binary, &wrong_signer, "2.0.0", "1.0.0").expect_err("refused");
    assert!(err.contains("does not verify"), "{err}");

    // Editing a signed field breaks the signature.
    let edited = good.replace("min-version 0.1.0", "min-version 0.0.1");
    let err = verify(binary, &edited, "2.0.0", "1.0.0").expect_err("refused");
    assert!(err.contains("does not verify"), "{err}");

    // An older signed build offered again: a downgrade.
    let old = signed(&release, binary, "1.0.0", update::TARGET, "0.1.0");
    let err = verify(binary, &old, "1.0.0", "2.0.0").expect_err("refused");
    assert!(err.contains("downgrade"), "{err}");

    let other = signed(
        &release,
        binary,
        "2.0.0",
        "aarch64-unknown-linux-gnu",
        "0.1.0",
    );
    if update::TARGET != "aarch64-unknown-linux-gnu" {
        let err = verify(binary, &other, "2.0.0", "1.0.0").expect_err("refused");
        assert!(err.contains("this node is"), "{err}");
    }

    let too_new = signed(&release, binary, "3.0.0", update::TARGET, "2.5.0");
    let err = verify(binary, &too_new, "3.0.0", "2.0.0").expect_err("refused");
    assert!(err.contains("needs at least 2.5.0"), "{err}");

    let old_format = "sha256:00\ned25519:AAAA\n";
    let err = verify(binary, old_format, "2.0.0", "1.0.0").expect_err("refused");
    assert!(err.contains("not a NAP release manifest"), "{err}");
    assert!(verify(binary, "", "2.0.0", "1.0.0").is_err(), "empty");
}

#[test]
fn install_swaps_atomically_and_a_silent_new_version_is_rolled_back() {
    let dir = tempfile::tempdir().expect("dir");
    let binary = dir.path().join("nap-agent");
    std::fs::write(&binary, b"version 1").expect("write");
    update::install(
        &binary,
        dir.path(),
        "2.0.0",
        b"version 2",
        Duration::from_secs(0),
    )
    .expect("install");
    assert_eq!(std::fs::read(&binary).expect("read"), b"version 2");
    let pending = update::pending(dir.path()).expect("an update awaits confirmation");
    assert_eq!(pending.version, "2.0.0");
    // The new version never connected: back to the old one.
    update::roll_back(dir.path(), &pending).expect("roll back");
    assert_eq!(std::fs::read(&binary).expect("read"), b"version 1");
    assert!(update::pending(dir.path()).is_none());
}

#[test]
fn a_confirmed_update_stays() {
    let dir = tempfile::tempdir().expect("dir");
    let binary = dir.path().join("nap-agent");
    std::fs::write(&binary, b"version 1").expect("write");
    update::install(
        &binary,
        dir.path(),
        "2.0.0",
        b"version 2",
        Duration::from_secs(120),
    )
    .expect("install");
    update::confirm(dir.path());
    assert!(update::pending(dir.path()).is_none());
    assert_eq!(std::fs::read(&binary).expect("read"), b"version 2");
    assert!(!binary.with_extension("previous").exists());
}

#[test]
fn state_survives_a_restart_and_a_corrupt_file_is_moved_aside() {
    use nap_core::agent::{AgentConfig, AgentEngine, AgentSnapshot, RecordedRequest};
    let dir = tempfile::tempdir().expect("dir");
    let state = StateFile::new(dir.path());
    assert!(state.load().is_none());
    let result = nap_core::wire::CommandResult {
        request_id: nap_core::RequestId::from_u128(1),
        success: true,
        result: "done".into(),
        timestamp: nap_core::WallTime::UNIX_EPOCH,
        exit_code: Some(0),
        stderr: None,
        duration_ms: None,
        truncated: false,
        error: None,
    };
    let snapshot = AgentSnapshot {
        version: AgentSnapshot::VERSION,
        requests: vec![RecordedRequest {
            request_id: result.request_id,
            result: Some(result),
            acked: false,
        }],
        telemetry: vec![],
        alerts: vec![],
        health: vec![],
    };
    state.save(&snapshot).expect("save");
    let loaded = state.load().expect("load");
    assert_eq!(loaded, snapshot);
    let mut engine = AgentEngine::new(AgentConfig::new(nap_core::NodeId::from_u128(1), 1));
    engine.restore(loaded, nap_core::WallTime::UNIX_EPOCH);
    assert_eq!(
        engine.outbox_len(),
        1,
        "the unacked result waits in the outbox"
    );

    std::fs::write(dir.path().join("state.json"), b"{ not json").expect("corrupt");
    assert!(
        state.load().is_none(),
        "a corrupt file does not crash the agent"
    );
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("state.json.corrupt-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "moved aside for inspection");
}

#[test]
fn a_key_readable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("dir");
    let (_, pem) = NodeKey::generate().expect("key");
    let path = dir.path().join("node.key");
    std::fs::write(&path, pem).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let err = NodeKey::load(&path).expect_err("refused");
    assert!(err.to_string().contains("chmod 600"), "{err}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    assert!(NodeKey::load(&path).is_ok());
}

#[tokio::test]
async fn the_database_check_talks_to_the_real_postgresql() {
    let Ok(url) = std::env::var("NAP_TEST_DATABASE_URL") else {
        assert!(
            std::env::var_os("NAP_REQUIRE_SERVICES").is_none(),
            "NAP_TEST_DATABASE_URL is required"
        );
        eprintln!("SKIPPED the database health check test: set NAP_TEST_DATABASE_URL");
        return;
    };
    assert!(
        nap_agent::probe::database(&url, Duration::from_secs(5))
            .await
            .is_ok()
    );
    assert!(
        nap_agent::probe::database("tcp://127.0.0.1:5432", Duration::from_secs(5))
            .await
            .is_ok()
    );
    // Nothing listens on port 1.
    let err = nap_agent::probe::database("tcp://127.0.0.1:1", Duration::from_secs(5))
        .await
        .expect_err("down");
    assert!(err.contains("127.0.0.1:1"), "{err}");
    let bad = url.replace("/test", "/no_such_database_here");
    assert!(
        nap_agent::probe::database(&bad, Duration::from_secs(5))
            .await
            .is_err()
    );

    let sample = nap_core::testing::sample(10.0, 85.0);
    let config = nap_agent::config::HealthConfig {
        database: Some(url),
        ..Default::default()
    };
    let (checks, details) = nap_agent::health::check(&config, &sample).await;
    assert_eq!(checks.database, nap_core::wire::CheckStatus::Ok);
    assert_eq!(
        checks.disk,
        nap_core::wire::CheckStatus::Warning,
        "85% is over the 80% warning"
    );
    assert!(details.disk.expect("detail").message.contains("85"));
}
