//! Bounded buffers for what must survive an outage: telemetry samples until
//! central acks them, alerts until they are sent.

use std::collections::VecDeque;

use crate::WallTime;
use crate::wire::Telemetry;

/// Samples not yet acked, oldest first. When full, the oldest is dropped and
/// counted; the count rides on the next sample pushed (`droppedSamples`).
///
/// On a connection the backlog is sent only while fewer than `window`
/// samples are in flight (sent, not yet acked): each ack lets the next one
/// go, so a replay runs at the pace central stores, never as one burst
/// (spec §7.1). A sample taken while connected goes at once.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TelemetryBuffer {
    samples: VecDeque<Telemetry>,
    /// When each sample (same order) was put on the current connection.
    sent: VecDeque<Option<crate::Timestamp>>,
    /// How many of `sent` are `Some`.
    in_flight: usize,
    /// What `welcome` granted, or the last telemetry ack that set it.
    window: usize,
    /// Re-sends since the last ack: each doubles the wait before the next.
    resends: u32,
    capacity: usize,
    unreported_drops: u64,
    total_drops: u64,
}

impl TelemetryBuffer {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            samples: VecDeque::new(),
            sent: VecDeque::new(),
            in_flight: 0,
            window: 1,
            resends: 0,
            capacity: capacity.max(1),
            unreported_drops: 0,
            total_drops: 0,
        }
    }

    /// Adds a sample, stamping it with the drops not yet reported. Returns
    /// true if an older sample had to be dropped to make room: the oldest
    /// not in flight (one in flight is probably being stored already, and
    /// dropping it would count as lost a sample central keeps), or the
    /// oldest of all when everything is in flight.
    pub(crate) fn push(&mut self, mut sample: Telemetry) -> bool {
        let mut dropped = false;
        let victim = self.sent.iter().position(Option::is_none).unwrap_or(0);
        if self.samples.len() >= self.capacity
            && let Some(old) = self.samples.remove(victim)
        {
            if self.sent.remove(victim).flatten().is_some() {
                self.in_flight -= 1;
            }
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
        dropped
    }

    /// Central stored the sample taken at `timestamp`.
    pub(crate) fn ack(&mut self, timestamp: WallTime) -> bool {
        match self.samples.iter().position(|s| s.timestamp == timestamp) {
            Some(i) => {
                self.samples.remove(i);
                if self.sent.remove(i).flatten().is_some() {
                    self.in_flight -= 1;
                }
                self.resends = 0;
                true
            }
            None => false,
        }
    }

    /// A new connection: nothing is in flight on it yet, and `welcome`
    /// says how much may be.
    pub(crate) fn start_connection(&mut self, window: u32) {
        self.sent.iter_mut().for_each(|s| *s = None);
        self.in_flight = 0;
        self.resends = 0;
        self.window = usize::try_from(window).unwrap_or(usize::MAX).max(1);
    }

    /// Central set a new window (with an ack). Samples already in flight
    /// past a smaller window stay in flight; no more go until acks bring
    /// the count under it.
    pub(crate) fn set_window(&mut self, window: u32) {
        self.window = usize::try_from(window).unwrap_or(usize::MAX).max(1);
    }

    /// The sample just pushed, marked in flight: live telemetry is sent
    /// as it is taken, outside the window (one per interval).
    pub(crate) fn send_newest(&mut self, now: crate::Timestamp) -> Option<Telemetry> {
        let sent = self.sent.back_mut()?;
        if sent.is_some() {
            return None;
        }
        *sent = Some(now);
        self.in_flight += 1;
        self.samples.back().cloned()
    }

    /// The backlog to send now, oldest first, marked in flight: as much as
    /// the window has room for.
    pub(crate) fn next_to_send(&mut self, now: crate::Timestamp) -> Vec<Telemetry> {
        let mut out = Vec::new();
        for (sample, sent) in self.samples.iter().zip(self.sent.iter_mut()) {
            if self.in_flight >= self.window {
                break;
            }
            if sent.is_none() {
                *sent = Some(now);
                self.in_flight += 1;
                out.push(sample.clone());
            }
        }
        out
    }

    /// When no ack came for `wait` doubled once per re-send since the last
    /// ack (at most `max_wait`), puts back what is in flight to be sent
    /// again and returns true: central refused or lost it. The doubling is
    /// what keeps a slow central from being answered with ever more copies.
    pub(crate) fn retransmit_if_stalled(
        &mut self,
        now: crate::Timestamp,
        wait: std::time::Duration,
        max_wait: std::time::Duration,
    ) -> bool {
        let wait = wait
            .saturating_mul(1u32 << self.resends.min(16))
            .min(max_wait.max(wait));
        let stalled = self
            .sent
            .iter()
            .flatten()
            .any(|at| now.saturating_since(*at) >= wait);
        if !stalled {
            return false;
        }
        self.sent.iter_mut().for_each(|s| *s = None);
        self.in_flight = 0;
        self.resends = self.resends.saturating_add(1);
        true
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Telemetry> {
        self.samples.iter()
    }

    pub(crate) fn len(&self) -> usize {
        self.samples.len()
    }

    /// Samples sent on this connection and not yet acked.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    pub(crate) fn window(&self) -> usize {
        self.window
    }

    pub(crate) fn total_drops(&self) -> u64 {
        self.total_drops
    }

    /// Replaces the contents (restoring a snapshot), keeping the newest that fit.
    pub(crate) fn restore(&mut self, samples: Vec<Telemetry>) {
        let skip = samples.len().saturating_sub(self.capacity);
        self.samples = samples.into_iter().skip(skip).collect();
        self.sent = self.samples.iter().map(|_| None).collect();
        self.in_flight = 0;
    }
}

/// Alerts and periodic health reports not yet acked, oldest first; when
/// full the oldest goes. Each remembers when it was last put on a wire, so
/// a reconnect sends everything again and a live connection re-sends what
/// stayed unacked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AckQueue<T> {
    items: VecDeque<(T, Option<crate::Timestamp>)>,
    capacity: usize,
}

impl<T: Clone> AckQueue<T> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            items: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Queues `item`, marked sent at `sent` if it already went out.
    pub(crate) fn push(&mut self, item: T, sent: Option<crate::Timestamp>) {
        if self.items.len() >= self.capacity {
            self.items.pop_front();
        }
        self.items.push_back((item, sent));
    }

    /// Central stored the item `acked` picks; false if none matched.
    pub(crate) fn ack(&mut self, acked: impl Fn(&T) -> bool) -> bool {
        match self.items.iter().position(|(item, _)| acked(item)) {
            Some(i) => {
                self.items.remove(i);
                true
            }
            None => false,
        }
    }

    /// What to send now, marked sent at `now`: every item not sent on this
    /// connection, and those unacked for `resend_after` since they were.
    pub(crate) fn due(
        &mut self,
        now: crate::Timestamp,
        resend_after: Option<std::time::Duration>,
    ) -> Vec<T> {
        let mut out = Vec::new();
        for (item, sent) in &mut self.items {
            let due = match (*sent, resend_after) {
                (None, _) => true,
                (Some(at), Some(after)) => now.saturating_since(at) >= after,
                (Some(_), None) => false,
            };
            if due {
                *sent = Some(now);
                out.push(item.clone());
            }
        }
        out
    }

    /// A new connection: nothing has been sent on it.
    pub(crate) fn start_connection(&mut self) {
        self.items.iter_mut().for_each(|(_, sent)| *sent = None);
    }

    /// Forgets what was sent (a central that does not ack: sent is done).
    pub(crate) fn forget_sent(&mut self) {
        self.items.retain(|(_, sent)| sent.is_none());
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.iter().map(|(item, _)| item)
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// Replaces the contents (restoring a snapshot), none sent yet.
    pub(crate) fn restore(&mut self, items: Vec<T>) {
        let skip = items.len().saturating_sub(self.capacity);
        self.items = items.into_iter().skip(skip).map(|i| (i, None)).collect();
    }
}
