//! Liveness: a half-open connection is detected by the agent within
//! heartbeat + 10 s, and by central (node offline) within 2 × heartbeat + 15 s.

mod common;

use common::*;
use nap_core::agent::{AgentEvent, AgentInput, AgentOutput, Disconnect};
use nap_core::wire::{AgentMessage, NodeStatus};

#[test]
fn the_agent_detects_a_half_open_connection_within_its_bound() {
    let mut world = connected(21);
    world.run_for(secs(47)); // somewhere between two pings
    let cut = world.now;
    world.set_partitioned(true); // frames vanish, no close arrives
    world.run_for(secs(120));
    let detected = world.agents[0]
        .events
        .iter()
        .find(|(_, e)| {
            matches!(
                e,
                AgentEvent::Disconnected {
                    reason: Disconnect::Dead,
                    ..
                }
            )
        })
        .map(|(t, _)| *t)
        .expect("the dead transport was detected");
    let elapsed = detected.saturating_since(cut);
    assert!(elapsed <= secs(30 + 10), "detected after {elapsed:?}");
    assert!(
        elapsed >= secs(10),
        "a pong has 10 s to arrive: {elapsed:?}"
    );
}

#[test]
fn central_marks_a_silent_node_offline_within_its_bound() {
    let mut world = connected(22);
    world.run_for(secs(10));
    let cut = world.now;
    world.set_partitioned(true);
    world.run_for(secs(60));
    assert_eq!(
        world.central.hub.status(NODE),
        Some(NodeStatus::Online),
        "not before 75 s"
    );
    world.run_for(secs(16));
    assert_eq!(world.central.hub.status(NODE), Some(NodeStatus::Offline));
    assert!(world.now.saturating_since(cut) <= secs(2 * 30 + 15 + 1));
    assert_eq!(
        world.store.statuses[&NODE],
        vec![NodeStatus::Online, NodeStatus::Offline]
    );
}

#[test]
fn pings_are_answered_and_measured() {
    let mut world = connected(23);
    world.run_for(secs(31));
    let rtts: Vec<u64> = world.agents[0]
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            AgentEvent::RoundTrip { rtt_ms } => Some(*rtt_ms),
            _ => None,
        })
        .collect();
    assert_eq!(rtts.len(), 1);
    assert!(rtts[0] >= 10, "two network latencies: {rtts:?}");
}

#[test]
fn the_agent_answers_centrals_ping_with_the_same_timestamp() {
    let mut world = connected(24);
    let epoch = world.agents[0].engine.epoch();
    let before = world.agents[0].sent.len();
    world.agent_input(
        0,
        AgentInput::Frame {
            epoch,
            text: r#"{"type":"ping","timestamp":1234567}"#.into(),
        },
    );
    let answered = world.agents[0].sent[before..]
        .iter()
        .any(|m| matches!(m, AgentMessage::Pong(p) if p.timestamp == 1_234_567));
    assert!(answered);
}

#[test]
fn a_stale_epoch_is_ignored() {
    let mut world = connected(25);
    let stale = nap_core::transport::Epoch(world.agents[0].engine.epoch().0 - 1);
    world.agents[0].engine.handle_input(
        world.now,
        AgentInput::Closed {
            epoch: stale,
            code: Some(nap_core::transport::CloseCode::Revoked),
        },
    );
    let outputs: Vec<AgentOutput> =
        std::iter::from_fn(|| world.agents[0].engine.poll_output()).collect();
    assert!(outputs.is_empty(), "{outputs:?}");
    assert!(established(&world, 0));
}
