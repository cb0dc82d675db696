//! Alerts and health reports, stored as they come (log lines are not kept).
//! Storing is idempotent on the record's key — a health report by its
//! timestamp, an alert by its id — so what a node sends again is kept once;
//! once stored, the session is told, and it acks what the node waits for.

use nap_core::NodeId;
use nap_core::central::{RecordKey, SessionInput};
use nap_core::codec::Message as _;
use nap_core::wire::AgentMessage;

use super::{Effects, Inbox};
use crate::store::Storage;

pub(super) fn record(
    effects: &Effects,
    node_id: NodeId,
    message: AgentMessage,
    ack: Option<(RecordKey, Inbox)>,
) {
    let effects = effects.clone();
    tokio::spawn(async move {
        let now = effects.clock.wall();
        let stored = match &message {
            AgentMessage::Alert(alert) => effects.store.insert_alert(node_id, now, alert).await,
            AgentMessage::Health(health) => {
                let at = health.timestamp.unwrap_or(now);
                effects.store.insert_health(node_id, at, health).await
            }
            _ => Ok(()),
        };
        match stored {
            Ok(()) => {
                if let Some((key, session)) = ack {
                    let _ = session.send(Box::new(SessionInput::RecordStored(key)));
                }
            }
            // Not acked: the node keeps it and sends it again.
            Err(e) => {
                effects.metrics.db_error("record");
                tracing::error!(error = %e, node = %node_id, "could not store a {}", message.message_type());
            }
        }
    });
}
