//! What every operator API request passes before its handler runs: the
//! caller is authenticated from the headers alone — before a byte of the body
//! is read — and its token's request rate limited; then the body is read
//! within a deadline and a size bound. Unauthenticated paths: `/healthz` and
//! the OpenAPI document; `/metrics` needs the metrics token when one is set.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use nap_core::Timestamp;
use nap_core::central::TokenBucket;

use super::caller::{authenticate, bearer};
use super::error::ApiError;
use crate::hub::HubHandle;

/// Tokens whose buckets are kept before idle ones are forgotten.
const MAX_BUCKETS: usize = 10_000;

/// The guard's settings and per-token buckets.
#[derive(Debug, Clone)]
pub struct Guard {
    pub hub: HubHandle,
    /// Whole-body read deadline.
    pub body_timeout: Duration,
    /// Largest body any route takes (routes may take less).
    pub max_body: usize,
    /// Requests per second and burst, per API token.
    pub rate_per_s: u32,
    pub rate_burst: u32,
    /// When set, `/metrics` needs `Authorization: Bearer <this>`.
    pub metrics_token: Option<String>,
    buckets: Arc<Mutex<HashMap<String, TokenBucket>>>,
}

impl Guard {
    pub fn new(hub: HubHandle, config: &crate::ServeConfig, max_body: usize) -> Self {
        Self {
            hub,
            body_timeout: Duration::from_millis(config.api_body_timeout_ms),
            max_body,
            rate_per_s: config.api_rate_per_s,
            rate_burst: config.api_rate_burst,
            metrics_token: config.metrics_token.clone(),
            buckets: Arc::default(),
        }
    }

    /// Takes one request from the token's bucket.
    fn allow(&self, token_hash: &str, now: Timestamp) -> bool {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(token_hash) {
            // A full bucket is one that has not been used lately: forgetting
            // it loses nothing. Failing that, start afresh.
            buckets.retain(|_, b| !b.is_full(now));
            if buckets.len() >= MAX_BUCKETS {
                buckets.clear();
            }
        }
        buckets
            .entry(token_hash.to_owned())
            .or_insert_with(|| TokenBucket::new(now, self.rate_per_s, self.rate_burst))
            .take(now)
    }
}

fn open(path: &str) -> bool {
    matches!(path, "/healthz" | "/api/v1/openapi.json")
}

/// The middleware.
pub async fn guard(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    if path == "/metrics" {
        if let Some(expected) = &guard.metrics_token {
            let given = bearer(request.headers()).unwrap_or_default();
            let matches = aws_lc_rs::constant_time::verify_slices_are_equal(
                given.as_bytes(),
                expected.as_bytes(),
            )
            .is_ok();
            if !matches {
                return ApiError(StatusCode::UNAUTHORIZED, "metrics token required".into())
                    .into_response();
            }
        }
    } else if !open(&path) {
        let caller = match authenticate(&guard.hub, request.headers()).await {
            Ok(caller) => caller,
            Err(e) => return e.into_response(),
        };
        if !guard.allow(&caller.token_hash, guard.hub.effects().clock.now()) {
            let mut response = ApiError(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "over this token's rate of {} requests per second",
                    guard.rate_per_s
                ),
            )
            .into_response();
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, 1.into());
            return response;
        }
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(caller);
        let body = match read_body(&guard, body).await {
            Ok(body) => body,
            Err(e) => return e.into_response(),
        };
        return next.run(Request::from_parts(parts, body)).await;
    }
    next.run(request).await
}

/// The whole body, within the deadline and the bound.
async fn read_body(guard: &Guard, body: Body) -> Result<Body, ApiError> {
    match tokio::time::timeout(
        guard.body_timeout,
        axum::body::to_bytes(body, guard.max_body),
    )
    .await
    {
        Ok(Ok(bytes)) => Ok(Body::from(bytes)),
        Ok(Err(e)) => Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body unreadable or over {} bytes: {e}", guard.max_body),
        )),
        Err(_) => Err(ApiError(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the body was not received within {} ms",
                guard.body_timeout.as_millis()
            ),
        )),
    }
}
