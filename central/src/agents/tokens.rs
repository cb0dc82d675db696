//! The crypto half of node authentication: read a token's header `alg` and
//! claims, verify the signature with the node's registered key, and hand the
//! findings to the core, which decides.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use std::time::Duration;

use nap_core::central::{Claims, NodeLookup, SpentRecord, TokenCheck};
use nap_core::{NodeId, TokenId, WallTime};

use crate::effects::Effects;
use crate::store::{NodeRecord, SpentToken, Storage};

/// The `alg` of a token's header, whatever it says (including `none`).
fn header_alg(token: &str) -> Option<String> {
    let header = token.split('.').next()?;
    let bytes = URL_SAFE_NO_PAD.decode(header).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value.get("alg")?.as_str().map(str::to_owned)
}

/// The claims, unverified (verification follows with the key they name).
fn claims(token: &str) -> Option<Claims> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Whether `token` is signed by the Ed25519 key in `public_key_pem`.
pub fn signature_valid(token: &str, public_key_pem: &str) -> bool {
    let Ok(key) = DecodingKey::from_ed_pem(public_key_pem.as_bytes()) else {
        return false;
    };
    let mut validation = Validation::new(Algorithm::EdDSA);
    // Time, audience and the rest are the core's checks, on its clock.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation).is_ok()
}

/// Everything the core needs to decide on `token`.
/// A store that cannot answer is an error, not an unknown node: the peer
/// is not to blame for central's own failure.
pub async fn inspect(
    store: &impl Storage,
    token: &str,
) -> Result<TokenCheck, crate::store::StoreError> {
    let claims = claims(token);
    let node = match claims.as_ref().and_then(|c| c.sub.parse::<NodeId>().ok()) {
        Some(id) => store.get_node(id).await?,
        None => None,
    };
    Ok(findings(token, claims, node.as_ref()))
}

/// [`inspect`] with the node the token names already looked up.
pub fn inspect_with(token: &str, node: Option<&NodeRecord>) -> TokenCheck {
    findings(token, claims(token), node)
}

/// The findings on `token`, whose claims are already parsed; `node` counts
/// only if it is the node the claims name.
fn findings(token: &str, claims: Option<Claims>, node: Option<&NodeRecord>) -> TokenCheck {
    let alg = header_alg(token).unwrap_or_default();
    let named = claims.as_ref().and_then(|c| c.sub.parse::<NodeId>().ok());
    let node = node.filter(|n| Some(n.id) == named);
    let (lookup, signature_valid) = match node {
        None => (NodeLookup::Unknown, false),
        Some(n) => (
            if n.revoked {
                NodeLookup::Revoked
            } else {
                NodeLookup::Active
            },
            alg == "EdDSA" && signature_valid(token, &n.public_key_pem),
        ),
    };
    TokenCheck {
        alg,
        claims,
        node: lookup,
        signature_valid,
        spent: SpentRecord::Unspent,
    }
}

/// The id to spend for a token whose signature verified: kept until its
/// expiry plus `skew`, after which the hub refuses it as expired anyway.
/// `None` for a token that does not verify or whose claims the hub refuses
/// (spending those would let anyone fill the record).
pub fn to_spend(check: &TokenCheck, skew: Duration) -> Option<SpentToken> {
    if !check.signature_valid {
        return None;
    }
    let claims = check.claims.as_ref()?;
    let skew_ms = i64::try_from(skew.as_millis()).unwrap_or(i64::MAX);
    Some(SpentToken {
        jti: claims.jti.parse::<TokenId>().ok()?,
        node_id: claims.sub.parse::<NodeId>().ok()?,
        keep_until: WallTime::from_unix_millis(claims.exp.checked_mul(1000)?)?.add_millis(skew_ms),
    })
}

/// Spends a verified token's id in the durable record (upgrade and refresh
/// alike); what the record said of it. A token [`to_spend`] declines is left
/// `Unspent`: the hub refuses it on its claims.
pub async fn spend(effects: &Effects, check: &TokenCheck, skew: Duration) -> SpentRecord {
    match to_spend(check, skew) {
        Some(token) => effects.spend_token_id(token).await,
        None => SpentRecord::Unspent,
    }
}

/// Checks that a PEM file holds an Ed25519 public key.
pub fn is_ed25519_public_key(pem: &str) -> bool {
    DecodingKey::from_ed_pem(pem.as_bytes()).is_ok() && pem.contains("PUBLIC KEY")
}
