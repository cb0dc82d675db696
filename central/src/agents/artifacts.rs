//! Agent update artifacts, served to nodes with a valid token:
//! `GET /v1/artifacts/nap-agent/{version}/{target}[.manifest]`.

use std::net::SocketAddr;
use std::path::PathBuf;

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};

use super::AgentEndpoint;
use super::answer::{Body, bearer, error, refused, response};

/// `GET /v1/artifacts/nap-agent/{version}/{target}[.manifest]`, for a node with a valid token.
pub(super) async fn serve(
    endpoint: &AgentEndpoint,
    peer: SocketAddr,
    req: &Request<Incoming>,
    rest: &str,
) -> Response<Body> {
    let check = match bearer(req) {
        Some(token) => match super::tokens::inspect(&endpoint.hub.effects().store, token).await {
            Ok(check) => Some(check),
            Err(_) => return refused(endpoint, endpoint.hub.busy()).await,
        },
        None => None,
    };
    if let Some(refusal) = endpoint.hub.authorize(Some(peer.ip()), check.as_ref()) {
        return refused(endpoint, refusal).await;
    }
    let Some(root) = endpoint.artifacts.clone() else {
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
