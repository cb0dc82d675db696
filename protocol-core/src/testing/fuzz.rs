//! The bodies of the fuzz targets (`fuzz/`), here so that the workspace
//! tests replay the committed corpora and random cases on the stable
//! toolchain. Each takes raw bytes and panics only on a broken invariant.

use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};

use crate::agent::{AgentConfig, AgentEngine, AgentInput, AgentOutput, DialFailure};
use crate::central::{
    Audience, AuthPolicy, CentralSession, Claims, NodeLookup, SessionConfig, SessionInput,
    TokenCheck, auth,
};
use crate::codec::{Limits, decode, decode_bytes, encode};

use crate::wire::{AgentMessage, CentralMessage, OperatorMessage};
use crate::{NodeId, SessionId, Timestamp, WallTime};

/// The codec never panics, and what decodes re-encodes and decodes the same.
pub fn codec(data: &[u8]) {
    let limits = Limits::default();
    if let Ok(m) = decode_bytes::<AgentMessage>(data, &limits) {
        let text = encode(&m).expect("a decoded message encodes");
        assert_eq!(decode::<AgentMessage>(&text, &limits).as_ref(), Ok(&m));
    }
    if let Ok(m) = decode_bytes::<CentralMessage>(data, &limits) {
        let text = encode(&m).expect("a decoded message encodes");
        assert_eq!(decode::<CentralMessage>(&text, &limits).as_ref(), Ok(&m));
    }
    let _ = decode_bytes::<OperatorMessage>(data, &limits);
}

#[derive(Debug, Arbitrary)]
enum AgentStep {
    Advance(u16),
    Connected,
    DialFailed(u8),
    Closed(Option<u16>),
    Frame(String),
    Welcome,
    Execute(u8, String),
    Ack(u8),
    Sample,
    Finished(u8),
    Shutdown,
}

/// The agent engine, fed arbitrary input: no panic, no timer in the past,
/// bounded outputs and buffers.
pub fn agent_engine(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let node = NodeId::from_u128(1);
    let mut engine = AgentEngine::new(AgentConfig::new(node, 1));
    let mut now = Timestamp::ZERO;
    engine.handle_input(now, AgentInput::WallClock(WallTime::UNIX_EPOCH));
    engine.handle_input(now, AgentInput::Start);
    let mut steps = 0;
    while let Ok(step) = AgentStep::arbitrary(&mut u) {
        steps += 1;
        if steps > 500 {
            break;
        }
        let epoch = engine.epoch();
        let input = match step {
            AgentStep::Advance(ms) => {
                now = now + Duration::from_millis(u64::from(ms) * 100);
                engine.handle_timeout(now);
                None
            }
            AgentStep::Connected => Some(AgentInput::Connected { epoch }),
            AgentStep::DialFailed(k) => Some(AgentInput::DialFailed {
                epoch,
                reason: match k % 3 {
                    0 => DialFailure::Network,
                    1 => DialFailure::Unauthorized,
                    _ => DialFailure::Unavailable {
                        retry_after: Duration::from_secs(u64::from(k)),
                    },
                },
            }),
            AgentStep::Closed(code) => Some(AgentInput::Closed { epoch, code }),
            AgentStep::Frame(text) => Some(AgentInput::Frame { epoch, text }),
            AgentStep::Welcome => Some(AgentInput::Frame {
                epoch,
                text: format!(
                    r#"{{"type":"welcome","protocolVersion":"nap.v1","sessionId":"{}","nodeId":"{node}","serverTime":"2025-10-15T10:00:00Z","intervals":{{"heartbeat":30000,"telemetry":60000,"health":300000}},"maxMessageBytes":1048576}}"#,
                    SessionId::from_u128(1)
                ),
            }),
            AgentStep::Execute(id, command) => Some(AgentInput::Frame {
                epoch,
                text: serde_json::json!({"type": "execute", "requestId": crate::RequestId::from_u128(u128::from(id)), "command": command})
                    .to_string(),
            }),
            AgentStep::Ack(id) => Some(AgentInput::Frame {
                epoch,
                text: serde_json::json!({"type": "ack", "requestId": crate::RequestId::from_u128(u128::from(id))}).to_string(),
            }),
            AgentStep::Sample => Some(AgentInput::TelemetrySample(super::sample(50.0, 50.0))),
            AgentStep::Finished(id) => Some(AgentInput::CommandFinished {
                request_id: crate::RequestId::from_u128(u128::from(id)),
                outcome: Default::default(),
            }),
            AgentStep::Shutdown => Some(AgentInput::Shutdown),
        };
        if let Some(input) = input {
            engine.handle_input(now, input);
        }
        let mut outputs = 0;
        while let Some(output) = engine.poll_output() {
            outputs += 1;
            if let AgentOutput::MintToken = output {
                engine.handle_input(
                    now,
                    AgentInput::TokenMinted {
                        token: "t".into(),
                        lifetime: Duration::from_secs(3600),
                    },
                );
            }
        }
        assert!(outputs < 10_000, "{outputs} outputs for one input");
        assert!(
            engine.timers().all(|(_, at)| at >= now),
            "a timer armed in the past"
        );
        assert!(engine.buffered_telemetry() <= 1440 && engine.outbox_len() <= 1000);
    }
}

/// A central session fed arbitrary frames and time: no panic, bounded
/// outputs, nothing armed once closed.
pub fn central_session(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let wall = WallTime::from_unix_millis(1_760_522_400_000).unwrap_or(WallTime::UNIX_EPOCH);
    let mut s = CentralSession::new(
        Timestamp::ZERO,
        wall,
        NodeId::from_u128(1),
        SessionId::from_u128(1),
        wall.add_millis(3_600_000),
        SessionConfig::default(),
    );
    let mut now = Timestamp::ZERO;
    for _ in 0..500 {
        let Ok((advance, text)) = <(u16, String)>::arbitrary(&mut u) else {
            break;
        };
        now = now + Duration::from_millis(u64::from(advance));
        s.handle_timeout(now);
        s.handle_input(now, SessionInput::Frame(text));
        let mut outputs = 0;
        while s.poll_output().is_some() {
            outputs += 1;
        }
        assert!(outputs < 16, "{outputs} outputs for one frame");
        if !s.is_open() {
            assert_eq!(s.poll_timeout(), None);
        }
    }
}

/// Token checks on arbitrary claims never panic, and what passes obeys the rules.
pub fn claims(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok((alg, iss, sub, aud, iat, exp, jti, scope, valid)) = <(
        String,
        String,
        String,
        String,
        i64,
        i64,
        String,
        String,
        bool,
    )>::arbitrary(&mut u) else {
        return;
    };
    let now = WallTime::from_unix_millis(1_760_522_400_000).unwrap_or(WallTime::UNIX_EPOCH);
    let check = TokenCheck {
        alg,
        claims: Some(Claims {
            iss,
            sub,
            aud: Audience::One(aud),
            iat,
            exp,
            jti,
            scope,
        }),
        node: NodeLookup::Active,
        signature_valid: valid,
    };
    if let Ok(token) = auth::check_token(&AuthPolicy::new("nap-central"), now, &check) {
        let c = check.claims.as_ref().expect("claims");
        assert!(valid && check.alg == "EdDSA" && c.scope == "node" && c.iss == c.sub);
        assert!(c.exp - c.iat <= 3600 && c.exp > now.unix_seconds() - 60);
        assert_eq!(token.node_id.to_string(), c.sub.to_lowercase());
    }
}

/// The allow-list matcher and the branch validator on arbitrary input.
pub fn policy(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok((command, args, branch)) = <(String, Vec<String>, String)>::arbitrary(&mut u) else {
        return;
    };
    let mut p = crate::policy::Policy::deny_all();
    p.allow(
        "echo",
        crate::policy::CommandRule {
            program: "/bin/echo".into(),
            args: crate::policy::ArgRules::Variadic {
                fixed: vec![],
                rest: crate::policy::ArgRule::Pattern(
                    crate::policy::AnchoredPattern::new("[a-z0-9.-]{1,32}").expect("valid"),
                ),
                max: 4,
            },
            max_timeout: Duration::from_secs(10),
            env: Default::default(),
        },
    );
    if let Ok(approved) = p.check_execute(&command, &args, None) {
        assert_eq!(command, "echo");
        assert!(
            approved
                .args
                .iter()
                .all(|a| !a.contains([';', '$', '`', ' ', '\0']))
        );
    }
    if crate::policy::validate_branch(&branch).is_ok() {
        assert!(!branch.starts_with('-') && !branch.contains("..") && !branch.is_empty());
    }
}

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// Every target, by name (for the replay test and `fuzz/run.sh`).
pub const TARGETS: &[(&str, Target)] = &[
    ("codec", codec),
    ("agent_engine", agent_engine),
    ("central_session", central_session),
    ("claims", claims),
    ("policy", policy),
];
