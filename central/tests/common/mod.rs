//! A real central on loopback (TLS, WebSockets, the real PostgreSQL when
//! `NAP_TEST_DATABASE_URL` is set) and real clients for it.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use base64::Engine as _;
use futures_util::{SinkExt as _, StreamExt as _};
use nap_central::api::tokens::{Role, new_api_token, token_hash};
use nap_central::runtime::{Running, start};
use nap_central::store::postgres::PgStore;
use nap_central::store::{NodeRecord, Storage, TokenRecord};
use nap_central::{AppEvent, ServeConfig};
use nap_core::NodeId;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub type Ws = WebSocketStream<TlsStream<TcpStream>>;

pub struct Central {
    pub running: Running,
    pub dir: tempfile::TempDir,
    pub ca: Vec<CertificateDer<'static>>,
    pub admin: String,
    pub viewer: String,
}

impl Central {
    pub fn api(&self, path: &str) -> String {
        format!("http://{}{}", self.running.api_addr, path)
    }

    pub fn events(&self) -> tokio::sync::broadcast::Receiver<AppEvent> {
        self.running.events().subscribe()
    }
}

/// Starts central with `tune` applied to its configuration.
pub async fn central(test: &str, tune: impl FnOnce(&mut ServeConfig)) -> Central {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = nap_central::tls::write_dev_certs(&dir.path().join("certs")).expect("dev certs");
    let mut config = ServeConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        api_listen: "127.0.0.1:0".parse().expect("addr"),
        tls_cert: certs.cert,
        tls_key: certs.key,
        db: format!("sqlite:{}", dir.path().join("central.db").display()),
        ..ServeConfig::default()
    };
    match std::env::var("NAP_TEST_DATABASE_URL") {
        Ok(url) => {
            // A schema of its own per test, through the search_path option.
            let schema: String = format!("nap_central_{test}").chars().take(60).collect();
            PgStore::drop_schema(&url, &schema)
                .await
                .expect("drop schema");
            PgStore::connect(&url, Some(&schema), 1)
                .await
                .expect("create schema");
            let sep = if url.contains('?') { '&' } else { '?' };
            config.db = format!("{url}{sep}options=-csearch_path%3D{schema}");
        }
        Err(_) => {
            assert!(
                std::env::var_os("NAP_REQUIRE_SERVICES").is_none(),
                "NAP_REQUIRE_SERVICES is set but NAP_TEST_DATABASE_URL is not"
            );
            eprintln!(
                "NOTE {test}: NAP_TEST_DATABASE_URL is unset; running on SQLite instead of PostgreSQL"
            );
        }
    }
    tune(&mut config);
    let running = start(config).await.expect("central starts");
    let ca = CertificateDer::pem_file_iter(&certs.ca)
        .expect("ca")
        .collect::<Result<Vec<_>, _>>()
        .expect("ca parses");
    let admin = api_token(&running, Role::Admin, "admin").await;
    let viewer = api_token(&running, Role::Viewer, "viewer").await;
    Central {
        running,
        dir,
        ca,
        admin,
        viewer,
    }
}

async fn api_token(running: &Running, role: Role, name: &str) -> String {
    let token = new_api_token().expect("token");
    let record = TokenRecord {
        name: name.into(),
        role: role.as_str().into(),
        user: None,
    };
    running
        .store()
        .create_api_token(
            &token_hash(&token),
            record,
            nap_core::WallTime::from(chrono::Utc::now()),
        )
        .await
        .expect("store token");
    token
}

/// An operator token that belongs to the person `user`.
pub async fn person_token(central: &Central, user: &str) -> String {
    let token = new_api_token().expect("token");
    let record = TokenRecord {
        name: format!("{user}-laptop"),
        role: Role::Operator.as_str().into(),
        user: Some(user.into()),
    };
    central
        .running
        .store()
        .create_api_token(
            &token_hash(&token),
            record,
            nap_core::WallTime::from(chrono::Utc::now()),
        )
        .await
        .expect("store token");
    token
}

/// A node's key pair.
pub struct NodeKey {
    pub id: NodeId,
    pub private_pem: String,
    pub public_pem: String,
}

pub fn node_key() -> NodeKey {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("key");
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("pair");
    let mut spki = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    spki.extend_from_slice(pair.public_key().as_ref());
    NodeKey {
        id: NodeId::from(uuid::Uuid::new_v4()),
        private_pem: pem("PRIVATE KEY", pkcs8.as_ref()),
        public_pem: pem("PUBLIC KEY", &spki),
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("ascii"))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// Registers the node with central.
pub async fn register(central: &Central, key: &NodeKey) {
    register_labelled(central, key, &[]).await;
}

/// Registers the node with central, with these labels.
pub async fn register_labelled(central: &Central, key: &NodeKey, labels: &[(&str, &str)]) {
    let record = NodeRecord {
        id: key.id,
        name: format!("node-{}", &key.id.to_string()[..8]),
        public_key_pem: key.public_pem.clone(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        created_at: nap_core::WallTime::from(chrono::Utc::now()),
        revoked: false,
        status: None,
        last_seen: None,
        agent_version: None,
    };
    central
        .running
        .store()
        .add_node(record)
        .await
        .expect("register");
}

/// The claims of a good token for `key`.
pub fn claims(key: &NodeKey) -> serde_json::Value {
    let now = chrono::Utc::now().timestamp();
    serde_json::json!({
        "iss": key.id.to_string(),
        "sub": key.id.to_string(),
        "aud": "nap-central",
        "iat": now,
        "exp": now + 3600,
        "jti": uuid::Uuid::new_v4().to_string(),
        "scope": "node",
    })
}

pub fn sign(key: &NodeKey, claims: &serde_json::Value) -> String {
    let encoding = jsonwebtoken::EncodingKey::from_ed_pem(key.private_pem.as_bytes()).expect("key");
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
        claims,
        &encoding,
    )
    .expect("sign")
}

pub fn good_token(key: &NodeKey) -> String {
    sign(key, &claims(key))
}

/// TLS to central with its dev CA, TLS 1.3 (or the versions given).
pub async fn tls(
    central: &Central,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> std::io::Result<TlsStream<TcpStream>> {
    tls_at(central, central.running.agent_addr, versions).await
}

/// [`tls`] to the instance at `addr` (one with the same certificates).
pub async fn tls_at(
    central: &Central,
    addr: std::net::SocketAddr,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in &central.ca {
        roots.add(cert.clone()).expect("ca");
    }
    let config = rustls::ClientConfig::builder_with_provider(nap_central::tls::provider())
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
}

/// Opens an agent session with `token`; an HTTP refusal comes back as its status.
pub async fn connect(central: &Central, token: &str) -> Result<Ws, u16> {
    connect_at(central, central.running.agent_addr, token).await
}

/// [`connect`] to the instance at `addr` (one with the same certificates).
pub async fn connect_at(
    central: &Central,
    addr: std::net::SocketAddr,
    token: &str,
) -> Result<Ws, u16> {
    connect_speaking(central, addr, token, None).await
}

/// [`connect_at`], announcing `features` (`nap-features`, e.g. "approval").
pub async fn connect_speaking(
    central: &Central,
    addr: std::net::SocketAddr,
    token: &str,
    features: Option<&str>,
) -> Result<Ws, u16> {
    let stream = tls_at(central, addr, &[&rustls::version::TLS13])
        .await
        .expect("TLS");
    let mut request = format!("wss://localhost{}", nap_core::AGENT_PATH)
        .into_client_request()
        .expect("request");
    let headers = request.headers_mut();
    headers.insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    headers.insert("sec-websocket-protocol", "nap.v1".parse().expect("header"));
    if let Some(features) = features {
        headers.insert(
            nap_core::wire::Hello::FEATURES_HEADER,
            features.parse().expect("header"),
        );
    }
    match tokio_tungstenite::client_async(request, stream).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("unexpected handshake error: {e}"),
    }
}

/// The next text message, decoded, within five seconds.
pub async fn next_message(ws: &mut Ws) -> nap_core::wire::CentralMessage {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a message within 5 s")
            .expect("stream open")
            .expect("frame");
        if let Message::Text(text) = frame {
            return nap_core::decode(text.as_str(), &nap_core::Limits::default())
                .expect("valid message");
        }
    }
}

/// The close code the peer sends next (skipping other frames), within five seconds.
pub async fn close_code(ws: &mut Ws) -> Option<u16> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("closed within 5 s")
        {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return None,
        }
    }
}

pub async fn send(ws: &mut Ws, message: impl Into<nap_core::wire::AgentMessage>) {
    let text = nap_core::encode(&message.into()).expect("encode");
    ws.send(Message::Text(text.into())).await.expect("send");
}

/// Waits for an event matching `pred`, within `within`.
pub async fn wait_for(
    events: &mut tokio::sync::broadcast::Receiver<AppEvent>,
    within: Duration,
    mut pred: impl FnMut(&AppEvent) -> bool,
) -> AppEvent {
    tokio::time::timeout(within, async {
        loop {
            match events.recv().await {
                Ok(event) if pred(&event) => return event,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("event stream ended: {e}"),
            }
        }
    })
    .await
    .expect("the event happened in time")
}

/// A minimal HTTP client for the operator API.
pub async fn http(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    use http_body_util::{BodyExt as _, Full};
    use hyper::body::Bytes;
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let mut builder = hyper::Request::builder().method(method).uri(url);
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    let request = builder
        .header("content-type", "application/json")
        .body(Full::new(body))
        .expect("request");
    let response = client.request(request).await.expect("API answers");
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, json)
}

/// A registered node with an established session (its `welcome` read).
pub async fn connected_node(central: &Central) -> (NodeKey, Ws) {
    let key = node_key();
    register(central, &key).await;
    let mut ws = connect(central, &good_token(&key)).await.expect("upgraded");
    match next_message(&mut ws).await {
        nap_core::wire::CentralMessage::Welcome(_) => {}
        other => panic!("expected welcome, got {other:?}"),
    }
    (key, ws)
}
