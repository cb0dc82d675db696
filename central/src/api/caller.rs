//! Who is calling: a bearer API token, looked up by its hash, and its role.
//! The guard ([`super::guard`]) finds the caller before the request's body
//! is read; handlers check the role they need.

use axum::http::{HeaderMap, StatusCode, header};

use super::error::{ApiError, internal};
use super::tokens::{Role, token_hash};
use crate::hub::HubHandle;
use crate::store::Storage;

/// Who is calling.
#[derive(Debug, Clone)]
pub(super) struct Caller {
    /// The token's name.
    pub(super) name: String,
    /// The person the token belongs to: who decides, whatever token they use.
    pub(super) user: String,
    pub(super) role: Role,
    /// The token's hash: what its rate is limited by.
    pub(super) token_hash: String,
}

impl Caller {
    /// The person calling.
    pub(super) fn user(&self) -> &str {
        &self.user
    }

    /// The caller, if its role is at least `needs`.
    pub(super) fn needs(&self, needs: Role) -> Result<&Self, ApiError> {
        if self.role < needs {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                format!(
                    "this needs the {} role; the token has {}",
                    needs.as_str(),
                    self.role.as_str()
                ),
            ));
        }
        Ok(self)
    }
}

/// The bearer token of a request, if it has one.
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// The caller whose token `headers` carry.
pub(super) async fn authenticate(hub: &HubHandle, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let token = bearer(headers)
        .ok_or_else(|| ApiError(StatusCode::UNAUTHORIZED, "missing bearer token".into()))?;
    let hash = token_hash(token);
    let record = hub
        .effects()
        .store
        .find_api_token(&hash)
        .await
        .map_err(internal)?
        .ok_or_else(|| ApiError(StatusCode::UNAUTHORIZED, "unknown token".into()))?;
    let role = Role::parse(&record.role).ok_or_else(|| internal("stored role is unknown"))?;
    Ok(Caller {
        user: record.user().to_owned(),
        name: record.name,
        role,
        token_hash: hash,
    })
}
