//! JSON Schemas of the wire types, as committed under `spec/schemas/`.
//!
//! One schema per message type (the message's struct with its `type`
//! constant) and one per direction (every message of that direction).

use schemars::{JsonSchema, generate::SchemaSettings};
use serde_json::{Value, json};

use crate::wire::*;

/// `(file name, schema)` for every schema under `spec/schemas/`, in a fixed order.
pub fn all() -> Vec<(String, Value)> {
    let mut out = vec![
        direction::<AgentMessage>("agent-to-central", "Every message a node sends to central."),
        direction::<CentralMessage>("central-to-agent", "Every message central sends to a node."),
        direction::<OperatorMessage>("operator-to-central", "Operator requests to central."),
    ];
    // One per message type, from the direction tables in `wire` (a type
    // that travels both ways, like `ping`, once).
    let mut messages = Schemas(Vec::new());
    AgentMessage::visit_types(&mut messages);
    CentralMessage::visit_types(&mut messages);
    OperatorMessage::visit_types(&mut messages);
    out.extend(messages.0);
    out
}

fn settings() -> SchemaSettings {
    SchemaSettings::draft2020_12()
}

fn direction<T: JsonSchema>(name: &str, description: &str) -> (String, Value) {
    let mut schema = settings()
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value();
    schema["$id"] = json!(format!("https://nap.invalid/schemas/{name}.json"));
    schema["description"] = json!(description);
    (format!("{name}.json"), schema)
}

/// Collects one schema per message type.
struct Schemas(Vec<(String, Value)>);

impl MessageTypes for Schemas {
    fn visit<T: JsonSchema>(&mut self, tag: &'static str) {
        let name = format!("{tag}.json");
        if !self.0.iter().any(|(n, _)| *n == name) {
            self.0.push(message::<T>(tag));
        }
    }
}

fn message<T: JsonSchema>(tag: &str) -> (String, Value) {
    let mut schema = settings()
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value();
    schema["$id"] = json!(format!("https://nap.invalid/schemas/{tag}.json"));
    schema["title"] = json!(tag);
    if let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        let mut with_type = serde_json::Map::new();
        with_type.insert("type".into(), json!({ "type": "string", "const": tag }));
        with_type.extend(std::mem::take(properties));
        *properties = with_type;
    }
    let required = schema
        .as_object_mut()
        .map(|o| o.entry("required").or_insert_with(|| json!([])));
    if let Some(Value::Array(required)) = required {
        required.insert(0, json!("type"));
    }
    (format!("{tag}.json"), schema)
}
