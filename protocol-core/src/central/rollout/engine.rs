//! One rollout's state machine (spec/protocol.md §8.3): which target starts
//! when, driven by its targets' command states, their nodes being online,
//! and time. It starts nothing itself: it asks its host for
//! [`RolloutOutput::Start`] and hears back every state of that command.
//!
//! The counts it keeps (in flight, failed, waiting) are updated as states
//! arrive, so a step costs what it starts, not the size of the rollout.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::plan::{ErrorMode, Limits, OfflineTargets, Strategy};
use crate::central::command::CommandState;
use crate::timer::Timers;
use crate::{NodeId, RequestId, Timestamp};

/// A target's state: not started yet, skipped, or its command's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TargetState {
    /// Its turn has not come (or it waits, offline, for its node).
    Pending,
    /// Offline when its turn came, with `offline: skip`.
    Skipped,
    /// Started: its command's state (spec §8). A target the rollout never
    /// started because it ended first (halted, aborted, deadline) is
    /// `cancelled`; one offline with `offline: fail` is `undeliverable`.
    Command(CommandState),
}

impl TargetState {
    /// The name used in the API and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Skipped => "skipped",
            Self::Command(state) => state.as_str(),
        }
    }

    /// The state named `name` (the inverse of [`Self::as_str`]).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "pending" => Some(Self::Pending),
            "skipped" => Some(Self::Skipped),
            other => CommandState::from_name(other).map(Self::Command),
        }
    }

    /// Whether it ended.
    pub fn is_terminal(self) -> bool {
        match self {
            Self::Pending => false,
            Self::Skipped => true,
            Self::Command(state) => state.is_terminal(),
        }
    }

    /// Whether it ended in a failure that counts against `maxErrors`.
    pub fn is_error(self) -> bool {
        match self {
            Self::Command(state) => {
                state.is_terminal()
                    && !matches!(state, CommandState::Succeeded | CommandState::Cancelled)
            }
            Self::Pending | Self::Skipped => false,
        }
    }

    /// Started and not ended.
    fn in_flight(self) -> bool {
        matches!(self, Self::Command(state) if !state.is_terminal())
    }
}

impl Serialize for TargetState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for TargetState {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Self::from_name(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown target state `{name}`")))
    }
}

/// A rollout's state (spec §8.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    /// v0.2: waiting for people to approve it (spec §8.4); nothing starts.
    AwaitingApproval,
    /// Waiting for its start time.
    Scheduled,
    /// The canary targets run; nothing else starts.
    Canary,
    /// The canary ended within the error budget; the bake time runs.
    Baking,
    /// The rest of the targets start, as the strategy allows.
    Rolling,
    /// Nothing new starts until it is resumed (what runs, runs on).
    Paused,
    /// Every target ended, none skipped, failures within `maxErrors`.
    Succeeded,
    /// Every target ended, some skipped (offline) or cancelled.
    CompletedWithSkips,
    /// Failures passed `maxErrors`: nothing new starts.
    Halted,
    /// Aborted by an operator: nothing new starts.
    Aborted,
    /// Its deadline came first: nothing new starts.
    DeadlinePassed,
    /// v0.2: an approver rejected it; nothing started.
    Rejected,
    /// v0.2: nobody approved it in time; nothing started.
    ApprovalExpired,
}

impl RolloutState {
    /// Every state a rollout has not ended in.
    pub const OPEN: [Self; 6] = [
        Self::AwaitingApproval,
        Self::Scheduled,
        Self::Canary,
        Self::Baking,
        Self::Rolling,
        Self::Paused,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded
                | Self::CompletedWithSkips
                | Self::Halted
                | Self::Aborted
                | Self::DeadlinePassed
                | Self::Rejected
                | Self::ApprovalExpired
        )
    }

    /// The name used in the API and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AwaitingApproval => "awaiting_approval",
            Self::Scheduled => "scheduled",
            Self::Canary => "canary",
            Self::Baking => "baking",
            Self::Rolling => "rolling",
            Self::Paused => "paused",
            Self::Succeeded => "succeeded",
            Self::CompletedWithSkips => "completed_with_skips",
            Self::Halted => "halted",
            Self::Aborted => "aborted",
            Self::DeadlinePassed => "deadline_passed",
            Self::Rejected => "rejected",
            Self::ApprovalExpired => "approval_expired",
        }
    }
}

/// What the host is to do.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RolloutOutput {
    /// Send the rollout's command to this target's node, as `request_id`;
    /// report its states with [`Rollout::handle_command`].
    Start {
        node_id: NodeId,
        request_id: RequestId,
    },
    /// Store: a target's state changed.
    TargetChanged { node_id: NodeId, state: TargetState },
    /// Store: the rollout's state changed.
    StateChanged(RolloutState),
}

/// The rollout's named deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RolloutTimer {
    /// v0.2: the end of the wait for approval.
    Approval,
    /// The start time.
    Start,
    /// The end of the bake.
    Bake,
    /// The first slot whose batch wait ends.
    Slot,
    /// The deadline.
    Deadline,
    /// After a restart: the end of the wait for the targets' nodes to
    /// reconnect, before anything new starts.
    Hold,
}

/// Why a pause, resume or abort was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutRefusal {
    #[error("the rollout has ended")]
    Ended,
    #[error("the rollout is paused already")]
    Paused,
    #[error("the rollout is not paused")]
    NotPaused,
    #[error("the rollout does not await approval")]
    NotAwaitingApproval,
}

/// One target.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    pub node_id: NodeId,
    /// The id its command has (or will have).
    pub request_id: RequestId,
    pub state: TargetState,
    /// One of the canary targets.
    #[serde(default)]
    pub canary: bool,
}

/// How many targets are in each kind of state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    pub pending: usize,
    pub in_flight: usize,
    pub succeeded: usize,
    pub failed: usize,
    /// Skipped offline, or cancelled.
    pub skipped: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Phase {
    AwaitingApproval,
    Scheduled,
    Canary,
    Baking,
    Rolling,
    Ended(RolloutState),
}

/// One rollout.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rollout {
    strategy: Strategy,
    limits: Limits,
    targets: Vec<Target>,
    index: BTreeMap<NodeId, usize>,
    online: BTreeSet<NodeId>,
    phase: Phase,
    paused: bool,
    start_at: Timestamp,
    deadline: Timestamp,
    /// While paused in `Baking`: what was left of it.
    bake_left: Duration,
    /// Targets not looked at yet start at this index.
    cursor: usize,
    /// Pending targets passed over because their node was offline
    /// (`offline: wait`), by index.
    waiting: BTreeSet<usize>,
    /// When each slot in its batch wait is free again.
    cooling: Vec<Timestamp>,
    canary_started: usize,
    canary_in_flight: usize,
    /// After a restart: nothing new starts before this.
    hold_until: Option<Timestamp>,
    counts: Counts,
    timers: Timers<RolloutTimer>,
    out: VecDeque<RolloutOutput>,
}

impl Rollout {
    /// A rollout of `targets` (node and the request id its command gets, in
    /// the order they are to start), starting at `start_at`; `online` are
    /// the targets' nodes connected now. The canary is the first targets
    /// that start.
    pub fn new(
        strategy: Strategy,
        targets: Vec<(NodeId, RequestId)>,
        online: BTreeSet<NodeId>,
        start_at: Timestamp,
    ) -> Self {
        let limits = Limits::of(&strategy, targets.len());
        let targets: Vec<Target> = targets
            .into_iter()
            .map(|(node_id, request_id)| Target {
                node_id,
                request_id,
                state: TargetState::Pending,
                canary: false,
            })
            .collect();
        let index = targets
            .iter()
            .enumerate()
            .map(|(i, t)| (t.node_id, i))
            .collect();
        let mut timers = Timers::default();
        timers.set(RolloutTimer::Start, start_at);
        let deadline = start_at + strategy.deadline;
        timers.set(RolloutTimer::Deadline, deadline);
        let counts = Counts {
            pending: targets.len(),
            ..Counts::default()
        };
        Self {
            strategy,
            limits,
            targets,
            index,
            online,
            phase: Phase::Scheduled,
            paused: false,
            start_at,
            deadline,
            bake_left: Duration::ZERO,
            cursor: 0,
            waiting: BTreeSet::new(),
            cooling: Vec::new(),
            canary_started: 0,
            canary_in_flight: 0,
            hold_until: None,
            counts,
            timers,
            out: VecDeque::new(),
        }
    }

    /// A rollout restored after central restarted, from what the store
    /// kept: its `state` and each target's (in order). What had started goes
    /// on; nothing new starts before `hold_until`, so that the targets'
    /// nodes can reconnect first (an offline target is not skipped for
    /// central's own restart). A bake that was running starts again in
    /// full; a rollout stored as paused is paused in the phase its targets
    /// show. `online`: the targets' nodes online now, all known before the
    /// first step (told one at a time, the first could free a slot that an
    /// online node told later is skipped from).
    pub fn restore(
        strategy: Strategy,
        targets: Vec<(NodeId, RequestId, TargetState)>,
        state: RolloutState,
        start_at: Timestamp,
        now: Timestamp,
        hold_until: Timestamp,
        online: BTreeSet<NodeId>,
    ) -> Self {
        let plan = targets.iter().map(|(n, r, _)| (*n, *r)).collect();
        let mut rollout = Self::new(strategy, plan, online, start_at);
        let canary = rollout.limits.canary;
        let mut started = 0;
        for (i, (_, _, target)) in targets.into_iter().enumerate() {
            if target == TargetState::Pending {
                continue;
            }
            if matches!(target, TargetState::Command(_)) {
                started += 1;
                // The first ones started were the canary's.
                rollout.targets[i].canary = started <= canary;
            }
            rollout.set(i, target);
        }
        rollout.canary_started = started.min(canary);
        let in_canary = canary > 0
            && (rollout.canary_in_flight > 0 || (started < canary && rollout.counts.pending > 0));
        let phase = match state {
            RolloutState::Scheduled | RolloutState::AwaitingApproval => Phase::Scheduled,
            RolloutState::Canary => Phase::Canary,
            RolloutState::Baking => Phase::Baking,
            RolloutState::Paused if started == 0 => Phase::Scheduled,
            RolloutState::Paused if in_canary => Phase::Canary,
            RolloutState::Paused
                if canary > 0 && started == canary && !rollout.strategy.bake.is_zero() =>
            {
                Phase::Baking
            }
            RolloutState::Rolling | RolloutState::Paused => Phase::Rolling,
            ended => Phase::Ended(ended),
        };
        rollout.phase = phase;
        rollout.paused = state == RolloutState::Paused;
        rollout.out.clear();
        if let Phase::Ended(_) = phase {
            rollout.timers.retain(|_| false);
            return rollout;
        }
        if phase != Phase::Scheduled {
            rollout.timers.stop(&RolloutTimer::Start);
        }
        if phase == Phase::Baking {
            if rollout.paused {
                rollout.bake_left = rollout.strategy.bake;
            } else {
                let end = hold_until.max(now) + rollout.strategy.bake;
                rollout.timers.set(RolloutTimer::Bake, end);
            }
        }
        if rollout.paused {
            rollout.timers.stop(&RolloutTimer::Start);
        }
        rollout.hold_until = Some(hold_until);
        rollout.timers.set(RolloutTimer::Hold, hold_until);
        rollout
    }

    pub fn state(&self) -> RolloutState {
        match self.phase {
            Phase::Ended(state) => state,
            _ if self.paused => RolloutState::Paused,
            Phase::AwaitingApproval => RolloutState::AwaitingApproval,
            Phase::Scheduled => RolloutState::Scheduled,
            Phase::Canary => RolloutState::Canary,
            Phase::Baking => RolloutState::Baking,
            Phase::Rolling => RolloutState::Rolling,
        }
    }

    /// The absolute numbers it runs by.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn strategy(&self) -> &Strategy {
        &self.strategy
    }

    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// When no target starts any more and their commands expire.
    pub fn deadline(&self) -> Timestamp {
        self.deadline
    }

    /// The target that `node_id` is.
    pub fn target(&self, node_id: NodeId) -> Option<&Target> {
        self.index.get(&node_id).map(|&i| &self.targets[i])
    }

    /// The place of `node_id` among the targets, from 0.
    pub fn position(&self, node_id: NodeId) -> Option<usize> {
        self.index.get(&node_id).copied()
    }

    #[must_use]
    pub fn poll_output(&mut self) -> Option<RolloutOutput> {
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.timers.next()
    }

    /// Every armed timer.
    pub fn timers(&self) -> impl Iterator<Item = (&RolloutTimer, Timestamp)> {
        self.timers.iter()
    }

    pub fn handle_timeout(&mut self, now: Timestamp) {
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                RolloutTimer::Start => {
                    if self.phase == Phase::Scheduled && !self.paused {
                        self.begin(now);
                    }
                }
                RolloutTimer::Bake => {
                    if self.phase == Phase::Baking && !self.paused {
                        self.enter(Phase::Rolling);
                    }
                }
                RolloutTimer::Slot => {
                    self.cooling.retain(|free_at| *free_at > now);
                    self.arm_slot();
                }
                RolloutTimer::Deadline => self.end(RolloutState::DeadlinePassed),
                RolloutTimer::Approval => self.end(RolloutState::ApprovalExpired),
                RolloutTimer::Hold => self.hold_until = None,
            }
        }
        self.step(now);
    }

    /// A target's node connected (`true`) or went away.
    pub fn handle_online(&mut self, now: Timestamp, node_id: NodeId, online: bool) {
        if !self.index.contains_key(&node_id) {
            return;
        }
        if online {
            self.online.insert(node_id);
            self.step(now);
        } else {
            self.online.remove(&node_id);
        }
    }

    /// A started target's command is in `state` now. The first terminal
    /// state stands; a state for a target not started is ignored.
    pub fn handle_command(&mut self, now: Timestamp, node_id: NodeId, state: CommandState) {
        let Some(&i) = self.index.get(&node_id) else {
            return;
        };
        let before = self.targets[i].state;
        if !before.in_flight() || before == TargetState::Command(state) {
            return;
        }
        let after = TargetState::Command(state);
        self.set(i, after);
        if after.is_terminal() && !self.strategy.batch_wait.is_zero() && !self.ended() {
            self.cooling.push(now + self.strategy.batch_wait);
            self.arm_slot();
        }
        if self.counts.failed > self.limits.max_errors {
            self.end(RolloutState::Halted);
        }
        self.step(now);
    }

    /// Nothing new starts until [`Self::resume`]; what runs, runs on.
    pub fn pause(&mut self, now: Timestamp) -> Result<(), RolloutRefusal> {
        if self.ended() {
            return Err(RolloutRefusal::Ended);
        }
        if self.paused {
            return Err(RolloutRefusal::Paused);
        }
        self.paused = true;
        if let Some(end) = self.timers.get(&RolloutTimer::Bake) {
            self.bake_left = end.saturating_since(now);
            self.timers.stop(&RolloutTimer::Bake);
        }
        self.timers.stop(&RolloutTimer::Start);
        self.out
            .push_back(RolloutOutput::StateChanged(RolloutState::Paused));
        Ok(())
    }

    /// Goes on from where it paused: a bake resumes with what was left of
    /// it, a start time already past starts it now.
    pub fn resume(&mut self, now: Timestamp) -> Result<(), RolloutRefusal> {
        if self.ended() {
            return Err(RolloutRefusal::Ended);
        }
        if !self.paused {
            return Err(RolloutRefusal::NotPaused);
        }
        self.paused = false;
        match self.phase {
            Phase::Baking => self.timers.set(RolloutTimer::Bake, now + self.bake_left),
            Phase::Scheduled => self.timers.set(RolloutTimer::Start, self.start_at.max(now)),
            _ => {}
        }
        self.out
            .push_back(RolloutOutput::StateChanged(self.state()));
        self.handle_timeout(now);
        Ok(())
    }

    /// Ends it (also while paused): what has not started never does
    /// (`cancelled`); what runs, runs on and is still recorded.
    pub fn abort(&mut self) -> Result<(), RolloutRefusal> {
        if self.ended() {
            return Err(RolloutRefusal::Ended);
        }
        self.end(RolloutState::Aborted);
        Ok(())
    }

    /// v0.2: nothing starts until [`Self::approve`]; a rollout not approved
    /// by `expires_at` ends `approval_expired`. Called on a new rollout (or
    /// one restored while it still awaited approval), before any step.
    pub fn await_approval(&mut self, expires_at: Timestamp) {
        if self.ended() || self.counts.pending < self.targets.len() {
            return;
        }
        self.phase = Phase::AwaitingApproval;
        self.timers.set(RolloutTimer::Approval, expires_at);
    }

    /// Whether it waits for approval (paused or not).
    pub fn awaits_approval(&self) -> bool {
        self.phase == Phase::AwaitingApproval
    }

    /// v0.2: the approval is complete; it goes on as scheduled (at once if
    /// its start time has passed), unless it is paused.
    pub fn approve(&mut self, now: Timestamp) -> Result<(), RolloutRefusal> {
        if self.phase != Phase::AwaitingApproval {
            return Err(RolloutRefusal::NotAwaitingApproval);
        }
        self.timers.stop(&RolloutTimer::Approval);
        self.phase = Phase::Scheduled;
        if !self.paused {
            self.timers.set(RolloutTimer::Start, self.start_at.max(now));
            self.out
                .push_back(RolloutOutput::StateChanged(RolloutState::Scheduled));
        }
        self.handle_timeout(now);
        Ok(())
    }

    /// v0.2: an approver rejected it; nothing starts, ever.
    pub fn reject(&mut self) -> Result<(), RolloutRefusal> {
        if self.phase != Phase::AwaitingApproval {
            return Err(RolloutRefusal::NotAwaitingApproval);
        }
        self.end(RolloutState::Rejected);
        Ok(())
    }

    fn ended(&self) -> bool {
        matches!(self.phase, Phase::Ended(_))
    }

    fn begin(&mut self, now: Timestamp) {
        if self.limits.canary > 0 {
            self.enter(Phase::Canary);
        } else {
            self.enter(Phase::Rolling);
        }
        self.step(now);
    }

    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        if !self.paused {
            self.out
                .push_back(RolloutOutput::StateChanged(self.state()));
        }
    }

    /// Starts what may start, moves on from the canary and the bake, and
    /// ends the rollout when nothing is left.
    fn step(&mut self, now: Timestamp) {
        if self.paused || self.hold_until.is_some_and(|until| now < until) {
            return;
        }
        match self.phase {
            Phase::AwaitingApproval | Phase::Scheduled | Phase::Baking | Phase::Ended(_) => {
                return;
            }
            Phase::Canary => {
                self.fill(true);
                let canary_done = self.canary_in_flight == 0
                    && (self.canary_started >= self.limits.canary || self.counts.pending == 0);
                if canary_done && !self.ended() {
                    if self.strategy.bake.is_zero() {
                        self.enter(Phase::Rolling);
                    } else {
                        self.timers
                            .set(RolloutTimer::Bake, now + self.strategy.bake);
                        self.enter(Phase::Baking);
                        return;
                    }
                }
            }
            Phase::Rolling => {}
        }
        if self.phase == Phase::Rolling {
            self.fill(false);
        }
        if matches!(self.phase, Phase::Canary | Phase::Rolling)
            && self.counts.pending == 0
            && self.counts.in_flight == 0
        {
            self.end(if self.counts.skipped > 0 {
                RolloutState::CompletedWithSkips
            } else {
                RolloutState::Succeeded
            });
        }
    }

    /// How many more may start now.
    fn room(&self) -> usize {
        let mut limit = self.limits.max_concurrency;
        if self.strategy.error_mode == ErrorMode::Strict {
            let allowed = self.limits.max_errors.saturating_sub(self.counts.failed);
            limit = limit.min(allowed + 1);
        }
        limit.saturating_sub(self.counts.in_flight + self.cooling.len())
    }

    /// Starts targets in order while there is room; offline ones are
    /// skipped, failed or passed over as the strategy says.
    fn fill(&mut self, canary: bool) {
        while !self.ended() && self.room() > 0 {
            if canary && self.canary_started >= self.limits.canary {
                return;
            }
            let Some(i) = self.next_target() else {
                return;
            };
            self.start(i, canary);
        }
    }

    /// The next target to start: the first waiting one that is back, else
    /// the next in order — dealing on the way with those that are offline.
    fn next_target(&mut self) -> Option<usize> {
        if let Some(&i) = self
            .waiting
            .iter()
            .find(|&&i| self.online.contains(&self.targets[i].node_id))
        {
            self.waiting.remove(&i);
            return Some(i);
        }
        while self.cursor < self.targets.len() {
            let i = self.cursor;
            self.cursor += 1;
            if self.targets[i].state != TargetState::Pending {
                continue;
            }
            if self.online.contains(&self.targets[i].node_id) {
                return Some(i);
            }
            match self.strategy.offline {
                OfflineTargets::Skip => self.set(i, TargetState::Skipped),
                OfflineTargets::Wait => {
                    self.waiting.insert(i);
                }
                OfflineTargets::Fail => {
                    self.set(i, TargetState::Command(CommandState::Undeliverable));
                    if self.counts.failed > self.limits.max_errors {
                        self.end(RolloutState::Halted);
                        return None;
                    }
                    if self.room() == 0 {
                        return None;
                    }
                }
            }
        }
        None
    }

    fn start(&mut self, i: usize, canary: bool) {
        let target = &mut self.targets[i];
        target.canary = canary;
        let (node_id, request_id) = (target.node_id, target.request_id);
        if canary {
            self.canary_started += 1;
        }
        self.out.push_back(RolloutOutput::Start {
            node_id,
            request_id,
        });
        self.set(i, TargetState::Command(CommandState::Queued));
    }

    /// Sets a target's state, keeping the counts, and reports it.
    fn set(&mut self, i: usize, state: TargetState) {
        let target = &mut self.targets[i];
        let before = target.state;
        target.state = state;
        let canary = target.canary;
        let node_id = target.node_id;
        Self::count(&mut self.counts, before, -1);
        Self::count(&mut self.counts, state, 1);
        if canary {
            if before.in_flight() && !state.in_flight() {
                self.canary_in_flight -= 1;
            } else if !before.in_flight() && state.in_flight() {
                self.canary_in_flight += 1;
            }
        }
        self.out
            .push_back(RolloutOutput::TargetChanged { node_id, state });
    }

    fn count(counts: &mut Counts, state: TargetState, by: isize) {
        let slot = match state {
            TargetState::Pending => &mut counts.pending,
            TargetState::Skipped | TargetState::Command(CommandState::Cancelled) => {
                &mut counts.skipped
            }
            TargetState::Command(CommandState::Succeeded) => &mut counts.succeeded,
            s if s.in_flight() => &mut counts.in_flight,
            _ => &mut counts.failed,
        };
        *slot = slot.saturating_add_signed(by);
    }

    fn arm_slot(&mut self) {
        match self.cooling.iter().min() {
            Some(&at) => self.timers.set(RolloutTimer::Slot, at),
            None => self.timers.stop(&RolloutTimer::Slot),
        }
    }

    /// Ends it as `state`: what has not started is cancelled.
    fn end(&mut self, state: RolloutState) {
        if self.ended() {
            return;
        }
        self.phase = Phase::Ended(state);
        self.paused = false;
        for i in 0..self.targets.len() {
            if self.targets[i].state == TargetState::Pending {
                self.set(i, TargetState::Command(CommandState::Cancelled));
            }
        }
        self.waiting.clear();
        self.cooling.clear();
        self.timers.retain(|_| false);
        self.out.push_back(RolloutOutput::StateChanged(state));
    }
}
