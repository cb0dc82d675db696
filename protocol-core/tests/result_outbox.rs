//! Results stay in the agent's outbox until central acks them: a result
//! produced while offline is delivered after the reconnect, and across an
//! agent restart, and recorded exactly once.

mod common;

use common::*;
use nap_core::central::CommandState;
use nap_core::testing::Behaviour;

#[test]
fn a_result_produced_while_offline_is_delivered_after_reconnect_exactly_once() {
    let mut world = connected(61);
    world.agents[0].behaviours.insert(
        "uptime".into(),
        Behaviour::Succeed {
            after: secs(20),
            stdout: "up\n".into(),
        },
    );
    let id = request(1);
    world.submit(NODE, execute(id, "uptime", &[], None), secs(30));
    world.run_for(secs(1));
    world.set_partitioned(true);
    world.run_for(secs(60)); // finished at 20 s, while unreachable
    assert!(!world.store.results.contains_key(&id));
    assert_eq!(world.agents[0].engine.outbox_len(), 1);

    world.set_partitioned(false);
    assert!(world.run_until_true(secs(400), |w| w.store.results.contains_key(&id)));
    world.run_for(secs(5));
    assert_eq!(world.agents[0].engine.outbox_len(), 0, "acked");
    assert_eq!(world.agents[0].runs.get(&id), Some(&1));
    let terminal: Vec<_> = world.store.command_states[&id]
        .iter()
        .filter(|s| s.is_terminal())
        .collect();
    assert_eq!(
        terminal,
        vec![&CommandState::Succeeded],
        "exactly one terminal state"
    );
}

#[test]
fn an_agent_restarted_with_a_result_in_its_outbox_delivers_it_exactly_once() {
    let mut world = connected(62);
    let id = request(2);
    world.submit(NODE, execute(id, "uptime", &[], None), secs(30));
    world.run_for(secs(1) / 20); // delivered and started
    world.set_partitioned(true);
    world.run_for(secs(1)); // finished offline: in the outbox, persisted
    assert_eq!(world.agents[0].engine.outbox_len(), 1);

    world.set_partitioned(false);
    world.restart_agent(0, config(62));
    assert_eq!(
        world.agents[0].engine.outbox_len(),
        1,
        "restored from the snapshot"
    );
    assert!(world.run_until_true(secs(60), |w| w.store.results.contains_key(&id)));
    world.run_for(secs(60));
    assert_eq!(world.agents[0].engine.outbox_len(), 0);
    assert_eq!(world.agents[0].runs.get(&id), Some(&1));
    assert_eq!(world.store.results.len(), 1);
    // Central re-sending the request now gets the recorded answer, no run.
    assert!(world.deliver_to(NODE, execute(id, "uptime", &[], None)));
    world.run_for(secs(1));
    assert_eq!(world.agents[0].runs.get(&id), Some(&1));
}

#[test]
fn a_request_in_progress_at_a_crash_is_never_run_again() {
    let mut world = connected(63);
    world.agents[0]
        .behaviours
        .insert("sleep".into(), Behaviour::Hang);
    let id = request(3);
    world.submit(NODE, execute(id, "sleep", &["30"], None), secs(60));
    world.run_for(secs(1));
    assert_eq!(world.agents[0].runs.get(&id), Some(&1));
    world.restart_agent(0, config(63));
    assert!(world.run_until_true(secs(60), |w| w.store.results.contains_key(&id)));
    let result = &world.store.results[&id];
    assert!(!result.success);
    assert!(
        result.timestamp.unix_millis() >= world.wall0.unix_millis(),
        "stamped when the restarted agent recorded it, not {}",
        result.timestamp
    );
    assert!(world.deliver_to(NODE, execute(id, "sleep", &["30"], None)));
    world.run_for(secs(5));
    assert_eq!(
        world.agents[0].runs.get(&id),
        Some(&1),
        "never started twice"
    );
}

#[test]
fn an_interrupted_request_is_stamped_with_the_wall_clock_given_at_restore() {
    use nap_core::agent::{AgentEngine, AgentSnapshot, RecordedRequest};
    let snapshot = AgentSnapshot {
        version: AgentSnapshot::VERSION,
        requests: vec![RecordedRequest {
            request_id: request(4),
            result: None,
            acked: false,
        }],
        telemetry: vec![],
        alerts: vec![],
        health: vec![],
    };
    // A fresh engine has read no wall clock yet: restore takes it.
    let wall = nap_core::WallTime::from_unix_millis(1_760_522_400_000).expect("valid");
    let mut engine = AgentEngine::new(config(64));
    engine.restore(snapshot, wall);
    let saved = engine.snapshot();
    let result = saved.requests[0]
        .result
        .as_ref()
        .expect("recorded as failed");
    assert_eq!(result.timestamp, wall);
}
