//! Session keys are rotated (spec §11): an established connection asks its
//! transport for a TLS key update every hour, and after 24 h plus a share of
//! an hour drawn per connection it closes with 1000 and connects afresh
//! within seconds — a new handshake, new keys — without a backoff penalty.

mod common;

use common::*;
use nap_core::agent::{AgentEvent, Disconnect};

fn aged_closes(world: &nap_core::testing::World, i: usize) -> usize {
    world.agents[i]
        .events
        .iter()
        .filter(|(_, e)| {
            matches!(
                e,
                AgentEvent::Disconnected {
                    reason: Disconnect::Aged,
                    ..
                }
            )
        })
        .count()
}

#[test]
fn an_established_connection_updates_its_keys_every_hour() {
    let mut world = connected(61);
    let epoch = world.agents[0].engine.epoch();
    world.run_for(secs(3599));
    assert!(world.agents[0].key_updates.is_empty(), "not before an hour");
    world.run_for(secs(2));
    assert_eq!(world.agents[0].key_updates, [epoch]);
    world.run_for(secs(5 * 3600));
    assert_eq!(world.agents[0].key_updates.len(), 6, "one per hour");
    assert!(established(&world, 0));
    assert_eq!(
        world.agents[0].engine.epoch(),
        epoch,
        "the same connection throughout"
    );
}

#[test]
fn a_connection_lives_at_most_25_hours_and_is_replaced_within_seconds() {
    let mut world = connected(62);
    let first = world.agents[0].engine.epoch();
    world.run_for(secs(24 * 3600 - 10));
    assert_eq!(aged_closes(&world, 0), 0, "not before 24 h");
    assert_eq!(world.agents[0].engine.epoch(), first);
    assert!(
        world.run_until_true(secs(3600 + 20), |w| aged_closes(w, 0) == 1),
        "closed by 25 h"
    );
    let closed_at = world.now;
    assert!(
        world.run_until_true(secs(10), |w| established(w, 0)),
        "back within seconds, not after a backoff"
    );
    assert!(world.now.saturating_since(closed_at) <= secs(10));
    assert!(world.agents[0].engine.epoch() > first);
}

#[test]
fn a_fleet_that_connected_together_does_not_age_out_together() {
    let mut world = nap_core::testing::World::new(63);
    for k in 0..20_u64 {
        let i = world.add_agent(
            nap_core::NodeId::from_u128(0x200 + u128::from(k)),
            config(100 + k),
        );
        world.start(i);
    }
    assert!(world.run_until_true(secs(120), |w| (0..20).all(|i| established(w, i))));
    world.run_for(secs(24 * 3600));
    let mut closes = Vec::new();
    assert!(world.run_until_true(secs(3600 + 20), |w| (0..20).all(|i| aged_closes(w, i) >= 1)));
    for agent in &world.agents {
        if let Some((at, _)) = agent.events.iter().find(|(_, e)| {
            matches!(
                e,
                AgentEvent::Disconnected {
                    reason: Disconnect::Aged,
                    ..
                }
            )
        }) {
            closes.push(*at);
        }
    }
    closes.sort();
    let (first, last) = (closes[0], closes[closes.len() - 1]);
    assert!(
        last.saturating_since(first) >= secs(30 * 60),
        "spread over the hour: {:?}",
        last.saturating_since(first)
    );
}
