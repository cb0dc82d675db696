//! Decisions that central's driver used to make and the engines make now:
//! a frame the transport refused as too big closes with 1009, a critical
//! alert that fires tells an administrator, a stored command that no longer
//! decodes is failed through the hub, and a closing session waits for the
//! node's close frame as long as its configuration says.

mod common;

use std::time::Duration;

use common::*;
use nap_core::central::{
    Admission, Alarm, CentralSession, CommandState, HubInput, SessionConfig, SessionInput,
    SessionOutput, Submission,
};
use nap_core::testing::World;
use nap_core::transport::CloseCode;
use nap_core::wire::{Alert, AlertState, Severity};
use nap_core::{SessionId, Timestamp, WallTime};

fn session(config: SessionConfig) -> CentralSession {
    let wall = WallTime::from_unix_millis(1_760_522_400_000).expect("valid");
    let admission = Admission {
        node_id: NODE,
        session_id: SessionId::from_u128(1),
        token_expires_at: wall.add_millis(3_600_000),
    };
    let mut s = CentralSession::new(Timestamp::ZERO, wall, admission, config);
    while s.poll_output().is_some() {}
    s
}

fn outputs(s: &mut CentralSession) -> Vec<SessionOutput> {
    std::iter::from_fn(|| s.poll_output()).collect()
}

#[test]
fn a_frame_the_transport_refused_as_too_big_closes_with_1009_after_the_configured_linger() {
    let config = SessionConfig {
        close_linger: Duration::from_millis(750),
        ..SessionConfig::default()
    };
    let mut s = session(config);
    s.handle_input(
        Timestamp::from_secs(1),
        SessionInput::FrameTooLarge { size: 5 << 20 },
    );
    let out = outputs(&mut s);
    assert!(
        out.iter().any(|o| matches!(
            o,
            SessionOutput::Close {
                code: CloseCode::TooBig,
                linger,
                ..
            } if *linger == Duration::from_millis(750)
        )),
        "{out:?}"
    );
    assert!(!s.is_open());
}

#[test]
fn a_critical_alert_that_fires_tells_an_administrator_and_is_kept() {
    let mut world = connected(131);
    let firing = |state| Alert {
        severity: Severity::Critical,
        message: "disk full".into(),
        data: nap_core::wire::AlertData::default(),
        rule: Some("disk".into()),
        state,
        timestamp: None,
        alert_id: None,
    };
    for alert in [firing(AlertState::Firing), firing(AlertState::Resolved)] {
        let frame = nap_core::encode(&nap_core::wire::AgentMessage::Alert(alert)).expect("json");
        world.frame_to_central(0, &frame);
    }
    world.run_for(secs(1));
    let alarms: Vec<&Alarm> = world
        .store
        .alarms
        .iter()
        .filter(|a| matches!(a, Alarm::CriticalAlert { .. }))
        .collect();
    assert_eq!(alarms.len(), 1, "only the firing one: {alarms:?}");
    let kept = world
        .store
        .records
        .iter()
        .filter(|(_, m)| matches!(m, nap_core::wire::AgentMessage::Alert(_)))
        .count();
    assert_eq!(kept, 2, "both are kept");
}

#[test]
fn a_stored_command_that_no_longer_decodes_is_failed_by_the_hub() {
    let mut world = World::new(132);
    let request_id = request(9);
    world.hub_input(HubInput::Submit(vec![Submission {
        node_id: NODE,
        request_id,
        message: None,
        timeout: secs(30),
        known: true,
        approval: None,
    }]));
    assert_eq!(
        world.store.command_states[&request_id],
        vec![CommandState::Failed]
    );
}
