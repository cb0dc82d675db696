//! `POST /api/v1/commands/broadcast`: one command to many nodes as one
//! decision — a rollout that starts every target at once: every named node
//! gets it once, one audit record, offline nodes get it when they are back,
//! and a list with a bad entry is refused whole with nothing stored.

mod common;

use common::*;
use nap_central::store::Storage;
use nap_core::wire::CentralMessage;
use nap_core::{NodeId, RequestId};
use serde_json::{Value, json};

async fn broadcast(central: &Central, token: &str, body: Value) -> (u16, Value) {
    http(
        "POST",
        &central.api("/api/v1/commands/broadcast"),
        Some(token),
        Some(body),
    )
    .await
}

fn issued(body: &Value) -> Vec<(NodeId, RequestId)> {
    body["commands"]
        .as_array()
        .expect("commands")
        .iter()
        .map(|c| {
            (
                serde_json::from_value(c["nodeId"].clone()).expect("node id"),
                serde_json::from_value(c["requestId"].clone()).expect("request id"),
            )
        })
        .collect()
}

#[tokio::test]
async fn every_named_node_gets_the_command_once_and_it_is_audited_once() {
    let central = central("broadcast_ok", |_| {}).await;
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(connected_node(&central).await);
    }
    let ids: Vec<String> = nodes.iter().map(|(k, _)| k.id.to_string()).collect();

    let (status, body) = broadcast(
        &central,
        &central.admin,
        json!({ "nodes": ids, "command": { "type": "health_check" } }),
    )
    .await;

    assert_eq!(status, 202, "{body}");
    let issued = issued(&body);
    assert_eq!(issued.len(), 3);
    for (key, ws) in &mut nodes {
        let expected = issued
            .iter()
            .find(|(n, _)| *n == key.id)
            .map(|(_, r)| *r)
            .expect("one per node");
        match next_message(ws).await {
            CentralMessage::HealthCheck(h) => assert_eq!(h.request_id, expected),
            other => panic!("expected the health check, got {other:?}"),
        }
    }
    let audit = central.running.store().all_audit().await.expect("audit");
    let broadcasts: Vec<_> = audit
        .iter()
        .filter(|e| e.action == "rollout.create")
        .collect();
    assert_eq!(broadcasts.len(), 1);
    assert_eq!(broadcasts[0].actor, "admin");
    assert_eq!(broadcasts[0].detail["targets"], 3);
    assert_eq!(broadcasts[0].detail["broadcast"], true);
    assert_eq!(broadcasts[0].subject, body["rolloutId"].as_str().unwrap());
    assert!(audit.iter().all(|e| e.action != "command.submit"));
    let (status, rollout) = http(
        "GET",
        &central.api(&format!(
            "/api/v1/rollouts/{}",
            body["rolloutId"].as_str().unwrap()
        )),
        Some(&central.admin),
        None,
    )
    .await;
    assert_eq!(status, 200, "{rollout}");
    assert_eq!(
        rollout["limits"]["maxConcurrency"], 3,
        "all at once: {rollout}"
    );
}

#[tokio::test]
async fn all_means_every_node_not_revoked() {
    let central = central("broadcast_all", |_| {}).await;
    let active = node_key();
    let revoked = node_key();
    register(&central, &active).await;
    register(&central, &revoked).await;
    let store = &central.running.store();
    store.revoke_node(revoked.id).await.expect("revoke");

    let (status, body) = broadcast(
        &central,
        &central.admin,
        json!({ "nodes": "all", "command": { "type": "health_check" } }),
    )
    .await;

    assert_eq!(status, 202, "{body}");
    let issued = issued(&body);
    assert_eq!(
        issued.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        vec![active.id]
    );
    // Offline: its command starts when the node is back.
    assert!(
        store
            .get_command(issued[0].1)
            .await
            .expect("read")
            .is_none()
    );
    let mut ws = connect(&central, &good_token(&active))
        .await
        .expect("upgraded");
    match next_message(&mut ws).await {
        CentralMessage::Welcome(_) => {}
        other => panic!("expected welcome, got {other:?}"),
    }
    match next_message(&mut ws).await {
        CentralMessage::HealthCheck(h) => assert_eq!(h.request_id, issued[0].1),
        other => panic!("expected the health check, got {other:?}"),
    }
    // Stored before it was sent.
    let stored = store.get_command(issued[0].1).await.expect("read");
    assert_eq!(stored.map(|c| c.node_id), Some(active.id));
}

#[tokio::test]
async fn a_broadcast_with_a_bad_entry_is_refused_whole_and_stores_nothing() {
    let central = central("broadcast_errors", |_| {}).await;
    let key = node_key();
    let revoked = node_key();
    register(&central, &key).await;
    register(&central, &revoked).await;
    let store = &central.running.store();
    store.revoke_node(revoked.id).await.expect("revoke");
    let good = key.id.to_string();
    let unknown = NodeId::from_u128(5).to_string();
    let health = json!({ "type": "health_check" });
    let cases = [
        (
            json!({ "nodes": [good, unknown], "command": health }),
            404,
            "1 unknown node(s): 00000000-0000-0000-0000-000000000005",
        ),
        (
            json!({ "nodes": [good, revoked.id.to_string()], "command": health }),
            409,
            "1 revoked node(s)",
        ),
        (
            json!({ "nodes": [good, good], "command": health }),
            400,
            "named twice",
        ),
        (
            json!({ "nodes": [], "command": health }),
            400,
            "nodes is empty",
        ),
        (
            json!({ "nodes": ["not-a-uuid"], "command": health }),
            400,
            "not a node id",
        ),
        (
            json!({ "nodes": "some", "command": health }),
            400,
            "or \"all\"",
        ),
        (
            json!({ "nodes": [good], "command": { "type": "reboot" } }),
            400,
            "type must be one of",
        ),
        (
            json!({ "nodes": [good], "command": { "type": "execute" } }),
            400,
            "missing field $.command",
        ),
        (json!({ "nodes": [good] }), 400, "must have `nodes`"),
        (
            json!({ "nodes": [good], "command": health, "extra": 1 }),
            400,
            "unknown field \"extra\"",
        ),
    ];
    for (body, expected_status, expected) in cases {
        let (status, reply) = broadcast(&central, &central.admin, body.clone()).await;
        assert_eq!(status, expected_status, "{body}: {reply}");
        let message = reply["error"].as_str().unwrap_or_default();
        assert!(
            message.contains(expected),
            "{body}: {message:?} should mention {expected:?}"
        );
    }
    let (status, _) = broadcast(
        &central,
        &central.viewer,
        json!({ "nodes": "all", "command": health }),
    )
    .await;
    assert_eq!(status, 403, "a viewer may not broadcast");
    assert!(store.open_commands().await.expect("open").is_empty());
    let audit = store.all_audit().await.expect("audit");
    assert!(audit.iter().all(|e| e.action != "rollout.create"));
}
