//! What the agent listener serves: the upgrade at `/v1/agent` and update
//! artifacts; anything else is 404.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::AgentEndpoint;
use super::answer::{Body, error};

pub(super) async fn handle(
    endpoint: Arc<AgentEndpoint>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let path = req.uri().path().to_owned();
    let response = if path == nap_core::AGENT_PATH {
        super::upgrade::upgrade(endpoint, peer, req).await
    } else if let Some(rest) = path.strip_prefix("/v1/artifacts/nap-agent/") {
        super::artifacts::serve(&endpoint, peer, &req, rest).await
    } else {
        error(StatusCode::NOT_FOUND, "no such endpoint")
    };
    Ok(response)
}
