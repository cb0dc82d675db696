//! Protocol events per second handled by one central session and by one
//! agent engine, for ping/pong and telemetry. `cargo bench -p nap-core`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nap_core::agent::{AgentConfig, AgentEngine, AgentInput, ConnectionState};
use nap_core::central::{CentralSession, SessionConfig, SessionInput};
use nap_core::testing::sample;
use nap_core::wire::{AgentMessage, Telemetry};
use nap_core::{NodeId, SessionId, Timestamp, WallTime, encode};

const NODE: NodeId = NodeId::from_u128(0x6f1c_2b9e_8a4d_4c3e_9b7a_2d5e_8f1a_3c47);

fn wall() -> WallTime {
    WallTime::from_unix_millis(1_760_522_400_000).expect("valid")
}

fn session() -> CentralSession {
    // The benchmark measures the engine, not the rate limiter.
    let config = SessionConfig {
        rate_per_sec: u32::MAX / 2,
        rate_burst: u32::MAX / 2,
        ..SessionConfig::default()
    };
    let mut s = CentralSession::new(
        Timestamp::ZERO,
        wall(),
        nap_core::central::Admission {
            node_id: NODE,
            session_id: SessionId::from_u128(1),
            token_expires_at: wall().add_millis(3_600_000_000),
        },
        config,
    );
    while s.poll_output().is_some() {}
    s
}

fn established_agent() -> AgentEngine {
    let mut agent = AgentEngine::new(AgentConfig::new(NODE, 1));
    let now = Timestamp::ZERO;
    agent.handle_input(now, AgentInput::WallClock(wall()));
    agent.handle_input(now, AgentInput::Start);
    agent.handle_input(
        now,
        AgentInput::TokenMinted {
            token: "t".into(),
            lifetime: Duration::from_secs(3600),
        },
    );
    let epoch = agent.epoch();
    agent.handle_input(now, AgentInput::Connected { epoch });
    let welcome = format!(
        r#"{{"type":"welcome","protocolVersion":"nap.v1","sessionId":"9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d","nodeId":"{NODE}","serverTime":"2025-10-15T10:00:00Z","intervals":{{"heartbeat":30000,"telemetry":60000,"health":300000}},"maxMessageBytes":1048576}}"#
    );
    agent.handle_input(
        now,
        AgentInput::Frame {
            epoch,
            text: welcome,
        },
    );
    assert_eq!(agent.state(), ConnectionState::Established {});
    while agent.poll_output().is_some() {}
    agent
}

fn telemetry_text() -> String {
    let message = AgentMessage::Telemetry(Telemetry {
        node_id: NODE,
        timestamp: wall(),
        data: sample(23.5, 50.0),
        dropped_samples: 0,
    });
    encode(&message).expect("encodes")
}

fn central_session(c: &mut Criterion) {
    let mut group = c.benchmark_group("central_session");
    group.throughput(Throughput::Elements(1));
    let ping = r#"{"type":"ping","timestamp":1760522400000}"#.to_owned();
    let mut s = session();
    let mut t = 0u64;
    group.bench_function("ping_to_pong", |b| {
        b.iter(|| {
            t += 1;
            s.handle_input(Timestamp::from_micros(t), SessionInput::Frame(ping.clone()));
            while let Some(o) = s.poll_output() {
                black_box(o);
            }
        });
    });
    let telemetry = telemetry_text();
    let mut s = session();
    group.bench_function("telemetry_to_store", |b| {
        b.iter(|| {
            t += 1;
            s.handle_input(
                Timestamp::from_micros(t),
                SessionInput::Frame(telemetry.clone()),
            );
            while let Some(o) = s.poll_output() {
                black_box(o);
            }
        });
    });
    group.finish();
}

fn agent_engine(c: &mut Criterion) {
    let mut group = c.benchmark_group("agent_engine");
    group.throughput(Throughput::Elements(1));
    let mut agent = established_agent();
    let epoch = agent.epoch();
    let pong = r#"{"type":"pong","timestamp":1760522400000}"#.to_owned();
    let mut t = 0u64;
    group.bench_function("pong_frame", |b| {
        b.iter(|| {
            t += 1;
            agent.handle_input(
                Timestamp::from_micros(t),
                AgentInput::Frame {
                    epoch,
                    text: pong.clone(),
                },
            );
            while let Some(o) = agent.poll_output() {
                black_box(o);
            }
        });
    });
    let mut agent = established_agent();
    let data = sample(23.5, 50.0);
    group.bench_function("telemetry_sample_to_send", |b| {
        b.iter(|| {
            // A minute apart, so each sample has its own timestamp. Nothing
            // acks them here: the buffer fills to its bound, then drops the
            // oldest, so this measures the steady state of a full buffer.
            t += 60_000_000;
            agent.handle_input(
                Timestamp::from_micros(t),
                AgentInput::TelemetrySample(data.clone()),
            );
            while let Some(o) = agent.poll_output() {
                black_box(o);
            }
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = central_session, agent_engine
}
criterion_main!(benches);
