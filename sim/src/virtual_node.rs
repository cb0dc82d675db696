//! A virtual node: the core's agent engine over a real TLS WebSocket, with a
//! synthetic host (telemetry from a seeded random walk, healthy checks,
//! commands that succeed at once). One tokio task per node, no threads.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nap_agent::keys::NodeKey;
use nap_agent::transport::DialOptions;
use nap_core::agent::{
    AgentConfig, AgentEngine, AgentEvent, AgentInput, AgentOutput, CommandOutcome, ConnectionState,
    Task,
};
use nap_core::rng::Prng;
use nap_core::testing::sample;
use nap_core::transport::Epoch;
use nap_core::wire::{CheckStatus, HealthChecks, HealthDetails};
use nap_core::{NodeId, RequestId, Timestamp, WallTime};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// Round-trip times are counted per millisecond up to this; beyond, in one bucket.
pub const RTT_BUCKETS: usize = 2001;

/// Shared counters the demo and load reports read.
#[derive(Debug)]
pub struct Fleet {
    pub connected: AtomicUsize,
    /// Telemetry samples taken by all nodes.
    pub samples: AtomicU64,
    /// Per node, samples taken.
    pub samples_per_node: Vec<AtomicU64>,
    /// Per node, samples not yet acked by central (updated every loop turn).
    pub buffered: Vec<AtomicUsize>,
    /// Stop taking samples (the load test's final phase, to drain the buffers).
    pub quiesce: AtomicBool,
    /// Dials made (handshakes attempted) by all nodes.
    pub dials: AtomicU64,
    /// Dials that failed (refused, reset, 503…).
    pub failed_dials: AtomicU64,
    /// Dials started and not yet answered.
    pub handshaking: AtomicUsize,
    /// The longest backoff any node scheduled, in milliseconds.
    pub max_backoff_ms: AtomicU64,
    /// Ping round trips, by millisecond.
    pub rtt: Vec<AtomicU64>,
    /// Bytes on the wire (TLS records), both directions.
    pub wire: Arc<nap_agent::transport::WireBytes>,
    /// Commands that reached a node: request id and wall-clock millisecond.
    pub commands: Mutex<Vec<(RequestId, i64)>>,
    /// Whether nodes with a [`Chaos`] setting inflict their faults now.
    pub chaos_on: AtomicBool,
    /// Transports cut and stalls begun by the chaos scenario.
    pub cuts: AtomicU64,
    pub stalls: AtomicU64,
}

impl Fleet {
    /// Counters for `nodes` nodes.
    pub fn new(nodes: usize) -> Self {
        Self {
            connected: AtomicUsize::new(0),
            samples: AtomicU64::new(0),
            samples_per_node: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
            buffered: (0..nodes).map(|_| AtomicUsize::new(0)).collect(),
            quiesce: AtomicBool::new(false),
            dials: AtomicU64::new(0),
            failed_dials: AtomicU64::new(0),
            handshaking: AtomicUsize::new(0),
            max_backoff_ms: AtomicU64::new(0),
            rtt: (0..RTT_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            wire: Arc::default(),
            commands: Mutex::new(Vec::new()),
            chaos_on: AtomicBool::new(false),
            cuts: AtomicU64::new(0),
            stalls: AtomicU64::new(0),
        }
    }
}

/// Faults a node inflicts on its own transport (the `chaos` scenario).
#[derive(Debug, Clone, Copy)]
pub struct Chaos {
    /// Mean time between faults, per node.
    pub mean_interval: Duration,
}

/// One node's identity and where it connects.
#[derive(Debug)]
pub struct NodeSpec {
    pub index: usize,
    pub node_id: NodeId,
    pub key: NodeKey,
    pub url: String,
    pub tls: Arc<rustls::ClientConfig>,
    pub seed: u64,
    pub dial: DialOptions,
    pub chaos: Option<Chaos>,
}

/// The node's transport as its driver holds it.
struct Link {
    epoch: Epoch,
    writer: mpsc::Sender<Message>,
    task: JoinHandle<()>,
    /// Frames held back while the link is stalled (chaos), in order.
    held: Vec<Message>,
    stalled_until: Option<Instant>,
}

/// Runs one virtual node until `stop` fires.
pub async fn run(spec: NodeSpec, fleet: Arc<Fleet>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let NodeSpec {
        index,
        node_id,
        key,
        url,
        tls,
        seed,
        dial,
        chaos,
    } = spec;
    let base = Instant::now();
    let now =
        || Timestamp::from_micros(u64::try_from(base.elapsed().as_micros()).unwrap_or(u64::MAX));
    let mut engine = AgentEngine::new(AgentConfig::new(node_id, seed));
    let mut rng = Prng::new(seed);
    let mut cpu = 20.0 + f64::from(u32::try_from(rng.between(0, 30)).unwrap_or(0));
    let (tx, mut rx) = mpsc::channel::<AgentInput>(64);
    let mut link: Option<Link> = None;
    let mut dialing: Option<Epoch> = None;
    let mut established = false;
    let mut next_fault =
        chaos.map(|c| Instant::now() + rng.duration_between(Duration::ZERO, c.mean_interval * 2));
    engine.handle_input(
        now(),
        AgentInput::WallClock(WallTime::from(chrono::Utc::now())),
    );
    engine.handle_input(now(), AgentInput::Start);
    loop {
        while let Some(output) = engine.poll_output() {
            match output {
                AgentOutput::MintToken => {
                    if let Ok(token) = key.token(node_id, "nap-central", Duration::from_secs(3600))
                    {
                        engine.handle_input(
                            now(),
                            AgentInput::TokenMinted {
                                token,
                                lifetime: Duration::from_secs(3600),
                            },
                        );
                    }
                }
                AgentOutput::Dial { epoch, token } => {
                    fleet.dials.fetch_add(1, Ordering::Relaxed);
                    if dialing.replace(epoch).is_none() {
                        fleet.handshaking.fetch_add(1, Ordering::Relaxed);
                    }
                    let (wtx, wrx) = mpsc::channel::<Message>(64);
                    let (tls, url, tx) = (Arc::clone(&tls), url.clone(), tx.clone());
                    let task = tokio::spawn(nap_agent::transport::connect(
                        url,
                        tls,
                        token,
                        epoch,
                        tx,
                        wrx,
                        dial.clone(),
                    ));
                    if let Some(old) = link.replace(Link {
                        epoch,
                        writer: wtx,
                        task,
                        held: Vec::new(),
                        stalled_until: None,
                    }) {
                        old.task.abort();
                    }
                }
                AgentOutput::Send { epoch, message } => {
                    if let (Some(l), Ok(text)) = (&mut link, nap_core::encode(&message))
                        && l.epoch == epoch
                    {
                        let frame = Message::Text(text.into());
                        if l.stalled_until.is_some() {
                            l.held.push(frame);
                        } else {
                            let _ = l.writer.try_send(frame);
                        }
                    }
                }
                AgentOutput::Close { epoch, .. } => {
                    if link.as_ref().is_some_and(|l| l.epoch == epoch)
                        && let Some(l) = link.take()
                    {
                        let _ = l.writer.try_send(Message::Close(None));
                    }
                }
                AgentOutput::SampleTelemetry if fleet.quiesce.load(Ordering::Relaxed) => {}
                AgentOutput::SampleTelemetry => {
                    fleet.samples.fetch_add(1, Ordering::Relaxed);
                    if let Some(n) = fleet.samples_per_node.get(index) {
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                    // A random walk around the node's usual load.
                    let step =
                        f64::from(u32::try_from(rng.between(0, 100)).unwrap_or(50)) / 10.0 - 5.0;
                    cpu = (cpu + step).clamp(1.0, 99.0);
                    let disk = 40.0 + f64::from(u32::try_from(seed % 30).unwrap_or(0));
                    engine.handle_input(
                        now(),
                        AgentInput::TelemetrySample(sample((cpu * 10.0).round() / 10.0, disk)),
                    );
                }
                AgentOutput::CheckHealth
                | AgentOutput::Run {
                    task: Task::HealthCheck { .. },
                    ..
                } => {
                    let checks = HealthChecks {
                        agent: CheckStatus::Ok,
                        containers: CheckStatus::Ok,
                        disk: CheckStatus::Ok,
                        memory: CheckStatus::Ok,
                        database: CheckStatus::Unknown,
                    };
                    let request_id = match output {
                        AgentOutput::Run { request_id, .. } => Some(request_id),
                        _ => None,
                    };
                    if let (Some(request_id), Ok(mut commands)) =
                        (request_id, fleet.commands.lock())
                    {
                        commands.push((request_id, chrono::Utc::now().timestamp_millis()));
                    }
                    engine.handle_input(
                        now(),
                        AgentInput::HealthReport {
                            request_id,
                            checks,
                            details: HealthDetails::default(),
                        },
                    );
                }
                AgentOutput::Run { request_id, .. } => {
                    let at = chrono::Utc::now().timestamp_millis();
                    if let Ok(mut commands) = fleet.commands.lock() {
                        commands.push((request_id, at));
                    }
                    let outcome = CommandOutcome {
                        success: true,
                        exit_code: Some(0),
                        stdout: "ok (virtual node)\n".into(),
                        ..CommandOutcome::default()
                    };
                    engine.handle_input(
                        now(),
                        AgentInput::CommandFinished {
                            request_id,
                            outcome,
                        },
                    );
                }
                AgentOutput::Event(AgentEvent::BackoffScheduled { delay, .. }) => {
                    let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
                    fleet.max_backoff_ms.fetch_max(ms, Ordering::Relaxed);
                }
                AgentOutput::Event(AgentEvent::RoundTrip { rtt_ms }) => {
                    let bucket = usize::try_from(rtt_ms)
                        .unwrap_or(usize::MAX)
                        .min(RTT_BUCKETS - 1);
                    fleet.rtt[bucket].fetch_add(1, Ordering::Relaxed);
                }
                AgentOutput::Kill { .. }
                | AgentOutput::StreamLogs { .. }
                | AgentOutput::Persist
                | AgentOutput::Event(_) => {}
            }
        }
        if let Some(slot) = fleet.buffered.get(index) {
            slot.store(engine.buffered_telemetry(), Ordering::Relaxed);
        }
        let is_established = engine.state() == ConnectionState::Established {};
        if is_established != established {
            established = is_established;
            if established {
                fleet.connected.fetch_add(1, Ordering::Relaxed);
            } else {
                fleet.connected.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let mut deadline = engine
            .poll_timeout()
            .map_or(Duration::from_secs(3600), |t| {
                Duration::from_micros(t.as_micros().saturating_sub(now().as_micros()))
            });
        if let Some(at) = next_fault {
            deadline = deadline.min(at.saturating_duration_since(Instant::now()));
        }
        if let Some(until) = link.as_ref().and_then(|l| l.stalled_until) {
            deadline = deadline.min(until.saturating_duration_since(Instant::now()));
        }
        tokio::select! {
            Some(input) = rx.recv() => {
                if let AgentInput::Connected { epoch } | AgentInput::DialFailed { epoch, .. } = &input
                    && dialing == Some(*epoch)
                {
                    dialing = None;
                    fleet.handshaking.fetch_sub(1, Ordering::Relaxed);
                    if matches!(input, AgentInput::DialFailed { .. }) {
                        fleet.failed_dials.fetch_add(1, Ordering::Relaxed);
                    }
                }
                engine.handle_input(now(), input);
            }
            () = tokio::time::sleep(deadline) => {
                let instant = Instant::now();
                if let Some(l) = &mut link
                    && l.stalled_until.is_some_and(|u| u <= instant)
                {
                    l.stalled_until = None;
                    for frame in l.held.drain(..) {
                        let _ = l.writer.try_send(frame);
                    }
                }
                if let (Some(at), Some(c)) = (next_fault, chaos)
                    && at <= instant
                {
                    next_fault =
                        Some(instant + rng.duration_between(Duration::ZERO, c.mean_interval * 2));
                    if let Some(l) = link.as_mut().filter(|_| fleet.chaos_on.load(Ordering::Relaxed)) {
                        if rng.between(0, 1) == 0 {
                            // The network drops the connection: no close frame.
                            fleet.cuts.fetch_add(1, Ordering::Relaxed);
                            l.task.abort();
                            let epoch = l.epoch;
                            link = None;
                            if dialing.take().is_some() {
                                fleet.handshaking.fetch_sub(1, Ordering::Relaxed);
                                fleet.failed_dials.fetch_add(1, Ordering::Relaxed);
                            }
                            engine.handle_input(now(), AgentInput::Closed { epoch, code: None });
                        } else {
                            // The path stalls: frames wait, then go in order.
                            fleet.stalls.fetch_add(1, Ordering::Relaxed);
                            l.stalled_until = Some(
                                instant + rng.duration_between(Duration::from_secs(1), Duration::from_secs(5)),
                            );
                        }
                    }
                }
                engine.handle_timeout(now());
            }
            _ = stop.changed() => {
                engine.handle_input(now(), AgentInput::Shutdown);
                while let Some(output) = engine.poll_output() {
                    if let AgentOutput::Send { message, .. } = output
                        && let (Some(l), Ok(text)) = (&link, nap_core::encode(&message))
                    {
                        let _ = l.writer.send(Message::Text(text.into())).await;
                    }
                }
                if let Some(l) = link.take() {
                    let _ = l.writer.send(Message::Close(None)).await;
                }
                if established {
                    fleet.connected.fetch_sub(1, Ordering::Relaxed);
                }
                if dialing.is_some() {
                    fleet.handshaking.fetch_sub(1, Ordering::Relaxed);
                }
                return;
            }
        }
    }
}
