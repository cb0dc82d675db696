//! Command lifecycles, one per `requestId`, beside the connection machine:
//! policy decision, queue with a concurrency limit, run, timeout and kill,
//! the outbox of unacked results and the record that makes every request run
//! at most once (spec/protocol.md §8).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use super::context::{AgentTimer, Ctx};
use super::io::{AgentEvent, AgentOutput, CommandOutcome, Decision, Task};
use crate::policy::Refusal;
use crate::signed_approval::{self, ReleaseRefusal};
use crate::wire::{
    CentralMessage, Command, CommandError, CommandResult, ErrorCode, Execute, ExecuteApproved,
    Health, HealthChecks, HealthDetails,
};
use crate::{RequestId, Timestamp, WallTime};

/// How much of a result's output is kept in the record once central has it.
const RECORDED_OUTPUT_BYTES: usize = 1024;

/// The longest a held command waits for its approval, whatever the
/// `holdUntil` it came with says.
const MAX_HOLD: Duration = Duration::from_secs(24 * 3600);

/// How long a hold outlasts its `holdUntil`.
pub const HOLD_GRACE: Duration = Duration::from_secs(5);

/// Where one request stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    /// v0.2: waiting for `execute_approved`.
    Held {
        task: Task,
        command: String,
        /// What the node verifies itself before it runs it (§8.2).
        signed: Option<SignedHold>,
    },
    /// Allowed, waiting for a slot.
    Queued {
        task: Task,
    },
    Running {
        started: Timestamp,
    },
    /// Timed out and killed; waiting for the driver's report.
    Killing {
        started: Timestamp,
    },
    /// Ended; `acked` once central has recorded the result.
    Done {
        result: CommandResult,
        acked: bool,
    },
}

/// A held command whose allow-list entry requires signed approvals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SignedHold {
    /// The digest the node computed from the `execute` it holds.
    pub(crate) digest: String,
    pub(crate) requester: Option<String>,
    pub(crate) required: u8,
}

impl Entry {
    pub(crate) fn is_live(&self) -> bool {
        !matches!(self, Self::Done { .. })
    }
}

/// What an `execute` that asked for approval is held with.
struct Hold {
    command: String,
    until: Option<WallTime>,
    signed: Option<SignedHold>,
}

/// Every request the agent remembers.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct CommandTable {
    pub(crate) entries: BTreeMap<RequestId, Entry>,
    /// Ended requests, oldest first, for bounding the record.
    pub(crate) done_order: VecDeque<RequestId>,
    /// Allowed requests waiting for a slot, in arrival order.
    pub(crate) queue: VecDeque<RequestId>,
    /// Unacked results, in completion order.
    pub(crate) outbox: VecDeque<RequestId>,
    /// When each unacked result was last sent.
    pub(crate) outbox_sent: BTreeMap<RequestId, Timestamp>,
    pub(crate) running: usize,
}

impl CommandTable {
    /// The unacked results, oldest first.
    pub(crate) fn outbox_results(&self) -> impl Iterator<Item = &CommandResult> {
        self.outbox
            .iter()
            .filter_map(|id| match self.entries.get(id) {
                Some(Entry::Done { result, .. }) => Some(result),
                _ => None,
            })
    }
}

impl Ctx {
    /// A command message from central on the established session.
    pub(crate) fn receive_command(&mut self, command: Command) {
        let policy = &self.config.policy;
        let task_timeout = policy.task_timeout;
        let (request_id, what, decision) = match command {
            Command::Execute(e) if e.rollout_approval.is_some() => {
                self.receive_rollout_target(e);
                return;
            }
            Command::Execute(e) => {
                let what = format!("execute {} {:?}", e.command, e.args);
                let decision = policy
                    .check_execute(&e.command, &e.args, e.timeout)
                    .and_then(|approved| {
                        let signed = self.signed_hold(&e, approved.required_approvals)?;
                        let hold = e.requires_approval.then(|| Hold {
                            command: e.command.clone(),
                            until: e.hold_until,
                            signed,
                        });
                        Ok((Task::Execute(approved), hold))
                    });
                (e.request_id, what, decision)
            }
            Command::Deploy(d) => {
                let what = format!("deploy {} {}", d.env, d.branch);
                let decision = policy.check_deploy(&d.env, &d.branch).map(|()| {
                    let task = Task::Deploy {
                        env: d.env,
                        branch: d.branch,
                        timeout: task_timeout,
                    };
                    (task, None)
                });
                (Some(d.request_id), what, decision)
            }
            Command::HealthCheck(h) => (
                Some(h.request_id),
                "health_check".to_owned(),
                Ok((
                    Task::HealthCheck {
                        timeout: task_timeout,
                    },
                    None,
                )),
            ),
            Command::UpdateAgent(u) => {
                let what = format!("update_agent {}", u.version);
                let task = Task::UpdateAgent {
                    version: u.version,
                    timeout: task_timeout,
                };
                (u.request_id, what, Ok((task, None)))
            }
            Command::ExecuteApproved(a) => {
                self.approve(&a);
                return;
            }
        };
        let Some(request_id) = request_id else {
            self.decided(None, what, Decision::Invalid("no requestId"));
            return;
        };
        if self.answer_duplicate(request_id, &what) {
            return;
        }
        match decision {
            Err(refusal) => {
                let message = refusal.to_string();
                self.decided(Some(request_id), what, Decision::Blocked(refusal));
                self.complete(request_id, failure(ErrorCode::Blocked, message));
            }
            Ok((task, Some(hold))) => {
                let Hold {
                    command,
                    until,
                    signed,
                } = hold;
                let hold = match until {
                    // Central's request expires then: the hold agrees with
                    // it, and outlasts it by a little, so that a clock a few
                    // seconds ahead of central's does not end it first (no
                    // release comes after the request's expiry).
                    Some(until) => (self.wall().until(until) + HOLD_GRACE).min(MAX_HOLD),
                    None => self.config.approval_window,
                };
                self.commands.entries.insert(
                    request_id,
                    Entry::Held {
                        task,
                        command,
                        signed,
                    },
                );
                self.arm_in(AgentTimer::Command(request_id), hold);
                self.decided(Some(request_id), what, Decision::Held);
                self.emit(AgentOutput::Persist);
            }
            Ok((task, None)) => self.admit(request_id, what, task),
        }
    }

    fn decided(&mut self, request_id: Option<RequestId>, what: String, decision: Decision) {
        self.event(AgentEvent::CommandDecision {
            request_id,
            what,
            decision,
        });
    }

    /// A request seen before is never run again: a finished one is answered
    /// from the record, a live one is ignored.
    fn answer_duplicate(&mut self, request_id: RequestId, what: &str) -> bool {
        let Some(entry) = self.commands.entries.get_mut(&request_id) else {
            return false;
        };
        let resend = match entry {
            Entry::Done { result, acked } => {
                let was_acked = std::mem::replace(acked, false);
                Some((result.clone(), was_acked))
            }
            _ => None,
        };
        self.decided(Some(request_id), what.to_owned(), Decision::Duplicate);
        if let Some((result, was_acked)) = resend {
            if was_acked {
                self.commands.outbox.push_back(request_id);
            }
            self.send(result);
        }
        true
    }

    /// An `execute` that is a target of an approved rollout (spec §8.4):
    /// never held — the approval came before it was sent. Where the entry
    /// requires signed approvals the node checks the rollout's own: the
    /// proof that this node and request id are in the approved set, and the
    /// signatures over the rollout's digest.
    fn receive_rollout_target(&mut self, e: Execute) {
        let what = format!("execute {} {:?}", e.command, e.args);
        let Some(request_id) = e.request_id else {
            self.decided(None, what, Decision::Invalid("no requestId"));
            return;
        };
        if self.answer_duplicate(request_id, &what) {
            return;
        }
        let policy = &self.config.policy;
        let approved = match policy.check_execute(&e.command, &e.args, e.timeout) {
            Ok(approved) => approved,
            Err(refusal) => {
                let message = refusal.to_string();
                self.decided(Some(request_id), what, Decision::Blocked(refusal));
                self.complete(request_id, failure(ErrorCode::Blocked, message));
                return;
            }
        };
        let required = approved.required_approvals;
        if required > 0 {
            let checked = match &policy.approval_trust {
                None => Err(ReleaseRefusal::NoTrust),
                Some(trust) => trust.admit_rollout(self.config.node_id, &e, required, self.wall()),
            };
            if let Err(refusal) = checked {
                let message = format!("approval refused by the node: {refusal}");
                self.decided(Some(request_id), what, Decision::ApprovalRefused(refusal));
                self.complete(request_id, failure(ErrorCode::Blocked, message));
                return;
            }
        }
        self.admit(request_id, what, Task::Execute(approved));
    }

    /// For an entry that requires signed approvals: refuses an `execute`
    /// that did not ask for approval, or that this node cannot verify, and
    /// computes the digest the signatures must cover.
    fn signed_hold(&self, e: &Execute, required: u8) -> Result<Option<SignedHold>, Refusal> {
        if required == 0 {
            return Ok(None);
        }
        let (Some(request_id), true, Some(expires_at)) =
            (e.request_id, e.requires_approval, e.hold_until)
        else {
            return Err(Refusal::ApprovalRequired(e.command.clone()));
        };
        let Some(trust) = &self.config.policy.approval_trust else {
            return Err(Refusal::NoApprovalRoot(e.command.clone()));
        };
        let message = CentralMessage::Execute(e.clone());
        Ok(Some(SignedHold {
            digest: signed_approval::digest(
                trust.crypto.as_ref(),
                self.config.node_id,
                request_id,
                &message,
                expires_at,
            ),
            requester: e.requested_by.clone(),
            required,
        }))
    }

    /// `execute_approved`: releases the held command it names — if the
    /// node's own check of the signed approvals passes where its entry asks
    /// for one.
    fn approve(&mut self, release: &ExecuteApproved) {
        let what = format!(
            "execute_approved {} by {}",
            release.command, release.approved_by
        );
        let request_id = release.request_id;
        let held = request_id.and_then(|id| match self.commands.entries.get(&id) {
            Some(Entry::Held {
                task,
                command: held,
                signed,
            }) if *held == release.command => Some((id, task.clone(), signed.clone())),
            _ => None,
        });
        let Some((id, task, signed)) = held else {
            self.decided(
                request_id,
                what,
                Decision::Invalid("no held command matches"),
            );
            return;
        };
        // The hold ends here, whether the release is admitted or refused.
        self.timers.stop(&AgentTimer::Command(id));
        if let Some(signed) = signed {
            let checked = match &self.config.policy.approval_trust {
                None => Err(ReleaseRefusal::NoTrust),
                Some(trust) => trust.admit(
                    &release.approvals,
                    &signed.digest,
                    signed.requester.as_deref(),
                    signed.required,
                    self.wall(),
                ),
            };
            if let Err(refusal) = checked {
                // Never run, and said so: the operator sees why in the result.
                let message = format!("approval refused by the node: {refusal}");
                self.decided(Some(id), what, Decision::ApprovalRefused(refusal));
                self.complete(id, failure(ErrorCode::Blocked, message));
                return;
            }
        }
        self.admit(id, what, task);
    }

    fn admit(&mut self, request_id: RequestId, what: String, task: Task) {
        if self.commands.running < self.config.max_running {
            self.decided(Some(request_id), what, Decision::Started);
            self.start(request_id, task);
        } else if self.commands.queue.len() < self.config.max_queued {
            self.commands
                .entries
                .insert(request_id, Entry::Queued { task });
            self.commands.queue.push_back(request_id);
            self.decided(Some(request_id), what, Decision::Queued);
            self.emit(AgentOutput::Persist);
        } else {
            self.decided(Some(request_id), what, Decision::Busy);
            let message = format!(
                "{} commands running and {} queued",
                self.commands.running,
                self.commands.queue.len()
            );
            self.complete(request_id, failure(ErrorCode::Busy, message));
        }
    }

    fn start(&mut self, request_id: RequestId, task: Task) {
        self.commands.running += 1;
        self.commands
            .entries
            .insert(request_id, Entry::Running { started: self.now });
        self.arm_in(AgentTimer::Command(request_id), task.timeout());
        // Persist first: after a crash the request must be known as started,
        // so that a re-sent request is not run a second time.
        self.emit(AgentOutput::Persist);
        self.emit(AgentOutput::Run { request_id, task });
    }

    fn start_next(&mut self) {
        while self.commands.running < self.config.max_running {
            let Some(id) = self.commands.queue.pop_front() else {
                return;
            };
            if let Some(Entry::Queued { task }) = self.commands.entries.get(&id).cloned() {
                self.start(id, task);
            }
        }
    }

    /// The driver reports a task ended.
    pub(crate) fn command_finished(&mut self, request_id: RequestId, outcome: CommandOutcome) {
        let started = match self.commands.entries.get(&request_id) {
            Some(Entry::Running { started }) => *started,
            Some(Entry::Killing { started }) => {
                let started = *started;
                let mut result = result_from(outcome);
                result.success = false;
                result.error = Some(CommandError {
                    code: ErrorCode::Timeout,
                    message: "killed after its timeout".into(),
                });
                self.finish_slot(request_id, started, result);
                return;
            }
            _ => return, // stale: already timed out and recorded, or unknown
        };
        self.finish_slot(request_id, started, result_from(outcome));
    }

    /// The driver reports health checks that answer a `health_check` request.
    pub(crate) fn health_check_finished(
        &mut self,
        request_id: RequestId,
        checks: HealthChecks,
        details: HealthDetails,
    ) {
        let Some(Entry::Running { started }) = self.commands.entries.get(&request_id).cloned()
        else {
            return;
        };
        let health = Health {
            checks,
            details,
            node_id: Some(self.config.node_id),
            timestamp: Some(self.wall()),
            request_id: Some(request_id),
        };
        let summary = format!(
            "agent={:?} containers={:?} disk={:?} memory={:?} database={:?}",
            checks.agent, checks.containers, checks.disk, checks.memory, checks.database
        )
        .to_lowercase();
        self.send(health);
        let outcome = CommandOutcome {
            success: true,
            stdout: summary,
            ..CommandOutcome::default()
        };
        self.finish_slot(request_id, started, result_from(outcome));
    }

    fn finish_slot(
        &mut self,
        request_id: RequestId,
        started: Timestamp,
        mut result: CommandResult,
    ) {
        self.timers.stop(&AgentTimer::Command(request_id));
        self.commands.running = self.commands.running.saturating_sub(1);
        result.duration_ms = Some(millis(self.now.saturating_since(started)));
        self.complete(request_id, result);
        self.start_next();
    }

    /// A command's deadline passed.
    pub(crate) fn command_deadline(&mut self, request_id: RequestId) {
        match self.commands.entries.get(&request_id).cloned() {
            Some(Entry::Held { .. }) => {
                let message = "approval not received in time".to_owned();
                self.complete(request_id, failure(ErrorCode::Blocked, message));
            }
            Some(Entry::Running { started }) => {
                self.commands
                    .entries
                    .insert(request_id, Entry::Killing { started });
                self.arm_in(AgentTimer::Command(request_id), self.config.kill_grace);
                self.emit(AgentOutput::Kill { request_id });
            }
            Some(Entry::Killing { started }) => {
                let message = "killed after its timeout; the process did not report".to_owned();
                self.finish_slot(request_id, started, failure(ErrorCode::Timeout, message));
            }
            _ => {}
        }
    }

    /// Records the result, puts it in the outbox and sends it if connected.
    fn complete(&mut self, request_id: RequestId, mut result: CommandResult) {
        result.request_id = request_id;
        result.timestamp = self.wall();
        self.commands.entries.insert(
            request_id,
            Entry::Done {
                result: result.clone(),
                acked: false,
            },
        );
        self.commands.done_order.push_back(request_id);
        self.commands.outbox.push_back(request_id);
        self.bound_record();
        self.emit(AgentOutput::Persist);
        self.event(AgentEvent::CommandCompleted {
            result: result.clone(),
        });
        if self.send(result) {
            self.commands.outbox_sent.insert(request_id, self.now);
        }
    }

    /// Central recorded the result of `request_id`.
    pub(crate) fn result_acked(&mut self, request_id: RequestId) {
        if let Some(Entry::Done { result, acked }) = self.commands.entries.get_mut(&request_id)
            && !*acked
        {
            *acked = true;
            shrink(result);
            self.commands.outbox.retain(|id| *id != request_id);
            self.commands.outbox_sent.remove(&request_id);
            self.emit(AgentOutput::Persist);
        }
    }

    /// Keeps the record and the outbox within their limits: the oldest acked
    /// records go first; an outbox past its limit loses its oldest result.
    fn bound_record(&mut self) {
        while self.commands.outbox.len() > self.config.outbox_limit {
            if let Some(id) = self.commands.outbox.pop_front()
                && let Some(Entry::Done { result, acked }) = self.commands.entries.get_mut(&id)
            {
                *acked = true;
                shrink(result);
            }
        }
        let mut scanned = 0;
        while self.commands.entries.len() > self.config.record_limit
            && scanned < self.commands.done_order.len()
        {
            let Some(id) = self.commands.done_order.pop_front() else {
                break;
            };
            match self.commands.entries.get(&id) {
                Some(Entry::Done { acked: true, .. }) => {
                    self.commands.entries.remove(&id);
                }
                Some(Entry::Done { .. }) => {
                    self.commands.done_order.push_back(id);
                    scanned += 1;
                }
                _ => {}
            }
        }
    }

    /// Re-sends every unacked result (after `welcome`).
    pub(crate) fn resend_outbox(&mut self) {
        let results: Vec<CommandResult> = self.commands.outbox_results().cloned().collect();
        for result in results {
            let id = result.request_id;
            if self.send(result) {
                self.commands.outbox_sent.insert(id, self.now);
            }
        }
    }

    /// Re-sends results unacked since `before` on the live connection.
    pub(crate) fn resend_overdue_results(&mut self, before: Timestamp) {
        let overdue: Vec<CommandResult> = self
            .commands
            .outbox_results()
            .filter(|r| {
                self.commands
                    .outbox_sent
                    .get(&r.request_id)
                    .is_none_or(|at| *at <= before)
            })
            .take(60)
            .cloned()
            .collect();
        for result in overdue {
            let id = result.request_id;
            if self.send(result) {
                self.commands.outbox_sent.insert(id, self.now);
            }
        }
    }
}

fn failure(code: ErrorCode, message: String) -> CommandResult {
    CommandResult {
        request_id: RequestId::from_u128(0),
        success: false,
        result: String::new(),
        timestamp: WallTime::UNIX_EPOCH,
        exit_code: None,
        stderr: None,
        duration_ms: None,
        truncated: false,
        error: Some(CommandError { code, message }),
    }
}

fn result_from(outcome: CommandOutcome) -> CommandResult {
    CommandResult {
        request_id: RequestId::from_u128(0),
        success: outcome.success && outcome.error.is_none(),
        result: outcome.stdout,
        timestamp: WallTime::UNIX_EPOCH,
        exit_code: outcome.exit_code,
        stderr: (!outcome.stderr.is_empty()).then_some(outcome.stderr),
        duration_ms: None,
        truncated: outcome.truncated,
        error: outcome.error,
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Trims a recorded result's output once central holds the full one.
fn shrink(result: &mut CommandResult) {
    fn cut(text: &mut String) -> bool {
        if text.len() <= RECORDED_OUTPUT_BYTES {
            return false;
        }
        let mut end = RECORDED_OUTPUT_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        true
    }
    let mut cut_any = cut(&mut result.result);
    if let Some(stderr) = result.stderr.as_mut() {
        cut_any |= cut(stderr);
    }
    result.truncated |= cut_any;
}
