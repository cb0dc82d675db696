//! Health reports and alerts are acked like telemetry (spec §7): a node
//! keeps each until central says it is stored (`ack.health` by the report's
//! timestamp, `ack.alert` by the alert's id), sends what waits again after
//! a reconnect and after a restart, and central keeps each once. A central
//! that does not announce `acks` gets them as before: sent once.

mod common;

use common::*;
use nap_core::AlertId;
use nap_core::central::{CentralSession, RecordKey, SessionConfig, SessionInput, SessionOutput};
use nap_core::codec::{Limits, decode};
use nap_core::testing::World;
use nap_core::wire::{AgentMessage, CentralMessage, Features};
use nap_core::{Timestamp, WallTime};

fn health_records(world: &World) -> Vec<WallTime> {
    world
        .store
        .records
        .iter()
        .filter_map(|(_, m)| match m {
            AgentMessage::Health(h) if h.request_id.is_none() => h.timestamp,
            _ => None,
        })
        .collect()
}

fn alert_records(world: &World) -> Vec<AlertId> {
    world
        .store
        .records
        .iter()
        .filter_map(|(_, m)| match m {
            AgentMessage::Alert(a) => a.alert_id,
            _ => None,
        })
        .collect()
}

#[test]
fn a_health_report_is_kept_until_central_acks_it() {
    let mut world = connected(161);
    world.run_for(secs(10));
    assert!(
        !health_records(&world).is_empty(),
        "the first report is stored"
    );
    assert_eq!(world.agents[0].engine.pending_health(), 0, "and acked");
}

#[test]
fn health_taken_during_an_outage_arrives_after_it() {
    let mut world = connected(162);
    world.run_for(secs(10));
    let before = health_records(&world).len();
    world.set_partitioned(true);
    world.run_for(secs(30 * 60));
    let waiting = world.agents[0].engine.pending_health();
    assert!(waiting >= 5, "{waiting} reports kept while disconnected");
    world.set_partitioned(false);
    assert!(world.run_until_true(secs(900), |w| established(w, 0)));
    world.run_for(secs(5));
    assert_eq!(health_records(&world).len(), before + waiting);
    assert_eq!(world.agents[0].engine.pending_health(), 0);
}

#[test]
fn an_alert_raised_offline_survives_a_restart_and_is_stored_once() {
    let mut world = connected(163);
    world.set_partitioned(true);
    world.agents[0].disk = 95.0;
    world.run_for(secs(3 * 60));
    assert!(world.agents[0].engine.pending_alerts() >= 1);
    world.restart_agent(0, config(163));
    assert!(
        world.agents[0].engine.pending_alerts() >= 1,
        "kept across the restart"
    );
    world.set_partitioned(false);
    assert!(world.run_until_true(secs(900), |w| established(w, 0)));
    world.run_for(secs(5));
    let stored = alert_records(&world);
    assert!(!stored.is_empty());
    let mut unique = stored.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), stored.len(), "each alert once");
    assert_eq!(world.agents[0].engine.pending_alerts(), 0, "all acked");
}

#[test]
fn a_central_that_does_not_ack_gets_each_record_once() {
    let mut world = World::new(164);
    world.central.session_config.features = Features::none();
    world.add_agent(NODE, config(164));
    world.start(0);
    assert!(world.run_until_true(secs(5), |w| established(w, 0)));
    world.agents[0].disk = 95.0;
    world.run_for(secs(2 * 3600));
    assert_eq!(world.agents[0].engine.pending_health(), 0, "nothing waits");
    assert_eq!(world.agents[0].engine.pending_alerts(), 0);
    let health_sent = world.agents[0]
        .sent
        .iter()
        .filter(|m| matches!(m, AgentMessage::Health(_)))
        .count();
    assert_eq!(health_sent, health_records(&world).len(), "sent once each");
}

fn session() -> CentralSession {
    let mut s = fresh_session(SessionConfig::default());
    let Some(SessionOutput::Send(CentralMessage::Welcome(welcome))) = s.poll_output() else {
        panic!("welcome first");
    };
    assert!(welcome.features.iter().any(|f| f == "acks"), "{welcome:?}");
    while s.poll_output().is_some() {}
    s
}

#[test]
fn central_acks_what_it_stored_by_its_key() {
    let mut s = session();
    let health = r#"{"type":"health","nodeId":"6f1c2b9e-8a4d-4c3e-9b7a-2d5e8f1a3c47","timestamp":"2025-10-15T10:00:00Z","checks":{"agent":"ok","containers":"ok","disk":"ok","memory":"ok","database":"ok"}}"#;
    s.handle_input(Timestamp::from_secs(1), SessionInput::Frame(health.into()));
    let key = std::iter::from_fn(|| s.poll_output()).find_map(|o| match o {
        SessionOutput::Record { ack, .. } => ack,
        _ => None,
    });
    let at = WallTime::from_unix_millis(1_760_522_400_000).expect("valid");
    assert_eq!(key, Some(RecordKey::Health(at)));
    s.handle_input(
        Timestamp::from_secs(1),
        SessionInput::RecordStored(RecordKey::Health(at)),
    );
    let ack = std::iter::from_fn(|| s.poll_output()).find_map(|o| match o {
        SessionOutput::Send(CentralMessage::Ack(a)) => Some(a),
        _ => None,
    });
    assert_eq!(ack.and_then(|a| a.health), Some(at));
}

#[test]
fn a_health_report_answering_a_check_is_not_a_periodic_one_to_ack() {
    let mut s = session();
    let health = r#"{"type":"health","requestId":"10000000-0000-0000-0000-000000000001","timestamp":"2025-10-15T10:00:00Z","checks":{"agent":"ok","containers":"ok","disk":"ok","memory":"ok","database":"ok"}}"#;
    s.handle_input(Timestamp::from_secs(1), SessionInput::Frame(health.into()));
    let acks: Vec<_> = std::iter::from_fn(|| s.poll_output())
        .filter_map(|o| match o {
            SessionOutput::Record { ack, .. } => Some(ack),
            _ => None,
        })
        .collect();
    assert_eq!(acks, vec![None], "its command_result is what is acked");
}

#[test]
fn an_ack_names_exactly_one_thing() {
    let limits = Limits::default();
    let ok = r#"{"type":"ack","alert":"20000000-0000-4000-8000-000000000001"}"#;
    assert!(decode::<CentralMessage>(ok, &limits).is_ok());
    let ok = r#"{"type":"ack","health":"2025-10-15T10:00:00Z"}"#;
    assert!(decode::<CentralMessage>(ok, &limits).is_ok());
    let two =
        r#"{"type":"ack","health":"2025-10-15T10:00:00Z","telemetry":"2025-10-15T10:00:00Z"}"#;
    assert!(decode::<CentralMessage>(two, &limits).is_err());
}
