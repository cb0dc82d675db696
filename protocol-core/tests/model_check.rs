//! Model checking of the real engines with stateright (see
//! `nap_core::testing::model`). Each test explores one model to a depth and
//! asserts its properties: every `always` holds on every state reached, and
//! every `sometimes` has an example. The depths here keep the whole file
//! within a CI minute; `NAP_MODEL_DEPTH=N` explores N steps deeper (memory
//! stays small: the search is depth-first and keeps fingerprints only).
//!
//! spec/protocol.md §13 lists each property and the test that checks it.

use nap_core::testing::model::{self, ModelSpec};
use nap_core::{NodeId, RequestId};
use stateright::{Checker, Model};

const NODE: NodeId = NodeId::from_u128(0x6f1c_2b9e_8a4d_4c3e_9b7a_2d5e_8f1a_3c47);
const REQUEST: RequestId = RequestId::from_u128(0x1000_0000_0000_0000_0000_0000_0000_0007);

/// Explores `spec` to `depth` (plus `NAP_MODEL_DEPTH`), asserts every
/// property, and reports what it explored.
fn check(name: &str, spec: ModelSpec, depth: usize) -> usize {
    let extra: usize = std::env::var("NAP_MODEL_DEPTH")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0);
    let depth = depth + extra;
    let checker = spec
        .into_model()
        .checker()
        .target_max_depth(depth)
        .spawn_dfs()
        .join();
    eprintln!(
        "model {name}: depth {depth}, {} states explored, {} unique",
        checker.state_count(),
        checker.unique_state_count()
    );
    checker.assert_properties();
    checker.unique_state_count()
}

#[test]
fn one_agent_over_a_lossy_duplicating_reordering_network_with_crashes() {
    let spec = ModelSpec::one_agent(NODE, REQUEST);
    assert!(check("one agent, faults", spec, 10) > 10_000);
}

#[test]
fn one_agent_over_a_fifo_network_without_loss() {
    let mut spec = ModelSpec::one_agent(NODE, REQUEST);
    spec.lossy = false;
    spec.unordered = false;
    assert!(check("one agent, fifo", spec, 13) > 1_000);
}

#[test]
fn two_processes_claiming_one_node_never_hold_two_sessions() {
    let mut spec = ModelSpec::one_agent(NODE, REQUEST);
    spec.agents = vec![NODE, NODE];
    spec.max_crashes = 0;
    assert!(check("supersede", spec, 9) > 1_000);
}

#[test]
fn a_revoked_node_never_reaches_established_again() {
    let mut spec = ModelSpec::one_agent(NODE, REQUEST);
    spec.revoke = Some(NODE);
    spec.max_crashes = 1;
    assert!(check("revocation", spec, 9) > 1_000);
}

#[test]
fn every_command_ends_once_the_network_recovers() {
    let mut spec = ModelSpec::one_agent(NODE, REQUEST);
    spec.check_recovery = true;
    assert!(check("recovery", spec, 9) > 1_000);
}

/// The recovery check itself: from the first state the command is pending,
/// it ends within the allowed steps, and not without any.
#[test]
fn the_recovery_check_runs_the_system_to_the_end() {
    let model = ModelSpec::one_agent(NODE, REQUEST).into_model();
    let init = model.init_states().remove(0);
    assert!(!model::recovers(&model, &init, 0));
    assert!(model::recovers(&model, &init, model::RECOVERY_STEPS));
}

/// The checker is not vacuous: a model whose agent runs every command it
/// receives, duplicates included, is caught.
#[test]
fn the_checker_finds_a_broken_property() {
    let spec = ModelSpec::one_agent(NODE, REQUEST);
    let checker = spec
        .into_model()
        .property(
            stateright::Expectation::Always,
            "the command never completes (false)",
            |_, state| {
                model::central_store(state).is_none_or(|s| {
                    s.commands
                        .values()
                        .all(|c| c.state != nap_core::central::CommandState::Succeeded)
                })
            },
        )
        .checker()
        .target_max_depth(8)
        .spawn_dfs()
        .join();
    let path = checker.discovery("the command never completes (false)");
    assert!(path.is_some(), "the checker missed a reachable completion");
}

/// v0.2: one command that needs an approval; bob approves, alice tries to
/// approve her own request, bob approves an edited command, at moments the
/// checker picks, with crashes and a lossy network.
#[test]
fn a_command_needing_approval_runs_only_once_someone_else_approved_it() {
    use nap_core::testing::model::ModelDecision;
    let mut spec = ModelSpec::one_agent(NODE, REQUEST);
    spec.approval = Some(vec![
        ModelDecision::ApproveOwn,
        ModelDecision::ApproveEdited,
        ModelDecision::Approve,
    ]);
    assert!(check("approval", spec, 10) > 1_000);
}

/// v0.2, enforced on the node (§8.2): central counts mallory's approval,
/// certified by a root the node does not trust, and bob's unsigned one as
/// readily as bob's signed one; the node runs the command only with bob's
/// signature. Both outcomes are reached: the signed approval runs, a
/// release carrying only what the node cannot verify ends `blocked`.
#[test]
fn a_command_the_node_guards_runs_only_with_a_signature_it_verifies() {
    use nap_core::testing::model::{ModelDecision, NODE_VERIFIES};
    for decisions in [
        vec![ModelDecision::ApproveForged, ModelDecision::ApproveSigned],
        vec![ModelDecision::Approve, ModelDecision::ApproveSigned],
    ] {
        let mut spec = ModelSpec::one_agent(NODE, REQUEST);
        spec.approval = Some(decisions);
        spec.node_guard = true;
        let refused = "the node refuses a release it cannot verify (not vacuous)";
        let checker = spec
            .into_model()
            .property(stateright::Expectation::Sometimes, refused, |_, state| {
                model::central_store(state).is_some_and(|s| {
                    s.commands
                        .values()
                        .any(|c| c.state == nap_core::central::CommandState::Blocked)
                })
            })
            .checker()
            .target_max_depth(10)
            .spawn_dfs()
            .join();
        checker.assert_properties();
        checker.assert_no_discovery(NODE_VERIFIES);
        assert!(checker.unique_state_count() > 1_000);
    }
}

/// v0.2: a rejection or a cancel races the approval; neither lets it run.
/// (Only the `always` properties: at this depth the race leaves no room for
/// the command to complete as well.)
#[test]
fn a_rejected_or_cancelled_command_never_runs() {
    use nap_core::testing::model::{
        APPROVED_FIRST, APPROVED_ONCE, ModelDecision, NO_MEANS_NO, ONE_RESULT, ONE_RUN,
    };
    for decisions in [
        vec![ModelDecision::Reject, ModelDecision::Approve],
        vec![ModelDecision::Cancel, ModelDecision::Approve],
    ] {
        let mut spec = ModelSpec::one_agent(NODE, REQUEST);
        spec.approval = Some(decisions);
        let ended = "the command is rejected or cancelled (not vacuous)";
        let checker = spec
            .into_model()
            .property(stateright::Expectation::Sometimes, ended, |_, state| {
                model::central_store(state).is_some_and(|s| {
                    s.commands.values().any(|c| {
                        matches!(
                            c.state,
                            nap_core::central::CommandState::Rejected
                                | nap_core::central::CommandState::Cancelled
                        )
                    })
                })
            })
            .checker()
            .target_max_depth(9)
            .spawn_dfs()
            .join();
        for property in [
            NO_MEANS_NO,
            APPROVED_FIRST,
            APPROVED_ONCE,
            ONE_RUN,
            ONE_RESULT,
        ] {
            checker.assert_no_discovery(property);
        }
        checker.assert_any_discovery(ended);
        assert!(checker.unique_state_count() > 1_000);
    }
}
