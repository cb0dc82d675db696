//! The claim checks of spec/protocol.md §3, on injected wall-clock time.
//! Signature verification is crypto and belongs to the driver; it reports
//! the outcome in [`TokenCheck`], and everything else is decided here.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{NodeId, TokenId, WallTime};

/// A JWT's claims as the agent writes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: Audience,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    #[serde(default)]
    pub scope: String,
}

/// `aud` may be one string or a list (RFC 7519 §4.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, audience: &str) -> bool {
        match self {
            Self::One(a) => a == audience,
            Self::Many(list) => list.iter().any(|a| a == audience),
        }
    }
}

/// What the driver found out about a token before the claim checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenCheck {
    /// The header's `alg`, as written.
    pub alg: String,
    /// The claims, if the token could be parsed at all.
    pub claims: Option<Claims>,
    /// What is known of the node named by `sub`.
    pub node: NodeLookup,
    /// Whether the signature verified with that node's registered key.
    pub signature_valid: bool,
    /// What the durable record of spent token ids says of this `jti`.
    pub spent: SpentRecord,
}

/// The durable record of spent token ids (spec §3), as the driver found it.
/// The driver spends a token's id there — in the store every central process
/// shares, kept until the token's expiry plus the skew — once its signature
/// verifies, and reports the outcome; the hub decides what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SpentRecord {
    /// Spent now, for the first time (or not asked: the hub's own window
    /// decides — the simulation and tests, which have no store).
    #[default]
    Unspent,
    /// Spent before: at this process or another, before or after a restart.
    Spent,
    /// The record could not be asked (the store is away): the token cannot
    /// be told from a replay, so it is not accepted now — and neither is it
    /// the peer's fault.
    Unavailable,
}

/// The registry's answer for a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeLookup {
    Unknown,
    Active,
    Revoked,
}

/// Why a token was refused. Each has a stable name for metrics and audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, thiserror::Error)]
pub enum AuthRejection {
    #[error("no bearer token")]
    Missing,
    #[error("token is malformed")]
    Malformed,
    #[error("algorithm is not EdDSA")]
    Algorithm,
    #[error("node is not registered")]
    UnknownNode,
    #[error("signature does not verify with the node's key")]
    Signature,
    #[error("node is revoked")]
    Revoked,
    #[error("iss and sub differ or are not a node id")]
    Issuer,
    #[error("wrong audience")]
    Audience,
    #[error("scope is not \"node\"")]
    Scope,
    #[error("token has expired")]
    Expired,
    #[error("token is issued in the future")]
    NotYetValid,
    #[error("token lifetime is over one hour")]
    Lifetime,
    #[error("token id was used before")]
    Replayed,
    #[error("token is for another node than this session")]
    WrongNode,
    #[error("token id cannot be checked now")]
    Unverifiable,
}

impl AuthRejection {
    /// A short stable name.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing_token",
            Self::Malformed => "malformed",
            Self::Algorithm => "algorithm",
            Self::UnknownNode => "unknown_node",
            Self::Signature => "signature",
            Self::Revoked => "revoked",
            Self::Issuer => "issuer",
            Self::Audience => "audience",
            Self::Scope => "scope",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::Lifetime => "lifetime",
            Self::Replayed => "replayed",
            Self::WrongNode => "wrong_node",
            Self::Unverifiable => "unverifiable",
        }
    }
}

/// The rules' parameters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AuthPolicy {
    pub audience: String,
    pub max_skew: Duration,
    pub max_lifetime: Duration,
}

impl AuthPolicy {
    /// The spec's rules for `audience`: 60 s skew, 1 h lifetime.
    pub fn new(audience: impl Into<String>) -> Self {
        Self {
            audience: audience.into(),
            max_skew: Duration::from_secs(60),
            max_lifetime: Duration::from_secs(3600),
        }
    }
}

/// A token that passed every check but the replay check (the hub's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ValidToken {
    pub node_id: NodeId,
    pub jti: TokenId,
    pub expires_at: WallTime,
}

impl TokenCheck {
    /// The node the token claims to be (`sub`), whatever else is wrong with it.
    pub fn claimed_node(&self) -> Option<NodeId> {
        self.claims.as_ref()?.sub.parse().ok()
    }
}

/// Checks everything but `jti` replay, in the order of the spec.
pub fn check_token(
    policy: &AuthPolicy,
    now: WallTime,
    token: &TokenCheck,
) -> Result<ValidToken, AuthRejection> {
    if token.alg != "EdDSA" {
        return Err(AuthRejection::Algorithm);
    }
    let claims = token.claims.as_ref().ok_or(AuthRejection::Malformed)?;
    match token.node {
        NodeLookup::Unknown => return Err(AuthRejection::UnknownNode),
        NodeLookup::Active | NodeLookup::Revoked => {}
    }
    if !token.signature_valid {
        return Err(AuthRejection::Signature);
    }
    if token.node == NodeLookup::Revoked {
        return Err(AuthRejection::Revoked);
    }
    let node_id: NodeId = claims.sub.parse().map_err(|_| AuthRejection::Issuer)?;
    if claims.iss != claims.sub {
        return Err(AuthRejection::Issuer);
    }
    if !claims.aud.contains(&policy.audience) {
        return Err(AuthRejection::Audience);
    }
    if claims.scope != "node" {
        return Err(AuthRejection::Scope);
    }
    let skew = i64::try_from(policy.max_skew.as_secs()).unwrap_or(i64::MAX);
    let max_lifetime = i64::try_from(policy.max_lifetime.as_secs()).unwrap_or(i64::MAX);
    let now_s = now.unix_seconds();
    if claims.exp <= now_s.saturating_sub(skew) {
        return Err(AuthRejection::Expired);
    }
    if claims.iat > now_s.saturating_add(skew) {
        return Err(AuthRejection::NotYetValid);
    }
    if claims.exp.saturating_sub(claims.iat) > max_lifetime || claims.exp < claims.iat {
        return Err(AuthRejection::Lifetime);
    }
    let jti: TokenId = claims.jti.parse().map_err(|_| AuthRejection::Malformed)?;
    let expires_at = WallTime::from_unix_millis(claims.exp.saturating_mul(1000))
        .ok_or(AuthRejection::Malformed)?;
    Ok(ValidToken {
        node_id,
        jti,
        expires_at,
    })
}

/// Token ids seen, each kept while its token could still be presented
/// (its expiry plus the skew). Bounded by time, not count: an expired token
/// is refused before its `jti` is looked up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ReplayWindow {
    by_expiry: std::collections::BTreeSet<(WallTime, TokenId)>,
    seen: std::collections::BTreeSet<TokenId>,
}

impl ReplayWindow {
    /// Records `jti`; false if it was already there.
    pub fn consume(
        &mut self,
        now: WallTime,
        skew: Duration,
        jti: TokenId,
        expires_at: WallTime,
    ) -> bool {
        self.prune(now, skew);
        if !self.seen.insert(jti) {
            return false;
        }
        self.by_expiry.insert((expires_at, jti));
        true
    }

    /// Forgets ids whose tokens can no longer be presented.
    pub fn prune(&mut self, now: WallTime, skew: Duration) {
        let horizon = now.add_millis(-i64::try_from(skew.as_millis()).unwrap_or(i64::MAX));
        while let Some(&(expiry, jti)) = self.by_expiry.first() {
            if expiry > horizon {
                break;
            }
            self.by_expiry.pop_first();
            self.seen.remove(&jti);
        }
    }

    /// Ids held now.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no id is held.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}
