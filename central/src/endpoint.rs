//! The agent endpoint: TLS 1.3, then an HTTP/1.1 request that must be a
//! WebSocket upgrade to `/v1/agent` with subprotocol `nap.v1` and a node
//! token. The token is checked before the upgrade completes: a refusal is a
//! 401 (audited, notified, and slowed per source address). Handshakes in
//! flight are bounded; past the bound the answer is 503 with Retry-After.
//! The same listener serves agent update artifacts to authenticated nodes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use nap_core::central::{Admission, AuthPolicy, AuthRejection, TokenCheck};
use nap_core::{SessionId, WallTime};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::app::{App, AppEvent};
use crate::metrics::{Outcome, Reason};
use crate::store::Storage;

type Body = Full<Bytes>;

/// Accepts agent connections until `shutdown` resolves.
pub async fn serve(
    app: Arc<App>,
    mut listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    // TLS handshakes in flight are bounded at accept: past the bound, new
    // connections wait in the kernel's listen backlog, which costs nothing,
    // instead of each costing a full TLS handshake only to be refused with
    // a 503. A fleet reconnecting at once is then admitted at the rate this
    // process can handshake, not slowed by handshakes it throws away.
    let tls_slots = Arc::new(Semaphore::new(app.config.max_handshakes.max(1)));
    tokio::pin!(shutdown);
    // Capacity is reached by sessions starting elsewhere, not by accepting:
    // look again now and then while waiting for a connection.
    let mut recheck = tokio::time::interval(Duration::from_millis(250));
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if at_capacity(&app) {
            match pause_listening(&app, listener, &mut shutdown).await {
                Some(reopened) => listener = reopened,
                None => return,
            }
        }
        let slot = tokio::select! {
            slot = Arc::clone(&tls_slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return, // never closed
            },
            () = &mut shutdown => return,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Usually out of file descriptors: pause instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = recheck.tick() => continue,
            () = &mut shutdown => return,
        };
        if at_capacity(&app) {
            app.metrics
                .handshakes
                .get_or_create(&Outcome {
                    outcome: "over_capacity".into(),
                })
                .inc();
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let app = Arc::clone(&app);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let handshake =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await;
            drop(slot);
            let tls = match handshake {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    app.metrics
                        .handshakes
                        .get_or_create(&Outcome {
                            outcome: "tls_failed".into(),
                        })
                        .inc();
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let service = service_fn(move |req| handle(Arc::clone(&app), peer, req));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .max_buf_size(16 * 1024)
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(tls), service)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "agent HTTP connection ended");
            }
        });
    }
}

fn at_capacity(app: &App) -> bool {
    usize::try_from(app.metrics.connections.get()).unwrap_or(0) >= app.config.max_connections
}

/// At capacity, this process stops listening until it is back under 95 %.
/// Processes sharing the port (SO_REUSEPORT) then receive every new
/// connection between them — a full listener would keep getting its share
/// and drop it, and a client's SYN retries hash to the same listener — and
/// a process on its own refuses connections outright, which costs a client
/// less than an accepted connection that is dropped. `None` on shutdown.
async fn pause_listening(
    app: &App,
    listener: TcpListener,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Option<TcpListener> {
    let addr = listener.local_addr().ok()?;
    drop(listener);
    tracing::warn!(
        max = app.config.max_connections,
        "at capacity: stopped listening for agents"
    );
    app.emit(AppEvent::Listening { accepting: false });
    let resume = app.config.max_connections - app.config.max_connections / 20;
    let mut every = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = shutdown.as_mut() => return None,
        }
        if usize::try_from(app.metrics.connections.get()).unwrap_or(0) >= resume {
            continue;
        }
        match crate::server::bind(addr, app.config.redis.is_some()) {
            Ok(listener) => {
                tracing::info!("under capacity again: listening for agents");
                app.emit(AppEvent::Listening { accepting: true });
                return Some(listener);
            }
            Err(e) => tracing::error!(error = %e, "cannot listen again; retrying"),
        }
    }
}

fn response(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    response(status, serde_json::json!({ "error": message }).to_string())
}

async fn handle(
    app: Arc<App>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let path = req.uri().path().to_owned();
    let response = if path == nap_core::AGENT_PATH {
        upgrade(app, peer, req).await
    } else if let Some(rest) = path.strip_prefix("/v1/artifacts/nap-agent/") {
        artifact(app, peer, &req, rest).await
    } else {
        error(StatusCode::NOT_FOUND, "no such endpoint")
    };
    Ok(response)
}

fn bearer(req: &Request<Incoming>) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

fn header_has(req: &Request<Incoming>, name: header::HeaderName, token: &str) -> bool {
    req.headers().get_all(name).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|part| part.trim().eq_ignore_ascii_case(token))
        })
    })
}

/// Records a refused token: metric, audit record, admin notification, and a
/// penalty for the source address. Returns the delay before answering.
async fn refused(app: &Arc<App>, peer: SocketAddr, reason: &'static str) -> Response<Body> {
    app.metrics
        .auth_failures
        .get_or_create(&Reason {
            reason: reason.into(),
        })
        .inc();
    app.metrics
        .handshakes
        .get_or_create(&Outcome {
            outcome: "unauthorized".into(),
        })
        .inc();
    app.emit(AppEvent::AuthFailed { reason });
    let detail = serde_json::json!({ "reason": reason, "peer": peer.to_string() });
    if let Err(e) = app
        .store
        .append_audit(
            "agent",
            "auth.refused",
            &peer.ip().to_string(),
            detail.clone(),
            app.clock.wall(),
        )
        .await
    {
        app.metrics.db_error("audit");
        tracing::error!(error = %e, "could not audit a refused token");
    }
    crate::notify::notify(app, "auth_failure", detail);
    let hold = app
        .throttle
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .fail(peer.ip());
    tokio::time::sleep(hold).await;
    error(StatusCode::UNAUTHORIZED, reason)
}

async fn upgrade(app: Arc<App>, peer: SocketAddr, mut req: Request<Incoming>) -> Response<Body> {
    if app
        .throttle
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .blocked(peer.ip())
    {
        app.metrics
            .handshakes
            .get_or_create(&Outcome {
                outcome: "throttled".into(),
            })
            .inc();
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed attempts from this address",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
        return r;
    }
    let Ok(permit) = Arc::clone(&app.handshakes).try_acquire_owned() else {
        app.metrics
            .handshakes
            .get_or_create(&Outcome {
                outcome: "busy".into(),
            })
            .inc();
        let mut r = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many handshakes in flight",
        );
        let wait = 5 + uuid::Uuid::new_v4().as_bytes()[0] % 10;
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(u32::from(wait)));
        return r;
    };
    app.metrics.handshakes_in_flight.inc();
    let outcome = admit(&app, peer, &mut req).await;
    app.metrics.handshakes_in_flight.dec();
    let (response, admission) = match outcome {
        Ok(pair) => pair,
        Err(response) => return response,
    };
    let upgrade = hyper::upgrade::on(req);
    let app2 = Arc::clone(&app);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => crate::connection::run(app2, upgraded, admission, permit).await,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade did not complete");
                app2.with_hub(|hub, now| {
                    hub.session_closed(now, admission.node_id, admission.session_id)
                });
            }
        }
    });
    app.metrics
        .handshakes
        .get_or_create(&Outcome {
            outcome: "accepted".into(),
        })
        .inc();
    response
}

async fn admit(
    app: &Arc<App>,
    peer: SocketAddr,
    req: &mut Request<Incoming>,
) -> Result<(Response<Body>, Admission), Response<Body>> {
    let is_upgrade = header_has(req, header::CONNECTION, "upgrade")
        && header_has(req, header::UPGRADE, "websocket");
    let key = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned();
    let version_ok = req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v == "13");
    let (true, Some(key), true) = (
        is_upgrade && req.method() == hyper::Method::GET,
        key,
        version_ok,
    ) else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "expected a WebSocket upgrade (version 13)",
        ));
    };
    if !header_has(
        req,
        header::SEC_WEBSOCKET_PROTOCOL,
        nap_core::PROTOCOL_VERSION,
    ) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "subprotocol nap.v1 is required",
        ));
    }
    let Some(token) = bearer(req).map(str::to_owned) else {
        return Err(refused(app, peer, "missing_token").await);
    };
    let check = crate::auth::inspect(&app.store, &token).await;
    if !token_id_unused_in_cluster(app, &check).await {
        return Err(refused(app, peer, AuthRejection::Replayed.reason()).await);
    }
    let session_id = SessionId::from(uuid::Uuid::new_v4());
    let admission = match app.with_hub(|hub, now| hub.admit(now, &check, session_id)) {
        Ok(admission) => admission,
        Err(rejection) => return Err(refused(app, peer, rejection.reason()).await),
    };
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = r.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(nap_core::PROTOCOL_VERSION),
    );
    let accept = derive_accept_key(key.as_bytes());
    headers.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept)
            .map_err(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "bad key"))?,
    );
    Ok((r, admission))
}

/// With several instances, a token id is consumed in Redis as well, so a
/// token used at one instance cannot be replayed at another (each hub keeps
/// its own replay window). Only verified tokens spend an id. If Redis cannot
/// answer, the local window stands alone rather than locking the fleet out.
async fn token_id_unused_in_cluster(app: &Arc<App>, check: &TokenCheck) -> bool {
    let (Some(cluster), Some(claims), true) = (&app.cluster, &check.claims, check.signature_valid)
    else {
        return true;
    };
    let Some(expires_at) = WallTime::from_unix_millis(claims.exp.saturating_mul(1000)) else {
        return true; // the hub refuses it
    };
    let skew = AuthPolicy::new(app.config.audience.clone()).max_skew;
    match cluster
        .consume_token_id(&claims.jti, expires_at, skew)
        .await
    {
        Ok(unused) => unused,
        Err(e) => {
            app.metrics.db_error("redis_jti");
            tracing::warn!(error = %e, "cannot check the token id across the cluster");
            true
        }
    }
}

/// `GET /v1/artifacts/nap-agent/{version}/{target}[.sig]`, for a node with a valid token.
async fn artifact(
    app: Arc<App>,
    peer: SocketAddr,
    req: &Request<Incoming>,
    rest: &str,
) -> Response<Body> {
    let Some(token) = bearer(req) else {
        return refused(&app, peer, "missing_token").await;
    };
    let check = crate::auth::inspect(&app.store, token).await;
    let now = app.clock.wall();
    if let Err(rejection) = nap_core::central::auth::check_token(
        &AuthPolicy::new(app.config.audience.clone()),
        now,
        &check,
    ) {
        return refused(&app, peer, rejection.reason()).await;
    }
    let Some(root) = app.config.artifacts.clone() else {
        return error(StatusCode::NOT_FOUND, "no artifacts are configured");
    };
    let mut parts = rest.split('/');
    let (Some(version), Some(file), None) = (parts.next(), parts.next(), parts.next()) else {
        return error(
            StatusCode::NOT_FOUND,
            "expected /v1/artifacts/nap-agent/{version}/{target}",
        );
    };
    let safe = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    if !safe(version) || !safe(file) {
        return error(StatusCode::BAD_REQUEST, "invalid version or target");
    }
    let path: PathBuf = root.join("nap-agent").join(version).join(file);
    match tokio::fs::read(&path).await {
        Ok(bytes) => {
            let mut r = response(StatusCode::OK, bytes);
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            r
        }
        Err(_) => error(StatusCode::NOT_FOUND, "no such artifact"),
    }
}
