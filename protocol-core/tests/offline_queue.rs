//! Commands for an offline node wait at central and are delivered in order
//! when it connects, or expire.

mod common;

use common::*;
use nap_core::central::CommandState;
use nap_core::testing::World;

#[test]
fn queued_commands_are_delivered_in_order_on_reconnect() {
    let mut world = World::new(71);
    world.add_agent(NODE, config(71));
    let ids = [request(1), request(2), request(3)];
    for id in ids {
        let state = world.submit(NODE, execute(id, "uptime", &[], None), secs(30));
        assert_eq!(state, CommandState::Queued);
    }
    assert_eq!(world.central.hub.queued_for(NODE), 3);
    world.start(0);
    world.run_for(secs(5));
    let delivered: Vec<_> = world.agents[0]
        .received
        .iter()
        .filter_map(|m| match m {
            nap_core::wire::CentralMessage::Execute(e) => e.request_id,
            _ => None,
        })
        .collect();
    assert_eq!(delivered, ids, "in submission order, after welcome");
    assert!(matches!(
        world.agents[0].received[0],
        nap_core::wire::CentralMessage::Welcome(_)
    ));
    for id in ids {
        assert_eq!(
            world.store.command_states[&id].last(),
            Some(&CommandState::Succeeded)
        );
    }
}

#[test]
fn a_queued_command_expires_if_the_node_stays_away() {
    let mut world = World::new(72);
    world.hub_config.command_ttl = secs(600);
    world.restart_central();
    world.add_agent(NODE, config(72));
    let id = request(1);
    world.submit(NODE, execute(id, "uptime", &[], None), secs(30));
    world.run_for(secs(601));
    assert_eq!(
        world.store.command_states[&id],
        vec![CommandState::Queued, CommandState::Expired]
    );
    world.start(0);
    world.run_for(secs(5));
    assert!(
        world.agents[0].runs.is_empty(),
        "an expired command is never delivered"
    );
}

#[test]
fn a_command_for_an_unknown_node_is_undeliverable() {
    let mut world = World::new(73);
    let stranger = nap_core::NodeId::from_u128(99);
    let state = world.submit(stranger, execute(request(1), "uptime", &[], None), secs(30));
    assert_eq!(state, CommandState::Undeliverable);
}

#[test]
fn a_command_lost_in_a_dead_transport_is_sent_again_on_reconnect() {
    let mut world = World::new(74);
    world.add_agent(NODE, config(74));
    world.start(0);
    assert!(world.run_until_true(secs(5), |w| established(w, 0)));
    // Half-open: central still believes the node is there and sends into the void.
    world.set_partitioned(true);
    let id = request(9);
    world.submit(NODE, execute(id, "uptime", &[], None), secs(30));
    assert_eq!(
        world.store.command_states[&id].last(),
        Some(&CommandState::Sent)
    );
    world.run_for(secs(100));
    world.set_partitioned(false);
    assert!(world.run_until_true(secs(400), |w| w.store.results.contains_key(&id)));
    assert_eq!(world.agents[0].runs.get(&id), Some(&1));
    assert_eq!(
        world.store.command_states[&id].last(),
        Some(&CommandState::Succeeded)
    );
}
