//! A transport that cannot take what the agent sends (its driver's send
//! queue is full, a frame was dropped) is the engine's to handle: the
//! connection stays up — closing would replay the same burst into the same
//! full queue after every reconnect — and what needed an ack is sent again.

mod common;

use common::*;
use nap_core::agent::{AgentEvent, AgentInput};
use nap_core::wire::AgentMessage;

#[test]
fn a_full_send_queue_drops_the_frame_and_keeps_the_connection() {
    let mut world = connected(121);
    let epoch = world.agents[0].engine.epoch();
    world.agent_input(0, AgentInput::SendQueueFull { epoch });
    assert!(established(&world, 0), "still connected");
    assert_eq!(world.agents[0].engine.epoch(), epoch);
    assert!(
        world.agents[0]
            .events
            .iter()
            .any(|(_, e)| matches!(e, AgentEvent::FrameDropped { epoch: e } if *e == epoch))
    );
}

#[test]
fn a_result_whose_frame_was_dropped_is_sent_again_and_recorded() {
    let mut world = connected(123);
    let id = request(1);
    world.submit(NODE, execute(id, "uptime", &[], None), secs(30));
    // The result's frame is lost on the way (as a full queue would drop it).
    world.net.faults.loss_permille = 1000;
    world.run_for(secs(1));
    world.net.faults.loss_permille = 0;
    let epoch = world.agents[0].engine.epoch();
    world.agent_input(0, AgentInput::SendQueueFull { epoch });
    assert!(world.run_until_true(secs(600), |w| w.store.results.contains_key(&id)));
    let sent = world.agents[0]
        .sent
        .iter()
        .filter(|m| matches!(m, AgentMessage::CommandResult(r) if r.request_id == id))
        .count();
    assert!(sent >= 2, "sent again: {sent}");
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
        !world.agents[0]
            .events
            .iter()
            .any(|(_, e)| matches!(e, AgentEvent::FrameDropped { .. })),
        "a stale transport's report is ignored"
    );
}
