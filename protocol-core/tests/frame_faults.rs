//! A frame the transport cannot read is answered with the close code RFC
//! 6455 names for it — 1009 for one over the size limit, 1007 for text that
//! is not UTF-8 — on both sides; the agent then backs off and reconnects.
//! A graceful stop says `offline` and closes with the engine's linger, so
//! the driver knows how long to let the last frames go out.

mod common;

use common::*;
use nap_core::Timestamp;
use nap_core::agent::{AgentEvent, AgentInput, AgentOutput, Disconnect};
use nap_core::central::{SessionConfig, SessionInput, SessionOutput};
use nap_core::transport::{CloseCode, FrameFault};
use nap_core::wire::{AgentMessage, NodeStatus};

/// Feeds the agent a fault on its live transport and returns the close it asks for.
fn close_after(world: &mut nap_core::testing::World, fault: FrameFault) -> Option<CloseCode> {
    let epoch = world.agents[0].engine.epoch();
    let now = world.now;
    let engine = &mut world.agents[0].engine;
    engine.handle_input(now, AgentInput::FrameFault { epoch, fault });
    std::iter::from_fn(|| engine.poll_output()).find_map(|o| match o {
        AgentOutput::Close { code, .. } => Some(code),
        _ => None,
    })
}

#[test]
fn a_frame_over_the_limit_from_central_is_closed_with_1009_and_the_agent_comes_back() {
    let mut world = connected(151);
    let before = world.agents[0].engine.epoch();
    let fault = FrameFault::TooLarge { size: 2 << 20 };
    assert_eq!(close_after(&mut world, fault), Some(CloseCode::TooBig));
    assert!(!established(&world, 0), "the connection is given up");
    assert!(world.run_until_true(secs(600), |w| established(w, 0)
        && w.agents[0].engine.epoch() > before));
}

#[test]
fn text_that_is_not_utf8_from_central_is_closed_with_1007() {
    let mut world = connected(152);
    assert_eq!(
        close_after(&mut world, FrameFault::NotUtf8),
        Some(CloseCode::InvalidPayload)
    );
    assert_eq!(CloseCode::InvalidPayload.as_u16(), 1007);
    assert_eq!(CloseCode::from(1007), CloseCode::InvalidPayload);
}

#[test]
fn the_agent_reports_why_it_closed() {
    let mut world = connected(153);
    let epoch = world.agents[0].engine.epoch();
    world.agent_input(
        0,
        AgentInput::FrameFault {
            epoch,
            fault: FrameFault::NotUtf8,
        },
    );
    assert!(world.agents[0].events.iter().any(|(_, e)| matches!(
        e,
        AgentEvent::Disconnected {
            reason: Disconnect::Fault(FrameFault::NotUtf8),
            ..
        }
    )));
}

#[test]
fn a_fault_on_a_stale_transport_changes_nothing() {
    let mut world = connected(154);
    let old = world.agents[0].engine.epoch();
    world.restart_central();
    assert!(world.run_until_true(secs(600), |w| established(w, 0)
        && w.agents[0].engine.epoch() > old));
    let current = world.agents[0].engine.epoch();
    world.agent_input(
        0,
        AgentInput::FrameFault {
            epoch: old,
            fault: FrameFault::NotUtf8,
        },
    );
    assert!(established(&world, 0));
    assert_eq!(world.agents[0].engine.epoch(), current);
}

#[test]
fn central_closes_a_session_that_sent_text_that_is_not_utf8_with_1007() {
    let mut s = open_session(SessionConfig::default());
    s.handle_input(Timestamp::from_secs(1), SessionInput::InvalidUtf8);
    let closes: Vec<_> = std::iter::from_fn(|| s.poll_output())
        .filter_map(|o| match o {
            SessionOutput::Close { code, .. } => Some(code),
            _ => None,
        })
        .collect();
    assert_eq!(closes, vec![CloseCode::InvalidPayload]);
    assert!(!s.is_open());
}

#[test]
fn a_graceful_stop_says_offline_then_closes_with_the_linger() {
    let mut world = connected(155);
    let now = world.now;
    let engine = &mut world.agents[0].engine;
    engine.handle_input(now, AgentInput::Shutdown);
    let outputs: Vec<_> = std::iter::from_fn(|| engine.poll_output()).collect();
    let offline = outputs.iter().position(|o| {
        matches!(o, AgentOutput::Send { message: AgentMessage::Status(s), .. } if s.status == NodeStatus::Offline)
    });
    let close = outputs.iter().position(|o| {
        matches!(o, AgentOutput::Close { code: CloseCode::Normal, linger, .. } if *linger == config(155).close_linger)
    });
    assert!(
        offline.is_some_and(|o| close.is_some_and(|c| o < c)),
        "offline, then the close: {outputs:?}"
    );
    assert!(!config(155).close_linger.is_zero());
}
