//! The hub's state changes, written in order in batched transactions: what
//! queued up while a write was in flight goes in the next transaction
//! together, so a burst (a fan-out to 10,000 nodes, a fleet reconnecting)
//! costs a few commits, not one per decision. Nothing is dropped: while
//! the store is behind, the hub turns new nodes away instead (spec §3).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc;

use super::{RetryPolicy, retry};
use crate::events::{AppEvent, Events};
use crate::metrics::Metrics;
use crate::store::{AnyStore, StateChange, Storage};

/// Most state changes one transaction carries (one statement per table,
/// whatever the number: see `NetChanges`).
const WRITE_BATCH: usize = 4096;

/// The writer never drops a change: the queue is unbounded, and its depth
/// is what the hub's admission reads (past its bound, new nodes get 503),
/// so that the producers slow down instead of the store losing state.
#[derive(Debug, Clone)]
pub(super) struct StateWriter {
    tx: mpsc::UnboundedSender<StateChange>,
    pending: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

impl StateWriter {
    pub(super) fn start(store: AnyStore, metrics: Arc<Metrics>, events: Events) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let pending = Arc::new(AtomicUsize::new(0));
        tokio::spawn(write(
            store,
            Arc::clone(&metrics),
            events,
            rx,
            Arc::clone(&pending),
        ));
        Self {
            tx,
            pending,
            metrics,
        }
    }

    pub(super) fn queue(&self, change: StateChange) {
        self.pending.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.tx.send(change) {
            // Only when the writer is gone (the runtime is shutting down).
            self.pending.fetch_sub(1, Ordering::Relaxed);
            self.metrics.db_error("state_writer_gone");
            tracing::error!("state writer stopped; {:?} not written", e.0);
        }
    }

    /// Changes queued and not yet written.
    pub(super) fn backlog(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }
}

async fn write(
    store: AnyStore,
    metrics: Arc<Metrics>,
    events: Events,
    mut rx: mpsc::UnboundedReceiver<StateChange>,
    pending: Arc<AtomicUsize>,
) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    while rx.recv_many(&mut batch, WRITE_BATCH).await > 0 {
        retry(RetryPolicy::UNTIL_DONE, "state_write", &metrics, || {
            store.apply_state_changes(batch.clone())
        })
        .await;
        pending.fetch_sub(batch.len(), Ordering::Relaxed);
        // Announced once stored, so whoever waits can read it back.
        for change in batch.drain(..) {
            events.emit(match change {
                StateChange::Status {
                    node_id, status, ..
                } => AppEvent::Status { node_id, status },
                StateChange::Command {
                    request_id, state, ..
                } => AppEvent::Command { request_id, state },
                StateChange::Rollout {
                    rollout_id, state, ..
                } => AppEvent::Rollout { rollout_id, state },
                StateChange::RolloutTarget {
                    rollout_id,
                    node_id,
                    state,
                    ..
                } => AppEvent::RolloutTarget {
                    rollout_id,
                    node_id,
                    state,
                },
            });
        }
    }
}
