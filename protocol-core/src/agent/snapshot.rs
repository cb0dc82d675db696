//! What the agent must keep across a restart: the outbox of unacked results,
//! the record of seen request ids and the unacked telemetry. The driver
//! saves a snapshot whenever the engine emits `Persist` and restores it
//! before `Start`.

use serde::{Deserialize, Serialize};

use super::AgentEngine;
use super::commands::Entry;
use crate::wire::{Alert, CommandError, CommandResult, ErrorCode, Health, Telemetry};
use crate::{RequestId, WallTime};

/// The persisted part of an agent engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentSnapshot {
    /// Format version of this snapshot.
    pub version: u32,
    /// Every remembered request, oldest first.
    pub requests: Vec<RecordedRequest>,
    /// Telemetry not yet acked, oldest first.
    pub telemetry: Vec<Telemetry>,
    /// Alerts not yet acked (or not yet sent), oldest first.
    #[serde(default)]
    pub alerts: Vec<Alert>,
    /// Periodic health reports not yet acked, oldest first.
    #[serde(default)]
    pub health: Vec<Health>,
}

/// One remembered request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedRequest {
    pub request_id: RequestId,
    /// The result, if the request ended; absent if it was still in progress.
    pub result: Option<CommandResult>,
    /// Central has recorded the result.
    pub acked: bool,
}

impl AgentSnapshot {
    /// The current format.
    pub const VERSION: u32 = 1;
}

impl AgentEngine {
    /// The state to persist.
    pub fn snapshot(&self) -> AgentSnapshot {
        let commands = &self.ctx.commands;
        let mut requests: Vec<RecordedRequest> = Vec::with_capacity(commands.entries.len());
        // Ended requests in completion order, then the live ones.
        for id in &commands.done_order {
            if let Some(Entry::Done { result, acked }) = commands.entries.get(id) {
                requests.push(RecordedRequest {
                    request_id: *id,
                    result: Some(result.clone()),
                    acked: *acked,
                });
            }
        }
        for (id, entry) in &commands.entries {
            // A held command never started: after a restart central delivers
            // it again (it is `held` there) and it is held anew, to the same
            // `holdUntil`, instead of being answered as interrupted.
            if entry.is_live() && !matches!(entry, Entry::Held { .. }) {
                requests.push(RecordedRequest {
                    request_id: *id,
                    result: None,
                    acked: false,
                });
            }
        }
        AgentSnapshot {
            version: AgentSnapshot::VERSION,
            requests,
            telemetry: self.ctx.telemetry.iter().cloned().collect(),
            alerts: self.ctx.pending_alerts.iter().cloned().collect(),
            health: self.ctx.pending_health.iter().cloned().collect(),
        }
    }

    /// Restores a snapshot into a fresh engine, before `Start`. A request that
    /// was in progress when the agent stopped is recorded as failed with
    /// `internal` (it may have run: it is never run again) and its result is
    /// sent to central like any other, stamped `wall` (the wall clock now:
    /// the engine has read none yet).
    pub fn restore(&mut self, snapshot: AgentSnapshot, wall: WallTime) {
        let commands = &mut self.ctx.commands;
        for request in snapshot.requests {
            let id = request.request_id;
            let (result, acked) = match request.result {
                Some(result) => (result, request.acked),
                None => (
                    CommandResult {
                        request_id: id,
                        success: false,
                        result: String::new(),
                        timestamp: wall,
                        exit_code: None,
                        stderr: None,
                        duration_ms: None,
                        truncated: false,
                        error: Some(CommandError {
                            code: ErrorCode::Internal,
                            message: "the agent restarted while this command was in progress; it was not run again".into(),
                        }),
                    },
                    false,
                ),
            };
            if commands
                .entries
                .insert(id, Entry::Done { result, acked })
                .is_none()
            {
                commands.done_order.push_back(id);
            }
            if !acked && !commands.outbox.contains(&id) {
                commands.outbox.push_back(id);
            }
        }
        self.ctx.telemetry.restore(snapshot.telemetry);
        self.ctx.pending_alerts.restore(snapshot.alerts);
        self.ctx.pending_health.restore(snapshot.health);
    }
}
