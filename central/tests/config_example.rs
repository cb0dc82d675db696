//! The example configuration parses and says what the defaults say.

#[test]
fn the_example_configuration_is_the_defaults() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("central.example.toml");
    let config =
        nap_central::ServeConfig::load(Some(&path), &serde_json::json!({})).expect("parses");
    assert_eq!(config, nap_central::ServeConfig::default());
}

#[test]
fn flags_override_the_file() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("central.example.toml");
    let config =
        nap_central::ServeConfig::load(Some(&path), &serde_json::json!({"heartbeat_ms": 5000}))
            .expect("parses");
    assert_eq!(config.heartbeat_ms, 5000);
}

#[test]
fn an_unknown_key_is_an_error_that_names_it() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("central.toml");
    std::fs::write(&path, "listne = \"127.0.0.1:1\"\n").expect("write");
    let err =
        nap_central::ServeConfig::load(Some(&path), &serde_json::json!({})).expect_err("refused");
    assert!(err.to_string().contains("listne"), "{err}");
}
