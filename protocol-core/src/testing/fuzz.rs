//! The bodies of the fuzz targets (`fuzz/`), here so that the workspace
//! tests replay the committed corpora and random cases on the stable
//! toolchain. Each takes raw bytes and panics only on a broken invariant.

use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};

use crate::agent::{AgentConfig, AgentEngine, AgentInput, AgentOutput, DialFailure};
use crate::central::{
    Admission, Audience, AuthPolicy, CentralSession, Claims, NodeLookup, SessionConfig,
    SessionInput, SpentRecord, TokenCheck, auth,
};
use crate::codec::{Limits, decode, decode_bytes, encode};

use crate::wire::{AgentMessage, CentralMessage, OperatorMessage};
use crate::{NodeId, SessionId, Timestamp, WallTime};

/// The codec never panics, and what decodes re-encodes and decodes the same.
pub fn codec(data: &[u8]) {
    let limits = Limits::default();
    if let Ok(m) = decode_bytes::<AgentMessage>(data, &limits) {
        let text = encode(&m).expect("a decoded message encodes");
        assert_eq!(decode::<AgentMessage>(&text, &limits).as_ref(), Ok(&m));
    }
    if let Ok(m) = decode_bytes::<CentralMessage>(data, &limits) {
        let text = encode(&m).expect("a decoded message encodes");
        assert_eq!(decode::<CentralMessage>(&text, &limits).as_ref(), Ok(&m));
    }
    let _ = decode_bytes::<OperatorMessage>(data, &limits);
}

#[derive(Debug, Arbitrary)]
enum AgentStep {
    Advance(u16),
    Connected,
    DialFailed(u8),
    Closed(Option<u16>),
    Frame(String),
    Welcome,
    Execute(u8, String),
    Ack(u8),
    Sample,
    Finished(u8),
    Shutdown,
}

/// The agent engine, fed arbitrary input: no panic, no timer in the past,
/// bounded outputs and buffers.
pub fn agent_engine(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let node = NodeId::from_u128(1);
    let mut engine = AgentEngine::new(AgentConfig::new(node, 1));
    let mut now = Timestamp::ZERO;
    engine.handle_input(now, AgentInput::WallClock(WallTime::UNIX_EPOCH));
    engine.handle_input(now, AgentInput::Start);
    let mut steps = 0;
    while let Ok(step) = AgentStep::arbitrary(&mut u) {
        steps += 1;
        if steps > 500 {
            break;
        }
        let epoch = engine.epoch();
        let input = match step {
            AgentStep::Advance(ms) => {
                now = now + Duration::from_millis(u64::from(ms) * 100);
                engine.handle_timeout(now);
                None
            }
            AgentStep::Connected => Some(AgentInput::Connected { epoch }),
            AgentStep::DialFailed(k) => Some(AgentInput::DialFailed {
                epoch,
                reason: match k % 3 {
                    0 => DialFailure::Network,
                    1 => DialFailure::Unauthorized,
                    _ => DialFailure::Unavailable {
                        retry_after: Duration::from_secs(u64::from(k)),
                    },
                },
            }),
            AgentStep::Closed(code) => Some(AgentInput::Closed {
                epoch,
                code: code.map(crate::transport::CloseCode::from),
            }),
            AgentStep::Frame(text) => Some(AgentInput::Frame { epoch, text }),
            AgentStep::Welcome => Some(AgentInput::Frame {
                epoch,
                text: format!(
                    r#"{{"type":"welcome","protocolVersion":"nap.v1","sessionId":"{}","nodeId":"{node}","serverTime":"2025-10-15T10:00:00Z","intervals":{{"heartbeat":30000,"telemetry":60000,"health":300000}},"maxMessageBytes":1048576}}"#,
                    SessionId::from_u128(1)
                ),
            }),
            AgentStep::Execute(id, command) => Some(AgentInput::Frame {
                epoch,
                text: serde_json::json!({"type": "execute", "requestId": crate::RequestId::from_u128(u128::from(id)), "command": command})
                    .to_string(),
            }),
            AgentStep::Ack(id) => Some(AgentInput::Frame {
                epoch,
                text: serde_json::json!({"type": "ack", "requestId": crate::RequestId::from_u128(u128::from(id))}).to_string(),
            }),
            AgentStep::Sample => Some(AgentInput::TelemetrySample(super::sample(50.0, 50.0))),
            AgentStep::Finished(id) => Some(AgentInput::CommandFinished {
                request_id: crate::RequestId::from_u128(u128::from(id)),
                outcome: Default::default(),
            }),
            AgentStep::Shutdown => Some(AgentInput::Shutdown),
        };
        if let Some(input) = input {
            engine.handle_input(now, input);
        }
        let mut outputs = 0;
        while let Some(output) = engine.poll_output() {
            outputs += 1;
            if let AgentOutput::MintToken { lifetime } = output {
                let token = "t".into();
                engine.handle_input(now, AgentInput::TokenMinted { token, lifetime });
            }
        }
        assert!(outputs < 10_000, "{outputs} outputs for one input");
        assert!(
            engine.timers().all(|(_, at)| at >= now),
            "a timer armed in the past"
        );
        assert!(engine.buffered_telemetry() <= 1440 && engine.outbox_len() <= 1000);
    }
}

/// A central session fed arbitrary frames and time: no panic, bounded
/// outputs, nothing armed once closed.
pub fn central_session(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let wall = WallTime::from_unix_millis(1_760_522_400_000).unwrap_or(WallTime::UNIX_EPOCH);
    let admission = Admission {
        node_id: NodeId::from_u128(1),
        session_id: SessionId::from_u128(1),
        token_expires_at: wall.add_millis(3_600_000),
    };
    let mut s = CentralSession::new(Timestamp::ZERO, wall, admission, SessionConfig::default());
    let mut now = Timestamp::ZERO;
    for _ in 0..500 {
        let Ok((advance, text)) = <(u16, String)>::arbitrary(&mut u) else {
            break;
        };
        now = now + Duration::from_millis(u64::from(advance));
        s.handle_timeout(now);
        s.handle_input(now, SessionInput::Frame(text));
        let mut outputs = 0;
        while s.poll_output().is_some() {
            outputs += 1;
        }
        assert!(outputs < 16, "{outputs} outputs for one frame");
        if !s.is_open() {
            assert_eq!(s.poll_timeout(), None);
        }
    }
}

/// Token checks on arbitrary claims never panic, and what passes obeys the rules.
pub fn claims(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok((alg, iss, sub, aud, iat, exp, jti, scope, valid)) = <(
        String,
        String,
        String,
        String,
        i64,
        i64,
        String,
        String,
        bool,
    )>::arbitrary(&mut u) else {
        return;
    };
    let now = WallTime::from_unix_millis(1_760_522_400_000).unwrap_or(WallTime::UNIX_EPOCH);
    let check = TokenCheck {
        alg,
        claims: Some(Claims {
            iss,
            sub,
            aud: Audience::One(aud),
            iat,
            exp,
            jti,
            scope,
        }),
        node: NodeLookup::Active,
        signature_valid: valid,
        spent: SpentRecord::Unspent,
    };
    if let Ok(token) = auth::check_token(&AuthPolicy::new("nap-central"), now, &check) {
        let c = check.claims.as_ref().expect("claims");
        assert!(valid && check.alg == "EdDSA" && c.scope == "node" && c.iss == c.sub);
        assert!(c.exp - c.iat <= 3600 && c.exp > now.unix_seconds() - 60);
        assert_eq!(token.node_id.to_string(), c.sub.to_lowercase());
    }
}

/// The allow-list matcher and the branch validator on arbitrary input.
pub fn policy(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok((command, args, branch)) = <(String, Vec<String>, String)>::arbitrary(&mut u) else {
        return;
    };
    let mut p = crate::policy::Policy::deny_all();
    p.allow(
        "echo",
        crate::policy::CommandRule {
            run_as: None,
            required_approvals: 0,
            program: "/bin/echo".into(),
            args: crate::policy::ArgRules::Variadic {
                fixed: vec![],
                rest: crate::policy::ArgRule::Pattern(
                    crate::policy::AnchoredPattern::new("[a-z0-9.-]{1,32}").expect("valid"),
                ),
                max: 4,
            },
            max_timeout: Duration::from_secs(10),
            env: Default::default(),
        },
    );
    if let Ok(approved) = p.check_execute(&command, &args, None) {
        assert_eq!(command, "echo");
        assert!(
            approved
                .args
                .iter()
                .all(|a| !a.contains([';', '$', '`', ' ', '\0']))
        );
    }
    if crate::policy::validate_branch(&branch).is_ok() {
        assert!(!branch.starts_with('-') && !branch.contains("..") && !branch.is_empty());
    }
}

/// The branch-name validator alone, against the rules of
/// `git check-ref-format --branch` stated once more, independently: it
/// accepts exactly the names that break none of them.
pub fn branch(data: &[u8]) {
    let name = String::from_utf8_lossy(data);
    let components_ok = name
        .split('/')
        .all(|c| !c.is_empty() && !c.starts_with('.') && !c.ends_with(".lock"));
    let git_rules_hold = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('-')
        && name != "@"
        && name != "HEAD"
        && !name.chars().any(|c| {
            c.is_ascii_control() || matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\')
        })
        && !name.contains("..")
        && !name.contains("@{")
        && !name.ends_with('.')
        && components_ok;
    let verdict = crate::policy::validate_branch(&name);
    assert_eq!(
        verdict.is_ok(),
        git_rules_hold,
        "{name:?}: validator says {verdict:?}"
    );
}

#[derive(Debug, Arbitrary)]
enum HubStep {
    Advance(u16),
    Admit {
        node: u8,
        valid: bool,
        jti: u8,
    },
    Opened(u8),
    Closed(u8),
    Submit {
        node: u8,
        request: u8,
        known: bool,
    },
    Result {
        node: u8,
        request: u8,
        success: bool,
    },
    Revoke(u8),
    Drain,
    /// v0.3: a rollout over the four nodes.
    Rollout {
        concurrency: u8,
        max_errors: u8,
        strict: bool,
        offline: u8,
    },
    /// v0.3: pause (0), resume (1) or abort (2) a rollout; approve (3) or
    /// reject (4) one that needs approval.
    Control {
        rollout: u8,
        control: u8,
    },
    /// v0.3, as a driver among several reads presence: whether another
    /// process holds the node.
    Elsewhere {
        node: u8,
        held: bool,
    },
    /// v0.3, as a driver among several reads the store: a stored state of
    /// a rollout target's command.
    StoredState {
        rollout: u8,
        node: u8,
        state: u8,
    },
    /// v0.3: another process took the lease on driving the rollouts.
    DropRollouts,
}

/// Central (the hub and its real sessions, forwarded as the driver does)
/// fed arbitrary admissions, session ends, commands, results and time steps:
/// at most one open session per node (a newer one supersedes the older),
/// each command reaches a terminal state at most once, no timer in the
/// past, bounded effects; a rollout never has more in flight than its
/// `maxConcurrency` and starts nothing once it has ended or been dropped,
/// whatever the presence and stored states a driver among several reads.
pub fn hub(data: &[u8]) {
    use crate::central::{
        Admit, CommandState, HubConfig, HubInput, HubOutput, ResultRecord, SessionInput,
        SessionOutput, Submission, Upgrade,
    };
    use crate::testing::central::{CentralEffect, CentralHost};
    use crate::wire::{CommandResult, Execute};
    use std::collections::{BTreeMap, BTreeSet};

    let mut u = Unstructured::new(data);
    let wall0 = WallTime::from_unix_millis(1_760_522_400_000).unwrap_or(WallTime::UNIX_EPOCH);
    let wall = |now: Timestamp| {
        wall0.add_millis(i64::try_from(now.as_micros() / 1000).unwrap_or(i64::MAX))
    };
    let mut central = CentralHost::new(
        Timestamp::ZERO,
        wall0,
        HubConfig::new("nap-central"),
        SessionConfig::default(),
    );
    let mut now = Timestamp::ZERO;
    let mut next_session = 0u128;
    let mut terminal: BTreeSet<crate::RequestId> = BTreeSet::new();
    let mut owners: BTreeMap<crate::RequestId, NodeId> = BTreeMap::new();
    let mut stored: BTreeSet<crate::RequestId> = BTreeSet::new();
    let node = |n: u8| NodeId::from_u128(u128::from(n % 4) + 1);
    let request = |r: u8| crate::RequestId::from_u128(u128::from(r % 16) + 1);
    // v0.3: each rollout's concurrency, what it has in flight, and whether
    // it ended.
    // Per rollout: maxConcurrency, in flight, ended, approved (or needing
    // no approval).
    let mut rollouts: Vec<(usize, BTreeSet<crate::RequestId>, bool, bool)> = Vec::new();
    for _ in 0..300 {
        let Ok(step) = HubStep::arbitrary(&mut u) else {
            break;
        };
        match step {
            HubStep::Advance(ms) => now = now + Duration::from_millis(u64::from(ms) * 50),
            HubStep::Admit {
                node: n,
                valid,
                jti,
            } => {
                let iat = wall(now).unix_seconds();
                let check = TokenCheck {
                    alg: "EdDSA".into(),
                    claims: Some(Claims {
                        iss: node(n).to_string(),
                        sub: node(n).to_string(),
                        aud: Audience::One("nap-central".into()),
                        iat,
                        exp: iat + 600,
                        jti: format!("00000000-0000-0000-0000-{:012}", jti),
                        scope: "node".into(),
                    }),
                    node: NodeLookup::Active,
                    signature_valid: valid,
                    spent: SpentRecord::Unspent,
                };
                next_session += 1;
                let upgrade = Upgrade {
                    session_id: SessionId::from_u128(next_session),
                    peer: None,
                    token: Some(check),
                    hello: crate::wire::Hello::default(),
                };
                if let Admit::Accepted(_) = central.admit(now, wall(now), &upgrade) {
                    assert!(valid, "an invalid signature was admitted");
                }
            }
            HubStep::Opened(n) => {
                // A status report on the node's live session, if any.
                if let Some(id) = central.hub.live_session(node(n)) {
                    let text = format!(
                        r#"{{"type":"status","nodeId":"{}","status":"online"}}"#,
                        node(n)
                    );
                    central.session_input(now, id, SessionInput::Frame(text));
                }
            }
            HubStep::Closed(n) => {
                if let Some(id) = central.hub.live_session(node(n)) {
                    central.session_input(now, id, SessionInput::Closed { code: None });
                }
            }
            HubStep::Submit {
                node: n,
                request: r,
                known,
            } => {
                let message = CentralMessage::Execute(Execute {
                    request_id: Some(request(r)),
                    command: "uptime".into(),
                    args: vec![],
                    timeout: Some(5_000),
                    hold_until: None,
                    requested_by: None,
                    rollout_approval: None,
                    requires_approval: false,
                    approver: None,
                });
                owners.entry(request(r)).or_insert(node(n));
                // The store refuses a request id it already holds; the hub
                // forgets finished ones after a while.
                if terminal.contains(&request(r)) {
                    continue;
                }
                let submission = Submission {
                    node_id: node(n),
                    request_id: request(r),
                    message: Some(message),
                    timeout: Duration::from_secs(5),
                    known,
                    approval: None,
                };
                central.hub_input(now, HubInput::Submit(vec![submission]));
            }
            HubStep::Result {
                node: n,
                request: r,
                success,
            } => {
                if let Some(id) = central.hub.live_session(node(n)) {
                    let result = CommandResult {
                        request_id: request(r),
                        success,
                        result: String::new(),
                        timestamp: wall(now),
                        exit_code: Some(i32::from(!success)),
                        stderr: None,
                        duration_ms: Some(1),
                        truncated: false,
                        error: None,
                    };
                    let text = encode(&AgentMessage::CommandResult(result)).unwrap_or_default();
                    central.session_input(now, id, SessionInput::Frame(text));
                }
            }
            HubStep::Revoke(n) => central.hub_input(now, HubInput::Revoke(node(n))),
            HubStep::Drain => central.hub_input(now, HubInput::Drain),
            HubStep::Rollout {
                concurrency,
                max_errors,
                strict,
                offline,
            } => {
                use crate::central::rollout::{
                    Amount, ErrorMode, Limits, OfflineTargets, Strategy,
                };
                if rollouts.len() >= 4 {
                    continue;
                }
                let k = rollouts.len() as u128;
                let strategy = Strategy {
                    max_concurrency: Amount::Count(u32::from(concurrency % 5)),
                    max_errors: Amount::Count(u32::from(max_errors % 3)),
                    error_mode: if strict {
                        ErrorMode::Strict
                    } else {
                        ErrorMode::Fast
                    },
                    offline: match offline % 3 {
                        0 => OfflineTargets::Skip,
                        1 => OfflineTargets::Wait,
                        _ => OfflineTargets::Fail,
                    },
                    deadline: Duration::from_secs(60),
                    ..Strategy::default()
                };
                let limits = Limits::of(&strategy, 4);
                let targets: Vec<(NodeId, crate::RequestId)> = (0..4u8)
                    .map(|n| {
                        (
                            node(n),
                            crate::RequestId::from_u128(1000 + k * 4 + u128::from(n)),
                        )
                    })
                    .collect();
                // Every other rollout needs approval first (v0.2, §8.4).
                let needs_approval = k % 2 == 1;
                rollouts.push((
                    limits.max_concurrency,
                    BTreeSet::new(),
                    false,
                    !needs_approval,
                ));
                let message = CentralMessage::Execute(Execute {
                    request_id: None,
                    command: "uptime".into(),
                    args: vec![],
                    timeout: Some(5_000),
                    hold_until: None,
                    requested_by: None,
                    rollout_approval: None,
                    requires_approval: false,
                    approver: None,
                });
                let new = crate::central::NewRollout {
                    rollout_id: crate::RolloutId::from_u128(k + 1),
                    requester: "fuzz".into(),
                    strategy,
                    message,
                    timeout: Duration::from_secs(5),
                    start_at: wall(now),
                    approval: needs_approval.then(|| {
                        Box::new(crate::central::NeedsApproval {
                            request: crate::central::approval::ApprovalRequest {
                                requester: "fuzz".into(),
                                approvers: crate::central::approval::Approvers::Anyone,
                                min_approvals: 1,
                                reason: "fuzz".into(),
                                digest: "d".into(),
                                expires_at: wall(now).add_millis(30_000),
                                approved_by: Vec::new(),
                                signatures: Vec::new(),
                            },
                            targets: crate::target_set::TargetSet::new(
                                &crate::testing::crypto::Symbolic,
                                &targets,
                            ),
                            valid_until: wall(now).add_millis(60_000),
                        })
                    }),
                    targets,
                    restored: None,
                };
                central.hub_input(now, HubInput::StartRollout(Box::new(new)));
            }
            HubStep::Control { rollout, control } => {
                let rollout_id = crate::RolloutId::from_u128(u128::from(rollout % 4) + 1);
                let bob = crate::central::approval::Person {
                    user: "bob".into(),
                    groups: BTreeSet::new(),
                    admin: false,
                };
                let control = match control % 5 {
                    0 => crate::central::RolloutControl::Pause,
                    1 => crate::central::RolloutControl::Resume,
                    2 => crate::central::RolloutControl::Abort,
                    3 => crate::central::RolloutControl::Decide {
                        person: bob,
                        decision: crate::central::approval::Decision::Approve {
                            digest: "d".into(),
                            signature: None,
                        },
                    },
                    _ => crate::central::RolloutControl::Decide {
                        person: bob,
                        decision: crate::central::approval::Decision::Reject {
                            reason: "no".into(),
                        },
                    },
                };
                central.hub_input(
                    now,
                    HubInput::ControlRollout {
                        rollout_id,
                        control,
                    },
                );
            }
            HubStep::Elsewhere { node: n, held } => {
                central.hub_input(now, HubInput::RolloutPresence(vec![(node(n), held)]));
            }
            HubStep::StoredState {
                rollout,
                node: n,
                state,
            } => {
                let k = u128::from(rollout % 4);
                let request_id = crate::RequestId::from_u128(1000 + k * 4 + u128::from(n % 4));
                let state = CommandState::ALL[usize::from(state) % CommandState::ALL.len()];
                central.hub_input(now, HubInput::RolloutCommands(vec![(request_id, state)]));
            }
            HubStep::DropRollouts => {
                central.hub_input(now, HubInput::DropRollouts);
                for (_, _, ended, _) in &mut rollouts {
                    *ended = true;
                }
            }
        }
        // What is due now fires now, as the drivers arrange.
        central.handle_timeout(now);
        let mut effects = 0;
        while let Some(effect) = central.poll_effect() {
            effects += 1;
            match effect {
                CentralEffect::Hub(HubOutput::CommandChanged {
                    request_id, state, ..
                }) if state.is_terminal() => {
                    assert!(
                        terminal.insert(request_id),
                        "{request_id} reached a terminal state twice"
                    );
                    assert_ne!(state, CommandState::Queued);
                    for (_, in_flight, _, _) in &mut rollouts {
                        in_flight.remove(&request_id);
                    }
                }
                CentralEffect::Hub(HubOutput::RolloutStart {
                    rollout_id,
                    node_id,
                    request_id,
                    message,
                    timeout,
                    ..
                }) => {
                    let k = usize::try_from(rollout_id.0.as_u128() - 1).unwrap_or(0);
                    let (limit, in_flight, ended, approved) = &mut rollouts[k];
                    assert!(
                        !*ended,
                        "rollout {rollout_id} started {node_id} after it ended"
                    );
                    assert!(
                        *approved,
                        "rollout {rollout_id} started {node_id} before it was approved"
                    );
                    in_flight.insert(request_id);
                    assert!(
                        in_flight.len() <= *limit,
                        "rollout {rollout_id}: {} in flight, maxConcurrency {limit}",
                        in_flight.len()
                    );
                    owners.insert(request_id, node_id);
                    let submission = Submission {
                        node_id,
                        request_id,
                        message: Some(message),
                        timeout,
                        known: true,
                        approval: None,
                    };
                    central.hub_input(now, HubInput::Submit(vec![submission]));
                }
                CentralEffect::Hub(HubOutput::RolloutTargetChanged {
                    rollout_id,
                    node_id,
                    state,
                }) if state.is_terminal() => {
                    // Ended for the rollout, whoever reported it (a stored
                    // state read from elsewhere included).
                    let k = rollout_id.0.as_u128() - 1;
                    let n = node_id.0.as_u128() - node(0).0.as_u128();
                    let request_id = crate::RequestId::from_u128(1000 + k * 4 + n);
                    if let Some((_, in_flight, _, _)) =
                        rollouts.get_mut(usize::try_from(k).unwrap_or(usize::MAX))
                    {
                        in_flight.remove(&request_id);
                    }
                }
                CentralEffect::Hub(HubOutput::RolloutChanged { rollout_id, state })
                    if state.is_terminal() =>
                {
                    let k = usize::try_from(rollout_id.0.as_u128() - 1).unwrap_or(0);
                    rollouts[k].2 = true;
                }
                CentralEffect::Hub(HubOutput::RolloutControlled {
                    rollout_id,
                    control:
                        crate::central::RolloutControl::Decide {
                            decision: crate::central::approval::Decision::Approve { .. },
                            ..
                        },
                    verdict: Ok(_),
                }) => {
                    // One approval is all it needs.
                    let k = usize::try_from(rollout_id.0.as_u128() - 1).unwrap_or(0);
                    rollouts[k].3 = true;
                }
                CentralEffect::Hub(HubOutput::RecordResult {
                    session_id,
                    node_id,
                    result,
                }) => {
                    let record = if owners
                        .get(&result.request_id)
                        .is_some_and(|o| *o != node_id)
                    {
                        ResultRecord::WrongNode
                    } else {
                        ResultRecord::Stored {
                            first: stored.insert(result.request_id),
                        }
                    };
                    let input = HubInput::ResultRecorded {
                        session_id,
                        node_id,
                        result,
                        record,
                    };
                    central.hub_input(now, input);
                }
                CentralEffect::Session {
                    session_id,
                    output: SessionOutput::StoreTelemetry(t),
                    ..
                } => {
                    let input = SessionInput::TelemetryStored(t.timestamp);
                    central.session_input(now, session_id, input);
                }
                _ => {}
            }
        }
        assert!(effects <= 128, "{effects} effects for one step");
        for (n, sessions) in central.open_sessions() {
            assert!(sessions <= 1, "node {n} holds {sessions} open sessions");
        }
        assert!(
            central.poll_timeout().is_none_or(|deadline| deadline > now),
            "a timer due at {now} is still armed"
        );
    }
}

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// Every target, by name (for the replay test and `fuzz/run.sh`).
pub const TARGETS: &[(&str, Target)] = &[
    ("codec", codec),
    ("agent_engine", agent_engine),
    ("central_session", central_session),
    ("claims", claims),
    ("policy", policy),
    ("branch", branch),
    ("hub", hub),
];
