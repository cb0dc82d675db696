//! What the store tells the hub: commands open when this process started,
//! and revocations (the CLI writes them to the store directly, from any
//! process), turned into hub inputs.

use std::time::Duration;

use nap_core::central::HubInput;

use super::cluster_link::submission;
use super::handle::HubHandle;
use crate::store::{Storage, StoreResult};

impl HubHandle {
    /// Hands the hub the commands that were queued or sent when central
    /// last stopped. One of several processes restores nothing: it loads a
    /// node's open commands when it takes the node.
    pub async fn restore_commands(&self) -> StoreResult<usize> {
        if self.cluster().is_some() {
            return Ok(0);
        }
        let store = &self.effects().store;
        let open = store.open_commands().await?;
        let count = open.len();
        let mut commands = Vec::with_capacity(count);
        for command in open {
            let known = matches!(store.get_node(command.node_id).await?, Some(n) if !n.revoked);
            commands.push(submission(command, known));
        }
        self.input(HubInput::Submit(commands));
        Ok(count)
    }

    /// Closes the live sessions of revoked nodes within a second or two.
    pub(crate) fn watch_revocations(&self) {
        let hub = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                every.tick().await;
                match hub.effects().store.revoked_nodes().await {
                    Ok(revoked) => {
                        for node_id in revoked {
                            if hub.read(|h| h.live_session(node_id).is_some()) {
                                tracing::info!(node = %node_id, "node revoked: closing its session with 4003");
                                hub.input(HubInput::Revoke(node_id));
                            }
                        }
                    }
                    Err(e) => {
                        hub.effects().metrics.db_error("revoked_nodes");
                        tracing::warn!(error = %e, "could not read revocations");
                    }
                }
            }
        });
    }
}
