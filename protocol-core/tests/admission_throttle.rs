//! Admission under refused tokens (spec/protocol.md §3): each refusal is
//! held a little longer than the last from that address, an address with
//! ten refusals within a minute is answered 429 (Retry-After 60) before its
//! token is even checked, every refusal tells an administrator, and a
//! saturated central answers 503 with a Retry-After drawn from the hub's
//! seeded PRNG. All of it is the hub's decision, so a seed replays it.

mod common;

use core::net::{IpAddr, Ipv4Addr};

use common::*;
use nap_core::agent::AgentEvent;
use nap_core::central::{Alarm, CentralHub, HubConfig, HubInput};
use nap_core::testing::World;
use nap_core::{NodeId, Timestamp};

const SHARED: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));

/// `n` agents whose tokens central refuses, all behind one address.
fn refused_agents(world: &mut World, n: u128) -> Vec<usize> {
    (0..n)
        .map(|k| {
            let i = world.add_agent(NodeId::from_u128(0x100 + k), config(7));
            world.agents[i].signs_validly = false;
            world.agents[i].peer = SHARED;
            world.start(i);
            i
        })
        .collect()
}

/// The backoffs the agent scheduled.
fn backoffs(world: &World, i: usize) -> Vec<std::time::Duration> {
    world.agents[i]
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            AgentEvent::BackoffScheduled { delay, .. } => Some(*delay),
            _ => None,
        })
        .collect()
}

#[test]
fn the_eleventh_refusal_within_a_minute_from_one_address_is_a_429_before_any_token_check() {
    let mut world = World::new(41);
    let agents = refused_agents(&mut world, 11);
    world.run_for(secs(5));

    assert_eq!(
        world.store.auth_failures,
        [vec!["signature"; 10], vec!["throttled"]].concat(),
        "ten refused tokens, then the address is throttled"
    );
    // The throttled agent obeys Retry-After (60 s, plus up to half again
    // of spread); the refused ones back off to the cap.
    let told_to_wait: Vec<usize> = agents
        .iter()
        .copied()
        .filter(|i| {
            backoffs(&world, *i)
                .iter()
                .any(|d| (secs(60)..=secs(90)).contains(d))
        })
        .collect();
    assert_eq!(told_to_wait.len(), 1, "{told_to_wait:?}");
    // Every refused token told an administrator; the 429 did not.
    let alarms = world
        .store
        .alarms
        .iter()
        .filter(|a| matches!(a, Alarm::AuthRefused { .. }))
        .count();
    assert_eq!(alarms, 10);
}

#[test]
fn a_node_at_another_address_is_not_held_back_by_a_throttled_one() {
    let mut world = World::new(42);
    refused_agents(&mut world, 11);
    world.run_for(secs(5));
    let good = world.add_agent(NODE, config(42));
    world.start(good);
    assert!(world.run_until_true(secs(5), |w| established(w, good)));
}

#[test]
fn refusals_are_held_longer_each_time_up_to_a_second() {
    let mut hub = CentralHub::new(HubConfig::new("nap-central"));
    let mut holds = Vec::new();
    for k in 0..12u64 {
        let now = Timestamp::from_secs(k);
        if hub.screen(now, Some(SHARED), 0).is_some() {
            break;
        }
        let upgrade = nap_core::central::Upgrade {
            session_id: nap_core::SessionId::from_u128(u128::from(k)),
            peer: Some(SHARED),
            token: None,
            elsewhere: nap_core::central::TokenIdElsewhere::Unused,
            hello: nap_core::wire::Hello::default(),
        };
        match hub.admit(now, &upgrade) {
            nap_core::central::Admit::Refused(r) => holds.push(r.hold.as_millis()),
            nap_core::central::Admit::Accepted(_) => panic!("no token admitted"),
        }
    }
    assert_eq!(holds, [100, 200, 300, 400, 500, 600, 700, 800, 900, 1000]);
    // A minute after the first failure the address starts afresh.
    assert!(
        hub.screen(Timestamp::from_secs(61), Some(SHARED), 0)
            .is_none()
    );
}

#[test]
fn the_503_retry_after_is_drawn_from_the_hub_s_seeded_prng() {
    let draws = |seed: u64| {
        let mut config = HubConfig::new("nap-central");
        config.seed = seed;
        let mut hub = CentralHub::new(config);
        hub.handle_input(Timestamp::ZERO, HubInput::Drain);
        (0..20)
            .map(|_| {
                hub.busy(Timestamp::ZERO)
                    .retry_after
                    .expect("set")
                    .as_secs()
            })
            .collect::<Vec<_>>()
    };
    let a = draws(1);
    assert_eq!(a, draws(1), "the same seed, the same answers");
    assert_ne!(a, draws(2));
    assert!(a.iter().all(|s| (5..=14).contains(s)), "{a:?}");
    assert!(a.iter().any(|s| *s != a[0]), "spread, not one value: {a:?}");
}

#[test]
fn a_store_that_is_behind_turns_new_upgrades_away_with_503() {
    let mut hub = CentralHub::new(HubConfig::new("nap-central"));
    let limit = hub.config().admission.max_store_backlog;
    let now = Timestamp::from_secs(1);
    assert!(
        hub.screen(now, Some(SHARED), limit).is_none(),
        "at the bound: admitted"
    );
    let refusal = hub
        .screen(now, Some(SHARED), limit + 1)
        .expect("past it: refused");
    assert_eq!(refusal.kind.http_status(), 503);
    assert!(refusal.retry_after.is_some(), "told when to come back");
}
