//! Reconnect delays: equal jitter on a doubling base from 10 s to the 5 min
//! cap, reset after a minute healthy, the cap for auth failures, and
//! central's `Retry-After` obeyed (spec/protocol.md §5).

mod common;

use std::time::Duration;

use common::*;
use nap_core::agent::{AgentEvent, AgentInput, DialFailure};
use nap_core::backoff::{Backoff, BackoffConfig};
use nap_core::rng::Prng;
use nap_core::testing::World;

fn delays(world: &World) -> Vec<(u32, Duration)> {
    world.agents[0]
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            AgentEvent::BackoffScheduled { delay, attempt } => Some((*attempt, *delay)),
            _ => None,
        })
        .collect()
}

#[test]
fn the_schedule_has_exact_bounds() {
    let config = BackoffConfig::default();
    let expected = [
        (10, 20),
        (20, 40),
        (40, 80),
        (80, 160),
        (150, 300),
        (150, 300),
        (150, 300),
    ];
    for (attempt, (lo, hi)) in (0u32..).zip(expected) {
        assert_eq!(
            config.bounds(attempt),
            (secs(lo), secs(hi)),
            "attempt {attempt}"
        );
    }
    assert_eq!(config.bounds(u32::MAX), (secs(150), secs(300)));
}

#[test]
fn every_drawn_delay_is_within_its_bounds() {
    let config = BackoffConfig::default();
    for seed in 0..200 {
        let mut rng = Prng::new(seed);
        let mut backoff = Backoff::default();
        for attempt in 0..12 {
            let (lo, hi) = config.bounds(attempt);
            let delay = backoff.next_delay(&config, &mut rng);
            assert!(
                lo <= delay && delay <= hi,
                "seed {seed} attempt {attempt}: {delay:?}"
            );
            assert!(delay <= config.cap);
        }
    }
}

#[test]
fn jitter_spreads_a_fleet_over_the_whole_window() {
    let config = BackoffConfig::default();
    let first: Vec<Duration> = (0..1000)
        .map(|seed| Backoff::default().next_delay(&config, &mut Prng::new(seed)))
        .collect();
    let min = first.iter().min().copied().unwrap_or_default();
    let max = first.iter().max().copied().unwrap_or_default();
    assert!(
        min >= secs(10) && min < Duration::from_millis(10_500),
        "{min:?}"
    );
    assert!(
        max <= secs(20) && max > Duration::from_millis(19_500),
        "{max:?}"
    );
    // No second of the window is left empty: the returns are spread.
    for second in 10..20 {
        assert!(
            first.iter().any(|d| d.as_secs() == second),
            "no agent returns in second {second}"
        );
    }
}

#[test]
fn an_unreachable_central_is_retried_on_the_doubling_schedule_up_to_the_cap() {
    let mut world = World::new(7);
    world.set_partitioned(true);
    world.add_agent(NODE, config(7));
    world.start(0);
    world.run_for(secs(3600));
    let delays = delays(&world);
    assert!(delays.len() >= 10, "{} attempts in an hour", delays.len());
    let config = BackoffConfig::default();
    for (i, (_, delay)) in delays.iter().enumerate() {
        let (lo, hi) = config.bounds(u32::try_from(i).unwrap_or(u32::MAX));
        assert!(
            lo <= *delay && *delay <= hi,
            "attempt {i}: {delay:?} not in {lo:?}..={hi:?}"
        );
    }
    // The first retry comes no sooner than 10 s after the failed dial.
    let events = &world.agents[0].events;
    let connecting: Vec<_> = events
        .iter()
        .filter(|(_, e)| matches!(e, AgentEvent::Connecting { .. }))
        .map(|(t, _)| *t)
        .collect();
    let gap = connecting[1].saturating_since(connecting[0]);
    assert!(
        gap >= secs(10 + 3),
        "{gap:?}: 3 s dial failure, then at least 10 s"
    );
}

#[test]
fn a_healthy_minute_resets_the_schedule() {
    let mut world = World::new(11);
    world.set_partitioned(true);
    world.add_agent(NODE, config(11));
    world.start(0);
    world.run_for(secs(600)); // several failed attempts: the schedule has grown
    assert!(world.agents[0].engine.epoch().0 >= 5);
    world.set_partitioned(false);
    assert!(world.run_until_true(secs(400), |w| established(w, 0)));
    world.run_for(secs(61));
    world.cut_transports();
    world.run_for(secs(1));
    let (attempt, delay) = *delays(&world).last().expect("a backoff after the cut");
    assert_eq!(attempt, 1, "the counter restarted from zero");
    assert!(secs(10) <= delay && delay <= secs(20), "{delay:?}");
}

#[test]
fn a_short_lived_connection_does_not_reset_the_schedule() {
    let mut world = World::new(12);
    world.set_partitioned(true);
    world.add_agent(NODE, config(12));
    world.start(0);
    world.run_for(secs(200));
    world.set_partitioned(false);
    assert!(world.run_until_true(secs(400), |w| established(w, 0)));
    let attempts_before = delays(&world).len();
    world.run_for(secs(30)); // healthy, but not for a minute
    world.cut_transports();
    world.run_for(secs(1));
    let (attempt, delay) = *delays(&world).last().expect("a backoff after the cut");
    assert_eq!(usize::try_from(attempt).unwrap_or(0), attempts_before + 1);
    assert!(delay >= secs(20), "{delay:?}");
}

#[test]
fn an_auth_failure_backs_off_to_the_cap() {
    let mut world = World::new(13);
    let i = world.add_agent(NODE, config(13));
    world.agents[i].signs_validly = false;
    world.start(i);
    world.run_for(secs(2000));
    assert!(!world.store.auth_failures.is_empty());
    assert!(world.store.auth_failures.iter().all(|r| *r == "signature"));
    for (_, delay) in delays(&world) {
        assert!(secs(150) <= delay && delay <= secs(300), "{delay:?}");
    }
}

#[test]
fn retry_after_is_obeyed() {
    let mut world = World::new(14);
    world.set_partitioned(true); // keep the dial pending: we answer it ourselves
    world.add_agent(NODE, config(14));
    world.start(0);
    let epoch = world.agents[0].engine.epoch();
    world.agent_input(
        0,
        AgentInput::DialFailed {
            epoch,
            reason: DialFailure::Unavailable {
                retry_after: secs(120),
            },
        },
    );
    let (_, delay) = *delays(&world).last().expect("a backoff");
    assert!(secs(120) <= delay && delay <= secs(180), "{delay:?}");
}
