//! A [stateright] model of one rollout (spec/protocol.md §8.3): the real
//! [`Rollout`] engine, its targets ending in success or failure in any
//! order, their nodes coming and going, an operator pausing, resuming and
//! aborting at any moment, and its deadlines firing in their order; with
//! `approval`, approvers approving or rejecting it at any moment (§8.4).
//! The properties are its safety rules: in flight within `maxConcurrency`,
//! in strict mode never more than `maxErrors + 1` failures, nothing started
//! once it has ended, nothing started before it is approved, and every
//! target ending in exactly one state.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use stateright::{Model, Property};

use crate::central::CommandState;
use crate::central::rollout::{
    ErrorMode, Rollout, RolloutOutput, RolloutState, Strategy, TargetState,
};
use crate::{NodeId, RequestId, Timestamp};

/// What the model explores.
#[derive(Debug, Clone)]
pub struct RolloutModel {
    pub strategy: Strategy,
    pub targets: usize,
    /// Targets offline at the start (by index); any target's node may go
    /// away and come back when `flapping`.
    pub offline: Vec<usize>,
    pub flapping: bool,
    /// It needs approval first (v0.2).
    pub approval: bool,
}

/// When a rollout that needs approval and gets none ends.
const APPROVAL_EXPIRES: Duration = Duration::from_secs(30 * 60);

/// The rollout and what was seen of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RolloutWorld {
    pub rollout: Rollout,
    pub now: Timestamp,
    pub online: BTreeSet<NodeId>,
    /// The first terminal state each target reported.
    pub ended: BTreeMap<NodeId, TargetState>,
    /// A target reported a second, different terminal state.
    pub ended_twice: bool,
    /// Something started after the rollout ended.
    pub started_after_end: bool,
    /// The approval is complete (always, for one that needs none).
    pub approved: bool,
    /// Something started before the approval was complete.
    pub started_unapproved: bool,
}

/// One step.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RolloutAction {
    /// A target in flight ended so.
    End(NodeId, CommandState),
    /// A held command, here as any in-flight state change.
    Hold(NodeId),
    Online(NodeId, bool),
    Pause,
    Resume,
    Abort,
    /// The last approval needed.
    Approve,
    Reject,
    /// The next deadline.
    Tick,
}

fn node(i: usize) -> NodeId {
    NodeId::from_u128(i as u128 + 1)
}

impl RolloutModel {
    fn pump(world: &mut RolloutWorld) {
        while let Some(output) = world.rollout.poll_output() {
            match output {
                RolloutOutput::Start { node_id, .. } => {
                    if world.rollout.state().is_terminal() {
                        world.started_after_end = true;
                    }
                    if !world.approved {
                        world.started_unapproved = true;
                    }
                    world
                        .rollout
                        .handle_command(world.now, node_id, CommandState::Sent);
                }
                RolloutOutput::TargetChanged { node_id, state } if state.is_terminal() => {
                    match world.ended.get(&node_id) {
                        Some(first) if *first != state => world.ended_twice = true,
                        Some(_) => {}
                        None => {
                            world.ended.insert(node_id, state);
                        }
                    }
                }
                RolloutOutput::TargetChanged { .. } | RolloutOutput::StateChanged(_) => {}
            }
        }
    }

    fn strict(&self) -> bool {
        self.strategy.error_mode == ErrorMode::Strict
    }
}

impl Model for RolloutModel {
    type State = RolloutWorld;
    type Action = RolloutAction;

    fn init_states(&self) -> Vec<Self::State> {
        let targets = (0..self.targets)
            .map(|i| (node(i), RequestId::from_u128(100 + i as u128)))
            .collect();
        let online: BTreeSet<NodeId> = (0..self.targets)
            .filter(|i| !self.offline.contains(i))
            .map(node)
            .collect();
        let mut world = RolloutWorld {
            rollout: Rollout::new(
                self.strategy.clone(),
                targets,
                online.clone(),
                Timestamp::ZERO,
            ),
            now: Timestamp::ZERO,
            online,
            ended: BTreeMap::new(),
            ended_twice: false,
            started_after_end: false,
            approved: !self.approval,
            started_unapproved: false,
        };
        if self.approval {
            world
                .rollout
                .await_approval(Timestamp::ZERO + APPROVAL_EXPIRES);
        }
        world.rollout.handle_timeout(world.now);
        Self::pump(&mut world);
        vec![world]
    }

    fn actions(&self, state: &Self::State, actions: &mut Vec<Self::Action>) {
        for target in state.rollout.targets() {
            if let TargetState::Command(s) = target.state
                && !s.is_terminal()
            {
                actions.push(RolloutAction::End(target.node_id, CommandState::Succeeded));
                actions.push(RolloutAction::End(target.node_id, CommandState::Failed));
                if s == CommandState::Sent {
                    actions.push(RolloutAction::Hold(target.node_id));
                }
            }
        }
        let flapping = (0..self.targets)
            .filter(|i| self.flapping || self.offline.contains(i))
            .map(node);
        for node_id in flapping {
            let online = state.online.contains(&node_id);
            actions.push(RolloutAction::Online(node_id, !online));
        }
        if !state.rollout.state().is_terminal() {
            if state.rollout.state() == RolloutState::Paused {
                actions.push(RolloutAction::Resume);
            } else {
                actions.push(RolloutAction::Pause);
            }
            actions.push(RolloutAction::Abort);
        }
        if state.rollout.awaits_approval() {
            actions.push(RolloutAction::Approve);
            actions.push(RolloutAction::Reject);
        }
        if state.rollout.poll_timeout().is_some() {
            actions.push(RolloutAction::Tick);
        }
    }

    fn next_state(&self, last: &Self::State, action: Self::Action) -> Option<Self::State> {
        let mut world = last.clone();
        let now = world.now;
        match action {
            RolloutAction::End(node_id, state) => world.rollout.handle_command(now, node_id, state),
            RolloutAction::Hold(node_id) => {
                world
                    .rollout
                    .handle_command(now, node_id, CommandState::Held);
            }
            RolloutAction::Online(node_id, online) => {
                if online {
                    world.online.insert(node_id);
                } else {
                    world.online.remove(&node_id);
                }
                world.rollout.handle_online(now, node_id, online);
            }
            RolloutAction::Pause => world.rollout.pause(now).ok()?,
            RolloutAction::Resume => world.rollout.resume(now).ok()?,
            RolloutAction::Abort => world.rollout.abort().ok()?,
            RolloutAction::Approve => {
                world.approved = true;
                world.rollout.approve(now).ok()?;
            }
            RolloutAction::Reject => world.rollout.reject().ok()?,
            RolloutAction::Tick => {
                world.now = world.rollout.poll_timeout()?;
                world.rollout.handle_timeout(world.now);
            }
        }
        Self::pump(&mut world);
        Some(world)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        let mut properties = vec![
            Property::always(
                "in flight never exceeds maxConcurrency",
                |_, w: &RolloutWorld| {
                    w.rollout.counts().in_flight <= w.rollout.limits().max_concurrency
                },
            ),
            Property::always(
                "nothing starts after halt, abort or the deadline",
                |_, w: &RolloutWorld| !w.started_after_end,
            ),
            Property::always(
                "a target's terminal state never changes",
                |_, w: &RolloutWorld| !w.ended_twice,
            ),
            Property::always(
                "once ended and nothing in flight, every target has ended",
                |_, w: &RolloutWorld| {
                    !(w.rollout.state().is_terminal() && w.rollout.counts().in_flight == 0)
                        || w.rollout.targets().iter().all(|t| t.state.is_terminal())
                },
            ),
            Property::always(
                "succeeded means within the error budget, nothing skipped",
                |_, w: &RolloutWorld| {
                    w.rollout.state() != RolloutState::Succeeded
                        || (w.rollout.counts().failed <= w.rollout.limits().max_errors
                            && w.rollout.counts().skipped == 0)
                },
            ),
            Property::sometimes("the rollout completes", |_, w: &RolloutWorld| {
                matches!(
                    w.rollout.state(),
                    RolloutState::Succeeded | RolloutState::CompletedWithSkips
                )
            }),
            Property::sometimes("the rollout halts", |_, w: &RolloutWorld| {
                w.rollout.state() == RolloutState::Halted
            }),
        ];
        if self.approval {
            properties.push(Property::always(
                "nothing starts before the approval is complete",
                |_, w: &RolloutWorld| !w.started_unapproved,
            ));
            properties.push(Property::always(
                "a rejected or expired rollout started nothing",
                |_, w: &RolloutWorld| {
                    !matches!(
                        w.rollout.state(),
                        RolloutState::Rejected | RolloutState::ApprovalExpired
                    ) || w
                        .rollout
                        .targets()
                        .iter()
                        .all(|t| t.state == TargetState::Command(CommandState::Cancelled))
                },
            ));
            properties.push(Property::sometimes(
                "the rollout is rejected",
                |_, w: &RolloutWorld| w.rollout.state() == RolloutState::Rejected,
            ));
            properties.push(Property::sometimes(
                "nobody approves it in time",
                |_, w: &RolloutWorld| w.rollout.state() == RolloutState::ApprovalExpired,
            ));
        }
        if self.strict() {
            properties.push(Property::always(
                "strict: failures never exceed maxErrors + 1",
                |_, w: &RolloutWorld| {
                    w.rollout.counts().failed <= w.rollout.limits().max_errors + 1
                },
            ));
        } else {
            properties.push(Property::always(
                "fast: failures past maxErrors are at most what was in flight",
                |_, w: &RolloutWorld| {
                    let limits = w.rollout.limits();
                    w.rollout.counts().failed <= limits.max_errors + limits.max_concurrency
                },
            ));
            // Not vacuous: what strict mode prevents does happen in fast mode.
            properties.push(Property::sometimes(
                "fast: in-flight failures pass maxErrors + 1",
                |_, w: &RolloutWorld| w.rollout.counts().failed > w.rollout.limits().max_errors + 1,
            ));
        }
        properties
    }
}
