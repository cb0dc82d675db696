//! A virtual node: the core's agent engine over a real TLS WebSocket, with a
//! synthetic host (telemetry from a seeded random walk, healthy checks,
//! commands that succeed at once). One tokio task per node, no threads.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nap_agent::keys::NodeKey;
use nap_core::agent::{
    AgentConfig, AgentEngine, AgentInput, AgentOutput, CommandOutcome, ConnectionState,
};
use nap_core::rng::Prng;
use nap_core::testing::sample;
use nap_core::wire::{CheckStatus, HealthChecks, HealthDetails};
use nap_core::{NodeId, Timestamp, WallTime};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// Shared counters the demo and load reports read.
#[derive(Debug, Default)]
pub struct Fleet {
    pub connected: AtomicUsize,
    /// Telemetry samples taken by all nodes.
    pub samples: std::sync::atomic::AtomicU64,
    /// Per node, samples not yet acked by central (updated every loop turn).
    pub buffered: Vec<AtomicUsize>,
    /// Stop taking samples (the load test's final phase, to drain the buffers).
    pub quiesce: std::sync::atomic::AtomicBool,
    /// Dials made (handshakes attempted) by all nodes.
    pub dials: std::sync::atomic::AtomicU64,
    /// The longest backoff any node scheduled, in milliseconds.
    pub max_backoff_ms: std::sync::atomic::AtomicU64,
}

impl Fleet {
    /// Counters for `nodes` nodes.
    pub fn new(nodes: usize) -> Self {
        Self {
            buffered: (0..nodes).map(|_| AtomicUsize::new(0)).collect(),
            ..Self::default()
        }
    }
}

/// Runs one virtual node until `stop` fires.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    index: usize,
    node_id: NodeId,
    key: NodeKey,
    url: String,
    tls: Arc<rustls::ClientConfig>,
    seed: u64,
    fleet: Arc<Fleet>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let base = Instant::now();
    let now =
        || Timestamp::from_micros(u64::try_from(base.elapsed().as_micros()).unwrap_or(u64::MAX));
    let mut engine = AgentEngine::new(AgentConfig::new(node_id, seed));
    let mut rng = Prng::new(seed);
    let mut cpu = 20.0 + f64::from(u32::try_from(rng.between(0, 30)).unwrap_or(0));
    let (tx, mut rx) = mpsc::channel::<AgentInput>(64);
    let mut writer: Option<(nap_core::transport::Epoch, mpsc::Sender<Message>)> = None;
    let mut established = false;
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
                    let (wtx, wrx) = mpsc::channel::<Message>(64);
                    writer = Some((epoch, wtx));
                    let (tls, url, tx) = (Arc::clone(&tls), url.clone(), tx.clone());
                    tokio::spawn(nap_agent::transport::connect(
                        url, tls, token, epoch, tx, wrx,
                    ));
                }
                AgentOutput::Send { epoch, message } => {
                    if let (Some((e, w)), Ok(text)) = (&writer, nap_core::encode(&message))
                        && *e == epoch
                    {
                        let _ = w.try_send(Message::Text(text.into()));
                    }
                }
                AgentOutput::Close { epoch, .. } => {
                    if writer.as_ref().is_some_and(|(e, _)| *e == epoch)
                        && let Some((_, w)) = writer.take()
                    {
                        let _ = w.try_send(Message::Close(None));
                    }
                }
                AgentOutput::SampleTelemetry if fleet.quiesce.load(Ordering::Relaxed) => {}
                AgentOutput::SampleTelemetry => {
                    fleet.samples.fetch_add(1, Ordering::Relaxed);
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
                    task: nap_core::agent::Task::HealthCheck { .. },
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
                AgentOutput::Event(nap_core::agent::AgentEvent::BackoffScheduled {
                    delay, ..
                }) => {
                    let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
                    fleet.max_backoff_ms.fetch_max(ms, Ordering::Relaxed);
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
        let deadline = engine
            .poll_timeout()
            .map_or(Duration::from_secs(3600), |t| {
                Duration::from_micros(t.as_micros().saturating_sub(now().as_micros()))
            });
        tokio::select! {
            Some(input) = rx.recv() => engine.handle_input(now(), input),
            () = tokio::time::sleep(deadline) => engine.handle_timeout(now()),
            _ = stop.changed() => {
                engine.handle_input(now(), AgentInput::Shutdown);
                while let Some(output) = engine.poll_output() {
                    if let AgentOutput::Send { message, .. } = output
                        && let (Some((_, w)), Ok(text)) = (&writer, nap_core::encode(&message))
                    {
                        let _ = w.send(Message::Text(text.into())).await;
                    }
                }
                if let Some((_, w)) = writer.take() {
                    let _ = w.send(Message::Close(None)).await;
                }
                if established {
                    fleet.connected.fetch_sub(1, Ordering::Relaxed);
                }
                return;
            }
        }
    }
}
