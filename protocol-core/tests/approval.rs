//! v0.2 approval in the hub (spec §8.1): a command that needs approval is
//! delivered and held; it runs only once enough distinct people other than
//! its requester approved the exact command; a rejection, a cancel or the
//! request's expiry end it for good.

mod common;

use std::collections::BTreeSet;

use common::*;
use nap_core::WallTime;
use nap_core::central::CommandState;
use nap_core::central::approval::{
    ApprovalRefusal, ApprovalRequest, Approvers, Decided, Decision, Person,
};
use nap_core::testing::World;
use nap_core::wire::{CentralMessage, Execute};

const DIGEST: &str = "d1e5";

fn person(user: &str, groups: &[&str]) -> Person {
    Person {
        user: user.into(),
        groups: groups
            .iter()
            .map(|g| (*g).to_owned())
            .collect::<BTreeSet<_>>(),
        admin: false,
    }
}

fn admin(user: &str) -> Person {
    Person {
        admin: true,
        ..person(user, &[])
    }
}

fn approve() -> Decision {
    Decision::Approve {
        digest: DIGEST.into(),
        signature: None,
    }
}

fn held_uptime(world: &World, n: u128, approver: Option<&str>) -> CentralMessage {
    CentralMessage::Execute(Execute {
        request_id: Some(request(n)),
        command: "uptime".into(),
        args: vec![],
        timeout: None,
        requires_approval: true,
        approver: approver.map(str::to_owned),
        hold_until: Some(expiry(world)),
        requested_by: None,
        rollout_approval: None,
    })
}

fn expiry(world: &World) -> WallTime {
    world.wall().add_millis(4 * 3_600_000)
}

fn request_by(world: &World, requester: &str, approver: Option<&str>, min: u8) -> ApprovalRequest {
    ApprovalRequest {
        requester: requester.into(),
        approvers: Approvers::parse(approver),
        min_approvals: min,
        reason: "check load".into(),
        digest: DIGEST.into(),
        expires_at: expiry(world),
        approved_by: vec![],
        signatures: Vec::new(),
    }
}

/// A connected world with `uptime` submitted for approval by alice.
fn pending(seed: u64, approver: Option<&str>, min: u8) -> World {
    let mut world = connected(seed);
    let message = held_uptime(&world, 1, approver);
    let approval = request_by(&world, "alice", approver, min);
    world.submit_for_approval(NODE, message, secs(30), approval);
    world.run_for(secs(1));
    world
}

fn state(world: &World, n: u128) -> CommandState {
    *world.store.command_states[&request(n)]
        .last()
        .expect("a state")
}

fn runs(world: &World, n: u128) -> u32 {
    world.agents[0].runs.get(&request(n)).copied().unwrap_or(0)
}

#[test]
fn a_held_command_runs_once_a_second_person_approves_it() {
    let mut world = pending(71, None, 1);
    assert_eq!(state(&world, 1), CommandState::Held, "delivered and held");
    world.run_for(secs(600));
    assert_eq!(runs(&world, 1), 0, "nothing runs without an approval");
    assert_eq!(
        world.decide(request(1), person("bob", &[]), approve()),
        Ok(Decided::Approved)
    );
    assert!(world.run_until_true(secs(60), |w| state(w, 1) == CommandState::Succeeded));
    assert_eq!(runs(&world, 1), 1);
    assert_eq!(
        world.store.command_states[&request(1)],
        [
            CommandState::Queued,
            CommandState::Held,
            CommandState::Approved,
            CommandState::Succeeded
        ]
    );
}

#[test]
fn the_requester_never_approves_their_own_request_not_even_as_an_administrator() {
    let mut world = pending(72, None, 1);
    assert_eq!(
        world.decide(request(1), admin("alice"), approve()),
        Err(ApprovalRefusal::OwnRequest)
    );
    world.run_for(secs(3600));
    assert_eq!(runs(&world, 1), 0);
    assert_eq!(state(&world, 1), CommandState::Held);
}

#[test]
fn an_approval_for_another_command_does_not_count() {
    let mut world = pending(73, None, 1);
    assert_eq!(
        world.decide(
            request(1),
            person("bob", &[]),
            Decision::Approve {
                digest: "edited".into(),
                signature: None,
            }
        ),
        Err(ApprovalRefusal::DigestMismatch)
    );
    world.run_for(secs(600));
    assert_eq!(runs(&world, 1), 0);
}

#[test]
fn two_approvals_means_two_distinct_people() {
    let mut world = pending(74, None, 2);
    assert_eq!(
        world.decide(request(1), person("bob", &[]), approve()),
        Ok(Decided::Counted {
            approvals: 1,
            needed: 2
        })
    );
    assert_eq!(
        world.decide(request(1), person("bob", &[]), approve()),
        Err(ApprovalRefusal::AlreadyApproved),
        "one person with two tokens is still one approval"
    );
    world.run_for(secs(600));
    assert_eq!(runs(&world, 1), 0);
    assert_eq!(
        world.decide(request(1), person("carol", &[]), approve()),
        Ok(Decided::Approved)
    );
    assert!(world.run_until_true(secs(60), |w| state(w, 1) == CommandState::Succeeded));
    assert_eq!(runs(&world, 1), 1);
}

#[test]
fn only_the_named_approver_or_group_may_approve() {
    let mut world = pending(75, Some("group:dba"), 1);
    assert!(matches!(
        world.decide(request(1), person("bob", &["ops"]), approve()),
        Err(ApprovalRefusal::NotAnApprover(_))
    ));
    assert_eq!(
        world.decide(request(1), person("dana", &["dba"]), approve()),
        Ok(Decided::Approved)
    );
    let mut world = pending(76, Some("erin"), 1);
    assert!(matches!(
        world.decide(request(1), person("bob", &[]), approve()),
        Err(ApprovalRefusal::NotAnApprover(_))
    ));
    assert_eq!(
        world.decide(request(1), person("erin", &[]), approve()),
        Ok(Decided::Approved)
    );
}

#[test]
fn one_rejection_ends_it_and_it_never_runs() {
    let mut world = pending(77, None, 2);
    assert_eq!(
        world.decide(
            request(1),
            person("bob", &[]),
            Decision::Reject { reason: " ".into() }
        ),
        Err(ApprovalRefusal::ReasonRequired)
    );
    assert_eq!(
        world.decide(
            request(1),
            person("bob", &[]),
            Decision::Reject {
                reason: "not during the sale".into()
            }
        ),
        Ok(Decided::Rejected)
    );
    assert_eq!(state(&world, 1), CommandState::Rejected);
    assert_eq!(
        world.decide(request(1), person("carol", &[]), approve()),
        Err(ApprovalRefusal::NotPending),
        "nothing to approve after a rejection"
    );
    // The node's hold ends later with its own answer; the first terminal
    // state stands.
    world.run_for(secs(5 * 3600));
    assert_eq!(runs(&world, 1), 0);
    assert_eq!(state(&world, 1), CommandState::Rejected);
}

#[test]
fn the_requester_or_an_administrator_may_cancel_nobody_else() {
    let mut world = pending(78, None, 1);
    assert_eq!(
        world.decide(request(1), person("bob", &[]), Decision::Cancel),
        Err(ApprovalRefusal::NotRequester)
    );
    assert_eq!(
        world.decide(request(1), admin("root"), Decision::Cancel),
        Ok(Decided::Cancelled)
    );
    world.run_for(secs(600));
    assert_eq!(state(&world, 1), CommandState::Cancelled);
    assert_eq!(runs(&world, 1), 0);
}

#[test]
fn a_request_nobody_decides_expires_with_the_nodes_hold() {
    let mut world = pending(79, None, 1);
    world.run_for(secs(4 * 3600 - 60));
    assert_eq!(state(&world, 1), CommandState::Held);
    world.run_for(secs(120));
    assert_eq!(state(&world, 1), CommandState::ApprovalExpired);
    assert_eq!(
        world.decide(request(1), person("bob", &[]), approve()),
        Err(ApprovalRefusal::NotPending)
    );
    world.run_for(secs(3600));
    assert_eq!(runs(&world, 1), 0);
    // The node held it as long (its `holdUntil`, and a little grace for
    // clocks apart) and answered; the command stays approval_expired.
    assert!(world.store.results.contains_key(&request(1)));
    assert_eq!(state(&world, 1), CommandState::ApprovalExpired);
}

#[test]
fn an_approval_given_while_the_node_is_away_is_delivered_when_it_returns_in_time() {
    let mut world = pending(80, None, 1);
    world.set_partitioned(true);
    world.cut_transports();
    world.run_for(secs(5));
    assert_eq!(
        world.decide(request(1), person("bob", &[]), approve()),
        Ok(Decided::Approved)
    );
    world.run_for(secs(60));
    assert_eq!(runs(&world, 1), 0);
    world.set_partitioned(false);
    assert!(world.run_until_true(secs(600), |w| state(w, 1) == CommandState::Succeeded));
    assert_eq!(runs(&world, 1), 1);
}

#[test]
fn an_approval_whose_node_stays_away_past_the_release_time_must_be_given_again() {
    let mut world = pending(81, None, 1);
    world.set_partitioned(true);
    world.cut_transports();
    world.run_for(secs(5));
    assert_eq!(
        world.decide(request(1), person("bob", &[]), approve()),
        Ok(Decided::Approved)
    );
    world.run_for(secs(15 * 60 + 5));
    assert_eq!(state(&world, 1), CommandState::ApprovalExpired);
    world.set_partitioned(false);
    world.run_for(secs(600));
    assert_eq!(runs(&world, 1), 0);
}

#[test]
fn a_command_the_node_would_block_is_blocked_before_anyone_approves() {
    let mut world = connected(82);
    let mut message = held_uptime(&world, 2, None);
    if let CentralMessage::Execute(e) = &mut message {
        e.command = "rm".into();
    }
    let approval = request_by(&world, "alice", None, 1);
    world.submit_for_approval(NODE, message, secs(30), approval);
    assert!(world.run_until_true(secs(60), |w| state(w, 2) == CommandState::Blocked));
    assert_eq!(
        world.decide(request(2), person("bob", &[]), approve()),
        Err(ApprovalRefusal::NotPending)
    );
}

#[test]
fn the_canonical_encoding_changes_with_every_field_that_makes_the_command() {
    use nap_core::central::approval::canonical_bytes;
    use nap_core::{NodeId, RequestId};
    let at = WallTime::from_unix_millis(1_760_522_400_000).expect("valid");
    let base = Execute {
        request_id: Some(request(1)),
        command: "uptime".into(),
        args: vec!["-p".into()],
        timeout: Some(1000),
        requires_approval: true,
        approver: None,
        hold_until: None,
        requested_by: None,
        rollout_approval: None,
    };
    let bytes = |e: &Execute, node: NodeId, id: RequestId, at: WallTime| {
        canonical_bytes(node, id, &CentralMessage::Execute(e.clone()), at)
    };
    let original = bytes(&base, NODE, request(1), at);
    let mut variants = vec![
        bytes(&base, NodeId::from_u128(9), request(1), at),
        bytes(&base, NODE, request(2), at),
        bytes(&base, NODE, request(1), at.add_millis(1)),
    ];
    for edit in [
        |e: &mut Execute| e.command = "df".into(),
        |e: &mut Execute| e.args.push("-s".into()),
        |e: &mut Execute| e.timeout = Some(2000),
        |e: &mut Execute| e.approver = Some("bob".into()),
        // A value cannot smuggle a line of its own in.
        |e: &mut Execute| e.args = vec!["-p\ntimeout 5".into()],
    ] {
        let mut edited = base.clone();
        edit(&mut edited);
        variants.push(bytes(&edited, NODE, request(1), at));
    }
    for v in &variants {
        assert_ne!(*v, original);
    }
    assert_eq!(
        bytes(&base, NODE, request(1), at),
        original,
        "the same command encodes the same"
    );
    assert!(
        String::from_utf8(original)
            .expect("utf-8")
            .starts_with("nap-approval 1\n")
    );
}

#[test]
fn a_hold_survives_an_agent_restart_and_the_approval_still_runs_it_once() {
    let mut world = pending(83, None, 1);
    world.restart_agent(0, config(83));
    assert!(world.run_until_true(secs(600), |w| established(w, 0)));
    world.run_for(secs(5));
    assert_eq!(
        state(&world, 1),
        CommandState::Held,
        "not answered as interrupted"
    );
    assert!(!world.store.results.contains_key(&request(1)));
    assert_eq!(
        world.decide(request(1), person("bob", &[]), approve()),
        Ok(Decided::Approved)
    );
    assert!(world.run_until_true(secs(60), |w| state(w, 1) == CommandState::Succeeded));
    assert_eq!(runs(&world, 1), 1);
}

#[test]
fn a_complete_approval_restored_from_the_store_takes_no_more_decisions() {
    use nap_core::central::approval::{Decided, Pending};
    let world = connected(83);
    let mut request = request_by(&world, "alice", None, 1);
    request.approved_by = vec!["bob".into()];
    let mut restored = Pending::new(request);
    assert!(restored.complete());
    for (who, decision) in [
        (person("carol", &[]), approve()),
        (
            person("carol", &[]),
            Decision::Reject {
                reason: "too late".into(),
            },
        ),
        (person("alice", &[]), Decision::Cancel),
    ] {
        assert_eq!(
            restored.decide(&who, &decision),
            Err(ApprovalRefusal::NotPending),
            "{decision:?}: approved is decided"
        );
    }
    let mut open = Pending::new(request_by(&world, "alice", None, 1));
    assert_eq!(
        open.decide(&person("carol", &[]), &approve()),
        Ok(Decided::Approved)
    );
}

mod rules {
    use std::collections::BTreeMap;

    use nap_core::central::approval::{
        ApprovalPolicy, ApprovalRule, Asked, Requirement, RequirementError,
    };

    fn policy() -> ApprovalPolicy {
        ApprovalPolicy {
            rules: vec![
                ApprovalRule {
                    command: Some("docker".into()),
                    labels: BTreeMap::new(),
                    min_approvals: 1,
                    approver: None,
                },
                ApprovalRule {
                    command: None,
                    labels: BTreeMap::from([("env".into(), "prod".into())]),
                    min_approvals: 2,
                    approver: Some("group:sre".into()),
                },
            ],
            ..ApprovalPolicy::default()
        }
    }

    fn prod() -> BTreeMap<String, String> {
        BTreeMap::from([("env".into(), "prod".into()), ("role".into(), "db".into())])
    }

    fn asked(min: Option<u8>, approver: Option<&str>) -> Asked {
        Asked {
            min_approvals: min,
            approver: approver.map(str::to_owned),
        }
    }

    #[test]
    fn a_command_no_rule_matches_needs_what_its_request_asks() {
        let staging = BTreeMap::from([("env".into(), "staging".into())]);
        assert_eq!(policy().requirement("uptime", &staging, None), Ok(None));
        assert_eq!(
            policy().requirement("uptime", &staging, Some(&asked(Some(3), Some("bob")))),
            Ok(Some(Requirement {
                min_approvals: 3,
                approver: Some("bob".into())
            }))
        );
        assert_eq!(
            policy().requirement("uptime", &staging, Some(&asked(None, None))),
            Ok(Some(Requirement {
                min_approvals: 1,
                approver: None
            }))
        );
    }

    #[test]
    fn a_ruled_command_sent_without_asking_for_approval_is_refused_not_run() {
        assert_eq!(
            policy().requirement("docker", &BTreeMap::new(), None),
            Err(RequirementError::RuleRequiresApproval {
                command: "docker".into(),
                rule: 1
            })
        );
        assert_eq!(
            policy().requirement("uptime", &prod(), None),
            Err(RequirementError::RuleRequiresApproval {
                command: "uptime".into(),
                rule: 2
            })
        );
    }

    #[test]
    fn rules_only_add_the_most_approvals_and_the_rule_s_approver_win() {
        assert_eq!(
            policy().requirement("docker", &prod(), Some(&asked(Some(1), None))),
            Ok(Some(Requirement {
                min_approvals: 2,
                approver: Some("group:sre".into())
            })),
            "the request cannot lower what a rule needs"
        );
        assert_eq!(
            policy().requirement("docker", &prod(), Some(&asked(Some(4), Some("group:sre")))),
            Ok(Some(Requirement {
                min_approvals: 4,
                approver: Some("group:sre".into())
            })),
            "but may ask for more"
        );
        assert_eq!(
            policy().requirement("docker", &prod(), Some(&asked(None, Some("bob")))),
            Err(RequirementError::ApproverConflict {
                rule: 2,
                ruled: "group:sre".into(),
                asked: "bob".into()
            })
        );
    }
}

#[test]
fn every_decision_refusal_and_expiry_is_told_to_the_administrators() {
    use nap_core::central::{Alarm, ApprovalEvent};
    let told = |world: &World| -> Vec<ApprovalEvent> {
        world
            .store
            .alarms
            .iter()
            .filter_map(|a| match a {
                Alarm::Approval {
                    request_id, event, ..
                } if *request_id == request(1) => Some(event.clone()),
                _ => None,
            })
            .collect()
    };
    let mut world = pending(80, None, 2);
    let _ = world.decide(request(1), person("alice", &[]), approve());
    let _ = world.decide(request(1), person("bob", &[]), approve());
    world.run_for(secs(4 * 3600 + 60));
    let events = told(&world);
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(matches!(
        &events[0],
        ApprovalEvent::Decided { person, outcome: Err(ApprovalRefusal::OwnRequest), .. }
            if person == "alice"
    ));
    assert!(matches!(
        &events[1],
        ApprovalEvent::Decided {
            person,
            outcome: Ok(Decided::Counted { approvals: 1, needed: 2 }),
            ..
        } if person == "bob"
    ));
    assert_eq!(events[2], ApprovalEvent::Expired);
    assert_eq!(state(&world, 1), CommandState::ApprovalExpired);
}
