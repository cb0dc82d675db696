//! Presence and the notices between central processes, in Redis
//! (DESIGN.md §5). Redis holds which process, and which of its sessions,
//! holds each node, with a time to live the holder keeps refreshing, and
//! carries notices over pub/sub: a node's claim by the process it has just
//! connected to, and commands for a node that another process holds.
//!
//! This module only talks to Redis. What a claim or a vacated presence
//! means is the hub's decision (nap-core); the driver turns answers into hub
//! inputs. The store stays the authority on commands: a process that takes
//! a node claims it here first and then loads the node's open commands; a
//! process that submits a command writes it to the store first and then
//! reads presence, so whichever comes second sees the other's write.
//!
//! Redis going away does not stop central: admissions and local commands go
//! on, presence is written again by the next refresh, and commands for nodes
//! on other processes wait in the store until their nodes reconnect.

use std::sync::Arc;
use std::time::Duration;

use nap_core::central::Presence;
use nap_core::central::approval::{ApprovalRefusal, Decided, Decision, Person};
use nap_core::central::rollout::RolloutState;
use nap_core::central::{ControlRefusal, RolloutControl};
use nap_core::wire::CentralMessage;
use nap_core::{NodeId, RequestId, RolloutId, SessionId};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};

/// How long a presence entry lives without a refresh. Holders refresh every
/// third of it, so an instance that dies leaves entries for at most this long.
pub const PRESENCE_TTL: Duration = Duration::from_secs(60);

/// Keys per refresh call and per presence lookup.
const CHUNK: usize = 1000;

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

/// Takes the lease KEYS[1] for ARGV[1] for ARGV[2] ms, or keeps it: 2 when
/// taken now, 1 when kept, 0 when another holds it.
const LEASE: &str = r"
local held = redis.call('GET', KEYS[1])
if held == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
elseif not held then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
return 0
";

/// What asking for a lease found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// This instance has just taken it.
    Taken,
    /// This instance held it and keeps it.
    Kept,
    /// Another instance holds it.
    HeldElsewhere,
}

/// A command on its way to the instance that holds its node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dispatch {
    pub node_id: NodeId,
    pub request_id: RequestId,
    pub message: CentralMessage,
    pub timeout_ms: u64,
    /// v0.2: its approval request, when it needs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<crate::store::StoredApproval>,
}

/// What instances tell each other.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Notice {
    /// `instance` has just taken the node.
    Claimed { instance: String, node_id: NodeId },
    /// Commands for nodes the receiving instance holds.
    Commands { commands: Vec<Dispatch> },
    /// v0.2: a decision on a command of a node the receiving instance
    /// holds (its hub decides); the verdict goes back to `from`.
    Decide {
        from: String,
        request_id: RequestId,
        person: Person,
        decision: Decision,
    },
    /// v0.2: the verdict on a decision sent with [`Notice::Decide`].
    Decided {
        request_id: RequestId,
        person: String,
        verdict: Result<Decided, ApprovalRefusal>,
    },
    /// v0.3, to the instance driving the rollouts: one was stored; load it
    /// and start it.
    RolloutStored { rollout_id: RolloutId },
    /// v0.3, to the instance driving the rollouts: an operator's control;
    /// the verdict goes back to `from`.
    ControlRollout {
        from: String,
        rollout_id: RolloutId,
        control: RolloutControl,
    },
    /// v0.3: the verdict on a control sent with [`Notice::ControlRollout`].
    RolloutControlled {
        rollout_id: RolloutId,
        control: RolloutControl,
        verdict: Result<RolloutState, ControlRefusal>,
    },
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

impl Holder {
    /// What the hub needs to know of it.
    pub fn presence(&self) -> Presence {
        match self {
            Self::Nobody => Presence::Nobody,
            Self::Here(session) => Presence::Here(*session),
            Self::Elsewhere(_) => Presence::Elsewhere,
        }
    }
}

/// This instance's handle on the cluster.
#[derive(Clone)]
pub struct Cluster {
    instance: String,
    prefix: String,
    pub(super) client: redis::Client,
    conn: ConnectionManager,
    refresh: Arc<redis::Script>,
    vacate: Arc<redis::Script>,
    lease: Arc<redis::Script>,
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
            lease: Arc::new(redis::Script::new(LEASE)),
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

    pub(super) fn claims_channel(&self) -> String {
        format!("{}:claims", self.prefix)
    }

    pub(super) fn inbox(&self, instance: &str) -> String {
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
        self.tell(instance, &Notice::Commands { commands }).await
    }

    /// Tells `instance` something; false if no such instance is listening.
    pub async fn tell(&self, instance: &str, notice: &Notice) -> redis::RedisResult<bool> {
        let receivers: i64 = redis::cmd("PUBLISH")
            .arg(self.inbox(instance))
            .arg(encode(notice))
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(receivers > 0)
    }

    fn rollout_lease_key(&self) -> String {
        format!("{}:rollouts:driver", self.prefix)
    }

    /// Takes or keeps the lease on driving the cluster's rollouts for `ttl`.
    pub async fn rollout_lease(&self, ttl: Duration) -> redis::RedisResult<Lease> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let found: i64 = self
            .lease
            .key(self.rollout_lease_key())
            .arg(&self.instance)
            .arg(ttl_ms)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(match found {
            2 => Lease::Taken,
            1 => Lease::Kept,
            _ => Lease::HeldElsewhere,
        })
    }

    /// Gives up the lease on driving the rollouts, if this instance holds it.
    pub async fn release_rollout_lease(&self) -> redis::RedisResult<()> {
        let _: Option<String> = self
            .vacate
            .key(self.rollout_lease_key())
            .arg(&self.instance)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// The instance driving the rollouts, if any.
    pub async fn rollout_driver(&self) -> redis::RedisResult<Option<String>> {
        redis::cmd("GET")
            .arg(self.rollout_lease_key())
            .query_async(&mut self.conn.clone())
            .await
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
}

/// A notice's wire form.
fn encode(notice: &Notice) -> String {
    serde_json::to_string(notice).unwrap_or_default()
}
