//! Shared set-up for the engine behaviour tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use nap_core::agent::{AgentConfig, ConnectionState};
use nap_core::central::{Admission, CentralSession, SessionConfig};
use nap_core::policy::{ArgRule, ArgRules, CommandRule, Policy};
use nap_core::testing::World;
use nap_core::wire::{CentralMessage, Execute};
use nap_core::{NodeId, RequestId, SessionId, Timestamp, WallTime};

pub const NODE: NodeId = NodeId::from_u128(0x6f1c_2b9e_8a4d_4c3e_9b7a_2d5e_8f1a_3c47);

/// A policy that allows `uptime` (no arguments), `echo` (any lowercase
/// words) and `sleep` (one number, at most 60 s).
pub fn policy() -> Policy {
    let mut policy = Policy::deny_all();
    let rule = |program: &str, args: ArgRules, max: u64| CommandRule {
        run_as: None,
        required_approvals: 0,
        program: program.into(),
        args,
        max_timeout: Duration::from_secs(max),
        env: BTreeMap::new(),
    };
    policy.allow(
        "uptime",
        rule("/usr/bin/uptime", ArgRules::Exact(vec![]), 30),
    );
    policy.allow(
        "echo",
        rule(
            "/bin/echo",
            ArgRules::Variadic {
                fixed: vec![],
                rest: ArgRule::Pattern(
                    nap_core::policy::AnchoredPattern::new("[a-z]+").expect("valid"),
                ),
                max: 8,
            },
            30,
        ),
    );
    policy.allow(
        "sleep",
        rule(
            "/bin/sleep",
            ArgRules::Exact(vec![ArgRule::Pattern(
                nap_core::policy::AnchoredPattern::new("[0-9]{1,3}").expect("valid"),
            )]),
            60,
        ),
    );
    policy.allow_deploy_env("production");
    policy
}

pub fn config(seed: u64) -> AgentConfig {
    let mut config = AgentConfig::new(NODE, seed);
    config.policy = policy();
    config
}

/// A world with one started agent for `NODE`.
pub fn world(seed: u64) -> World {
    let mut world = World::new(seed);
    world.add_agent(NODE, config(seed));
    world.start(0);
    world
}

/// A world whose agent is established.
pub fn connected(seed: u64) -> World {
    let mut world = world(seed);
    assert!(
        world.run_until_true(Duration::from_secs(5), |w| established(w, 0)),
        "the agent did not connect"
    );
    world
}

pub fn established(world: &World, i: usize) -> bool {
    world.agents[i].engine.state() == ConnectionState::Established {}
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub fn at(world: &World) -> Timestamp {
    world.now
}

pub fn request(n: u128) -> RequestId {
    RequestId::from_u128(0x1000_0000_0000_0000_0000_0000_0000_0000 | n)
}

pub fn execute(
    id: RequestId,
    command: &str,
    args: &[&str],
    timeout_ms: Option<u64>,
) -> CentralMessage {
    CentralMessage::Execute(Execute {
        request_id: Some(id),
        command: command.into(),
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        timeout: timeout_ms,
        hold_until: None,
        requested_by: None,
        rollout_approval: None,
        requires_approval: false,
        approver: None,
    })
}

/// A central session for `NODE` admitted at time zero, its `welcome` still
/// queued.
pub fn fresh_session(config: SessionConfig) -> CentralSession {
    let wall = WallTime::from_unix_millis(1_760_522_400_000).expect("valid");
    CentralSession::new(
        Timestamp::ZERO,
        wall,
        Admission {
            node_id: NODE,
            session_id: SessionId::from_u128(1),
            token_expires_at: wall.add_millis(3_600_000),
        },
        config,
    )
}

/// [`fresh_session`] with what it says on opening already taken.
pub fn open_session(config: SessionConfig) -> CentralSession {
    let mut s = fresh_session(config);
    while s.poll_output().is_some() {}
    s
}
