//! The agent endpoint's HTTP answers: JSON errors, and the answer to an
//! upgrade the hub refused, held as long as the hub says.

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use nap_core::central::{Refusal, RefusalKind};

use super::AgentEndpoint;
use crate::events::AppEvent;
use crate::metrics::{Outcome, Reason};

pub(super) type Body = Full<Bytes>;

pub(super) fn response(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

pub(super) fn error(status: StatusCode, message: &str) -> Response<Body> {
    response(status, serde_json::json!({ "error": message }).to_string())
}

pub(super) fn bearer(req: &Request<Incoming>) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// The answer to a refused upgrade, held as long as the hub says.
pub(super) async fn refused(endpoint: &AgentEndpoint, refusal: Refusal) -> Response<Body> {
    let metrics = endpoint.metrics();
    let outcome = match refusal.kind {
        RefusalKind::Unauthorized => {
            metrics
                .auth_failures
                .get_or_create(&Reason {
                    reason: refusal.reason.into(),
                })
                .inc();
            endpoint.hub.effects().events.emit(AppEvent::AuthFailed {
                reason: refusal.reason,
            });
            "unauthorized"
        }
        RefusalKind::Throttled => "throttled",
        RefusalKind::Busy => "busy",
    };
    metrics
        .handshakes
        .get_or_create(&Outcome {
            outcome: outcome.into(),
        })
        .inc();
    if !refusal.hold.is_zero() {
        tokio::time::sleep(refusal.hold).await;
    }
    let status =
        StatusCode::from_u16(refusal.kind.http_status()).unwrap_or(StatusCode::UNAUTHORIZED);
    let message = match refusal.kind {
        RefusalKind::Unauthorized => refusal.reason,
        RefusalKind::Throttled => "too many failed attempts from this address",
        RefusalKind::Busy => "too many handshakes in flight",
    };
    let mut r = error(status, message);
    if let Some(after) = refusal.retry_after {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(after.as_secs()));
    }
    r
}
