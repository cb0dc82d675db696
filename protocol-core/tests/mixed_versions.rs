//! A fleet of mixed versions (spec/protocol.md §1.1): an agent announces
//! its version and features on the upgrade, central says what it speaks in
//! `welcome`, and central never sends a node a message the node did not
//! announce — a command that needs a feature the node lacks is
//! `undeliverable` instead. Names a peer does not know are ignored.

mod common;

use common::*;
use nap_core::agent::AgentConfig;
use nap_core::central::CommandState;
use nap_core::testing::World;
use nap_core::wire::{AgentMessage, CentralMessage, Execute, Feature, Features, Hello, Welcome};
use nap_core::{Limits, NodeId, decode};

const OLD: NodeId = NodeId::from_u128(0x01d);

/// An agent from before features were announced: no headers at all.
fn old_agent(seed: u64) -> AgentConfig {
    let mut config = AgentConfig::new(OLD, seed);
    config.policy = policy();
    config.features = Features::none();
    config.agent_version = None;
    config
}

fn needs_approval(n: u128) -> CentralMessage {
    CentralMessage::Execute(Execute {
        request_id: Some(request(n)),
        command: "uptime".into(),
        args: vec![],
        timeout: None,
        hold_until: None,
        requested_by: None,
        rollout_approval: None,
        requires_approval: true,
        approver: Some("alice".into()),
    })
}

fn mixed(seed: u64) -> World {
    let mut world = World::new(seed);
    world.add_agent(NODE, config(seed));
    world.add_agent(OLD, old_agent(seed + 1));
    world.start(0);
    world.start(1);
    assert!(world.run_until_true(secs(5), |w| established(w, 0) && established(w, 1)));
    world
}

#[test]
fn an_old_agent_still_runs_the_base_protocol_s_commands() {
    let mut world = mixed(81);
    world.submit(OLD, execute(request(1), "uptime", &[], None), secs(30));
    assert!(world.run_until_true(secs(10), |w| {
        w.store.command_states[&request(1)].contains(&CommandState::Succeeded)
    }));
}

#[test]
fn a_command_an_old_agent_cannot_understand_is_undeliverable_and_never_sent() {
    let mut world = mixed(82);
    let state = world.submit(OLD, needs_approval(2), secs(30));
    world.run_for(secs(1));
    assert_eq!(state, CommandState::Undeliverable);
    assert_eq!(
        world.store.command_states[&request(2)],
        vec![CommandState::Queued, CommandState::Undeliverable]
    );
    assert!(
        !world.agents[1]
            .received
            .iter()
            .any(|m| matches!(m, CentralMessage::Execute(_))),
        "nothing was sent to the old agent"
    );
}

#[test]
fn an_agent_that_announced_approval_is_sent_the_held_command() {
    let mut world = mixed(83);
    let state = world.submit(NODE, needs_approval(3), secs(30));
    world.run_for(secs(1));
    assert_eq!(state, CommandState::Sent);
    assert!(world.agents[0].received.iter().any(|m| matches!(
        m,
        CentralMessage::Execute(e) if e.requires_approval
    )));
}

#[test]
fn a_queued_command_is_checked_against_the_features_of_the_session_it_meets() {
    let mut world = World::new(84);
    world.add_agent(OLD, old_agent(84));
    let state = world.submit(OLD, needs_approval(4), secs(30));
    assert_eq!(state, CommandState::Queued, "offline: it waits");
    world.start(0);
    world.run_for(secs(5));
    assert_eq!(
        world.store.command_states[&request(4)],
        vec![CommandState::Queued, CommandState::Undeliverable]
    );
}

#[test]
fn welcome_names_what_central_speaks_and_an_agent_ignores_names_it_does_not_know() {
    let text = r#"{"type":"welcome","protocolVersion":"nap.v1","sessionId":"00000000-0000-0000-0000-000000000001","nodeId":"6f1c2b9e-8a4d-4c3e-9b7a-2d5e8f1a3c47","serverTime":"2025-10-15T10:00:00Z","intervals":{"heartbeat":30000,"telemetry":60000,"health":300000},"maxMessageBytes":1048576,"features":["approval","teleport"],"somethingNew":{"x":1}}"#;
    let message: CentralMessage = decode(text, &Limits::default()).expect("decodes");
    let CentralMessage::Welcome(Welcome { features, .. }) = message else {
        panic!("not a welcome");
    };
    assert_eq!(features, vec!["approval".to_owned(), "teleport".to_owned()]);
    // And a status from a newer agent with fields this version lacks.
    let status = r#"{"type":"status","nodeId":"6f1c2b9e-8a4d-4c3e-9b7a-2d5e8f1a3c47","status":"online","timestamp":"2025-10-15T10:00:00Z","load":{"soon":true}}"#;
    assert!(decode::<AgentMessage>(status, &Limits::default()).is_ok());
}

#[test]
fn the_upgrade_headers_say_the_agent_s_version_and_features() {
    let hello = Hello {
        agent_version: Some("0.3.1".into()),
        features: [Feature::Approval, Feature::Logs].into_iter().collect(),
    };
    let headers = hello.headers();
    assert_eq!(
        headers,
        vec![
            ("nap-features", "approval, logs".to_owned()),
            ("nap-agent-version", "0.3.1".to_owned()),
        ]
    );
    assert_eq!(
        Hello::from_headers(Some("0.3.1"), Some("approval, logs")),
        hello
    );
    // A newer agent's features this central does not know are skipped.
    let newer = Hello::from_headers(Some("9.0.0"), Some("approval,holograms"));
    assert_eq!(newer.features, [Feature::Approval].into_iter().collect());
    // No headers: an agent of the base protocol.
    assert_eq!(Hello::from_headers(None, None), Hello::default());
    // A version that is not a short printable token is not kept.
    assert_eq!(
        Hello::from_headers(Some("1.0 <script>"), None).agent_version,
        None
    );
}

#[test]
fn every_central_message_names_the_feature_it_needs_in_one_place() {
    let approved = CentralMessage::ExecuteApproved(nap_core::wire::ExecuteApproved {
        request_id: Some(request(5)),
        command: "uptime".into(),
        approved_by: "bob".into(),
        approvals: Vec::new(),
    });
    assert_eq!(Feature::required_by(&approved), Some(Feature::Approval));
    assert_eq!(
        Feature::required_by(&needs_approval(6)),
        Some(Feature::Approval)
    );
    let plain = execute(request(7), "uptime", &[], None);
    assert_eq!(Feature::required_by(&plain), None);
    assert!(Features::none().allow(&plain));
    assert!(!Features::none().allow(&approved));
}
