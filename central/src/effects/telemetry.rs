//! Telemetry ingest: samples are queued (bounded), written in batches at
//! least every second, and acked to their sessions only once durable. While
//! the database is down the batch is retried and the queue fills; past its
//! bound new samples are refused — handed back to their session, which
//! holds them, offers them again and narrows its node's window. Nothing accepted is lost silently: every refusal and every failed
//! write is logged and counted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nap_core::central::SessionInput;
use nap_core::wire::Telemetry;
use tokio::sync::mpsc;

use crate::events::{AppEvent, Events};
use crate::metrics::Metrics;
use crate::store::{AnyStore, Storage};

/// Where a session's inputs go: the hub's events and the store's acks. It is
/// unbounded so that neither is ever dropped; what arrives is bounded by the
/// session itself (acks by its telemetry window and message budgets, hub
/// events by the commands the hub holds for the node). Inputs travel boxed:
/// a channel allocates its slots 32 at a time, and 32 unboxed inputs are
/// kilobytes that every idle connection would hold; boxed, a quarter of a KiB.
pub type Inbox = mpsc::UnboundedSender<Box<SessionInput>>;

/// One queued sample and where its ack goes.
#[derive(Debug)]
pub struct Pending {
    pub telemetry: Telemetry,
    pub session: Inbox,
    pub received: Instant,
}

/// The queue's sending side.
#[derive(Debug, Clone)]
pub struct Ingest {
    tx: mpsc::Sender<Pending>,
    capacity: usize,
    metrics: Arc<Metrics>,
}

/// Starts the writer.
pub(super) fn start(
    capacity: usize,
    batch: usize,
    store: AnyStore,
    metrics: Arc<Metrics>,
    events: Events,
) -> Ingest {
    let capacity = capacity.max(1);
    let (tx, rx) = mpsc::channel(capacity);
    let ingest = Ingest {
        tx,
        capacity,
        metrics: Arc::clone(&metrics),
    };
    tokio::spawn(run(ingest.clone(), batch, store, metrics, events, rx));
    ingest
}

impl Ingest {
    /// Queues a sample; when the queue is full the sample is refused and
    /// handed back.
    pub fn submit(&self, pending: Pending) -> Result<(), Box<Telemetry>> {
        self.tx.try_send(pending).map_err(|e| {
            self.metrics.telemetry_refused.inc();
            Box::new(e.into_inner().telemetry)
        })
    }

    /// Samples waiting.
    pub fn depth(&self) -> usize {
        self.capacity - self.tx.capacity()
    }
}

/// The writer task.
async fn run(
    ingest: Ingest,
    max: usize,
    store: AnyStore,
    metrics: Arc<Metrics>,
    events: Events,
    mut rx: mpsc::Receiver<Pending>,
) {
    let max = max.max(1);
    let mut batch: Vec<Pending> = Vec::with_capacity(max);
    loop {
        let Some(first) = rx.recv().await else { return };
        batch.push(first);
        // Gather what else arrives within a short window, up to a batch.
        let deadline = tokio::time::Instant::now() + Duration::from_millis(100);
        while batch.len() < max {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(p)) => batch.push(p),
                Ok(None) | Err(_) => break,
            }
        }
        metrics
            .ingest_queue_depth
            .set(i64::try_from(ingest.depth()).unwrap_or(i64::MAX));
        write_with_retries(&ingest, &store, &metrics, &events, &batch).await;
        for p in batch.drain(..) {
            let timestamp = p.telemetry.timestamp;
            // Fails only when the session has ended (the node re-sends).
            let _ = p
                .session
                .send(Box::new(SessionInput::TelemetryStored(timestamp)));
            metrics
                .ingest_latency
                .observe(p.received.elapsed().as_secs_f64());
            events.emit(AppEvent::TelemetryStored {
                node_id: p.telemetry.node_id,
                timestamp,
            });
        }
    }
}

/// Retried for as long as the database refuses: the samples stay unacked
/// meanwhile, and past the queue's bound new ones are refused (not acked).
async fn write_with_retries(
    ingest: &Ingest,
    store: &AnyStore,
    metrics: &Metrics,
    events: &Events,
    batch: &[Pending],
) {
    let rows: Vec<Telemetry> = batch.iter().map(|p| p.telemetry.clone()).collect();
    let mut delay = Duration::from_millis(100);
    loop {
        match store.insert_telemetry(&rows).await {
            Ok(inserted) => {
                metrics.telemetry_rows.inc_by(inserted);
                return;
            }
            Err(e) => {
                metrics.db_error("insert_telemetry");
                events.emit(AppEvent::StorageError {
                    operation: "insert_telemetry",
                });
                tracing::error!(
                    error = %e,
                    rows = rows.len(),
                    queued = ingest.depth(),
                    "telemetry write failed; retrying in {delay:?} (samples stay unacked meanwhile)"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}
