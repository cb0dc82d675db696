//! Stand-in tokens for the in-memory world and the model: the claims that
//! matter to the engines in a dotted string, `sub.jti.iat.exp.sig`, with a
//! signature that is either `good` or `bad`. Real signatures are the
//! drivers' business and are tested there.

use std::collections::BTreeMap;

use crate::NodeId;
use crate::central::{Audience, Claims, NodeLookup, SpentRecord, TokenCheck};

/// The audience every stand-in token names.
pub const AUDIENCE: &str = "nap-central";

/// A token for `node` with these claims.
pub fn mint(node: NodeId, jti: crate::TokenId, iat: i64, exp: i64, signs_validly: bool) -> String {
    let sig = if signs_validly { "good" } else { "bad" };
    format!("{node}.{jti}.{iat}.{exp}.{sig}")
}

/// What a driver would learn from verifying `token`, given the registry.
pub fn check(token: &str, registry: &BTreeMap<NodeId, NodeLookup>) -> TokenCheck {
    let parts: Vec<&str> = token.split('.').collect();
    let parsed = match parts.as_slice() {
        [sub, jti, iat, exp, sig] => match (iat.parse::<i64>(), exp.parse::<i64>()) {
            (Ok(iat), Ok(exp)) => Some((
                Claims {
                    iss: (*sub).to_owned(),
                    sub: (*sub).to_owned(),
                    aud: Audience::One(AUDIENCE.into()),
                    iat,
                    exp,
                    jti: (*jti).to_owned(),
                    scope: "node".into(),
                },
                *sig == "good",
            )),
            _ => None,
        },
        _ => None,
    };
    let node = parsed
        .as_ref()
        .and_then(|(c, _)| c.sub.parse::<NodeId>().ok())
        .and_then(|n| registry.get(&n).copied())
        .unwrap_or(NodeLookup::Unknown);
    TokenCheck {
        alg: "EdDSA".into(),
        signature_valid: parsed.as_ref().is_some_and(|(_, ok)| *ok),
        claims: parsed.map(|(c, _)| c),
        node,
        spent: SpentRecord::Unspent,
    }
}
