//! The sample configuration parses, flags override it, and mistakes are
//! named.

use std::path::Path;

use nap_agent::config::FileConfig;

fn example() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("agent.example.toml")
}

#[test]
fn the_sample_configuration_is_valid() {
    let config = FileConfig::load(&example()).expect("parses");
    assert_eq!(config.commands.len(), 3);
    let policy = config.policy().expect("policy");
    assert!(policy.check_execute("uptime", &[], None).is_ok());
    assert!(
        policy
            .check_execute(
                "journal",
                &["-u".into(), "nginx".into(), "--no-pager".into()],
                None
            )
            .is_ok()
    );
    assert!(
        policy
            .check_execute(
                "journal",
                &["-u".into(), "a;b".into(), "--no-pager".into()],
                None
            )
            .is_err()
    );
    assert!(policy.check_deploy("production", "main").is_ok());
}

#[test]
fn flags_override_the_file() {
    let overrides = serde_json::json!({
        "central": "wss://central.example:9443/v1/agent",
        "sandbox": { "cpu_seconds": 12 }
    });
    let config = FileConfig::load_with(&example(), &overrides).expect("parses");
    assert_eq!(config.central, "wss://central.example:9443/v1/agent");
    assert_eq!(config.sandbox.cpu_seconds, 12);
    assert_eq!(
        config.sandbox.open_files, 256,
        "the rest stays as in the file"
    );
}

#[test]
fn mistakes_are_named() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("agent.toml");
    let base = std::fs::read_to_string(example()).expect("read");
    std::fs::write(&path, format!("{base}\n[commands.bad]\nprogram = \"ls\"\n")).expect("write");
    let err = FileConfig::load(&path)
        .expect_err("relative program")
        .to_string();
    assert!(err.contains("absolute"), "{err}");
    std::fs::write(&path, base.replace("max_running = 4", "max_runing = 4")).expect("write");
    let err = FileConfig::load(&path).expect_err("typo").to_string();
    assert!(err.contains("max_runing"), "{err}");
    let err = FileConfig::load(&dir.path().join("missing.toml"))
        .expect_err("missing")
        .to_string();
    assert!(err.contains("does not exist"), "{err}");
}
