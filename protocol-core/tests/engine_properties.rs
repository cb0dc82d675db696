//! State-machine property tests (proptest-state-machine): random sequences
//! of time jumps, commands, duplicates, transport cuts, partitions, restarts
//! and garbage, checked after every step against the protocol's invariants
//! and against small reference models.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use nap_core::agent::AgentEvent;
use nap_core::central::{CentralSession, SessionConfig, SessionInput};
use nap_core::testing::{Behaviour, World};
use nap_core::{SessionId, Timestamp, WallTime};
use proptest::prelude::*;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};

// ---------------------------------------------------------------- agent + central

#[derive(Debug, Clone)]
enum Step {
    Advance(u32),
    Submit { id: u8, hang: bool, timeout_s: u8 },
    Duplicate(u8),
    Cut,
    Partition,
    Heal,
    RestartCentral,
    RestartAgent,
    Garbage(String),
    Drain,
}

/// What the reference model knows: enough to say when the system must have
/// settled (connected, every command answered).
#[derive(Debug, Clone, Default)]
struct FleetModel {
    now: u64,
    partitioned: bool,
    /// When the last disruption ended.
    quiet_since: u64,
    /// Commands submitted since central last restarted (older ones may be
    /// lost with the restarted hub's memory in this world).
    tracked: std::collections::BTreeMap<u8, u64>,
    submitted: BTreeSet<u8>,
}

impl ReferenceStateMachine for FleetModel {
    type State = Self;
    type Transition = Step;

    fn init_state() -> BoxedStrategy<Self> {
        Just(Self::default()).boxed()
    }

    fn transitions(_: &Self) -> BoxedStrategy<Step> {
        prop_oneof![
            6 => (1u32..900).prop_map(Step::Advance),
            4 => (0u8..12, any::<bool>(), 1u8..60).prop_map(|(id, hang, timeout_s)| Step::Submit { id, hang, timeout_s }),
            2 => (0u8..12).prop_map(Step::Duplicate),
            1 => Just(Step::Cut),
            1 => Just(Step::Partition),
            2 => Just(Step::Heal),
            1 => Just(Step::RestartCentral),
            1 => Just(Step::RestartAgent),
            1 => "[ -~]{0,20}".prop_map(Step::Garbage),
            1 => Just(Step::Drain),
        ]
        .boxed()
    }

    fn apply(mut state: Self, step: &Step) -> Self {
        match step {
            Step::Advance(s) => state.now += u64::from(*s),
            Step::Submit { id, .. } => {
                if state.submitted.insert(*id) {
                    state.tracked.insert(*id, state.now);
                }
            }
            Step::Duplicate(_) => {}
            Step::Partition => {
                state.partitioned = true;
                state.quiet_since = state.now;
            }
            Step::Heal => {
                if state.partitioned {
                    state.quiet_since = state.now;
                }
                state.partitioned = false;
            }
            Step::RestartCentral => {
                state.tracked.clear();
                state.quiet_since = state.now;
            }
            Step::Cut | Step::RestartAgent | Step::Garbage(_) | Step::Drain => {
                state.quiet_since = state.now
            }
        }
        state
    }
}

struct FleetTest;

impl StateMachineTest for FleetTest {
    type SystemUnderTest = World;
    type Reference = FleetModel;

    fn init_test(_: &FleetModel) -> World {
        let mut world = World::new(0xF1EE7);
        world.add_agent(NODE, config(0xF1EE7));
        world.start(0);
        world
    }

    fn apply(mut world: World, model: &FleetModel, step: Step) -> World {
        match step {
            Step::Advance(s) => world.run_for(Duration::from_secs(u64::from(s))),
            Step::Submit {
                id,
                hang,
                timeout_s,
            } => {
                let name = if hang { "sleep" } else { "uptime" };
                if hang {
                    world.agents[0]
                        .behaviours
                        .insert("sleep".into(), Behaviour::Hang);
                }
                let args: &[&str] = if hang { &["100"] } else { &[] };
                let timeout = u64::from(timeout_s) * 1000;
                world.submit(
                    NODE,
                    execute(request(u128::from(id)), name, args, Some(timeout)),
                    secs(u64::from(timeout_s)),
                );
            }
            Step::Duplicate(id) => {
                let _ =
                    world.deliver_to(NODE, execute(request(u128::from(id)), "uptime", &[], None));
            }
            Step::Cut => world.cut_transports(),
            Step::Partition => world.set_partitioned(true),
            Step::Heal => world.set_partitioned(false),
            Step::RestartCentral => world.restart_central(),
            Step::RestartAgent => world.restart_agent(0, config(0xF1EE7)),
            Step::Garbage(text) => world.frame_to_central(0, &text),
            Step::Drain => world.drain(),
        }
        // The reference's liveness predictions, once things have been quiet long enough.
        let quiet = model.now.saturating_sub(model.quiet_since);
        if !model.partitioned && quiet >= 400 {
            assert!(
                established(&world, 0),
                "quiet for {quiet} s but not established"
            );
        }
        if !model.partitioned && quiet >= 800 {
            for (id, submitted_at) in &model.tracked {
                if model.now - submitted_at < 800 {
                    continue;
                }
                let id = request(u128::from(*id));
                let answered = world.store.results.contains_key(&id)
                    || world
                        .store
                        .command_states
                        .get(&id)
                        .is_some_and(|s| s.iter().any(|s| s.is_terminal()));
                assert!(answered, "{id} never reached a terminal state");
            }
        }
        world
    }

    fn check_invariants(world: &World, _: &FleetModel) {
        assert!(world.violations.is_empty(), "{:?}", world.violations);
        let agent = &world.agents[0];
        for (timer, at) in agent.engine.timers() {
            assert!(
                at >= world.now,
                "agent timer {timer:?} at {at} is before now {}",
                world.now
            );
        }
        for session in world.central.sessions.values() {
            for (timer, at) in session.timers() {
                assert!(at >= world.now, "session timer {timer:?} armed in the past");
            }
        }
        for (id, runs) in &agent.runs {
            assert_eq!(*runs, 1, "{id} ran {runs} times");
        }
        for (_, event) in &agent.events {
            if let AgentEvent::BackoffScheduled { delay, .. } = event {
                assert!(
                    *delay >= secs(5) && *delay <= secs(300),
                    "backoff {delay:?}"
                );
            }
        }
        assert!(agent.engine.buffered_telemetry() <= 1440);
        assert!(agent.engine.outbox_len() <= 1000);
        assert!(agent.engine.pending_alerts() <= 100);
        assert!(agent.engine.recorded_requests() <= 10_000 + 20);
        assert!(
            world.max_outputs_per_call <= 5_000,
            "{} outputs",
            world.max_outputs_per_call
        );
        assert!(
            world.central.hub.live_count() <= 1,
            "two live sessions for one node"
        );
        for (id, states) in &world.store.command_states {
            let terminal = states.iter().filter(|s| s.is_terminal()).count();
            assert!(
                terminal <= 1,
                "{id} reached {terminal} terminal states: {states:?}"
            );
        }
    }
}

prop_state_machine! {
    #![proptest_config(ProptestConfig { cases: 48, max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn agent_and_central_keep_their_invariants(sequential 1..60 => FleetTest);
}

// ---------------------------------------------------------------- one central session

#[derive(Debug, Clone)]
enum Frame {
    Advance(u32),
    Valid,
    Invalid,
    Oversize,
}

/// A reference for the session's closing rules: invalid messages in a
/// sliding window, silence, token expiry and size.
#[derive(Debug, Clone)]
struct SessionModel {
    now_ms: u64,
    open: bool,
    last_inbound_ms: u64,
    window_start_ms: u64,
    invalid_in_window: u32,
}

const OFFLINE_AFTER_MS: u64 = 75_000;
const TOKEN_MS: u64 = 3_600_000;

impl ReferenceStateMachine for SessionModel {
    type State = Self;
    type Transition = Frame;

    fn init_state() -> BoxedStrategy<Self> {
        Just(Self {
            now_ms: 0,
            open: true,
            last_inbound_ms: 0,
            window_start_ms: 0,
            invalid_in_window: 0,
        })
        .boxed()
    }

    fn transitions(_: &Self) -> BoxedStrategy<Frame> {
        prop_oneof![
            3 => (1u32..90_000).prop_map(Frame::Advance),
            3 => Just(Frame::Valid),
            4 => Just(Frame::Invalid),
            1 => Just(Frame::Oversize),
        ]
        .boxed()
    }

    fn apply(mut s: Self, frame: &Frame) -> Self {
        if !s.open {
            return s;
        }
        match frame {
            Frame::Advance(ms) => {
                s.now_ms += u64::from(*ms);
                if s.now_ms >= s.last_inbound_ms + OFFLINE_AFTER_MS || s.now_ms >= TOKEN_MS {
                    s.open = false;
                }
            }
            Frame::Valid => s.last_inbound_ms = s.now_ms,
            Frame::Invalid => {
                if s.now_ms - s.window_start_ms >= 60_000 {
                    s.window_start_ms = s.now_ms;
                    s.invalid_in_window = 0;
                }
                s.invalid_in_window += 1;
                if s.invalid_in_window > 10 {
                    s.open = false;
                }
            }
            Frame::Oversize => s.open = false,
        }
        s
    }
}

struct SessionTest;

impl StateMachineTest for SessionTest {
    type SystemUnderTest = (CentralSession, Timestamp);
    type Reference = SessionModel;

    fn init_test(_: &SessionModel) -> Self::SystemUnderTest {
        let wall = WallTime::from_unix_millis(1_760_522_400_000).expect("valid");
        let mut session = CentralSession::new(
            Timestamp::ZERO,
            wall,
            nap_core::central::Admission {
                node_id: NODE,
                session_id: SessionId::from_u128(1),
                token_expires_at: wall.add_millis(3_600_000),
            },
            SessionConfig::default(),
        );
        // `welcome` and the hub's notice that the node is online.
        while session.poll_output().is_some() {}
        (session, Timestamp::ZERO)
    }

    fn apply(
        (mut session, mut now): Self::SystemUnderTest,
        model: &SessionModel,
        frame: Frame,
    ) -> Self::SystemUnderTest {
        match frame {
            Frame::Advance(ms) => {
                now = now + Duration::from_millis(u64::from(ms));
                session.handle_timeout(now);
            }
            Frame::Valid => session.handle_input(
                now,
                SessionInput::Frame(r#"{"type":"ping","timestamp":1}"#.into()),
            ),
            Frame::Invalid => session.handle_input(now, SessionInput::Frame("not json".into())),
            Frame::Oversize => {
                session.handle_input(now, SessionInput::Frame("x".repeat((1 << 20) + 1)))
            }
        }
        let mut outputs = 0;
        while session.poll_output().is_some() {
            outputs += 1;
        }
        assert!(outputs <= 5, "{outputs} outputs for one input");
        assert_eq!(
            session.is_open(),
            model.open,
            "the session and its model disagree"
        );
        (session, now)
    }

    fn check_invariants((session, now): &Self::SystemUnderTest, _: &SessionModel) {
        for (timer, at) in session.timers() {
            assert!(at > *now, "{timer:?} armed in the past");
        }
        if !session.is_open() {
            assert_eq!(
                session.poll_timeout(),
                None,
                "a closed session arms nothing"
            );
        }
    }
}

prop_state_machine! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn a_session_closes_exactly_when_its_model_says(sequential 1..80 => SessionTest);
}
