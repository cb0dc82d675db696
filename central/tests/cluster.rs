//! Two central instances as one, through the real Redis at
//! `NAP_TEST_REDIS_URL` (skipped with a message when unset, unless
//! `NAP_REQUIRE_SERVICES` makes it mandatory): commands reach a node held by
//! the other instance, a node that moves closes its old session with 4002,
//! commands for offline nodes wait in the store, a command whose notice was
//! lost is delivered by the sweep, and a token id is spent across instances.

mod common;

use std::time::Duration;

use common::*;
use nap_central::AppEvent;
use nap_central::runtime::{Running, start};
use nap_central::store::Storage;
use nap_core::RequestId;
use nap_core::central::CommandState;
use nap_core::wire::{AgentMessage, CentralMessage, CommandResult, NodeStatus};
use serde_json::json;

fn redis_url(test: &str) -> Option<String> {
    match std::env::var("NAP_TEST_REDIS_URL") {
        Ok(url) => Some(url),
        Err(_) => {
            assert!(
                std::env::var_os("NAP_REQUIRE_SERVICES").is_none(),
                "NAP_REQUIRE_SERVICES is set but NAP_TEST_REDIS_URL is not"
            );
            eprintln!(
                "SKIPPED {test}: it needs Redis (NAP_TEST_REDIS_URL, e.g. redis://127.0.0.1:6379)"
            );
            None
        }
    }
}

/// Instance A (with the test's store) and instance B sharing its store and
/// a Redis namespace of their own.
async fn pair(test: &str) -> Option<(Central, Running)> {
    pair_with(test, |_| {}).await
}

/// [`pair`], both instances configured by `tune` too.
async fn pair_with(
    test: &str,
    tune: impl FnOnce(&mut nap_central::ServeConfig),
) -> Option<(Central, Running)> {
    let url = redis_url(test)?;
    let prefix = format!("nap-test-{test}-{}", uuid::Uuid::new_v4().simple());
    let a = central(test, |c| {
        c.redis = Some(url);
        c.redis_prefix = prefix;
        tune(c);
    })
    .await;
    let b = start(a.running.config.clone())
        .await
        .expect("instance B starts");
    Some((a, b))
}

/// Connects a registered node to the instance at `running`, reads its
/// welcome, and waits until that instance has claimed it.
async fn join(central: &Central, running: &Running, key: &NodeKey) -> Ws {
    let mut events = running.events().subscribe();
    let token = good_token(key);
    let mut ws = connect_speaking(central, running.agent_addr, &token, Some("approval"))
        .await
        .expect("upgraded");
    assert!(matches!(
        next_message(&mut ws).await,
        CentralMessage::Welcome(_)
    ));
    let node = key.id;
    wait_for(
        &mut events,
        Duration::from_secs(5),
        |e| matches!(e, AppEvent::TakenOver { node_id, .. } if *node_id == node),
    )
    .await;
    ws
}

async fn submit_health_check(central: &Central, key: &NodeKey) -> RequestId {
    let (status, body) = http(
        "POST",
        &central.api(&format!("/api/v1/nodes/{}/commands", key.id)),
        Some(&central.admin),
        Some(json!({ "type": "health_check" })),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    serde_json::from_value(body["requestId"].clone()).expect("request id")
}

/// The next command the node receives (pings and acks skipped).
async fn next_command(ws: &mut Ws) -> RequestId {
    loop {
        match next_message(ws).await {
            CentralMessage::HealthCheck(h) => return h.request_id,
            CentralMessage::Ping(_) | CentralMessage::Ack(_) => {}
            other => panic!("expected a health check, got {other:?}"),
        }
    }
}

fn succeeded(request_id: RequestId) -> AgentMessage {
    AgentMessage::CommandResult(CommandResult {
        request_id,
        success: true,
        result: "healthy".into(),
        timestamp: nap_core::WallTime::from(chrono::Utc::now()),
        exit_code: None,
        stderr: None,
        duration_ms: Some(1),
        truncated: false,
        error: None,
    })
}

#[tokio::test]
async fn a_command_submitted_at_one_instance_reaches_a_node_held_by_the_other() {
    let Some((a, b)) = pair("cluster_route").await else {
        return;
    };
    let key = node_key();
    register(&a, &key).await;
    let mut ws = join(&a, &b, &key).await;
    let mut b_events = b.events().subscribe();

    let request_id = submit_health_check(&a, &key).await;

    assert_eq!(next_command(&mut ws).await, request_id);
    send(&mut ws, succeeded(request_id)).await;
    wait_for(&mut b_events, Duration::from_secs(5), |e| {
        matches!(e, AppEvent::Command { request_id: id, state: CommandState::Succeeded } if *id == request_id)
    })
    .await;
    let (status, body) = http(
        "GET",
        &a.api(&format!("/api/v1/commands/{request_id}")),
        Some(&a.viewer),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["state"], "succeeded", "{body}");
    // A never held the node and holds no trace of its command.
    let hub = a.running.hub.read(|hub| hub.clone());
    assert_eq!(hub.live_count(), 0);
    assert!(hub.command(request_id).is_none());
}

#[tokio::test]
async fn a_node_that_moves_to_the_other_instance_closes_its_old_session_with_4002() {
    let Some((a, b)) = pair("cluster_move").await else {
        return;
    };
    let key = node_key();
    register(&a, &key).await;
    let mut on_a = join(&a, &a.running, &key).await;
    let mut a_events = a.events();

    let mut on_b = join(&a, &b, &key).await;

    assert_eq!(close_code(&mut on_a).await, Some(4002));
    let node = key.id;
    wait_for(
        &mut a_events,
        Duration::from_secs(5),
        |e| matches!(e, AppEvent::SessionClosed { node_id, .. } if *node_id == node),
    )
    .await;
    assert_eq!(a.running.hub.read(|hub| hub.clone()).live_count(), 0);
    // A wrote no `offline` for it: a status change A makes afterwards comes
    // out of A's ordered writer after anything A had queued before.
    let other = node_key();
    register(&a, &other).await;
    let _other_ws = join(&a, &a.running, &other).await;
    let other_id = other.id;
    wait_for(&mut a_events, Duration::from_secs(5), |e| {
        matches!(e, AppEvent::Status { node_id, status: NodeStatus::Online } if *node_id == other_id)
    })
    .await;
    let stored = a
        .running
        .store()
        .get_node(key.id)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(stored.status, Some(NodeStatus::Online));
    // The node goes on working on B.
    send(&mut on_b, nap_core::wire::Ping { timestamp: 1 }).await;
    assert!(matches!(
        next_message(&mut on_b).await,
        CentralMessage::Pong(_)
    ));
}

#[tokio::test]
async fn a_command_for_an_offline_node_waits_in_the_store_and_follows_the_node() {
    let Some((a, b)) = pair("cluster_offline").await else {
        return;
    };
    let key = node_key();
    register(&a, &key).await;

    let request_id = submit_health_check(&a, &key).await;

    let stored = a
        .running
        .store()
        .get_command(request_id)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(stored.state, CommandState::Queued);
    assert_eq!(
        a.running.hub.read(|hub| hub.clone()).queued_for(key.id),
        0,
        "with a cluster the store, not a hub, queues for offline nodes"
    );
    let mut ws = join(&a, &b, &key).await;
    assert_eq!(next_command(&mut ws).await, request_id);
}

#[tokio::test]
async fn a_command_whose_notice_was_lost_is_delivered_by_the_sweep() {
    let Some((a, b)) = pair_with("cluster_sweep", |c| c.sweep_every_s = 1).await else {
        return;
    };
    let key = node_key();
    register(&a, &key).await;
    let mut ws = join(&a, &b, &key).await;

    // Written to the store as instance A would, with no notice on the bus.
    let request_id = RequestId(uuid::Uuid::new_v4());
    let now = nap_core::WallTime::from(chrono::Utc::now());
    let message = CentralMessage::HealthCheck(nap_core::wire::HealthCheck { request_id });
    a.running
        .store()
        .insert_command(nap_central::store::CommandRecord {
            request_id,
            node_id: key.id,
            kind: "health_check".into(),
            message: serde_json::to_value(&message).expect("json"),
            state: CommandState::Queued,
            requester: "alice".into(),
            approver: None,
            timeout_ms: 30_000,
            created_at: now,
            updated_at: now,
            result: None,
            approval: None,
        })
        .await
        .expect("insert");

    assert_eq!(next_command(&mut ws).await, request_id);
    let mut b_events = b.events().subscribe();
    send(&mut ws, succeeded(request_id)).await;
    wait_for(&mut b_events, Duration::from_secs(5), |e| {
        matches!(e, AppEvent::Command { request_id: id, state: CommandState::Succeeded } if *id == request_id)
    })
    .await;
}

#[tokio::test]
async fn a_token_used_at_one_instance_is_refused_at_the_other() {
    let Some((a, b)) = pair("cluster_replay").await else {
        return;
    };
    let key = node_key();
    register(&a, &key).await;
    let token = good_token(&key);
    let mut first = connect_at(&a, a.running.agent_addr, &token)
        .await
        .expect("first use");
    assert!(matches!(
        next_message(&mut first).await,
        CentralMessage::Welcome(_)
    ));

    let replay = connect_at(&a, b.agent_addr, &token).await;

    assert_eq!(replay.err(), Some(401));
}

#[tokio::test]
async fn a_broadcast_reaches_nodes_on_both_instances() {
    let Some((a, b)) = pair("cluster_broadcast").await else {
        return;
    };
    let on_a_key = node_key();
    let on_b_key = node_key();
    register(&a, &on_a_key).await;
    register(&a, &on_b_key).await;
    let mut on_a = join(&a, &a.running, &on_a_key).await;
    let mut on_b = join(&a, &b, &on_b_key).await;

    let (status, body) = http(
        "POST",
        &a.api("/api/v1/commands/broadcast"),
        Some(&a.admin),
        Some(json!({ "nodes": "all", "command": { "type": "health_check" } })),
    )
    .await;

    assert_eq!(status, 202, "{body}");
    let request_for = |node: nap_core::NodeId| -> RequestId {
        let entry = body["commands"]
            .as_array()
            .expect("commands")
            .iter()
            .find(|c| c["nodeId"] == node.to_string())
            .expect("one per node");
        serde_json::from_value(entry["requestId"].clone()).expect("request id")
    };
    assert_eq!(next_command(&mut on_a).await, request_for(on_a_key.id));
    assert_eq!(next_command(&mut on_b).await, request_for(on_b_key.id));
}

#[tokio::test]
async fn central_does_not_start_when_redis_cannot_be_reached() {
    let dir = tempfile::tempdir().expect("dir");
    let certs = nap_central::tls::write_dev_certs(&dir.path().join("certs")).expect("certs");
    let config = nap_central::ServeConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        api_listen: "127.0.0.1:0".parse().expect("addr"),
        tls_cert: certs.cert,
        tls_key: certs.key,
        db: format!("sqlite:{}", dir.path().join("central.db").display()),
        // Nothing listens on port 1.
        redis: Some("redis://127.0.0.1:1".into()),
        ..nap_central::ServeConfig::default()
    };

    let err = start(config).await.expect_err("refuses to start");

    assert!(
        format!("{err:#}").contains("connecting to Redis at redis://127.0.0.1:1"),
        "{err:#}"
    );
}

#[tokio::test]
async fn an_approval_given_at_one_instance_is_decided_by_the_one_holding_the_node() {
    let Some((a, b)) = pair("cluster_approval").await else {
        return;
    };
    let (key, away) = (node_key(), node_key());
    register(&a, &key).await;
    register(&a, &away).await;
    let mut ws = join(&a, &b, &key).await;
    let (alice, bob) = (
        person_token(&a, "alice").await,
        person_token(&a, "bob").await,
    );
    let ask = json!({
        "type": "execute", "command": "uptime", "args": [],
        "requiresApproval": true, "reason": "load",
    });
    let (status, body) = http(
        "POST",
        &a.api(&format!("/api/v1/nodes/{}/commands", key.id)),
        Some(&alice),
        Some(ask.clone()),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let request_id: RequestId = serde_json::from_value(body["requestId"].clone()).expect("id");
    let digest = body["digest"].clone();
    loop {
        match next_message(&mut ws).await {
            CentralMessage::Execute(e) if e.request_id == Some(request_id) => {
                assert!(e.requires_approval, "held by the node");
                break;
            }
            CentralMessage::Ping(_) | CentralMessage::Ack(_) => {}
            other => panic!("expected the held execute, got {other:?}"),
        }
    }
    let approve = a.api(&format!("/api/v1/commands/{request_id}/approve"));
    let (status, body) = http(
        "POST",
        &approve,
        Some(&alice),
        Some(json!({ "digest": digest })),
    )
    .await;
    assert_eq!(
        status, 403,
        "the holder's hub refuses the requester: {body}"
    );
    let (status, body) = http(
        "POST",
        &approve,
        Some(&bob),
        Some(json!({ "digest": digest })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "approved");
    loop {
        match next_message(&mut ws).await {
            CentralMessage::ExecuteApproved(r) => {
                assert_eq!(r.request_id, Some(request_id));
                assert_eq!(r.approved_by, "bob");
                break;
            }
            CentralMessage::Ping(_) | CentralMessage::Ack(_) => {}
            other => panic!("expected the release, got {other:?}"),
        }
    }
    let (status, body) = http(
        "POST",
        &approve,
        Some(&bob),
        Some(json!({ "digest": digest })),
    )
    .await;
    assert_eq!(status, 409, "decided once: {body}");
    assert!(
        a.running.hub.read(|hub| hub.command(request_id).is_none()),
        "A relayed; B decided"
    );

    // Nobody holds the other node: nothing decides for it until it is back.
    let (status, body) = http(
        "POST",
        &a.api(&format!("/api/v1/nodes/{}/commands", away.id)),
        Some(&alice),
        Some(ask),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = http(
        "POST",
        &a.api(&format!(
            "/api/v1/commands/{}/approve",
            body["requestId"].as_str().expect("id")
        )),
        Some(&bob),
        Some(json!({ "digest": body["digest"] })),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body.to_string().contains("connected to no central process"),
        "{body}"
    );
}

/// Which of the two drives the rollouts, once one has taken the lease.
async fn driver_of(a: &Running, b: &Running) -> bool {
    let (mut on_a, mut on_b) = (a.events().subscribe(), b.events().subscribe());
    if a.hub.drives_rollouts() {
        return true;
    }
    if b.hub.drives_rollouts() {
        return false;
    }
    let driving = |e: &AppEvent| matches!(e, AppEvent::RolloutDriver { driving: true });
    tokio::select! {
        _ = wait_for(&mut on_a, Duration::from_secs(10), driving) => true,
        _ = wait_for(&mut on_b, Duration::from_secs(10), driving) => false,
    }
}

async fn post(
    running: &Running,
    token: &str,
    path: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    http(
        "POST",
        &format!("http://{}{path}", running.api_addr),
        Some(token),
        Some(body),
    )
    .await
}

#[tokio::test]
async fn one_process_drives_a_rollout_over_nodes_on_both_and_either_controls_it() {
    let Some((a, b)) = pair("cluster_rollout").await else {
        return;
    };
    let a_drives = driver_of(&a.running, &b).await;
    let (driver, other) = if a_drives {
        (&a.running, &b)
    } else {
        (&b, &a.running)
    };
    let on_driver_key = node_key();
    let on_other_key = node_key();
    register(&a, &on_driver_key).await;
    register(&a, &on_other_key).await;
    let _on_driver = join(&a, driver, &on_driver_key).await;
    let mut on_other = join(&a, other, &on_other_key).await;
    let mut driver_events = driver.events().subscribe();

    // Asked at the process that does not drive: the canary is the node it
    // holds, the rest waits for a long bake.
    let (status, body) = post(
        other,
        &a.admin,
        "/api/v1/rollouts",
        json!({
            "command": "health_check",
            "targets": [on_other_key.id, on_driver_key.id],
            "strategy": { "canary": 1, "bakeS": 3600, "maxConcurrency": "100%" },
        }),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = body["rolloutId"].as_str().expect("id").to_owned();
    let canary = next_command(&mut on_other).await;
    send(&mut on_other, succeeded(canary)).await;
    // The driver hears of the canary's result from the store.
    wait_for(&mut driver_events, Duration::from_secs(10), |e| {
        matches!(e, AppEvent::Rollout { state, .. }
            if *state == nap_core::central::rollout::RolloutState::Baking)
    })
    .await;

    let (status, body) = post(
        other,
        &a.admin,
        &format!("/api/v1/rollouts/{id}/pause"),
        json!({}),
    )
    .await;
    assert_eq!(
        (status, body["state"].as_str()),
        (200, Some("paused")),
        "{body}"
    );
    let (status, body) = post(
        driver,
        &a.admin,
        &format!("/api/v1/rollouts/{id}/pause"),
        json!({}),
    )
    .await;
    assert_eq!(
        status, 409,
        "paused already, whichever process is asked: {body}"
    );
    let (status, body) = post(
        other,
        &a.admin,
        &format!("/api/v1/rollouts/{id}/abort"),
        json!({}),
    )
    .await;
    assert_eq!(
        (status, body["state"].as_str()),
        (200, Some("aborted")),
        "{body}"
    );
    wait_for(&mut driver_events, Duration::from_secs(10), |e| {
        matches!(e, AppEvent::RolloutTarget { state, .. }
            if *state == nap_core::central::rollout::TargetState::Command(CommandState::Cancelled))
    })
    .await;
    let (status, report) = http(
        "GET",
        &format!("http://{}/api/v1/rollouts/{id}", other.api_addr),
        Some(&a.admin),
        None,
    )
    .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["state"], "aborted", "{report}");
    assert_eq!(report["counts"]["succeeded"], 1, "{report}");
    assert_eq!(
        report["counts"]["cancelled"], 1,
        "the rest never started: {report}"
    );
}

#[tokio::test]
async fn when_the_driving_process_stops_the_other_takes_the_rollout_over() {
    let Some((a, b)) = pair_with("cluster_rollout_takeover", |c| {
        c.rollout_lease_s = 1;
        c.rollout_hold_s = 0;
    })
    .await
    else {
        return;
    };
    let a_drives = driver_of(&a.running, &b).await;
    let first_key = node_key();
    let second_key = node_key();
    register(&a, &first_key).await;
    register(&a, &second_key).await;
    let survivor = if a_drives { &b } else { &a.running };
    let mut first = join(&a, survivor, &first_key).await;
    let mut second = join(&a, survivor, &second_key).await;
    let mut survivor_events = survivor.events().subscribe();

    let (status, body) = post(
        survivor,
        &a.admin,
        "/api/v1/rollouts",
        json!({
            "command": "health_check",
            "targets": [first_key.id, second_key.id],
            "strategy": { "maxConcurrency": 1 },
        }),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let started = next_command(&mut first).await;

    let Central {
        running, dir: _dir, ..
    } = a;
    let (driver, _survivor) = if a_drives { (running, b) } else { (b, running) };
    driver.shutdown().await;
    wait_for(&mut survivor_events, Duration::from_secs(10), |e| {
        matches!(e, AppEvent::RolloutDriver { driving: true })
    })
    .await;
    send(&mut first, succeeded(started)).await;

    // The survivor restored the rollout from the store and goes on with it.
    let next = next_command(&mut second).await;
    send(&mut second, succeeded(next)).await;
    wait_for(&mut survivor_events, Duration::from_secs(10), |e| {
        matches!(e, AppEvent::Rollout { state, .. }
            if *state == nap_core::central::rollout::RolloutState::Succeeded)
    })
    .await;
}
