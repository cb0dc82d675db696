//! What the engines ask central to do, performed: store writes (state
//! changes, telemetry and results through batching writers; records),
//! administrator alarms, and upkeep.
//! Every effect that must not be lost retries with the one policy in
//! [`retry`]; none decides anything about the protocol.

mod alarms;
mod anchor;
mod maintenance;
mod records;
mod results;
mod retry;
mod spent;
mod state;
pub mod telemetry;
mod webhook;

use std::sync::Arc;
use std::time::Duration;

use nap_core::central::{Alarm, ResultRecord, SpentRecord};
use nap_core::wire::{AgentMessage, CommandResult};
use nap_core::{NodeId, WallTime};

use crate::clock::Clock;
use crate::config::ServeConfig;
use crate::events::{AppEvent, Events};
use crate::metrics::Metrics;
use crate::store::{AnyStore, SpentToken, StateChange, Storage};

pub(crate) use alarms::approval_outcome;
pub use retry::{RetryPolicy, retry};
pub use telemetry::{Inbox, Ingest, Pending};
pub use webhook::Webhook;

/// The handle every driver performs effects through; cheap to clone.
#[derive(Debug, Clone)]
pub struct Effects {
    pub store: AnyStore,
    pub metrics: Arc<Metrics>,
    pub events: Events,
    pub clock: Clock,
    pub telemetry: Ingest,
    results: results::ResultWriter,
    state: state::StateWriter,
    spent: spent::SpentTokens,
    alarms: alarms::Alarms,
}

impl Effects {
    /// Starts the writers (state changes, telemetry), the webhook worker and
    /// the store's upkeep.
    pub fn start(
        config: &ServeConfig,
        webhook: Option<Webhook>,
        audit_anchor: Option<Arc<crate::store::anchor::Anchor>>,
        store: AnyStore,
        metrics: Arc<Metrics>,
        events: Events,
        clock: Clock,
    ) -> Self {
        let state = state::StateWriter::start(store.clone(), Arc::clone(&metrics), events.clone());
        let telemetry = telemetry::start(
            config.ingest_queue,
            config.ingest_batch,
            store.clone(),
            Arc::clone(&metrics),
            events.clone(),
        );
        let alarms = alarms::Alarms::start(webhook, store.clone(), Arc::clone(&metrics), clock);
        maintenance::start(store.clone(), Arc::clone(&metrics), clock);
        if let Some(audit_anchor) = audit_anchor {
            anchor::start(
                audit_anchor,
                Duration::from_millis(config.audit_anchor_every_ms),
                store.clone(),
                Arc::clone(&metrics),
                events.clone(),
                clock,
            );
        }
        let results = results::ResultWriter::start(
            store.clone(),
            Arc::clone(&metrics),
            events.clone(),
            clock,
        );
        let spent = spent::SpentTokens::start(store.clone(), Arc::clone(&metrics));
        Self {
            store,
            metrics,
            events,
            clock,
            telemetry,
            results,
            state,
            spent,
            alarms,
        }
    }

    /// Records a state change of the hub's, in order with the others.
    pub fn state_change(&self, change: StateChange) {
        self.state.queue(change);
    }

    /// State changes waiting to be written (the hub turns new nodes away
    /// while this is past its bound).
    pub fn store_backlog(&self) -> usize {
        self.state.backlog()
    }

    /// Stores a command result unless its command belongs to another node
    /// (in a batch with the others that arrive meanwhile).
    pub async fn record_result(&self, node_id: NodeId, result: CommandResult) -> ResultRecord {
        self.results.record(node_id, result).await
    }

    /// Spends a node token's id in the durable record (in a batch with the
    /// others that arrive meanwhile); what the record said of it before.
    pub async fn spend_token_id(&self, token: SpentToken) -> SpentRecord {
        self.spent.spend(token).await
    }

    /// Keeps an alert, a health report or a log line; `ack` is where to say
    /// it was stored.
    pub fn record(
        &self,
        node_id: NodeId,
        message: AgentMessage,
        ack: Option<(nap_core::central::RecordKey, Inbox)>,
    ) {
        records::record(self, node_id, message, ack);
    }

    /// Tells an administrator.
    pub fn alarm(&self, alarm: Alarm) {
        self.alarms.raise(alarm);
    }

    /// Expires the commands still queued in the store that were created
    /// before `created_before` (with several processes the store is the
    /// offline queue).
    pub async fn expire_queued(&self, created_before: WallTime) {
        let now = self.clock.wall();
        match self.store.expire_queued_commands(created_before, now).await {
            Ok(expired) => {
                for request_id in expired {
                    self.events.emit(AppEvent::Command {
                        request_id,
                        state: nap_core::central::CommandState::Expired,
                    });
                }
            }
            Err(e) => {
                self.metrics.db_error("expire_commands");
                tracing::warn!(error = %e, "cannot expire old queued commands");
            }
        }
    }
}
