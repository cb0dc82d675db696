//! Checkpoints the audit chain's head into the anchor file whenever it has
//! moved, at most once per interval, so that a truncation or rewrite of the
//! chain before the newest checkpoint is caught by `audit verify`. What
//! remains unanchored at any moment is at most one interval of entries.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::events::{AppEvent, Events};
use crate::metrics::Metrics;
use crate::store::anchor::Anchor;
use crate::store::{AnyStore, Storage};

pub(super) fn start(
    anchor: Arc<Anchor>,
    every: Duration,
    store: AnyStore,
    metrics: Arc<Metrics>,
    events: Events,
    clock: Clock,
) {
    tokio::spawn(async move {
        let mut anchored = anchor.newest().map(|c| (c.seq, c.hash));
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let head = match store.list_audit(1).await {
                Ok(mut newest) => newest.pop(),
                Err(e) => {
                    metrics.db_error("audit_head");
                    tracing::warn!(error = %e, "cannot read the audit chain's head to anchor it");
                    continue;
                }
            };
            let Some(head) = head else { continue };
            if anchored.as_ref() == Some(&(head.seq, head.hash.clone())) {
                continue;
            }
            let (path, at) = (anchor.path().to_owned(), clock.wall());
            let (writer, entry) = (Arc::clone(&anchor), head.clone());
            let written = tokio::task::spawn_blocking(move || writer.checkpoint(&entry, at))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            match written {
                Ok(_) => {
                    events.emit(AppEvent::AuditAnchored { seq: head.seq });
                    anchored = Some((head.seq, head.hash));
                }
                Err(e) => {
                    metrics.db_error("audit_anchor");
                    tracing::error!(error = %e, path = %path.display(), "cannot write the audit anchor");
                }
            }
        }
    });
}
