//! Several central processes as one (DESIGN.md §5). Redis holds presence —
//! which instance, and which of its sessions, holds each node, with a time
//! to live the holder keeps refreshing — and carries notices between
//! instances over pub/sub: a node's claim by the instance it has just
//! connected to (the previous holder lets go: its session closes with 4002
//! and its hub forgets the node's commands), and commands for a node that
//! another instance holds.
//!
//! The store stays the authority on commands. An instance that takes a node
//! claims it in Redis first and then loads the node's open commands from the
//! store; an instance that submits a command writes it to the store first
//! and then reads presence. Whichever comes second sees the other's write,
//! so a command never waits in the store for a node that is online. The
//! store writes a command's terminal state at most once, whichever instance
//! reports it. Commands for offline nodes wait in the store, not in a hub;
//! a sweep expires the old ones.
//!
//! Redis going away does not stop central: admissions and local commands go
//! on, presence is written again by the next refresh, and commands for nodes
//! on other instances wait in the store until their nodes reconnect.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use nap_core::central::CommandState;
use nap_core::wire::CentralMessage;
use nap_core::{NodeId, RequestId, SessionId, WallTime};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::app::{App, AppEvent};
use crate::store::Storage;

/// How long a presence entry lives without a refresh. Holders refresh every
/// third of it, so an instance that dies leaves entries for at most this long.
const PRESENCE_TTL: Duration = Duration::from_secs(60);

/// Keys per refresh call and per presence lookup.
const CHUNK: usize = 1000;

/// How often the store is swept for commands nobody will deliver.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Sets each key to its value if it is unset, extends it if it holds that
/// value, and leaves it alone if another holder has it.
/// KEYS: presence keys; ARGV[1]: ttl in ms, ARGV[1 + i]: the value for KEYS[i].
const REFRESH: &str = r"
for i, key in ipairs(KEYS) do
  local held = redis.call('GET', key)
  if held == ARGV[i + 1] then
    redis.call('PEXPIRE', key, ARGV[1])
  elseif not held then
    redis.call('SET', key, ARGV[i + 1], 'PX', ARGV[1])
  end
end
return #KEYS
";

/// Deletes the key if it holds ARGV[1]; otherwise returns who holds it.
const VACATE: &str = r"
local held = redis.call('GET', KEYS[1])
if held == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return false
end
return held
";

/// A command on its way to the instance that holds its node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dispatch {
    pub node_id: NodeId,
    pub request_id: RequestId,
    pub message: CentralMessage,
    pub timeout_ms: u64,
}

/// What instances tell each other.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Notice {
    /// `instance` has just taken the node.
    Claimed { instance: String, node_id: NodeId },
    /// Commands for nodes the receiving instance holds.
    Commands { commands: Vec<Dispatch> },
}

/// Where presence says a node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    Nobody,
    /// This instance, on this session.
    Here(SessionId),
    /// Another instance.
    Elsewhere(String),
}

/// This instance's handle on the cluster.
#[derive(Clone)]
pub struct Cluster {
    instance: String,
    prefix: String,
    client: redis::Client,
    conn: ConnectionManager,
    refresh: Arc<redis::Script>,
    vacate: Arc<redis::Script>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("instance", &self.instance)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects to Redis; fails if it cannot be reached now (a misconfigured
    /// URL should stop `serve`, not surface later as lost routes).
    pub async fn connect(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)?;
        // A few quick retries: a wrong URL should fail `serve` in a second;
        // the manager reconnects by itself later on.
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(2)
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(5)));
        let conn = ConnectionManager::new_with_config(client.clone(), config).await?;
        let instance = uuid::Uuid::new_v4().simple().to_string();
        tracing::info!(%instance, "joined the central cluster through Redis");
        Ok(Self {
            instance,
            prefix: prefix.to_owned(),
            client,
            conn,
            refresh: Arc::new(redis::Script::new(REFRESH)),
            vacate: Arc::new(redis::Script::new(VACATE)),
        })
    }

    /// This instance's id.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    fn presence_key(&self, node: NodeId) -> String {
        format!("{}:presence:{node}", self.prefix)
    }

    fn presence_value(&self, session: SessionId) -> String {
        format!("{} {session}", self.instance)
    }

    fn holder(&self, value: Option<String>) -> Holder {
        let Some(value) = value else {
            return Holder::Nobody;
        };
        match value.split_once(' ') {
            Some((instance, session)) if instance == self.instance => {
                session.parse().map_or(Holder::Nobody, Holder::Here)
            }
            Some((instance, _)) => Holder::Elsewhere(instance.to_owned()),
            None => Holder::Nobody,
        }
    }

    fn claims_channel(&self) -> String {
        format!("{}:claims", self.prefix)
    }

    fn inbox(&self, instance: &str) -> String {
        format!("{}:instance:{instance}", self.prefix)
    }

    /// Records that this instance holds these nodes on these sessions, and
    /// tells the others (a previous holder lets go). One round trip.
    pub async fn claim(&self, sessions: &[(NodeId, SessionId)]) -> redis::RedisResult<()> {
        let ttl_ms = u64::try_from(PRESENCE_TTL.as_millis()).unwrap_or(u64::MAX);
        let mut pipe = redis::pipe();
        for (node, session) in sessions {
            let notice = Notice::Claimed {
                instance: self.instance.clone(),
                node_id: *node,
            };
            pipe.cmd("SET")
                .arg(self.presence_key(*node))
                .arg(self.presence_value(*session))
                .arg("PX")
                .arg(ttl_ms)
                .ignore()
                .publish(self.claims_channel(), encode(&notice))
                .ignore();
        }
        pipe.query_async::<()>(&mut self.conn.clone()).await
    }

    /// The session has ended: removes the presence entry if it is still
    /// this session's, and says who holds the node otherwise.
    pub async fn vacate(&self, node: NodeId, session: SessionId) -> redis::RedisResult<Holder> {
        let held: Option<String> = self
            .vacate
            .key(self.presence_key(node))
            .arg(self.presence_value(session))
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(self.holder(held))
    }

    /// Where each node is, in order.
    pub async fn locate(&self, nodes: &[NodeId]) -> redis::RedisResult<Vec<Holder>> {
        let mut holders = Vec::with_capacity(nodes.len());
        for chunk in nodes.chunks(CHUNK) {
            let keys: Vec<String> = chunk.iter().map(|n| self.presence_key(*n)).collect();
            let values: Vec<Option<String>> = redis::cmd("MGET")
                .arg(keys)
                .query_async(&mut self.conn.clone())
                .await?;
            holders.extend(values.into_iter().map(|v| self.holder(v)));
        }
        Ok(holders)
    }

    /// Hands commands to `instance`; false if no such instance is listening.
    pub async fn send(&self, instance: &str, commands: Vec<Dispatch>) -> redis::RedisResult<bool> {
        let receivers: i64 = redis::cmd("PUBLISH")
            .arg(self.inbox(instance))
            .arg(encode(&Notice::Commands { commands }))
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(receivers > 0)
    }

    /// Keeps this instance's presence entries alive (and writes back any
    /// that Redis lost), without taking a node another instance holds.
    pub async fn refresh(&self, live: &[(NodeId, SessionId)]) -> redis::RedisResult<()> {
        let ttl_ms = u64::try_from(PRESENCE_TTL.as_millis()).unwrap_or(u64::MAX);
        for chunk in live.chunks(CHUNK) {
            let mut call = self.refresh.prepare_invoke();
            call.arg(ttl_ms);
            for (node, session) in chunk {
                call.key(self.presence_key(*node))
                    .arg(self.presence_value(*session));
            }
            call.invoke_async::<i64>(&mut self.conn.clone()).await?;
        }
        Ok(())
    }

    /// Consumes a token id across the cluster; false if any instance has
    /// seen it. Kept until the token expires (plus the allowed skew).
    pub async fn consume_token_id(
        &self,
        jti: &str,
        expires_at: WallTime,
        skew: Duration,
    ) -> redis::RedisResult<bool> {
        let until = expires_at
            .unix_millis()
            .saturating_add(i64::try_from(skew.as_millis()).unwrap_or(i64::MAX));
        let set: Option<String> = redis::cmd("SET")
            .arg(format!("{}:jti:{jti}", self.prefix))
            .arg(1)
            .arg("NX")
            .arg("PXAT")
            .arg(until)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(set.is_some())
    }
}

fn encode(notice: &Notice) -> String {
    serde_json::to_string(notice).unwrap_or_default()
}

/// Sessions started here, waiting to be claimed.
pub type TakeOvers = mpsc::Sender<(NodeId, SessionId)>;

/// Admissions claimed and loaded per batch.
const TAKE_OVER_BATCH: usize = 512;

/// Starts the take-overs, the listener, the presence refresher and the
/// store sweep.
pub fn start(app: &Arc<App>, cluster: &Cluster, takeovers: mpsc::Receiver<(NodeId, SessionId)>) {
    tokio::spawn(take_overs(Arc::clone(app), cluster.clone(), takeovers));
    tokio::spawn(listen(Arc::clone(app), cluster.clone()));
    tokio::spawn(refresh_presence(Arc::clone(app), cluster.clone()));
    tokio::spawn(sweep(Arc::clone(app)));
}

/// Claims nodes whose sessions have started here and loads their open
/// commands from the store — in that order (see the module's comment). What
/// queued up meanwhile goes together: a fleet reconnecting costs one Redis
/// round trip and one query per batch, not one of each per node.
async fn take_overs(app: Arc<App>, cluster: Cluster, mut rx: mpsc::Receiver<(NodeId, SessionId)>) {
    let mut batch = Vec::with_capacity(TAKE_OVER_BATCH);
    while rx.recv_many(&mut batch, TAKE_OVER_BATCH).await > 0 {
        if let Err(e) = cluster.claim(&batch).await {
            app.metrics.db_error("redis_claim");
            tracing::warn!(error = %e, nodes = batch.len(), "cannot claim nodes in Redis; the next presence refresh will");
        }
        let nodes: Vec<NodeId> = batch.iter().map(|(n, _)| *n).collect();
        let mut delay = Duration::from_millis(100);
        let open = loop {
            match app.store.open_commands_for(nodes.clone()).await {
                Ok(open) => break open,
                Err(e) => {
                    app.metrics.db_error("open_commands");
                    tracing::error!(error = %e, nodes = nodes.len(), "cannot load open commands; retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        };
        app.submit_open(&batch, open);
        for (node_id, session_id) in batch.drain(..) {
            app.emit(AppEvent::TakenOver {
                node_id,
                session_id,
            });
        }
    }
}

/// Receives claims and commands, resubscribing after Redis comes back.
async fn listen(app: Arc<App>, cluster: Cluster) {
    let mut delay = Duration::from_millis(250);
    loop {
        match subscribe(&cluster).await {
            Ok(mut pubsub) => {
                delay = Duration::from_millis(250);
                let mut messages = pubsub.on_message();
                while let Some(message) = messages.next().await {
                    on_notice(&app, &cluster, message.get_payload_bytes()).await;
                }
                tracing::warn!("the Redis subscription ended; subscribing again");
            }
            Err(e) => {
                app.metrics.db_error("redis_subscribe");
                tracing::warn!(error = %e, "cannot subscribe to Redis; retrying in {delay:?}");
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

async fn subscribe(cluster: &Cluster) -> redis::RedisResult<redis::aio::PubSub> {
    let mut pubsub = cluster.client.get_async_pubsub().await?;
    pubsub.subscribe(cluster.claims_channel()).await?;
    pubsub.subscribe(cluster.inbox(&cluster.instance)).await?;
    Ok(pubsub)
}

async fn on_notice(app: &Arc<App>, cluster: &Cluster, payload: &[u8]) {
    match serde_json::from_slice::<Notice>(payload) {
        Ok(Notice::Claimed { instance, node_id }) if instance != cluster.instance => {
            let live_here = app.lock_hub().live_session(node_id).is_some();
            // A node that left for another instance and came straight back
            // must not be sent away by the older claim: ask who holds it now.
            if live_here {
                match cluster.locate(&[node_id]).await {
                    Ok(holders) if matches!(holders.first(), Some(Holder::Here(_))) => return,
                    Ok(_) => {}
                    Err(e) => {
                        app.metrics.db_error("redis_locate");
                        tracing::warn!(error = %e, node = %node_id, "cannot confirm a claim; honouring it");
                    }
                }
                tracing::info!(node = %node_id, %instance, "node taken by another instance: closing its session here with 4002");
            }
            app.with_hub(|hub, _| hub.release(node_id));
        }
        Ok(Notice::Claimed { .. }) => {}
        Ok(Notice::Commands { commands }) => app.submit_here(commands),
        Err(e) => tracing::warn!(error = %e, "an unreadable notice on the cluster channel"),
    }
}

/// Refreshes the presence of every node held here, every third of its TTL.
async fn refresh_presence(app: Arc<App>, cluster: Cluster) {
    let mut every = tokio::time::interval(PRESENCE_TTL / 3);
    loop {
        every.tick().await;
        let live: Vec<(NodeId, SessionId)> = app.lock_hub().live_sessions().collect();
        if let Err(e) = cluster.refresh(&live).await {
            app.metrics.db_error("redis_refresh");
            tracing::warn!(error = %e, nodes = live.len(), "cannot refresh presence");
        }
    }
}

/// Expires commands that waited in the store for an offline node longer than
/// their time to live. Every instance sweeps; the store changes each once.
async fn sweep(app: Arc<App>) {
    let ttl = nap_core::central::HubConfig::new("").command_ttl;
    let mut every = tokio::time::interval(SWEEP_EVERY);
    loop {
        every.tick().await;
        let now = app.clock.wall();
        let before = now.add_millis(-i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        match app.store.expire_queued_commands(before, now).await {
            Ok(expired) => {
                for request_id in expired {
                    app.emit(AppEvent::Command {
                        request_id,
                        state: CommandState::Expired,
                    });
                }
            }
            Err(e) => {
                app.metrics.db_error("expire_commands");
                tracing::warn!(error = %e, "cannot expire old queued commands");
            }
        }
    }
}
