//! Every way a frame can be wrong gets its own error, saying what and where.

use nap_core::wire::{AgentMessage, CentralMessage, CpuMetrics, Telemetry};
use nap_core::{DecodeError, Limits, decode, encode};

fn agent(text: &str) -> Result<AgentMessage, DecodeError> {
    decode(text, &Limits::default())
}

fn central(text: &str) -> Result<CentralMessage, DecodeError> {
    decode(text, &Limits::default())
}

#[test]
fn a_message_over_the_size_limit_is_refused_before_parsing() {
    let limits = Limits {
        max_message_bytes: 64,
        ..Limits::default()
    };
    let text = format!(
        r#"{{"type":"ping","timestamp":1,"pad":"{}"}}"#,
        "x".repeat(64)
    );
    let err = decode::<AgentMessage>(&text, &limits).unwrap_err();
    assert_eq!(
        err,
        DecodeError::TooLarge {
            size: text.len(),
            limit: 64
        }
    );
    assert_eq!(err.kind(), "too_large");
}

#[test]
fn the_default_size_limit_is_one_mebibyte() {
    let text = format!(
        r#"{{"type":"ping","timestamp":1,"pad":"{}"}}"#,
        "x".repeat(1 << 20)
    );
    assert!(matches!(
        agent(&text),
        Err(DecodeError::TooLarge {
            limit: 1_048_576,
            ..
        })
    ));
}

#[test]
fn deep_nesting_is_refused_without_recursion() {
    let text = format!(
        r#"{{"type":"ping","timestamp":1,"x":{}{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert_eq!(agent(&text), Err(DecodeError::TooDeep { limit: 16 }));
    // Brackets inside strings are not nesting.
    let text = format!(
        r#"{{"type":"ping","timestamp":1,"x":"{}"}}"#,
        "[".repeat(100)
    );
    assert!(agent(&text).is_ok());
}

#[test]
fn text_that_is_not_json_says_where() {
    match agent("{\"type\": \"ping\",\n \"timestamp\": }") {
        Err(DecodeError::NotJson { line, column, .. }) => assert_eq!((line, column), (2, 15)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(agent("hello"), Err(DecodeError::NotJson { .. })));
    assert!(matches!(agent(""), Err(DecodeError::NotJson { .. })));
    assert!(matches!(
        agent(r#"{"type":"ping","timestamp":1} trailing"#),
        Err(DecodeError::NotJson { .. })
    ));
}

#[test]
fn json_that_is_not_an_object_is_refused() {
    assert_eq!(agent("[1,2]"), Err(DecodeError::NotAnObject));
    assert_eq!(agent("\"ping\""), Err(DecodeError::NotAnObject));
    assert_eq!(agent("42"), Err(DecodeError::NotAnObject));
}

#[test]
fn bytes_that_are_not_utf8_are_refused() {
    let err =
        nap_core::codec::decode_bytes::<AgentMessage>(b"{\"type\":\"\xff\"}", &Limits::default());
    assert_eq!(err, Err(DecodeError::NotUtf8 { valid_up_to: 9 }));
}

#[test]
fn a_missing_or_unknown_type_is_named() {
    assert_eq!(agent(r#"{"timestamp":1}"#), Err(DecodeError::MissingType));
    match agent(r#"{"type":"reboot"}"#) {
        Err(e @ DecodeError::UnknownType { .. }) => {
            let text = e.to_string();
            assert!(text.contains("\"reboot\""), "{text}");
            assert!(text.contains("telemetry"), "{text}");
        }
        other => panic!("{other:?}"),
    }
    match agent(r#"{"type":7}"#) {
        Err(DecodeError::InvalidValue { path, .. }) => assert_eq!(path, "$.type"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_message_of_the_other_direction_is_an_unknown_type() {
    // A node must never accept what only a node may send, and vice versa.
    assert!(matches!(
        central(r#"{"type":"token_refresh","token":"x"}"#),
        Err(DecodeError::UnknownType { .. })
    ));
    assert!(matches!(
        agent(
            r#"{"type":"execute","requestId":"6f1c2b9e-8a4d-4c3e-9b7a-2d5e8f1a3c47","command":"ls"}"#
        ),
        Err(DecodeError::UnknownType { .. })
    ));
}

#[test]
fn a_missing_field_is_named_with_its_path() {
    assert_eq!(
        agent(r#"{"type":"ping"}"#),
        Err(DecodeError::MissingField {
            path: "$.timestamp".into()
        })
    );
    let text = r#"{"type":"telemetry","nodeId":"6f1c2b9e-8a4d-4c3e-9b7a-2d5e8f1a3c47",
        "timestamp":"2025-10-15T10:00:00Z","data":{"system":{"cpu":{}}}}"#;
    assert_eq!(
        agent(text),
        Err(DecodeError::MissingField {
            path: "$.data.system.cpu.usage".into()
        })
    );
}

#[test]
fn a_bad_value_is_named_with_its_path() {
    let cases = [
        (r#"{"type":"ping","timestamp":-5}"#, "$.timestamp"),
        (r#"{"type":"ping","timestamp":"soon"}"#, "$.timestamp"),
        (
            r#"{"type":"status","nodeId":"not-a-uuid","status":"online","timestamp":"2025-10-15T10:00:00Z"}"#,
            "$.nodeId",
        ),
        (
            r#"{"type":"status","nodeId":"6f1c2b9e-8a4d-4c3e-9b7a-2d5e8f1a3c47","status":"sleepy","timestamp":"2025-10-15T10:00:00Z"}"#,
            "$.status",
        ),
        (
            r#"{"type":"status","nodeId":"6f1c2b9e-8a4d-4c3e-9b7a-2d5e8f1a3c47","status":"online","timestamp":"yesterday"}"#,
            "$.timestamp",
        ),
        (
            r#"{"type":"alert","severity":"panic","message":"x"}"#,
            "$.severity",
        ),
    ];
    for (text, expected) in cases {
        match agent(text) {
            Err(DecodeError::InvalidValue { path, reason }) => {
                assert_eq!(path, expected, "{text}: {reason}");
                assert!(!reason.is_empty());
            }
            other => panic!("{text}: {other:?}"),
        }
    }
}

#[test]
fn an_ack_must_name_exactly_one_thing() {
    assert!(matches!(
        central(r#"{"type":"ack"}"#),
        Err(DecodeError::InvalidValue { .. })
    ));
    assert!(matches!(
        central(
            r#"{"type":"ack","requestId":"6f1c2b9e-8a4d-4c3e-9b7a-2d5e8f1a3c47","telemetry":"2025-10-15T10:00:00Z"}"#
        ),
        Err(DecodeError::InvalidValue { .. })
    ));
}

#[test]
fn duplicate_fields_are_refused() {
    assert!(matches!(
        agent(r#"{"type":"ping","timestamp":1,"timestamp":2}"#),
        Err(DecodeError::InvalidValue { .. })
    ));
    assert!(agent(r#"{"type":"ping","type":"pong","timestamp":1}"#).is_err());
}

#[test]
fn unknown_fields_are_ignored_for_forward_compatibility() {
    assert!(agent(r#"{"type":"ping","timestamp":1,"addedInV2":{"x":[1]}}"#).is_ok());
}

#[test]
fn timestamps_in_other_offsets_are_read_as_utc_and_written_with_z() {
    let text = r#"{"type":"status","nodeId":"6f1c2b9e-8a4d-4c3e-9b7a-2d5e8f1a3c47","status":"online","timestamp":"2025-10-15T12:00:00+02:00"}"#;
    let message = agent(text).expect("valid");
    let encoded = encode(&message).expect("encodes");
    assert!(
        encoded.contains(r#""timestamp":"2025-10-15T10:00:00Z""#),
        "{encoded}"
    );
}

#[test]
fn a_non_finite_number_cannot_be_encoded() {
    let mut telemetry: Telemetry = match agent(include_str!("../../spec/examples/telemetry.json")) {
        Ok(AgentMessage::Telemetry(t)) => t,
        other => panic!("{other:?}"),
    };
    telemetry.data.system.cpu = CpuMetrics {
        usage: f64::NAN,
        per_core: vec![],
    };
    let err = encode(&AgentMessage::Telemetry(telemetry)).unwrap_err();
    assert!(err.to_string().contains("non-finite"), "{err}");
}

#[test]
fn encoding_is_compact_and_stable() {
    let text = r#"{ "type": "ping",  "timestamp": 1760522400000 }"#;
    let message = agent(text).expect("valid");
    assert_eq!(
        encode(&message).expect("encodes"),
        r#"{"type":"ping","timestamp":1760522400000}"#
    );
}
