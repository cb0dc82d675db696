//! Telemetry ingest: samples are queued (bounded), written in batches at
//! least every second, and acked to their sessions only once durable. While
//! the database is down the batch is retried and the queue fills; past its
//! bound new samples are refused — not acked, so agents keep and re-send
//! them. Nothing accepted is lost silently: every refusal and every failed
//! write is logged and counted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nap_core::central::SessionInput;
use nap_core::wire::Telemetry;
use tokio::sync::mpsc;

use crate::app::{App, AppEvent};
use crate::store::Storage;

/// One queued sample and where its ack goes.
#[derive(Debug)]
pub struct Pending {
    pub telemetry: Telemetry,
    pub session: crate::connection::Inbox,
    pub received: Instant,
}

/// The queue's sending side.
#[derive(Debug, Clone)]
pub struct Ingest {
    tx: mpsc::Sender<Pending>,
    capacity: usize,
}

impl Ingest {
    pub fn channel(capacity: usize) -> (Self, mpsc::Receiver<Pending>) {
        let capacity = capacity.max(1);
        let (tx, rx) = mpsc::channel(capacity);
        (Self { tx, capacity }, rx)
    }

    /// Queues a sample; false when the queue is full (the sample is refused).
    pub fn submit(&self, pending: Pending) -> bool {
        self.tx.try_send(pending).is_ok()
    }

    /// Samples waiting.
    pub fn depth(&self) -> usize {
        self.capacity - self.tx.capacity()
    }
}

/// The writer task.
pub async fn run(app: Arc<App>, mut rx: mpsc::Receiver<Pending>) {
    let max = app.config.ingest_batch.max(1);
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
        app.metrics
            .ingest_queue_depth
            .set(i64::try_from(app.ingest.depth()).unwrap_or(i64::MAX));
        write_with_retries(&app, &batch).await;
        for p in batch.drain(..) {
            let timestamp = p.telemetry.timestamp;
            let _ = p
                .session
                .try_send(Box::new(SessionInput::TelemetryStored(timestamp)));
            app.metrics
                .ingest_latency
                .observe(p.received.elapsed().as_secs_f64());
            app.emit(AppEvent::TelemetryStored {
                node_id: p.telemetry.node_id,
                timestamp,
            });
        }
    }
}

async fn write_with_retries(app: &App, batch: &[Pending]) {
    let rows: Vec<Telemetry> = batch.iter().map(|p| p.telemetry.clone()).collect();
    let mut delay = Duration::from_millis(100);
    loop {
        match app.store.insert_telemetry(&rows).await {
            Ok(inserted) => {
                app.metrics.telemetry_rows.inc_by(inserted);
                return;
            }
            Err(e) => {
                app.metrics.db_error("insert_telemetry");
                app.emit(AppEvent::StorageError {
                    operation: "insert_telemetry",
                });
                tracing::error!(
                    error = %e,
                    rows = rows.len(),
                    queued = app.ingest.depth(),
                    "telemetry write failed; retrying in {delay:?} (samples stay unacked meanwhile)"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}
