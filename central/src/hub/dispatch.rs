//! Commands on their way to the process that holds their node: to this
//! hub for nodes held here (or for every node when this process is alone:
//! the hub queues for offline ones), to the holding process for nodes held
//! elsewhere. A command for a node nobody holds waits in the store for the
//! node's return.

use std::collections::HashMap;

use nap_core::NodeId;
use nap_core::central::HubInput;

use super::cluster_link::dispatched;
use super::handle::HubHandle;
use crate::cluster::{Dispatch, Holder};

impl HubHandle {
    /// Sends stored commands on their way.
    pub async fn dispatch(&self, commands: Vec<Dispatch>) {
        let Some(link) = self.cluster() else {
            self.submit_here(commands);
            return;
        };
        let (here, elsewhere): (Vec<Dispatch>, Vec<Dispatch>) = self.read(|hub| {
            commands
                .into_iter()
                .partition(|c| hub.live_session(c.node_id).is_some())
        });
        self.submit_here(here);
        if elsewhere.is_empty() {
            return;
        }
        let metrics = &self.effects().metrics;
        let nodes: Vec<NodeId> = elsewhere.iter().map(|c| c.node_id).collect();
        let holders = match link.cluster().locate(&nodes).await {
            Ok(holders) => holders,
            Err(e) => {
                metrics.db_error("redis_locate");
                tracing::warn!(error = %e, commands = elsewhere.len(), "cannot locate nodes; their commands wait in the store until they reconnect");
                return;
            }
        };
        let mut by_instance: HashMap<String, Vec<Dispatch>> = HashMap::new();
        for (command, holder) in elsewhere.into_iter().zip(holders) {
            if let Holder::Elsewhere(instance) = holder {
                by_instance.entry(instance).or_default().push(command);
            }
        }
        for (instance, commands) in by_instance {
            let count = commands.len();
            match link.cluster().send(&instance, commands).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!(%instance, count, "the holding instance is gone; its nodes' commands wait in the store until they reconnect")
                }
                Err(e) => {
                    metrics.db_error("redis_publish");
                    tracing::warn!(error = %e, %instance, count, "cannot hand commands over; they wait in the store until their nodes reconnect");
                }
            }
        }
    }

    fn submit_here(&self, commands: Vec<Dispatch>) {
        if !commands.is_empty() {
            self.input(HubInput::Submit(
                commands.into_iter().map(dispatched).collect(),
            ));
        }
    }
}
