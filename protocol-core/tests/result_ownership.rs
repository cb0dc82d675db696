//! A node answers only its own commands (spec/protocol.md §8): a result for
//! another node's command is refused — nothing stored, no state change —
//! and acked, so the sender stops re-sending it. The hub refuses it when it
//! tracks the command; when it does not (sent by an earlier central, or by
//! another process), the store's answer decides. Driven through `World`, so
//! the rule is reproducible by seed.

mod common;

use common::*;
use nap_core::central::CommandState;
use nap_core::testing::World;
use nap_core::wire::{AgentMessage, CentralMessage, CommandResult};
use nap_core::{NodeId, encode};

const OTHER: NodeId = NodeId::from_u128(0x0b0e);

/// NODE connected; OTHER registered but offline with one queued command.
fn setup(seed: u64) -> (World, nap_core::RequestId) {
    let mut world = World::new(seed);
    world.add_agent(NODE, config(seed));
    world.start(0);
    assert!(world.run_until_true(secs(5), |w| established(w, 0)));
    world.add_agent(OTHER, config(seed + 1));
    let id = request(1);
    let state = world.submit(OTHER, execute(id, "uptime", &[], None), secs(30));
    assert_eq!(state, CommandState::Queued);
    (world, id)
}

fn forged_result(world: &World, id: nap_core::RequestId) -> String {
    encode(&AgentMessage::CommandResult(CommandResult {
        request_id: id,
        success: true,
        result: "forged\n".into(),
        timestamp: world.wall(),
        exit_code: Some(0),
        stderr: None,
        duration_ms: Some(1),
        truncated: false,
        error: None,
    }))
    .expect("encodes")
}

fn acked(world: &World, i: usize, id: nap_core::RequestId) -> bool {
    world.agents[i]
        .received
        .iter()
        .any(|m| matches!(m, CentralMessage::Ack(a) if a.request_id == Some(id)))
}

#[test]
fn a_result_for_a_tracked_command_of_another_node_is_refused_and_acked() {
    let (mut world, id) = setup(61);
    let frame = forged_result(&world, id);
    world.frame_to_central(0, &frame);
    world.run_for(secs(1));

    assert!(!world.store.results.contains_key(&id), "nothing stored");
    assert_eq!(world.store.command_states[&id], vec![CommandState::Queued]);
    assert!(acked(&world, 0, id), "the sender is told to stop");
    assert_eq!(
        world.store.results_received, 0,
        "the hub refused it without the store"
    );

    // The rightful node still runs it and answers.
    world.start(1);
    assert!(world.run_until_true(secs(10), |w| {
        w.store.command_states[&id].contains(&CommandState::Succeeded)
    }));
    assert_eq!(world.store.results[&id].result, "ok\n");
}

#[test]
fn after_a_central_restart_the_store_decides_whose_command_it_is() {
    let (mut world, id) = setup(62);
    world.restart_central();
    world.run_for(secs(1));
    assert!(!established(&world, 0), "the agent saw its transport reset");
    assert!(world.run_until_true(secs(600), |w| established(w, 0)));
    assert!(
        world.central.hub.command(id).is_none(),
        "the new hub does not know it"
    );

    let frame = forged_result(&world, id);
    world.frame_to_central(0, &frame);
    world.run_for(secs(1));

    assert_eq!(world.store.results_received, 1, "asked the store");
    assert!(!world.store.results.contains_key(&id), "nothing stored");
    assert_eq!(world.store.command_states[&id], vec![CommandState::Queued]);
    assert!(acked(&world, 0, id));
}
