//! Telemetry, health, status and alerts: sampled on the engine's timers
//! whether or not central is reachable, buffered across outages.

use super::config::clamp_interval;
use super::context::{AgentTimer, Ctx};
use super::io::{AgentEvent, AgentOutput};
use crate::wire::{
    CheckStatus, Health, HealthChecks, HealthDetails, NodeStatus, Telemetry, TelemetryData,
};

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
            // connection (refused while its queue was full, or lost) goes again.
            let window = u64::try_from(interval.as_micros())
                .unwrap_or(u64::MAX)
                .saturating_mul(2);
            let before = crate::Timestamp::from_micros(self.now.as_micros().saturating_sub(window));
            for sample in self.telemetry.overdue(before, self.now, 60) {
                self.send(sample);
            }
            self.resend_overdue_results(before);
        }
    }

    pub(crate) fn health_due(&mut self) {
        self.arm_in(AgentTimer::Health, clamp_interval(self.intervals.health));
        self.emit(AgentOutput::CheckHealth);
    }

    /// A sample from the driver: buffered until acked, sent if connected,
    /// and fed to the alert rules.
    pub(crate) fn telemetry_sampled(&mut self, data: TelemetryData) {
        let wall = self.wall();
        for alert in self.alerts.observe(self.now, wall, &data) {
            if !self.send(alert.clone()) {
                self.pending_alerts.push(alert);
            }
        }
        let sample = Telemetry {
            node_id: self.config.node_id,
            timestamp: wall,
            data,
            dropped_samples: 0,
        };
        let (buffered, dropped) = self.telemetry.push(sample);
        let buffered = buffered.clone();
        if dropped {
            let total = self.telemetry.total_drops();
            self.event(AgentEvent::TelemetryDropped { total });
        }
        if self.send(buffered) {
            self.telemetry.mark_last_sent(self.now);
        }
    }

    pub(crate) fn replay_telemetry(&mut self) {
        let samples: Vec<Telemetry> = self.telemetry.iter().cloned().collect();
        for sample in samples {
            self.send(sample);
        }
        self.telemetry.mark_all_sent(self.now);
    }

    pub(crate) fn flush_alerts(&mut self) {
        let alerts: Vec<_> = self.pending_alerts.drain().collect();
        for alert in alerts {
            self.send(alert);
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
        self.send(health);
        self.send_status_if_changed();
    }
}
