//! The durable record of spent node token ids (spec §3), written in batches:
//! every admission and refresh whose signature verifies spends its token's
//! id in the store before the hub decides, and what arrives while a write is
//! in flight goes in the next one — one commit for a burst of admissions,
//! not one each. The store is shared by every central process, so the record
//! holds across restarts and across the cluster alike; a store that cannot
//! answer makes the token unverifiable (the hub answers 503), never accepted.
//! Ids past their keeping time are forgotten by the store's upkeep.

use std::sync::Arc;

use nap_core::central::SpentRecord;
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;
use crate::store::{AnyStore, SpentToken, Storage};

/// Most ids one transaction spends.
const SPEND_BATCH: usize = 512;

type Queued = (SpentToken, oneshot::Sender<SpentRecord>);

/// The writer's queue. Unbounded: what it holds is bounded by the
/// handshakes in flight, each waiting for its answer.
#[derive(Debug, Clone)]
pub(super) struct SpentTokens {
    tx: mpsc::UnboundedSender<Queued>,
}

impl SpentTokens {
    pub(super) fn start(store: AnyStore, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write(store, metrics, rx));
        Self { tx }
    }

    /// Spends `token`'s id; what the record said of it before.
    pub(super) async fn spend(&self, token: SpentToken) -> SpentRecord {
        let (reply, outcome) = oneshot::channel();
        if self.tx.send((token, reply)).is_err() {
            return SpentRecord::Unavailable;
        }
        outcome.await.unwrap_or(SpentRecord::Unavailable)
    }
}

async fn write(store: AnyStore, metrics: Arc<Metrics>, mut rx: mpsc::UnboundedReceiver<Queued>) {
    let mut batch = Vec::with_capacity(SPEND_BATCH);
    while rx.recv_many(&mut batch, SPEND_BATCH).await > 0 {
        let tokens: Vec<SpentToken> = batch.iter().map(|(token, _)| *token).collect();
        // No retry: each caller is a handshake waiting, and a node told 503
        // comes back with a fresh token anyway.
        let spent = match store.spend_token_ids(tokens).await {
            Ok(spent) => Some(spent),
            Err(e) => {
                metrics.db_error("spend_token_ids");
                tracing::warn!(error = %e, tokens = batch.len(), "cannot spend token ids; their upgrades get 503");
                None
            }
        };
        for (i, (_, reply)) in batch.drain(..).enumerate() {
            let record = match spent.as_ref().and_then(|s| s.get(i)) {
                Some(true) => SpentRecord::Unspent,
                Some(false) => SpentRecord::Spent,
                None => SpentRecord::Unavailable,
            };
            let _ = reply.send(record);
        }
    }
}
