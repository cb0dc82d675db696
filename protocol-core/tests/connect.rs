//! The happy path: an agent authenticates, receives `welcome`, reports its
//! status, heartbeats, telemetry and health, and central stores them.

mod common;

use common::*;
use nap_core::agent::ConnectionState;
use nap_core::wire::{AgentMessage, CentralMessage, NodeStatus};

#[test]
fn an_agent_connects_and_reports() {
    let mut world = connected(1);
    assert!(world.agents[0].engine.session().is_some());
    assert!(matches!(
        world.agents[0].received.first(),
        Some(CentralMessage::Welcome(_))
    ));
    assert_eq!(world.store.statuses[&NODE], vec![NodeStatus::Online]);

    world.run_for(secs(125));
    let sent = &world.agents[0].sent;
    let pings = sent
        .iter()
        .filter(|m| matches!(m, AgentMessage::Ping(_)))
        .count();
    let telemetry = sent
        .iter()
        .filter(|m| matches!(m, AgentMessage::Telemetry(_)))
        .count();
    assert_eq!(pings, 4, "a ping every 30 s");
    assert_eq!(telemetry, 3, "a sample at once, then every 60 s");
    assert_eq!(world.store.telemetry.len(), 3);
    assert_eq!(
        world.agents[0].engine.buffered_telemetry(),
        0,
        "every sample acked"
    );
    assert!(
        sent.iter()
            .any(|m| matches!(m, AgentMessage::Status(s) if s.status == NodeStatus::Online))
    );
    assert_eq!(
        world.agents[0].engine.state(),
        ConnectionState::Established {}
    );
}
