//! Identifiers that travel on the wire. Each is a UUID with its own type so
//! that a node id can never be passed where a request id is expected.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        #[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
        #[cfg_attr(feature = "schema", schemars(transparent))]
        pub struct $name(pub Uuid);

        impl $name {
            /// The identifier made of these 16 bytes (the driver supplies randomness).
            pub const fn from_bytes(bytes: [u8; 16]) -> Self {
                Self(Uuid::from_bytes(bytes))
            }

            /// A version-4 identifier made of these random bytes (an
            /// engine's PRNG, or the driver's randomness).
            pub fn from_random_bytes(bytes: [u8; 16]) -> Self {
                Self(uuid::Builder::from_random_bytes(bytes).into_uuid())
            }

            /// The identifier with this 128-bit value, for tests and simulations.
            pub const fn from_u128(value: u128) -> Self {
                Self(Uuid::from_u128(value))
            }

            /// The underlying UUID.
            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(value: Uuid) -> Self {
                Self(value)
            }
        }

        #[cfg(feature = "testing")]
        impl proptest::arbitrary::Arbitrary for $name {
            type Parameters = ();
            type Strategy = proptest::strategy::Map<proptest::num::u128::Any, fn(u128) -> Self>;

            fn arbitrary_with((): ()) -> Self::Strategy {
                use proptest::strategy::Strategy;
                proptest::num::u128::ANY.prop_map(Self::from_u128)
            }
        }
    };
}

uuid_id!(
    /// A node (one agent installation), registered with central by its public key.
    NodeId
);
uuid_id!(
    /// One command request; the key for dedupe, results and acks.
    RequestId
);
uuid_id!(
    /// One authenticated connection of a node, named by central in `welcome`.
    SessionId
);
uuid_id!(
    /// One alert raised by a node: central acks it by this id, and stores it
    /// once however often it is sent.
    AlertId
);
uuid_id!(
    /// A JWT's `jti`: central refuses a token id it has seen within the replay window.
    TokenId
);
uuid_id!(
    /// v0.3: one rollout (a command to many nodes under a strategy); each
    /// target's command has its own [`RequestId`], tagged with this.
    RolloutId
);
