//! Scale-out: when another central process claims a node, this process's
//! hub lets it go — its session closes with 4002, its open commands are
//! forgotten without a state change (the new holder reports them), and no
//! status is written (the new holder writes `online`). A claim older than
//! the node's return here is not honoured. The periodic sweep hands the hub
//! the open commands of the nodes it holds, and it delivers those it never
//! heard of (their notice was lost). Driven through the central host
//! (the real hub and sessions, forwarded as the driver does).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use nap_core::central::{
    Admit, CommandState, HubConfig, HubInput, HubOutput, NodeLookup, Presence, SessionConfig,
    SessionOutput, Submission, Upgrade,
};
use nap_core::testing::{CentralEffect, CentralHost, tokens};
use nap_core::transport::CloseCode;
use nap_core::wire::{CentralMessage, HealthCheck, NodeStatus};
use nap_core::{SessionId, Timestamp, TokenId, WallTime};

const START: i64 = 1_750_000_000;

fn wall() -> WallTime {
    WallTime::from_unix_millis(START * 1000).expect("valid")
}

fn central() -> CentralHost {
    let mut config = HubConfig::new(tokens::AUDIENCE);
    config.clustered = true;
    CentralHost::new(Timestamp::ZERO, wall(), config, SessionConfig::default())
}

fn session(n: u128) -> SessionId {
    SessionId::from_u128(n)
}

/// Admits NODE on `session_id` (its session sends `welcome` and the node is
/// claimed); returns the effects.
fn admit(central: &mut CentralHost, session_id: SessionId, jti: u128) -> Vec<CentralEffect> {
    let registry = BTreeMap::from([(NODE, NodeLookup::Active)]);
    let token = tokens::mint(NODE, TokenId::from_u128(jti), START, START + 3600, true);
    let upgrade = Upgrade {
        session_id,
        peer: None,
        token: Some(tokens::check(&token, &registry)),
        hello: nap_core::wire::Hello::default(),
    };
    assert!(matches!(
        central.admit(Timestamp::ZERO, wall(), &upgrade),
        Admit::Accepted(_)
    ));
    effects(central)
}

fn effects(central: &mut CentralHost) -> Vec<CentralEffect> {
    std::iter::from_fn(|| central.poll_effect()).collect()
}

fn hub_effects(central: &mut CentralHost) -> Vec<HubOutput> {
    effects(central)
        .into_iter()
        .filter_map(|e| match e {
            CentralEffect::Hub(output) => Some(output),
            CentralEffect::Session { .. } => None,
        })
        .collect()
}

fn closes(effects: &[CentralEffect]) -> Vec<(SessionId, CloseCode)> {
    effects
        .iter()
        .filter_map(|e| match e {
            CentralEffect::Session {
                session_id,
                output: SessionOutput::Close { code, .. },
                ..
            } => Some((*session_id, *code)),
            _ => None,
        })
        .collect()
}

fn health_check(n: u128) -> Submission {
    Submission {
        node_id: NODE,
        request_id: request(n),
        message: Some(CentralMessage::HealthCheck(HealthCheck {
            request_id: request(n),
        })),
        timeout: Duration::from_secs(30),
        known: true,
        approval: None,
    }
}

/// Another process claims NODE, and presence says it holds it.
fn claimed_elsewhere(central: &mut CentralHost) -> Vec<CentralEffect> {
    central.hub_input(Timestamp::ZERO, HubInput::ClaimedElsewhere(NODE));
    let asked = hub_effects(central);
    assert_eq!(asked, vec![HubOutput::Locate { node_id: NODE }]);
    let located = HubInput::Located {
        node_id: NODE,
        presence: Some(Presence::Elsewhere),
    };
    central.hub_input(Timestamp::ZERO, located);
    effects(central)
}

#[test]
fn a_node_s_session_is_claimed_in_presence_when_it_opens() {
    let mut central = central();
    let effects = admit(&mut central, session(1), 1);
    assert!(effects.contains(&CentralEffect::Hub(HubOutput::Claim {
        node_id: NODE,
        session_id: session(1),
    })));
}

#[test]
fn a_claimed_node_s_session_closes_with_4002_and_no_status_is_written() {
    let mut central = central();
    admit(&mut central, session(1), 1);

    let effects = claimed_elsewhere(&mut central);

    assert_eq!(closes(&effects), vec![(session(1), CloseCode::Superseded)]);
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, CentralEffect::Hub(HubOutput::StatusChanged { .. }))),
        "{effects:?}"
    );
    assert_eq!(central.hub.live_session(NODE), None);
}

#[test]
fn a_claim_older_than_the_node_s_return_here_is_not_honoured() {
    let mut central = central();
    admit(&mut central, session(1), 1);
    central.hub_input(Timestamp::ZERO, HubInput::ClaimedElsewhere(NODE));
    hub_effects(&mut central);
    let located = HubInput::Located {
        node_id: NODE,
        presence: Some(Presence::Here(session(1))),
    };
    central.hub_input(Timestamp::ZERO, located);
    assert!(closes(&effects(&mut central)).is_empty());
    assert_eq!(central.hub.live_session(NODE), Some(session(1)));
}

#[test]
fn a_session_that_ends_while_another_process_holds_the_node_writes_no_offline() {
    let mut central = central();
    admit(&mut central, session(1), 1);
    central.session_input(
        Timestamp::ZERO,
        session(1),
        nap_core::central::SessionInput::Closed { code: None },
    );
    assert_eq!(
        hub_effects(&mut central),
        vec![HubOutput::Vacate {
            node_id: NODE,
            session_id: session(1),
        }]
    );
    let vacated = HubInput::Vacated {
        node_id: NODE,
        session_id: session(1),
        presence: Some(Presence::Elsewhere),
    };
    central.hub_input(Timestamp::ZERO, vacated);
    assert_eq!(hub_effects(&mut central), vec![]);
    assert_eq!(central.hub.live_session(NODE), None);
}

#[test]
fn a_session_that_ends_with_nobody_else_holding_the_node_marks_it_offline() {
    let mut central = central();
    admit(&mut central, session(1), 1);
    central.session_input(
        Timestamp::ZERO,
        session(1),
        nap_core::central::SessionInput::Closed { code: None },
    );
    hub_effects(&mut central);
    // Presence could not be asked: this process's view decides.
    let vacated = HubInput::Vacated {
        node_id: NODE,
        session_id: session(1),
        presence: None,
    };
    central.hub_input(Timestamp::ZERO, vacated);
    assert_eq!(
        hub_effects(&mut central),
        vec![HubOutput::StatusChanged {
            node_id: NODE,
            status: NodeStatus::Offline,
            reason: Some("disconnected".into()),
        }]
    );
}

#[test]
fn a_claimed_node_s_open_commands_are_forgotten_without_a_state_change() {
    let mut central = central();
    admit(&mut central, session(1), 1);
    central.hub_input(Timestamp::ZERO, HubInput::Submit(vec![health_check(1)]));
    assert_eq!(
        central.hub.command(request(1)).map(|c| c.state),
        Some(CommandState::Sent)
    );
    effects(&mut central);

    claimed_elsewhere(&mut central);

    assert!(central.hub.command(request(1)).is_none());
    // Long past its deadline: no timed_out from this process.
    central.handle_timeout(Timestamp::ZERO + Duration::from_secs(3600));
    assert!(
        !hub_effects(&mut central)
            .iter()
            .any(|o| matches!(o, HubOutput::CommandChanged { .. }))
    );
}

#[test]
fn a_node_that_comes_back_is_reported_online_again() {
    let mut central = central();
    admit(&mut central, session(1), 1);
    claimed_elsewhere(&mut central);

    let effects = admit(&mut central, session(2), 2);

    assert!(
        effects.contains(&CentralEffect::Hub(HubOutput::StatusChanged {
            node_id: NODE,
            status: NodeStatus::Online,
            reason: None,
        }))
    );
    assert_eq!(
        central.hub.live_sessions().collect::<Vec<_>>(),
        vec![(NODE, session(2))]
    );
}

#[test]
fn releasing_a_node_leaves_other_nodes_alone() {
    let mut central = central();
    admit(&mut central, session(1), 1);
    let other = nap_core::NodeId::from_u128(7);
    let command = Submission {
        node_id: other,
        ..health_check(2)
    };
    central.hub_input(Timestamp::ZERO, HubInput::Submit(vec![command]));
    effects(&mut central);

    claimed_elsewhere(&mut central);

    assert_eq!(central.hub.queued_for(other), 1);
    assert_eq!(
        central.hub.command(request(2)).map(|c| c.state),
        Some(CommandState::Queued)
    );
}

#[test]
fn a_clustered_hub_sweeps_the_store_for_expired_queued_commands() {
    let mut central = central();
    let every = central.hub.config().sweep_every;
    central.handle_timeout(Timestamp::ZERO + every);
    let ttl = i64::try_from(central.hub.config().command_ttl.as_millis()).expect("fits");
    assert_eq!(
        hub_effects(&mut central),
        vec![HubOutput::ExpireQueued {
            created_before: wall()
                .add_millis(-ttl + i64::try_from(every.as_millis()).expect("fits")),
        }]
    );
}

/// The health checks sent to the node.
fn delivered(effects: &[CentralEffect]) -> Vec<nap_core::RequestId> {
    effects
        .iter()
        .filter_map(|e| match e {
            CentralEffect::Session {
                output: SessionOutput::Send(CentralMessage::HealthCheck(h)),
                ..
            } => Some(h.request_id),
            _ => None,
        })
        .collect()
}

#[test]
fn the_sweep_asks_for_the_open_commands_of_the_nodes_held_here() {
    let mut central = central();
    admit(&mut central, session(1), 1);
    effects(&mut central);

    let sweep = Timestamp::ZERO + central.hub.config().sweep_every;
    central.handle_timeout(sweep);

    let asked = hub_effects(&mut central);
    assert!(
        asked.contains(&HubOutput::LoadOpenCommands {
            sessions: vec![(NODE, session(1))],
        }),
        "{asked:?}"
    );
    assert!(
        asked
            .iter()
            .any(|o| matches!(o, HubOutput::ExpireQueued { .. }))
    );
}

#[test]
fn a_swept_command_whose_notice_was_lost_is_delivered_and_a_known_one_is_not_sent_again() {
    let mut central = central();
    admit(&mut central, session(1), 1);
    effects(&mut central);
    central.hub_input(Timestamp::ZERO, HubInput::Submit(vec![health_check(1)]));
    assert_eq!(delivered(&effects(&mut central)), vec![request(1)]);

    let swept = HubInput::Swept {
        sessions: vec![(NODE, session(1))],
        commands: vec![health_check(1), health_check(2)],
    };
    central.hub_input(Timestamp::ZERO, swept);

    assert_eq!(delivered(&effects(&mut central)), vec![request(2)]);
    assert_eq!(
        central.hub.command(request(2)).map(|c| c.state),
        Some(CommandState::Sent)
    );
}

#[test]
fn a_swept_command_of_a_session_that_has_ended_is_left_to_the_node_s_next_holder() {
    let mut central = central();
    admit(&mut central, session(1), 1);
    effects(&mut central);
    // Loaded for session 1, answered after the node came back on session 2.
    admit(&mut central, session(2), 2);
    effects(&mut central);

    let swept = HubInput::Swept {
        sessions: vec![(NODE, session(1))],
        commands: vec![health_check(3)],
    };
    central.hub_input(Timestamp::ZERO, swept);

    assert!(delivered(&effects(&mut central)).is_empty());
    assert!(central.hub.command(request(3)).is_none());
}
