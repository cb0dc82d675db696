//! v0.3 rollouts through the operator API (spec §8.3): a canary-then-rolling
//! deploy to a labelled set of nodes halts at its error count, pause, resume
//! and abort reach it, per-node states are reported, and bad requests are
//! refused with nothing started.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use nap_central::AppEvent;
use nap_central::store::Storage;
use nap_core::central::CommandState;
use nap_core::central::rollout::{RolloutState, TargetState};
use nap_core::wire::{AgentMessage, CentralMessage, CommandResult};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// A registered, connected node with these labels.
async fn labelled_node(central: &Central, labels: &[(&str, &str)]) -> (NodeKey, Ws) {
    let key = node_key();
    register_labelled(central, &key, labels).await;
    let mut ws = connect(central, &good_token(&key)).await.expect("upgraded");
    assert!(matches!(
        next_message(&mut ws).await,
        CentralMessage::Welcome(_)
    ));
    (key, ws)
}

/// What the nodes were sent, each with its node.
type Sent = Arc<std::sync::Mutex<Vec<(nap_core::NodeId, nap_core::wire::Execute)>>>;

/// Answers every `execute` the node gets: the first `succeed` across all
/// nodes sharing `answered` succeed, the rest fail (exit 1).
fn answer(ws: Ws, answered: Arc<AtomicUsize>, succeed: usize) {
    answer_keeping(ws, nap_core::NodeId::from_u128(0), answered, succeed, None);
}

/// [`answer`], keeping what `node_id` was sent in `sent`.
fn answer_keeping(
    mut ws: Ws,
    node_id: nap_core::NodeId,
    answered: Arc<AtomicUsize>,
    succeed: usize,
    sent: Option<Sent>,
) {
    tokio::spawn(async move {
        while let Some(Ok(frame)) = ws.next().await {
            let Message::Text(text) = frame else { continue };
            let Ok(CentralMessage::Execute(e)) =
                nap_core::decode::<CentralMessage>(&text, &nap_core::Limits::default())
            else {
                continue;
            };
            let request_id = e.request_id.expect("a request id");
            if let Some(sent) = &sent {
                sent.lock().expect("lock").push((node_id, e));
            }
            let ok = answered.fetch_add(1, Ordering::SeqCst) < succeed;
            let result = CommandResult {
                request_id,
                success: ok,
                result: String::new(),
                timestamp: nap_core::WallTime::from(chrono::Utc::now()),
                exit_code: Some(if ok { 0 } else { 1 }),
                stderr: None,
                duration_ms: None,
                truncated: false,
                error: None,
            };
            let text = nap_core::encode(&AgentMessage::from(result)).expect("encode");
            if ws.send(Message::text(text)).await.is_err() {
                return;
            }
        }
    });
}

async fn post(central: &Central, path: &str, body: Value) -> (u16, Value) {
    http("POST", &central.api(path), Some(&central.admin), Some(body)).await
}

async fn rollout_ends(events: &mut tokio::sync::broadcast::Receiver<AppEvent>) -> RolloutState {
    let mut ended = None;
    wait_for(events, Duration::from_secs(30), |e| match e {
        AppEvent::Rollout { state, .. } if state.is_terminal() => {
            ended = Some(*state);
            true
        }
        _ => false,
    })
    .await;
    ended.expect("the rollout ended")
}

#[tokio::test]
async fn a_canary_then_rolling_rollout_to_a_labelled_set_halts_at_its_error_count() {
    let central = central("rollout_halts", |_| {}).await;
    let answered = Arc::new(AtomicUsize::new(0));
    for _ in 0..5 {
        let (_, ws) = labelled_node(&central, &[("role", "web"), ("env", "prod")]).await;
        answer(ws, Arc::clone(&answered), 2);
    }
    let (db, _db_ws) = labelled_node(&central, &[("role", "db"), ("env", "prod")]).await;

    let (status, listed) = http(
        "GET",
        &central.api("/api/v1/nodes?selector=role%3Dweb,env%3Dprod"),
        Some(&central.viewer),
        None,
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["nodes"].as_array().map(Vec::len), Some(5));

    let request = json!({
        "type": "broadcast",
        "command": "execute",
        "selector": "role=web,env=prod",
        "params": { "command": "uptime" },
        "strategy": {
            "canary": 1, "maxConcurrency": "40%", "maxErrors": 1, "errorMode": "strict",
        },
    });
    let mut dry = request.clone();
    dry["dryRun"] = json!(true);
    let (status, plan) = post(&central, "/api/v1/rollouts", dry).await;
    assert_eq!(status, 200, "{plan}");
    assert_eq!(
        plan["limits"],
        json!({ "targets": 5, "canary": 1, "maxConcurrency": 2, "maxErrors": 1, "strictInFlight": 2 })
    );
    assert!(
        plan["targets"]
            .as_array()
            .is_some_and(|t| !t.contains(&json!(db.id))),
        "the db node is not selected"
    );
    assert_eq!(
        answered.load(Ordering::SeqCst),
        0,
        "a dry run starts nothing"
    );

    let mut events = central.events();
    let (status, created) = post(&central, "/api/v1/rollouts", request).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["targets"], 5);
    assert_eq!(rollout_ends(&mut events).await, RolloutState::Halted);

    let id = created["rolloutId"].as_str().expect("id");
    let (status, report) = http(
        "GET",
        &central.api(&format!("/api/v1/rollouts/{id}")),
        Some(&central.viewer),
        None,
    )
    .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["state"], "halted");
    assert_eq!(report["targetCount"], 5);
    assert_eq!(report["counts"]["succeeded"], 2, "{report}");
    assert_eq!(
        report["counts"]["failed"], 2,
        "strict: never more than maxErrors + 1: {report}"
    );
    assert_eq!(report["counts"]["cancelled"], 1, "never started: {report}");
    let targets = report["targets"].as_array().expect("targets");
    assert_eq!(targets.len(), 5);
    assert!(targets.iter().all(|t| t["nodeId"] != json!(db.id)));
    let audit = central.running.store().all_audit().await.expect("audit");
    assert!(
        audit
            .iter()
            .any(|e| e.action == "rollout.create" && e.subject == id)
    );
}

#[tokio::test]
async fn pause_resume_and_abort_through_the_api() {
    let central = central("rollout_controls", |_| {}).await;
    let mut held = Vec::new();
    let mut names = Vec::new();
    for _ in 0..3 {
        // They never answer: what starts stays in flight.
        let (key, ws) = labelled_node(&central, &[("role", "web")]).await;
        names.push(format!("node-{}", &key.id.to_string()[..8]));
        held.push(ws);
    }
    let (status, created) = post(
        &central,
        "/api/v1/rollouts",
        json!({
            "command": "execute", "targets": names, "params": { "command": "uptime" },
            "strategy": { "maxConcurrency": 1 },
        }),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["rolloutId"].as_str().expect("id").to_owned();
    let path = |what: &str| format!("/api/v1/rollouts/{id}/{what}");

    let (status, body) = post(&central, &path("pause"), json!({})).await;
    assert_eq!((status, &body["state"]), (200, &json!("paused")), "{body}");
    let (status, body) = post(&central, &path("pause"), json!({})).await;
    assert_eq!(status, 409, "paused already: {body}");
    let (status, body) = post(&central, &path("resume"), json!({})).await;
    assert_eq!((status, &body["state"]), (200, &json!("rolling")), "{body}");
    let (status, body) = post(&central, &path("pause"), json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(&central, &path("abort"), json!({})).await;
    assert_eq!(
        (status, &body["state"]),
        (200, &json!("aborted")),
        "abort while paused: {body}"
    );
    let (status, body) = post(&central, &path("resume"), json!({})).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("ended")),
        "{body}"
    );

    let mut events = central.events();
    let (status, report) = http(
        "GET",
        &central.api(&format!("/api/v1/rollouts/{id}?state=cancelled")),
        Some(&central.viewer),
        None,
    )
    .await;
    assert_eq!(status, 200, "{report}");
    if report["counts"]["cancelled"] != 2 {
        // The cancels are written in order with the rest; wait for them.
        wait_for(&mut events, Duration::from_secs(10), |e| {
            matches!(e, AppEvent::Rollout { .. })
        })
        .await;
    }
    let (_, report) = http(
        "GET",
        &central.api(&format!("/api/v1/rollouts/{id}?state=cancelled")),
        Some(&central.viewer),
        None,
    )
    .await;
    assert_eq!(report["state"], "aborted", "{report}");
    assert_eq!(report["counts"]["cancelled"], 2, "{report}");
    assert_eq!(report["targets"].as_array().map(Vec::len), Some(2));

    let (status, listed) = http(
        "GET",
        &central.api("/api/v1/rollouts?limit=10"),
        Some(&central.viewer),
        None,
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["rollouts"][0]["rolloutId"], json!(id));

    let unknown = uuid::Uuid::new_v4();
    let (status, _) = post(
        &central,
        &format!("/api/v1/rollouts/{unknown}/pause"),
        json!({}),
    )
    .await;
    assert_eq!(status, 404);
    drop(held);
}

#[tokio::test]
async fn bad_rollout_requests_are_refused_and_start_nothing() {
    let central = central("rollout_refusals", |_| {}).await;
    let (_key, _ws) = labelled_node(&central, &[("role", "web")]).await;
    let cases = [
        (
            json!({ "command": "execute", "params": { "command": "uptime" } }),
            400,
            "name the targets",
        ),
        (
            json!({ "command": "execute", "targets": ["nope"], "params": { "command": "uptime" } }),
            404,
            "no node",
        ),
        (
            json!({ "command": "execute", "selector": "role=db", "params": { "command": "uptime" } }),
            400,
            "no node matches",
        ),
        (
            json!({ "command": "execute", "targets": "all", "params": { "command": "uptime" },
                    "strategy": { "maxErrors": "150%" } }),
            400,
            "percentage",
        ),
        (
            json!({ "command": "execute", "targets": "all", "params": { "command": "uptime" },
                    "strategy": { "maxParallel": 3 } }),
            400,
            "unknown field",
        ),
        (
            json!({ "command": "reboot", "targets": "all" }),
            400,
            "not a rollout request",
        ),
        (
            json!({ "command": "execute", "targets": "all", "selector": "=web",
                    "params": { "command": "uptime" } }),
            400,
            "selector",
        ),
    ];
    for (body, status, says) in cases {
        let (got, answer) = post(&central, "/api/v1/rollouts", body.clone()).await;
        assert_eq!(got, status, "{body} → {answer}");
        assert!(
            answer["error"].as_str().is_some_and(|e| e.contains(says)),
            "{body} → {answer}"
        );
    }
    let (status, _) = http(
        "POST",
        &central.api("/api/v1/rollouts"),
        Some(&central.viewer),
        Some(json!({ "command": "execute", "targets": "all", "params": { "command": "uptime" } })),
    )
    .await;
    assert_eq!(status, 403, "a viewer cannot start one");
    let (_, listed) = http(
        "GET",
        &central.api("/api/v1/rollouts"),
        Some(&central.viewer),
        None,
    )
    .await;
    assert_eq!(listed["rollouts"], json!([]), "nothing was created");
}

#[tokio::test]
async fn a_rollout_goes_on_where_it_was_after_central_restarts() {
    let first = central("rollout_restart", |c| c.rollout_hold_s = 0).await;
    let mut keys = Vec::new();
    let mut sockets = Vec::new();
    for _ in 0..3 {
        let (key, ws) = labelled_node(&first, &[("role", "web")]).await;
        keys.push(key);
        sockets.push(ws);
    }
    let mut started = first.events();
    let (status, created) = post(
        &first,
        "/api/v1/rollouts",
        json!({
            "command": "execute", "selector": "role=web", "params": { "command": "uptime" },
            "strategy": { "maxConcurrency": 1, "offline": "wait" },
        }),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["rolloutId"].as_str().expect("id").to_owned();
    // One target has its command when central goes down, unanswered.
    let sent = wait_for(&mut started, Duration::from_secs(10), |e| {
        matches!(
            e,
            AppEvent::RolloutTarget {
                state: TargetState::Command(CommandState::Sent),
                ..
            }
        )
    })
    .await;
    let AppEvent::RolloutTarget { node_id, .. } = sent else {
        unreachable!("matched above")
    };
    let holder = keys.iter().position(|k| k.id == node_id).expect("a target");
    loop {
        if let CentralMessage::Execute(_) = next_message(&mut sockets[holder]).await {
            break;
        }
    }
    let Central {
        running,
        dir,
        ca,
        admin,
        viewer,
    } = first;
    let config = running.config.clone();
    running.shutdown().await;
    drop(sockets);

    let again = Central {
        running: nap_central::runtime::start(config).await.expect("restarts"),
        dir,
        ca,
        admin,
        viewer,
    };
    let mut events = again.events();
    let answered = Arc::new(AtomicUsize::new(0));
    for key in &keys {
        let mut ws = connect(&again, &good_token(key)).await.expect("back");
        assert!(matches!(
            next_message(&mut ws).await,
            CentralMessage::Welcome(_)
        ));
        answer(ws, Arc::clone(&answered), usize::MAX);
    }
    // The holder gets its command again (never answered), then the rest,
    // one at a time, each once.
    assert_eq!(rollout_ends(&mut events).await, RolloutState::Succeeded);
    assert_eq!(answered.load(Ordering::SeqCst), 3, "each target ran once");
    let (_, report) = http(
        "GET",
        &again.api(&format!("/api/v1/rollouts/{id}")),
        Some(&again.viewer),
        None,
    )
    .await;
    assert_eq!(report["state"], "succeeded", "{report}");
    assert_eq!(report["counts"]["succeeded"], 3, "{report}");
}

#[tokio::test]
async fn a_rollout_that_needs_approval_waits_for_it_and_each_target_gets_its_proof() {
    use nap_central::config::ApprovalRuleSettings;
    use nap_core::crypto::AwsLc;
    let central = central("rollout_approval", |config| {
        config.approval.rules = vec![ApprovalRuleSettings {
            command: Some("uptime".into()),
            labels: Default::default(),
            min_approvals: 1,
            approver: None,
        }];
    })
    .await;
    let sent: Sent = Arc::default();
    let answered = Arc::new(AtomicUsize::new(0));
    for _ in 0..3 {
        let (key, ws) = labelled_node(&central, &[("role", "web")]).await;
        let answered = Arc::clone(&answered);
        answer_keeping(ws, key.id, answered, usize::MAX, Some(Arc::clone(&sent)));
    }
    let request = json!({
        "command": "execute",
        "targets": "all",
        "params": { "command": "uptime" },
        "strategy": { "maxConcurrency": "100%" },
    });
    let (status, refused) = post(&central, "/api/v1/rollouts", request.clone()).await;
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("approval rule 1")),
        "{refused}"
    );

    let mut asked = request.clone();
    asked["requiresApproval"] = json!(true);
    asked["reason"] = json!("check the web tier");
    let mut events = central.events();
    let (status, created) = post(&central, "/api/v1/rollouts", asked.clone()).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["state"], "awaiting_approval");
    let digest = created["approval"]["digest"]
        .as_str()
        .expect("a digest")
        .to_owned();
    let id = created["rolloutId"].as_str().expect("id").to_owned();

    let (status, own) = post(
        &central,
        &format!("/api/v1/rollouts/{id}/approve"),
        json!({ "digest": digest }),
    )
    .await;
    assert_eq!(status, 403, "the requester cannot approve: {own}");

    let bob = person_token(&central, "bob").await;
    let (_, listed) = http(
        "GET",
        &central.api("/api/v1/approvals?mine=true"),
        Some(&bob),
        None,
    )
    .await;
    let item = listed["approvals"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["rolloutId"] == json!(id)))
        .unwrap_or_else(|| panic!("bob is asked: {listed}"));
    assert_eq!(item["digest"], json!(digest));
    assert_eq!(item["targets"], 3);
    let (_, own) = http(
        "GET",
        &central.api("/api/v1/approvals?mine=true"),
        Some(&central.admin),
        None,
    )
    .await;
    assert!(
        own["approvals"]
            .as_array()
            .is_some_and(|a| a.iter().all(|i| i["rolloutId"] != json!(id))),
        "the requester is not asked: {own}"
    );
    let approve = |digest: String| {
        let (bob, url) = (
            bob.clone(),
            central.api(&format!("/api/v1/rollouts/{id}/approve")),
        );
        async move { http("POST", &url, Some(&bob), Some(json!({ "digest": digest }))).await }
    };
    let (status, wrong) = approve("00".repeat(32)).await;
    assert_eq!(status, 409, "another digest: {wrong}");
    assert!(
        sent.lock().expect("lock").is_empty(),
        "nothing before approval"
    );
    let (status, approved) = approve(digest.clone()).await;
    assert_eq!(status, 200, "{approved}");
    assert_eq!(approved["approvedBy"], json!(["bob"]));
    assert_eq!(rollout_ends(&mut events).await, RolloutState::Succeeded);

    let (_, report) = http(
        "GET",
        &central.api(&format!("/api/v1/rollouts/{id}")),
        Some(&central.viewer),
        None,
    )
    .await;
    assert_eq!(report["approval"]["approvedBy"], json!(["bob"]));
    let root: [u8; 32] = hex::decode(report["targetsRoot"].as_str().expect("a root"))
        .expect("hex")
        .try_into()
        .expect("32 bytes");
    let sent = sent.lock().expect("lock").clone();
    assert_eq!(sent.len(), 3, "each target once");
    for (node_id, execute) in &sent {
        let approval = execute.rollout_approval.as_ref().expect("the approval");
        assert!(!execute.requires_approval, "not held: approved already");
        assert_eq!(approval.approved_by, "bob");
        let proof: Vec<[u8; 32]> = approval
            .proof
            .iter()
            .map(|h| hex::decode(h).expect("hex").try_into().expect("32 bytes"))
            .collect();
        let request_id = execute.request_id.expect("a request id");
        assert_eq!(
            nap_core::target_set::root_from_proof(
                &AwsLc,
                *node_id,
                request_id,
                approval.index as usize,
                approval.targets as usize,
                &proof
            ),
            Some(root),
            "the proof leads to the listed root"
        );
        let message = CentralMessage::Execute(execute.clone());
        assert_eq!(
            nap_core::signed_approval::rollout_digest(
                &AwsLc,
                approval.rollout_id,
                approval.targets as usize,
                &root,
                &message,
                approval.expires
            ),
            digest,
            "what the node computes is what bob approved"
        );
    }

    // Rejected: nothing starts, every target cancelled.
    let (_, second) = post(&central, "/api/v1/rollouts", asked).await;
    let second_id = second["rolloutId"].as_str().expect("id").to_owned();
    let (status, rejected) = http(
        "POST",
        &central.api(&format!("/api/v1/rollouts/{second_id}/reject")),
        Some(&bob),
        Some(json!({ "reason": "not during the sale" })),
    )
    .await;
    assert_eq!(status, 200, "{rejected}");
    assert_eq!(rejected["state"], "rejected");
    assert_eq!(rollout_ends(&mut events).await, RolloutState::Rejected);
    let audit = central.running.store().all_audit().await.expect("audit");
    for (action, subject) in [("rollout.approve", &id), ("rollout.reject", &second_id)] {
        assert!(
            audit
                .iter()
                .any(|e| e.action == action && e.subject == *subject),
            "{action} audited"
        );
    }
}
