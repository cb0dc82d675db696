//! The agent endpoint's HTTP side: a request must be a WebSocket upgrade to
//! `/v1/agent` with subprotocol `nap.v1` and a node token. The hub decides
//! on it before the upgrade completes — saturated handshakes get 503 with
//! the hub's `Retry-After`, a refused token 401 after the hub's penalty
//! delay or 429 past its limit — and this file only reads the request,
//! spends the token's id in the durable record, and writes the answer. A
//! refused attempt gives its handshake slot back before its answer is held.
//! The same listener serves agent update artifacts.

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use nap_core::SessionId;
use nap_core::central::{Admit, Refusal, Upgrade};
use nap_core::wire::Hello;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::AgentEndpoint;
use super::answer::{Body, bearer, error, refused};
use super::session::Admitted;
use crate::metrics::Outcome;

fn header_has(req: &Request<Incoming>, name: header::HeaderName, token: &str) -> bool {
    req.headers().get_all(name).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|part| part.trim().eq_ignore_ascii_case(token))
        })
    })
}

pub(super) async fn upgrade(
    endpoint: Arc<AgentEndpoint>,
    peer: SocketAddr,
    mut req: Request<Incoming>,
) -> Response<Body> {
    if let Some(refusal) = endpoint.hub.screen() {
        return refused(&endpoint, refusal).await;
    }
    let Ok(permit) = Arc::clone(&endpoint.handshakes).try_acquire_owned() else {
        let refusal = endpoint.hub.busy();
        return refused(&endpoint, refusal).await;
    };
    let metrics = endpoint.metrics();
    metrics.handshakes_in_flight.inc();
    let outcome = admit(&endpoint, peer, &mut req).await;
    metrics.handshakes_in_flight.dec();
    let (response, admission) = match outcome {
        Ok(pair) => pair,
        Err(Refused::Answer(response)) => return response,
        Err(Refused::Hub(refusal)) => {
            // The slot is for handshakes that may succeed: a refused one
            // must not hold it while its answer waits out the penalty.
            drop(permit);
            return refused(&endpoint, refusal).await;
        }
    };
    let upgrade = hyper::upgrade::on(req);
    let session = Arc::clone(&endpoint);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let config = session.session_config.clone();
                super::session::run(session.hub.clone(), config, upgraded, admission, permit).await;
            }
            Err(e) => {
                tracing::debug!(error = %e, "upgrade did not complete");
                super::session::never_opened(&session.hub, admission.admission);
            }
        }
    });
    metrics
        .handshakes
        .get_or_create(&Outcome {
            outcome: "accepted".into(),
        })
        .inc();
    response
}

/// An upgrade not admitted: a bad request answered at once, or the hub's
/// refusal, answered once the handshake slot is given back.
enum Refused {
    Answer(Response<Body>),
    Hub(Refusal),
}

impl From<Response<Body>> for Refused {
    fn from(response: Response<Body>) -> Self {
        Self::Answer(response)
    }
}

async fn admit(
    endpoint: &AgentEndpoint,
    peer: SocketAddr,
    req: &mut Request<Incoming>,
) -> Result<(Response<Body>, Admitted), Refused> {
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
        )
        .into());
    };
    if !header_has(
        req,
        header::SEC_WEBSOCKET_PROTOCOL,
        nap_core::PROTOCOL_VERSION,
    ) {
        return Err(error(StatusCode::BAD_REQUEST, "subprotocol nap.v1 is required").into());
    }
    let token = match bearer(req) {
        Some(token) => match super::tokens::inspect(&endpoint.hub.effects().store, token).await {
            Ok(mut check) => {
                let skew = endpoint.hub.read(|hub| hub.config().auth.max_skew);
                check.spent = super::tokens::spend(endpoint.hub.effects(), &check, skew).await;
                Some(check)
            }
            // Central cannot check the token now: come back later (503),
            // with no penalty for the address and no alarm.
            Err(e) => {
                tracing::warn!(error = %e, "cannot look the node up; answering 503");
                return Err(Refused::Hub(endpoint.hub.busy()));
            }
        },
        None => None,
    };
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let hello = Hello::from_headers(
        header(Hello::AGENT_VERSION_HEADER),
        header(Hello::FEATURES_HEADER),
    );
    let upgrade = Upgrade {
        session_id: SessionId::from(uuid::Uuid::new_v4()),
        peer: Some(peer.ip()),
        token,
        hello,
    };
    let admission = match endpoint.hub.admit(&upgrade) {
        Admit::Accepted(admission) => Admitted {
            admission,
            agent_version: upgrade.hello.agent_version,
        },
        Admit::Refused(refusal) => return Err(Refused::Hub(refusal)),
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
