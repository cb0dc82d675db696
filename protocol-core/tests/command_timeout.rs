//! A command that outlives its timeout is killed (the whole process group,
//! by the driver) and answered with a `timeout` error; its slot is freed.

mod common;

use common::*;
use nap_core::central::CommandState;
use nap_core::testing::Behaviour;
use nap_core::wire::ErrorCode;

#[test]
fn a_hanging_command_is_killed_and_reported_as_timed_out() {
    let mut world = connected(41);
    world.agents[0]
        .behaviours
        .insert("sleep".into(), Behaviour::Hang);
    let id = request(1);
    world.submit(NODE, execute(id, "sleep", &["100"], Some(2_000)), secs(2));
    world.run_for(secs(1));
    assert_eq!(world.agents[0].engine.running_commands(), 1);
    world.run_for(secs(2));
    let result = world.store.results.get(&id).expect("a result is recorded");
    assert!(!result.success);
    assert_eq!(
        result.error.as_ref().map(|e| e.code),
        Some(ErrorCode::Timeout)
    );
    assert_eq!(
        world.agents[0].engine.running_commands(),
        0,
        "the slot is free"
    );
    assert_eq!(
        world.store.command_states[&id],
        vec![
            CommandState::Queued,
            CommandState::Sent,
            CommandState::TimedOut
        ]
    );
    assert!(
        !world.agents[0].running.contains(&id),
        "the process was killed"
    );
}

#[test]
fn the_timeout_defaults_to_the_allow_list_maximum() {
    let mut world = connected(42);
    world.agents[0]
        .behaviours
        .insert("sleep".into(), Behaviour::Hang);
    let id = request(2);
    world.submit(NODE, execute(id, "sleep", &["100"], None), secs(60));
    world.run_for(secs(59));
    assert!(
        !world.store.results.contains_key(&id),
        "not before the 60 s maximum"
    );
    world.run_for(secs(2));
    assert_eq!(
        world.store.results[&id].error.as_ref().map(|e| e.code),
        Some(ErrorCode::Timeout)
    );
}

#[test]
fn a_timeout_over_the_maximum_is_blocked() {
    let mut world = connected(43);
    let id = request(3);
    world.submit(NODE, execute(id, "sleep", &["1"], Some(120_000)), secs(120));
    world.run_for(secs(1));
    assert_eq!(world.agents[0].runs.get(&id), None, "it never ran");
    let result = &world.store.results[&id];
    assert_eq!(
        result.error.as_ref().map(|e| e.code),
        Some(ErrorCode::Blocked)
    );
    assert_eq!(
        world.store.command_states[&id].last(),
        Some(&CommandState::Blocked)
    );
}

#[test]
fn a_queued_command_starts_when_a_slot_frees() {
    let mut world = connected(44);
    world.agents[0]
        .behaviours
        .insert("sleep".into(), Behaviour::Hang);
    for n in 0..5 {
        world.submit(
            NODE,
            execute(request(10 + n), "sleep", &["100"], Some(5_000)),
            secs(5),
        );
    }
    world.run_for(secs(1));
    assert_eq!(world.agents[0].engine.running_commands(), 4, "four at once");
    assert_eq!(world.agents[0].runs.get(&request(14)), None);
    world.run_for(secs(5));
    assert_eq!(
        world.agents[0].runs.get(&request(14)),
        Some(&1),
        "the fifth started"
    );
    world.run_for(secs(6));
    for n in 0..5 {
        assert_eq!(
            world.store.command_states[&request(10 + n)].last(),
            Some(&CommandState::TimedOut)
        );
    }
}

#[test]
fn past_the_queue_the_answer_is_busy() {
    let mut world = connected(45);
    world.agents[0]
        .behaviours
        .insert("sleep".into(), Behaviour::Hang);
    for n in 0..21 {
        world.submit(
            NODE,
            execute(request(100 + n), "sleep", &["100"], Some(50_000)),
            secs(50),
        );
    }
    world.run_for(secs(1));
    let busy = &world.store.results[&request(120)];
    assert_eq!(busy.error.as_ref().map(|e| e.code), Some(ErrorCode::Busy));
    assert_eq!(
        world.store.command_states[&request(120)].last(),
        Some(&CommandState::Failed)
    );
}
