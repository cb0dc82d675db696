//! v0.3: the rollouts this hub drives (spec/protocol.md §8.3). Each is a
//! [`Rollout`] engine; the hub feeds it the states of its targets' commands
//! and its nodes coming and going, and turns what it starts into ordinary
//! commands: the driver stores each, tagged with the rollout, and submits
//! it back like any other.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::{CentralHub, HubOutput, HubTimer};
use crate::central::alarm::{Alarm, ApprovalEvent};
use crate::central::approval::{
    ApprovalRefusal, ApprovalRequest, Decided, Decision, Pending, Person,
};
use crate::central::command::CommandState;
use crate::central::rollout::{
    Rollout, RolloutOutput, RolloutRefusal, RolloutState, Strategy, TargetState,
};
use crate::target_set::TargetSet;
use crate::wire::{CentralMessage, NodeStatus, RolloutApproval};
use crate::{NodeId, RequestId, RolloutId, Timestamp, WallTime};

/// A rollout to start.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRollout {
    pub rollout_id: RolloutId,
    /// Who asked: each target's command is theirs.
    pub requester: String,
    pub strategy: Strategy,
    /// In the order they are to start, with the request id each target's
    /// command gets.
    pub targets: Vec<(NodeId, RequestId)>,
    /// The command every target gets (its `requestId` is each target's).
    pub message: CentralMessage,
    /// What the node may spend on it.
    pub timeout: Duration,
    /// When it starts (now or later).
    pub start_at: WallTime,
    /// After a restart: what the store kept of it.
    pub restored: Option<Restored>,
    /// v0.2: the approval it needs before anything starts (spec §8.4).
    pub approval: Option<Box<NeedsApproval>>,
}

/// A rollout's approval: the request (its digest covers the command, the
/// rollout and the root of `targets`), and how long it holds once given.
#[derive(Debug, Clone, PartialEq)]
pub struct NeedsApproval {
    pub request: ApprovalRequest,
    /// The tree over the targets, in order: each target's command carries
    /// its proof.
    pub targets: TargetSet,
    /// The end of the approval, as signed: the rollout's deadline.
    pub valid_until: WallTime,
}

/// A rollout's state and its targets' (in order), as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub state: RolloutState,
    /// As the rollout's own rows say.
    pub targets: Vec<TargetState>,
    /// When read: the stored states of the commands of the targets whose
    /// rows have not ended (newer than the rows, which may lag). A target
    /// whose row says started but whose command is absent never started
    /// (a crash in between); one whose row says pending but whose command
    /// exists did start. `None`: the rows are taken as they are.
    pub commands: Option<BTreeMap<RequestId, CommandState>>,
}

/// What the driver of a process among several reads for the rollouts its
/// hub drives ([`CentralHub::rollout_watch`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RolloutWatch {
    /// Started targets' commands, to read the stored states of.
    pub commands: Vec<RequestId>,
    /// Nodes of targets not yet started, to ask presence about.
    pub nodes: Vec<NodeId>,
}

/// An operator's say on a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutControl {
    Pause,
    Resume,
    Abort,
    /// v0.2: a person approves, rejects or cancels a rollout that awaits
    /// approval (the rules of spec §8.1; a cancel is an abort).
    Decide {
        person: Person,
        decision: Decision,
    },
}

/// Why a control was refused.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, thiserror::Error, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ControlRefusal {
    #[error("no such rollout is running here")]
    Unknown,
    #[error(transparent)]
    Refused(#[from] RolloutRefusal),
    #[error(transparent)]
    Approval(#[from] ApprovalRefusal),
}

#[derive(Debug, Clone)]
pub(super) struct Hosted {
    engine: Rollout,
    requester: String,
    message: CentralMessage,
    timeout: Duration,
    approval: Option<Approval>,
}

/// A hosted rollout's approval: gathered, then given to every target.
#[derive(Debug, Clone)]
struct Approval {
    pending: Pending,
    targets: TargetSet,
    valid_until: WallTime,
}

impl CentralHub {
    pub(super) fn start_rollout(&mut self, new: NewRollout) {
        let NewRollout {
            rollout_id,
            requester,
            strategy,
            targets,
            message,
            timeout,
            start_at,
            restored,
            approval,
        } = new;
        if self.rollouts.contains_key(&rollout_id) {
            return;
        }
        let mut engine = match restored {
            None => {
                let online = targets
                    .iter()
                    .map(|(node, _)| *node)
                    .filter(|node| self.target_online(*node))
                    .collect();
                let start = self.at_wall(start_at).max(self.now);
                Rollout::new(strategy, targets, online, start)
            }
            Some(Restored {
                state,
                targets: rows,
                commands,
            }) => {
                let start = self.at_wall(start_at);
                let hold_until = self.now + self.config.rollout_hold;
                // What this hub knows of a target's command is newer than
                // the store's copy, and that copy newer than the rollout's
                // rows (their writes may still be on their way, written by
                // a process that then died): a target may have started
                // although its row says pending, or even have ended — and
                // will not be reported again. Where the row lags, it is
                // brought up to date.
                let mut restored = Vec::with_capacity(rows.len());
                for ((node, request), row) in targets.into_iter().zip(rows) {
                    let state = if row.is_terminal() {
                        row
                    } else if let Some(command) = self.commands.get(&request) {
                        TargetState::Command(command.state)
                    } else {
                        match commands.as_ref().map(|c| c.get(&request)) {
                            Some(Some(stored)) => TargetState::Command(*stored),
                            Some(None) => TargetState::Pending,
                            None => row,
                        }
                    };
                    if state != row {
                        self.out.push_back(HubOutput::RolloutTargetChanged {
                            rollout_id,
                            node_id: node,
                            state,
                        });
                    }
                    restored.push((node, request, state));
                }
                let targets = restored;
                for (node, request, state) in &targets {
                    if matches!(state, TargetState::Command(s) if !s.is_terminal()) {
                        self.rollout_of.insert(*request, (rollout_id, *node));
                    }
                }
                let online = targets
                    .iter()
                    .map(|(node, _, _)| *node)
                    .filter(|node| self.target_online(*node))
                    .collect();
                Rollout::restore(
                    strategy, targets, state, start, self.now, hold_until, online,
                )
            }
        };
        let approval = approval.map(|needs| {
            let pending = Pending::new(needs.request);
            if !pending.complete() {
                engine.await_approval(self.at_wall(pending.request.expires_at));
            }
            Approval {
                pending,
                targets: needs.targets,
                valid_until: needs.valid_until,
            }
        });
        self.rollouts.insert(
            rollout_id,
            Hosted {
                engine,
                requester,
                message,
                timeout,
                approval,
            },
        );
        self.rollout_step(rollout_id);
    }

    pub(super) fn control_rollout(&mut self, rollout_id: RolloutId, control: RolloutControl) {
        let now = self.now;
        let verdict = match self.rollouts.get_mut(&rollout_id) {
            None => Err(ControlRefusal::Unknown),
            Some(hosted) => {
                let done = match &control {
                    RolloutControl::Pause => hosted.engine.pause(now).map_err(ControlRefusal::from),
                    RolloutControl::Resume => {
                        hosted.engine.resume(now).map_err(ControlRefusal::from)
                    }
                    RolloutControl::Abort => hosted.engine.abort().map_err(ControlRefusal::from),
                    RolloutControl::Decide { person, decision } => {
                        let decided = hosted.decide(now, person, decision);
                        let outcome = decided.clone().map_err(|refusal| match refusal {
                            ControlRefusal::Approval(refusal) => refusal,
                            _ => ApprovalRefusal::NotPending,
                        });
                        self.out.push_back(HubOutput::Alarm(Alarm::RolloutApproval {
                            rollout_id,
                            event: ApprovalEvent::decided(&person.user, decision, outcome),
                        }));
                        decided.map(|_| ())
                    }
                };
                done.map(|()| hosted.engine.state())
            }
        };
        self.out.push_back(HubOutput::RolloutControlled {
            rollout_id,
            control,
            verdict,
        });
        self.rollout_pump(rollout_id);
    }

    pub(super) fn rollout_due(&mut self, rollout_id: RolloutId) {
        self.rollout_step(rollout_id);
    }

    /// A command changed state: its rollout, if it has one, hears of it.
    pub(super) fn rollout_heard(&mut self, request_id: RequestId, state: CommandState) {
        let Some(&(rollout_id, node_id)) = self.rollout_of.get(&request_id) else {
            return;
        };
        if state.is_terminal() {
            self.rollout_of.remove(&request_id);
        }
        let now = self.now;
        if let Some(hosted) = self.rollouts.get_mut(&rollout_id) {
            hosted.engine.handle_command(now, node_id, state);
        }
        self.rollout_pump(rollout_id);
    }

    /// A node's status changed: the rollouts it is a target of hear whether
    /// it is online.
    pub(super) fn rollouts_see(&mut self, node_id: NodeId, status: NodeStatus) {
        if status != NodeStatus::Offline {
            // Held here now, whatever presence said before.
            self.held_elsewhere.remove(&node_id);
        }
        self.rollouts_see_online(node_id, status != NodeStatus::Offline);
    }

    fn rollouts_see_online(&mut self, node_id: NodeId, online: bool) {
        let now = self.now;
        let ids: Vec<RolloutId> = self
            .rollouts
            .iter_mut()
            .filter(|(_, h)| h.engine.target(node_id).is_some())
            .map(|(id, h)| {
                h.engine.handle_online(now, node_id, online);
                *id
            })
            .collect();
        for id in ids {
            self.rollout_pump(id);
        }
    }

    /// The deadline of the rollout whose target `request_id` is.
    pub(super) fn rollout_deadline(&self, request_id: RequestId) -> Option<Timestamp> {
        let (rollout_id, _) = self.rollout_of.get(&request_id)?;
        self.rollouts.get(rollout_id).map(|h| h.engine.deadline())
    }

    /// The rollouts this hub drives.
    pub fn rollout_ids(&self) -> impl Iterator<Item = RolloutId> + '_ {
        self.rollouts.keys().copied()
    }

    /// The rollout's state, when this hub drives it.
    pub fn rollout(&self, rollout_id: RolloutId) -> Option<&Rollout> {
        self.rollouts.get(&rollout_id).map(|h| &h.engine)
    }

    /// With `clustered`: the presence of these nodes elsewhere, as read.
    pub(super) fn rollout_presence(&mut self, nodes: Vec<(NodeId, bool)>) {
        for (node_id, elsewhere) in nodes {
            if self.live.contains_key(&node_id) {
                continue;
            }
            let changed = if elsewhere {
                self.held_elsewhere.insert(node_id)
            } else {
                self.held_elsewhere.remove(&node_id)
            };
            if changed {
                self.rollouts_see_online(node_id, elsewhere);
            }
        }
    }

    /// With `clustered`: stored states of target commands held elsewhere.
    pub(super) fn rollout_commands(&mut self, states: Vec<(RequestId, CommandState)>) {
        for (request_id, state) in states {
            // A command tracked here is this hub's to report.
            if !self.commands.contains_key(&request_id) {
                self.rollout_heard(request_id, state);
            }
        }
    }

    /// With `clustered`: another process drives the rollouts now.
    pub(super) fn drop_rollouts(&mut self) {
        for rollout_id in std::mem::take(&mut self.rollouts).into_keys() {
            self.timers.stop(&HubTimer::Rollout(rollout_id));
        }
        self.rollout_of.clear();
        self.held_elsewhere.clear();
    }

    /// What the driver reads for the rollouts driven here when the process
    /// is one of several: the started targets' commands this hub does not
    /// track, and the nodes of targets not yet started that are not held
    /// here.
    pub fn rollout_watch(&self) -> RolloutWatch {
        let commands = self
            .rollout_of
            .keys()
            .filter(|r| !self.commands.contains_key(r))
            .copied()
            .collect();
        let mut nodes = BTreeSet::new();
        for hosted in self.rollouts.values() {
            if hosted.engine.state().is_terminal() {
                continue;
            }
            for target in hosted.engine.targets() {
                if target.state == TargetState::Pending && !self.live.contains_key(&target.node_id)
                {
                    nodes.insert(target.node_id);
                }
            }
        }
        RolloutWatch {
            commands,
            nodes: nodes.into_iter().collect(),
        }
    }

    /// Whether a rollout's target is online: here, or (with `clustered`)
    /// held by another process as presence last said.
    fn target_online(&self, node_id: NodeId) -> bool {
        self.is_online(node_id)
            || (!self.live.contains_key(&node_id) && self.held_elsewhere.contains(&node_id))
    }

    fn is_online(&self, node_id: NodeId) -> bool {
        self.live.contains_key(&node_id)
            && self
                .status
                .get(&node_id)
                .is_some_and(|s| *s != NodeStatus::Offline)
    }

    fn rollout_step(&mut self, rollout_id: RolloutId) {
        let now = self.now;
        if let Some(hosted) = self.rollouts.get_mut(&rollout_id) {
            hosted.engine.handle_timeout(now);
        }
        self.rollout_pump(rollout_id);
    }

    /// Turns what the engine asked for into outputs, re-arms its timer, and
    /// forgets it once it ended with nothing in flight (the store keeps it).
    fn rollout_pump(&mut self, rollout_id: RolloutId) {
        let Some(hosted) = self.rollouts.get_mut(&rollout_id) else {
            return;
        };
        while let Some(output) = hosted.engine.poll_output() {
            match output {
                RolloutOutput::Start {
                    node_id,
                    request_id,
                } => {
                    self.rollout_of.insert(request_id, (rollout_id, node_id));
                    self.out.push_back(HubOutput::RolloutStart {
                        rollout_id,
                        node_id,
                        request_id,
                        requester: hosted.requester.clone(),
                        message: hosted.command_for(
                            rollout_id,
                            hosted.engine.position(node_id),
                            request_id,
                        ),
                        timeout: hosted.timeout,
                    });
                }
                RolloutOutput::TargetChanged { node_id, state } => {
                    self.out.push_back(HubOutput::RolloutTargetChanged {
                        rollout_id,
                        node_id,
                        state,
                    });
                }
                RolloutOutput::StateChanged(state) => {
                    if state == RolloutState::ApprovalExpired {
                        self.out.push_back(HubOutput::Alarm(Alarm::RolloutApproval {
                            rollout_id,
                            event: ApprovalEvent::Expired,
                        }));
                    }
                    self.out
                        .push_back(HubOutput::RolloutChanged { rollout_id, state });
                }
            }
        }
        match hosted.engine.poll_timeout() {
            Some(at) => self.timers.set(HubTimer::Rollout(rollout_id), at),
            None => self.timers.stop(&HubTimer::Rollout(rollout_id)),
        }
        if hosted.engine.state().is_terminal() && hosted.engine.counts().in_flight == 0 {
            self.rollouts.remove(&rollout_id);
            self.timers.stop(&HubTimer::Rollout(rollout_id));
        }
    }
}

impl Hosted {
    /// A decision on the rollout's approval: the rules of spec §8.1, then
    /// what they decided done to the engine.
    fn decide(
        &mut self,
        now: Timestamp,
        person: &Person,
        decision: &Decision,
    ) -> Result<Decided, ControlRefusal> {
        let Some(approval) = self
            .approval
            .as_mut()
            .filter(|_| self.engine.awaits_approval())
        else {
            return Err(ApprovalRefusal::NotPending.into());
        };
        let decided = approval.pending.decide(person, decision)?;
        match decided {
            Decided::Counted { .. } => {}
            Decided::Approved => self.engine.approve(now)?,
            Decided::Rejected => self.engine.reject()?,
            Decided::Cancelled => self.engine.abort()?,
        }
        Ok(decided)
    }

    /// The command of the target at `position`, `request_id`: the
    /// rollout's, with the approval and this target's proof when it had
    /// one.
    fn command_for(
        &self,
        rollout_id: RolloutId,
        position: Option<usize>,
        request_id: RequestId,
    ) -> CentralMessage {
        let mut message = with_request_id(&self.message, request_id);
        if let (CentralMessage::Execute(execute), Some(approval), Some(index)) =
            (&mut message, &self.approval, position)
        {
            let pending = &approval.pending;
            execute.rollout_approval = Some(RolloutApproval {
                rollout_id,
                targets: u32::try_from(approval.targets.len()).unwrap_or(u32::MAX),
                index: u32::try_from(index).unwrap_or(u32::MAX),
                proof: approval
                    .targets
                    .proof(index)
                    .iter()
                    .map(hex::encode)
                    .collect(),
                expires: approval.valid_until,
                approved_by: pending.approvers().collect::<Vec<_>>().join(", "),
                approvals: pending.signatures().cloned().collect(),
            });
        }
        message
    }
}

/// `message` as the command of `request_id`.
fn with_request_id(message: &CentralMessage, request_id: RequestId) -> CentralMessage {
    let mut message = message.clone();
    match &mut message {
        CentralMessage::Execute(m) => m.request_id = Some(request_id),
        CentralMessage::Deploy(m) => m.request_id = request_id,
        CentralMessage::HealthCheck(m) => m.request_id = request_id,
        CentralMessage::UpdateAgent(m) => m.request_id = Some(request_id),
        _ => {}
    }
    message
}
