//! Every literal example of the seed document decodes into the message type
//! it illustrates, and no field of it is lost on the way back out.
//!
//! The examples are read from `spec/seed/node-agent-protocol.md` (a copy of
//! the seed) by a small reader of its TypeScript-style object literals. Only
//! the seed's placeholders are filled in: `'uuid'` becomes a UUID,
//! `Date.now()` a millisecond timestamp, `{ ... }` and `[ ... ]` a valid value
//! for that field, and a union `'a' | 'b'` is read as its first member.

use nap_core::wire::{AgentMessage, CentralMessage, OperatorMessage};
use nap_core::{Limits, Message, decode, encode};
use serde_json::{Map, Value, json};

const SEED: &str = include_str!("../../spec/seed/node-agent-protocol.md");

#[test]
fn every_seed_example_decodes_into_its_type() {
    let examples = seed_examples();
    assert_eq!(
        examples.len(),
        17,
        "the seed has 17 message literals; the reader found {}",
        examples.len()
    );
    for example in &examples {
        let kind = example["type"].as_str().expect("every example has a type");
        let text = example.to_string();
        let reencoded = if AgentMessage::TYPES.contains(&kind) {
            roundtrip::<AgentMessage>(kind, &text)
        } else if CentralMessage::TYPES.contains(&kind) {
            roundtrip::<CentralMessage>(kind, &text)
        } else if OperatorMessage::TYPES.contains(&kind) {
            roundtrip::<OperatorMessage>(kind, &text)
        } else {
            panic!("seed example of unknown type {kind}: {text}");
        };
        assert_fields_kept(example, &reencoded, "$");
    }
}

#[test]
fn the_seed_examples_cover_every_seed_message_type() {
    let mut seen: Vec<String> = seed_examples()
        .iter()
        .map(|e| e["type"].as_str().unwrap_or_default().to_owned())
        .collect();
    seen.sort();
    seen.dedup();
    let expected = [
        "alert",
        "broadcast",
        "command_result",
        "deploy",
        "execute",
        "execute_approved",
        "health",
        "health_check",
        "log_line",
        "ping",
        "status",
        "stream_logs",
        "telemetry",
        "update_agent",
    ];
    assert_eq!(seen, expected);
}

fn roundtrip<M: Message>(kind: &str, text: &str) -> Value {
    let message: M = decode(text, &Limits::default())
        .unwrap_or_else(|e| panic!("seed {kind} example does not decode: {e}\n{text}"));
    assert_eq!(message.message_type(), kind);
    let encoded = encode(&message).expect("a decoded message encodes");
    serde_json::from_str(&encoded).expect("encode writes JSON")
}

/// Every field of `seed` is present in `ours` with the same value (numbers
/// compared as numbers: the seed writes `95` where we write `95.0`).
fn assert_fields_kept(seed: &Value, ours: &Value, path: &str) {
    match (seed, ours) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let theirs = b
                    .get(key)
                    .unwrap_or_else(|| panic!("{path}.{key} was lost in decoding: {ours}"));
                assert_fields_kept(value, theirs, &format!("{path}.{key}"));
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "{path}: array length changed");
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert_fields_kept(x, y, &format!("{path}[{i}]"));
            }
        }
        (Value::Number(a), Value::Number(b)) => {
            assert_eq!(a.as_f64(), b.as_f64(), "{path}: number changed");
        }
        _ => assert_eq!(seed, ours, "{path}: value changed"),
    }
}

/// The object literals of the seed's ```typescript blocks, placeholders filled.
fn seed_examples() -> Vec<Value> {
    let mut out = Vec::new();
    let mut rest = SEED;
    while let Some(start) = rest.find("```typescript") {
        let block = &rest[start + "```typescript".len()..];
        let end = block.find("```").expect("code block is closed");
        let mut reader = Reader::new(&block[..end]);
        while let Some(value) = reader.next_literal() {
            out.push(fill_placeholders(value, None));
        }
        rest = &block[end + 3..];
    }
    out
}

const PLACEHOLDER: &str = "<placeholder>";

fn fill_placeholders(value: Value, key: Option<&str>) -> Value {
    match value {
        Value::String(s) if s == PLACEHOLDER => match key {
            Some("system") => json!({
                "cpu": { "usage": 12.5 },
                "load": [0.1, 0.2, 0.3],
                "memory": { "total": 1024, "used": 512 },
                "swap": { "total": 0, "used": 0 },
                "disks": [],
                "network": { "rxBytesPerSec": 0, "txBytesPerSec": 0 },
                "uptime": 60,
                "processes": 10
            }),
            Some("containers") => json!([]),
            Some("application") => json!({ "status": "up" }),
            Some("details") => json!({}),
            other => panic!("no filling for a placeholder at {other:?}"),
        },
        Value::String(s) if s == "uuid" => json!("6f1c2b9e-8a4d-4c3e-9b7a-2d5e8f1a3c47"),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let filled = fill_placeholders(v, Some(&k));
                    (k, filled)
                })
                .collect::<Map<_, _>>(),
        ),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|v| fill_placeholders(v, key))
                .collect(),
        ),
        other => other,
    }
}

/// A reader for the seed's object literal dialect: unquoted keys,
/// single-quoted strings, `//` comments, unions, `...` and `Date.now()`.
struct Reader<'a> {
    text: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            text: text.as_bytes(),
            at: 0,
        }
    }

    fn next_literal(&mut self) -> Option<Value> {
        self.skip();
        (self.at < self.text.len()).then(|| self.value())
    }

    fn peek(&self) -> u8 {
        self.text.get(self.at).copied().unwrap_or(0)
    }

    fn rest(&self) -> &[u8] {
        &self.text[self.at..]
    }

    fn skip(&mut self) {
        loop {
            while self.peek().is_ascii_whitespace() {
                self.at += 1;
            }
            if self.rest().starts_with(b"//") {
                while self.at < self.text.len() && self.peek() != b'\n' {
                    self.at += 1;
                }
            } else {
                return;
            }
        }
    }

    fn expect(&mut self, byte: u8) {
        self.skip();
        assert_eq!(
            self.peek() as char,
            byte as char,
            "seed reader at byte {}",
            self.at
        );
        self.at += 1;
    }

    /// A value, reading a union as its first member.
    fn value(&mut self) -> Value {
        let first = self.single();
        loop {
            self.skip();
            if self.peek() != b'|' {
                return first;
            }
            self.at += 1;
            self.single();
        }
    }

    fn single(&mut self) -> Value {
        self.skip();
        match self.peek() {
            b'{' => self.object(),
            b'[' => self.array(),
            b'\'' | b'"' => Value::String(self.string()),
            b'-' | b'0'..=b'9' => self.number(),
            _ => {
                let word = self.word();
                match word.as_str() {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    "Date.now" => {
                        self.expect(b'(');
                        self.expect(b')');
                        json!(1_760_522_400_000u64)
                    }
                    other => panic!("seed reader: unexpected {other:?} at byte {}", self.at),
                }
            }
        }
    }

    /// `{ ... }` and `[ ... ]` are placeholders; otherwise a literal.
    fn object(&mut self) -> Value {
        self.expect(b'{');
        self.skip();
        if self.rest().starts_with(b"...") {
            self.at += 3;
            self.expect(b'}');
            return json!(PLACEHOLDER);
        }
        let mut map = Map::new();
        loop {
            self.skip();
            if self.peek() == b'}' {
                self.at += 1;
                return Value::Object(map);
            }
            let key = match self.peek() {
                b'\'' | b'"' => self.string(),
                _ => self.word(),
            };
            self.expect(b':');
            let value = self.value();
            map.insert(key, value);
            self.skip();
            if self.peek() == b',' {
                self.at += 1;
            }
        }
    }

    fn array(&mut self) -> Value {
        self.expect(b'[');
        self.skip();
        if self.rest().starts_with(b"...") {
            self.at += 3;
            self.expect(b']');
            return json!(PLACEHOLDER);
        }
        let mut items = Vec::new();
        loop {
            self.skip();
            if self.peek() == b']' {
                self.at += 1;
                return Value::Array(items);
            }
            items.push(self.value());
            self.skip();
            if self.peek() == b',' {
                self.at += 1;
            }
        }
    }

    fn string(&mut self) -> String {
        let quote = self.peek();
        self.at += 1;
        let start = self.at;
        while self.peek() != quote {
            assert!(self.at < self.text.len(), "unterminated string in seed");
            self.at += 1;
        }
        let s = String::from_utf8_lossy(&self.text[start..self.at]).into_owned();
        self.at += 1;
        s
    }

    fn number(&mut self) -> Value {
        let start = self.at;
        while matches!(self.peek(), b'-' | b'.' | b'0'..=b'9') {
            self.at += 1;
        }
        let text = std::str::from_utf8(&self.text[start..self.at]).expect("ascii digits");
        serde_json::from_str(text).expect("a seed number")
    }

    fn word(&mut self) -> String {
        let start = self.at;
        while matches!(self.peek(), b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.') {
            self.at += 1;
        }
        assert!(
            self.at > start,
            "seed reader: expected a word at byte {start}"
        );
        String::from_utf8_lossy(&self.text[start..self.at]).into_owned()
    }
}
