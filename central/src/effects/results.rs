//! Command results, recorded in batched transactions: what arrives while a
//! write is in flight goes in the next one together, so a fan-out's answers
//! (10,000 results in a few seconds) cost a few commits, not one each. The
//! store is the arbiter of whose command a result answers and of which
//! result was first.

use nap_core::NodeId;
use nap_core::central::ResultRecord;
use nap_core::wire::CommandResult;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

use super::{RetryPolicy, retry};
use crate::clock::Clock;
use crate::events::{AppEvent, Events};
use crate::metrics::Metrics;
use crate::store::{AnyStore, Storage};

/// Most results one transaction carries.
const RESULT_BATCH: usize = 2048;

/// A result waiting to be written, and where its outcome goes.
type Queued = (NodeId, CommandResult, oneshot::Sender<ResultRecord>);

/// The writer's queue. Unbounded: what it holds is bounded by the results
/// the sessions let through (each node answers only commands it was sent).
#[derive(Debug, Clone)]
pub(super) struct ResultWriter {
    tx: mpsc::UnboundedSender<Queued>,
}

impl ResultWriter {
    pub(super) fn start(
        store: AnyStore,
        metrics: Arc<Metrics>,
        events: Events,
        clock: Clock,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write(store, metrics, events, clock, rx));
        Self { tx }
    }

    /// Records the result; `Failed` when the store refused it (after
    /// retries) or the writer is gone: the result stays unacked and the
    /// agent sends it again.
    pub(super) async fn record(&self, node_id: NodeId, result: CommandResult) -> ResultRecord {
        let (reply, outcome) = oneshot::channel();
        if self.tx.send((node_id, result, reply)).is_err() {
            return ResultRecord::Failed;
        }
        outcome.await.unwrap_or(ResultRecord::Failed)
    }
}

async fn write(
    store: AnyStore,
    metrics: Arc<Metrics>,
    events: Events,
    clock: Clock,
    mut rx: mpsc::UnboundedReceiver<Queued>,
) {
    let mut batch = Vec::with_capacity(RESULT_BATCH);
    while rx.recv_many(&mut batch, RESULT_BATCH).await > 0 {
        let rows: Vec<(NodeId, CommandResult)> = batch
            .iter()
            .map(|(node, result, _)| (*node, result.clone()))
            .collect();
        let at = clock.wall();
        let records = retry(RetryPolicy::A_FEW_TIMES, "record_results", &metrics, || {
            store.record_results(rows.clone(), at)
        })
        .await;
        metrics.result_batches.inc();
        for (i, (node_id, result, reply)) in batch.drain(..).enumerate() {
            let record = match records.as_ref().and_then(|r| r.get(i)) {
                Some(record) => *record,
                None => {
                    tracing::error!(request = %result.request_id, "result not recorded; it stays unacked and the agent will send it again");
                    ResultRecord::Failed
                }
            };
            match record {
                ResultRecord::WrongNode => {
                    tracing::warn!(request = %result.request_id, node = %node_id, "result for another node's command refused");
                }
                ResultRecord::Stored { first } => {
                    if first {
                        metrics.results_stored.inc();
                    }
                    events.emit(AppEvent::ResultStored {
                        request_id: result.request_id,
                    });
                }
                ResultRecord::Failed => {}
            }
            let _ = reply.send(record);
        }
    }
}
