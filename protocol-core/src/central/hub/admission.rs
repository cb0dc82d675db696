//! Admission decisions before a session exists: the penalty for failed
//! tokens (per source address and per claimed node), the answer to an
//! upgrade when handshakes are saturated, the refusal that goes back to the
//! peer, and the coalescing of the notices refusals raise. All on the hub's
//! clock and PRNG, so a seed replays them.

use core::net::IpAddr;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::rng::Prng;
use crate::{NodeId, Timestamp};

use super::super::alarm::Alarm;
use super::super::auth::AuthRejection;

/// Parameters of admission.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AdmissionConfig {
    /// Failed attempts from one address, or claiming one node, within
    /// `throttle_window` past which a refused attempt is answered 429
    /// instead of 401. Only refused attempts: a token that verifies is
    /// admitted whatever the count.
    pub throttle_limit: u32,
    pub throttle_window: Duration,
    /// The answer to a refused token is held this long per failure in the
    /// window, up to ten steps (it slows guessing without blocking anyone).
    pub penalty_step: Duration,
    /// `Retry-After` of a throttled address's 429.
    pub throttled_retry_after: Duration,
    /// `Retry-After` of a 503 (handshakes saturated) is drawn from this
    /// range, so that the refused part of a herd does not return at once.
    pub busy_retry_after_min: Duration,
    pub busy_retry_after_max: Duration,
    /// Addresses remembered before the stale ones are swept.
    pub max_tracked_addresses: usize,
    /// Refusals from one address for one reason raise one notice per this
    /// window: the first at once, the rest counted and told as one when it
    /// ends.
    pub notice_window: Duration,
    /// State changes waiting for the store past which new upgrades get 503.
    pub max_store_backlog: usize,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            throttle_limit: 10,
            throttle_window: Duration::from_secs(60),
            penalty_step: Duration::from_millis(100),
            throttled_retry_after: Duration::from_secs(60),
            busy_retry_after_min: Duration::from_secs(5),
            busy_retry_after_max: Duration::from_secs(14),
            max_tracked_addresses: 100_000,
            notice_window: Duration::from_secs(60),
            max_store_backlog: 50_000,
        }
    }
}

/// How an upgrade is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalKind {
    /// The token was refused (HTTP 401).
    Unauthorized,
    /// Refused, and its address or claimed node has failed too often lately
    /// (HTTP 429).
    Throttled,
    /// Too many handshakes in flight (HTTP 503).
    Busy,
}

impl RefusalKind {
    /// The HTTP status of the answer.
    pub fn http_status(self) -> u16 {
        match self {
            Self::Unauthorized => 401,
            Self::Throttled => 429,
            Self::Busy => 503,
        }
    }
}

/// The hub's answer to an upgrade it does not admit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Refusal {
    pub kind: RefusalKind,
    /// A short stable name for the body, metrics and audit.
    pub reason: &'static str,
    /// `Retry-After`, when the peer is told when to come back.
    pub retry_after: Option<Duration>,
    /// How long the driver holds the answer before sending it.
    pub hold: Duration,
}

/// Where failed attempts are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Source {
    Address(IpAddr),
    /// The node a refused token claimed to be (its `sub`).
    Node(NodeId),
}

/// Failed attempts per source, on the monotonic clock.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(super) struct Throttle {
    failures: BTreeMap<Source, (Timestamp, u32)>,
}

impl Throttle {
    /// Records a failure against each source; returns the most failures any
    /// of them has in its window, this one included.
    pub(super) fn fail(
        &mut self,
        config: &AdmissionConfig,
        now: Timestamp,
        sources: impl IntoIterator<Item = Source>,
    ) -> u32 {
        if self.failures.len() > config.max_tracked_addresses {
            self.failures
                .retain(|_, (since, _)| now.saturating_since(*since) < config.throttle_window);
        }
        let mut most = 1;
        for source in sources {
            let entry = self.failures.entry(source).or_insert((now, 0));
            if now.saturating_since(entry.0) >= config.throttle_window {
                *entry = (now, 0);
            }
            entry.1 = entry.1.saturating_add(1);
            most = most.max(entry.1);
        }
        most
    }

    /// Sources remembered now.
    pub(super) fn len(&self) -> usize {
        self.failures.len()
    }
}

/// The answer to a refused token that is the `failures`-th from its source
/// in the window: 401 held `failures` penalty steps (at most ten), or past
/// the limit 429 with `Retry-After`, at once (holding it would only keep a
/// socket open for whoever is failing).
pub(super) fn refusal(
    config: &AdmissionConfig,
    rejection: AuthRejection,
    failures: u32,
) -> Refusal {
    if failures > config.throttle_limit {
        return Refusal {
            kind: RefusalKind::Throttled,
            reason: rejection.reason(),
            retry_after: Some(config.throttled_retry_after),
            hold: Duration::ZERO,
        };
    }
    Refusal {
        kind: RefusalKind::Unauthorized,
        reason: rejection.reason(),
        retry_after: None,
        hold: config.penalty_step.saturating_mul(failures.min(10)),
    }
}

/// Who a notice is about: an address (none when unknown, or when too many
/// addresses are being told about at once) and the refusal's reason.
type NoticeKey = (Option<IpAddr>, &'static str);

/// Refusal notices, coalesced: one per address and reason per window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(super) struct Notices {
    /// Open windows: when each ends, and the refusals held back so far.
    open: BTreeMap<NoticeKey, (Timestamp, u32)>,
    by_end: BTreeSet<(Timestamp, NoticeKey)>,
}

impl Notices {
    /// Notes a refusal; the notice to raise now if it opens a window.
    pub(super) fn note(
        &mut self,
        config: &AdmissionConfig,
        now: Timestamp,
        peer: Option<IpAddr>,
        reason: &'static str,
    ) -> Option<Alarm> {
        // Past the bound, new addresses share one notice per reason.
        let peer = peer.filter(|ip| {
            self.open.len() < config.max_tracked_addresses
                || self.open.contains_key(&(Some(*ip), reason))
        });
        let key = (peer, reason);
        if let Some((_, held)) = self.open.get_mut(&key) {
            *held = held.saturating_add(1);
            return None;
        }
        let end = now + config.notice_window;
        self.open.insert(key, (end, 0));
        self.by_end.insert((end, key));
        Some(Alarm::AuthRefused {
            reason,
            peer,
            count: 1,
        })
    }

    /// Closes the windows ended by `now`: one notice for each that held
    /// refusals back, with their count.
    pub(super) fn close_due(&mut self, now: Timestamp) -> Vec<Alarm> {
        let mut told = Vec::new();
        while let Some(&(end, key)) = self.by_end.first() {
            if end > now {
                break;
            }
            self.by_end.pop_first();
            if let Some((_, held)) = self.open.remove(&key)
                && held > 0
            {
                told.push(Alarm::AuthRefused {
                    reason: key.1,
                    peer: key.0,
                    count: held,
                });
            }
        }
        told
    }

    /// When the next window ends.
    pub(super) fn next_due(&self) -> Option<Timestamp> {
        self.by_end.first().map(|(end, _)| *end)
    }
}

/// The 503 answer, with its `Retry-After` drawn from the configured range.
pub(super) fn busy(config: &AdmissionConfig, rng: &mut Prng) -> Refusal {
    let retry_after =
        rng.duration_between(config.busy_retry_after_min, config.busy_retry_after_max);
    // Retry-After is in whole seconds.
    let retry_after = Duration::from_secs(retry_after.as_secs().max(1));
    Refusal {
        kind: RefusalKind::Busy,
        reason: "busy",
        retry_after: Some(retry_after),
        hold: Duration::ZERO,
    }
}
