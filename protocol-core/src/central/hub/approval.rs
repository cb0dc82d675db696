//! v0.2 approval in the hub (spec §8.1): a command that needs approval is
//! delivered at once and held by the node (`held`); people decide on it; the
//! last approval needed releases it with `execute_approved` (`approved`).
//! A rejection, a cancel, or the request's expiry ends it for good — it
//! never runs — and a complete approval whose node stays offline past the
//! release time ends `approval_expired` too: it must be given again.

use super::{CentralHub, HubOutput, HubTimer};
use crate::central::alarm::{Alarm, ApprovalEvent};
use crate::central::approval::{ApprovalRefusal, Decided, Decision, Person};
use crate::central::command::CommandState;
use crate::central::events::ToSessionKind;
use crate::wire::{CentralMessage, ExecuteApproved};
use crate::{RequestId, SessionId, Timestamp, WallTime};

impl CentralHub {
    /// `person` decides on `request_id`; the verdict goes out as
    /// [`HubOutput::ApprovalDecided`] (for the store, the audit chain and
    /// whoever asked).
    pub(super) fn decide(&mut self, request_id: RequestId, person: Person, decision: Decision) {
        let verdict = self.apply_decision(request_id, &person, &decision);
        let node_id = self.commands.get(&request_id).map(|c| c.node_id);
        self.out.push_back(HubOutput::Alarm(Alarm::Approval {
            request_id,
            node_id,
            event: ApprovalEvent::decided(&person.user, &decision, verdict.clone()),
        }));
        self.out.push_back(HubOutput::ApprovalDecided {
            request_id,
            node_id,
            person: person.user,
            decision,
            verdict,
        });
    }

    fn apply_decision(
        &mut self,
        request_id: RequestId,
        person: &Person,
        decision: &Decision,
    ) -> Result<Decided, ApprovalRefusal> {
        let Some(command) = self.commands.get_mut(&request_id) else {
            return Err(ApprovalRefusal::NotPending);
        };
        let pending_state = matches!(command.state, CommandState::Queued | CommandState::Held);
        let Some(pending) = command.approval.as_mut().filter(|_| pending_state) else {
            return Err(ApprovalRefusal::NotPending);
        };
        let decided = pending.decide(person, decision)?;
        let node_id = command.node_id;
        match decided {
            Decided::Counted { .. } => {}
            Decided::Approved => {
                let delivered = command.state == CommandState::Held;
                command.state = CommandState::Approved;
                self.changed(request_id, node_id, CommandState::Approved);
                match self.live.get(&node_id).copied() {
                    Some(session_id) if delivered => self.release_to(request_id, session_id),
                    // Still queued, or held by a node now offline: released
                    // when it is back, if that is soon enough.
                    _ => self.timers.set(
                        HubTimer::Command(request_id),
                        self.now + self.config.approval.release_ttl,
                    ),
                }
            }
            Decided::Rejected | Decided::Cancelled => {
                let state = if decided == Decided::Rejected {
                    CommandState::Rejected
                } else {
                    CommandState::Cancelled
                };
                command.state = state;
                if let Some(queue) = self.queued.get_mut(&node_id) {
                    queue.retain(|id| *id != request_id);
                }
                self.changed(request_id, node_id, state);
                self.finished(request_id);
            }
        }
        Ok(decided)
    }

    /// Delivers a command that needs approval: held by the node until its
    /// request expires, or — approved already — released at once.
    pub(super) fn deliver_for_approval(&mut self, request_id: RequestId, session_id: SessionId) {
        let Some(command) = self.commands.get_mut(&request_id) else {
            return;
        };
        let node_id = command.node_id;
        let complete = command.approval.as_ref().is_some_and(|p| p.complete());
        let expires_at = command.approval.as_ref().map(|p| p.request.expires_at);
        if complete {
            command.state = CommandState::Approved;
            self.changed(request_id, node_id, CommandState::Approved);
            self.send_command(request_id, session_id);
            self.release_to(request_id, session_id);
        } else {
            command.state = CommandState::Held;
            self.changed(request_id, node_id, CommandState::Held);
            let due = expires_at.map_or(self.now, |at| self.at_wall(at));
            self.timers.set(HubTimer::Command(request_id), due);
            self.send_command(request_id, session_id);
        }
    }

    /// Sends the release of an approved command to the node's session; the
    /// result is due by its timeout plus the grace.
    pub(super) fn release_to(&mut self, request_id: RequestId, session_id: SessionId) {
        let Some(command) = self.commands.get_mut(&request_id) else {
            return;
        };
        let (CentralMessage::Execute(execute), Some(pending)) =
            (&command.message, &command.approval)
        else {
            return;
        };
        let release = CentralMessage::ExecuteApproved(ExecuteApproved {
            request_id: Some(request_id),
            command: execute.command.clone(),
            approved_by: pending.approvers().collect::<Vec<_>>().join(", "),
            approvals: pending.signatures().cloned().collect(),
        });
        command.released = true;
        let deadline = self.now + command.timeout + self.config.result_grace;
        self.timers.set(HubTimer::Command(request_id), deadline);
        self.tell_session(session_id, ToSessionKind::Deliver(Box::new(release)));
    }

    /// The deadline of a command in an approval state: what it ends as.
    pub(super) fn approval_due(&self, request_id: RequestId) -> Option<CommandState> {
        let command = self.commands.get(&request_id)?;
        command.approval.as_ref()?;
        match command.state {
            // Restored complete: it may have run before the restart.
            CommandState::Queued | CommandState::Held if command.released => {
                Some(CommandState::TimedOut)
            }
            CommandState::Queued | CommandState::Held => Some(CommandState::ApprovalExpired),
            CommandState::Approved if !command.released => Some(CommandState::ApprovalExpired),
            CommandState::Approved => Some(CommandState::TimedOut),
            _ => None,
        }
    }

    /// The hub's moment for a wall-clock time (now, if it is past).
    pub(super) fn at_wall(&self, at: WallTime) -> Timestamp {
        self.now + self.anchor.wall_at(self.now).until(at)
    }
}
