//! Spec §2: a member whose value is `null` is the member absent. Peers that
//! write `"args": null` or `"requiresApproval": null` are understood, and a
//! required member that is `null` is still refused as missing.

use nap_core::codec::{DecodeError, Limits, decode};
use nap_core::wire::{AgentMessage, CentralMessage};

#[test]
fn null_optional_members_decode_as_absent() {
    let text = r#"{"type":"execute","requestId":"10000000-0000-0000-0000-000000000001","command":"uptime","args":null,"requiresApproval":null,"timeout":null,"approver":null}"#;
    let Ok(CentralMessage::Execute(execute)) = decode::<CentralMessage>(text, &Limits::default())
    else {
        panic!("an execute with null members decodes");
    };
    assert!(execute.args.is_empty());
    assert!(!execute.requires_approval);
}

#[test]
fn null_members_inside_nested_objects_are_absent_too() {
    let mut value: serde_json::Value =
        serde_json::from_str(include_str!("../../spec/examples/telemetry.json")).expect("json");
    value["droppedSamples"] = serde_json::Value::Null;
    value["data"]["system"]["cpu"]["perCore"] = serde_json::Value::Null;
    value["data"]["containers"][0]["health"] = serde_json::Value::Null;
    let text = value.to_string();
    let decoded = decode::<AgentMessage>(&text, &Limits::default());
    let Ok(AgentMessage::Telemetry(t)) = decoded else {
        panic!("a telemetry with null members decodes: {decoded:?}");
    };
    assert_eq!(t.dropped_samples, 0);
    assert!(t.data.system.cpu.per_core.is_empty());
}

#[test]
fn a_required_member_that_is_null_is_still_refused() {
    let text =
        r#"{"type":"execute","requestId":"10000000-0000-0000-0000-000000000001","command":null}"#;
    let error = decode::<CentralMessage>(text, &Limits::default()).expect_err("refused");
    assert!(
        matches!(
            error,
            DecodeError::MissingField { .. } | DecodeError::InvalidValue { .. }
        ),
        "{error:?}"
    );
}
