//! The JSON Schemas committed under `spec/schemas/` are exactly what the
//! Rust types generate. When a wire type changes, regenerate them with
//! `cargo run -p nap-tests --bin spec-gen` and commit the result.

use serde_json::Value;

/// Every committed schema, by file name, read from `spec/schemas/`.
fn committed() -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec/schemas");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("spec/schemas")
        .map(|entry| {
            let path = entry.expect("entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .expect("a name")
                .to_owned();
            let text = std::fs::read_to_string(&path).expect("readable");
            (name, text)
        })
        .filter(|(name, _)| name.ends_with(".json"))
        .collect();
    files.sort();
    files
}

#[test]
fn committed_schemas_match_the_types() {
    let mut generated = nap_core::schema::all();
    generated.sort_by(|a, b| a.0.cmp(&b.0));
    let committed = committed();
    let generated_names: Vec<&str> = generated.iter().map(|(n, _)| n.as_str()).collect();
    let committed_names: Vec<&str> = committed.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        generated_names, committed_names,
        "the set of schemas changed: run `cargo run -p nap-tests --bin spec-gen`"
    );
    for ((name, schema), (_, text)) in generated.iter().zip(&committed) {
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
            committed().iter().any(|(name, _)| *name == file),
            "no schema for message type {kind}"
        );
    }
}

#[test]
fn the_committed_asyncapi_document_is_the_generated_one() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec/asyncapi.yaml");
    let committed = std::fs::read_to_string(path).expect("spec/asyncapi.yaml");
    assert!(
        committed == nap_core::schema::asyncapi(),
        "spec/asyncapi.yaml drifted from the message tables: run `cargo run -p nap-tests --bin spec-gen`"
    );
}
