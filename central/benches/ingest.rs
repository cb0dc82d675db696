//! Telemetry rows per second through the storage layer, in batches of 5,000
//! as the ingest writer makes them: into PostgreSQL (binary COPY) when
//! `NAP_TEST_DATABASE_URL` is set, and into SQLite.
//! `NAP_TEST_DATABASE_URL=postgres://postgres@127.0.0.1/test cargo bench -p nap-central`

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nap_central::store::postgres::PgStore;
use nap_central::store::sqlite::SqliteStore;
use nap_central::store::{NodeRecord, Storage};
use nap_core::testing::sample;
use nap_core::wire::Telemetry;
use nap_core::{NodeId, WallTime};

const BATCH: usize = 5_000;
const NODES: u128 = 1_000;

fn batch(round: i64) -> Vec<Telemetry> {
    let t0 = WallTime::from_unix_millis(1_760_522_400_000).expect("valid");
    let data = sample(23.5, 50.0);
    (0..BATCH)
        .map(|i| {
            let i = i as u128;
            Telemetry {
                node_id: NodeId::from_u128(i % NODES + 1),
                // Each node reports once a minute: a batch spans five minutes.
                timestamp: t0
                    .add_millis((round * 5 + i64::try_from(i / NODES).unwrap_or(0)) * 60_000),
                data: data.clone(),
                dropped_samples: 0,
            }
        })
        .collect()
}

async fn register(store: &impl Storage) {
    for n in 1..=NODES {
        let _ = store
            .add_node(NodeRecord {
                id: NodeId::from_u128(n),
                name: format!("n{n}"),
                public_key_pem: String::new(),
                labels: Default::default(),
                created_at: WallTime::UNIX_EPOCH,
                revoked: false,
                status: None,
                last_seen: None,
                agent_version: None,
            })
            .await;
    }
}

fn bench_store(c: &mut Criterion, name: &str, rt: &tokio::runtime::Runtime, store: &impl Storage) {
    let mut group = c.benchmark_group("telemetry_ingest");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(20);
    let mut round = 0i64;
    group.bench_function(name, |b| {
        b.iter(|| {
            round += 1;
            let rows = batch(round);
            let inserted = rt.block_on(store.insert_telemetry(&rows)).expect("insert");
            assert_eq!(inserted as usize, BATCH);
        });
    });
    group.finish();
}

fn ingest(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = SqliteStore::open(&dir.path().join("bench.db")).expect("sqlite");
    rt.block_on(async {
        sqlite.migrate().await.expect("migrate");
        register(&sqlite).await;
    });
    bench_store(c, "sqlite", &rt, &sqlite);
    match std::env::var("NAP_TEST_DATABASE_URL") {
        Ok(url) => {
            let pg = rt.block_on(async {
                PgStore::drop_schema(&url, "nap_bench").await.expect("drop");
                let pg = PgStore::connect(&url, Some("nap_bench"), 4)
                    .await
                    .expect("connect");
                pg.migrate().await.expect("migrate");
                register(&pg).await;
                pg
            });
            bench_store(c, "postgres", &rt, &pg);
        }
        Err(_) => eprintln!("SKIPPED the PostgreSQL ingest benchmark: set NAP_TEST_DATABASE_URL"),
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(10)).warm_up_time(Duration::from_secs(2));
    targets = ingest
}
criterion_main!(benches);
