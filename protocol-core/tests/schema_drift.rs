//! The JSON Schemas committed under `spec/schemas/` are exactly what the
//! Rust types generate. When a wire type changes, regenerate them with
//! `cargo run -p nap-tests --bin spec-gen` and commit the result.

use serde_json::Value;

macro_rules! committed {
    ($($name:literal),+ $(,)?) => {
        [$( ($name, include_str!(concat!("../../spec/schemas/", $name))) ),+]
    };
}

const COMMITTED: [(&str, &str); 22] = committed!(
    "agent-to-central.json",
    "central-to-agent.json",
    "operator-to-central.json",
    "telemetry.json",
    "command_result.json",
    "status.json",
    "alert.json",
    "health.json",
    "ping.json",
    "pong.json",
    "token_refresh.json",
    "log_line.json",
    "welcome.json",
    "ack.json",
    "execute.json",
    "execute_approved.json",
    "deploy.json",
    "health_check.json",
    "update_agent.json",
    "drain.json",
    "stream_logs.json",
    "broadcast.json",
);

#[test]
fn committed_schemas_match_the_types() {
    let generated = nap_core::schema::all();
    let generated_names: Vec<&str> = generated.iter().map(|(n, _)| n.as_str()).collect();
    let committed_names: Vec<&str> = COMMITTED.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        generated_names, committed_names,
        "the set of schemas changed: update COMMITTED and run `cargo run -p nap-tests --bin spec-gen`"
    );
    for ((name, schema), (_, text)) in generated.iter().zip(COMMITTED) {
        let committed: Value = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("spec/schemas/{name} is not JSON: {e}"));
        assert!(
            *schema == committed,
            "spec/schemas/{name} drifted from the Rust types: run `cargo run -p nap-tests --bin spec-gen`"
        );
    }
}

#[test]
fn every_message_type_has_a_schema() {
    for kind in nap_core::wire::all_message_types() {
        let file = format!("{kind}.json");
        assert!(
            COMMITTED.iter().any(|(name, _)| *name == file),
            "no schema for message type {kind}"
        );
    }
}
