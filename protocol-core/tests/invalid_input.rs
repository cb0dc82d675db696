//! Bad input from a peer is logged and ignored; a peer that keeps sending it
//! is closed with 1008, an oversize message with 1009; a node may only
//! speak for itself; nothing runs before `welcome`.

mod common;

use common::*;
use nap_core::agent::{AgentEvent, AgentInput};
use nap_core::central::{CentralSession, SessionConfig, SessionEvent, SessionInput, SessionOutput};
use nap_core::{NodeId, SessionId, Timestamp, WallTime};

fn session() -> CentralSession {
    let wall = WallTime::from_unix_millis(1_760_522_400_000).expect("valid");
    let mut s = CentralSession::new(
        Timestamp::ZERO,
        wall,
        nap_core::central::Admission {
            node_id: NODE,
            session_id: SessionId::from_u128(1),
            token_expires_at: wall.add_millis(3_600_000),
        },
        SessionConfig::default(),
    );
    while s.poll_output().is_some() {}
    s
}

fn outputs(s: &mut CentralSession) -> Vec<SessionOutput> {
    std::iter::from_fn(|| s.poll_output()).collect()
}

#[test]
fn garbage_is_ignored_until_the_threshold_then_closed_with_1008() {
    let mut s = session();
    let garbage = [
        "",
        "{",
        "[]",
        "null",
        r#"{"type":"reboot"}"#,
        r#"{"type":"ping"}"#,
        "\u{0}",
        "{}",
        "42",
        "\"x\"",
    ];
    for (i, text) in garbage.iter().enumerate() {
        s.handle_input(
            Timestamp::from_secs(u64::try_from(i).unwrap_or(0)),
            SessionInput::Frame((*text).into()),
        );
        let out = outputs(&mut s);
        assert!(
            matches!(
                out.as_slice(),
                [SessionOutput::Event(SessionEvent::Invalid { .. })]
            ),
            "{out:?}"
        );
    }
    assert!(s.is_open(), "ten are tolerated");
    s.handle_input(Timestamp::from_secs(11), SessionInput::Frame("nope".into()));
    let out = outputs(&mut s);
    assert!(
        out.iter().any(|o| matches!(
            o,
            SessionOutput::Close {
                code: nap_core::transport::CloseCode::Policy,
                ..
            }
        )),
        "{out:?}"
    );
    assert!(!s.is_open());
    assert_eq!(s.invalid_messages(), 11);
}

#[test]
fn invalid_messages_spread_over_time_are_tolerated() {
    let mut s = session();
    for minute in 0..30 {
        for k in 0..5 {
            s.handle_input(
                Timestamp::from_secs(minute * 61 + k),
                SessionInput::Frame("x".into()),
            );
        }
    }
    assert!(s.is_open());
}

#[test]
fn an_oversize_message_closes_with_1009() {
    let mut s = session();
    let big = format!(
        r#"{{"type":"ping","timestamp":1,"pad":"{}"}}"#,
        "x".repeat(2 << 20)
    );
    s.handle_input(Timestamp::from_secs(1), SessionInput::Frame(big));
    let out = outputs(&mut s);
    assert!(
        out.iter().any(|o| matches!(
            o,
            SessionOutput::Close {
                code: nap_core::transport::CloseCode::TooBig,
                ..
            }
        )),
        "{out:?}"
    );
}

#[test]
fn a_node_cannot_report_for_another_node() {
    let mut s = session();
    let other = NodeId::from_u128(42);
    let text = format!(
        r#"{{"type":"status","nodeId":"{other}","status":"offline","timestamp":"2025-10-15T10:00:00Z"}}"#
    );
    s.handle_input(Timestamp::from_secs(1), SessionInput::Frame(text));
    let out = outputs(&mut s);
    assert!(
        out.iter()
            .any(|o| matches!(o, SessionOutput::Event(SessionEvent::Refused { .. }))),
        "{out:?}"
    );
    assert!(!out.iter().any(|o| matches!(o, SessionOutput::ToHub(_))));
}

#[test]
fn a_binary_frame_is_invalid() {
    let mut s = session();
    s.handle_input(Timestamp::from_secs(1), SessionInput::BinaryFrame);
    assert!(matches!(
        outputs(&mut s).as_slice(),
        [SessionOutput::Event(SessionEvent::Invalid { .. })]
    ));
}

#[test]
fn a_flood_is_rate_limited_and_then_closed() {
    let mut s = session();
    let ping = r#"{"type":"ping","timestamp":1}"#;
    let mut limited = 0;
    for _ in 0..400 {
        s.handle_input(Timestamp::from_secs(1), SessionInput::Frame(ping.into()));
        limited += outputs(&mut s)
            .iter()
            .filter(|o| matches!(o, SessionOutput::Event(SessionEvent::RateLimited)))
            .count();
    }
    assert!(limited >= 11, "{limited}");
    assert!(!s.is_open(), "a flood is closed with 1008");
}

#[test]
fn nothing_runs_before_welcome_and_garbage_from_central_is_ignored() {
    let mut world = world(101);
    world.set_partitioned(true); // hold the dial: we play central by hand
    world.run_for(secs(1));
    let epoch = world.agents[0].engine.epoch();
    world.agent_input(0, AgentInput::Connected { epoch });
    let execute = r#"{"type":"execute","requestId":"10000000-0000-0000-0000-000000000001","command":"uptime"}"#;
    world.agent_input(
        0,
        AgentInput::Frame {
            epoch,
            text: execute.into(),
        },
    );
    world.agent_input(
        0,
        AgentInput::Frame {
            epoch,
            text: "garbage".into(),
        },
    );
    assert!(
        world.agents[0].runs.is_empty(),
        "nothing executes before the session is established"
    );
    let events = &world.agents[0].events;
    assert!(events.iter().any(|(_, e)| matches!(
        e,
        AgentEvent::Unexpected {
            message_type: "execute"
        }
    )));
    assert!(
        events
            .iter()
            .any(|(_, e)| matches!(e, AgentEvent::InvalidFrame { .. }))
    );
    assert_eq!(world.agents[0].engine.invalid_messages(), 2);
}

#[test]
fn an_execute_without_request_id_is_refused() {
    let mut world = connected(102);
    let epoch = world.agents[0].engine.epoch();
    let execute = r#"{"type":"execute","command":"uptime"}"#;
    world.agent_input(
        0,
        AgentInput::Frame {
            epoch,
            text: execute.into(),
        },
    );
    assert!(world.agents[0].runs.is_empty());
    assert!(world.agents[0].events.iter().any(|(_, e)| matches!(
        e,
        AgentEvent::CommandDecision {
            decision: nap_core::agent::Decision::Invalid(_),
            ..
        }
    )));
}

#[test]
fn commands_off_the_allow_list_are_blocked_and_audited() {
    let mut world = connected(103);
    let cases = [
        execute(request(1), "rm", &["-rf", "/"], None),
        execute(request(2), "echo", &["hello;", "reboot"], None),
        execute(request(3), "echo", &["$(reboot)"], None),
        execute(request(4), "uptime", &["extra"], None),
    ];
    for message in cases {
        world.submit(NODE, message, secs(30));
    }
    world.run_for(secs(1));
    assert!(world.agents[0].runs.is_empty());
    for n in 1..=4 {
        let result = &world.store.results[&request(n)];
        assert_eq!(
            result.error.as_ref().map(|e| e.code),
            Some(nap_core::wire::ErrorCode::Blocked),
            "{result:?}"
        );
    }
    let audited = world.agents[0]
        .events
        .iter()
        .filter(|(_, e)| {
            matches!(
                e,
                AgentEvent::CommandDecision {
                    decision: nap_core::agent::Decision::Blocked(_),
                    ..
                }
            )
        })
        .count();
    assert_eq!(audited, 4);
}
