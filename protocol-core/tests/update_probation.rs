//! A newly installed agent version is on probation (spec/protocol.md §8):
//! kept once it reaches an established session, rolled back if it has not
//! by the deadline the update set. The deadline is a wall-clock time (it
//! survives the restart into the new version); the engine turns it into a
//! timer on its own clock.

mod common;

use common::*;
use nap_core::agent::{AgentInput, AgentTimer};
use nap_core::testing::World;

fn on_probation(world: &mut World, seconds: i64) {
    let deadline = world.wall().add_millis(seconds * 1000);
    world.agent_input(0, AgentInput::UpdateOnProbation { deadline });
}

#[test]
fn a_new_version_that_connects_is_kept() {
    let mut world = World::new(111);
    world.add_agent(NODE, config(111));
    on_probation(&mut world, 120);
    world.start(0);
    assert!(world.run_until_true(secs(5), |w| established(w, 0)));
    assert_eq!(world.agents[0].update_fates, vec![true]);
    world.run_for(secs(300));
    assert_eq!(
        world.agents[0].update_fates,
        vec![true],
        "never rolled back after"
    );
    assert!(
        !world.agents[0]
            .engine
            .timers()
            .any(|(t, _)| *t == AgentTimer::UpdateProbation)
    );
}

#[test]
fn a_new_version_that_cannot_reach_central_is_rolled_back_at_the_deadline() {
    let mut world = World::new(112);
    world.add_agent(NODE, config(112));
    world.set_partitioned(true);
    on_probation(&mut world, 120);
    world.start(0);
    world.run_for(secs(119));
    assert!(
        world.agents[0].update_fates.is_empty(),
        "not before the deadline"
    );
    world.run_for(secs(2));
    assert_eq!(world.agents[0].update_fates, vec![false]);
}

#[test]
fn a_deadline_already_past_at_start_rolls_back_at_once() {
    let mut world = World::new(113);
    world.add_agent(NODE, config(113));
    on_probation(&mut world, -5);
    world.run_for(secs(1));
    assert_eq!(world.agents[0].update_fates, vec![false]);
}
