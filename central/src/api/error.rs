//! API errors: every one is JSON `{"error": "..."}` with its status.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An API error.
#[derive(Debug)]
pub struct ApiError(pub(super) StatusCode, pub(super) String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

pub(super) fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

pub(super) fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "API request failed");
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
}
