//! Perfect cryptography for the model checker and the world: deterministic,
//! dependency-free stand-ins for SHA-256 and Ed25519. A signature here is a
//! tag over (key, message) that only [`Symbolic::sign`] makes, so a model's
//! adversary can forge only by being given a key — the usual symbolic
//! assumption; the real primitives are tested against their own vectors.

use crate::crypto::Crypto;

/// [`Crypto`] with symbolic signatures.
#[derive(Debug, Clone, Copy, Default)]
pub struct Symbolic;

impl Symbolic {
    /// The public half of the key named `secret`.
    pub fn public_key(secret: u8) -> [u8; 32] {
        Self.sha256(&[b'k', secret])
    }

    /// Signs `message` with the key named `secret`.
    pub fn sign(secret: u8, message: &[u8]) -> Vec<u8> {
        let public = Self::public_key(secret);
        tag(&public, message).to_vec()
    }
}

impl Crypto for Symbolic {
    fn sha256(&self, data: &[u8]) -> [u8; 32] {
        // FNV-1a, four lanes: enough to tell a model's few inputs apart.
        let mut out = [0u8; 32];
        for (lane, chunk) in out.chunks_mut(8).enumerate() {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ (lane as u64);
            for byte in data {
                h ^= u64::from(*byte);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
            chunk.copy_from_slice(&h.to_le_bytes());
        }
        out
    }

    fn verify_ed25519(&self, public_key: &[u8; 32], message: &[u8], signature: &[u8]) -> bool {
        signature == tag(public_key, message)
    }
}

fn tag(public_key: &[u8; 32], message: &[u8]) -> [u8; 32] {
    let mut input = b"sig".to_vec();
    input.extend_from_slice(public_key);
    input.extend_from_slice(message);
    Symbolic.sha256(&input)
}
