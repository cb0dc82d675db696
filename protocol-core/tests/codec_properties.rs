//! Properties of the codec over generated input.

use nap_core::wire::{AgentMessage, CentralMessage, OperatorMessage};
use nap_core::{Limits, Message, decode, encode};
use proptest::prelude::*;
use serde_json::Value;

fn roundtrips<M: Message + PartialEq + std::fmt::Debug>(message: &M) -> Result<(), TestCaseError> {
    let limits = Limits {
        max_message_bytes: usize::MAX,
        ..Limits::default()
    };
    let encoded = encode(message).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let decoded: M =
        decode(&encoded, &limits).map_err(|e| TestCaseError::fail(format!("{e}: {encoded}")))?;
    prop_assert_eq!(&decoded, message);
    prop_assert_eq!(
        encode(&decoded).map_err(|e| TestCaseError::fail(e.to_string()))?,
        encoded
    );
    Ok(())
}

/// Arbitrary JSON up to a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("telemetry"),
            Just("ping"),
            Just("execute"),
            Just("ack"),
            Just("uuid"),
            Just("6f1c2b9e-8a4d-4c3e-9b7a-2d5e8f1a3c47"),
            Just("2025-10-15T10:00:00Z"),
        ]
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("type".to_owned()),
                    Just("timestamp".to_owned()),
                    Just("requestId".to_owned()),
                    Just("data".to_owned()),
                    "[a-zA-Z]{1,8}",
                ],
                inner,
                0..8
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Decodes as both directions; the only requirement is that it returns.
fn decode_all(text: &str) {
    let limits = Limits::default();
    let _ = decode::<AgentMessage>(text, &limits);
    let _ = decode::<CentralMessage>(text, &limits);
    let _ = decode::<OperatorMessage>(text, &limits);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn agent_messages_round_trip(message in any::<AgentMessage>()) {
        roundtrips(&message)?;
    }

    #[test]
    fn central_messages_round_trip(message in any::<CentralMessage>()) {
        roundtrips(&message)?;
    }

    #[test]
    fn operator_messages_round_trip(message in any::<OperatorMessage>()) {
        roundtrips(&message)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = nap_core::codec::decode_bytes::<AgentMessage>(&bytes, &Limits::default());
        decode_all(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn arbitrary_json_never_panics_the_decoder(value in json_value()) {
        decode_all(&value.to_string());
    }

    #[test]
    fn a_mutated_valid_message_decodes_or_errors(
        message in any::<AgentMessage>(),
        cuts in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
    ) {
        let mut bytes = encode(&message).expect("encodes").into_bytes();
        for (at, byte, op) in cuts {
            if bytes.is_empty() { break; }
            let i = at.index(bytes.len());
            match op {
                0 => bytes[i] = byte,
                1 => { bytes.remove(i); }
                _ => bytes.insert(i, byte),
            }
        }
        // Whatever the mutation did, decoding answers: a message or an error.
        let outcome = nap_core::codec::decode_bytes::<AgentMessage>(&bytes, &Limits::default());
        if let Ok(decoded) = outcome {
            // Anything that decodes also re-encodes.
            prop_assert!(encode(&decoded).is_ok());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// `decode` reads a `type`-first frame on a fast path; any other key
    /// order takes the full path. Both must read the same message.
    #[test]
    fn key_order_does_not_change_the_message(message in any::<AgentMessage>()) {
        let encoded = encode(&message).expect("encodes");
        // serde_json's map is sorted, so `type` is usually no longer first.
        let value: Value = serde_json::from_str(&encoded).expect("JSON");
        let reordered = value.to_string();
        let limits = Limits::default();
        let fast: AgentMessage = decode(&encoded, &limits).expect("decodes");
        let slow: AgentMessage = decode(&reordered, &limits).expect("decodes");
        prop_assert_eq!(fast, slow);
    }
}

#[test]
fn a_second_type_key_is_refused_on_the_fast_path_too() {
    let limits = Limits::default();
    let text = r#"{"type":"ping","timestamp":1,"type":"pong"}"#;
    assert!(decode::<AgentMessage>(text, &limits).is_err());
}
