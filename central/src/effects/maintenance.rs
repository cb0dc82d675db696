//! The store's upkeep (partitions, retention, spent token ids past their
//! keeping time), hourly.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::store::{AnyStore, Storage};

pub(super) fn start(store: AnyStore, metrics: Arc<Metrics>, clock: Clock) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(3600));
        loop {
            every.tick().await;
            if let Err(e) = store.maintain(clock.wall()).await {
                metrics.db_error("maintenance");
                tracing::error!(error = %e, "storage maintenance failed");
            }
            if let Err(e) = store.forget_spent_token_ids(clock.wall()).await {
                metrics.db_error("forget_spent_token_ids");
                tracing::warn!(error = %e, "cannot forget expired token ids");
            }
        }
    });
}
