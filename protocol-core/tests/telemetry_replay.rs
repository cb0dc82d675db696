//! Telemetry survives outages: samples are buffered until acked and replayed
//! with their original timestamps; nothing is lost within the buffer, and
//! drops beyond it are counted and reported.

mod common;

use common::*;
use nap_core::testing::World;
use nap_core::wire::AgentMessage;

#[test]
fn nothing_is_lost_across_an_outage_within_the_buffer() {
    let mut world = connected(81);
    world.run_for(secs(90));
    world.set_partitioned(true);
    world.run_for(secs(30 * 60));
    world.set_partitioned(false);
    assert!(world.run_until_true(secs(600), |w| established(w, 0)));
    world.run_for(secs(10));
    let taken = world.agents[0]
        .sent
        .iter()
        .filter_map(|m| match m {
            AgentMessage::Telemetry(t) => Some(t.timestamp),
            _ => None,
        })
        .collect::<std::collections::BTreeSet<_>>();
    let stored: std::collections::BTreeSet<_> =
        world.store.telemetry.iter().map(|(_, t)| *t).collect();
    assert!(taken.len() > 30, "{} samples", taken.len());
    assert_eq!(stored, taken, "every sample taken is stored");
    assert_eq!(world.agents[0].engine.buffered_telemetry(), 0);
    assert_eq!(world.agents[0].engine.dropped_telemetry(), 0);
}

#[test]
fn drops_beyond_the_buffer_are_counted_and_reported() {
    let mut world = World::new(82);
    let mut cfg = config(82);
    cfg.telemetry_buffer = 5;
    world.add_agent(NODE, cfg);
    world.start(0);
    assert!(world.run_until_true(secs(5), |w| established(w, 0)));
    world.run_for(secs(1)); // the first sample is acked
    assert_eq!(world.agents[0].engine.buffered_telemetry(), 0);
    world.set_partitioned(true);
    world.run_for(secs(10 * 60)); // 10 samples offline, room for 5
    assert_eq!(world.agents[0].engine.dropped_telemetry(), 5);
    world.set_partitioned(false);
    assert!(world.run_until_true(secs(600), |w| established(w, 0)));
    world.run_for(secs(5));
    let reported: u64 = world.agents[0]
        .sent
        .iter()
        .filter_map(|m| match m {
            AgentMessage::Telemetry(t) => Some(t.dropped_samples),
            _ => None,
        })
        .sum();
    assert!(reported >= 5, "the drops were reported: {reported}");
    assert_eq!(world.agents[0].engine.buffered_telemetry(), 0);
}

#[test]
fn replayed_samples_keep_their_original_timestamps() {
    let mut world = connected(83);
    world.set_partitioned(true);
    world.run_for(secs(5 * 60));
    let offline: Vec<_> = world.agents[0]
        .sent
        .iter()
        .filter_map(|m| match m {
            AgentMessage::Telemetry(t) => Some(t.timestamp),
            _ => None,
        })
        .collect();
    world.set_partitioned(false);
    assert!(world.run_until_true(secs(600), |w| established(w, 0)));
    world.run_for(secs(5));
    for t in offline {
        assert!(
            world.store.telemetry.contains(&(NODE, t)),
            "{t} was stored as taken"
        );
    }
}
