//! Admission under refused tokens (spec/protocol.md §3): a refusal is held a
//! little longer each time its address or its claimed node failed, and past
//! ten failures within a minute it is answered 429 (Retry-After 60) — but a
//! token that verifies is admitted whatever other hosts behind the same
//! address did. Notices to an administrator are coalesced per address and
//! reason per minute, with a count. A saturated central answers 503 with a
//! Retry-After drawn from the hub's seeded PRNG. All of it is the hub's
//! decision, so a seed replays it.

mod common;

use core::net::{IpAddr, Ipv4Addr};

use common::*;
use nap_core::agent::AgentEvent;
use nap_core::central::{
    Admit, Alarm, Audience, CentralHub, Claims, HubConfig, HubInput, HubOutput, NodeLookup,
    SpentRecord, TokenCheck, Upgrade,
};
use nap_core::testing::World;
use nap_core::{NodeId, SessionId, Timestamp, WallTime};

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

/// The refusal notices raised so far: (peer, reason, count).
fn notices(alarms: &[Alarm]) -> Vec<(Option<IpAddr>, &'static str, u32)> {
    alarms
        .iter()
        .filter_map(|a| match a {
            Alarm::AuthRefused {
                reason,
                peer,
                count,
            } => Some((*peer, *reason, *count)),
            Alarm::CriticalAlert { .. }
            | Alarm::Approval { .. }
            | Alarm::RolloutApproval { .. } => None,
        })
        .collect()
}

#[test]
fn the_eleventh_refusal_within_a_minute_from_one_address_is_a_429_and_one_notice_tells_of_them_all()
{
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
    // One notice at once, not one per refusal...
    assert_eq!(
        notices(&world.store.alarms),
        [(Some(SHARED), "signature", 1)]
    );
    // ...and one for the rest when the minute is over, with their count.
    world.run_for(secs(56));
    assert_eq!(
        notices(&world.store.alarms),
        [
            (Some(SHARED), "signature", 1),
            (Some(SHARED), "signature", 10)
        ]
    );
}

#[test]
fn a_valid_token_from_a_throttled_address_is_admitted() {
    // Behind one NAT: eleven misconfigured hosts, then a good one.
    let mut world = World::new(43);
    refused_agents(&mut world, 11);
    world.run_for(secs(5));
    assert_eq!(world.store.auth_failures.last(), Some(&"throttled"));
    let good = world.add_agent(NODE, config(43));
    world.agents[good].peer = SHARED;
    world.start(good);
    assert!(world.run_until_true(secs(5), |w| established(w, good)));
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

fn wall(now: Timestamp) -> WallTime {
    WallTime::from_unix_millis(
        1_760_522_400_000 + i64::try_from(now.as_micros() / 1000).unwrap_or(0),
    )
    .expect("wall time")
}

fn hub() -> CentralHub {
    let mut hub = CentralHub::new(HubConfig::new("nap-central"));
    hub.handle_input(Timestamp::ZERO, HubInput::WallClock(wall(Timestamp::ZERO)));
    hub
}

/// A token for `node` with id `jti`, minted at `now`, that verifies or not.
fn token(node: NodeId, jti: u128, now: Timestamp, verifies: bool) -> TokenCheck {
    let iat = wall(now).unix_seconds();
    TokenCheck {
        alg: "EdDSA".into(),
        claims: Some(Claims {
            iss: node.to_string(),
            sub: node.to_string(),
            aud: Audience::One("nap-central".into()),
            iat,
            exp: iat + 600,
            jti: nap_core::TokenId::from_u128(jti).to_string(),
            scope: "node".into(),
        }),
        node: NodeLookup::Active,
        signature_valid: verifies,
        spent: SpentRecord::Unspent,
    }
}

fn upgrade(id: u128, peer: IpAddr, token: Option<TokenCheck>) -> Upgrade {
    Upgrade {
        session_id: SessionId::from_u128(id),
        peer: Some(peer),
        token,
        hello: nap_core::wire::Hello::default(),
    }
}

#[test]
fn refusals_are_held_longer_each_time_up_to_a_second_then_answered_429_at_once() {
    let mut hub = hub();
    let mut answers = Vec::new();
    for k in 0..12u64 {
        let now = Timestamp::from_secs(k);
        assert!(hub.screen(now, 0).is_none(), "no address is screened out");
        match hub.admit(now, &upgrade(u128::from(k), SHARED, None)) {
            Admit::Refused(r) => answers.push((r.kind.http_status(), r.hold.as_millis())),
            Admit::Accepted(_) => panic!("no token admitted"),
        }
    }
    let held: Vec<(u16, u128)> = (1..=10).map(|n| (401, n * 100)).collect();
    assert_eq!(answers, [held, vec![(429, 0), (429, 0)]].concat());
    // A minute after the first failure the address starts afresh.
    let later = Timestamp::from_secs(61);
    let Admit::Refused(r) = hub.admit(later, &upgrade(99, SHARED, None)) else {
        panic!("no token admitted");
    };
    assert_eq!((r.kind.http_status(), r.hold.as_millis()), (401, 100));
}

#[test]
fn failures_claiming_one_node_from_many_addresses_slow_them_but_not_the_node_itself() {
    let mut hub = hub();
    let now = Timestamp::from_secs(1);
    let mut statuses = Vec::new();
    for k in 0..12u8 {
        let addr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, k));
        let forged = token(NODE, u128::from(k), now, false);
        match hub.admit(now, &upgrade(u128::from(k), addr, Some(forged))) {
            Admit::Refused(r) => statuses.push(r.kind.http_status()),
            Admit::Accepted(_) => panic!("a forged token was admitted"),
        }
    }
    assert_eq!(statuses, [vec![401; 10], vec![429; 2]].concat());
    // The node's own token, from its own address.
    let genuine = token(NODE, 1000, now, true);
    assert!(matches!(
        hub.admit(now, &upgrade(1000, SHARED, Some(genuine))),
        Admit::Accepted(_)
    ));
}

#[test]
fn notices_are_one_per_address_and_reason_per_window_with_the_count() {
    let mut hub = hub();
    let other = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9));
    let now = Timestamp::from_secs(1);
    for k in 0..50 {
        let _ = hub.admit(now, &upgrade(k, SHARED, None));
    }
    let _ = hub.admit(now, &upgrade(100, other, None));
    let _ = hub.admit(now, &upgrade(101, SHARED, Some(token(NODE, 7, now, false))));
    let mut told = Vec::new();
    while let Some(out) = hub.poll_output() {
        if let HubOutput::Alarm(alarm) = out {
            told.push(alarm);
        }
    }
    assert_eq!(
        notices(&told),
        [
            (Some(SHARED), "missing_token", 1),
            (Some(other), "missing_token", 1),
            (Some(SHARED), "signature", 1),
        ]
    );
    // When the window ends, what it held back is told once, with its count.
    let end = hub.poll_timeout().expect("the window's end is armed");
    assert_eq!(end, now + secs(60));
    hub.handle_timeout(end);
    let mut told = Vec::new();
    while let Some(out) = hub.poll_output() {
        if let HubOutput::Alarm(alarm) = out {
            told.push(alarm);
        }
    }
    assert_eq!(notices(&told), [(Some(SHARED), "missing_token", 49)]);
    assert_eq!(hub.poll_timeout(), None, "nothing left to tell");
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
    assert!(hub.screen(now, limit).is_none(), "at the bound: admitted");
    let refusal = hub.screen(now, limit + 1).expect("past it: refused");
    assert_eq!(refusal.kind.http_status(), 503);
    assert!(refusal.retry_after.is_some(), "told when to come back");
}
