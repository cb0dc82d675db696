//! `nap-sim demo`: the whole system on one machine, on the embedded default.
//! Central on SQLite with dev certificates, the real agent (its driver,
//! sandbox and executor, in this process) and N virtual nodes over real TLS
//! WebSockets; a command through the operator API to the real agent; then a
//! live view until Ctrl-C.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use nap_agent::config::{CommandEntry, FileConfig};
use nap_agent::keys::NodeKey;
use nap_central::AppEvent;
use nap_central::api::tokens::{Role, new_api_token, token_hash};
use nap_central::store::{NodeRecord, Storage, TokenRecord};
use nap_core::NodeId;

use crate::virtual_node::{self, Fleet};

/// Demo options.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    pub nodes: usize,
    pub dir: PathBuf,
    pub listen: String,
    pub api_listen: String,
}

fn now() -> nap_core::WallTime {
    nap_core::WallTime::from(chrono::Utc::now())
}

async fn register(
    store: &impl Storage,
    id: NodeId,
    name: String,
    key: &NodeKey,
    labels: BTreeMap<String, String>,
) -> anyhow::Result<()> {
    match store
        .add_node(NodeRecord {
            id,
            name,
            public_key_pem: key.public_pem(),
            labels,
            created_at: now(),
            revoked: false,
            status: None,
            last_seen: None,
            agent_version: None,
        })
        .await
    {
        Ok(()) | Err(nap_central::store::StoreError::Conflict) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn token(store: &impl Storage, role: Role, name: &str) -> anyhow::Result<String> {
    let token = new_api_token()?;
    let record = TokenRecord {
        name: name.into(),
        role: role.as_str().into(),
        user: None,
    };
    store
        .create_api_token(&token_hash(&token), record, now())
        .await?;
    Ok(token)
}

/// The terminal state `request_id` reaches within 20 s, if it does.
async fn terminal(
    events: &mut tokio::sync::broadcast::Receiver<AppEvent>,
    request_id: nap_core::RequestId,
) -> Option<nap_core::central::CommandState> {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match events.recv().await {
                Ok(AppEvent::Command {
                    request_id: id,
                    state,
                }) if id == request_id && state.is_terminal() => return Some(state),
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return None,
            }
        }
    })
    .await
    .ok()
    .flatten()
}

/// v0.2: `hostname` for approval by the demo's operator; a self-approval is
/// refused, a second person's approval of its digest runs it.
#[allow(clippy::print_stdout)]
async fn approval_demo(
    running: &nap_central::runtime::Running,
    store: &impl Storage,
    requester: &str,
    agent_id: NodeId,
    hostname: &str,
    events: &mut tokio::sync::broadcast::Receiver<AppEvent>,
) -> anyhow::Result<()> {
    let approver = token(store, Role::Operator, "demo-approver").await?;
    let api = format!("http://{}", running.api_addr);
    let body = serde_json::json!({
        "type": "execute", "command": "hostname", "requiresApproval": true,
        "reason": "the demo shows the two-person rule",
    });
    let (_, reply) = crate::http::post(
        &format!("{api}/api/v1/nodes/{agent_id}/commands"),
        requester,
        &body,
    )
    .await?;
    let (Some(request_id), Some(digest)) = (
        reply["requestId"]
            .as_str()
            .and_then(|s| s.parse::<nap_core::RequestId>().ok()),
        reply["digest"].as_str(),
    ) else {
        println!("command `hostname` with approval: not accepted: {reply}");
        return Ok(());
    };
    let approve = format!("{api}/api/v1/commands/{request_id}/approve");
    let digest = serde_json::json!({ "digest": digest });
    let (status, _) = crate::http::post(&approve, requester, &digest).await?;
    println!(
        "command `hostname` needs approval: held on the node; its requester approving → {status}"
    );
    let (status, _) = crate::http::post(&approve, &approver, &digest).await?;
    let outcome = terminal(events, request_id).await;
    let shown = store
        .get_command(request_id)
        .await?
        .and_then(|c| c.result)
        .map(|r| r.result.trim().to_owned())
        .unwrap_or_default();
    let state = outcome.map_or("no answer yet", |s| s.as_str());
    println!(
        "  a second person approves its digest → {status}; on {hostname} (the real agent) → {state}: {shown}"
    );
    Ok(())
}

/// v0.3: `uptime` to the whole fleet as a rollout — one canary, then a
/// quarter of the fleet at a time — followed to its end.
#[allow(clippy::print_stdout)]
async fn rollout_demo(
    running: &nap_central::runtime::Running,
    store: &impl Storage,
    requester: &str,
    events: &mut tokio::sync::broadcast::Receiver<AppEvent>,
) -> anyhow::Result<()> {
    let api = format!("http://{}", running.api_addr);
    let body = serde_json::json!({
        "type": "broadcast", "command": "execute", "targets": "all",
        "params": { "command": "uptime" },
        "strategy": { "canary": 1, "maxConcurrency": "25%", "maxErrors": "1%" },
        "requiresApproval": true, "reason": "the demo approves a rollout once, as a whole",
    });
    let (status, created) =
        crate::http::post(&format!("{api}/api/v1/rollouts"), requester, &body).await?;
    let Some(id) = created["rolloutId"]
        .as_str()
        .and_then(|s| s.parse::<nap_core::RolloutId>().ok())
    else {
        println!("rollout of `uptime`: not accepted ({status}): {created}");
        return Ok(());
    };
    println!(
        "rollout of `uptime` to all {} nodes: limits {}; {}",
        created["targets"], created["limits"], created["state"]
    );
    // One approval covers the command and every target (the digest holds
    // the root of the targets' tree): a second person gives it.
    let approver = token(store, Role::Operator, "demo-rollout-approver").await?;
    let digest = serde_json::json!({ "digest": created["approval"]["digest"] });
    let (status, answer) = crate::http::post(
        &format!("{api}/api/v1/rollouts/{id}/approve"),
        &approver,
        &digest,
    )
    .await?;
    println!(
        "  a second person approves its digest → {status} {}",
        answer["state"]
    );
    let mut path = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            match events.recv().await {
                Ok(AppEvent::Rollout { rollout_id, state }) if rollout_id == id => {
                    path.push(state.as_str());
                    if state.is_terminal() {
                        return;
                    }
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    })
    .await
    .is_ok();
    let (_, report) =
        crate::http::get(&format!("{api}/api/v1/rollouts/{id}?limit=1"), requester).await?;
    println!(
        "  {}{}: {}",
        path.join(" → "),
        if ended { "" } else { " (still running)" },
        report["counts"]
    );
    Ok(())
}

#[allow(clippy::print_stdout)]
pub async fn run(config: DemoConfig) -> anyhow::Result<()> {
    let dir = std::fs::canonicalize(".").context("cwd")?.join(&config.dir);
    std::fs::create_dir_all(&dir)?;
    let certs = nap_central::tls::write_dev_certs(&dir.join("certs"))?;
    println!("NAP demo in {}", dir.display());

    // Central, on the embedded default.
    let central_config = nap_central::ServeConfig {
        listen: config.listen.parse().context("--listen")?,
        api_listen: config.api_listen.parse().context("--api-listen")?,
        tls_cert: certs.cert.clone(),
        tls_key: certs.key.clone(),
        db: format!("sqlite:{}", dir.join("central.db").display()),
        telemetry_ms: 10_000,
        health_ms: 60_000,
        ..nap_central::ServeConfig::default()
    };
    let running = nap_central::runtime::start(central_config)
        .await
        .context("starting central (is another one using the ports? see --listen/--api-listen)")?;
    let store = running.store().clone();
    let hub = running.hub.clone();
    let url = format!("wss://localhost:{}/v1/agent", running.agent_addr.port());
    let viewer = token(&store, Role::Viewer, "demo-viewer").await?;
    let operator = token(&store, Role::Operator, "demo").await?;
    println!(
        "central: agents at {url}, operator API at http://{}",
        running.api_addr
    );

    // The real agent for this machine.
    let agent_key_path = dir.join("agent.key");
    let agent_key = if agent_key_path.exists() {
        NodeKey::load(&agent_key_path)?
    } else {
        let (key, pem) = NodeKey::generate()?;
        nap_central::tls::write_private(&agent_key_path, &pem)?;
        key
    };
    let agent_id = NodeId::from_u128(0xDE30_0000_0000_0000_0000_0000_0000_0001);
    let hostname = std::fs::read_to_string("/etc/hostname")
        .unwrap_or_else(|_| "this-machine".into())
        .trim()
        .to_owned();
    register(
        &store,
        agent_id,
        hostname.clone(),
        &agent_key,
        BTreeMap::from([("kind".into(), "real".into())]),
    )
    .await?;
    let mut commands = BTreeMap::new();
    for (name, program) in [("uptime", "/usr/bin/uptime"), ("hostname", "/bin/hostname")] {
        commands.insert(
            name.to_owned(),
            CommandEntry {
                program: program.into(),
                args: vec![],
                rest: None,
                max_extra: 0,
                max_timeout_ms: 10_000,
                env: BTreeMap::new(),
                run_as: None,
                approval: Default::default(),
                min_approvals: None,
            },
        );
    }
    let agent_config = FileConfig {
        central: url.clone(),
        ca: certs.ca.clone(),
        node_id: agent_id,
        key: agent_key_path,
        state_dir: dir.join("agent"),
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
        deploy: BTreeMap::new(),
        health: Default::default(),
        application: Default::default(),
        containers: Default::default(),
        update: Default::default(),
        approval: Default::default(),
    };
    let tls = nap_agent::transport::tls_config(&certs.ca)?;
    // The sandbox trampoline is this binary (it has `sandbox-exec`).
    let driver = nap_agent::driver::Driver::new(
        agent_config,
        NodeKey::load(&dir.join("agent.key"))?,
        std::env::current_exe()?,
    )?;
    let agent = tokio::spawn(driver.run());

    // The virtual fleet.
    let fleet = Arc::new(Fleet::new(config.nodes));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    // The demo never restarts its virtual nodes; the sender stays for the run.
    let (_restart, restarts) = tokio::sync::watch::channel(0u64);
    let mut tasks = Vec::with_capacity(config.nodes);
    for k in 0..config.nodes {
        let (key, _) = NodeKey::generate()?;
        let id = NodeId::from_u128(
            0xDE30_0000_0000_0000_0000_0001_0000_0000 + u128::try_from(k).unwrap_or(0),
        );
        let labels = BTreeMap::from([
            ("kind".into(), "virtual".into()),
            ("rack".into(), format!("r{}", k % 8)),
        ]);
        register(&store, id, format!("virtual-{k:04}"), &key, labels).await?;
        let spec = virtual_node::NodeSpec {
            index: k,
            node_id: id,
            key,
            url: url.clone(),
            tls: Arc::clone(&tls),
            seed: 0xDE30 + k as u64,
            dial: nap_agent::transport::DialOptions::default(),
            chaos: None,
            backlog: 0,
            persist: false,
            fails: false,
        };
        tasks.push(tokio::spawn(virtual_node::run(
            spec,
            Arc::clone(&fleet),
            stopped.clone(),
            restarts.clone(),
        )));
    }
    let total = config.nodes + 1;
    let bar = ProgressBar::new(total as u64).with_style(
        ProgressStyle::with_template("connecting {bar:40} {pos}/{len} nodes online {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let online = |hub: &nap_central::hub::HubHandle| {
        usize::try_from(hub.effects().metrics.connections.get()).unwrap_or(0)
    };
    let started = std::time::Instant::now();
    while online(&hub) < total && started.elapsed() < Duration::from_secs(120) {
        bar.set_position(online(&hub) as u64);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bar.set_position(online(&hub) as u64);
    bar.finish();

    // A command through the operator API to the real agent, and a forbidden one.
    let mut events = hub.effects().events.subscribe();
    for (command, args) in [
        ("uptime", vec![]),
        ("rm", vec!["-rf".to_owned(), "/".to_owned()]),
    ] {
        let request_id = nap_core::RequestId::from(uuid::Uuid::new_v4());
        let body = serde_json::json!({"type": "execute", "command": command, "args": args, "timeout": 10000});
        let (_, reply) = crate::http::post(
            &format!(
                "http://{}/api/v1/nodes/{agent_id}/commands",
                running.api_addr
            ),
            &operator,
            &body,
        )
        .await?;
        let request_id = reply["requestId"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(request_id);
        let outcome = terminal(&mut events, request_id).await;
        let record = store.get_command(request_id).await?;
        let shown = record
            .and_then(|c| c.result)
            .map(|r| match r.error {
                Some(e) => format!("{:?}: {}", e.code, e.message),
                None => r.result.trim().to_owned(),
            })
            .unwrap_or_default();
        let line = std::iter::once(command.to_owned())
            .chain(args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ");
        let state = outcome.map_or("no answer yet", |s| s.as_str());
        println!("command `{line}` on {hostname} (the real agent) → {state}: {shown}");
    }

    approval_demo(
        &running,
        &store,
        &operator,
        agent_id,
        &hostname,
        &mut events,
    )
    .await?;
    rollout_demo(&running, &store, &operator, &mut events).await?;

    println!();
    println!(
        "operator API: http://{}   viewer token: {viewer}",
        running.api_addr
    );
    println!(
        "  curl -H 'Authorization: Bearer {viewer}' http://{}/api/v1/nodes",
        running.api_addr
    );
    println!("Ctrl-C stops the demo.");
    println!();
    println!(
        "{:>8}  {:>8}  {:>14}  {:>7}",
        "time", "online", "telemetry rows", "alerts"
    );
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    // SIGTERM too (`timeout`, systemd, `kill`): the in-process agent listens
    // for it, which takes the default action of ending the process away.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let alerts = store.list_alerts(1000).await.map(|a| a.len()).unwrap_or(0);
                println!(
                    "{:>7}s  {:>8}  {:>14}  {:>7}",
                    started.elapsed().as_secs(),
                    online(&hub),
                    hub.effects().metrics.telemetry_rows.get(),
                    alerts
                );
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
    println!("stopping: virtual nodes, the agent, then central");
    let _ = stop.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    agent.abort();
    running.shutdown().await;
    Ok(())
}
