//! A transport that cannot take what the agent sends (its driver's send
//! queue is full, a frame was dropped) is the engine's to handle: it closes
//! with 1001, backs off like after any loss, and sends what is unacked again
//! on the next connection.

mod common;

use common::*;
use nap_core::agent::{AgentEvent, AgentInput, Disconnect};

#[test]
fn a_full_send_queue_closes_with_1001_and_the_agent_comes_back() {
    let mut world = connected(121);
    let epoch = world.agents[0].engine.epoch();
    world.agent_input(0, AgentInput::SendQueueFull { epoch });
    assert!(!established(&world, 0));
    assert!(world.agents[0].events.iter().any(|(_, e)| matches!(
        e,
        AgentEvent::Disconnected {
            reason: Disconnect::Congested,
            ..
        }
    )));
    assert!(world.run_until_true(secs(60), |w| established(w, 0)));
    assert!(world.agents[0].engine.epoch() > epoch);
}

#[test]
fn a_full_queue_on_an_old_transport_changes_nothing() {
    let mut world = connected(122);
    let old = world.agents[0].engine.epoch();
    world.restart_central();
    assert!(world.run_until_true(secs(600), |w| established(w, 0)
        && w.agents[0].engine.epoch() > old));
    world.agent_input(0, AgentInput::SendQueueFull { epoch: old });
    assert!(
        established(&world, 0),
        "a stale transport's report is ignored"
    );
}
