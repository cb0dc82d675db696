//! The one retry policy of central's effects: a write that must not be lost
//! is tried again with exponential backoff, logged and counted each time.

use std::future::Future;
use std::time::Duration;

use crate::metrics::Metrics;

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// Attempts in all; `None`: until it succeeds.
    pub attempts: Option<u32>,
}

impl RetryPolicy {
    /// For writes that wait for the database however long it is down
    /// (state changes, telemetry: their acks wait with them).
    pub const UNTIL_DONE: Self = Self {
        first_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(10),
        attempts: None,
    };

    /// For writes whose sender keeps the data and sends it again (a
    /// command result stays in the agent's outbox until acked).
    pub const A_FEW_TIMES: Self = Self {
        first_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(3),
        attempts: Some(6),
    };
}

/// Runs `op` until it succeeds or the policy gives up (`None`).
pub async fn retry<T, E, F, Fut>(
    policy: RetryPolicy,
    operation: &'static str,
    metrics: &Metrics,
    mut op: F,
) -> Option<T>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut delay = policy.first_delay;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match op().await {
            Ok(value) => return Some(value),
            Err(e) => {
                metrics.db_error(operation);
                if policy.attempts.is_some_and(|max| attempt >= max) {
                    tracing::error!(error = %e, operation, attempt, "giving up");
                    return None;
                }
                tracing::error!(error = %e, operation, attempt, "failed; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(policy.max_delay);
            }
        }
    }
}
