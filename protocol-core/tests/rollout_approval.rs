//! v0.3 with v0.2: a rollout approved once, as a whole (spec §8.4). Nothing
//! starts before the last approval needed; a rejection or the request's
//! expiry ends it with nothing started; the approvers sign one digest over
//! the command, the rollout and the root of its targets' tree, and a node
//! that verifies approvals itself runs its command only when its proof puts
//! it — this node, this request id — under that root.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::*;
use nap_core::agent::AgentConfig;
use nap_core::central::approval::{ApprovalRefusal, ApprovalRequest, Approvers, Decision, Person};
use nap_core::central::rollout::{Amount, RolloutState, Strategy, TargetState};
use nap_core::central::{CommandState, ControlRefusal, NeedsApproval, RolloutControl};
use nap_core::crypto::AwsLc;
use nap_core::policy::{ArgRules, CommandRule, Policy};
use nap_core::signed_approval::{
    ApprovalTrust, Certificate, PublicKey, ReleaseRefusal, rollout_digest, signing_bytes,
};
use nap_core::target_set::{TargetSet, root_from_proof};
use nap_core::testing::{World, rollout_plan};
use nap_core::wire::{AgentMessage, CentralMessage, RolloutApproval, SignedApproval};
use nap_core::{NodeId, RequestId, RolloutId, WallTime};
use proptest::prelude::*;

const ROLLOUT: RolloutId = RolloutId::from_u128(0xa22);

fn node(i: usize) -> NodeId {
    NodeId::from_u128(0x200 + i as u128)
}

fn key(seed: u8) -> Ed25519KeyPair {
    Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).expect("a key")
}

fn public(pair: &Ed25519KeyPair) -> PublicKey {
    PublicKey(pair.public_key().as_ref().try_into().expect("32 bytes"))
}

const ROOT: u8 = 1;

/// `user`'s signature of `digest`, certified by the root from a day before
/// `now` for 90 days.
fn signed(user: &str, seed: u8, digest: &str, now: WallTime) -> SignedApproval {
    let approver = key(seed);
    let cert = Certificate {
        user: user.into(),
        key: public(&approver),
        not_before: now.add_millis(-86_400_000),
        not_after: now.add_millis(90 * 86_400_000),
    };
    let certificate = cert.to_text(key(ROOT).sign(cert.signed_text().as_bytes()).as_ref());
    SignedApproval {
        user: user.into(),
        certificate,
        signature: STANDARD.encode(approver.sign(&signing_bytes(user, digest)).as_ref()),
    }
}

/// `n` connected agents whose `uptime` needs one signed approval, checked
/// against [`ROOT`].
fn fleet(seed: u64, n: usize) -> World {
    let mut world = World::new(seed);
    for i in 0..n {
        let mut config = AgentConfig::new(node(i), seed + i as u64);
        let mut policy = Policy::deny_all();
        policy.allow(
            "uptime",
            CommandRule {
                program: "/usr/bin/uptime".into(),
                args: ArgRules::Exact(vec![]),
                max_timeout: secs(30),
                env: Default::default(),
                run_as: None,
                required_approvals: 1,
            },
        );
        policy.approval_trust = Some(ApprovalTrust {
            roots: vec![public(&key(ROOT))],
            revoked: BTreeSet::new(),
            crypto: Arc::new(AwsLc),
        });
        config.policy = policy;
        world.add_agent(node(i), config);
        world.start(i);
    }
    assert!(
        world.run_until_true(secs(10), |w| (0..n).all(|i| established(w, i))),
        "the fleet did not connect"
    );
    world
}

/// `uptime` as every target gets it: requested by alice.
fn uptime() -> CentralMessage {
    let mut message = execute(RequestId::from_u128(0), "uptime", &[], Some(10_000));
    if let CentralMessage::Execute(e) = &mut message {
        e.requested_by = Some("alice".into());
    }
    message
}

/// The approval a rollout of [`uptime`] to `targets` needs, and its digest
/// (over the tree of `signed_targets`: the targets as the approvers saw
/// them).
fn needs(
    world: &World,
    strategy: &Strategy,
    targets: &[NodeId],
    signed_targets: &[NodeId],
    min_approvals: u8,
) -> (NeedsApproval, String) {
    let valid_until = strategy.deadline_at(world.wall());
    let shown = TargetSet::new(&AwsLc, &rollout_plan(signed_targets));
    let digest = rollout_digest(
        &AwsLc,
        ROLLOUT,
        shown.len(),
        &shown.root(),
        &uptime(),
        valid_until,
    );
    let request = ApprovalRequest {
        requester: "alice".into(),
        approvers: Approvers::Anyone,
        min_approvals,
        reason: "patch".into(),
        digest: digest.clone(),
        expires_at: world.wall().add_millis(3_600_000),
        approved_by: Vec::new(),
        signatures: Vec::new(),
    };
    let needs = NeedsApproval {
        request,
        targets: TargetSet::new(&AwsLc, &rollout_plan(targets)),
        valid_until,
    };
    (needs, digest)
}

fn person(user: &str) -> Person {
    Person {
        user: user.into(),
        groups: BTreeSet::new(),
        admin: false,
    }
}

fn approve(
    world: &mut World,
    user: &str,
    seed: u8,
    digest: &str,
) -> Result<RolloutState, ControlRefusal> {
    let signature = Some(signed(user, seed, digest, world.wall()));
    world.control_rollout(
        ROLLOUT,
        RolloutControl::Decide {
            person: person(user),
            decision: Decision::Approve {
                digest: digest.into(),
                signature,
            },
        },
    )
}

fn targets(n: usize) -> Vec<NodeId> {
    (0..n).map(node).collect()
}

fn ran(world: &World, i: usize) -> u32 {
    world.agents[i].runs.values().sum()
}

fn state(world: &World) -> RolloutState {
    world
        .central
        .hub
        .rollout(ROLLOUT)
        .map(|r| r.state())
        .or_else(|| {
            world
                .store
                .rollout_states
                .get(&ROLLOUT)
                .and_then(|s| s.last().copied())
        })
        .expect("a rollout")
}

fn target(world: &World, i: usize) -> TargetState {
    *world.store.rollout_targets[&(ROLLOUT, node(i))]
        .last()
        .expect("a state")
}

/// The error message of the result `i` sent for its target command.
fn refusal(world: &World, i: usize) -> Option<String> {
    let request_id = rollout_plan(&targets(i + 1))[i].1;
    world.agents[i].sent.iter().find_map(|m| match m {
        AgentMessage::CommandResult(r) if r.request_id == request_id => {
            r.error.as_ref().map(|e| e.message.clone())
        }
        _ => None,
    })
}

#[test]
fn nothing_starts_before_the_last_approval_then_every_node_checks_and_runs_it_once() {
    let mut world = fleet(1, 5);
    let strategy = Strategy::default();
    let (needs, digest) = needs(&world, &strategy, &targets(5), &targets(5), 2);
    world.start_rollout_with(ROLLOUT, &targets(5), uptime(), strategy, Some(needs));
    world.run_for(secs(60));
    assert_eq!(state(&world), RolloutState::AwaitingApproval);
    assert!(
        (0..5).all(|i| ran(&world, i) == 0),
        "nothing before approval"
    );

    assert_eq!(
        approve(&mut world, "bob", 2, &digest),
        Ok(RolloutState::AwaitingApproval),
        "one of two"
    );
    world.run_for(secs(30));
    assert!(
        (0..5).all(|i| ran(&world, i) == 0),
        "one approval is not two"
    );

    approve(&mut world, "carol", 3, &digest).expect("the second approval");
    assert!(world.run_until_true(secs(120), |w| state(w) == RolloutState::Succeeded));
    for i in 0..5 {
        assert_eq!(ran(&world, i), 1, "target {i} ran once");
        assert_eq!(
            target(&world, i),
            TargetState::Command(CommandState::Succeeded)
        );
    }
    let states = &world.store.rollout_states[&ROLLOUT];
    assert_eq!(states.first(), Some(&RolloutState::Scheduled));
}

#[test]
fn the_requester_cannot_approve_their_own_rollout_nor_anyone_twice() {
    let mut world = fleet(2, 2);
    let strategy = Strategy::default();
    let (needs, digest) = needs(&world, &strategy, &targets(2), &targets(2), 2);
    world.start_rollout_with(ROLLOUT, &targets(2), uptime(), strategy, Some(needs));
    assert_eq!(
        approve(&mut world, "alice", 4, &digest),
        Err(ControlRefusal::Approval(ApprovalRefusal::OwnRequest))
    );
    approve(&mut world, "bob", 2, &digest).expect("bob");
    assert_eq!(
        approve(&mut world, "bob", 2, &digest),
        Err(ControlRefusal::Approval(ApprovalRefusal::AlreadyApproved))
    );
    assert_eq!(
        approve(&mut world, "carol", 3, "0000"),
        Err(ControlRefusal::Approval(ApprovalRefusal::DigestMismatch)),
        "an approval of another digest"
    );
    world.run_for(secs(60));
    assert!((0..2).all(|i| ran(&world, i) == 0));
    assert_eq!(state(&world), RolloutState::AwaitingApproval);
}

#[test]
fn a_rejected_rollout_never_starts_and_takes_no_more_decisions() {
    let mut world = fleet(3, 3);
    let strategy = Strategy::default();
    let (needs, digest) = needs(&world, &strategy, &targets(3), &targets(3), 1);
    world.start_rollout_with(ROLLOUT, &targets(3), uptime(), strategy, Some(needs));
    assert_eq!(
        world.control_rollout(
            ROLLOUT,
            RolloutControl::Decide {
                person: person("bob"),
                decision: Decision::Reject {
                    reason: "not this week".into()
                },
            },
        ),
        Ok(RolloutState::Rejected)
    );
    assert_eq!(
        approve(&mut world, "carol", 3, &digest),
        Err(ControlRefusal::Unknown),
        "it has ended and left the hub"
    );
    world.run_for(secs(120));
    for i in 0..3 {
        assert_eq!(ran(&world, i), 0);
        assert_eq!(
            target(&world, i),
            TargetState::Command(CommandState::Cancelled)
        );
    }
}

#[test]
fn a_rollout_nobody_approves_in_time_ends_approval_expired() {
    let mut world = fleet(4, 2);
    let strategy = Strategy::default();
    let (needs, digest) = needs(&world, &strategy, &targets(2), &targets(2), 1);
    world.start_rollout_with(ROLLOUT, &targets(2), uptime(), strategy, Some(needs));
    world.run_for(Duration::from_secs(3600) + secs(1));
    assert_eq!(state(&world), RolloutState::ApprovalExpired);
    assert_eq!(
        approve(&mut world, "bob", 2, &digest),
        Err(ControlRefusal::Unknown)
    );
    assert!((0..2).all(|i| ran(&world, i) == 0));
}

#[test]
fn paused_while_it_awaits_approval_it_stays_paused_once_approved_until_resumed() {
    let mut world = fleet(5, 2);
    let strategy = Strategy::default();
    let (needs, digest) = needs(&world, &strategy, &targets(2), &targets(2), 1);
    world.start_rollout_with(ROLLOUT, &targets(2), uptime(), strategy, Some(needs));
    assert_eq!(
        world.control_rollout(ROLLOUT, RolloutControl::Pause),
        Ok(RolloutState::Paused)
    );
    approve(&mut world, "bob", 2, &digest).expect("approved while paused");
    world.run_for(secs(60));
    assert!((0..2).all(|i| ran(&world, i) == 0), "paused");
    world
        .control_rollout(ROLLOUT, RolloutControl::Resume)
        .expect("resumed");
    assert!(world.run_until_true(secs(60), |w| state(w) == RolloutState::Succeeded));
    assert!((0..2).all(|i| ran(&world, i) == 1));
}

#[test]
fn a_target_set_swapped_after_the_approval_is_refused_by_every_node() {
    // The approvers saw nodes 0 and 1; central (compromised) sends to 0, 1
    // and 2 under their approval. No node's proof leads to the signed root.
    let mut world = fleet(6, 3);
    let strategy = Strategy {
        max_concurrency: Amount::Count(3),
        ..Strategy::default()
    };
    let (needs, digest) = needs(&world, &strategy, &targets(3), &targets(2), 1);
    world.start_rollout_with(ROLLOUT, &targets(3), uptime(), strategy, Some(needs));
    approve(&mut world, "bob", 2, &digest).expect("approved");
    assert!(world.run_until_true(secs(60), |w| w.central.hub.rollout(ROLLOUT).is_none()));
    for i in 0..3 {
        assert_eq!(ran(&world, i), 0, "node {i} ran it");
        let message = refusal(&world, i).expect("a refusal");
        assert!(
            message.starts_with("approval refused by the node"),
            "{message}"
        );
        assert_eq!(
            target(&world, i),
            TargetState::Command(CommandState::Blocked)
        );
    }
    assert_eq!(state(&world), RolloutState::Halted, "maxErrors 0");
}

/// What a node holding `request_id` is sent as a target, given this
/// approval.
fn deliver(world: &mut World, i: usize, request_id: RequestId, approval: RolloutApproval) {
    let mut message = uptime();
    if let CentralMessage::Execute(e) = &mut message {
        e.request_id = Some(request_id);
        e.rollout_approval = Some(approval);
    }
    assert!(world.deliver_to(node(i), message));
    world.run_for(secs(5));
}

fn evidence(world: &World, set: &[NodeId], index: usize, valid_until: WallTime) -> RolloutApproval {
    let plan = rollout_plan(set);
    let tree = TargetSet::new(&AwsLc, &plan);
    let digest = rollout_digest(
        &AwsLc,
        ROLLOUT,
        tree.len(),
        &tree.root(),
        &uptime(),
        valid_until,
    );
    RolloutApproval {
        rollout_id: ROLLOUT,
        targets: u32::try_from(plan.len()).expect("small"),
        index: u32::try_from(index).expect("small"),
        proof: tree.proof(index).iter().map(hex::encode).collect(),
        expires: valid_until,
        approved_by: "bob".into(),
        approvals: vec![signed("bob", 2, &digest, world.wall())],
    }
}

#[test]
fn a_node_runs_its_own_place_in_the_set_and_refuses_another_s_or_an_expired_one() {
    let mut world = fleet(7, 3);
    let until = world.wall().add_millis(3_600_000);
    let plan = rollout_plan(&targets(3));

    // Node 1 with its own place: runs.
    let own = evidence(&world, &targets(3), 1, until);
    deliver(&mut world, 1, plan[1].1, own);
    assert_eq!(ran(&world, 1), 1);

    // Node 2 shown node 0's place (another leaf): its root differs.
    let borrowed = evidence(&world, &targets(3), 0, until);
    deliver(&mut world, 2, plan[2].1, borrowed.clone());
    assert_eq!(ran(&world, 2), 0);

    // Node 0 under another request id than the approved one: another leaf.
    deliver(&mut world, 0, RequestId::from_u128(77), borrowed);
    assert_eq!(ran(&world, 0), 0);

    // An approval past its end.
    let past = world.wall().add_millis(-1000);
    let expired = evidence(&world, &targets(3), 0, past);
    deliver(&mut world, 0, plan[0].1, expired);
    assert_eq!(ran(&world, 0), 0);
    let message = refusal(&world, 0).expect("a refusal");
    assert!(message.contains("ended at"), "{message}");
}

#[test]
fn the_node_s_check_names_why() {
    let trust = ApprovalTrust {
        roots: vec![public(&key(ROOT))],
        revoked: BTreeSet::new(),
        crypto: Arc::new(AwsLc),
    };
    let now = WallTime::from_unix_millis(1_800_000_000_000).expect("in range");
    let until = now.add_millis(60_000);
    let plan = rollout_plan(&targets(4));
    let tree = TargetSet::new(&AwsLc, &plan);
    let digest = rollout_digest(&AwsLc, ROLLOUT, 4, &tree.root(), &uptime(), until);
    let mut approval = RolloutApproval {
        rollout_id: ROLLOUT,
        targets: 4,
        index: 2,
        proof: tree.proof(2).iter().map(hex::encode).collect(),
        expires: until,
        approved_by: "bob".into(),
        approvals: vec![signed("bob", 2, &digest, now)],
    };
    let check = |a: &RolloutApproval, requester: Option<&str>| {
        let mut message = uptime();
        let CentralMessage::Execute(e) = &mut message else {
            unreachable!("an execute")
        };
        e.request_id = Some(plan[2].1);
        e.requested_by = requester.map(str::to_owned);
        e.rollout_approval = Some(a.clone());
        trust.admit_rollout(node(2), e, 1, now)
    };
    assert_eq!(check(&approval, Some("alice")), Ok(vec!["bob".to_owned()]));
    assert!(
        matches!(
            check(&approval, Some("bob")),
            Err(ReleaseRefusal::TooFew { .. })
        ),
        "the requester's own signature does not count"
    );
    approval.proof.pop();
    assert_eq!(check(&approval, None), Err(ReleaseRefusal::RolloutProof));
    approval.proof.push("zz".into());
    assert_eq!(check(&approval, None), Err(ReleaseRefusal::RolloutProof));
}

fn plan_of(n: usize) -> Vec<(NodeId, RequestId)> {
    (0..n)
        .map(|i| {
            (
                NodeId::from_u128(1 + i as u128),
                RequestId::from_u128(5000 + i as u128),
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every target's proof leads to the root; no other (node, request)
    /// and no altered proof does.
    #[test]
    fn each_target_proves_its_place_and_nothing_else_does(
        n in 1usize..200,
        pick in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
    ) {
        let plan = plan_of(n);
        let tree = TargetSet::new(&AwsLc, &plan);
        for (i, (node, request)) in plan.iter().enumerate() {
            let proof = tree.proof(i);
            prop_assert_eq!(
                root_from_proof(&AwsLc, *node, *request, i, n, &proof),
                Some(tree.root())
            );
        }
        let i = pick.index(n);
        let (node, request) = plan[i];
        let proof = tree.proof(i);
        let stranger = RequestId::from_u128(1);
        prop_assert_ne!(
            root_from_proof(&AwsLc, node, stranger, i, n, &proof),
            Some(tree.root())
        );
        if !proof.is_empty() {
            let mut altered = proof.clone();
            let k = flip.index(altered.len());
            altered[k][0] ^= 1;
            prop_assert_ne!(
                root_from_proof(&AwsLc, node, request, i, n, &altered),
                Some(tree.root())
            );
        }
        if n > 1 {
            let other = (i + 1) % n;
            prop_assert_ne!(
                root_from_proof(&AwsLc, node, request, other, n, &proof),
                Some(tree.root()),
                "a proof read at another place"
            );
        }
    }
}

#[test]
fn restored_after_a_restart_it_still_awaits_approval_and_keeps_the_approvals_given() {
    use nap_core::central::{HubInput, NewRollout, Restored};
    let mut world = fleet(8, 2);
    let strategy = Strategy::default();
    let (mut needs, digest) = needs(&world, &strategy, &targets(2), &targets(2), 2);
    // What the store kept: bob's approval, one of two.
    needs.request.approved_by = vec!["bob".into()];
    needs.request.signatures = vec![signed("bob", 2, &digest, world.wall())];
    let new = NewRollout {
        rollout_id: ROLLOUT,
        requester: "alice".into(),
        strategy,
        targets: rollout_plan(&targets(2)),
        message: uptime(),
        timeout: secs(30),
        start_at: world.wall(),
        restored: Some(Restored {
            state: RolloutState::AwaitingApproval,
            targets: vec![TargetState::Pending; 2],
            commands: None,
        }),
        approval: Some(Box::new(needs)),
    };
    world.hub_input(HubInput::StartRollout(Box::new(new)));
    world.run_for(secs(120));
    assert_eq!(state(&world), RolloutState::AwaitingApproval);
    assert!((0..2).all(|i| ran(&world, i) == 0));
    assert_eq!(
        approve(&mut world, "bob", 2, &digest),
        Err(ControlRefusal::Approval(ApprovalRefusal::AlreadyApproved)),
        "bob's approval was kept"
    );
    approve(&mut world, "carol", 3, &digest).expect("the second approval");
    assert!(world.run_until_true(secs(180), |w| state(w) == RolloutState::Succeeded));
    assert!(
        (0..2).all(|i| ran(&world, i) == 1),
        "bob's signature travelled too"
    );
}
