//! The hub's state changes, written in order in batched transactions: what
//! queued up while a write was in flight goes in the next transaction
//! together, so a burst (a fan-out to 10,000 nodes, a fleet reconnecting)
//! costs a few commits, not one per decision.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::{RetryPolicy, retry};
use crate::events::{AppEvent, Events};
use crate::metrics::Metrics;
use crate::store::{AnyStore, StateChange, Storage};

/// Most state changes one transaction carries.
const WRITE_BATCH: usize = 512;

/// Changes waiting to be written.
const QUEUE: usize = 100_000;

#[derive(Debug, Clone)]
pub(super) struct StateWriter {
    tx: mpsc::Sender<StateChange>,
    metrics: Arc<Metrics>,
}

impl StateWriter {
    pub(super) fn start(store: AnyStore, metrics: Arc<Metrics>, events: Events) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write(store, Arc::clone(&metrics), events, rx));
        Self { tx, metrics }
    }

    pub(super) fn queue(&self, change: StateChange) {
        if let Err(e) = self.tx.try_send(change) {
            self.metrics.db_error("write_queue_full");
            tracing::error!("state write queue is full; dropping {:?}", e.into_inner());
        }
    }
}

async fn write(
    store: AnyStore,
    metrics: Arc<Metrics>,
    events: Events,
    mut rx: mpsc::Receiver<StateChange>,
) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    while rx.recv_many(&mut batch, WRITE_BATCH).await > 0 {
        retry(RetryPolicy::UNTIL_DONE, "state_write", &metrics, || {
            store.apply_state_changes(batch.clone())
        })
        .await;
        // Announced once stored, so whoever waits can read it back.
        for change in batch.drain(..) {
            events.emit(match change {
                StateChange::Status {
                    node_id, status, ..
                } => AppEvent::Status { node_id, status },
                StateChange::Command {
                    request_id, state, ..
                } => AppEvent::Command { request_id, state },
            });
        }
    }
}
