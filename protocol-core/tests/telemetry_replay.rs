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

#[test]
fn a_sample_unacked_on_a_live_connection_is_sent_again() {
    let mut world = World::new(84);
    world.set_intervals(nap_core::wire::Intervals {
        heartbeat: 25_000,
        telemetry: 60_000,
        health: 300_000,
    });
    world.add_agent(NODE, config(84));
    world.start(0);
    assert!(world.run_until_true(secs(5), |w| established(w, 0)));
    // Lose exactly the sample of t = 60 s (no ping falls in the window).
    world.run_until(nap_core::Timestamp::from_millis(59_900));
    world.net.faults.loss_permille = 1000;
    world.run_until(nap_core::Timestamp::from_millis(60_500));
    world.net.faults.loss_permille = 0;
    assert_eq!(
        world.agents[0].engine.buffered_telemetry(),
        1,
        "the lost sample waits unacked"
    );
    world.run_for(secs(150));
    assert_eq!(
        world.agents[0].engine.epoch().0,
        1,
        "no reconnect was needed"
    );
    assert_eq!(world.agents[0].engine.buffered_telemetry(), 0);
    assert_eq!(
        world.store.telemetry.len() as u64,
        world.agents[0].samples_taken
    );
}

#[test]
fn a_full_buffer_drops_a_sample_not_in_flight_so_every_drop_counted_is_a_sample_lost() {
    let mut world = World::new(84);
    let mut config = config(84);
    config.telemetry_buffer = 40;
    world.add_agent(NODE, config);
    world.start(0);
    assert!(world.run_until_true(secs(5), |w| established(w, 0)));
    // Acks are slow: the replay's window is in flight when live samples
    // arrive at a full buffer.
    world.ingest = nap_core::testing::Ingest {
        delay: std::time::Duration::from_secs(90),
        queue: None,
    };
    world.set_partitioned(true);
    world.run_for(secs(2 * 3600));
    world.set_partitioned(false);
    assert!(world.run_until_true(secs(600), |w| established(w, 0)));
    world.ingest = nap_core::testing::Ingest::default();
    assert!(world.run_until_true(secs(3600), |w| {
        w.agents[0].engine.buffered_telemetry() == 0
    }));
    let agent = &world.agents[0];
    let dropped = agent.engine.dropped_telemetry();
    assert!(dropped > 80, "the bound dropped {dropped}");
    assert_eq!(
        world.store.telemetry.len() as u64 + dropped,
        agent.samples_taken,
        "each sample is stored or counted as dropped, never both"
    );
}
