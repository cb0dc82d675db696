//! The cryptographic primitives the core's rules need, supplied by the
//! driver (as rustls takes a `CryptoProvider`): the core decides what must
//! verify and what a failure means; the provider only computes. Every
//! provider must be deterministic — the same inputs, the same answer — so a
//! seed still replays.

use std::fmt;

/// SHA-256 and Ed25519 verification.
pub trait Crypto: Send + Sync + fmt::Debug {
    /// SHA-256 of `data`.
    fn sha256(&self, data: &[u8]) -> [u8; 32];

    /// Whether `signature` is a valid Ed25519 signature of `message` by the
    /// holder of `public_key` (32 raw bytes).
    fn verify_ed25519(&self, public_key: &[u8; 32], message: &[u8], signature: &[u8]) -> bool;
}

/// [`Crypto`] on aws-lc-rs.
#[cfg(feature = "aws-lc")]
#[derive(Debug, Clone, Copy, Default)]
pub struct AwsLc;

#[cfg(feature = "aws-lc")]
impl Crypto for AwsLc {
    fn sha256(&self, data: &[u8]) -> [u8; 32] {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        out
    }

    fn verify_ed25519(&self, public_key: &[u8; 32], message: &[u8], signature: &[u8]) -> bool {
        use aws_lc_rs::signature::{ED25519, UnparsedPublicKey};
        UnparsedPublicKey::new(&ED25519, public_key)
            .verify(message, signature)
            .is_ok()
    }
}
