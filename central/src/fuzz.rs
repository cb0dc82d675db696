//! The bodies of central's fuzz targets (`fuzz/`): the token verification
//! of the agent endpoint and the storage of telemetry. Here, not in the
//! fuzz crate, so that `central/tests/fuzz_replay.rs` replays the committed
//! corpora on the stable toolchain. Each panics only on a broken invariant.

use std::sync::OnceLock;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use nap_core::central::{AuthPolicy, Claims, auth::check_token};
use nap_core::codec::{Limits, decode_bytes};
use nap_core::wire::AgentMessage;
use nap_core::{NodeId, WallTime};

use crate::agents::tokens::inspect_with;
use crate::store::sqlite::SqliteStore;
use crate::store::{NodeRecord, Storage};

/// A key made for fuzzing only, never used anywhere else.
const FUZZ_PRIVATE_KEY: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIPUhlrfNZqqcK0CNwQeZGBtxyaa2EvtQsdT/9mG8Tg0Q
-----END PRIVATE KEY-----
";
const FUZZ_PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEA2RYGsc/EKD1V8TOd6RwYsQZS6H0fwM3OImTzDv2VrjQ=
-----END PUBLIC KEY-----
";
const NODE: NodeId = NodeId::from_u128(0x6f1c_2b9e_8a4d_4c3e_9b7a_2d5e_8f1a_3c47);
const AUDIENCE: &str = "nap-central";

fn now() -> WallTime {
    WallTime::from_unix_millis(1_760_522_400_000).unwrap_or(WallTime::UNIX_EPOCH)
}

/// The node the fuzz key belongs to, as the registry holds it.
pub fn node() -> NodeRecord {
    NodeRecord {
        id: NODE,
        name: "fuzz".into(),
        public_key_pem: FUZZ_PUBLIC_KEY.into(),
        labels: Default::default(),
        created_at: now(),
        revoked: false,
        status: None,
        last_seen: None,
        agent_version: None,
    }
}

fn signed_claims() -> Claims {
    let iat = now().unix_seconds();
    Claims {
        iss: NODE.to_string(),
        sub: NODE.to_string(),
        aud: nap_core::central::Audience::One(AUDIENCE.into()),
        iat,
        exp: iat + 600,
        jti: "9c5b94b1-35ad-49bb-b118-8e8fc24abf80".into(),
        scope: "node".into(),
    }
}

/// A genuine token of the fuzz node.
pub fn signed_token() -> &'static str {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN.get_or_init(|| {
        let key = EncodingKey::from_ed_pem(FUZZ_PRIVATE_KEY.as_bytes()).expect("fuzz key");
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &signed_claims(), &key)
            .expect("signing")
    })
}

/// Token verification on arbitrary tokens (first byte even), or on the
/// genuine token with bytes flipped (odd): nothing panics; a token that
/// verifies carries exactly the claims its signer signed; the core admits
/// only what verified.
pub fn jwt(data: &[u8]) {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let token = if mode % 2 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        let mut bytes = signed_token().as_bytes().to_vec();
        for pair in rest.chunks_exact(2) {
            let at = usize::from(pair[0]) % bytes.len();
            bytes[at] ^= pair[1];
        }
        String::from_utf8_lossy(&bytes).into_owned()
    };
    let node = node();
    let check = inspect_with(&token, Some(&node));
    if check.signature_valid {
        assert_eq!(check.alg, "EdDSA");
        assert_eq!(
            check.claims.as_ref(),
            Some(&signed_claims()),
            "{token:?} verified with claims nobody signed"
        );
    }
    if check_token(&AuthPolicy::new(AUDIENCE), now(), &check).is_ok() {
        assert!(check.signature_valid, "{token:?} admitted unverified");
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
    })
}

/// Storage of arbitrary telemetry: a frame that decodes as `telemetry`
/// stores (into a fresh in-memory SQLite store) without error, once: the
/// same sample twice in a batch or again later adds nothing, and the count
/// reads back what was added.
pub fn ingest(data: &[u8]) {
    let Ok(AgentMessage::Telemetry(mut telemetry)) =
        decode_bytes::<AgentMessage>(data, &Limits::default())
    else {
        return;
    };
    // The session has already refused samples naming another node.
    telemetry.node_id = NODE;
    runtime().block_on(async {
        let store = SqliteStore::memory().expect("in-memory store");
        store.migrate().await.expect("schema");
        store.add_node(node()).await.expect("node");
        let batch = [telemetry.clone(), telemetry.clone()];
        let added = store
            .insert_telemetry(&batch)
            .await
            .expect("a decoded sample stores");
        assert_eq!(added, 1, "one sample, twice in a batch");
        let again = store
            .insert_telemetry(&batch[..1])
            .await
            .expect("a stored sample stores again");
        assert_eq!(again, 0, "a sample already stored was added again");
        assert_eq!(store.count_telemetry(NODE).await.expect("count"), 1);
    });
}

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// Central's targets, by name.
pub const TARGETS: &[(&str, Target)] = &[("jwt", jwt), ("ingest", ingest)];
