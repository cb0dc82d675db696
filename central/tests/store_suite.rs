//! One test suite, run against both storage backends: embedded SQLite always,
//! and the real PostgreSQL at `NAP_TEST_DATABASE_URL` (skipped with a
//! message when unset, unless `NAP_REQUIRE_SERVICES` makes it mandatory).

use std::collections::BTreeMap;
use std::time::Duration;

use nap_central::store::postgres::PgStore;
use nap_central::store::sqlite::SqliteStore;
use nap_central::store::{
    CommandRecord, NodeRecord, SpentToken, StateChange, Storage, StoreError, TokenRecord,
    first_broken,
};
use nap_core::central::{CommandState, ResultRecord};
use nap_core::testing::sample;
use nap_core::wire::{
    Alert, AlertData, AlertState, CentralMessage, CommandResult, Execute, NodeStatus, Severity,
    Telemetry,
};
use nap_core::{NodeId, RequestId, WallTime};

fn t0() -> WallTime {
    WallTime::from_unix_millis(1_760_522_400_000).expect("valid")
}

fn node(n: u128) -> NodeRecord {
    NodeRecord {
        id: NodeId::from_u128(n),
        name: format!("node-{n}"),
        public_key_pem: "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n"
            .into(),
        labels: BTreeMap::from([("env".into(), "test".into())]),
        created_at: t0(),
        revoked: false,
        status: None,
        last_seen: None,
        agent_version: None,
    }
}

fn telemetry(n: u128, minute: i64, cpu: f64) -> Telemetry {
    Telemetry {
        node_id: NodeId::from_u128(n),
        timestamp: t0().add_millis(minute * 60_000),
        data: sample(cpu, 40.0),
        dropped_samples: 0,
    }
}

fn command(id: u128, n: u128) -> CommandRecord {
    let message = CentralMessage::Execute(Execute {
        request_id: Some(RequestId::from_u128(id)),
        command: "uptime".into(),
        args: vec![],
        timeout: Some(30_000),
        hold_until: None,
        requested_by: None,
        rollout_approval: None,
        requires_approval: false,
        approver: None,
    });
    CommandRecord {
        request_id: RequestId::from_u128(id),
        node_id: NodeId::from_u128(n),
        kind: "execute".into(),
        message: serde_json::to_value(&message).expect("json"),
        state: CommandState::Queued,
        requester: "alice".into(),
        approver: None,
        timeout_ms: 30_000,
        created_at: t0(),
        updated_at: t0(),
        result: None,
        approval: None,
    }
}

fn result(id: u128, output: &str) -> CommandResult {
    CommandResult {
        request_id: RequestId::from_u128(id),
        success: true,
        result: output.into(),
        timestamp: t0(),
        exit_code: Some(0),
        stderr: None,
        duration_ms: Some(5),
        truncated: false,
        error: None,
    }
}

async fn nodes_are_registered_listed_and_revoked(store: &impl Storage) {
    store.add_node(node(1)).await.expect("add");
    store.add_node(node(2)).await.expect("add");
    assert!(matches!(
        store.add_node(node(1)).await,
        Err(StoreError::Conflict)
    ));
    let all = store.list_nodes().await.expect("list");
    assert_eq!(
        all.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
        ["node-1", "node-2"]
    );
    assert_eq!(all[0].labels.get("env").map(String::as_str), Some("test"));
    assert!(
        store
            .revoke_node(NodeId::from_u128(2))
            .await
            .expect("revoke")
    );
    assert!(
        !store
            .revoke_node(NodeId::from_u128(9))
            .await
            .expect("revoke")
    );
    let two = store
        .get_node(NodeId::from_u128(2))
        .await
        .expect("get")
        .expect("exists");
    assert!(two.revoked);
    assert!(
        store
            .get_node(NodeId::from_u128(9))
            .await
            .expect("get")
            .is_none()
    );

    store
        .record_status(NodeId::from_u128(1), NodeStatus::Online, None, t0())
        .await
        .expect("status");
    store
        .record_status(
            NodeId::from_u128(1),
            NodeStatus::Offline,
            Some("silent".into()),
            t0().add_millis(1000),
        )
        .await
        .expect("status");
    store
        .touch_node(
            NodeId::from_u128(1),
            t0().add_millis(2000),
            Some("0.1.0".into()),
        )
        .await
        .expect("touch");
    let one = store
        .get_node(NodeId::from_u128(1))
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(one.status, Some(NodeStatus::Offline));
    assert_eq!(one.agent_version.as_deref(), Some("0.1.0"));
    assert_eq!(one.last_seen, Some(t0().add_millis(2000)));
    let history = store
        .status_history(NodeId::from_u128(1))
        .await
        .expect("history");
    assert_eq!(
        history.iter().map(|(_, s)| *s).collect::<Vec<_>>(),
        [NodeStatus::Online, NodeStatus::Offline]
    );
}

async fn telemetry_is_stored_once_and_queried(store: &impl Storage) {
    store.add_node(node(1)).await.expect("add");
    let batch: Vec<Telemetry> = (0..10)
        .map(|m| telemetry(1, m, 10.0 * f64::from(u8::try_from(m).unwrap_or(0))))
        .collect();
    assert_eq!(store.insert_telemetry(&batch).await.expect("insert"), 10);
    // A replay, overlapping and with a duplicate inside the batch.
    let mut replay = batch[5..].to_vec();
    replay.push(telemetry(1, 10, 5.0));
    replay.push(telemetry(1, 10, 5.0));
    assert_eq!(store.insert_telemetry(&replay).await.expect("insert"), 1);
    assert_eq!(
        store
            .count_telemetry(NodeId::from_u128(1))
            .await
            .expect("count"),
        11
    );
    assert_eq!(store.insert_telemetry(&[]).await.expect("insert"), 0);

    let raw = store
        .query_telemetry(
            NodeId::from_u128(1),
            t0(),
            t0().add_millis(5 * 60_000),
            None,
        )
        .await
        .expect("query");
    assert_eq!(raw.len(), 5);
    assert_eq!(raw[2].cpu, 20.0);
    assert!(raw[0].data.is_some());
    let buckets = store
        .query_telemetry(
            NodeId::from_u128(1),
            t0(),
            t0().add_millis(10 * 60_000),
            Some(Duration::from_secs(300)),
        )
        .await
        .expect("query");
    assert_eq!(buckets.len(), 2);
    assert_eq!(buckets[0].samples, 5);
    assert!((buckets[0].cpu - 20.0).abs() < 1e-9, "{}", buckets[0].cpu);
    assert!((buckets[1].cpu - 70.0).abs() < 1e-9, "{}", buckets[1].cpu);
}

async fn a_command_keeps_its_first_terminal_state_and_first_result(store: &impl Storage) {
    store.insert_command(command(1, 1)).await.expect("insert");
    assert!(matches!(
        store.insert_command(command(1, 1)).await,
        Err(StoreError::Conflict)
    ));
    store
        .set_command_state(RequestId::from_u128(1), CommandState::Sent, t0())
        .await
        .expect("state");
    assert_eq!(store.open_commands().await.expect("open").len(), 1);
    assert_eq!(
        store
            .record_result(NodeId::from_u128(1), &result(1, "first"), t0())
            .await
            .expect("result"),
        ResultRecord::Stored { first: true }
    );
    assert_eq!(
        store
            .record_result(NodeId::from_u128(1), &result(1, "second"), t0())
            .await
            .expect("result"),
        ResultRecord::Stored { first: false }
    );
    store
        .set_command_state(RequestId::from_u128(1), CommandState::Succeeded, t0())
        .await
        .expect("state");
    store
        .set_command_state(RequestId::from_u128(1), CommandState::TimedOut, t0())
        .await
        .expect("state");
    let c = store
        .get_command(RequestId::from_u128(1))
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(c.state, CommandState::Succeeded);
    assert_eq!(c.result.map(|r| r.result).as_deref(), Some("first"));
    assert_eq!(c.requester, "alice");
    assert!(store.open_commands().await.expect("open").is_empty());
    assert!(
        store
            .get_command(RequestId::from_u128(2))
            .await
            .expect("get")
            .is_none()
    );
}

async fn a_batch_of_results_keeps_each_command_s_first_answer_from_its_own_node(
    store: &impl Storage,
) {
    store
        .insert_commands(vec![command(1, 1), command(2, 1), command(3, 2)])
        .await
        .expect("insert");
    store
        .record_result(NodeId::from_u128(1), &result(2, "earlier"), t0())
        .await
        .expect("result");
    let records = store
        .record_results(
            vec![
                (NodeId::from_u128(1), result(1, "first")),
                // The same command answered twice in one batch: the first counts.
                (NodeId::from_u128(1), result(1, "again")),
                // Answered before this batch.
                (NodeId::from_u128(1), result(2, "later")),
                // Node 1 answering node 2's command.
                (NodeId::from_u128(1), result(3, "forged")),
                // A command the store does not know.
                (NodeId::from_u128(1), result(9, "stray")),
                (NodeId::from_u128(2), result(3, "own")),
            ],
            t0(),
        )
        .await
        .expect("results");
    assert_eq!(
        records,
        vec![
            ResultRecord::Stored { first: true },
            ResultRecord::Stored { first: false },
            ResultRecord::Stored { first: false },
            ResultRecord::WrongNode,
            ResultRecord::Stored { first: false },
            ResultRecord::Stored { first: true },
        ]
    );
    let output = |id| async move {
        store
            .get_command(RequestId::from_u128(id))
            .await
            .expect("get")
            .and_then(|c| c.result)
            .map(|r| r.result)
    };
    assert_eq!(output(1).await.as_deref(), Some("first"));
    assert_eq!(output(2).await.as_deref(), Some("earlier"));
    assert_eq!(output(3).await.as_deref(), Some("own"));
    assert!(
        store
            .get_command(RequestId::from_u128(9))
            .await
            .expect("get")
            .is_none()
    );
}

async fn a_batch_of_state_changes_applies_in_order(store: &impl Storage) {
    store.add_node(node(1)).await.expect("node");
    store.insert_command(command(1, 1)).await.expect("insert");
    let id = RequestId::from_u128(1);
    let node_id = NodeId::from_u128(1);
    let later = t0().add_millis(1000);
    let batch = vec![
        StateChange::Status {
            node_id,
            status: NodeStatus::Online,
            reason: None,
            at: t0(),
        },
        StateChange::Command {
            request_id: id,
            state: CommandState::Sent,
            at: t0(),
        },
        StateChange::Command {
            request_id: id,
            state: CommandState::Succeeded,
            at: later,
        },
        // A late second verdict loses: the first terminal state is final.
        StateChange::Command {
            request_id: id,
            state: CommandState::TimedOut,
            at: later,
        },
        StateChange::Status {
            node_id,
            status: NodeStatus::Offline,
            reason: Some("disconnected".into()),
            at: later,
        },
    ];
    store.apply_state_changes(batch).await.expect("batch");
    let c = store.get_command(id).await.expect("get").expect("exists");
    assert_eq!(c.state, CommandState::Succeeded);
    let history = store.status_history(node_id).await.expect("history");
    assert_eq!(
        history.iter().map(|(_, s)| *s).collect::<Vec<_>>(),
        vec![NodeStatus::Online, NodeStatus::Offline]
    );
    let n = store.get_node(node_id).await.expect("get").expect("exists");
    assert_eq!(n.status, Some(NodeStatus::Offline));
}

async fn a_batch_of_commands_is_inserted_whole_or_not_at_all(store: &impl Storage) {
    let batch: Vec<CommandRecord> = (1..=5).map(|i| command(i, i)).collect();
    store.insert_commands(batch).await.expect("insert");
    assert_eq!(store.open_commands().await.expect("open").len(), 5);
    // Request 3 exists already: nothing of this batch is kept.
    let clashing = vec![command(10, 1), command(3, 3), command(11, 1)];
    assert!(matches!(
        store.insert_commands(clashing).await,
        Err(StoreError::Conflict)
    ));
    assert!(
        store
            .get_command(RequestId::from_u128(10))
            .await
            .expect("get")
            .is_none()
    );
    assert_eq!(store.open_commands().await.expect("open").len(), 5);
}

async fn a_node_s_open_commands_are_found_and_old_queued_ones_expire(store: &impl Storage) {
    let mut old = command(1, 1);
    old.created_at = t0();
    let mut sent = command(2, 1);
    sent.created_at = t0().add_millis(1);
    let mut fresh = command(3, 1);
    fresh.created_at = t0().add_millis(7_200_000);
    let other_node = command(4, 2);
    store
        .insert_commands(vec![old, sent, fresh, other_node])
        .await
        .expect("insert");
    store
        .set_command_state(RequestId::from_u128(2), CommandState::Sent, t0())
        .await
        .expect("state");
    let ids = |records: Vec<CommandRecord>| {
        records
            .into_iter()
            .map(|c| c.request_id)
            .collect::<Vec<_>>()
    };
    let open = store
        .open_commands_for(vec![NodeId::from_u128(1)])
        .await
        .expect("open");
    assert_eq!(
        ids(open),
        vec![
            RequestId::from_u128(1),
            RequestId::from_u128(2),
            RequestId::from_u128(3)
        ],
        "oldest first, only this node's"
    );
    let both = store
        .open_commands_for(vec![NodeId::from_u128(2), NodeId::from_u128(1)])
        .await
        .expect("open");
    assert_eq!(both.len(), 4, "one query for several nodes");

    // An hour after t0: the queued ones that old expire (node 1's first and
    // node 2's), not the sent one, not the fresh one.
    let mut expired = store
        .expire_queued_commands(t0().add_millis(3_600_000), t0().add_millis(3_600_000))
        .await
        .expect("expire");
    expired.sort();
    assert_eq!(
        expired,
        vec![RequestId::from_u128(1), RequestId::from_u128(4)]
    );
    let c = store
        .get_command(RequestId::from_u128(1))
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(c.state, CommandState::Expired);
    let open = store
        .open_commands_for(vec![NodeId::from_u128(1)])
        .await
        .expect("open");
    assert_eq!(
        ids(open),
        vec![RequestId::from_u128(2), RequestId::from_u128(3)]
    );
    // Expiring again finds nothing new.
    let again = store
        .expire_queued_commands(t0().add_millis(3_600_000), t0().add_millis(3_600_000))
        .await
        .expect("expire");
    assert!(again.is_empty());
}

async fn the_audit_log_is_a_hash_chain(store: &impl Storage) {
    for i in 0..5 {
        let entry = store
            .append_audit(
                "alice",
                "command.submit",
                &format!("req-{i}"),
                serde_json::json!({"i": i}),
                t0(),
            )
            .await
            .expect("append");
        assert_eq!(entry.seq, i + 1);
    }
    let all = store.all_audit().await.expect("all");
    assert_eq!(all.len(), 5);
    assert_eq!(first_broken(&all), None);
    assert_eq!(all[1].prev_hash, all[0].hash);
    let newest = store.list_audit(2).await.expect("list");
    assert_eq!(newest.iter().map(|e| e.seq).collect::<Vec<_>>(), [5, 4]);
    // Tampering with an entry breaks the chain there.
    let mut tampered = all.clone();
    tampered[2].subject = "req-x".into();
    assert_eq!(first_broken(&tampered), Some(3));
    let mut removed = all;
    removed.remove(1);
    assert_eq!(first_broken(&removed), Some(3));
}

async fn batch_writes_add_one_chained_audit_record_each(store: &impl Storage) {
    store.add_node(node(1)).await.expect("node");
    store
        .insert_commands(vec![command(1, 1), command(2, 1), command(3, 1)])
        .await
        .expect("insert");
    let node_id = NodeId::from_u128(1);
    store
        .apply_state_changes(vec![
            StateChange::Status {
                node_id,
                status: NodeStatus::Online,
                reason: None,
                at: t0(),
            },
            StateChange::Command {
                request_id: RequestId::from_u128(1),
                state: CommandState::Sent,
                at: t0(),
            },
            StateChange::Status {
                node_id,
                status: NodeStatus::Offline,
                reason: Some("disconnected".into()),
                at: t0().add_millis(5),
            },
        ])
        .await
        .expect("state batch");
    store
        .record_results(
            (1..=3)
                .map(|i| (node_id, result(i, "out")))
                .chain([(node_id, result(1, "again"))])
                .collect(),
            t0(),
        )
        .await
        .expect("results batch");
    let all = store.all_audit().await.expect("audit");
    assert_eq!(first_broken(&all), None, "the batch records are chained");
    assert_eq!(all.len(), 2, "one record per batch: {all:?}");
    let (state, results) = (&all[0], &all[1]);
    assert_eq!(state.action, "state.batch");
    let sessions = state.detail["sessions"].as_array().expect("sessions");
    assert_eq!(sessions.len(), 2, "a session opened and closed");
    assert_eq!(sessions[1]["status"], "offline");
    assert_eq!(sessions[1]["reason"], "disconnected");
    assert_eq!(state.detail["commands"][0]["state"], "sent");
    assert_eq!(results.action, "results.batch");
    let recorded: Vec<&str> = results.detail["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["recorded"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(recorded, ["stored", "stored", "stored", "repeat"]);
}

async fn tokens_alerts_and_events(store: &impl Storage) {
    let record = TokenRecord {
        name: "ops".into(),
        role: "operator".into(),
        user: None,
    };
    store
        .create_api_token("abc123", record.clone(), t0())
        .await
        .expect("token");
    assert_eq!(
        store.find_api_token("abc123").await.expect("find"),
        Some(record)
    );
    assert_eq!(store.find_api_token("nope").await.expect("find"), None);
    let alert = Alert {
        severity: Severity::Critical,
        message: "High CPU usage".into(),
        data: AlertData {
            cpu: Some(95.0),
            duration: Some(300),
            ..AlertData::default()
        },
        rule: Some("cpu_high".into()),
        state: AlertState::Firing,
        timestamp: Some(t0()),
        alert_id: Some(nap_core::AlertId::from_u128(7)),
    };
    // Sent again (its ack was lost): kept once.
    for _ in 0..2 {
        store
            .insert_alert(NodeId::from_u128(1), t0(), &alert)
            .await
            .expect("alert");
    }
    let alerts = store.list_alerts(10).await.expect("alerts");
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].alert, alert);
    // An alert from an agent that names none is kept each time.
    let unnamed = Alert {
        alert_id: None,
        ..alert.clone()
    };
    for _ in 0..2 {
        store
            .insert_alert(NodeId::from_u128(1), t0(), &unnamed)
            .await
            .expect("alert");
    }
    assert_eq!(store.list_alerts(10).await.expect("alerts").len(), 3);
    // A health report sent again is not an error (and is kept once).
    let health: nap_core::wire::Health = serde_json::from_str(
        r#"{"checks":{"agent":"ok","containers":"ok","disk":"ok","memory":"ok","database":"ok"}}"#,
    )
    .expect("health");
    for _ in 0..2 {
        store
            .insert_health(NodeId::from_u128(1), t0(), &health)
            .await
            .expect("health stored idempotently");
    }
    store
        .insert_event(
            "auth_failure",
            serde_json::json!({"reason": "signature"}),
            t0(),
        )
        .await
        .expect("event");
}

async fn a_token_id_is_spent_once_and_forgotten_after_it_is_kept(store: &impl Storage) {
    let node = NodeId::from_u128(7);
    let t0 = WallTime::from_unix_millis(1_760_522_400_000).expect("time");
    let token = |jti: u128, keep_s: i64| SpentToken {
        jti: nap_core::TokenId::from_u128(jti),
        node_id: node,
        keep_until: t0.add_millis(keep_s * 1000),
    };
    // A duplicate within one batch is new only the first time.
    let spent = store
        .spend_token_ids(vec![token(1, 60), token(2, 3660), token(1, 60)])
        .await
        .expect("spend");
    assert_eq!(spent, [true, true, false]);
    // Spent before (as at another process, or before a restart).
    let again = store
        .spend_token_ids(vec![token(2, 3660), token(3, 60)])
        .await
        .expect("spend");
    assert_eq!(again, [false, true]);
    // Past its keeping time an id is forgotten; the others stay spent.
    let gone = store
        .forget_spent_token_ids(t0.add_millis(120_000))
        .await
        .expect("forget");
    assert_eq!(gone, 2);
    let after = store
        .spend_token_ids(vec![token(1, 60), token(2, 3660)])
        .await
        .expect("spend");
    assert_eq!(after, [true, false]);
}

async fn migrating_twice_changes_nothing(store: &impl Storage) {
    store.migrate().await.expect("second migrate");
    assert!(store.list_nodes().await.expect("list").is_empty());
}

async fn a_rollout_is_stored_with_its_targets_and_their_states(store: &impl Storage) {
    use nap_central::store::{RolloutRecord, RolloutTargetRecord};
    use nap_core::RolloutId;
    use nap_core::central::rollout::{RolloutState, TargetState};
    let rollout = |n: u128, minute: i64| RolloutRecord {
        id: RolloutId::from_u128(n),
        requester: "alice".into(),
        message: serde_json::json!({ "type": "health_check" }),
        strategy: serde_json::json!({ "maxConcurrency": "10%" }),
        limits: serde_json::json!({ "targets": 3 }),
        selector: Some("role=web".into()),
        state: RolloutState::Scheduled,
        start_at: t0().add_millis(minute * 60_000),
        created_at: t0().add_millis(minute * 60_000),
        updated_at: t0().add_millis(minute * 60_000),
        approval: None,
    };
    let targets: Vec<RolloutTargetRecord> = (0..3u32)
        .map(|i| RolloutTargetRecord {
            position: i,
            node_id: NodeId::from_u128(u128::from(i) + 1),
            request_id: RequestId::from_u128(900 + u128::from(i)),
            state: TargetState::Pending,
        })
        .collect();
    store
        .insert_rollout(rollout(1, 0), targets.clone())
        .await
        .expect("insert");
    assert!(matches!(
        store.insert_rollout(rollout(1, 0), targets.clone()).await,
        Err(StoreError::Conflict)
    ));
    store
        .apply_state_changes(vec![
            StateChange::Rollout {
                rollout_id: RolloutId::from_u128(1),
                state: RolloutState::Rolling,
                at: t0(),
            },
            StateChange::RolloutTarget {
                rollout_id: RolloutId::from_u128(1),
                node_id: NodeId::from_u128(2),
                state: TargetState::Command(CommandState::Succeeded),
                at: t0(),
            },
            StateChange::RolloutTarget {
                rollout_id: RolloutId::from_u128(1),
                node_id: NodeId::from_u128(3),
                state: TargetState::Skipped,
                at: t0(),
            },
        ])
        .await
        .expect("changes");
    let (got, stored) = store
        .get_rollout(RolloutId::from_u128(1))
        .await
        .expect("get")
        .expect("there");
    assert_eq!(got.state, RolloutState::Rolling);
    assert_eq!(got.selector.as_deref(), Some("role=web"));
    let states: Vec<TargetState> = stored.iter().map(|t| t.state).collect();
    assert_eq!(
        states,
        [
            TargetState::Pending,
            TargetState::Command(CommandState::Succeeded),
            TargetState::Skipped
        ]
    );
    assert_eq!(stored[2].request_id, RequestId::from_u128(902));
    for (n, minute) in [(2, 1), (3, 2)] {
        store
            .insert_rollout(rollout(n, minute), Vec::new())
            .await
            .expect("insert");
    }
    let ids = |page: Vec<RolloutRecord>| page.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let first = store.list_rollouts(None, 2).await.expect("list");
    assert_eq!(
        ids(first.clone()),
        [RolloutId::from_u128(3), RolloutId::from_u128(2)]
    );
    let last = first.last().expect("a page");
    let rest = store
        .list_rollouts(Some((last.created_at, last.id)), 2)
        .await
        .expect("list");
    assert_eq!(
        ids(rest),
        [RolloutId::from_u128(1)],
        "newest first, by cursor"
    );
    assert!(
        store
            .get_rollout(RolloutId::from_u128(9))
            .await
            .expect("get")
            .is_none()
    );
}

async fn a_rollout_s_approval_is_stored_and_each_approver_counted_once(store: &impl Storage) {
    use nap_central::store::{RolloutRecord, RolloutTargetRecord, StoredApproval};
    use nap_core::RolloutId;
    use nap_core::central::rollout::{RolloutState, TargetState};
    use nap_core::wire::SignedApproval;
    let id = RolloutId::from_u128(7);
    let approval = StoredApproval {
        requester: "alice".into(),
        approver: Some("group:dba".into()),
        min_approvals: 2,
        reason: "patch the fleet".into(),
        digest: "ab12".into(),
        expires_at: t0().add_millis(3_600_000),
        approved_by: Vec::new(),
        signatures: Vec::new(),
    };
    let record = RolloutRecord {
        id,
        requester: "alice".into(),
        message: serde_json::json!({ "type": "execute", "command": "uptime" }),
        strategy: serde_json::json!({}),
        limits: serde_json::json!({ "targets": 1 }),
        selector: None,
        state: RolloutState::AwaitingApproval,
        start_at: t0(),
        created_at: t0(),
        updated_at: t0(),
        approval: Some(approval.clone()),
    };
    let target = RolloutTargetRecord {
        position: 0,
        node_id: NodeId::from_u128(1),
        request_id: RequestId::from_u128(901),
        state: TargetState::Pending,
    };
    store
        .insert_rollout(record, vec![target])
        .await
        .expect("insert");
    let signed = SignedApproval {
        user: "bob".into(),
        certificate: "nap-approver 1\n".into(),
        signature: "c2ln".into(),
    };
    store
        .add_rollout_approver(id, "bob", Some(&signed))
        .await
        .expect("bob");
    store
        .add_rollout_approver(id, "bob", Some(&signed))
        .await
        .expect("bob again");
    store
        .add_rollout_approver(id, "carol", None)
        .await
        .expect("carol");
    let awaiting = store.rollouts_awaiting_approval().await.expect("awaiting");
    assert_eq!(awaiting.iter().map(|r| r.id).collect::<Vec<_>>(), [id]);
    assert_eq!(store.open_rollout_ids().await.expect("open"), [id]);
    let (stored, _) = store.get_rollout(id).await.expect("get").expect("there");
    assert_eq!(stored.state, RolloutState::AwaitingApproval);
    let stored = stored.approval.expect("its approval");
    assert_eq!(stored.approved_by, ["bob", "carol"]);
    assert_eq!(stored.signatures, [signed]);
    assert_eq!(stored.digest, approval.digest);
    assert_eq!(stored.min_approvals, 2);
}

macro_rules! suite {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    let store = SqliteStore::memory().expect("open");
                    store.migrate().await.expect("migrate");
                    super::$name(&store).await;
                }
            )+
        }
        mod postgres {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(store) = pg(stringify!($name)).await else { return };
                    super::$name(&store).await;
                }
            )+
        }
    };
}

/// A fresh schema in the test database, or `None` (with a message) when no
/// database is configured and none is required.
async fn pg(test: &str) -> Option<PgStore> {
    let Ok(url) = std::env::var("NAP_TEST_DATABASE_URL") else {
        assert!(
            std::env::var_os("NAP_REQUIRE_SERVICES").is_none(),
            "NAP_REQUIRE_SERVICES is set but NAP_TEST_DATABASE_URL is not"
        );
        eprintln!(
            "SKIPPED {test} on PostgreSQL: set NAP_TEST_DATABASE_URL (e.g. postgres://postgres@127.0.0.1/test)"
        );
        return None;
    };
    let schema: String = format!("nap_store_{test}").chars().take(60).collect();
    PgStore::drop_schema(&url, &schema)
        .await
        .expect("drop the old test schema");
    let store = PgStore::connect(&url, Some(&schema), 4)
        .await
        .expect("connect to the test database");
    store.migrate().await.expect("migrate");
    Some(store)
}

suite!(
    nodes_are_registered_listed_and_revoked,
    telemetry_is_stored_once_and_queried,
    a_command_keeps_its_first_terminal_state_and_first_result,
    a_batch_of_results_keeps_each_command_s_first_answer_from_its_own_node,
    a_batch_of_state_changes_applies_in_order,
    a_batch_of_commands_is_inserted_whole_or_not_at_all,
    a_node_s_open_commands_are_found_and_old_queued_ones_expire,
    the_audit_log_is_a_hash_chain,
    batch_writes_add_one_chained_audit_record_each,
    tokens_alerts_and_events,
    a_token_id_is_spent_once_and_forgotten_after_it_is_kept,
    migrating_twice_changes_nothing,
    a_rollout_is_stored_with_its_targets_and_their_states,
    a_rollout_s_approval_is_stored_and_each_approver_counted_once,
);

/// A database too slow for what nodes write in bulk still answers the rest:
/// alerts stuck behind a lock take at most the bulk share of the pool, so a
/// node lookup (what admission needs) gets a connection and answers.
#[tokio::test]
async fn bulk_writes_stuck_on_a_slow_database_leave_connections_for_the_rest() {
    let Some(store) = pg("bulk_share").await else {
        return;
    };
    store.add_node(node(1)).await.expect("node");
    // Every connection of the pool open first: what follows waits on the
    // lock only, never on a connection being made.
    let (a, b, c, d) = tokio::join!(
        store.list_nodes(),
        store.list_nodes(),
        store.list_nodes(),
        store.list_nodes()
    );
    for listed in [a, b, c, d] {
        listed.expect("list");
    }
    let url = std::env::var("NAP_TEST_DATABASE_URL").expect("url");
    let (mut blocker, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("a second session");
    tokio::spawn(conn);
    let lock = blocker.transaction().await.expect("transaction");
    lock.batch_execute("LOCK TABLE nap_store_bulk_share.alerts IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let writes: Vec<_> = (0..8u128)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let alert = Alert {
                    severity: Severity::Warning,
                    message: format!("alert {i}"),
                    data: AlertData::default(),
                    rule: None,
                    state: AlertState::Firing,
                    timestamp: Some(t0()),
                    alert_id: Some(nap_core::AlertId::from_u128(100 + i)),
                };
                store.insert_alert(NodeId::from_u128(1), t0(), &alert).await
            })
        })
        .collect();
    // The pool holds 4: 2 for bulk writes, both now waiting on the lock
    // (their connections may still be opening: waited for, with a bound).
    let waiting = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let row = lock
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                     AND query LIKE 'INSERT INTO alerts%'",
                    &[],
                )
                .await
                .expect("activity");
            let waiting = row.get::<_, i64>(0);
            if waiting >= 2 || writes.iter().any(tokio::task::JoinHandle::is_finished) {
                return waiting;
            }
        }
    })
    .await
    .expect("the bulk writes reach the lock");
    assert_eq!(waiting, 2, "the bulk share of the pool is taken");
    assert_eq!(
        store
            .get_node(NodeId::from_u128(1))
            .await
            .expect("a lookup is answered meanwhile")
            .map(|n| n.id),
        Some(NodeId::from_u128(1))
    );
    lock.commit().await.expect("unlock");
    for write in writes {
        write
            .await
            .expect("task")
            .expect("every alert waited its turn and landed");
    }
    assert_eq!(store.list_alerts(100).await.expect("alerts").len(), 8);
}
