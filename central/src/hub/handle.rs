//! The driver's hold on the core's `CentralHub`: one lock around the hub
//! (sessions run in their own tasks and reach it only through here), the
//! routes to the sessions' inboxes, and the loop that performs the hub's
//! outputs. Events for sessions are forwarded unread; every other output is
//! a named effect, performed and answered back as a hub input.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use nap_core::central::{
    Admit, CentralHub, HubConfig, HubInput, HubOutput, Refusal, SessionInput, TokenCheck, Upgrade,
};
use nap_core::{SessionId, Timestamp};
use tokio::sync::{Notify, mpsc};

use super::cluster_link::ClusterLink;
use crate::clock::Clock;
use crate::effects::{Effects, Inbox};
use crate::store::StateChange;

/// A cheap, clonable handle on the hub.
#[derive(Debug, Clone)]
pub struct HubHandle(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    hub: Mutex<CentralHub>,
    clock: Clock,
    /// Woken when the hub's earliest deadline may have moved.
    timers: Notify,
    routes: Mutex<HashMap<SessionId, Inbox>>,
    effects: Effects,
    cluster: Option<ClusterLink>,
}

impl HubHandle {
    /// A hub on `clock`, performing through `effects`; `cluster` when this
    /// process is one of several.
    pub fn start(config: HubConfig, effects: Effects, cluster: Option<ClusterLink>) -> Self {
        let clock = effects.clock;
        let mut hub = CentralHub::new(config);
        hub.handle_input(clock.now(), HubInput::WallClock(clock.wall()));
        let handle = Self(Arc::new(Inner {
            hub: Mutex::new(hub),
            clock,
            timers: Notify::new(),
            routes: Mutex::new(HashMap::new()),
            effects,
            cluster,
        }));
        tokio::spawn(handle.clone().run_timers());
        handle
    }

    pub fn clock(&self) -> Clock {
        self.0.clock
    }

    pub fn effects(&self) -> &Effects {
        &self.0.effects
    }

    pub(crate) fn cluster(&self) -> Option<&ClusterLink> {
        self.0.cluster.as_ref()
    }

    /// Gives the hub an input now, then performs what it asks for.
    pub fn input(&self, input: HubInput) {
        self.with(|hub, now| hub.handle_input(now, input));
    }

    /// Screens an upgrade before anything is spent on it (429 when its
    /// address failed too often lately).
    pub fn screen(&self) -> Option<Refusal> {
        let backlog = self.0.effects.store_backlog();
        self.with(|hub, now| hub.screen(now, backlog))
    }

    /// The answer when handshakes are saturated (503).
    pub fn busy(&self) -> Refusal {
        self.with(|hub, now| hub.busy(now))
    }

    /// The hub's verdict on an upgrade.
    pub fn admit(&self, upgrade: &Upgrade) -> Admit {
        self.with(|hub, now| hub.admit(now, upgrade))
    }

    /// Checks a node token for a download (no `jti` spent).
    pub fn authorize(&self, peer: Option<IpAddr>, token: Option<&TokenCheck>) -> Option<Refusal> {
        self.with(|hub, now| hub.authorize(now, peer, token))
    }

    /// A look at the hub, changing nothing.
    pub fn read<T>(&self, f: impl FnOnce(&CentralHub) -> T) -> T {
        f(&self.lock())
    }

    /// Where the hub's events for this session go.
    pub fn register(&self, session_id: SessionId, inbox: Inbox) {
        self.routes().insert(session_id, inbox);
    }

    pub fn unregister(&self, session_id: SessionId) {
        self.routes().remove(&session_id);
    }

    /// Runs `f` on the hub with the current time, then performs its outputs
    /// (outside the lock).
    fn with<T>(&self, f: impl FnOnce(&mut CentralHub, Timestamp) -> T) -> T {
        let (value, outputs) = {
            let mut hub = self.lock();
            let now = self.0.clock.now();
            hub.handle_input(now, HubInput::WallClock(self.0.clock.wall()));
            let value = f(&mut hub, now);
            (
                value,
                std::iter::from_fn(|| hub.poll_output()).collect::<Vec<_>>(),
            )
        };
        // What the hub started at one instant is stored and sent as one.
        let mut starts = Vec::new();
        for output in outputs {
            self.perform(output, &mut starts);
        }
        if !starts.is_empty() {
            tokio::spawn(super::rollouts::start_targets(self.clone(), starts));
        }
        self.0.timers.notify_one();
        value
    }

    /// The hub (a panic elsewhere while holding it leaves it usable: its
    /// state is whole between calls).
    fn lock(&self) -> MutexGuard<'_, CentralHub> {
        self.0.hub.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn routes(&self) -> MutexGuard<'_, HashMap<SessionId, Inbox>> {
        self.0.routes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn perform(&self, output: HubOutput, starts: &mut Vec<super::rollouts::TargetStart>) {
        let effects = &self.0.effects;
        match output {
            HubOutput::ToSession { session_id, event } => {
                let inbox = self.routes().get(&session_id).cloned();
                // Fails only when the session has just ended; the hub
                // hears of that end and settles what the event carried.
                if let Some(inbox) = inbox {
                    let _ = inbox.send(Box::new(SessionInput::FromHub(event)));
                }
            }
            HubOutput::StatusChanged {
                node_id,
                status,
                reason,
            } => effects.state_change(StateChange::Status {
                node_id,
                status,
                reason,
                at: effects.clock.wall(),
            }),
            HubOutput::CommandChanged {
                request_id, state, ..
            } => effects.state_change(StateChange::Command {
                request_id,
                state,
                at: effects.clock.wall(),
            }),
            HubOutput::RecordResult {
                session_id,
                node_id,
                result,
            } => {
                let hub = self.clone();
                tokio::spawn(async move {
                    let record = hub
                        .0
                        .effects
                        .record_result(node_id, (*result).clone())
                        .await;
                    hub.input(HubInput::ResultRecorded {
                        session_id,
                        node_id,
                        result,
                        record,
                    });
                });
            }
            HubOutput::Alarm(alarm) => effects.alarm(alarm),
            HubOutput::ExpireQueued { created_before } => {
                let effects = effects.clone();
                tokio::spawn(async move { effects.expire_queued(created_before).await });
            }
            HubOutput::LoadOpenCommands { sessions } => {
                super::cluster_tasks::sweep(self.clone(), sessions);
            }
            HubOutput::Claim {
                node_id,
                session_id,
            } => match &self.0.cluster {
                Some(cluster) => cluster.claim(node_id, session_id),
                None => tracing::error!(node = %node_id, "a claim without a cluster"),
            },
            HubOutput::Vacate {
                node_id,
                session_id,
            } => self.answer_presence(node_id, Some(session_id)),
            HubOutput::Locate { node_id } => self.answer_presence(node_id, None),
            HubOutput::ApprovalDecided {
                request_id,
                node_id,
                person,
                decision,
                verdict,
            } => {
                let effects = effects.clone();
                tokio::spawn(async move {
                    super::approvals::record_decision(
                        &effects, request_id, node_id, &person, &decision, &verdict,
                    )
                    .await;
                });
            }
            HubOutput::RolloutStart {
                rollout_id: _,
                node_id,
                request_id,
                requester,
                message,
                timeout,
            } => starts.push(super::rollouts::TargetStart {
                node_id,
                request_id,
                requester,
                message,
                timeout,
            }),
            HubOutput::RolloutChanged { rollout_id, state } => {
                effects.state_change(StateChange::Rollout {
                    rollout_id,
                    state,
                    at: effects.clock.wall(),
                });
            }
            HubOutput::RolloutTargetChanged {
                rollout_id,
                node_id,
                state,
            } => effects.state_change(StateChange::RolloutTarget {
                rollout_id,
                node_id,
                state,
                at: effects.clock.wall(),
            }),
            HubOutput::RolloutControlled {
                rollout_id,
                control,
                verdict,
            } => {
                tokio::spawn(super::rollouts::record_control(
                    self.clone(),
                    rollout_id,
                    control,
                    verdict,
                ));
            }
        }
    }

    /// Asks presence who holds the node (clearing the ended session's entry
    /// first when there is one) and tells the hub.
    fn answer_presence(&self, node_id: nap_core::NodeId, vacated: Option<SessionId>) {
        let hub = self.clone();
        tokio::spawn(async move {
            let presence = match hub.cluster() {
                Some(cluster) => cluster.presence(node_id, vacated).await,
                None => None,
            };
            hub.input(match vacated {
                Some(session_id) => HubInput::Vacated {
                    node_id,
                    session_id,
                    presence,
                },
                None => HubInput::Located { node_id, presence },
            });
        });
    }

    /// Fires the hub's timers.
    async fn run_timers(self) {
        loop {
            let next = self.lock().poll_timeout();
            match next {
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(self.0.clock.instant(at).into()) => {
                            self.with(|hub, now| hub.handle_timeout(now));
                        }
                        () = self.0.timers.notified() => {}
                    }
                }
                None => self.0.timers.notified().await,
            }
        }
    }
}

/// A session's inbox with room for what the hub and the effects send it.
pub fn inbox() -> (Inbox, mpsc::UnboundedReceiver<Box<SessionInput>>) {
    mpsc::unbounded_channel()
}
