//! The cluster's notices as a stream: subscribes to the claims channel and
//! this process's inbox, and subscribes again whenever Redis comes back.

use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::sync::mpsc;

use super::presence::{Cluster, Notice};
use crate::metrics::Metrics;

/// Notices waiting for the hub.
const QUEUE: usize = 4096;

/// Notices from other processes (and this one's own claims: the receiver
/// tells them apart by instance).
pub fn listen(cluster: Cluster, metrics: std::sync::Arc<Metrics>) -> mpsc::Receiver<Notice> {
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(250);
        loop {
            match subscribe(&cluster).await {
                Ok(mut pubsub) => {
                    delay = Duration::from_millis(250);
                    let mut messages = pubsub.on_message();
                    while let Some(message) = messages.next().await {
                        match serde_json::from_slice::<Notice>(message.get_payload_bytes()) {
                            Ok(notice) => {
                                if tx.send(notice).await.is_err() {
                                    return;
                                }
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "an unreadable notice on the cluster channel")
                            }
                        }
                    }
                    tracing::warn!("the Redis subscription ended; subscribing again");
                }
                Err(e) => {
                    metrics.db_error("redis_subscribe");
                    tracing::warn!(error = %e, "cannot subscribe to Redis; retrying in {delay:?}");
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    });
    rx
}

async fn subscribe(cluster: &Cluster) -> redis::RedisResult<redis::aio::PubSub> {
    let mut pubsub = cluster.client.get_async_pubsub().await?;
    pubsub.subscribe(cluster.claims_channel()).await?;
    pubsub.subscribe(cluster.inbox(cluster.instance())).await?;
    Ok(pubsub)
}
