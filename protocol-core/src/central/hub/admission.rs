//! Admission decisions before a session exists: the per-address penalty for
//! failed tokens, the answer to an upgrade when handshakes are saturated,
//! and the refusal that goes back to the peer. All on the hub's clock and
//! PRNG, so a seed replays them.

use core::net::IpAddr;
use std::collections::BTreeMap;
use std::time::Duration;

use crate::Timestamp;
use crate::rng::Prng;

use super::super::auth::AuthRejection;

/// Parameters of admission.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AdmissionConfig {
    /// Failed attempts from one address within `throttle_window` after
    /// which its attempts are refused with 429 until the window ends.
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
            max_store_backlog: 50_000,
        }
    }
}

/// How an upgrade is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalKind {
    /// The token was refused (HTTP 401).
    Unauthorized,
    /// Too many failures from this address lately (HTTP 429).
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

impl Refusal {
    pub(super) fn unauthorized(rejection: AuthRejection, hold: Duration) -> Self {
        Self {
            kind: RefusalKind::Unauthorized,
            reason: rejection.reason(),
            retry_after: None,
            hold,
        }
    }
}

/// Failed attempts per source address, on the monotonic clock.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(super) struct Throttle {
    failures: BTreeMap<IpAddr, (Timestamp, u32)>,
}

impl Throttle {
    /// Records a failure; returns how long to hold the answer.
    pub(super) fn fail(
        &mut self,
        config: &AdmissionConfig,
        now: Timestamp,
        ip: IpAddr,
    ) -> Duration {
        if self.failures.len() > config.max_tracked_addresses {
            self.failures
                .retain(|_, (since, _)| now.saturating_since(*since) < config.throttle_window);
        }
        let entry = self.failures.entry(ip).or_insert((now, 0));
        if now.saturating_since(entry.0) >= config.throttle_window {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        config.penalty_step.saturating_mul(entry.1.min(10))
    }

    /// Whether the address has failed too often lately.
    pub(super) fn blocked(&self, config: &AdmissionConfig, now: Timestamp, ip: IpAddr) -> bool {
        self.failures.get(&ip).is_some_and(|(since, n)| {
            *n >= config.throttle_limit && now.saturating_since(*since) < config.throttle_window
        })
    }

    /// Addresses remembered now.
    pub(super) fn len(&self) -> usize {
        self.failures.len()
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

/// The 429 answer.
pub(super) fn throttled(config: &AdmissionConfig) -> Refusal {
    Refusal {
        kind: RefusalKind::Throttled,
        reason: "throttled",
        retry_after: Some(config.throttled_retry_after),
        hold: Duration::ZERO,
    }
}
