//! The agent endpoint over real TLS on loopback: authentication before the
//! upgrade, TLS 1.3 only, size limits, invalid input, supersede, liveness.

mod common;

use std::time::Duration;

use common::*;
use futures_util::SinkExt as _;
use nap_central::AppEvent;
use nap_central::store::Storage;
use nap_core::wire::{CentralMessage, NodeStatus};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn a_good_token_gets_welcome() {
    let central = central("good_token", |_| {}).await;
    let key = node_key();
    register(&central, &key).await;
    let mut ws = connect(&central, &good_token(&key))
        .await
        .expect("upgraded");
    match next_message(&mut ws).await {
        CentralMessage::Welcome(w) => {
            assert_eq!(w.node_id, key.id);
            assert_eq!(w.protocol_version, "nap.v1");
            assert_eq!(w.intervals.heartbeat, 30_000);
        }
        other => panic!("expected welcome, got {other:?}"),
    }
    send(&mut ws, nap_core::wire::Ping { timestamp: 42 }).await;
    assert!(matches!(next_message(&mut ws).await, CentralMessage::Pong(p) if p.timestamp == 42));
}

#[tokio::test]
async fn every_bad_token_is_refused_with_401_and_audited() {
    let central = central("bad_tokens", |_| {}).await;
    let key = node_key();
    let other = node_key();
    register(&central, &key).await;
    register(&central, &other).await;
    let now = chrono::Utc::now().timestamp();
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = claims(&key);
        f(&mut c);
        sign(&key, &c)
    };
    let header_b64 =
        |h: &str| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, h);
    let claims_b64 = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        claims(&key).to_string(),
    );
    let alg_none = format!(
        "{}.{claims_b64}.",
        header_b64(r#"{"alg":"none","typ":"JWT"}"#)
    );
    let hs256 = {
        // The classic confusion: HMAC keyed with the node's public key.
        let k = jsonwebtoken::EncodingKey::from_secret(key.public_pem.as_bytes());
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims(&key),
            &k,
        )
        .expect("sign")
    };
    let other_key_signed = sign(&other, &claims(&key));
    let replayed = good_token(&key);
    let _first = connect(&central, &replayed)
        .await
        .expect("the first use is fine");
    let cases = [
        (
            "expired",
            with(&|c| {
                c["iat"] = (now - 7200).into();
                c["exp"] = (now - 3600).into();
            }),
        ),
        (
            "future-dated",
            with(&|c| {
                c["iat"] = (now + 600).into();
                c["exp"] = (now + 1200).into();
            }),
        ),
        (
            "over-long lifetime",
            with(&|c| c["exp"] = (now + 7200).into()),
        ),
        (
            "wrong audience",
            with(&|c| c["aud"] = "someone-else".into()),
        ),
        ("wrong scope", with(&|c| c["scope"] = "admin".into())),
        ("alg none", alg_none),
        ("HS256 with the public key", hs256),
        ("another node's key", other_key_signed),
        ("replayed jti", replayed),
        ("garbage", "not.a.token".into()),
    ];
    let audit_before = central
        .running
        .store()
        .all_audit()
        .await
        .expect("audit")
        .len();
    for (what, token) in &cases {
        assert_eq!(connect(&central, token).await.err(), Some(401), "{what}");
    }
    let audit = central.running.store().all_audit().await.expect("audit");
    let refused: Vec<&str> = audit[audit_before..]
        .iter()
        .filter(|e| e.action == "auth.refused")
        .filter_map(|e| e.detail["reason"].as_str())
        .collect();
    // Coalesced: one record per address and reason within the minute (alg
    // none, HS256 and garbage share "algorithm"), each with its count.
    assert_eq!(
        refused,
        [
            "expired",
            "not_yet_valid",
            "lifetime",
            "audience",
            "scope",
            "algorithm",
            "signature",
            "replayed"
        ]
    );
    assert_eq!(nap_central::store::first_broken(&audit), None);

    // Ten failures from one address within a minute: a good token from it
    // is still admitted (one bad host behind a NAT locks nobody out)...
    assert!(connect(&central, &good_token(&key)).await.is_ok());
    // ...while the next refused one is told to wait.
    assert_eq!(connect(&central, "not.a.token").await.err(), Some(429));
}

#[tokio::test]
async fn a_used_token_is_refused_after_central_restarts() {
    let central = central("token_after_restart", |_| {}).await;
    let key = node_key();
    register(&central, &key).await;
    let captured = good_token(&key);
    let ws = connect(&central, &captured).await.expect("the first use");
    drop(ws);
    let Central {
        running,
        dir,
        ca,
        admin,
        viewer,
    } = central;
    let config = running.config.clone();
    running.shutdown().await;
    let central = Central {
        running: nap_central::runtime::start(config)
            .await
            .expect("central starts again"),
        dir,
        ca,
        admin,
        viewer,
    };
    // The new process has an empty replay window; the store remembers.
    assert_eq!(connect(&central, &captured).await.err(), Some(401));
    let audit = central.running.store().list_audit(1).await.expect("audit");
    assert_eq!(audit[0].action, "auth.refused");
    assert_eq!(audit[0].detail["reason"], "replayed");
    assert!(
        connect(&central, &good_token(&key)).await.is_ok(),
        "a fresh token is fine"
    );
}

#[tokio::test]
async fn a_revoked_node_is_refused() {
    let central = central("revoked_node", |_| {}).await;
    let key = node_key();
    register(&central, &key).await;
    central
        .running
        .store()
        .revoke_node(key.id)
        .await
        .expect("revoke");
    assert_eq!(connect(&central, &good_token(&key)).await.err(), Some(401));
    let audit = central.running.store().list_audit(1).await.expect("audit");
    assert_eq!(audit[0].action, "auth.refused");
    assert_eq!(audit[0].detail["reason"], "revoked");
}

#[tokio::test]
async fn a_tls_1_2_client_is_refused() {
    let central = central("tls12", |_| {}).await;
    let result = tls(&central, &[&rustls::version::TLS12]).await;
    assert!(result.is_err(), "a TLS 1.2-only handshake must fail");
}

#[tokio::test]
async fn an_oversize_frame_closes_with_1009() {
    let central = central("oversize", |c| c.max_message_bytes = 64 * 1024).await;
    let (_key, mut ws) = connected_node(&central).await;
    let big = format!(
        r#"{{"type":"ping","timestamp":1,"pad":"{}"}}"#,
        "x".repeat(100 * 1024)
    );
    let _ = ws.send(Message::Text(big.into())).await;
    assert_eq!(close_code(&mut ws).await, Some(1009));
}

#[tokio::test]
async fn a_text_frame_that_is_not_utf8_closes_with_1007() {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let central = central("not_utf8", |_| {}).await;
    let (_key, mut ws) = connected_node(&central).await;
    let frame = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    ws.send(Message::Frame(frame)).await.expect("send");
    assert_eq!(close_code(&mut ws).await, Some(1007));
}

#[tokio::test]
async fn garbage_is_ignored_then_closed_with_1008() {
    let central = central("garbage", |_| {}).await;
    let (_key, mut ws) = connected_node(&central).await;
    for _ in 0..10 {
        ws.send(Message::Text("{not json".into()))
            .await
            .expect("send");
    }
    // Still open: a ping is answered.
    send(&mut ws, nap_core::wire::Ping { timestamp: 7 }).await;
    assert!(matches!(
        next_message(&mut ws).await,
        CentralMessage::Pong(_)
    ));
    ws.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .expect("send");
    assert_eq!(close_code(&mut ws).await, Some(1008));
}

#[tokio::test]
async fn a_second_connection_supersedes_the_first() {
    let central = central("supersede", |_| {}).await;
    let key = node_key();
    register(&central, &key).await;
    let mut first = connect(&central, &good_token(&key)).await.expect("first");
    let _ = next_message(&mut first).await;
    let mut second = connect(&central, &good_token(&key)).await.expect("second");
    let _ = next_message(&mut second).await;
    assert_eq!(close_code(&mut first).await, Some(4002));
    send(&mut second, nap_core::wire::Ping { timestamp: 1 }).await;
    assert!(matches!(
        next_message(&mut second).await,
        CentralMessage::Pong(_)
    ));
    let hub = central.running.hub.read(|hub| hub.clone());
    assert_eq!(hub.live_count(), 1);
}

#[tokio::test]
async fn a_silent_node_goes_offline() {
    let central = central("silent", |c| {
        c.heartbeat_ms = 1000;
        c.offline_grace_ms = 500;
    })
    .await;
    let mut events = central.events();
    let (key, mut ws) = connected_node(&central).await;
    wait_for(&mut events, Duration::from_secs(5), |e| {
        matches!(e, AppEvent::Status { node_id, status: NodeStatus::Online } if *node_id == key.id)
    })
    .await;
    // Say nothing: offline after 2 × 1 s + 0.5 s.
    wait_for(&mut events, Duration::from_secs(10), |e| {
        matches!(e, AppEvent::Status { node_id, status: NodeStatus::Offline } if *node_id == key.id)
    })
    .await;
    assert_eq!(close_code(&mut ws).await, Some(1001));
}

#[tokio::test]
async fn revoking_a_node_closes_its_session_with_4003() {
    let central = central("revoke", |_| {}).await;
    let (key, mut ws) = connected_node(&central).await;
    // As `nap-central node revoke` does, from another process: the store only.
    central
        .running
        .store()
        .revoke_node(key.id)
        .await
        .expect("revoke");
    assert_eq!(close_code(&mut ws).await, Some(4003));
}

#[tokio::test]
async fn too_many_handshakes_in_flight_get_503_with_retry_after() {
    let central = central("admission", |c| c.max_handshakes = 1).await;
    let key = node_key();
    register(&central, &key).await;
    // Hold the only handshake slot: an upgraded session keeps it until welcome
    // is sent, so take it by hand instead.
    let permit = std::sync::Arc::clone(&central.running.handshakes)
        .try_acquire_owned()
        .expect("the slot");
    assert_eq!(connect(&central, &good_token(&key)).await.err(), Some(503));
    drop(permit);
    assert!(connect(&central, &good_token(&key)).await.is_ok());
}

#[tokio::test]
async fn at_capacity_central_stops_listening_until_a_connection_ends() {
    let central = central("capacity", |c| c.max_connections = 1).await;
    let mut events = central.events();
    let (_first, first_ws) = connected_node(&central).await;
    wait_for(&mut events, Duration::from_secs(5), |e| {
        matches!(e, AppEvent::Listening { accepting: false })
    })
    .await;

    // Refused by the kernel: nothing listens (a sibling process on the same
    // port would get it instead).
    let refused = tokio::net::TcpStream::connect(central.running.agent_addr).await;
    assert_eq!(
        refused.map(|_| ()).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionRefused)
    );

    drop(first_ws);
    wait_for(&mut events, Duration::from_secs(5), |e| {
        matches!(e, AppEvent::Listening { accepting: true })
    })
    .await;
    let key = node_key();
    register(&central, &key).await;
    assert!(connect(&central, &good_token(&key)).await.is_ok());
}

#[tokio::test]
async fn a_second_central_without_a_cluster_cannot_take_the_same_port() {
    let central = central("exclusive_port", |_| {}).await;
    let mut config = central.running.config.clone();
    config.listen = central.running.agent_addr;

    let err = nap_central::runtime::start(config)
        .await
        .expect_err("the port is taken");

    assert!(
        format!("{err:#}").contains(&format!("binding {}", central.running.agent_addr)),
        "{err:#}"
    );
}

#[tokio::test]
async fn a_refused_attempt_gives_its_handshake_slot_back_before_its_answer_is_held() {
    let central = central("refused_frees_slot", |c| c.max_handshakes = 1).await;
    let key = node_key();
    register(&central, &key).await;
    let mut events = central.events();
    let refused = futures_util::future::join_all((0..5).map(|_| connect(&central, "not.a.token")));
    let node = async {
        // All five are refused and now wait out their penalty (up to
        // 500 ms)...
        for _ in 0..5 {
            wait_for(&mut events, Duration::from_secs(10), |e| {
                matches!(e, AppEvent::AuthFailed { .. })
            })
            .await;
        }
        // ...holding no slot: the one handshake allowed is free for a node.
        connect(&central, &good_token(&key)).await.map(drop)
    };
    let (refused, node) = tokio::join!(refused, node);
    assert_eq!(node, Ok(()));
    let statuses: Vec<Option<u16>> = refused.into_iter().map(Result::err).collect();
    assert_eq!(statuses, [Some(401); 5]);
}
