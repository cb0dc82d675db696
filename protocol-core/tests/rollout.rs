//! v0.3 rollouts (spec §8.3), one rule per test: the canary goes first and
//! alone, the bake waits, in flight stays within `maxConcurrency`, the
//! error budget halts (fast: no new starts past it; strict: never more than
//! `maxErrors + 1` failures), offline targets are skipped, waited for or
//! failed, pause and resume keep their place, abort and the deadline cancel
//! what has not started, and every target ends in exactly one state.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use nap_core::central::CommandState;
use nap_core::central::rollout::{
    Amount, ErrorMode, Limits, OfflineTargets, Rollout, RolloutOutput, RolloutRefusal,
    RolloutState, Selector, Strategy, TargetState,
};
use nap_core::{NodeId, RequestId, Timestamp};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn node(n: usize) -> NodeId {
    NodeId::from_u128(n as u128 + 1)
}

/// A rollout over `n` targets with only the network and the clock around
/// it: what it starts is sent at once and stays in flight until the test
/// ends it.
struct Fleet {
    rollout: Rollout,
    now: Timestamp,
    /// Started, in order.
    started: Vec<NodeId>,
    /// Every state each target went through.
    history: BTreeMap<NodeId, Vec<TargetState>>,
    states: Vec<RolloutState>,
    /// The most in flight at once.
    peak: usize,
}

impl Fleet {
    fn new(n: usize, strategy: Strategy) -> Self {
        Self::with_offline(n, strategy, &[])
    }

    fn with_offline(n: usize, strategy: Strategy, offline: &[usize]) -> Self {
        let targets = (0..n)
            .map(|i| (node(i), RequestId::from_u128(1000 + i as u128)))
            .collect();
        let online: BTreeSet<NodeId> = (0..n).filter(|i| !offline.contains(i)).map(node).collect();
        let mut fleet = Self {
            rollout: Rollout::new(strategy, targets, online, Timestamp::ZERO),
            now: Timestamp::ZERO,
            started: Vec::new(),
            history: BTreeMap::new(),
            states: Vec::new(),
            peak: 0,
        };
        fleet.rollout.handle_timeout(fleet.now);
        fleet.pump();
        fleet
    }

    /// Performs what the rollout asked: a started target is delivered
    /// (`sent`) at once.
    fn pump(&mut self) {
        while let Some(output) = self.rollout.poll_output() {
            match output {
                RolloutOutput::Start { node_id, .. } => {
                    self.started.push(node_id);
                    self.rollout
                        .handle_command(self.now, node_id, CommandState::Sent);
                }
                RolloutOutput::TargetChanged { node_id, state } => {
                    self.history.entry(node_id).or_default().push(state);
                }
                RolloutOutput::StateChanged(state) => self.states.push(state),
            }
            self.peak = self.peak.max(self.rollout.counts().in_flight);
        }
    }

    fn in_flight(&self) -> Vec<NodeId> {
        self.rollout
            .targets()
            .iter()
            .filter(|t| matches!(t.state, TargetState::Command(s) if !s.is_terminal()))
            .map(|t| t.node_id)
            .collect()
    }

    fn end(&mut self, node_id: NodeId, state: CommandState) {
        self.rollout.handle_command(self.now, node_id, state);
        self.pump();
    }

    /// Ends every target in flight now as `state`.
    fn end_all(&mut self, state: CommandState) {
        for node_id in self.in_flight() {
            self.end(node_id, state);
        }
    }

    fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        while let Some(at) = self.rollout.poll_timeout().filter(|at| *at <= until) {
            self.now = at;
            self.rollout.handle_timeout(at);
            self.pump();
        }
        self.now = until;
        self.rollout.handle_timeout(until);
        self.pump();
    }

    fn state_of(&self, i: usize) -> TargetState {
        self.rollout.target(node(i)).expect("a target").state
    }

    /// Every target ended, in exactly one terminal state: the last it went
    /// through, and the only terminal one.
    fn assert_each_ended_once(&self) {
        for target in self.rollout.targets() {
            assert!(target.state.is_terminal(), "{target:?}");
            let history = &self.history[&target.node_id];
            let terminal: Vec<_> = history.iter().filter(|s| s.is_terminal()).collect();
            assert_eq!(terminal, [&target.state], "{history:?}");
        }
    }
}

fn strategy() -> Strategy {
    Strategy {
        max_concurrency: Amount::Count(3),
        ..Strategy::default()
    }
}

#[test]
fn percentages_round_to_the_careful_side_and_the_numbers_are_absolute() {
    let s = Strategy {
        canary: Some(Amount::Percent(1)),
        max_concurrency: Amount::Percent(10),
        max_errors: Amount::Percent(10),
        ..Strategy::default()
    };
    let limits = Limits::of(&s, 25);
    assert_eq!(limits.canary, 1, "1 % of 25 rounds up");
    assert_eq!(limits.max_concurrency, 3, "10 % of 25 rounds up");
    assert_eq!(limits.max_errors, 2, "10 % of 25 rounds down");
    assert_eq!(limits.strict_in_flight, None);
    let tiny = Limits::of(
        &Strategy {
            max_concurrency: Amount::Percent(0),
            max_errors: Amount::Count(50),
            canary: Some(Amount::Count(9)),
            error_mode: ErrorMode::Strict,
            ..Strategy::default()
        },
        4,
    );
    assert_eq!(tiny.max_concurrency, 1, "never less than one at a time");
    assert_eq!(tiny.canary, 4, "a count is at most the targets");
    assert_eq!(tiny.max_errors, 4);
    assert_eq!(tiny.strict_in_flight, Some(1));
    assert_eq!(Limits::of(&Strategy::default(), 0).max_concurrency, 0);
}

#[test]
fn amounts_are_counts_or_percentages() {
    let parse = |json: &str| serde_json::from_str::<Amount>(json);
    assert_eq!(parse("5").ok(), Some(Amount::Count(5)));
    assert_eq!(parse("\"5\"").ok(), Some(Amount::Count(5)));
    assert_eq!(parse("\"25%\"").ok(), Some(Amount::Percent(25)));
    assert!(parse("\"101%\"").is_err());
    assert!(parse("\"-1\"").is_err());
    assert!(parse("\"ten\"").is_err());
    assert_eq!(
        serde_json::to_string(&Amount::Percent(10)).ok().as_deref(),
        Some("\"10%\"")
    );
}

#[test]
fn a_selector_is_every_term_at_once() {
    let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let s: Selector = "role=web, env=prod".parse().expect("parses");
    assert!(s.matches(&labels(&[("role", "web"), ("env", "prod"), ("dc", "x")])));
    assert!(!s.matches(&labels(&[("role", "web"), ("env", "dev")])));
    assert!(!s.matches(&labels(&[("role", "web")])));
    let s: Selector = "role=web,env!=prod,canary".parse().expect("parses");
    assert!(s.matches(&labels(&[("role", "web"), ("canary", "")])));
    assert!(!s.matches(&labels(&[("role", "web"), ("env", "prod"), ("canary", "")])));
    assert_eq!(s.to_string(), "role=web,env!=prod,canary");
    assert!("=web".parse::<Selector>().is_err());
    assert!("ro le=web".parse::<Selector>().is_err());
    assert!("".parse::<Selector>().expect("empty").matches(&labels(&[])));
}

#[test]
fn in_flight_never_exceeds_max_concurrency_and_freed_slots_are_refilled() {
    let mut fleet = Fleet::new(10, strategy());
    assert_eq!(fleet.states, [RolloutState::Rolling]);
    assert_eq!(fleet.started, [node(0), node(1), node(2)]);
    fleet.end(node(1), CommandState::Succeeded);
    assert_eq!(fleet.started.len(), 4, "one slot freed, one started");
    assert_eq!(fleet.started[3], node(3), "in order");
    while fleet.rollout.counts().pending + fleet.rollout.counts().in_flight > 0 {
        fleet.end_all(CommandState::Succeeded);
    }
    assert_eq!(fleet.peak, 3);
    assert_eq!(fleet.rollout.state(), RolloutState::Succeeded);
    fleet.assert_each_ended_once();
}

#[test]
fn the_canary_goes_first_and_alone_then_the_bake_then_the_rest() {
    let mut fleet = Fleet::new(
        10,
        Strategy {
            canary: Some(Amount::Count(2)),
            bake: secs(600),
            max_concurrency: Amount::Count(5),
            ..Strategy::default()
        },
    );
    assert_eq!(fleet.states, [RolloutState::Canary]);
    assert_eq!(fleet.started, [node(0), node(1)], "only the canary");
    fleet.end(node(0), CommandState::Succeeded);
    assert_eq!(
        fleet.started.len(),
        2,
        "the rest waits for the whole canary"
    );
    fleet.end(node(1), CommandState::Succeeded);
    assert_eq!(fleet.rollout.state(), RolloutState::Baking);
    fleet.advance(secs(599));
    assert_eq!(fleet.started.len(), 2, "nothing starts while it bakes");
    fleet.advance(secs(1));
    assert_eq!(fleet.rollout.state(), RolloutState::Rolling);
    assert_eq!(fleet.started.len(), 7, "then five at once");
    assert!(fleet.rollout.targets()[..2].iter().all(|t| t.canary));
    assert!(fleet.rollout.targets()[2..].iter().all(|t| !t.canary));
}

#[test]
fn a_failing_canary_halts_before_the_rest_starts() {
    let mut fleet = Fleet::new(
        10,
        Strategy {
            canary: Some(Amount::Count(2)),
            bake: secs(600),
            max_concurrency: Amount::Count(5),
            ..Strategy::default()
        },
    );
    fleet.end(node(0), CommandState::Failed);
    assert_eq!(fleet.rollout.state(), RolloutState::Halted);
    assert_eq!(fleet.started.len(), 2);
    // What was in flight still reports; nothing new starts.
    fleet.end(node(1), CommandState::Succeeded);
    fleet.advance(secs(3600));
    assert_eq!(fleet.started.len(), 2);
    assert_eq!(
        fleet.state_of(1),
        TargetState::Command(CommandState::Succeeded)
    );
    assert_eq!(
        fleet.state_of(5),
        TargetState::Command(CommandState::Cancelled)
    );
    fleet.assert_each_ended_once();
}

#[test]
fn fast_mode_halts_once_failures_pass_max_errors_and_starts_nothing_after() {
    let mut fleet = Fleet::new(
        20,
        Strategy {
            max_concurrency: Amount::Count(4),
            max_errors: Amount::Count(1),
            ..Strategy::default()
        },
    );
    fleet.end(node(0), CommandState::Failed);
    assert_eq!(
        fleet.rollout.state(),
        RolloutState::Rolling,
        "one is tolerated"
    );
    assert_eq!(fleet.started.len(), 5);
    fleet.end(node(1), CommandState::TimedOut);
    assert_eq!(fleet.rollout.state(), RolloutState::Halted);
    let started = fleet.started.len();
    // In flight when it halted: they may still fail (the overshoot fast
    // mode allows), and are recorded.
    fleet.end_all(CommandState::Failed);
    assert_eq!(fleet.started.len(), started, "nothing new after the halt");
    assert_eq!(fleet.rollout.counts().failed, 5);
    assert_eq!(fleet.rollout.state(), RolloutState::Halted);
    fleet.assert_each_ended_once();
}

#[test]
fn strict_mode_never_lets_failures_pass_max_errors_plus_one() {
    let mut fleet = Fleet::new(
        20,
        Strategy {
            max_concurrency: Amount::Count(10),
            max_errors: Amount::Count(2),
            error_mode: ErrorMode::Strict,
            ..Strategy::default()
        },
    );
    assert_eq!(fleet.rollout.limits().strict_in_flight, Some(3));
    assert_eq!(fleet.started.len(), 3, "errors allowed + 1 in flight");
    fleet.end(node(0), CommandState::Failed);
    assert_eq!(
        fleet.in_flight().len(),
        2,
        "one fewer allowed, one fewer in flight"
    );
    fleet.end(node(1), CommandState::Succeeded);
    assert_eq!(fleet.in_flight().len(), 2);
    // Everything in flight fails, as long as it takes.
    while fleet.rollout.counts().in_flight > 0 {
        fleet.end_all(CommandState::Failed);
    }
    assert_eq!(fleet.rollout.state(), RolloutState::Halted);
    assert_eq!(
        fleet.rollout.counts().failed,
        3,
        "max_errors + 1, never more"
    );
    fleet.assert_each_ended_once();
}

#[test]
fn strict_mode_with_no_errors_allowed_is_one_at_a_time() {
    let mut fleet = Fleet::new(
        5,
        Strategy {
            max_concurrency: Amount::Percent(100),
            error_mode: ErrorMode::Strict,
            ..Strategy::default()
        },
    );
    for i in 0..5 {
        assert_eq!(fleet.in_flight(), [node(i)]);
        fleet.end(node(i), CommandState::Succeeded);
    }
    assert_eq!(fleet.peak, 1);
    assert_eq!(fleet.rollout.state(), RolloutState::Succeeded);
}

#[test]
fn an_offline_target_is_skipped_when_its_turn_comes_and_holds_no_slot() {
    let mut fleet = Fleet::with_offline(4, strategy(), &[1]);
    assert_eq!(fleet.started, [node(0), node(2), node(3)]);
    assert_eq!(fleet.state_of(1), TargetState::Skipped);
    fleet.end_all(CommandState::Succeeded);
    assert_eq!(fleet.rollout.state(), RolloutState::CompletedWithSkips);
    fleet.assert_each_ended_once();
}

#[test]
fn an_offline_target_can_be_waited_for_until_it_is_back() {
    let mut fleet = Fleet::with_offline(
        4,
        Strategy {
            offline: OfflineTargets::Wait,
            ..strategy()
        },
        &[0],
    );
    assert_eq!(fleet.started, [node(1), node(2), node(3)], "no slot held");
    fleet.end_all(CommandState::Succeeded);
    assert_eq!(
        fleet.rollout.state(),
        RolloutState::Rolling,
        "still waiting"
    );
    fleet.rollout.handle_online(fleet.now, node(0), true);
    fleet.pump();
    assert_eq!(fleet.started.last(), Some(&node(0)));
    fleet.end(node(0), CommandState::Succeeded);
    assert_eq!(fleet.rollout.state(), RolloutState::Succeeded);
    fleet.assert_each_ended_once();
}

#[test]
fn a_target_waited_for_past_the_deadline_is_cancelled() {
    let mut fleet = Fleet::with_offline(
        2,
        Strategy {
            offline: OfflineTargets::Wait,
            deadline: secs(3600),
            ..strategy()
        },
        &[1],
    );
    fleet.end(node(0), CommandState::Succeeded);
    fleet.advance(secs(3600));
    assert_eq!(fleet.rollout.state(), RolloutState::DeadlinePassed);
    assert_eq!(
        fleet.state_of(1),
        TargetState::Command(CommandState::Cancelled)
    );
    fleet.rollout.handle_online(fleet.now, node(1), true);
    fleet.pump();
    assert_eq!(fleet.started.len(), 1, "nothing starts after the deadline");
    fleet.assert_each_ended_once();
}

#[test]
fn an_offline_target_can_count_as_a_failure() {
    let fleet = Fleet::with_offline(
        6,
        Strategy {
            offline: OfflineTargets::Fail,
            ..strategy()
        },
        &[0],
    );
    assert_eq!(
        fleet.state_of(0),
        TargetState::Command(CommandState::Undeliverable)
    );
    assert_eq!(fleet.rollout.state(), RolloutState::Halted, "max_errors 0");
    assert!(fleet.started.is_empty());
}

#[test]
fn pause_stops_new_starts_and_resume_goes_on_where_it_was() {
    let mut fleet = Fleet::new(6, strategy());
    fleet.rollout.pause(fleet.now).expect("pauses");
    fleet.pump();
    assert_eq!(fleet.rollout.state(), RolloutState::Paused);
    assert_eq!(fleet.rollout.pause(fleet.now), Err(RolloutRefusal::Paused));
    fleet.end_all(CommandState::Succeeded);
    assert_eq!(fleet.started.len(), 3, "what ran is recorded; nothing new");
    assert_eq!(fleet.rollout.counts().succeeded, 3);
    fleet.advance(secs(3600));
    assert_eq!(fleet.started.len(), 3);
    fleet.rollout.resume(fleet.now).expect("resumes");
    fleet.pump();
    assert_eq!(fleet.rollout.state(), RolloutState::Rolling);
    assert_eq!(fleet.started[3..], [node(3), node(4), node(5)]);
    assert_eq!(
        fleet.rollout.resume(fleet.now),
        Err(RolloutRefusal::NotPaused)
    );
}

#[test]
fn a_bake_paused_resumes_with_what_was_left_of_it() {
    let mut fleet = Fleet::new(
        4,
        Strategy {
            canary: Some(Amount::Count(1)),
            bake: secs(600),
            ..strategy()
        },
    );
    fleet.end(node(0), CommandState::Succeeded);
    fleet.advance(secs(400));
    fleet.rollout.pause(fleet.now).expect("pauses");
    fleet.advance(secs(7200));
    assert_eq!(fleet.started.len(), 1);
    fleet.rollout.resume(fleet.now).expect("resumes");
    fleet.pump();
    assert_eq!(fleet.rollout.state(), RolloutState::Baking);
    fleet.advance(secs(199));
    assert_eq!(fleet.started.len(), 1);
    fleet.advance(secs(1));
    assert_eq!(fleet.started.len(), 4);
}

#[test]
fn abort_while_paused_cancels_what_has_not_started() {
    let mut fleet = Fleet::new(6, strategy());
    fleet.rollout.pause(fleet.now).expect("pauses");
    fleet.rollout.abort().expect("aborts while paused");
    fleet.pump();
    assert_eq!(fleet.rollout.state(), RolloutState::Aborted);
    for i in 3..6 {
        assert_eq!(
            fleet.state_of(i),
            TargetState::Command(CommandState::Cancelled)
        );
    }
    fleet.end_all(CommandState::Succeeded);
    assert_eq!(fleet.started.len(), 3);
    assert_eq!(fleet.rollout.abort(), Err(RolloutRefusal::Ended));
    assert_eq!(fleet.rollout.resume(fleet.now), Err(RolloutRefusal::Ended));
    fleet.assert_each_ended_once();
}

#[test]
fn a_freed_slot_is_used_again_only_after_the_batch_wait() {
    let mut fleet = Fleet::new(
        4,
        Strategy {
            max_concurrency: Amount::Count(2),
            batch_wait: secs(30),
            ..Strategy::default()
        },
    );
    fleet.end(node(0), CommandState::Succeeded);
    assert_eq!(fleet.started.len(), 2);
    fleet.advance(secs(29));
    assert_eq!(fleet.started.len(), 2);
    fleet.advance(secs(1));
    assert_eq!(fleet.started.len(), 3);
}

#[test]
fn a_scheduled_rollout_starts_nothing_before_its_time() {
    let targets = (0..3)
        .map(|i| (node(i), RequestId::from_u128(i as u128)))
        .collect();
    let online = (0..3).map(node).collect();
    let start = Timestamp::ZERO + secs(300);
    let mut rollout = Rollout::new(strategy(), targets, online, start);
    rollout.handle_timeout(Timestamp::ZERO + secs(299));
    assert_eq!(rollout.state(), RolloutState::Scheduled);
    assert!(rollout.poll_output().is_none());
    assert_eq!(rollout.poll_timeout(), Some(start));
    rollout.handle_timeout(start);
    assert_eq!(rollout.state(), RolloutState::Rolling);
    assert_eq!(rollout.counts().in_flight, 3);
}

#[test]
fn a_late_or_repeated_state_changes_nothing_once_a_target_ended() {
    let mut fleet = Fleet::new(1, strategy());
    fleet.end(node(0), CommandState::Succeeded);
    fleet.end(node(0), CommandState::Failed);
    fleet.end(node(0), CommandState::Sent);
    assert_eq!(
        fleet.state_of(0),
        TargetState::Command(CommandState::Succeeded)
    );
    assert_eq!(fleet.rollout.state(), RolloutState::Succeeded);
    fleet.assert_each_ended_once();
}

fn restored(
    strategy: Strategy,
    states: &[TargetState],
    state: RolloutState,
    hold: Duration,
) -> Rollout {
    let targets = states
        .iter()
        .enumerate()
        .map(|(i, s)| (node(i), RequestId::from_u128(1000 + i as u128), *s))
        .collect();
    Rollout::restore(
        strategy,
        targets,
        state,
        Timestamp::ZERO,
        Timestamp::ZERO,
        Timestamp::ZERO + hold,
        BTreeSet::new(),
    )
}

fn started(rollout: &mut Rollout) -> Vec<NodeId> {
    std::iter::from_fn(|| rollout.poll_output())
        .filter_map(|o| match o {
            RolloutOutput::Start { node_id, .. } => Some(node_id),
            _ => None,
        })
        .collect()
}

#[test]
fn a_restored_rollout_knows_every_online_node_before_it_takes_a_step() {
    use TargetState::{Command, Pending};
    let strategy = Strategy {
        max_concurrency: Amount::Count(1),
        ..Strategy::default()
    };
    let targets = vec![
        (
            node(0),
            RequestId::from_u128(1000),
            Command(CommandState::Succeeded),
        ),
        (node(1), RequestId::from_u128(1001), Pending),
    ];
    let online = [node(0), node(1)].into_iter().collect();
    let mut rollout = Rollout::restore(
        strategy,
        targets,
        RolloutState::Rolling,
        Timestamp::ZERO,
        Timestamp::ZERO,
        Timestamp::ZERO,
        online,
    );
    rollout.handle_timeout(Timestamp::ZERO);
    assert_eq!(
        started(&mut rollout),
        vec![node(1)],
        "the free slot goes to the online node, which is not skipped"
    );
}

#[test]
fn a_restored_rollout_goes_on_only_after_its_nodes_had_time_to_reconnect() {
    use TargetState::{Command, Pending};
    let mut rollout = restored(
        Strategy {
            max_concurrency: Amount::Count(2),
            ..Strategy::default()
        },
        &[
            Command(CommandState::Succeeded),
            Command(CommandState::Sent),
            Pending,
            Pending,
        ],
        RolloutState::Rolling,
        secs(60),
    );
    assert_eq!(rollout.state(), RolloutState::Rolling);
    assert_eq!(rollout.counts().in_flight, 1);
    assert_eq!(rollout.counts().succeeded, 1);
    // Nobody is back yet: nothing is skipped for central's own restart.
    rollout.handle_timeout(Timestamp::ZERO + secs(1));
    rollout.handle_online(Timestamp::ZERO + secs(1), node(2), true);
    assert!(started(&mut rollout).is_empty(), "held");
    rollout.handle_timeout(Timestamp::ZERO + secs(60));
    assert_eq!(started(&mut rollout), [node(2)], "one slot: one more");
    assert_eq!(rollout.counts().skipped, 0);
    // What was in flight before the restart still counts and ends.
    rollout.handle_command(Timestamp::ZERO + secs(61), node(1), CommandState::Failed);
    assert_eq!(rollout.state(), RolloutState::Halted, "max_errors 0");
    assert_eq!(
        rollout.target(node(3)).map(|t| t.state),
        Some(Command(CommandState::Cancelled))
    );
}

#[test]
fn a_rollout_restored_paused_in_its_canary_resumes_the_canary() {
    use TargetState::{Command, Pending};
    let mut rollout = restored(
        Strategy {
            canary: Some(Amount::Count(2)),
            max_concurrency: Amount::Count(5),
            ..Strategy::default()
        },
        &[Command(CommandState::Succeeded), Pending, Pending, Pending],
        RolloutState::Paused,
        secs(30),
    );
    assert_eq!(rollout.state(), RolloutState::Paused);
    for i in 0..4 {
        rollout.handle_online(Timestamp::ZERO, node(i), true);
    }
    rollout.handle_timeout(Timestamp::ZERO + secs(30));
    assert!(started(&mut rollout).is_empty(), "still paused");
    rollout.resume(Timestamp::ZERO + secs(31)).expect("resumes");
    assert_eq!(rollout.state(), RolloutState::Canary);
    assert_eq!(
        started(&mut rollout),
        [node(1)],
        "the rest of the canary, alone"
    );
}
