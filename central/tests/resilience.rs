//! Graceful shutdown drains agents; a dying database loses nothing: telemetry
//! is acked only once it is durable, and what waited is stored when the
//! database comes back.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use nap_central::AppEvent;
use nap_central::store::Storage;
use nap_core::testing::sample;
use nap_core::wire::{CentralMessage, Telemetry};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test]
async fn shutdown_drains_every_agent_then_closes_with_1001() {
    let central = central("shutdown", |_| {}).await;
    let (_key, mut ws) = connected_node(&central).await;
    let Central { running, dir, .. } = central;
    let stopping = tokio::spawn(running.shutdown());
    match next_message(&mut ws).await {
        CentralMessage::Drain(d) => assert!(d.reconnect_after >= 5_000, "{d:?}"),
        other => panic!("expected drain, got {other:?}"),
    }
    assert_eq!(close_code(&mut ws).await, Some(1001));
    stopping.await.expect("shutdown completes");
    drop(dir);
}

/// A TCP proxy that can be cut (every connection through it dies, new ones
/// are refused) and restored: a database that goes away and comes back.
async fn proxy(target: String, up: Arc<AtomicBool>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            if !up.load(Ordering::SeqCst) {
                continue; // dropped: refused
            }
            let up = Arc::clone(&up);
            let target = target.clone();
            tokio::spawn(async move {
                let Ok(mut outbound) = TcpStream::connect(&target).await else {
                    return;
                };
                let cut = async {
                    while up.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    () = cut => {}
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn telemetry_waits_out_a_database_outage_and_is_acked_only_once_stored() {
    if std::env::var("NAP_TEST_DATABASE_URL").is_err() {
        assert!(
            std::env::var_os("NAP_REQUIRE_SERVICES").is_none(),
            "NAP_REQUIRE_SERVICES is set but NAP_TEST_DATABASE_URL is not"
        );
        eprintln!("SKIPPED the database outage test: it needs PostgreSQL (NAP_TEST_DATABASE_URL)");
        return;
    }
    let up = Arc::new(AtomicBool::new(true));
    let via = proxy("127.0.0.1:5432".into(), Arc::clone(&up)).await;
    let central = central("db_outage", |c| {
        c.db =
            c.db.replace("127.0.0.1:5432", &via.to_string())
                .replace("127.0.0.1/", &format!("{via}/"));
        c.db_pool = 2;
    })
    .await;
    assert!(
        central.running.config.db.contains(&via.to_string()),
        "the store goes through the proxy"
    );
    let key = node_key();
    register(&central, &key).await;
    let mut events = central.events();
    let mut ws = connect(&central, &good_token(&key))
        .await
        .expect("upgraded");
    let _ = next_message(&mut ws).await;

    up.store(false, Ordering::SeqCst);
    let sample_at = nap_core::WallTime::from(chrono::Utc::now());
    send(
        &mut ws,
        Telemetry {
            node_id: key.id,
            timestamp: sample_at,
            data: sample(12.0, 40.0),
            dropped_samples: 0,
        },
    )
    .await;
    // The failure is visible: an event, a metric, a log line.
    wait_for(&mut events, Duration::from_secs(10), |e| {
        matches!(
            e,
            AppEvent::StorageError {
                operation: "insert_telemetry"
            }
        )
    })
    .await;
    let metrics = central.running.metrics().render();
    assert!(
        metrics.contains("nap_db_errors_total{reason=\"insert_telemetry\"}"),
        "{metrics}"
    );

    // The database comes back: the sample is stored, then (and only then) acked.
    up.store(true, Ordering::SeqCst);
    loop {
        if let CentralMessage::Ack(ack) = next_message(&mut ws).await {
            assert_eq!(ack.telemetry, Some(sample_at));
            break;
        }
    }
    let stored = central
        .running
        .store()
        .count_telemetry(key.id)
        .await
        .expect("count");
    assert_eq!(stored, 1, "acked means stored");
}

/// Reads one HTTP request from `socket` (the head, then as much body as
/// content-length says), answers 204, and returns it.
async fn take_request<S>(socket: &mut S) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    let complete = |r: &[u8]| {
        let text = String::from_utf8_lossy(r);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            return false;
        };
        let length = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().to_owned())
            })
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        body.len() >= length
    };
    while !complete(&request) {
        let n = socket.read(&mut buf).await.expect("read");
        assert!(
            n > 0,
            "request ended early: {}",
            String::from_utf8_lossy(&request)
        );
        request.extend_from_slice(&buf[..n]);
    }
    socket
        .write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
        .await
        .expect("answer");
    String::from_utf8_lossy(&request).into_owned()
}

#[tokio::test]
async fn auth_failures_reach_the_admin_webhook() {
    let hook = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", hook.local_addr().expect("addr"));
    let central = central("webhook", |c| c.webhook = Some(url)).await;
    assert_eq!(connect(&central, "not.a.token").await.err(), Some(401));
    let (mut socket, _) = tokio::time::timeout(Duration::from_secs(10), hook.accept())
        .await
        .expect("the webhook is called")
        .expect("accept");
    let text = take_request(&mut socket).await;
    assert!(text.starts_with("POST /hook"), "{text}");
    assert!(text.contains("\"kind\":\"auth_failure\""), "{text}");
    assert!(text.contains("\"reason\":\"algorithm\""), "{text}");
    assert!(text.contains("\"count\":1"), "{text}");
}

#[tokio::test]
async fn the_webhook_speaks_https_checked_against_its_configured_ca() {
    let certs_dir = tempfile::tempdir().expect("dir");
    let certs = nap_central::tls::write_dev_certs(certs_dir.path()).expect("certs");
    let acceptor = tokio_rustls::TlsAcceptor::from(
        nap_central::tls::server_config(&certs.cert, &certs.key).expect("server config"),
    );
    let hook = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = hook.local_addr().expect("addr").port();
    let url = format!("https://localhost:{port}/hook");
    let ca = certs.ca.clone();
    let central = central("webhook_https", |c| {
        c.webhook = Some(url);
        c.webhook_ca = Some(ca);
    })
    .await;
    assert_eq!(connect(&central, "not.a.token").await.err(), Some(401));
    let (socket, _) = tokio::time::timeout(Duration::from_secs(10), hook.accept())
        .await
        .expect("the webhook is called")
        .expect("accept");
    let mut tls = acceptor.accept(socket).await.expect("a TLS client");
    let text = take_request(&mut tls).await;
    assert!(text.starts_with("POST /hook"), "{text}");
    assert!(text.contains("\"kind\":\"auth_failure\""), "{text}");
}

#[tokio::test]
async fn a_webhook_url_central_cannot_use_fails_the_start() {
    let dir = tempfile::tempdir().expect("dir");
    let certs = nap_central::tls::write_dev_certs(dir.path()).expect("certs");
    let config = nap_central::ServeConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        api_listen: "127.0.0.1:0".parse().expect("addr"),
        tls_cert: certs.cert,
        tls_key: certs.key,
        db: format!("sqlite:{}", dir.path().join("c.db").display()),
        webhook: Some("ftp://alerts.example/hook".into()),
        ..nap_central::ServeConfig::default()
    };
    let err = nap_central::runtime::start(config)
        .await
        .expect_err("refused");
    assert!(format!("{err:#}").contains("http or https"), "{err:#}");
}

#[tokio::test]
async fn update_artifacts_are_served_to_authenticated_nodes_only() {
    let artifacts = tempfile::tempdir().expect("dir");
    let dir = artifacts.path().join("nap-agent/0.2.0");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("x86_64-unknown-linux-gnu"), b"binary").expect("write");
    std::fs::write(dir.join("x86_64-unknown-linux-gnu.sig"), b"signature").expect("write");
    let root = artifacts.path().to_owned();
    let central = central("artifacts", |c| c.artifacts = Some(root)).await;
    let key = node_key();
    register(&central, &key).await;
    let get = |path: &'static str, token: Option<String>| {
        let central = &central;
        async move {
            use http_body_util::{BodyExt as _, Empty};
            use hyper_util::rt::TokioIo;
            let tls = tls(central, &[&rustls::version::TLS13]).await.expect("tls");
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .expect("http");
            tokio::spawn(conn);
            let mut req = hyper::Request::get(path).header("host", "localhost");
            if let Some(t) = token {
                req = req.header("authorization", format!("Bearer {t}"));
            }
            let response = sender
                .send_request(
                    req.body(Empty::<hyper::body::Bytes>::new())
                        .expect("request"),
                )
                .await
                .expect("response");
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            (status, body.to_vec())
        }
    };
    let path = "/v1/artifacts/nap-agent/0.2.0/x86_64-unknown-linux-gnu";
    assert_eq!(
        get(path, Some(good_token(&key))).await,
        (200, b"binary".to_vec())
    );
    let sig = "/v1/artifacts/nap-agent/0.2.0/x86_64-unknown-linux-gnu.sig";
    assert_eq!(
        get(sig, Some(good_token(&key))).await,
        (200, b"signature".to_vec())
    );
    assert_eq!(get(path, None).await.0, 401);
    assert_eq!(
        get(
            "/v1/artifacts/nap-agent/..%2F..%2Fetc/passwd",
            Some(good_token(&key))
        )
        .await
        .0,
        400
    );
    assert_eq!(
        get(
            "/v1/artifacts/nap-agent/0.3.0/x86_64-unknown-linux-gnu",
            Some(good_token(&key))
        )
        .await
        .0,
        404
    );
}

#[tokio::test]
async fn approval_requests_and_decisions_reach_the_admin_webhook() {
    let hook = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", hook.local_addr().expect("addr"));
    let central = central("webhook_approval", |c| c.webhook = Some(url)).await;
    let key = node_key();
    register(&central, &key).await;
    let mut ws = connect_speaking(
        &central,
        central.running.agent_addr,
        &good_token(&key),
        Some("approval"),
    )
    .await
    .expect("upgraded");
    let _welcome = next_message(&mut ws).await;
    let (alice, bob) = (
        person_token(&central, "alice").await,
        person_token(&central, "bob").await,
    );
    let (status, body) = http(
        "POST",
        &central.api(&format!("/api/v1/nodes/{}/commands", key.id)),
        Some(&alice),
        Some(serde_json::json!({
            "type": "execute", "command": "uptime", "args": [],
            "requiresApproval": true, "reason": "load is high",
        })),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let decide = central.api(&format!(
        "/api/v1/commands/{}/reject",
        body["requestId"].as_str().expect("id")
    ));
    let (status, answer) = http(
        "POST",
        &decide,
        Some(&bob),
        Some(serde_json::json!({ "reason": "not during the sale" })),
    )
    .await;
    assert_eq!(status, 200, "{answer}");

    let mut seen = Vec::new();
    while seen.len() < 2 {
        let (mut socket, _) = tokio::time::timeout(Duration::from_secs(10), hook.accept())
            .await
            .expect("the webhook is called")
            .expect("accept");
        let text = take_request(&mut socket).await;
        let (_, json) = text.split_once("\r\n\r\n").expect("a body");
        let event: serde_json::Value = serde_json::from_str(json).expect("JSON");
        assert_eq!(event["kind"], "approval", "{event}");
        assert_eq!(event["detail"]["requestId"], body["requestId"], "{event}");
        seen.push(event["detail"].clone());
    }
    assert_eq!(seen[0]["event"], "requested");
    assert_eq!(seen[0]["requester"], "alice");
    assert_eq!(seen[0]["reason"], "load is high");
    assert_eq!(seen[1]["event"], "reject");
    assert_eq!(seen[1]["person"], "bob");
    assert_eq!(seen[1]["reason"], "not during the sale");
    assert_eq!(seen[1]["outcome"], "rejected");
}
