//! Model checking of the rollout engine (spec §13): targets ending in any
//! order, nodes coming and going, an operator pausing, resuming and aborting
//! at any moment, deadlines in their order. Breadth-first to a depth that
//! covers each rollout to its end.

use std::time::Duration;

use nap_core::central::rollout::{Amount, ErrorMode, OfflineTargets, Strategy};
use nap_core::testing::model::rollout::RolloutModel;
use stateright::{Checker, Model};

fn check(name: &str, model: RolloutModel, depth: usize) -> usize {
    let extra: usize = std::env::var("NAP_MODEL_DEPTH")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0);
    let depth = depth + extra;
    let checker = model.checker().target_max_depth(depth).spawn_bfs().join();
    eprintln!(
        "model {name}: depth {depth}, {} states explored, {} unique",
        checker.state_count(),
        checker.unique_state_count()
    );
    checker.assert_properties();
    checker.unique_state_count()
}

#[test]
fn strict_mode_never_passes_max_errors_plus_one_whatever_fails_when() {
    let model = RolloutModel {
        strategy: Strategy {
            max_concurrency: Amount::Count(3),
            max_errors: Amount::Count(2),
            error_mode: ErrorMode::Strict,
            ..Strategy::default()
        },
        targets: 6,
        offline: vec![],
        flapping: false,
        approval: false,
    };
    assert!(check("strict", model, 24) > 1_000);
}

#[test]
fn fast_mode_with_a_canary_a_bake_and_a_batch_wait() {
    let model = RolloutModel {
        strategy: Strategy {
            canary: Some(Amount::Count(1)),
            bake: Duration::from_secs(60),
            max_concurrency: Amount::Count(2),
            max_errors: Amount::Count(1),
            batch_wait: Duration::from_secs(10),
            ..Strategy::default()
        },
        targets: 5,
        offline: vec![],
        flapping: false,
        approval: false,
    };
    assert!(check("fast, canary", model, 24) > 1_000);
}

#[test]
fn offline_targets_waited_for_or_failed_while_nodes_come_and_go() {
    for offline in [
        OfflineTargets::Wait,
        OfflineTargets::Fail,
        OfflineTargets::Skip,
    ] {
        let model = RolloutModel {
            strategy: Strategy {
                max_concurrency: Amount::Count(2),
                max_errors: Amount::Count(1),
                error_mode: ErrorMode::Strict,
                offline,
                deadline: Duration::from_secs(3600),
                ..Strategy::default()
            },
            targets: 4,
            offline: vec![1],
            flapping: true,
            approval: false,
        };
        assert!(check(&format!("offline {offline:?}"), model, 14) > 500);
    }
}

#[test]
fn a_rollout_that_needs_approval_starts_nothing_before_it_and_nothing_once_rejected() {
    let model = RolloutModel {
        strategy: Strategy {
            canary: Some(Amount::Count(1)),
            max_concurrency: Amount::Count(2),
            max_errors: Amount::Count(1),
            offline: OfflineTargets::Wait,
            ..Strategy::default()
        },
        targets: 5,
        offline: vec![3],
        flapping: false,
        approval: true,
    };
    assert!(check("approval", model, 24) > 1_000);
}
