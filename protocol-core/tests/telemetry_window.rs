//! Replay converges (spec §7.1): telemetry in flight is bounded by the
//! window `welcome` grants and paced by central's acks, telemetry has its
//! own budget at central (never the message rate that pings and results
//! need), a sample the store refused is held by the session and offered
//! again while the node's window is cut (and grown back as samples are
//! stored), and a store that takes nothing is waited out with ever longer
//! pauses, never answered with more copies.

mod common;

use common::*;
use nap_core::agent::{AgentInput, ConnectionState};
use nap_core::central::{CentralSession, SessionConfig, SessionEvent, SessionInput, SessionOutput};
use nap_core::testing::{Ingest, World, sample};
use nap_core::wire::{AgentMessage, Welcome};
use nap_core::{SessionId, Timestamp, WallTime};
use std::collections::BTreeMap;

/// How often each sample the agent took went on a wire.
fn copies_sent(world: &World) -> BTreeMap<WallTime, usize> {
    let mut copies = BTreeMap::new();
    for m in &world.agents[0].sent {
        if let AgentMessage::Telemetry(t) = m {
            *copies.entry(t.timestamp).or_insert(0) += 1;
        }
    }
    copies
}

#[test]
fn a_day_of_buffered_samples_drains_in_the_window_without_a_close() {
    let mut world = connected(141);
    world.ingest = Ingest {
        delay: std::time::Duration::from_millis(200),
        queue: None,
    };
    world.set_partitioned(true);
    world.run_for(secs(23 * 3600 + 50 * 60));
    let buffered = world.agents[0].engine.buffered_telemetry();
    assert!(buffered > 1400, "{buffered} samples buffered");
    world.set_partitioned(false);
    assert!(world.run_until_true(secs(600), |w| established(w, 0)));
    let epoch = world.agents[0].engine.epoch();
    let window = SessionConfig::default().telemetry_window as usize;
    let mut most_in_flight = 0;
    let drained = world.run_until_true(secs(120), |w| {
        most_in_flight = most_in_flight.max(w.agents[0].engine.telemetry_in_flight());
        w.agents[0].engine.buffered_telemetry() == 0
    });
    assert!(
        drained,
        "the backlog drained within two minutes of the return"
    );
    // The backlog fills the window; a sample taken meanwhile goes outside it.
    assert!(most_in_flight <= window + 1, "{most_in_flight} in flight");
    assert_eq!(
        world.agents[0].engine.epoch(),
        epoch,
        "no close, no reconnect"
    );
    assert_eq!(world.agents[0].engine.dropped_telemetry(), 0);
    assert_eq!(
        world.store.telemetry.len() as u64,
        world.agents[0].samples_taken,
        "every sample stored"
    );
}

#[test]
fn a_store_that_refuses_is_waited_out_with_doubling_pauses() {
    let mut world = connected(142);
    world.run_for(secs(5));
    // Central's ingest queue is full for half an hour: nothing is acked.
    world.ingest = Ingest {
        delay: std::time::Duration::ZERO,
        queue: Some(0),
    };
    world.run_for(secs(15 * 60));
    let copies = copies_sent(&world);
    let most = copies.values().copied().max().unwrap_or(0);
    // Sent, then again after 2, 4 and 8 minutes without an ack: four
    // copies in a quarter of an hour, where a fixed two-interval re-send
    // would have sent eight.
    assert!(most <= 4, "a sample went {most} times");
    assert!(most >= 3, "unacked samples are sent again ({most})");
    assert!(world.store.telemetry_refused > 0);
    world.ingest = Ingest::default();
    assert!(world.run_until_true(secs(20 * 60), |w| {
        w.agents[0].engine.buffered_telemetry() == 0
    }));
    assert_eq!(
        world.store.telemetry.len() as u64,
        world.agents[0].samples_taken
    );
    assert_eq!(world.agents[0].engine.epoch().0, 1, "never reconnected");
}

#[test]
fn the_newest_sample_goes_before_the_backlog() {
    let mut world = connected(143);
    world.ingest = Ingest {
        delay: std::time::Duration::from_secs(90),
        queue: None,
    };
    world.set_partitioned(true);
    world.run_for(secs(3 * 3600));
    world.set_partitioned(false);
    assert!(world.run_until_true(secs(600), |w| established(w, 0)));
    let sent_before = world.agents[0].sent.len();
    // The window is full of backlog waiting for slow acks; the next sample
    // taken is sent at once all the same.
    world.run_for(secs(61));
    let newest = world.agents[0]
        .sent
        .iter()
        .skip(sent_before)
        .filter_map(|m| match m {
            AgentMessage::Telemetry(t) => Some(t.timestamp),
            _ => None,
        })
        .max();
    let latest_taken = world.wall();
    assert!(
        newest.is_some_and(|t| latest_taken.unix_millis() - t.unix_millis() <= 61_000),
        "the live sample went out: {newest:?}"
    );
}

#[test]
fn a_central_without_a_window_gets_eight_at_a_time() {
    let mut world = World::new(144);
    world.add_agent(NODE, config(144));
    world.start(0);
    world.set_partitioned(true); // we play central by hand
    world.run_for(secs(30 * 60));
    assert!(world.agents[0].engine.buffered_telemetry() >= 20);
    assert!(world.run_until_true(secs(600), |w| {
        w.agents[0].engine.state() == ConnectionState::Connecting {}
    }));
    let epoch = world.agents[0].engine.epoch();
    world.agent_input(0, AgentInput::Connected { epoch });
    let welcome = format!(
        r#"{{"type":"welcome","protocolVersion":"nap.v1","sessionId":"{}","nodeId":"{NODE}","serverTime":"{}","intervals":{{"heartbeat":30000,"telemetry":60000,"health":300000}},"maxMessageBytes":1048576}}"#,
        SessionId::from_u128(7),
        world.wall()
    );
    let before = world.agents[0].sent.len();
    world.agent_input(
        0,
        AgentInput::Frame {
            epoch,
            text: welcome,
        },
    );
    assert!(established(&world, 0));
    let sent = world.agents[0]
        .sent
        .iter()
        .skip(before)
        .filter(|m| matches!(m, AgentMessage::Telemetry(_)))
        .count();
    assert_eq!(sent, Welcome::DEFAULT_TELEMETRY_WINDOW as usize);
}

fn session(config: SessionConfig) -> CentralSession {
    open_session(config)
}

fn telemetry_frame(n: i64) -> (String, WallTime) {
    let at = WallTime::from_unix_millis(1_760_522_400_000 + n * 1000).expect("valid");
    let t = nap_core::wire::Telemetry {
        node_id: NODE,
        timestamp: at,
        data: sample(10.0, 20.0),
        dropped_samples: 0,
    };
    (
        nap_core::encode(&AgentMessage::Telemetry(t)).expect("encodes"),
        at,
    )
}

fn outputs(s: &mut CentralSession) -> Vec<SessionOutput> {
    std::iter::from_fn(|| s.poll_output()).collect()
}

#[test]
fn welcome_grants_the_configured_window() {
    let config = SessionConfig {
        telemetry_window: 5,
        ..SessionConfig::default()
    };
    let mut s = fresh_session(config);
    let Some(SessionOutput::Send(nap_core::wire::CentralMessage::Welcome(w))) = s.poll_output()
    else {
        panic!("welcome first");
    };
    assert_eq!(w.telemetry_window, Some(5));
}

#[test]
fn samples_past_twice_the_window_are_dropped_and_the_rest_stored() {
    let config = SessionConfig {
        telemetry_window: 2,
        ..SessionConfig::default()
    };
    let mut s = session(config);
    let now = Timestamp::from_secs(1);
    let mut stored = Vec::new();
    let mut over = 0;
    for n in 0..5 {
        let (text, _) = telemetry_frame(n);
        s.handle_input(now, SessionInput::Frame(text));
        for o in outputs(&mut s) {
            match o {
                SessionOutput::StoreTelemetry(t) => stored.push(t),
                SessionOutput::Event(SessionEvent::OverTelemetryWindow) => over += 1,
                _ => {}
            }
        }
    }
    assert_eq!(stored.len(), 4, "twice the window is taken");
    assert_eq!(over, 1);
    assert!(s.is_open(), "one sample too many is not a close");
    // A refused sample (the ingest queue was full) keeps its place: the
    // session holds it.
    s.handle_input(now, SessionInput::TelemetryStored(stored[0].timestamp));
    s.handle_input(now, SessionInput::TelemetryRefused(stored[1].clone()));
    let acks = outputs(&mut s)
        .into_iter()
        .filter(|o| {
            matches!(
                o,
                SessionOutput::Send(nap_core::wire::CentralMessage::Ack(_))
            )
        })
        .count();
    assert_eq!(
        acks, 1,
        "the stored sample is acked, the refused one is not"
    );
    s.handle_input(now, SessionInput::Frame(telemetry_frame(10).0));
    s.handle_input(now, SessionInput::Frame(telemetry_frame(11).0));
    let taken = outputs(&mut s)
        .iter()
        .filter(|o| matches!(o, SessionOutput::StoreTelemetry(_)))
        .count();
    assert_eq!(taken, 1, "one place was freed, by the ack");
}

#[test]
fn a_refused_sample_is_held_and_offered_to_the_store_again() {
    let mut s = session(SessionConfig::default());
    let now = Timestamp::from_secs(1);
    let (text, at) = telemetry_frame(1);
    s.handle_input(now, SessionInput::Frame(text));
    let Some(sample) = outputs(&mut s).into_iter().find_map(|o| match o {
        SessionOutput::StoreTelemetry(t) => Some(t),
        _ => None,
    }) else {
        panic!("handed to the store");
    };
    s.handle_input(now, SessionInput::TelemetryRefused(sample));
    assert!(outputs(&mut s).is_empty(), "not acked, not offered at once");

    let retry = now + SessionConfig::default().ingest_retry;
    assert!(s.poll_timeout().is_some_and(|t| t <= retry));
    s.handle_timeout(retry);
    let again: Vec<WallTime> = outputs(&mut s)
        .into_iter()
        .filter_map(|o| match o {
            SessionOutput::StoreTelemetry(t) => Some(t.timestamp),
            _ => None,
        })
        .collect();
    assert_eq!(again, vec![at]);
}

/// The telemetry acks the session sent, with the window each carried.
fn telemetry_acks(out: &[SessionOutput]) -> Vec<(WallTime, Option<u32>)> {
    out.iter()
        .filter_map(|o| match o {
            SessionOutput::Send(nap_core::wire::CentralMessage::Ack(a)) => {
                a.telemetry.map(|t| (t, a.telemetry_window))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_refusal_halves_the_window_and_stored_samples_grow_it_back() {
    let config = SessionConfig {
        telemetry_window: 8,
        ..SessionConfig::default()
    };
    let mut s = session(config);
    let mut now = Timestamp::from_secs(1);
    let mut n = 0;
    let mut offer = |s: &mut CentralSession, now: Timestamp| {
        n += 1;
        s.handle_input(now, SessionInput::Frame(telemetry_frame(n).0));
        outputs(s).into_iter().find_map(|o| match o {
            SessionOutput::StoreTelemetry(t) => Some(t),
            _ => None,
        })
    };
    let first = offer(&mut s, now).expect("taken");
    s.handle_input(now, SessionInput::TelemetryRefused(first));
    // A second refusal in the same retry period is the same full queue.
    let second = offer(&mut s, now).expect("taken");
    s.handle_input(now, SessionInput::TelemetryRefused(second));
    assert_eq!(s.telemetry_window(), 4);

    // The next ack tells the node; the ones after it say nothing new.
    let stored = offer(&mut s, now).expect("taken");
    s.handle_input(now, SessionInput::TelemetryStored(stored.timestamp));
    assert_eq!(
        telemetry_acks(&outputs(&mut s)),
        vec![(stored.timestamp, Some(4))]
    );
    // A window's worth stored widens it by one, back up to the configured 8.
    let mut announced = Vec::new();
    for _ in 0..60 {
        now = now + std::time::Duration::from_millis(100);
        let t = offer(&mut s, now).expect("taken");
        s.handle_input(now, SessionInput::TelemetryStored(t.timestamp));
        announced.extend(
            telemetry_acks(&outputs(&mut s))
                .into_iter()
                .filter_map(|(_, w)| w),
        );
    }
    assert_eq!(announced, vec![5, 6, 7, 8]);
    assert_eq!(s.telemetry_window(), 8);
}

#[test]
fn a_fleet_replaying_into_a_small_store_queue_is_narrowed_and_loses_nothing() {
    let nodes = 20;
    let mut world = World::new(145);
    for i in 0..nodes {
        world.add_agent(
            nap_core::NodeId::from_u128(1000 + i),
            config(145 + i as u64),
        );
        world.start(i as usize);
    }
    assert!(world.run_until_true(secs(60), |w| (0..nodes as usize).all(|i| established(w, i))));
    world.set_partitioned(true);
    world.run_for(secs(6 * 3600));
    // 20 windows of 32 want 640 places; the store queues 40 at a time.
    world.ingest = Ingest {
        delay: std::time::Duration::from_millis(500),
        queue: Some(40),
    };
    world.set_partitioned(false);
    assert!(world.run_until_true(secs(900), |w| {
        (0..nodes as usize).all(|i| established(w, i))
    }));
    let epochs: Vec<_> = world.agents.iter().map(|a| a.engine.epoch()).collect();
    let mut narrowest = usize::MAX;
    let drained = world.run_until_true(secs(30 * 60), |w| {
        for a in &w.agents {
            if matches!(a.engine.state(), ConnectionState::Established {}) {
                narrowest = narrowest.min(a.engine.telemetry_window());
            }
        }
        w.agents.iter().all(|a| a.engine.buffered_telemetry() == 0)
    });
    assert!(drained, "every node caught up");
    assert!(
        world.store.telemetry_refused > 0,
        "the queue was full at times"
    );
    assert!(narrowest < 32, "central narrowed the windows ({narrowest})");
    let taken: u64 = world.agents.iter().map(|a| a.samples_taken).sum();
    assert_eq!(world.store.telemetry.len() as u64, taken, "nothing lost");
    let after: Vec<_> = world.agents.iter().map(|a| a.engine.epoch()).collect();
    assert_eq!(after, epochs, "no node was closed during the replay");
}

#[test]
fn telemetry_does_not_spend_the_message_rate() {
    let config = SessionConfig {
        rate_burst: 5,
        rate_per_sec: 1,
        ..SessionConfig::default()
    };
    let mut s = session(config);
    let now = Timestamp::from_secs(1);
    for n in 0..100 {
        let (text, at) = telemetry_frame(n);
        s.handle_input(now, SessionInput::Frame(text));
        s.handle_input(now, SessionInput::TelemetryStored(at));
    }
    let out = outputs(&mut s);
    let stored = out
        .iter()
        .filter(|o| matches!(o, SessionOutput::StoreTelemetry(_)))
        .count();
    assert_eq!(stored, 100, "a replay at the pace of acks is all taken");
    assert!(
        !out.iter()
            .any(|o| matches!(o, SessionOutput::Event(SessionEvent::RateLimited))),
        "telemetry spent none of the rate"
    );
    // The rate is intact for everything else.
    s.handle_input(
        now,
        SessionInput::Frame(r#"{"type":"ping","timestamp":1}"#.into()),
    );
    assert!(
        outputs(&mut s).iter().any(|o| matches!(
            o,
            SessionOutput::Send(nap_core::wire::CentralMessage::Pong(_))
        )),
        "a ping after the replay is answered"
    );
}

#[test]
fn an_agent_restarted_mid_outage_loses_no_buffered_sample() {
    let mut world = connected(145);
    world.set_partitioned(true);
    world.run_for(secs(3 * 3600));
    world.restart_agent(0, config(145));
    world.run_for(secs(3 * 3600));
    assert!(world.agents[0].engine.buffered_telemetry() > 300);
    world.set_partitioned(false);
    assert!(world.run_until_true(secs(900), |w| established(w, 0)));
    assert!(world.run_until_true(secs(120), |w| {
        w.agents[0].engine.buffered_telemetry() == 0
    }));
    let taken = world.agents[0].samples_taken;
    assert_eq!(world.store.telemetry.len() as u64, taken, "{taken} taken");
}
