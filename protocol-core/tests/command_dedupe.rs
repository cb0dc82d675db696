//! A request runs at most once, whatever is repeated: a duplicate while it
//! runs is ignored, a duplicate after it ended (even after a reconnect) is
//! answered from the record, and duplicated frames change nothing.

mod common;

use common::*;
use nap_core::agent::{AgentEvent, Decision};
use nap_core::testing::NetFaults;
use nap_core::testing::{Behaviour, World};

fn duplicates(world: &World) -> usize {
    world.agents[0]
        .events
        .iter()
        .filter(|(_, e)| {
            matches!(
                e,
                AgentEvent::CommandDecision {
                    decision: Decision::Duplicate,
                    ..
                }
            )
        })
        .count()
}

#[test]
fn a_duplicate_execute_after_reconnect_never_runs_twice() {
    let mut world = connected(51);
    world.agents[0].behaviours.insert(
        "uptime".into(),
        Behaviour::Succeed {
            after: secs(5),
            stdout: "up 3 days\n".into(),
        },
    );
    let id = request(1);
    world.submit(NODE, execute(id, "uptime", &[], None), secs(30));
    world.run_for(secs(1));
    assert_eq!(world.agents[0].runs.get(&id), Some(&1));

    // The connection drops while it runs; central re-sends the unanswered
    // request after the reconnect (the hub does it on its own), and once more
    // by hand.
    world.cut_transports();
    world.run_for(secs(1));
    assert!(!established(&world, 0));
    assert!(world.run_until_true(secs(60), |w| established(w, 0)));
    assert!(world.deliver_to(NODE, execute(id, "uptime", &[], None)));
    world.run_for(secs(10));
    // And once more after it finished.
    assert!(world.deliver_to(NODE, execute(id, "uptime", &[], None)));
    world.run_for(secs(1));

    assert_eq!(world.agents[0].runs.get(&id), Some(&1), "ran exactly once");
    assert_eq!(
        duplicates(&world),
        3,
        "the hub's re-delivery and two by hand"
    );
    assert_eq!(world.store.results[&id].result, "up 3 days\n");
}

#[test]
fn a_duplicate_of_a_finished_request_is_answered_from_the_record() {
    let mut world = connected(52);
    let id = request(2);
    world.submit(NODE, execute(id, "uptime", &[], None), secs(30));
    world.run_for(secs(2));
    let received = world.store.results_received;
    assert!(world.deliver_to(NODE, execute(id, "uptime", &[], None)));
    world.run_for(secs(1));
    assert_eq!(world.agents[0].runs.get(&id), Some(&1));
    assert_eq!(
        world.store.results_received,
        received + 1,
        "the recorded result was sent again"
    );
    assert_eq!(world.agents[0].engine.outbox_len(), 0, "and acked again");
}

#[test]
fn duplicated_frames_run_nothing_twice() {
    let mut world = World::new(53);
    world.net.faults = NetFaults {
        duplicate_permille: 1000,
        ..NetFaults::default()
    };
    world.add_agent(NODE, config(53));
    world.start(0);
    assert!(world.run_until_true(secs(10), |w| established(w, 0)));
    for n in 0..10 {
        world.submit(
            NODE,
            execute(request(100 + n), "uptime", &[], None),
            secs(30),
        );
    }
    world.run_for(secs(120));
    for n in 0..10 {
        assert_eq!(world.agents[0].runs.get(&request(100 + n)), Some(&1));
        assert!(world.store.results.contains_key(&request(100 + n)));
    }
    // Every telemetry sample is stored once however often it arrived.
    assert!(
        world.store.telemetry_received > u64::try_from(world.store.telemetry.len()).unwrap_or(0)
    );
}
