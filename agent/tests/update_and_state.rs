//! Self-update verification, installation and rollback; persisted state
//! across restarts and a corrupt state file; the key file's mode; health
//! checks against the real PostgreSQL.

use std::time::Duration;

use aws_lc_rs::digest;
use base64::Engine as _;
use nap_agent::keys::{NodeKey, sign_release};
use nap_agent::state::StateFile;
use nap_agent::update;

fn sig_file(key: &NodeKey, binary: &[u8]) -> String {
    let d = digest::digest(&digest::SHA256, binary);
    let signature = sign_release(key, d.as_ref());
    format!(
        "sha256:{}\ned25519:{}\n",
        hex::encode(d.as_ref()),
        base64::engine::general_purpose::STANDARD.encode(signature)
    )
}

#[test]
fn a_signed_artifact_verifies_and_anything_else_is_refused() {
    let (release, _) = NodeKey::generate().expect("key");
    let (impostor, _) = NodeKey::generate().expect("key");
    let binary = b"\x7fELF new agent";
    let good = sig_file(&release, binary);
    assert!(update::verify(binary, &good, &release.public_pem()).is_ok());

    let tampered = b"\x7fELF evil agent";
    let err = update::verify(tampered, &good, &release.public_pem()).expect_err("refused");
    assert!(err.to_string().contains("SHA-256 mismatch"), "{err}");

    let wrong_signer = sig_file(&impostor, binary);
    let err = update::verify(binary, &wrong_signer, &release.public_pem()).expect_err("refused");
    assert!(err.to_string().contains("does not verify"), "{err}");

    assert!(
        update::verify(binary, "sha256:00\n", &release.public_pem()).is_err(),
        "unsigned"
    );
    assert!(
        update::verify(binary, "", &release.public_pem()).is_err(),
        "empty"
    );
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
