//! Who is calling: a bearer API token, looked up by its hash, and its role.

use axum::http::{HeaderMap, StatusCode, header};

use super::error::{ApiError, internal};
use super::tokens::{Role, token_hash};
use crate::hub::HubHandle;
use crate::store::Storage;

/// Who is calling.
#[derive(Debug, Clone)]
pub(super) struct Caller {
    pub(super) name: String,
    pub(super) role: Role,
}

pub(super) async fn caller(
    hub: &HubHandle,
    headers: &HeaderMap,
    needs: Role,
) -> Result<Caller, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError(StatusCode::UNAUTHORIZED, "missing bearer token".into()))?;
    let record = hub
        .effects()
        .store
        .find_api_token(&token_hash(token))
        .await
        .map_err(internal)?
        .ok_or_else(|| ApiError(StatusCode::UNAUTHORIZED, "unknown token".into()))?;
    let role = Role::parse(&record.role).ok_or_else(|| internal("stored role is unknown"))?;
    if role < needs {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "this needs the {} role; the token has {}",
                needs.as_str(),
                role.as_str()
            ),
        ));
    }
    Ok(Caller {
        name: record.name,
        role,
    })
}
