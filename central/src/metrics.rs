//! Prometheus metrics, served at `GET /metrics`.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MessageType {
    pub r#type: String,
}

/// Every metric central exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub connections: Gauge,
    pub handshakes: Family<Outcome, Counter>,
    pub handshakes_in_flight: Gauge,
    pub auth_failures: Family<Reason, Counter>,
    pub messages_in: Family<MessageType, Counter>,
    pub messages_out: Family<MessageType, Counter>,
    pub invalid_messages: Family<Reason, Counter>,
    pub ingest_queue_depth: Gauge,
    pub ingest_latency: Histogram,
    pub telemetry_rows: Counter,
    pub telemetry_refused: Counter,
    pub result_batches: Counter,
    pub results_stored: Counter,
    pub db_errors: Family<Reason, Counter>,
    pub notifications: Family<Outcome, Counter<u64, AtomicU64>>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("nap");
        let m = Self {
            connections: Gauge::default(),
            handshakes: Family::default(),
            handshakes_in_flight: Gauge::default(),
            auth_failures: Family::default(),
            messages_in: Family::default(),
            messages_out: Family::default(),
            invalid_messages: Family::default(),
            ingest_queue_depth: Gauge::default(),
            ingest_latency: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            telemetry_rows: Counter::default(),
            telemetry_refused: Counter::default(),
            result_batches: Counter::default(),
            results_stored: Counter::default(),
            db_errors: Family::default(),
            notifications: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "connections",
            "Agent connections open",
            m.connections.clone(),
        );
        registry.register(
            "handshakes",
            "Agent handshakes by outcome",
            m.handshakes.clone(),
        );
        registry.register(
            "handshakes_in_flight",
            "Agent handshakes in progress",
            m.handshakes_in_flight.clone(),
        );
        registry.register(
            "auth_failures",
            "Refused agent tokens by reason",
            m.auth_failures.clone(),
        );
        registry.register(
            "messages_in",
            "Messages received from agents by type",
            m.messages_in.clone(),
        );
        registry.register(
            "messages_out",
            "Messages sent to agents by type",
            m.messages_out.clone(),
        );
        registry.register(
            "invalid_messages",
            "Invalid messages from agents by reason",
            m.invalid_messages.clone(),
        );
        registry.register(
            "ingest_queue_depth",
            "Telemetry samples waiting for the database",
            m.ingest_queue_depth.clone(),
        );
        registry.register(
            "ingest_latency_seconds",
            "Time from receipt to durable storage of telemetry",
            m.ingest_latency.clone(),
        );
        registry.register(
            "telemetry_rows",
            "Telemetry rows stored",
            m.telemetry_rows.clone(),
        );
        registry.register(
            "telemetry_refused",
            "Telemetry samples refused (queue full; the agent re-sends)",
            m.telemetry_refused.clone(),
        );
        registry.register(
            "result_batches",
            "Transactions that recorded command results",
            m.result_batches.clone(),
        );
        registry.register(
            "results_stored",
            "Command results stored (first answers only)",
            m.results_stored.clone(),
        );
        registry.register(
            "db_errors",
            "Database errors by operation",
            m.db_errors.clone(),
        );
        registry.register(
            "notifications",
            "Admin webhook deliveries by outcome",
            m.notifications.clone(),
        );
        Self { registry, ..m }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    pub fn db_error(&self, operation: &str) {
        self.db_errors
            .get_or_create(&Reason {
                reason: operation.to_owned(),
            })
            .inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
