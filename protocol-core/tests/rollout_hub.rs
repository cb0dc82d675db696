//! v0.3 rollouts driven by the hub over real agent engines (spec §8.3): each
//! target gets an ordinary command when its turn comes, its states drive the
//! rollout, failing nodes halt it, offline ones are skipped, and pause,
//! resume and abort reach it through the hub.

mod common;

use common::*;
use nap_core::agent::AgentConfig;
use nap_core::central::rollout::{Amount, ErrorMode, RolloutState, Strategy, TargetState};
use nap_core::central::{
    CommandState, ControlRefusal, HubInput, NewRollout, Restored, RolloutControl,
};
use nap_core::policy::Policy;
use nap_core::testing::World;
use nap_core::{NodeId, RequestId, RolloutId};

const ROLLOUT: RolloutId = RolloutId::from_u128(0xa11);

fn node(i: usize) -> NodeId {
    NodeId::from_u128(0x100 + i as u128)
}

/// `n` agents, all connected except `offline`; those in `failing` allow
/// nothing (what they are sent ends `blocked`).
fn fleet(seed: u64, n: usize, failing: &[usize], offline: &[usize]) -> World {
    let mut world = World::new(seed);
    for i in 0..n {
        let mut config = AgentConfig::new(node(i), seed + i as u64);
        config.policy = if failing.contains(&i) {
            Policy::deny_all()
        } else {
            policy()
        };
        world.add_agent(node(i), config);
        if !offline.contains(&i) {
            world.start(i);
        }
    }
    let online = n - offline.len();
    assert!(
        world.run_until_true(secs(10), |w| (0..n).filter(|i| established(w, *i)).count()
            == online),
        "the fleet did not connect"
    );
    world
}

fn targets(n: usize) -> Vec<NodeId> {
    (0..n).map(node).collect()
}

fn uptime() -> nap_core::wire::CentralMessage {
    execute(RequestId::from_u128(0), "uptime", &[], Some(10_000))
}

fn states(world: &World) -> &[RolloutState] {
    world
        .store
        .rollout_states
        .get(&ROLLOUT)
        .map_or(&[], Vec::as_slice)
}

fn target(world: &World, i: usize) -> TargetState {
    *world.store.rollout_targets[&(ROLLOUT, node(i))]
        .last()
        .expect("a state")
}

fn ran(world: &World, i: usize) -> u32 {
    world.agents[i].runs.values().sum()
}

#[test]
fn a_canary_then_a_bake_then_the_rest_every_target_once() {
    let mut world = fleet(1, 6, &[], &[]);
    let strategy = Strategy {
        canary: Some(Amount::Count(1)),
        bake: secs(120),
        max_concurrency: Amount::Count(2),
        ..Strategy::default()
    };
    world.start_rollout(ROLLOUT, &targets(6), uptime(), strategy);
    assert!(world.run_until_true(secs(30), |w| states(w).contains(&RolloutState::Baking)));
    assert_eq!(ran(&world, 0), 1, "the canary ran");
    assert!((1..6).all(|i| ran(&world, i) == 0), "alone");
    world.run_for(secs(100));
    assert!(
        (1..6).all(|i| ran(&world, i) == 0),
        "nothing while it bakes"
    );
    assert!(world.run_until_true(secs(120), |w| states(w).last()
        == Some(&RolloutState::Succeeded)));
    assert_eq!(
        states(&world),
        [
            RolloutState::Canary,
            RolloutState::Baking,
            RolloutState::Rolling,
            RolloutState::Succeeded
        ]
    );
    for i in 0..6 {
        assert_eq!(ran(&world, i), 1, "target {i} ran once");
        assert_eq!(
            target(&world, i),
            TargetState::Command(CommandState::Succeeded)
        );
        let request_id = RequestId::from_u128(1000 + i as u128);
        assert_eq!(
            world.store.command_states[&request_id].last(),
            Some(&CommandState::Succeeded),
            "an ordinary command with its own request id"
        );
    }
}

#[test]
fn failing_nodes_halt_it_at_the_configured_error_count() {
    let mut world = fleet(2, 8, &[1, 2, 5], &[]);
    let strategy = Strategy {
        max_concurrency: Amount::Count(4),
        max_errors: Amount::Count(1),
        error_mode: ErrorMode::Strict,
        ..Strategy::default()
    };
    world.start_rollout(ROLLOUT, &targets(8), uptime(), strategy);
    assert!(world.run_until_true(secs(60), |w| states(w).last()
        == Some(&RolloutState::Halted)));
    world.run_for(secs(60));
    assert_eq!(
        target(&world, 1),
        TargetState::Command(CommandState::Blocked)
    );
    assert_eq!(
        target(&world, 2),
        TargetState::Command(CommandState::Blocked)
    );
    let failed = (0..8).filter(|i| target(&world, *i).is_error()).count();
    assert_eq!(failed, 2, "strict: never more than maxErrors + 1");
    for i in 3..8 {
        assert_eq!(ran(&world, i), 0, "target {i} never started after the halt");
        assert_eq!(
            target(&world, i),
            TargetState::Command(CommandState::Cancelled)
        );
    }
}

#[test]
fn an_offline_target_is_skipped_and_the_rest_completes() {
    let mut world = fleet(3, 4, &[], &[2]);
    world.start_rollout(
        ROLLOUT,
        &targets(4),
        uptime(),
        Strategy {
            max_concurrency: Amount::Percent(100),
            ..Strategy::default()
        },
    );
    assert!(world.run_until_true(secs(30), |w| {
        states(w).last().is_some_and(|s| s.is_terminal())
    }));
    assert_eq!(
        states(&world).last(),
        Some(&RolloutState::CompletedWithSkips)
    );
    assert_eq!(target(&world, 2), TargetState::Skipped);
    assert!([0, 1, 3].iter().all(|i| ran(&world, *i) == 1));
}

#[test]
fn pause_resume_and_abort_reach_the_rollout_through_the_hub() {
    let mut world = fleet(4, 6, &[], &[]);
    let strategy = Strategy {
        max_concurrency: Amount::Count(1),
        ..Strategy::default()
    };
    world.start_rollout(ROLLOUT, &targets(6), uptime(), strategy);
    assert_eq!(
        world.control_rollout(ROLLOUT, RolloutControl::Pause),
        Ok(RolloutState::Paused)
    );
    world.run_for(secs(600));
    let started: u32 = (0..6).map(|i| ran(&world, i)).sum();
    assert_eq!(started, 1, "what ran when it paused ran; nothing more");
    assert_eq!(
        world.control_rollout(ROLLOUT, RolloutControl::Resume),
        Ok(RolloutState::Rolling)
    );
    assert!(world.run_until_true(secs(30), |w| (0..6).map(|i| ran(w, i)).sum::<u32>() >= 3));
    assert_eq!(
        world.control_rollout(ROLLOUT, RolloutControl::Pause),
        Ok(RolloutState::Paused)
    );
    assert_eq!(
        world.control_rollout(ROLLOUT, RolloutControl::Abort),
        Ok(RolloutState::Aborted),
        "abort works while paused"
    );
    world.run_for(secs(600));
    let started: u32 = (0..6).map(|i| ran(&world, i)).sum();
    assert!(started < 6, "what had not started never does");
    assert_eq!(states(&world).last(), Some(&RolloutState::Aborted));
    assert_eq!(
        world.control_rollout(ROLLOUT, RolloutControl::Resume),
        Err(ControlRefusal::Unknown),
        "ended and forgotten by the hub (the store keeps it)"
    );
}

#[test]
fn a_target_s_command_waiting_for_its_node_expires_with_the_rollout_s_deadline() {
    // Central restarted with a target started; its node is not back.
    let mut world = fleet(5, 2, &[], &[0, 1]);
    let request_id = RequestId::from_u128(1000);
    let new = NewRollout {
        rollout_id: ROLLOUT,
        requester: "alice".into(),
        strategy: Strategy {
            deadline: secs(600),
            max_concurrency: Amount::Count(1),
            ..Strategy::default()
        },
        targets: vec![(node(0), request_id), (node(1), RequestId::from_u128(1001))],
        message: uptime(),
        timeout: secs(10),
        start_at: world.wall(),
        approval: None,
        restored: Some(Restored {
            state: RolloutState::Rolling,
            targets: vec![
                TargetState::Command(CommandState::Sent),
                TargetState::Pending,
            ],
            commands: None,
        }),
    };
    world.hub_input(HubInput::StartRollout(Box::new(new)));
    // The open command, restored as central does, waits for its node.
    let message = execute(request_id, "uptime", &[], Some(10_000));
    assert_eq!(
        world.submit(node(0), message, secs(10)),
        CommandState::Queued
    );
    world.run_for(secs(590));
    assert_eq!(
        world.store.command_states[&request_id].last(),
        Some(&CommandState::Queued)
    );
    world.run_for(secs(20));
    assert_eq!(
        world.store.command_states[&request_id].last(),
        Some(&CommandState::Expired),
        "with the deadline, not after the usual hour"
    );
    assert_eq!(states(&world).last(), Some(&RolloutState::DeadlinePassed));
}

#[test]
fn a_rollout_taken_over_from_a_stale_store_goes_by_what_the_hub_knows_of_its_commands() {
    let mut world = fleet(7, 3, &[], &[]);
    let strategy = Strategy {
        max_concurrency: Amount::Count(1),
        ..Strategy::default()
    };
    world.start_rollout(ROLLOUT, &targets(3), uptime(), strategy.clone());
    let request = |i: u128| RequestId::from_u128(1000 + i);
    assert!(world.run_until_true(secs(30), |w| {
        w.store
            .command_states
            .get(&request(1))
            .is_some_and(|s| s.contains(&CommandState::Sent))
    }));

    // Another process took the lease and gave it back (or this one took
    // over from a driver that died) with the store's rows behind: target 0
    // still `sent` although it succeeded, target 1 still `pending` although
    // its command is out.
    world.hub_input(HubInput::DropRollouts);
    let restored = NewRollout {
        rollout_id: ROLLOUT,
        requester: "alice".into(),
        strategy,
        targets: (0..3).map(|i| (node(i), request(i as u128))).collect(),
        message: uptime(),
        timeout: secs(30),
        start_at: world.wall(),
        approval: None,
        restored: Some(Restored {
            state: RolloutState::Rolling,
            targets: vec![
                TargetState::Command(CommandState::Sent),
                TargetState::Pending,
                TargetState::Pending,
            ],
            commands: None,
        }),
    };
    world.hub_input(HubInput::StartRollout(Box::new(restored)));

    assert!(
        world.run_until_true(secs(300), |w| states(w).last()
            == Some(&RolloutState::Succeeded)),
        "it completes: {:?}",
        states(&world)
    );
    for i in 0..3 {
        assert_eq!(ran(&world, i), 1, "target {i} ran once");
    }
}

#[test]
fn a_restored_rollout_takes_its_targets_from_their_stored_commands_and_brings_its_rows_up_to_date()
{
    use std::collections::BTreeMap;
    let mut world = fleet(9, 3, &[], &[]);
    let plan = nap_core::testing::rollout_plan(&targets(3));
    // The rows lag: target 0's command ended (its row says sent), target
    // 1's row says sent but its command was never stored (a crash in
    // between), target 2 has not started.
    let commands = BTreeMap::from([(plan[0].1, CommandState::Succeeded)]);
    let new = NewRollout {
        rollout_id: ROLLOUT,
        requester: "alice".into(),
        strategy: Strategy {
            max_concurrency: Amount::Count(3),
            ..Strategy::default()
        },
        targets: plan,
        message: uptime(),
        timeout: secs(10),
        start_at: world.wall(),
        approval: None,
        restored: Some(Restored {
            state: RolloutState::Rolling,
            targets: vec![
                TargetState::Command(CommandState::Sent),
                TargetState::Command(CommandState::Sent),
                TargetState::Pending,
            ],
            commands: Some(commands),
        }),
    };
    world.hub_input(HubInput::StartRollout(Box::new(new)));
    let first = |w: &World, i: usize| w.store.rollout_targets[&(ROLLOUT, node(i))][0];
    assert_eq!(
        first(&world, 0),
        TargetState::Command(CommandState::Succeeded),
        "its row is brought up to date"
    );
    assert_eq!(first(&world, 1), TargetState::Pending, "it never started");
    assert!(
        !world
            .store
            .rollout_targets
            .contains_key(&(ROLLOUT, node(2))),
        "a row that does not lag is not written"
    );
    assert!(world.run_until_true(secs(180), |w| states(w).last()
        == Some(&RolloutState::Succeeded)));
    assert_eq!(ran(&world, 0), 0, "it had run before the restart");
    assert_eq!((ran(&world, 1), ran(&world, 2)), (1, 1));
    for i in 0..3 {
        assert_eq!(
            target(&world, i),
            TargetState::Command(CommandState::Succeeded)
        );
    }
}
