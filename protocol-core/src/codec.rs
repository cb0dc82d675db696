//! Text ⇄ message.
//!
//! [`decode`] reads one WebSocket text frame into a typed message of one
//! direction, or says precisely what was wrong with it. It never panics and
//! bounds its work by the size and nesting limits before parsing. [`encode`]
//! writes a message deterministically: the same message always gives the
//! same bytes (fields in declaration order, maps sorted, shortest floats).

use std::borrow::Cow;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// One direction's message enum.
pub trait Message: Serialize + Sized {
    /// Every `type` value of this direction.
    const TYPES: &'static [&'static str];

    /// This message's `type`.
    fn message_type(&self) -> &'static str;

    /// Decodes the body of a message whose `type` is `message_type`.
    /// Use [`decode`], which checks the limits and the tag first.
    #[doc(hidden)]
    fn decode_body(message_type: &str, text: &str) -> Result<Self, DecodeError>;
}

/// Bounds on what [`decode`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limits {
    /// Largest message in bytes.
    pub max_message_bytes: usize,
    /// Deepest nesting of objects and arrays.
    pub max_depth: usize,
}

impl Limits {
    /// 1 MiB.
    pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1 << 20;
    /// Deeper than any message of the protocol needs (telemetry is 5 levels).
    pub const DEFAULT_MAX_DEPTH: usize = 16;
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: Self::DEFAULT_MAX_MESSAGE_BYTES,
            max_depth: Self::DEFAULT_MAX_DEPTH,
        }
    }
}

/// Why a frame is not a message. Each variant says where and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message is {size} bytes, over the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("message nests deeper than {limit} levels")]
    TooDeep { limit: usize },
    #[error("message is not UTF-8 (valid up to byte {valid_up_to})")]
    NotUtf8 { valid_up_to: usize },
    #[error("not JSON: {reason} at line {line} column {column}")]
    NotJson {
        reason: String,
        line: usize,
        column: usize,
    },
    #[error("message is not a JSON object")]
    NotAnObject,
    #[error("message has no \"type\" field")]
    MissingType,
    #[error("unknown message type {found:?}; expected one of {}", expected.join(", "))]
    UnknownType {
        found: String,
        expected: &'static [&'static str],
    },
    #[error("missing field {path}")]
    MissingField { path: String },
    #[error("bad value at {path}: {reason}")]
    InvalidValue { path: String, reason: String },
}

impl DecodeError {
    /// Refused because a member was `null` where its type has no `null`.
    fn is_null_value(&self) -> bool {
        matches!(self, Self::InvalidValue { reason, .. } if reason.starts_with("invalid type: null"))
    }

    /// A short stable name, for metrics labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "too_large",
            Self::TooDeep { .. } => "too_deep",
            Self::NotUtf8 { .. } => "not_utf8",
            Self::NotJson { .. } => "not_json",
            Self::NotAnObject => "not_an_object",
            Self::MissingType => "missing_type",
            Self::UnknownType { .. } => "unknown_type",
            Self::MissingField { .. } => "missing_field",
            Self::InvalidValue { .. } => "invalid_value",
        }
    }
}

/// A message that cannot be written, such as a sample holding NaN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot encode message: {0}")]
pub struct EncodeError(String);

/// Decodes one text frame into a message of direction `M`.
pub fn decode<M: Message>(text: &str, limits: &Limits) -> Result<M, DecodeError> {
    if text.len() > limits.max_message_bytes {
        return Err(DecodeError::TooLarge {
            size: text.len(),
            limit: limits.max_message_bytes,
        });
    }
    check_depth(text.as_bytes(), limits.max_depth)?;
    match decode_members::<M>(text) {
        // Spec §2: a member that is `null` is the member absent. Only a
        // frame refused for a `null` where a value must be pays for a
        // second pass (any other refusal, a duplicate key say, stands).
        Err(error) if error.is_null_value() => match without_nulls(text) {
            Some(clean) => decode_members::<M>(&clean).map_err(|_| error),
            None => Err(error),
        },
        decoded => decoded,
    }
}

fn decode_members<M: Message>(text: &str) -> Result<M, DecodeError> {
    if let Some(message_type) = leading_type(text) {
        return M::decode_body(message_type, text);
    }
    let message_type = read_type(text)?;
    M::decode_body(&message_type, text)
}

/// `text` with every object member whose value is `null` removed, at any
/// depth (a `null` element of an array is a value, not a member, and stays).
fn without_nulls(text: &str) -> Option<String> {
    fn strip(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(members) => {
                members.retain(|_, v| !v.is_null());
                members.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut value: serde_json::Value = serde_json::from_str(text).ok()?;
    strip(&mut value);
    serde_json::to_string(&value).ok()
}

/// Like [`decode`], for a frame that arrived as bytes.
pub fn decode_bytes<M: Message>(bytes: &[u8], limits: &Limits) -> Result<M, DecodeError> {
    if bytes.len() > limits.max_message_bytes {
        return Err(DecodeError::TooLarge {
            size: bytes.len(),
            limit: limits.max_message_bytes,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| DecodeError::NotUtf8 {
        valid_up_to: e.valid_up_to(),
    })?;
    decode(text, limits)
}

/// Encodes a message. The output is a pure function of the message.
pub fn encode<M: Message>(message: &M) -> Result<String, EncodeError> {
    serde_json::to_string(message).map_err(|e| EncodeError(e.to_string()))
}

/// Refuses input nested deeper than `limit` before any parser recurses into
/// it. A linear scan that only tracks strings and brackets.
fn check_depth(bytes: &[u8], limit: usize) -> Result<(), DecodeError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > limit {
                    return Err(DecodeError::TooDeep { limit });
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// The fast path for what [`encode`] writes: `type` as the first key, with
/// no other `"type"` anywhere after it (a second one would be a duplicate key,
/// which the full first pass refuses). The body decode then checks the rest.
fn leading_type(text: &str) -> Option<&str> {
    const PREFIX: &str = "{\"type\":\"";
    let rest = text.strip_prefix(PREFIX)?;
    let end = rest.find('"')?;
    let (tag, after) = rest.split_at(end);
    let plain = tag.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    (plain && !after.contains("\"type\"")).then_some(tag)
}

/// The first pass: the whole text must be one JSON object; returns its `type`.
fn read_type(text: &str) -> Result<Cow<'_, str>, DecodeError> {
    #[derive(Deserialize)]
    struct Envelope<'a> {
        #[serde(rename = "type", borrow, default)]
        kind: Option<Cow<'a, str>>,
    }

    let starts_object = text.trim_start().starts_with('{');
    if !starts_object {
        // Tell "not JSON at all" from "JSON, but not an object".
        return Err(match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Ok(_) => DecodeError::NotAnObject,
            Err(e) => not_json(&e),
        });
    }
    let envelope: Envelope<'_> = serde_json::from_str(text).map_err(|e| {
        if e.is_data() {
            DecodeError::InvalidValue {
                path: "$.type".into(),
                reason: strip_position(&e),
            }
        } else {
            not_json(&e)
        }
    })?;
    envelope.kind.ok_or(DecodeError::MissingType)
}

/// The second pass: the body as the type its tag names, with the path of any
/// field that does not fit.
pub(crate) fn decode_body<T: DeserializeOwned>(text: &str) -> Result<T, DecodeError> {
    // The fast path: most frames are valid, and tracking the path costs.
    if let Ok(body) = serde_json::from_str(text) {
        return Ok(body);
    }
    // Decode again, tracking where it fails, to say so.
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let body = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = json_path(e.path());
        let inner = e.into_inner();
        if !inner.is_data() {
            return not_json(&inner);
        }
        let reason = strip_position(&inner);
        match reason
            .strip_prefix("missing field `")
            .and_then(|rest| rest.strip_suffix('`'))
        {
            Some(field) if path == "$" => DecodeError::MissingField {
                path: format!("$.{field}"),
            },
            Some(field) => DecodeError::MissingField {
                path: format!("{path}.{field}"),
            },
            None => DecodeError::InvalidValue { path, reason },
        }
    })?;
    // Only trailing characters are left to fail on.
    deserializer.end().map_err(|e| not_json(&e))?;
    Ok(body)
}

fn json_path(path: &serde_path_to_error::Path) -> String {
    let rendered = path.to_string();
    if rendered == "." {
        "$".to_owned()
    } else {
        format!("$.{rendered}")
    }
}

fn not_json(e: &serde_json::Error) -> DecodeError {
    DecodeError::NotJson {
        reason: strip_position(e),
        line: e.line(),
        column: e.column(),
    }
}

/// serde_json appends " at line L column C" to its messages; the position is
/// carried separately.
fn strip_position(e: &serde_json::Error) -> String {
    let message = e.to_string();
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message,
    }
}

impl fmt::Display for Limits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "at most {} bytes, {} levels deep",
            self.max_message_bytes, self.max_depth
        )
    }
}
