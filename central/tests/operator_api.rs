//! The operator API end to end: telemetry stored exactly once and readable,
//! a command from the API to a node and its result back, roles and errors.

mod common;

use std::time::Duration;

use common::*;
use nap_central::AppEvent;
use nap_central::store::Storage;
use nap_core::testing::sample;
use nap_core::wire::{AgentMessage, CentralMessage, CommandResult, Telemetry};

fn telemetry(key: &NodeKey, minute: i64) -> Telemetry {
    let t0 = nap_core::WallTime::from_unix_millis(1_760_522_400_000).expect("valid");
    Telemetry {
        node_id: key.id,
        timestamp: t0.add_millis(minute * 60_000),
        data: sample(10.0 + f64::from(u8::try_from(minute).unwrap_or(0)), 50.0),
        dropped_samples: 0,
    }
}

#[tokio::test]
async fn telemetry_is_acked_once_durable_and_stored_exactly_once_with_replays() {
    let central = central("telemetry_once", |_| {}).await;
    let (key, mut ws) = connected_node(&central).await;
    for minute in 0..5 {
        send(&mut ws, telemetry(&key, minute)).await;
    }
    let mut acked = Vec::new();
    while acked.len() < 5 {
        if let CentralMessage::Ack(ack) = next_message(&mut ws).await {
            acked.push(ack.telemetry.expect("a telemetry ack"));
        }
    }
    // The agent lost the connection before it saw the acks: it replays all,
    // on a new connection, plus one new sample.
    drop(ws);
    let mut ws = connect(&central, &good_token(&key))
        .await
        .expect("reconnected");
    let _ = next_message(&mut ws).await;
    for minute in 0..6 {
        send(&mut ws, telemetry(&key, minute)).await;
    }
    let mut again = 0;
    while again < 6 {
        if let CentralMessage::Ack(_) = next_message(&mut ws).await {
            again += 1;
        }
    }
    let store = &central.running.store();
    assert_eq!(
        store.count_telemetry(key.id).await.expect("count"),
        6,
        "stored exactly once each"
    );

    let url = central.api(&format!(
        "/api/v1/nodes/{}/telemetry?from=2025-10-15T10:00:00Z&to=2025-10-15T11:00:00Z",
        key.id
    ));
    let (status, body) = http("GET", &url, Some(&central.viewer), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["points"].as_array().map(Vec::len), Some(6));
    let (status, body) = http(
        "GET",
        &format!("{url}&bucket=180"),
        Some(&central.viewer),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let buckets = body["points"].as_array().expect("points");
    assert_eq!(buckets.len(), 2);
    assert_eq!(buckets[0]["samples"], 3);
}

#[tokio::test]
async fn a_command_from_the_api_reaches_the_node_and_its_result_comes_back() {
    let central = central("command_roundtrip", |_| {}).await;
    let mut events = central.events();
    let (key, mut ws) = connected_node(&central).await;

    let operator = {
        let token = nap_central::api::tokens::new_api_token().expect("token");
        let record = nap_central::store::TokenRecord {
            name: "ops".into(),
            role: "operator".into(),
            user: None,
        };
        central
            .running
            .store()
            .create_api_token(
                &nap_central::api::tokens::token_hash(&token),
                record,
                nap_core::WallTime::from(chrono::Utc::now()),
            )
            .await
            .expect("token");
        token
    };
    let url = central.api(&format!("/api/v1/nodes/{}/commands", key.id));
    let body =
        serde_json::json!({"type": "execute", "command": "uptime", "args": [], "timeout": 30000});
    let (status, reply) = http("POST", &url, Some(&operator), Some(body)).await;
    assert_eq!(status, 202, "{reply}");
    let request_id: nap_core::RequestId = reply["requestId"]
        .as_str()
        .expect("id")
        .parse()
        .expect("uuid");

    let execute = match next_message(&mut ws).await {
        CentralMessage::Execute(e) => e,
        other => panic!("expected execute, got {other:?}"),
    };
    assert_eq!(execute.request_id, Some(request_id));
    assert_eq!(execute.command, "uptime");

    let result = CommandResult {
        request_id,
        success: true,
        result: "up 3 days\n".into(),
        timestamp: nap_core::WallTime::from(chrono::Utc::now()),
        exit_code: Some(0),
        stderr: None,
        duration_ms: Some(4),
        truncated: false,
        error: None,
    };
    send(&mut ws, AgentMessage::CommandResult(result.clone())).await;
    match next_message(&mut ws).await {
        CentralMessage::Ack(ack) => assert_eq!(ack.request_id, Some(request_id)),
        other => panic!("expected the ack, got {other:?}"),
    }
    // Sent again (the agent did not see the ack): acked again, recorded once.
    let mut second = result.clone();
    second.result = "different".into();
    send(&mut ws, AgentMessage::CommandResult(second)).await;
    assert!(matches!(
        next_message(&mut ws).await,
        CentralMessage::Ack(_)
    ));
    wait_for(&mut events, Duration::from_secs(5), |e| {
        matches!(e, AppEvent::Command { request_id: id, state } if *id == request_id && state.is_terminal())
    })
    .await;

    let (status, command) = http(
        "GET",
        &central.api(&format!("/api/v1/commands/{request_id}")),
        Some(&central.viewer),
        None,
    )
    .await;
    assert_eq!(status, 200, "{command}");
    assert_eq!(command["result"]["result"], "up 3 days\n");
    assert_eq!(command["state"], "succeeded");
    let audit = central.running.store().list_audit(10).await.expect("audit");
    assert!(
        audit
            .iter()
            .any(|e| e.action == "command.submit" && e.actor == "ops")
    );
}

#[tokio::test]
async fn the_api_checks_tokens_roles_and_bodies() {
    let central = central("api_errors", |_| {}).await;
    let key = node_key();
    register(&central, &key).await;
    let nodes = central.api("/api/v1/nodes");
    assert_eq!(http("GET", &nodes, None, None).await.0, 401);
    assert_eq!(http("GET", &nodes, Some("nap_wrong"), None).await.0, 401);
    let (status, body) = http("GET", &nodes, Some(&central.viewer), None).await;
    assert_eq!(status, 200);
    assert_eq!(body["nodes"][0]["id"], key.id.to_string());
    assert_eq!(body["nodes"][0]["status"], "offline");

    let commands = central.api(&format!("/api/v1/nodes/{}/commands", key.id));
    let execute = serde_json::json!({"type": "execute", "command": "uptime"});
    let (status, body) = http(
        "POST",
        &commands,
        Some(&central.viewer),
        Some(execute.clone()),
    )
    .await;
    assert_eq!(status, 403, "a viewer may not send commands: {body}");
    let admin = Some(central.admin.as_str());
    let cases = [
        (serde_json::json!({"type": "reboot"}), "type must be one of"),
        (
            serde_json::json!({"type": "execute"}),
            "missing field $.command",
        ),
        (
            serde_json::json!({"type": "execute", "command": 5}),
            "$.command",
        ),
        (
            serde_json::json!({"type": "deploy", "env": "production"}),
            "missing field $.branch",
        ),
        (
            serde_json::json!({"type": "execute", "command": "x", "requestId": "6f1c2b9e-8a4d-4c3e-9b7a-2d5e8f1a3c47"}),
            "requestId is assigned",
        ),
        (serde_json::json!([1, 2]), "must be a JSON object"),
    ];
    for (body, expected) in cases {
        let (status, reply) = http("POST", &commands, admin, Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {reply}");
        let message = reply["error"].as_str().unwrap_or_default();
        assert!(
            message.contains(expected),
            "{body}: {message:?} should mention {expected:?}"
        );
    }
    let unknown = central.api(&format!(
        "/api/v1/nodes/{}/commands",
        nap_core::NodeId::from_u128(5)
    ));
    assert_eq!(http("POST", &unknown, admin, Some(execute)).await.0, 404);
    assert_eq!(
        http("GET", &central.api("/api/v1/nodes/not-a-uuid"), admin, None)
            .await
            .0,
        400
    );
    assert_eq!(
        http(
            "GET",
            &central.api("/api/v1/commands/6f1c2b9e-8a4d-4c3e-9b7a-2d5e8f1a3c47"),
            admin,
            None
        )
        .await
        .0,
        404
    );
    let bad_range = central.api(&format!(
        "/api/v1/nodes/{}/telemetry?from=yesterday",
        key.id
    ));
    assert_eq!(http("GET", &bad_range, admin, None).await.0, 400);
}

#[tokio::test]
async fn health_metrics_and_the_openapi_document_are_served() {
    let central = central("api_meta", |_| {}).await;
    let (status, body) = http("GET", &central.api("/healthz"), None, None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, doc) = http("GET", &central.api("/api/v1/openapi.json"), None, None).await;
    assert_eq!(status, 200);
    for route in nap_central::api::ROUTES {
        assert!(
            doc["paths"].get(*route).is_some(),
            "the OpenAPI document lacks {route}"
        );
    }
    let key = node_key();
    register(&central, &key).await;
    assert_eq!(connect(&central, "junk").await.err(), Some(401));
    let metrics = {
        use http_body_util::{BodyExt as _, Empty};
        let client: hyper_util::client::legacy::Client<_, Empty<hyper::body::Bytes>> =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        let response = client
            .get(central.api("/metrics").parse().expect("uri"))
            .await
            .expect("metrics");
        String::from_utf8(
            response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes()
                .to_vec(),
        )
        .expect("utf-8")
    };
    assert!(
        metrics.contains("nap_auth_failures_total{reason=\"algorithm\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("nap_connections"));
    assert!(metrics.contains("nap_ingest_queue_depth"));
}

#[tokio::test]
async fn approval_rules_make_commands_need_approval_whatever_the_request_says() {
    use nap_central::config::ApprovalRuleSettings;
    let central = central("approval_rules", |config| {
        config.approval.rules = vec![
            ApprovalRuleSettings {
                command: Some("docker".into()),
                labels: Default::default(),
                min_approvals: 1,
                approver: None,
            },
            ApprovalRuleSettings {
                command: None,
                labels: [("env".to_owned(), "prod".to_owned())].into(),
                min_approvals: 2,
                approver: Some("group:sre".into()),
            },
        ];
    })
    .await;
    let (plain, prod) = (node_key(), node_key());
    register(&central, &plain).await;
    let mut record = central
        .running
        .store()
        .get_node(plain.id)
        .await
        .expect("get")
        .expect("plain");
    record.id = prod.id;
    record.name = "prod-db".into();
    record.public_key_pem = prod.public_pem.clone();
    record.labels = [("env".to_owned(), "prod".to_owned())].into();
    central
        .running
        .store()
        .add_node(record)
        .await
        .expect("prod");
    let post = |node: nap_core::NodeId, body: serde_json::Value| {
        let url = central.api(&format!("/api/v1/nodes/{node}/commands"));
        let admin = central.admin.clone();
        async move { http("POST", &url, Some(&admin), Some(body)).await }
    };
    let docker = serde_json::json!({"type": "execute", "command": "docker", "args": ["ps"]});
    let (status, reply) = post(plain.id, docker).await;
    assert_eq!(status, 400, "{reply}");
    assert!(reply.to_string().contains("approval rule 1"), "{reply}");
    let uptime = serde_json::json!({"type": "execute", "command": "uptime", "args": []});
    let (status, reply) = post(plain.id, uptime.clone()).await;
    assert_eq!(status, 202, "no rule for uptime on a plain node: {reply}");
    let (status, reply) = post(prod.id, uptime).await;
    assert_eq!(status, 400, "every command on prod: {reply}");

    let asked = serde_json::json!({
        "type": "execute", "command": "uptime", "args": [],
        "requiresApproval": true, "reason": "load", "minApprovals": 1,
    });
    let (status, reply) = post(prod.id, asked.clone()).await;
    assert_eq!(status, 202, "{reply}");
    let (status, listing) = http(
        "GET",
        &central.api("/api/v1/approvals"),
        Some(&central.viewer),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let item = &listing["approvals"][0];
    assert_eq!(item["requestId"], reply["requestId"], "{listing}");
    assert_eq!(
        item["minApprovals"], 2,
        "the rule's, not the request's lower count"
    );
    assert_eq!(item["approver"], "group:sre");
    assert_eq!(
        item["message"]["approver"], "group:sre",
        "the node is told who approves"
    );
    let mut other = asked;
    other["approver"] = serde_json::json!("bob");
    let (status, reply) = post(prod.id, other).await;
    assert_eq!(status, 400, "{reply}");
    assert!(reply.to_string().contains("group:sre"), "{reply}");

    let (status, reply) = http(
        "POST",
        &central.api("/api/v1/commands/broadcast"),
        Some(&central.admin),
        Some(serde_json::json!({
            "nodes": [plain.id, prod.id],
            "command": {"type": "execute", "command": "uptime", "args": []},
        })),
    )
    .await;
    assert_eq!(status, 400, "refused whole: {reply}");
    assert!(reply.to_string().contains(&prod.id.to_string()), "{reply}");
}

#[tokio::test]
async fn an_approval_rule_out_of_range_is_a_configuration_error() {
    let mut config = nap_central::ServeConfig::default();
    config.approval.rules = vec![nap_central::config::ApprovalRuleSettings {
        command: None,
        labels: Default::default(),
        min_approvals: 6,
        approver: None,
    }];
    let error = config.approval.policy().expect_err("refused");
    assert!(error.to_string().contains("rule 1"), "{error}");
    config.approval.rules[0].min_approvals = 5;
    assert_eq!(config.approval.policy().expect("valid").rules.len(), 1);
}
