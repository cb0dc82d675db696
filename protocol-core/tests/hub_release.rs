//! Scale-out: when another central instance claims a node, this instance's
//! hub lets it go — its session closes with 4002, its open commands are
//! forgotten without a state change (the new holder reports them), and no
//! status is written (the new holder writes `online`).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use nap_core::central::{CentralHub, CommandState, HubConfig, HubOutput, NodeLookup};
use nap_core::testing::tokens;
use nap_core::wire::{CentralMessage, HealthCheck, NodeStatus};
use nap_core::{SessionId, Timestamp, TokenId, WallTime};

const START: i64 = 1_750_000_000;

fn hub() -> CentralHub {
    let mut hub = CentralHub::new(HubConfig::new(tokens::AUDIENCE));
    hub.set_wall_clock(
        Timestamp::ZERO,
        WallTime::from_unix_millis(START * 1000).expect("valid"),
    );
    hub
}

fn session(n: u128) -> SessionId {
    SessionId::from_u128(n)
}

/// Admits NODE on `session_id` and opens the session.
fn admit(hub: &mut CentralHub, session_id: SessionId, jti: u128) {
    let registry = BTreeMap::from([(NODE, NodeLookup::Active)]);
    let token = tokens::mint(NODE, TokenId::from_u128(jti), START, START + 3600, true);
    hub.admit(
        Timestamp::ZERO,
        &tokens::check(&token, &registry),
        session_id,
    )
    .expect("admitted");
    hub.session_opened(Timestamp::ZERO, NODE, session_id);
}

fn health_check(n: u128) -> CentralMessage {
    CentralMessage::HealthCheck(HealthCheck {
        request_id: request(n),
    })
}

fn outputs(hub: &mut CentralHub) -> Vec<HubOutput> {
    std::iter::from_fn(|| hub.poll_output()).collect()
}

#[test]
fn a_claimed_node_s_session_closes_with_4002_and_no_status_is_written() {
    let mut hub = hub();
    admit(&mut hub, session(1), 1);
    outputs(&mut hub);

    hub.release(NODE);

    let out = outputs(&mut hub);
    assert_eq!(
        out,
        vec![HubOutput::Terminate {
            session_id: session(1),
            code: 4002,
            reason: "superseded by a connection to another central instance",
        }]
    );
    assert_eq!(hub.live_session(NODE), None);
    // The session's own end afterwards changes nothing either.
    hub.session_closed(Timestamp::ZERO, NODE, session(1));
    assert_eq!(outputs(&mut hub), vec![]);
}

#[test]
fn a_claimed_node_s_open_commands_are_forgotten_without_a_state_change() {
    let mut hub = hub();
    admit(&mut hub, session(1), 1);
    let timeout = Duration::from_secs(30);
    assert_eq!(
        hub.submit(
            Timestamp::ZERO,
            NODE,
            request(1),
            health_check(1),
            timeout,
            true
        ),
        CommandState::Sent
    );
    outputs(&mut hub);

    hub.release(NODE);
    outputs(&mut hub);

    assert!(hub.command(request(1)).is_none());
    assert_eq!(hub.poll_timeout(), None, "no deadline left for it");
    // Long past its deadline: no timed_out from this instance.
    hub.handle_timeout(Timestamp::ZERO + Duration::from_secs(3600));
    assert_eq!(outputs(&mut hub), vec![]);
}

#[test]
fn a_node_that_comes_back_is_reported_online_again() {
    let mut hub = hub();
    admit(&mut hub, session(1), 1);
    outputs(&mut hub);
    hub.release(NODE);
    outputs(&mut hub);

    admit(&mut hub, session(2), 2);

    assert!(outputs(&mut hub).contains(&HubOutput::StatusChanged {
        node_id: NODE,
        status: NodeStatus::Online,
        reason: None,
    }));
    assert_eq!(
        hub.live_sessions().collect::<Vec<_>>(),
        vec![(NODE, session(2))]
    );
}

#[test]
fn releasing_a_node_leaves_other_nodes_alone() {
    let mut hub = hub();
    admit(&mut hub, session(1), 1);
    let other = nap_core::NodeId::from_u128(7);
    hub.submit(
        Timestamp::ZERO,
        other,
        request(2),
        health_check(2),
        Duration::from_secs(30),
        true,
    );
    outputs(&mut hub);

    hub.release(NODE);

    assert_eq!(hub.queued_for(other), 1);
    assert_eq!(
        hub.command(request(2)).map(|c| c.state),
        Some(CommandState::Queued)
    );
}
