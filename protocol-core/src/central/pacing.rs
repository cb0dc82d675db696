//! Central's half of telemetry flow control (spec §7.1): the window a
//! session grants its node, cut when the store cannot take more and grown
//! back as samples are stored, and the samples the store refused, held and
//! offered again instead of being left to the node's slow re-send.
//!
//! The rule is additive increase, multiplicative decrease: a refusal halves
//! the window (at most once per retry period, so one full queue is one
//! cut), and every window's worth of samples stored widens it by one, up to
//! the configured maximum. A fleet replaying at once therefore converges on
//! what the database ingests, whatever the number of nodes.

use std::collections::VecDeque;
use std::time::Duration;

use crate::Timestamp;
use crate::WallTime;
use crate::wire::{Ack, Telemetry};

/// One session's telemetry pacing.
#[derive(Debug, Clone)]
pub(crate) struct TelemetryPacing {
    /// The configured window: the start, and the most it grows back to.
    max: u32,
    /// The window now.
    window: u32,
    /// What the node was last told.
    announced: u32,
    /// Samples stored since the window last changed.
    stored_since_change: u32,
    /// Handed to the store and not yet answered.
    in_flight: u32,
    /// Refused by the store, to be offered again.
    refused: VecDeque<Box<Telemetry>>,
    /// When the window was last cut.
    last_cut: Option<Timestamp>,
}

impl TelemetryPacing {
    pub(crate) fn new(max: u32) -> Self {
        let max = max.max(1);
        Self {
            max,
            window: max,
            announced: max,
            stored_since_change: 0,
            in_flight: 0,
            refused: VecDeque::new(),
            last_cut: None,
        }
    }

    /// The window now.
    pub(crate) fn window(&self) -> u32 {
        self.window
    }

    /// Whether one more sample fits the session's budget: twice the
    /// configured window of samples not yet answered (a node may hold a
    /// window it was granted before a cut, plus re-sends of samples whose
    /// first copy is still being stored).
    pub(crate) fn has_room(&self) -> bool {
        self.unanswered() < self.max.saturating_mul(2)
    }

    fn unanswered(&self) -> u32 {
        let held = u32::try_from(self.refused.len()).unwrap_or(u32::MAX);
        self.in_flight.saturating_add(held)
    }

    /// A sample goes to the store.
    pub(crate) fn handed_over(&mut self) {
        self.in_flight = self.in_flight.saturating_add(1);
    }

    /// The store has the sample taken at `timestamp`: the ack, carrying the
    /// window when it changed since the node was last told.
    pub(crate) fn stored(&mut self, timestamp: WallTime) -> Ack {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.stored_since_change = self.stored_since_change.saturating_add(1);
        if self.window < self.max && self.stored_since_change >= self.window {
            self.window += 1;
            self.stored_since_change = 0;
        }
        if self.window == self.announced {
            Ack::telemetry(timestamp)
        } else {
            self.announced = self.window;
            Ack::telemetry_with_window(timestamp, self.window)
        }
    }

    /// The store could not take `sample`: it is held to be offered again
    /// after `retry`, and the window is cut (once per `retry`). Returns
    /// whether a retry must be armed (none was pending).
    pub(crate) fn refused(
        &mut self,
        now: Timestamp,
        retry: Duration,
        sample: Box<Telemetry>,
    ) -> bool {
        self.in_flight = self.in_flight.saturating_sub(1);
        let cut_due = self
            .last_cut
            .is_none_or(|at| now.saturating_since(at) >= retry);
        if cut_due {
            self.window = (self.window / 2).max(1);
            self.stored_since_change = 0;
            self.last_cut = Some(now);
        }
        let arm = self.refused.is_empty();
        self.refused.push_back(sample);
        arm
    }

    /// The held samples, to offer the store again (each handed over).
    pub(crate) fn retry(&mut self) -> std::collections::vec_deque::Drain<'_, Box<Telemetry>> {
        let held = u32::try_from(self.refused.len()).unwrap_or(u32::MAX);
        self.in_flight = self.in_flight.saturating_add(held);
        self.refused.drain(..)
    }
}
