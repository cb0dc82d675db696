//! A real agent (in-process driver, real sandboxed processes) against a real
//! central over TLS on loopback.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use nap_agent::config::{CommandEntry, DeployRecipe, DeployStep, FileConfig};
use nap_agent::driver::Driver;
use nap_agent::keys::NodeKey;
use nap_central::runtime::{Running, start};
use nap_central::store::{NodeRecord, Storage};
use nap_central::{AppEvent, ServeConfig};
use nap_core::central::{CommandState, HubInput, Submission};
use nap_core::wire::{CentralMessage, Deploy, Execute, NodeStatus};
use nap_core::{NodeId, RequestId, WallTime};

struct Setup {
    running: Running,
    dir: tempfile::TempDir,
    node: NodeId,
    config: FileConfig,
}

async fn setup(test: &str) -> Setup {
    setup_with(test, |_| {}).await
}

/// [`setup`], with central's configuration tuned.
async fn setup_with(test: &str, tune: impl FnOnce(&mut ServeConfig)) -> Setup {
    let dir = tempfile::tempdir().expect("dir");
    let certs = nap_central::tls::write_dev_certs(&dir.path().join("certs")).expect("certs");
    let mut config = ServeConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        api_listen: "127.0.0.1:0".parse().expect("addr"),
        tls_cert: certs.cert,
        tls_key: certs.key,
        db: format!("sqlite:{}", dir.path().join(format!("{test}.db")).display()),
        telemetry_ms: 1000,
        ..ServeConfig::default()
    };
    tune(&mut config);
    let running = start(config).await.expect("central");
    let (key, pem) = NodeKey::generate().expect("key");
    let key_path = dir.path().join("node.key");
    std::fs::write(&key_path, pem).expect("write key");
    std::fs::set_permissions(
        &key_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod");
    let node = NodeId::from(uuid::Uuid::new_v4());
    running
        .store()
        .add_node(NodeRecord {
            id: node,
            name: test.into(),
            public_key_pem: key.public_pem(),
            labels: BTreeMap::new(),
            created_at: WallTime::from(chrono::Utc::now()),
            revoked: false,
            status: None,
            last_seen: None,
            agent_version: None,
        })
        .await
        .expect("register");
    let mut commands = BTreeMap::new();
    commands.insert(
        "echo".to_owned(),
        CommandEntry {
            program: PathBuf::from("/bin/echo"),
            args: vec![],
            rest: Some(
                toml::from_str::<BTreeMap<String, nap_agent::config::ArgSpec>>(
                    "a = { pattern = \"[a-z]+\" }",
                )
                .expect("spec")
                .remove("a")
                .expect("a"),
            ),
            max_extra: 4,
            max_timeout_ms: 10_000,
            env: BTreeMap::new(),
            run_as: None,
            approval: Default::default(),
            min_approvals: None,
        },
    );
    let mut deploy = BTreeMap::new();
    deploy.insert(
        "production".to_owned(),
        DeployRecipe {
            steps: vec![DeployStep {
                program: PathBuf::from("/bin/echo"),
                args: vec!["deploying".into(), "{branch}".into()],
                env: BTreeMap::new(),
            }],
            run_as: None,
        },
    );
    let config = FileConfig {
        central: format!("wss://localhost:{}/v1/agent", running.agent_addr.port()),
        ca: certs.ca,
        node_id: node,
        key: key_path,
        state_dir: dir.path().join("state"),
        audience: "nap-central".into(),
        max_running: 4,
        token_lifetime_s: 3600,
        telemetry_buffer: 1440,
        health_buffer: 12,
        alert_buffer: 100,
        close_linger_ms: 2000,
        key_update_interval_ms: 3_600_000,
        max_connection_age_s: 86_400,
        // The agent's own user runs the commands (no `nap-run` needed).
        sandbox: nap_agent::config::SandboxConfig {
            run_as: None,
            ..Default::default()
        },
        commands,
        deploy,
        health: Default::default(),
        application: Default::default(),
        containers: nap_agent::config::ContainerConfig {
            socket: Some(format!("unix://{}/no-engine.sock", dir.path().display())),
        },
        update: Default::default(),
        approval: Default::default(),
    };
    Setup {
        running,
        dir,
        node,
        config,
    }
}

fn start_agent(
    config: &FileConfig,
) -> tokio::task::JoinHandle<anyhow::Result<nap_agent::driver::Exit>> {
    let key = NodeKey::load(&config.key).expect("key");
    let driver = Driver::new(
        config.clone(),
        key,
        PathBuf::from(env!("CARGO_BIN_EXE_nap-agent")),
    )
    .expect("driver");
    tokio::spawn(driver.run())
}

async fn wait_for(
    rx: &mut tokio::sync::broadcast::Receiver<AppEvent>,
    mut pred: impl FnMut(&AppEvent) -> bool,
) -> AppEvent {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match rx.recv().await {
                Ok(e) if pred(&e) => return e,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .expect("the event happened in time")
}

/// Stores a command as the operator API would, in `state`.
async fn record(s: &Setup, id: RequestId, message: &CentralMessage, state: CommandState) {
    let now = WallTime::from(chrono::Utc::now());
    s.running
        .store()
        .insert_command(nap_central::store::CommandRecord {
            request_id: id,
            node_id: s.node,
            kind: nap_core::codec::Message::message_type(message).into(),
            message: serde_json::to_value(message).expect("json"),
            state,
            requester: "test".into(),
            approver: None,
            timeout_ms: 60_000,
            created_at: now,
            updated_at: now,
            result: None,
            approval: None,
        })
        .await
        .expect("insert");
}

async fn submit(s: &Setup, message: CentralMessage) -> RequestId {
    let id = match &message {
        CentralMessage::Execute(e) => e.request_id.expect("id"),
        CentralMessage::Deploy(d) => d.request_id,
        _ => unreachable!(),
    };
    record(s, id, &message, CommandState::Queued).await;
    let node = s.node;
    s.running.hub.input(HubInput::Submit(vec![Submission {
        node_id: node,
        request_id: id,
        message: Some(message),
        timeout: Duration::from_secs(10),
        known: true,
        approval: None,
    }]));
    id
}

fn execute(id: u128, command: &str, args: &[&str]) -> CentralMessage {
    CentralMessage::Execute(Execute {
        request_id: Some(RequestId::from_u128(id)),
        command: command.into(),
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        timeout: None,
        hold_until: None,
        requested_by: None,
        rollout_approval: None,
        requires_approval: false,
        approver: None,
    })
}

async fn terminal(
    s: &Setup,
    rx: &mut tokio::sync::broadcast::Receiver<AppEvent>,
    id: RequestId,
) -> (CommandState, nap_central::store::CommandRecord) {
    let event = wait_for(rx, |e| matches!(e, AppEvent::Command { request_id, state } if *request_id == id && state.is_terminal())).await;
    let AppEvent::Command { state, .. } = event else {
        unreachable!()
    };
    let record = s
        .running
        .store()
        .get_command(id)
        .await
        .expect("get")
        .expect("exists");
    (state, record)
}

#[tokio::test]
async fn the_agent_connects_reports_and_runs_only_what_is_allowed() {
    let s = setup("e2e_commands").await;
    let mut events = s.running.events().subscribe();
    let agent = start_agent(&s.config);
    let node = s.node;
    wait_for(&mut events, |e| matches!(e, AppEvent::Status { node_id, status: NodeStatus::Online } if *node_id == node)).await;
    wait_for(
        &mut events,
        |e| matches!(e, AppEvent::TelemetryStored { node_id, .. } if *node_id == node),
    )
    .await;
    // The agent announced its version on the upgrade; central keeps it.
    let registered = s.running.store().get_node(node).await.expect("get");
    assert_eq!(
        registered.and_then(|n| n.agent_version).as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    let points = s
        .running
        .store()
        .query_telemetry(
            node,
            WallTime::UNIX_EPOCH,
            WallTime::from(chrono::Utc::now()).add_millis(1000),
            None,
        )
        .await
        .expect("telemetry");
    let data = points[0].data.as_ref().expect("raw sample");
    assert!(
        data["system"]["memory"]["total"].as_u64().unwrap_or(0) > 0,
        "{data}"
    );
    assert!(
        data["containersUnavailable"].is_string(),
        "no engine: containers reported unavailable: {data}"
    );

    let ok = submit(&s, execute(1, "echo", &["hello", "world"])).await;
    let (state, record) = terminal(&s, &mut events, ok).await;
    assert_eq!(state, CommandState::Succeeded);
    assert_eq!(
        record.result.map(|r| r.result).as_deref(),
        Some("hello world\n")
    );

    // One at a time: waiting for one skips the events of the other.
    for message in [
        execute(2, "rm", &["-rf", "/"]),
        execute(3, "echo", &["hi;", "reboot"]),
    ] {
        let id = submit(&s, message).await;
        let (state, record) = terminal(&s, &mut events, id).await;
        assert_eq!(state, CommandState::Blocked);
        assert_eq!(
            record.result.and_then(|r| r.error).map(|e| e.code),
            Some(nap_core::wire::ErrorCode::Blocked)
        );
    }

    let branch_attack = submit(
        &s,
        CentralMessage::Deploy(Deploy {
            request_id: RequestId::from_u128(4),
            env: "production".into(),
            branch: "--upload-pack=touch /tmp/pwned".into(),
        }),
    )
    .await;
    assert_eq!(
        terminal(&s, &mut events, branch_attack).await.0,
        CommandState::Blocked
    );
    let good_deploy = submit(
        &s,
        CentralMessage::Deploy(Deploy {
            request_id: RequestId::from_u128(5),
            env: "production".into(),
            branch: "release/1.4".into(),
        }),
    )
    .await;
    let (state, record) = terminal(&s, &mut events, good_deploy).await;
    assert_eq!(state, CommandState::Succeeded);
    assert_eq!(
        record.result.map(|r| r.result).as_deref(),
        Some("deploying release/1.4\n")
    );

    // Every request and decision is in the agent's audit log, chained.
    let log = s.config.state_dir.join("audit.jsonl");
    let text = std::fs::read_to_string(&log).expect("audit log");
    assert!(text.contains("\"decision\":\"denied\""), "{text}");
    assert!(text.contains("not on the allow-list"), "{text}");
    assert!(
        text.contains("hi;"),
        "the refused arguments are recorded: {text}"
    );
    assert!(matches!(nap_agent::audit::verify(&log).expect("verify"), Ok(n) if n >= 8));
    agent.abort();
    drop(s.dir);
}

#[tokio::test]
async fn an_unsigned_update_never_runs() {
    let mut s = setup("e2e_update_refused").await;
    let release = s.dir.path().join("release.pub");
    let (release_key, _) = NodeKey::generate().expect("key");
    std::fs::write(&release, release_key.public_pem()).expect("write");
    s.config.update.release_key = Some(release);
    let binary = s.dir.path().join("nap-agent-under-test");
    std::fs::write(&binary, b"old").expect("write");
    s.config.update.binary = Some(binary.clone());
    let mut events = s.running.events().subscribe();
    let _agent = start_agent(&s.config);
    let node = s.node;
    wait_for(&mut events, |e| matches!(e, AppEvent::Status { node_id, status: NodeStatus::Online } if *node_id == node)).await;
    let id = RequestId::from_u128(9);
    let message = CentralMessage::UpdateAgent(nap_core::wire::UpdateAgent {
        request_id: Some(id),
        version: "9.9.9".into(),
    });
    record(&s, id, &message, CommandState::Queued).await;
    s.running.hub.input(HubInput::Submit(vec![Submission {
        node_id: node,
        request_id: id,
        message: Some(message),
        timeout: Duration::from_secs(60),
        known: true,
        approval: None,
    }]));
    let (state, record) = terminal(&s, &mut events, id).await;
    assert_eq!(state, CommandState::Failed);
    let message = record
        .result
        .and_then(|r| r.error)
        .map(|e| e.message)
        .unwrap_or_default();
    assert!(message.contains("refused"), "{message}");
    assert_eq!(
        std::fs::read(&binary).expect("read"),
        b"old",
        "the binary is untouched"
    );
}

#[tokio::test]
async fn a_signed_update_is_installed_and_the_agent_exits_to_restart() {
    let mut s = setup("e2e_update_good").await;
    // The operator's tools: a release key, and the build signed and
    // published where central serves updates.
    let keys = s.dir.path().join("release-keys");
    let (release_key, release_pub) =
        nap_central::release::generate_key(&keys).expect("release keygen");
    s.config.update.release_key = Some(release_pub);
    let binary = s.dir.path().join("installed-agent");
    std::fs::write(&binary, b"old").expect("write");
    s.config.update.binary = Some(binary.clone());
    let artifacts = s.dir.path().join("artifacts");
    let build = s.dir.path().join("build");
    let new = b"\x7fELF the new agent".to_vec();
    std::fs::write(&build, &new).expect("write");
    nap_central::release::sign(
        &release_key,
        &nap_central::release::Release {
            binary: &build,
            version: "9.9.9",
            target: nap_agent::update::TARGET,
            min_version: Some(nap_agent::update::VERSION),
        },
        &artifacts,
    )
    .expect("release sign");
    // Restart central's config with the artifacts directory.
    let mut config = s.running.config.clone();
    config.artifacts = Some(artifacts);
    config.listen = "127.0.0.1:0".parse().expect("addr");
    config.api_listen = "127.0.0.1:0".parse().expect("addr");
    let old = std::mem::replace(&mut s.running, start(config).await.expect("central"));
    old.shutdown().await;
    s.config.central = format!("wss://localhost:{}/v1/agent", s.running.agent_addr.port());

    let mut events = s.running.events().subscribe();
    let agent = start_agent(&s.config);
    let node = s.node;
    wait_for(&mut events, |e| matches!(e, AppEvent::Status { node_id, status: NodeStatus::Online } if *node_id == node)).await;
    let id = RequestId::from_u128(10);
    let message = CentralMessage::UpdateAgent(nap_core::wire::UpdateAgent {
        request_id: Some(id),
        version: "9.9.9".into(),
    });
    s.running.hub.input(HubInput::Submit(vec![Submission {
        node_id: node,
        request_id: id,
        message: Some(message),
        timeout: Duration::from_secs(60),
        known: true,
        approval: None,
    }]));
    let exit = tokio::time::timeout(Duration::from_secs(20), agent)
        .await
        .expect("the agent exits")
        .expect("joined")
        .expect("no error");
    assert_eq!(exit, nap_agent::driver::Exit::Restart);
    assert_eq!(
        std::fs::read(&binary).expect("read"),
        new,
        "the new binary is in place"
    );
    assert!(
        nap_agent::update::pending(&s.config.state_dir).is_some(),
        "awaiting confirmation by the new version"
    );
    // The result waits in the persisted outbox for the restarted agent.
    let saved = StateFileProbe::outbox(&s.config.state_dir);
    assert_eq!(saved, 1);
}

#[tokio::test]
async fn a_new_version_that_never_connects_is_rolled_back() {
    let mut s = setup("e2e_rollback").await;
    let binary = s.dir.path().join("installed-agent");
    std::fs::write(&binary, b"old").expect("write");
    std::fs::create_dir_all(&s.config.state_dir).expect("mkdir");
    nap_agent::update::install(
        &binary,
        &s.config.state_dir,
        "9.9.9",
        b"new",
        Duration::from_secs(0),
    )
    .expect("install");
    // Central is gone: the new version cannot connect.
    s.config.central = "wss://localhost:1/v1/agent".into();
    let exit = tokio::time::timeout(Duration::from_secs(20), start_agent(&s.config))
        .await
        .expect("the agent gives up")
        .expect("joined")
        .expect("no error");
    assert_eq!(exit, nap_agent::driver::Exit::Restart);
    assert_eq!(std::fs::read(&binary).expect("read"), b"old", "rolled back");
    assert!(nap_agent::update::pending(&s.config.state_dir).is_none());
}

struct StateFileProbe;

impl StateFileProbe {
    fn outbox(state_dir: &std::path::Path) -> usize {
        nap_agent::state::StateFile::new(state_dir)
            .load()
            .map_or(0, |s| {
                s.requests
                    .iter()
                    .filter(|r| !r.acked && r.result.is_some())
                    .count()
            })
    }
}

#[tokio::test]
async fn a_restarted_agent_delivers_its_outbox_exactly_once() {
    use nap_core::agent::{AgentSnapshot, RecordedRequest};
    let s = setup("e2e_outbox").await;
    let id = RequestId::from_u128(77);
    // Central knows the command (sent before it, too, restarted).
    let message = execute(77, "echo", &["again"]);
    record(&s, id, &message, CommandState::Sent).await;
    s.running.hub.restore_commands().await.expect("restore");
    // The agent finished it before its restart; the result is in its outbox.
    let result = nap_core::wire::CommandResult {
        request_id: id,
        success: true,
        result: "from before the restart\n".into(),
        timestamp: WallTime::from(chrono::Utc::now()),
        exit_code: Some(0),
        stderr: None,
        duration_ms: Some(3),
        truncated: false,
        error: None,
    };
    std::fs::create_dir_all(&s.config.state_dir).expect("mkdir");
    nap_agent::state::StateFile::new(&s.config.state_dir)
        .save(&AgentSnapshot {
            version: AgentSnapshot::VERSION,
            requests: vec![RecordedRequest {
                request_id: id,
                result: Some(result),
                acked: false,
            }],
            telemetry: vec![],
            alerts: vec![],
            health: vec![],
        })
        .expect("save the outbox");
    let mut events = s.running.events().subscribe();
    let agent = start_agent(&s.config);
    let (state, record) = terminal(&s, &mut events, id).await;
    assert_eq!(state, CommandState::Succeeded);
    assert_eq!(
        record.result.map(|r| r.result).as_deref(),
        Some("from before the restart\n")
    );
    // Central re-delivered the command on connect; the agent answered from
    // its record and did not run it.
    let log = std::fs::read_to_string(s.config.state_dir.join("audit.jsonl")).expect("audit");
    assert!(!log.contains("\"event\":\"run\""), "nothing ran: {log}");
    agent.abort();
    let stored = s
        .running
        .store()
        .get_command(id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        stored.state,
        CommandState::Succeeded,
        "recorded once, never overwritten"
    );
}

#[tokio::test]
async fn a_connection_that_outlives_the_key_update_interval_updates_its_keys_and_keeps_working() {
    let mut s = setup("e2e_key_update").await;
    s.config.key_update_interval_ms = 100;
    let mut events = s.running.events().subscribe();
    let key = NodeKey::load(&s.config.key).expect("key");
    let driver = Driver::new(
        s.config.clone(),
        key,
        PathBuf::from(env!("CARGO_BIN_EXE_nap-agent")),
    )
    .expect("driver");
    let key_updates = driver.key_updates();
    let _agent = tokio::spawn(driver.run());
    let node = s.node;
    wait_for(&mut events, |e| matches!(e, AppEvent::Status { node_id, status: NodeStatus::Online } if *node_id == node)).await;
    // Let the connection live through several key-update intervals (the
    // updates happen on the agent's writes, every heartbeat at the latest).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while key_updates.load(std::sync::atomic::Ordering::Relaxed) < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no key updates on a live connection"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Both sides moved to the new keys: frames still pass both ways.
    let id = submit(&s, execute(21, "echo", &["after", "rekey"])).await;
    let (state, record) = terminal(&s, &mut events, id).await;
    assert_eq!(state, CommandState::Succeeded);
    assert_eq!(
        record.result.map(|r| r.result).as_deref(),
        Some("after rekey\n")
    );
    let sessions = s
        .running
        .store()
        .status_history(node)
        .await
        .expect("history");
    assert_eq!(
        sessions
            .iter()
            .filter(|(_, status)| *status == NodeStatus::Online)
            .count(),
        1,
        "one connection throughout: {sessions:?}"
    );
}

/// An operator API token for `user`.
async fn api_token(s: &Setup, user: &str) -> String {
    let token = nap_central::api::tokens::new_api_token().expect("token");
    s.running
        .store()
        .create_api_token(
            &nap_central::api::tokens::token_hash(&token),
            nap_central::store::TokenRecord {
                name: format!("{user}-laptop"),
                role: "operator".into(),
                user: Some(user.into()),
            },
            WallTime::from(chrono::Utc::now()),
        )
        .await
        .expect("token");
    token
}

/// One request to the operator API: its status and JSON body.
async fn api(
    s: &Setup,
    token: &str,
    method: &str,
    path: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    use http_body_util::{BodyExt as _, Full};
    let tcp = tokio::net::TcpStream::connect(s.running.api_addr)
        .await
        .expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(hyper::body::Bytes::from(body.to_string())))
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn a_command_needing_approval_runs_only_once_someone_else_approves_the_exact_command() {
    let s = setup("e2e_approval").await;
    let mut events = s.running.events().subscribe();
    let _agent = start_agent(&s.config);
    let node = s.node;
    wait_for(&mut events, |e| matches!(e, AppEvent::Status { node_id, status: NodeStatus::Online } if *node_id == node)).await;
    let (alice, bob) = (api_token(&s, "alice").await, api_token(&s, "bob").await);
    let alice_again = api_token(&s, "alice").await;
    let commands = format!("/api/v1/nodes/{node}/commands");
    let ask = serde_json::json!({
        "type": "execute", "command": "echo", "args": ["approved"],
        "requiresApproval": true, "reason": "check the banner",
    });
    let (status, body) = api(&s, &alice, "POST", &commands, ask.clone()).await;
    assert_eq!(status, 202, "{body}");
    let id: RequestId = body["requestId"]
        .as_str()
        .expect("id")
        .parse()
        .expect("uuid");
    let digest = body["digest"].as_str().expect("digest").to_owned();
    wait_for(&mut events, |e| matches!(e, AppEvent::Command { request_id, state: CommandState::Held } if *request_id == id)).await;

    let (status, pending) = api(
        &s,
        &bob,
        "GET",
        "/api/v1/approvals?mine=true",
        serde_json::Value::Null,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        pending["approvals"][0]["digest"],
        digest.as_str(),
        "{pending}"
    );
    assert_eq!(pending["approvals"][0]["reason"], "check the banner");

    let approve = format!("/api/v1/commands/{id}/approve");
    for token in [&alice, &alice_again] {
        let (status, body) = api(
            &s,
            token,
            "POST",
            &approve,
            serde_json::json!({ "digest": digest }),
        )
        .await;
        assert_eq!(status, 403, "the requester, whatever token: {body}");
    }
    let (status, body) = api(
        &s,
        &bob,
        "POST",
        &approve,
        serde_json::json!({ "digest": "0".repeat(64) }),
    )
    .await;
    assert_eq!(status, 409, "an approval of another command: {body}");
    let record = s
        .running
        .store()
        .get_command(id)
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(record.state, CommandState::Held);
    assert!(record.result.is_none(), "nothing ran yet");

    let (status, body) = api(
        &s,
        &bob,
        "POST",
        &approve,
        serde_json::json!({ "digest": digest }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "approved");
    let (state, record) = terminal(&s, &mut events, id).await;
    assert_eq!(state, CommandState::Succeeded);
    assert_eq!(
        record.result.map(|r| r.result).as_deref(),
        Some("approved\n")
    );
    assert_eq!(
        record.approval.map(|a| a.approved_by),
        Some(vec!["bob".to_owned()])
    );

    // Rejected: it ends at once and never runs.
    let (_, body) = api(&s, &alice, "POST", &commands, ask).await;
    let id: RequestId = body["requestId"]
        .as_str()
        .expect("id")
        .parse()
        .expect("uuid");
    wait_for(&mut events, |e| matches!(e, AppEvent::Command { request_id, state: CommandState::Held } if *request_id == id)).await;
    let (status, body) = api(
        &s,
        &bob,
        "POST",
        &format!("/api/v1/commands/{id}/reject"),
        serde_json::json!({ "reason": "not now" }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (state, record) = terminal(&s, &mut events, id).await;
    assert_eq!(state, CommandState::Rejected);
    assert!(record.result.is_none());
    let (status, _) = api(
        &s,
        &bob,
        "POST",
        &format!("/api/v1/commands/{id}/approve"),
        serde_json::json!({ "digest": digest }),
    )
    .await;
    assert_eq!(status, 409, "nothing left to approve");
    let audit = s.running.store().all_audit().await.expect("audit");
    let actions: Vec<&str> = audit.iter().map(|e| e.action.as_str()).collect();
    assert!(
        actions.contains(&"approval.approve") && actions.contains(&"approval.reject"),
        "{actions:?}"
    );
}

/// An Ed25519 key as napctl makes one.
fn ed25519() -> aws_lc_rs::signature::Ed25519KeyPair {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&rng).expect("generate");
    aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("parse")
}

fn public(key: &aws_lc_rs::signature::Ed25519KeyPair) -> nap_core::signed_approval::PublicKey {
    use aws_lc_rs::signature::KeyPair as _;
    nap_core::signed_approval::PublicKey(key.public_key().as_ref().try_into().expect("32 bytes"))
}

/// A person who can sign approvals: their key and the certificate a root
/// gave it, valid from `valid.0` to `valid.1` hours from now.
struct Approver {
    user: &'static str,
    key: aws_lc_rs::signature::Ed25519KeyPair,
    certificate: String,
}

impl Approver {
    fn certified_by(
        root: &aws_lc_rs::signature::Ed25519KeyPair,
        user: &'static str,
        valid: (i64, i64),
    ) -> Self {
        let key = ed25519();
        let now = WallTime::from(chrono::Utc::now());
        let certificate = nap_core::signed_approval::Certificate {
            user: user.into(),
            key: public(&key),
            not_before: now.add_millis(valid.0 * 3_600_000),
            not_after: now.add_millis(valid.1 * 3_600_000),
        };
        let signature = root.sign(certificate.signed_text().as_bytes());
        Self {
            user,
            key,
            certificate: certificate.to_text(signature.as_ref()),
        }
    }

    /// The approve request's body: `digest` signed with this key.
    fn approve(&self, digest: &str) -> serde_json::Value {
        self.approve_with(&self.key, digest)
    }

    fn approve_with(
        &self,
        key: &aws_lc_rs::signature::Ed25519KeyPair,
        digest: &str,
    ) -> serde_json::Value {
        use base64::Engine as _;
        let signed = nap_core::signed_approval::signing_bytes(self.user, digest);
        serde_json::json!({
            "digest": digest,
            "signature": base64::engine::general_purpose::STANDARD.encode(key.sign(&signed)),
            "certificate": self.certificate,
        })
    }
}

/// The docker client and the engine it talks to, or why the test skips.
fn docker() -> Option<(PathBuf, String)> {
    let socket = std::env::var("NAP_TEST_CONTAINER_SOCKET").ok();
    let client = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("docker"))
            .find(|p| p.is_file())
    });
    match (client, socket) {
        (Some(client), Some(socket)) => Some((client, socket)),
        (client, socket) => {
            assert!(
                std::env::var_os("NAP_REQUIRE_SERVICES").is_none(),
                "NAP_REQUIRE_SERVICES is set but docker ({client:?}) or NAP_TEST_CONTAINER_SOCKET ({socket:?}) is missing"
            );
            eprintln!(
                "skipping: needs the docker client on PATH and NAP_TEST_CONTAINER_SOCKET (see .ci/run)"
            );
            None
        }
    }
}

/// What a failed command's result says: its error's message.
fn refusal(record: nap_central::store::CommandRecord) -> String {
    record
        .result
        .and_then(|r| r.error)
        .map(|e| e.message)
        .unwrap_or_default()
}

/// Requests `docker ps` with approval as alice; returns its id and digest
/// once the node holds it.
async fn request_docker_ps(
    s: &Setup,
    events: &mut tokio::sync::broadcast::Receiver<AppEvent>,
    alice: &str,
) -> (RequestId, String) {
    let (status, body) = api(
        s,
        alice,
        "POST",
        &format!("/api/v1/nodes/{}/commands", s.node),
        serde_json::json!({
            "type": "execute", "command": "docker", "args": ["ps"],
            "requiresApproval": true, "reason": "what runs on this node",
        }),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let id: RequestId = body["requestId"]
        .as_str()
        .expect("id")
        .parse()
        .expect("uuid");
    wait_for(events, |e| matches!(e, AppEvent::Command { request_id, state: CommandState::Held } if *request_id == id)).await;
    (id, body["digest"].as_str().expect("digest").to_owned())
}

#[tokio::test]
async fn a_command_the_node_guards_runs_only_with_approvals_the_node_verifies() {
    let Some((client, socket)) = docker() else {
        return;
    };
    let mut s = setup("e2e_signed_approval").await;
    let (root, stranger) = (ed25519(), ed25519());
    s.config.approval.roots = vec![public(&root).to_string()];
    s.config.commands.insert(
        "docker".to_owned(),
        CommandEntry {
            program: client,
            args: vec![],
            rest: Some(
                toml::from_str::<BTreeMap<String, nap_agent::config::ArgSpec>>(
                    "a = { one_of = [\"ps\"] }",
                )
                .expect("spec")
                .remove("a")
                .expect("a"),
            ),
            max_extra: 1,
            max_timeout_ms: 30_000,
            env: BTreeMap::from([("DOCKER_HOST".to_owned(), socket)]),
            run_as: None,
            approval: nap_agent::config::ApprovalMode::Required,
            min_approvals: None,
        },
    );
    let mut events = s.running.events().subscribe();
    let _agent = start_agent(&s.config);
    let node = s.node;
    wait_for(&mut events, |e| matches!(e, AppEvent::Status { node_id, status: NodeStatus::Online } if *node_id == node)).await;
    let (alice, bob) = (api_token(&s, "alice").await, api_token(&s, "bob").await);
    let (carol, dave) = (api_token(&s, "carol").await, api_token(&s, "dave").await);
    let alice_signs = Approver::certified_by(&root, "alice", (-1, 24));
    let bob_signs = Approver::certified_by(&root, "bob", (-1, 24));
    let carol_signs = Approver::certified_by(&stranger, "carol", (-1, 24));
    let dave_signs = Approver::certified_by(&root, "dave", (-48, -24));

    // A central that sends the command without approval gets it refused.
    let id = submit(&s, execute(1, "docker", &["ps"])).await;
    let (state, record) = terminal(&s, &mut events, id).await;
    assert_eq!(state, CommandState::Blocked);
    let said = refusal(record);
    assert!(said.contains("requires approval"), "{said}");

    // Bob's signature, certified by the node's root, runs it.
    let (id, digest) = request_docker_ps(&s, &mut events, &alice).await;
    let approve = format!("/api/v1/commands/{id}/approve");
    let (status, body) = api(&s, &alice, "POST", &approve, alice_signs.approve(&digest)).await;
    assert_eq!(status, 403, "the requester's own signature: {body}");
    let forged = bob_signs.approve_with(&carol_signs.key, &digest);
    let (status, body) = api(&s, &bob, "POST", &approve, forged).await;
    assert_eq!(status, 400, "a signature that is not bob's key's: {body}");
    let (status, body) = api(&s, &bob, "POST", &approve, bob_signs.approve(&digest)).await;
    assert_eq!(status, 200, "{body}");
    let (state, record) = terminal(&s, &mut events, id).await;
    let said = record.result.map(|r| r.result).unwrap_or_default();
    assert_eq!(state, CommandState::Succeeded, "{said}");
    assert!(said.contains("CONTAINER ID"), "docker ps's listing: {said}");

    // Signatures central accepts but the node does not trust never run.
    for (token, approver, why) in [
        (&carol, &carol_signs, "a root the node does not trust"),
        (&dave, &dave_signs, "an expired certificate"),
    ] {
        let (id, digest) = request_docker_ps(&s, &mut events, &alice).await;
        let approve = format!("/api/v1/commands/{id}/approve");
        let (status, body) = api(&s, token, "POST", &approve, approver.approve(&digest)).await;
        assert_eq!(status, 200, "central checks the signature only: {body}");
        let (state, record) = terminal(&s, &mut events, id).await;
        assert_eq!(state, CommandState::Blocked, "{why}");
        let said = refusal(record);
        assert!(
            said.starts_with("approval refused by the node"),
            "{why}: {said}"
        );
        let audit = std::fs::read_to_string(s.config.state_dir.join("audit.jsonl")).expect("audit");
        let id_text = id.to_string();
        assert!(
            audit
                .lines()
                .any(|line| line.contains(&id_text) && line.contains("approval_refused")),
            "{why}: the node's audit log says it refused {id}"
        );
    }
}

#[tokio::test]
async fn a_request_nobody_decides_in_time_expires_on_both_sides_and_never_runs() {
    // One second to decide: the test waits for the expiry, not for a clock.
    let s = setup_with("e2e_approval_expiry", |c| c.approval.request_ttl_s = 1).await;
    let mut events = s.running.events().subscribe();
    let _agent = start_agent(&s.config);
    let node = s.node;
    wait_for(&mut events, |e| matches!(e, AppEvent::Status { node_id, status: NodeStatus::Online } if *node_id == node)).await;
    let (alice, bob) = (api_token(&s, "alice").await, api_token(&s, "bob").await);
    let (status, body) = api(
        &s,
        &alice,
        "POST",
        &format!("/api/v1/nodes/{node}/commands"),
        serde_json::json!({
            "type": "execute", "command": "echo", "args": ["late"],
            "requiresApproval": true, "reason": "nobody is around",
        }),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let id: RequestId = body["requestId"]
        .as_str()
        .expect("id")
        .parse()
        .expect("uuid");
    let digest = body["digest"].as_str().expect("digest").to_owned();
    let (state, record) = terminal(&s, &mut events, id).await;
    assert_eq!(state, CommandState::ApprovalExpired);
    assert!(record.result.is_none(), "it never ran: {:?}", record.result);
    let (status, body) = api(
        &s,
        &bob,
        "POST",
        &format!("/api/v1/commands/{id}/approve"),
        serde_json::json!({ "digest": digest }),
    )
    .await;
    assert_eq!(status, 409, "too late to approve: {body}");
    let audit = std::fs::read_to_string(s.config.state_dir.join("audit.jsonl")).expect("audit");
    let id_text = id.to_string();
    assert!(
        audit
            .lines()
            .filter(|line| line.contains(&id_text))
            .all(|line| !line.contains("\"allowed\"")),
        "the node never started it: {audit}"
    );
}

/// The end of the rollout `id`.
async fn rollout_ends(
    events: &mut tokio::sync::broadcast::Receiver<AppEvent>,
    id: nap_core::RolloutId,
) -> nap_core::central::rollout::RolloutState {
    let mut ended = None;
    wait_for(events, |e| match e {
        AppEvent::Rollout { rollout_id, state } if *rollout_id == id && state.is_terminal() => {
            ended = Some(*state);
            true
        }
        _ => false,
    })
    .await;
    ended.expect("the rollout ended")
}

#[tokio::test]
async fn a_rollout_the_node_guards_runs_only_under_an_approval_the_node_verifies_for_itself() {
    use nap_core::central::rollout::RolloutState;
    let mut s = setup("e2e_rollout_approval").await;
    let (root, stranger) = (ed25519(), ed25519());
    s.config.approval.roots = vec![public(&root).to_string()];
    s.config.commands.insert(
        "greet".to_owned(),
        CommandEntry {
            program: PathBuf::from("/bin/echo"),
            args: vec![nap_agent::config::ArgSpec::Literal("guarded".into())],
            rest: None,
            max_extra: 0,
            max_timeout_ms: 10_000,
            env: BTreeMap::new(),
            run_as: None,
            approval: nap_agent::config::ApprovalMode::Required,
            min_approvals: None,
        },
    );
    let mut events = s.running.events().subscribe();
    let _agent = start_agent(&s.config);
    let node = s.node;
    wait_for(&mut events, |e| matches!(e, AppEvent::Status { node_id, status: NodeStatus::Online } if *node_id == node)).await;
    let (alice, bob, carol) = (
        api_token(&s, "alice").await,
        api_token(&s, "bob").await,
        api_token(&s, "carol").await,
    );
    let bob_signs = Approver::certified_by(&root, "bob", (-1, 24));
    let carol_signs = Approver::certified_by(&stranger, "carol", (-1, 24));
    let request = serde_json::json!({
        "type": "broadcast", "command": "execute", "targets": [node],
        "params": { "command": "greet", "args": ["guarded"] },
        "requiresApproval": true, "reason": "say hello",
    });

    for (token, approver, expected) in [
        (&bob, &bob_signs, RolloutState::Succeeded),
        (&carol, &carol_signs, RolloutState::Halted),
    ] {
        let (status, created) = api(&s, &alice, "POST", "/api/v1/rollouts", request.clone()).await;
        assert_eq!(status, 201, "{created}");
        assert_eq!(created["state"], "awaiting_approval");
        let id: nap_core::RolloutId = created["rolloutId"]
            .as_str()
            .expect("id")
            .parse()
            .expect("uuid");
        let digest = created["approval"]["digest"].as_str().expect("digest");
        let (status, body) = api(
            &s,
            token,
            "POST",
            &format!("/api/v1/rollouts/{id}/approve"),
            approver.approve(digest),
        )
        .await;
        assert_eq!(status, 200, "central checks the signature only: {body}");
        assert_eq!(rollout_ends(&mut events, id).await, expected);
        let (_, report) = api(
            &s,
            &alice,
            "GET",
            &format!("/api/v1/rollouts/{id}"),
            serde_json::Value::Null,
        )
        .await;
        let request_id: RequestId = report["targets"][0]["requestId"]
            .as_str()
            .expect("its request id")
            .parse()
            .expect("uuid");
        let record = s
            .running
            .store()
            .get_command(request_id)
            .await
            .expect("get")
            .expect("stored");
        if expected == RolloutState::Succeeded {
            let said = record.result.map(|r| r.result).unwrap_or_default();
            assert_eq!(said.trim(), "guarded", "the node ran it");
        } else {
            assert_eq!(record.state, CommandState::Blocked);
            let said = refusal(record);
            assert!(
                said.starts_with("approval refused by the node"),
                "a root the node does not trust: {said}"
            );
        }
    }
}
