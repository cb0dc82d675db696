//! The TimescaleDB path (hypertable, compression, retention, continuous
//! aggregate) against PGlite with TimescaleDB, served over the PostgreSQL
//! wire protocol at `NAP_TEST_TIMESCALE_URL` (.ci/run starts it). The real
//! PostgreSQL server stays the main target; this covers the SQL only.

use nap_central::store::postgres::{PgStore, TelemetryMode};
use nap_central::store::{NodeRecord, Storage};
use nap_core::testing::sample;
use nap_core::wire::Telemetry;
use nap_core::{NodeId, WallTime};

#[tokio::test]
async fn telemetry_is_a_compressed_hypertable_with_retention_and_a_minute_rollup() {
    let Ok(url) = std::env::var("NAP_TEST_TIMESCALE_URL") else {
        assert!(
            std::env::var_os("NAP_REQUIRE_SERVICES").is_none(),
            "NAP_REQUIRE_SERVICES is set but NAP_TEST_TIMESCALE_URL is not"
        );
        eprintln!("SKIPPED the TimescaleDB test: set NAP_TEST_TIMESCALE_URL (see .ci/run)");
        return;
    };
    // PGlite serves one connection at a time: a pool of one.
    let store = PgStore::connect(&url, None, 1)
        .await
        .expect("connect to PGlite");
    store.migrate().await.expect("migrate with TimescaleDB");
    assert_eq!(
        store.telemetry_mode().await.expect("mode"),
        TelemetryMode::Timescale
    );
    let facts = store.timescale_facts().await.expect("facts");
    assert!(facts.hypertable, "telemetry is a hypertable");
    assert!(facts.compression, "compression is enabled");
    assert!(
        facts.jobs.iter().any(|j| j.starts_with("Retention Policy")),
        "{:?}",
        facts.jobs
    );
    // TimescaleDB 2.18+ calls compression the columnstore.
    assert!(
        facts
            .jobs
            .iter()
            .any(|j| j.starts_with("Compression Policy") || j.starts_with("Columnstore Policy")),
        "{:?}",
        facts.jobs
    );
    assert!(
        facts
            .jobs
            .iter()
            .any(|j| j.contains("Refresh Continuous Aggregate")),
        "{:?}",
        facts.jobs
    );
    assert!(facts.continuous_aggregate, "telemetry_1m exists");

    let node = NodeId::from_u128(1);
    let t0 = WallTime::from_unix_millis(1_760_522_400_000).expect("valid");
    store
        .add_node(NodeRecord {
            id: node,
            name: "n1".into(),
            public_key_pem: String::new(),
            labels: Default::default(),
            created_at: t0,
            revoked: false,
            status: None,
            last_seen: None,
            agent_version: None,
        })
        .await
        .expect("node");
    let batch: Vec<Telemetry> = (0..4)
        .map(|m| Telemetry {
            node_id: node,
            timestamp: t0.add_millis(m * 60_000),
            data: sample(10.0, 50.0),
            dropped_samples: 0,
        })
        .collect();
    // PGlite's socket server does not speak COPY; the COPY path is tested on
    // the real PostgreSQL server by the store suite.
    assert_eq!(
        store.insert_telemetry_plain(&batch).await.expect("insert"),
        4
    );
    assert_eq!(
        store.insert_telemetry_plain(&batch).await.expect("replay"),
        0
    );
    let buckets = store
        .query_telemetry(
            node,
            t0,
            t0.add_millis(3_600_000),
            Some(std::time::Duration::from_secs(120)),
        )
        .await
        .expect("query");
    assert_eq!(buckets.len(), 2);
}
