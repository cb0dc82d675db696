//! Alerts and health reports, stored as they come (log lines are not kept).

use nap_core::NodeId;
use nap_core::codec::Message as _;
use nap_core::wire::AgentMessage;

use super::Effects;
use crate::store::Storage;

pub(super) fn record(effects: &Effects, node_id: NodeId, message: AgentMessage) {
    let effects = effects.clone();
    tokio::spawn(async move {
        let at = effects.clock.wall();
        let stored = match &message {
            AgentMessage::Alert(alert) => effects.store.insert_alert(node_id, at, alert).await,
            AgentMessage::Health(health) => effects.store.insert_health(node_id, at, health).await,
            _ => Ok(()),
        };
        if let Err(e) = stored {
            effects.metrics.db_error("record");
            tracing::error!(error = %e, node = %node_id, "could not store a {}", message.message_type());
        }
    });
}
