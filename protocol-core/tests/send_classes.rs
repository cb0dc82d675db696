//! Send classes (spec §9): every frame the agent engine sends has a class —
//! control, commands, live, backlog — that its driver writes in order of
//! urgency; and central's session spends one message budget per class, so
//! a flood of one never takes another's.

mod common;

use common::*;
use nap_core::central::{SessionConfig, SessionEvent, SessionInput, SessionOutput};
use nap_core::transport::SendClass;
use nap_core::wire::{AgentMessage, CentralMessage, CheckStatus};

/// The class each message of `kind` went in.
fn classes_of(world: &nap_core::testing::World, kind: fn(&AgentMessage) -> bool) -> Vec<SendClass> {
    let agent = &world.agents[0];
    agent
        .sent
        .iter()
        .zip(&agent.sent_classes)
        .filter(|(m, _)| kind(m))
        .map(|(_, c)| *c)
        .collect()
}

#[test]
fn the_backlog_goes_as_backlog_and_what_was_just_taken_as_live() {
    let mut world = connected(161);
    world.set_partitioned(true);
    world.run_for(secs(3 * 3600));
    world.set_partitioned(false);
    assert!(world.run_until_true(secs(600), |w| established(w, 0)));
    world.run_for(secs(120));

    let telemetry = classes_of(&world, |m| matches!(m, AgentMessage::Telemetry(_)));
    assert!(telemetry.contains(&SendClass::Backlog), "the replay");
    assert!(telemetry.contains(&SendClass::Live), "samples taken since");
    let control = classes_of(&world, |m| {
        matches!(
            m,
            AgentMessage::Ping(_) | AgentMessage::Pong(_) | AgentMessage::Status(_)
        )
    });
    assert!(!control.is_empty());
    assert!(
        control.iter().all(|c| *c == SendClass::Control),
        "{control:?}"
    );
}

#[test]
fn a_result_goes_as_commands() {
    let mut world = connected(162);
    let id = request(1);
    world.submit(NODE, execute(id, "uptime", &[], None), secs(30));
    assert!(world.run_until_true(secs(60), |w| w.store.results.contains_key(&id)));
    let results = classes_of(&world, |m| matches!(m, AgentMessage::CommandResult(_)));
    assert!(!results.is_empty());
    assert!(results.iter().all(|c| *c == SendClass::Commands));
}

#[test]
fn more_urgent_classes_sort_first() {
    assert!(SendClass::Control < SendClass::Commands);
    assert!(SendClass::Commands < SendClass::Live);
    assert!(SendClass::Live < SendClass::Backlog);
    let ranks: Vec<usize> = SendClass::ALL.iter().map(|c| c.rank()).collect();
    assert_eq!(ranks, vec![0, 1, 2, 3]);
}

fn frame(message: &AgentMessage) -> SessionInput {
    SessionInput::Frame(nap_core::encode(message).expect("encodes"))
}

#[test]
fn a_flood_of_health_reports_does_not_spend_the_budget_of_pings() {
    let config = SessionConfig {
        rate_per_sec: 1,
        rate_burst: 5,
        ..SessionConfig::default()
    };
    let mut s = open_session(config);
    let now = nap_core::Timestamp::from_secs(1);
    let health = AgentMessage::Health(nap_core::wire::Health {
        checks: nap_core::wire::HealthChecks {
            agent: CheckStatus::Ok,
            containers: CheckStatus::Ok,
            disk: CheckStatus::Ok,
            memory: CheckStatus::Ok,
            database: CheckStatus::Ok,
        },
        details: Default::default(),
        node_id: Some(NODE),
        timestamp: Some(nap_core::WallTime::from_unix_millis(1_760_522_400_000).expect("valid")),
        request_id: None,
    });
    for _ in 0..8 {
        s.handle_input(now, frame(&health));
    }
    let limited = std::iter::from_fn(|| s.poll_output())
        .filter(|o| matches!(o, SessionOutput::Event(SessionEvent::RateLimited)))
        .count();
    assert_eq!(limited, 3, "records past their burst are dropped");

    s.handle_input(
        now,
        frame(&AgentMessage::Ping(nap_core::wire::Ping { timestamp: 7 })),
    );
    let pong = std::iter::from_fn(|| s.poll_output())
        .any(|o| matches!(o, SessionOutput::Send(CentralMessage::Pong(p)) if p.timestamp == 7));
    assert!(pong, "the ping has its own budget");
}
