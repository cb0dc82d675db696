//! The store's upkeep (partitions, retention), hourly.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::store::AnyStore;

pub(super) fn start(store: AnyStore, metrics: Arc<Metrics>, clock: Clock) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(3600));
        loop {
            every.tick().await;
            if let Err(e) = store.maintain(clock.wall()).await {
                metrics.db_error("maintenance");
                tracing::error!(error = %e, "storage maintenance failed");
            }
        }
    });
}
