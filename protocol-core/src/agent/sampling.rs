//! Telemetry, health, status and alerts: sampled on the engine's timers
//! whether or not central is reachable, buffered across outages.

use std::time::Duration;

use super::config::clamp_interval;
use super::context::{AgentTimer, Ctx};
use super::io::{AgentEvent, AgentOutput};
use crate::transport::SendClass;
use crate::wire::{
    CheckStatus, Health, HealthChecks, HealthDetails, NodeStatus, Telemetry, TelemetryData,
};

/// The longest wait for an ack before unacked telemetry is sent again, however
/// often it went unacked before.
const MAX_RESEND_WAIT: Duration = Duration::from_secs(300);

impl Ctx {
    /// The first sample at once, then one per interval; health likewise.
    pub(crate) fn start_sampling(&mut self) {
        self.timers.set(AgentTimer::Telemetry, self.now);
        self.timers.set(AgentTimer::Health, self.now);
    }

    /// Central's `welcome` may change the intervals: keep each timer no later
    /// than one new interval from now.
    pub(crate) fn rearm_sampling(&mut self) {
        for (timer, interval) in [
            (AgentTimer::Telemetry, self.intervals.telemetry),
            (AgentTimer::Health, self.intervals.health),
        ] {
            let latest = self.now + clamp_interval(interval);
            match self.timers.get(&timer) {
                Some(at) if at <= latest => {}
                _ => self.timers.set(timer, latest),
            }
        }
    }

    pub(crate) fn telemetry_due(&mut self) {
        let interval = clamp_interval(self.intervals.telemetry);
        self.arm_in(AgentTimer::Telemetry, interval);
        self.emit(AgentOutput::SampleTelemetry);
        if self.established {
            // What central has not acked for two intervals on a live
            // connection (refused while its queue was full, or lost) goes
            // again — after twice as long each time it stays unacked.
            let wait = interval.saturating_mul(2);
            if self
                .telemetry
                .retransmit_if_stalled(self.now, wait, MAX_RESEND_WAIT)
            {
                self.send_telemetry();
            }
            let micros = u64::try_from(wait.as_micros()).unwrap_or(u64::MAX);
            let before = crate::Timestamp::from_micros(self.now.as_micros().saturating_sub(micros));
            self.resend_overdue_results(before);
        }
    }

    pub(crate) fn health_due(&mut self) {
        let interval = clamp_interval(self.intervals.health);
        self.arm_in(AgentTimer::Health, interval);
        self.emit(AgentOutput::CheckHealth);
        if self.established && self.central_acks {
            // Unacked for two health intervals on a live connection: again.
            self.resend_records(Some(interval.saturating_mul(2)));
        }
    }

    /// A sample from the driver: buffered until acked, sent if connected,
    /// and fed to the alert rules.
    pub(crate) fn telemetry_sampled(&mut self, data: TelemetryData) {
        let wall = self.wall();
        for mut alert in self.alerts.observe(self.now, wall, &data) {
            alert.alert_id = Some(crate::AlertId::from_random_bytes(self.rng.bytes16()));
            let sent = self.send(alert.clone()).then_some(self.now);
            // Kept until acked; a central that does not ack only gets what
            // it missed while disconnected.
            if self.central_acks || sent.is_none() {
                self.pending_alerts.push(alert, sent);
                self.emit(AgentOutput::Persist);
            }
        }
        let sample = Telemetry {
            node_id: self.config.node_id,
            timestamp: wall,
            data,
            dropped_samples: 0,
        };
        if self.telemetry.push(sample) {
            let total = self.telemetry.total_drops();
            self.event(AgentEvent::TelemetryDropped { total });
        }
        // Every sample is on disk before the next is taken: a crash during
        // an outage loses at most the one being written. (Acks are saved
        // with the next sample; a sample acked meanwhile is sent again after
        // a crash and stored once.)
        self.emit(AgentOutput::Persist);
        if self.established
            && let Some(live) = self.telemetry.send_newest(self.now)
        {
            self.send(live);
        }
    }

    /// Sends the backlog the window has room for: called on each ack and
    /// after `welcome`, so a backlog drains at the pace of central's acks.
    pub(crate) fn send_telemetry(&mut self) {
        if !self.established {
            return;
        }
        for sample in self.telemetry.next_to_send(self.now) {
            self.send_as(sample, SendClass::Backlog);
        }
    }

    /// Central stored a sample: the window has room for the next (and an
    /// ack may carry a new window).
    pub(crate) fn telemetry_acked(&mut self, timestamp: crate::WallTime, window: Option<u32>) {
        if let Some(window) = window {
            self.telemetry.set_window(window);
        }
        if self.telemetry.ack(timestamp) {
            self.send_telemetry();
        }
    }

    /// After `welcome`: what waits for an ack goes again.
    pub(crate) fn flush_records(&mut self) {
        self.pending_alerts.start_connection();
        self.pending_health.start_connection();
        self.resend_records(None);
    }

    /// Sends the alerts and health reports not sent on this connection,
    /// and those unacked for `resend_after` since they were sent.
    fn resend_records(&mut self, resend_after: Option<Duration>) {
        for alert in self.pending_alerts.due(self.now, resend_after) {
            self.send_as(alert, SendClass::Backlog);
        }
        for health in self.pending_health.due(self.now, resend_after) {
            self.send_as(health, SendClass::Backlog);
        }
        if !self.central_acks {
            self.pending_alerts.forget_sent();
            self.pending_health.forget_sent();
        }
    }

    /// `ack.health` / `ack.alert`: central stored it.
    pub(crate) fn record_acked(&mut self, ack: &crate::wire::Ack) {
        if let Some(at) = ack.health {
            self.pending_health.ack(|h| h.timestamp == Some(at));
        }
        if let Some(id) = ack.alert {
            self.pending_alerts.ack(|a| a.alert_id == Some(id));
        }
    }

    /// Periodic health results: sent if connected, and they set the status.
    pub(crate) fn health_reported(&mut self, checks: HealthChecks, details: HealthDetails) {
        let failing: Vec<&str> = [
            ("agent", checks.agent),
            ("containers", checks.containers),
            ("disk", checks.disk),
            ("memory", checks.memory),
            ("database", checks.database),
        ]
        .into_iter()
        .filter(|(_, s)| matches!(s, CheckStatus::Warning | CheckStatus::Critical))
        .map(|(name, _)| name)
        .collect();
        self.status = if failing.is_empty() {
            (NodeStatus::Online, None)
        } else {
            (
                NodeStatus::Degraded,
                Some(format!("failing checks: {}", failing.join(", "))),
            )
        };
        let health = Health {
            checks,
            details,
            node_id: Some(self.config.node_id),
            timestamp: Some(self.wall()),
            request_id: None,
        };
        let sent = self.send(health.clone()).then_some(self.now);
        if self.central_acks || sent.is_none() {
            self.pending_health.push(health, sent);
        }
        self.emit(AgentOutput::Persist);
        self.send_status_if_changed();
    }
}
