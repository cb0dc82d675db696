//! v0.3 rollouts driven by one process of several (spec §8.3, "Several
//! central processes"): targets held by other processes start when presence
//! says they are there, their commands' stored states drive the rollout,
//! and a process that lost the lease forgets its rollouts.

mod common;

use common::*;
use nap_core::central::rollout::{Amount, OfflineTargets, RolloutState, Strategy};
use nap_core::central::{
    CentralHub, CommandState, HubConfig, HubInput, HubOutput, NewRollout, RolloutWatch,
};
use nap_core::{NodeId, RequestId, RolloutId, Timestamp, WallTime};

const ROLLOUT: RolloutId = RolloutId::from_u128(0xc1);

fn node(i: u128) -> NodeId {
    NodeId::from_u128(0x100 + i)
}

fn request(i: u128) -> RequestId {
    RequestId::from_u128(0x200 + i)
}

fn wall() -> WallTime {
    WallTime::from_unix_millis(1_700_000_000_000).expect("in range")
}

fn clustered_hub() -> CentralHub {
    let mut config = HubConfig::new("nap-central");
    config.clustered = true;
    let mut hub = CentralHub::new(config);
    hub.handle_input(Timestamp::ZERO, HubInput::WallClock(wall()));
    hub
}

fn rollout(targets: u128, strategy: Strategy) -> HubInput {
    HubInput::StartRollout(Box::new(NewRollout {
        rollout_id: ROLLOUT,
        requester: "alice".into(),
        strategy,
        targets: (0..targets).map(|i| (node(i), request(i))).collect(),
        message: execute(RequestId::from_u128(0), "uptime", &[], Some(10_000)),
        timeout: secs(10),
        start_at: wall(),
        approval: None,
        restored: None,
    }))
}

/// Feeds `input` at `now`, fires what is due, and returns the outputs.
fn feed(hub: &mut CentralHub, now: Timestamp, input: HubInput) -> Vec<HubOutput> {
    hub.handle_input(now, input);
    hub.handle_timeout(now);
    std::iter::from_fn(|| hub.poll_output()).collect()
}

fn started(outputs: &[HubOutput]) -> Vec<NodeId> {
    outputs
        .iter()
        .filter_map(|o| match o {
            HubOutput::RolloutStart { node_id, .. } => Some(*node_id),
            _ => None,
        })
        .collect()
}

fn rollout_states(outputs: &[HubOutput]) -> Vec<RolloutState> {
    outputs
        .iter()
        .filter_map(|o| match o {
            HubOutput::RolloutChanged { state, .. } => Some(*state),
            _ => None,
        })
        .collect()
}

fn waiting() -> Strategy {
    Strategy {
        max_concurrency: Amount::Percent(100),
        offline: OfflineTargets::Wait,
        ..Strategy::default()
    }
}

#[test]
fn a_target_held_by_another_process_starts_and_one_held_nowhere_waits() {
    let mut hub = clustered_hub();
    let t = Timestamp::ZERO;
    feed(
        &mut hub,
        t,
        HubInput::RolloutPresence(vec![(node(0), true)]),
    );

    let out = feed(&mut hub, t, rollout(2, waiting()));

    assert_eq!(started(&out), vec![node(0)]);
    assert_eq!(
        hub.rollout_watch(),
        RolloutWatch {
            commands: vec![request(0)],
            nodes: vec![node(1)],
        },
        "the started command is read from the store; the waiting node from presence"
    );
    let out = feed(
        &mut hub,
        t,
        HubInput::RolloutPresence(vec![(node(1), true)]),
    );
    assert_eq!(
        started(&out),
        vec![node(1)],
        "it starts once presence has it"
    );
    let again = feed(
        &mut hub,
        t,
        HubInput::RolloutPresence(vec![(node(1), true)]),
    );
    assert!(started(&again).is_empty(), "each target starts once");
}

#[test]
fn stored_states_of_commands_held_elsewhere_drive_the_rollout_to_its_halt() {
    let mut hub = clustered_hub();
    let t = Timestamp::ZERO;
    let presence = (0..3).map(|i| (node(i), true)).collect();
    feed(&mut hub, t, HubInput::RolloutPresence(presence));
    let strategy = Strategy {
        max_concurrency: Amount::Count(2),
        ..Strategy::default()
    };
    let out = feed(&mut hub, t, rollout(3, strategy));
    assert_eq!(started(&out), vec![node(0), node(1)]);

    // Read again and again as the driver polls: each state counts once.
    let sent = vec![
        (request(0), CommandState::Sent),
        (request(1), CommandState::Sent),
    ];
    assert!(started(&feed(&mut hub, t, HubInput::RolloutCommands(sent.clone()))).is_empty());
    assert!(started(&feed(&mut hub, t, HubInput::RolloutCommands(sent))).is_empty());
    let out = feed(
        &mut hub,
        t,
        HubInput::RolloutCommands(vec![(request(0), CommandState::Succeeded)]),
    );
    assert_eq!(started(&out), vec![node(2)], "a freed slot is used");
    let out = feed(
        &mut hub,
        t,
        HubInput::RolloutCommands(vec![(request(1), CommandState::Failed)]),
    );
    assert_eq!(rollout_states(&out), vec![RolloutState::Halted]);
    assert_eq!(
        hub.rollout_watch().commands,
        vec![request(2)],
        "ended targets are no longer read; the one in flight is"
    );
}

#[test]
fn a_process_that_lost_the_lease_forgets_its_rollouts() {
    let mut hub = clustered_hub();
    let t = Timestamp::ZERO;
    feed(
        &mut hub,
        t,
        HubInput::RolloutPresence(vec![(node(0), true)]),
    );
    let strategy = Strategy {
        max_concurrency: Amount::Count(1),
        offline: OfflineTargets::Wait,
        ..Strategy::default()
    };
    feed(&mut hub, t, rollout(2, strategy));
    assert!(hub.rollout(ROLLOUT).is_some());

    let out = feed(&mut hub, t, HubInput::DropRollouts);

    assert!(out.is_empty(), "forgetting changes nothing stored: {out:?}");
    assert!(hub.rollout(ROLLOUT).is_none());
    assert_eq!(hub.rollout_watch(), RolloutWatch::default());
    let out = feed(
        &mut hub,
        t,
        HubInput::RolloutCommands(vec![(request(0), CommandState::Succeeded)]),
    );
    let out2 = feed(
        &mut hub,
        t,
        HubInput::RolloutPresence(vec![(node(1), true)]),
    );
    assert!(
        started(&out).is_empty() && started(&out2).is_empty(),
        "nothing starts here once another process drives it"
    );
    let later = t + secs(25 * 3600);
    hub.handle_timeout(later);
    let out: Vec<HubOutput> = std::iter::from_fn(|| hub.poll_output()).collect();
    assert!(
        rollout_states(&out).is_empty(),
        "its deadline is not this process's to mark either: {out:?}"
    );
}
