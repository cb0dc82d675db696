//! Each file under `spec/examples/` is a valid message: it satisfies its own
//! schema and its direction's schema, decodes through the codec, and
//! survives encode → decode unchanged.

use nap_core::wire::{AgentMessage, CentralMessage, OperatorMessage, all_message_types};
use nap_core::{Limits, Message, decode, encode};
use serde_json::Value;

/// `spec/<dir>/<name>.json` for every message type, from the one table of
/// types (`wire::all_message_types`).
fn files(dir: &str) -> Vec<(&'static str, String)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../spec")
        .join(dir);
    all_message_types()
        .into_iter()
        .map(|name| {
            let path = root.join(format!("{name}.json"));
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("spec/{dir}/{name}.json: {e}"));
            (name, text)
        })
        .collect()
}

const AGENT_TO_CENTRAL: &str = include_str!("../../spec/schemas/agent-to-central.json");
const CENTRAL_TO_AGENT: &str = include_str!("../../spec/schemas/central-to-agent.json");
const OPERATOR_TO_CENTRAL: &str = include_str!("../../spec/schemas/operator-to-central.json");

fn json(text: &str) -> Value {
    serde_json::from_str(text).expect("committed file is JSON")
}

fn assert_valid(schema: &Value, instance: &Value, what: &str) {
    let validator = jsonschema::validator_for(schema).expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{what}: {errors:#?}");
}

fn roundtrip<M: Message + PartialEq + std::fmt::Debug>(name: &str, text: &str) {
    let limits = Limits::default();
    let message: M = decode(text, &limits).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(message.message_type(), name);
    let encoded = encode(&message).expect("encodes");
    let again: M = decode(&encoded, &limits).expect("re-decodes");
    assert_eq!(again, message, "{name} changed in a round trip");
    assert_eq!(
        encode(&again).expect("encodes"),
        encoded,
        "{name}: encode is not stable"
    );
}

#[test]
fn there_is_one_example_per_message_type_and_no_other() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec/examples");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("spec/examples")
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_suffix(".json")
                .map(str::to_owned)
        })
        .collect();
    let mut types = all_message_types();
    names.sort_unstable();
    types.sort_unstable();
    assert_eq!(names, types);
}

#[test]
fn every_example_satisfies_its_schema() {
    for ((name, example), (schema_name, schema)) in files("examples").iter().zip(files("schemas")) {
        assert_eq!(*name, schema_name);
        assert_valid(&json(&schema), &json(example), name);
    }
}

#[test]
fn every_example_satisfies_its_direction_schema_and_round_trips() {
    for (name, example) in files("examples") {
        let (name, example) = (name, example.as_str());
        let mut directions = 0;
        if AgentMessage::TYPES.contains(&name) {
            assert_valid(&json(AGENT_TO_CENTRAL), &json(example), name);
            roundtrip::<AgentMessage>(name, example);
            directions += 1;
        }
        if CentralMessage::TYPES.contains(&name) {
            assert_valid(&json(CENTRAL_TO_AGENT), &json(example), name);
            roundtrip::<CentralMessage>(name, example);
            directions += 1;
        }
        if OperatorMessage::TYPES.contains(&name) {
            assert_valid(&json(OPERATOR_TO_CENTRAL), &json(example), name);
            roundtrip::<OperatorMessage>(name, example);
            directions += 1;
        }
        assert!(directions > 0, "{name} belongs to no direction");
    }
}

#[test]
fn schemas_reject_what_the_codec_rejects() {
    // A sample the schema must refuse: a telemetry without its data.
    let schemas = files("schemas");
    let examples = files("examples");
    let of = |files: &[(&str, String)], name: &str| {
        files
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| t.clone())
            .expect("present")
    };
    let schema = json(&of(&schemas, "telemetry"));
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let bad = serde_json::json!({
        "type": "telemetry",
        "nodeId": "6f1c2b9e-8a4d-4c3e-9b7a-2d5e8f1a3c47",
        "timestamp": "2025-10-15T10:00:00Z"
    });
    assert!(!validator.is_valid(&bad));
    // And a message of another type.
    let ping = json(&of(&examples, "ping"));
    assert!(!validator.is_valid(&ping));
}

#[test]
fn the_asyncapi_document_names_every_message_and_its_schema() {
    let asyncapi = include_str!("../../spec/asyncapi.yaml");
    assert_eq!(
        asyncapi.lines().find(|l| !l.starts_with('#')),
        Some("asyncapi: 3.0.0")
    );
    for kind in all_message_types() {
        if OperatorMessage::TYPES.contains(&kind) {
            continue; // not on the agent channel
        }
        assert!(
            asyncapi.contains(&format!("$ref: './schemas/{kind}.json'")),
            "asyncapi.yaml lacks the payload of {kind}"
        );
        assert!(
            asyncapi.contains(&format!("name: {kind}\n")),
            "asyncapi.yaml lacks message {kind}"
        );
    }
}
