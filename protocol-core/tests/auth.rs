//! Central's token checks on injected wall-clock time (spec/protocol.md §3):
//! every rule refuses with its own reason; a `jti` is accepted once.

use nap_core::central::{
    Admit, Alarm, Audience, AuthPolicy, AuthRejection, CentralHub, Claims, HubConfig, HubInput,
    HubOutput, NodeLookup, SpentRecord, TokenCheck, Upgrade, auth::check_token,
};
use nap_core::{NodeId, SessionId, Timestamp, WallTime};

const NODE: &str = "6f1c2b9e-8a4d-4c3e-9b7a-2d5e8f1a3c47";

fn now() -> WallTime {
    WallTime::from_unix_millis(1_760_522_400_000).expect("valid")
}

fn good() -> TokenCheck {
    let t = now().unix_seconds();
    TokenCheck {
        alg: "EdDSA".into(),
        claims: Some(Claims {
            iss: NODE.into(),
            sub: NODE.into(),
            aud: Audience::One("nap-central".into()),
            iat: t,
            exp: t + 3600,
            jti: "3b9d7c2a-1e4f-4a8b-9c6d-5e7f8a9b0c1d".into(),
            scope: "node".into(),
        }),
        node: NodeLookup::Active,
        signature_valid: true,
        spent: SpentRecord::Unspent,
    }
}

fn check(token: &TokenCheck) -> Result<(), AuthRejection> {
    check_token(&AuthPolicy::new("nap-central"), now(), token).map(|_| ())
}

fn with(f: impl FnOnce(&mut TokenCheck)) -> Result<(), AuthRejection> {
    let mut token = good();
    f(&mut token);
    check(&token)
}

fn claims(t: &mut TokenCheck) -> &mut Claims {
    t.claims.as_mut().expect("claims")
}

#[test]
fn a_good_token_passes() {
    assert_eq!(check(&good()), Ok(()));
    let valid = check_token(&AuthPolicy::new("nap-central"), now(), &good()).expect("valid");
    assert_eq!(valid.node_id, NODE.parse::<NodeId>().expect("uuid"));
    assert_eq!(valid.expires_at, now().add_millis(3_600_000));
}

#[test]
fn each_rule_refuses_with_its_reason() {
    let t = now().unix_seconds();
    let cases: Vec<(&str, Result<(), AuthRejection>)> = vec![
        ("alg none", with(|k| k.alg = "none".into())),
        (
            "HS256 (signed with the public key)",
            with(|k| k.alg = "HS256".into()),
        ),
        ("unparseable", with(|k| k.claims = None)),
        ("unknown node", with(|k| k.node = NodeLookup::Unknown)),
        ("another node's key", with(|k| k.signature_valid = false)),
        ("revoked", with(|k| k.node = NodeLookup::Revoked)),
        ("iss differs", with(|k| claims(k).iss = "someone".into())),
        (
            "sub not a uuid",
            with(|k| {
                claims(k).sub = "node-1".into();
                claims(k).iss = "node-1".into();
            }),
        ),
        (
            "wrong audience",
            with(|k| claims(k).aud = Audience::One("other".into())),
        ),
        ("wrong scope", with(|k| claims(k).scope = "admin".into())),
        (
            "expired",
            with(|k| {
                claims(k).iat = t - 7200;
                claims(k).exp = t - 3600;
            }),
        ),
        (
            "future-dated",
            with(|k| {
                claims(k).iat = t + 120;
                claims(k).exp = t + 1800;
            }),
        ),
        ("over one hour", with(|k| claims(k).exp = t + 3601)),
        ("exp before iat", with(|k| claims(k).exp = t - 1)),
        ("jti not a uuid", with(|k| claims(k).jti = "1".into())),
    ];
    let expected = [
        AuthRejection::Algorithm,
        AuthRejection::Algorithm,
        AuthRejection::Malformed,
        AuthRejection::UnknownNode,
        AuthRejection::Signature,
        AuthRejection::Revoked,
        AuthRejection::Issuer,
        AuthRejection::Issuer,
        AuthRejection::Audience,
        AuthRejection::Scope,
        AuthRejection::Expired,
        AuthRejection::NotYetValid,
        AuthRejection::Lifetime,
        AuthRejection::Lifetime,
        AuthRejection::Malformed,
    ];
    for ((what, got), want) in cases.into_iter().zip(expected) {
        assert_eq!(got, Err(want), "{what}");
    }
}

#[test]
fn sixty_seconds_of_skew_are_allowed_and_no_more() {
    let t = now().unix_seconds();
    assert_eq!(
        with(|k| {
            claims(k).iat = t + 60;
            claims(k).exp = t + 600
        }),
        Ok(())
    );
    assert_eq!(
        with(|k| {
            claims(k).iat = t + 61;
            claims(k).exp = t + 600
        }),
        Err(AuthRejection::NotYetValid)
    );
    assert_eq!(
        with(|k| {
            claims(k).iat = t - 3000;
            claims(k).exp = t - 59
        }),
        Ok(())
    );
    assert_eq!(
        with(|k| {
            claims(k).iat = t - 3000;
            claims(k).exp = t - 60
        }),
        Err(AuthRejection::Expired)
    );
}

#[test]
fn an_audience_list_is_accepted_when_it_names_us() {
    let aud = Audience::Many(vec!["x".into(), "nap-central".into()]);
    assert_eq!(with(|k| claims(k).aud = aud), Ok(()));
}

/// The hub's verdict on an upgrade with this token: the refusal's reason.
fn admit(
    hub: &mut CentralHub,
    now: Timestamp,
    token: &TokenCheck,
    id: u128,
) -> Result<(), &'static str> {
    let upgrade = Upgrade {
        session_id: SessionId::from_u128(id),
        peer: None,
        token: Some(token.clone()),
        hello: nap_core::wire::Hello::default(),
    };
    match hub.admit(now, &upgrade) {
        Admit::Accepted(_) => Ok(()),
        Admit::Refused(refusal) => Err(refusal.reason),
    }
}

fn hub() -> CentralHub {
    let mut hub = CentralHub::new(HubConfig::new("nap-central"));
    hub.handle_input(Timestamp::ZERO, HubInput::WallClock(now()));
    hub
}

#[test]
fn a_replayed_jti_is_refused_until_it_can_no_longer_be_presented() {
    let mut hub = hub();
    assert_eq!(admit(&mut hub, Timestamp::ZERO, &good(), 1), Ok(()));
    assert_eq!(
        admit(&mut hub, Timestamp::from_secs(10), &good(), 2),
        Err(AuthRejection::Replayed.reason())
    );
    assert_eq!(hub.replay_window_len(), 1);
    // Past expiry plus skew the token is refused as expired, and its id forgotten.
    let later = Timestamp::from_secs(3600 + 61);
    assert_eq!(
        admit(&mut hub, later, &good(), 3),
        Err(AuthRejection::Expired.reason())
    );
    let mut fresh = good();
    let t = now().unix_seconds() + 3661;
    let c = claims(&mut fresh);
    c.iat = t;
    c.exp = t + 600;
    c.jti = "4b9d7c2a-1e4f-4a8b-9c6d-5e7f8a9b0c1d".into();
    assert_eq!(admit(&mut hub, later, &fresh, 4), Ok(()));
    assert_eq!(hub.replay_window_len(), 1, "the old id was pruned");
}

#[test]
fn a_token_id_the_durable_record_has_spent_is_refused_as_replayed() {
    // Spent at another process, or at this one before a restart: the hub's
    // own window is empty, the store's record says spent.
    let mut hub = hub();
    let mut token = good();
    token.spent = SpentRecord::Spent;
    assert_eq!(
        admit(&mut hub, Timestamp::ZERO, &token, 1),
        Err(AuthRejection::Replayed.reason())
    );
}

#[test]
fn a_token_whose_id_cannot_be_checked_is_not_admitted_and_not_held_against_the_peer() {
    let mut hub = hub();
    let mut token = good();
    token.spent = SpentRecord::Unavailable;
    let upgrade = Upgrade {
        session_id: SessionId::from_u128(1),
        peer: Some("10.0.0.1".parse().expect("ip")),
        token: Some(token),
        hello: nap_core::wire::Hello::default(),
    };
    // Fail closed, as "come back later": 503 with a Retry-After, no
    // penalty, no alarm.
    let Admit::Refused(refusal) = hub.admit(Timestamp::ZERO, &upgrade) else {
        panic!("admitted a token whose id could not be checked");
    };
    assert_eq!(refusal.kind.http_status(), 503);
    assert!(refusal.retry_after.is_some());
    assert!(refusal.hold.is_zero());
    assert_eq!(hub.penalised_addresses(), 0);
    assert_eq!(hub.poll_output(), None);
    // Once the record answers, the same token is admitted: it was not spent.
    let upgrade = Upgrade {
        token: Some(good()),
        ..upgrade
    };
    assert!(matches!(
        hub.admit(Timestamp::ZERO, &upgrade),
        Admit::Accepted(_)
    ));
}

#[test]
fn an_upgrade_without_a_token_is_refused_and_an_administrator_told() {
    let mut hub = hub();
    let upgrade = Upgrade {
        session_id: SessionId::from_u128(1),
        peer: None,
        token: None,
        hello: nap_core::wire::Hello::default(),
    };
    assert!(matches!(
        hub.admit(Timestamp::ZERO, &upgrade),
        Admit::Refused(r) if r.reason == "missing_token" && r.kind.http_status() == 401
    ));
    assert!(matches!(
        hub.poll_output(),
        Some(HubOutput::Alarm(Alarm::AuthRefused {
            reason: "missing_token",
            ..
        }))
    ));
}
