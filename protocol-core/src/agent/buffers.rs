//! Bounded buffers for what must survive an outage: telemetry samples until
//! central acks them, alerts until they are sent.

use std::collections::VecDeque;

use crate::WallTime;
use crate::wire::{Alert, Telemetry};

/// Samples not yet acked, oldest first. When full, the oldest is dropped and
/// counted; the count rides on the next sample pushed (`droppedSamples`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TelemetryBuffer {
    samples: VecDeque<Telemetry>,
    /// When each sample (same order) was last put on a wire.
    sent: VecDeque<Option<crate::Timestamp>>,
    capacity: usize,
    unreported_drops: u64,
    total_drops: u64,
}

impl TelemetryBuffer {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            samples: VecDeque::new(),
            sent: VecDeque::new(),
            capacity: capacity.max(1),
            unreported_drops: 0,
            total_drops: 0,
        }
    }

    /// Adds a sample, stamping it with the drops not yet reported. Returns
    /// true if an older sample had to be dropped to make room.
    pub(crate) fn push(&mut self, mut sample: Telemetry) -> (&Telemetry, bool) {
        let mut dropped = false;
        if self.samples.len() >= self.capacity
            && let Some(old) = self.samples.pop_front()
        {
            self.sent.pop_front();
            // The dropped sample may itself have carried a count: keep it.
            self.unreported_drops = self
                .unreported_drops
                .saturating_add(1)
                .saturating_add(old.dropped_samples);
            self.total_drops = self.total_drops.saturating_add(1);
            dropped = true;
        }
        sample.dropped_samples = sample
            .dropped_samples
            .saturating_add(std::mem::take(&mut self.unreported_drops));
        self.samples.push_back(sample);
        self.sent.push_back(None);
        (self.samples.back().expect("just pushed"), dropped)
    }

    /// Central stored the sample taken at `timestamp`.
    pub(crate) fn ack(&mut self, timestamp: WallTime) -> bool {
        match self.samples.iter().position(|s| s.timestamp == timestamp) {
            Some(i) => {
                self.samples.remove(i);
                self.sent.remove(i);
                true
            }
            None => false,
        }
    }

    /// Marks every sample as sent now (a replay after `welcome`).
    pub(crate) fn mark_all_sent(&mut self, now: crate::Timestamp) {
        self.sent.iter_mut().for_each(|s| *s = Some(now));
    }

    /// Marks the newest sample as sent now.
    pub(crate) fn mark_last_sent(&mut self, now: crate::Timestamp) {
        if let Some(s) = self.sent.back_mut() {
            *s = Some(now);
        }
    }

    /// Up to `max` samples unacked since `before` (oldest first), marked as
    /// sent again at `now`: central refused or lost them on a live connection.
    pub(crate) fn overdue(
        &mut self,
        before: crate::Timestamp,
        now: crate::Timestamp,
        max: usize,
    ) -> Vec<Telemetry> {
        let mut out = Vec::new();
        for (sample, sent) in self.samples.iter().zip(self.sent.iter_mut()) {
            if out.len() >= max {
                break;
            }
            if sent.is_none_or(|at| at <= before) {
                *sent = Some(now);
                out.push(sample.clone());
            }
        }
        out
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Telemetry> {
        self.samples.iter()
    }

    pub(crate) fn len(&self) -> usize {
        self.samples.len()
    }

    pub(crate) fn total_drops(&self) -> u64 {
        self.total_drops
    }

    /// Replaces the contents (restoring a snapshot), keeping the newest that fit.
    pub(crate) fn restore(&mut self, samples: Vec<Telemetry>) {
        let skip = samples.len().saturating_sub(self.capacity);
        self.samples = samples.into_iter().skip(skip).collect();
        self.sent = self.samples.iter().map(|_| None).collect();
    }
}

/// Alerts raised while disconnected, oldest first; the oldest is dropped when full.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AlertQueue {
    alerts: VecDeque<Alert>,
    capacity: usize,
}

impl AlertQueue {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            alerts: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    pub(crate) fn push(&mut self, alert: Alert) {
        if self.alerts.len() >= self.capacity {
            self.alerts.pop_front();
        }
        self.alerts.push_back(alert);
    }

    pub(crate) fn drain(&mut self) -> impl Iterator<Item = Alert> + '_ {
        self.alerts.drain(..)
    }

    pub(crate) fn len(&self) -> usize {
        self.alerts.len()
    }
}
