//! The node's identity: an Ed25519 key pair made by `nap-agent init`, and the
//! short-lived JWTs it signs for central (spec/protocol.md §3).

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use base64::Engine as _;
use nap_core::NodeId;

/// A node's signing key.
pub struct NodeKey {
    pair: Ed25519KeyPair,
    encoding: jsonwebtoken::EncodingKey,
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeKey").finish_non_exhaustive()
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn unpem(text: &str) -> anyhow::Result<Vec<u8>> {
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .context("not PEM")
}

impl NodeKey {
    /// A new random key.
    pub fn generate() -> anyhow::Result<(Self, String)> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| anyhow::anyhow!("key generation failed"))?;
        let private_pem = pem("PRIVATE KEY", pkcs8.as_ref());
        Ok((Self::from_pem(&private_pem)?, private_pem))
    }

    /// Reads a PKCS#8 PEM private key.
    pub fn from_pem(private_pem: &str) -> anyhow::Result<Self> {
        let der = unpem(private_pem)?;
        let pair = Ed25519KeyPair::from_pkcs8(&der)
            .map_err(|_| anyhow::anyhow!("not an Ed25519 PKCS#8 key"))?;
        let encoding = jsonwebtoken::EncodingKey::from_ed_pem(private_pem.as_bytes())?;
        Ok(Self { pair, encoding })
    }

    /// Reads the key file, refusing one that others can read.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        use std::os::unix::fs::PermissionsExt as _;
        let meta =
            std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
        if meta.permissions().mode() & 0o077 != 0 {
            anyhow::bail!("{} is readable by others: chmod 600 it", path.display());
        }
        let text = std::fs::read_to_string(path)?;
        Self::from_pem(&text)
            .with_context(|| format!("{} is not an Ed25519 private key", path.display()))
    }

    /// The public key as SPKI PEM, for `nap-central node add`.
    pub fn public_pem(&self) -> String {
        let mut spki = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        spki.extend_from_slice(self.pair.public_key().as_ref());
        pem("PUBLIC KEY", &spki)
    }

    /// A token for `node_id` to present to central, valid for `lifetime`.
    pub fn token(
        &self,
        node_id: NodeId,
        audience: &str,
        lifetime: Duration,
    ) -> anyhow::Result<String> {
        let now = chrono::Utc::now().timestamp();
        let claims = serde_json::json!({
            "iss": node_id.to_string(),
            "sub": node_id.to_string(),
            "aud": audience,
            "iat": now,
            "exp": now + i64::try_from(lifetime.as_secs()).unwrap_or(3600),
            "jti": uuid::Uuid::new_v4().to_string(),
            "scope": "node",
        });
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        Ok(jsonwebtoken::encode(&header, &claims, &self.encoding)?)
    }
}

/// Verifies an Ed25519 signature by the release key (SPKI PEM) over `data`.
pub fn verify_release_signature(
    release_key_pem: &str,
    data: &[u8],
    signature: &[u8],
) -> anyhow::Result<()> {
    let der = unpem(release_key_pem)?;
    // SPKI for Ed25519 is a fixed 12-byte prefix and the 32-byte key.
    let raw = der
        .get(12..)
        .filter(|k| k.len() == 32)
        .context("release key is not an Ed25519 SPKI key")?;
    let key = aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ED25519, raw);
    key.verify(data, signature)
        .map_err(|_| anyhow::anyhow!("the signature does not verify with the release key"))
}

/// Signs release data (for tests and the release tooling).
pub fn sign_release(key: &NodeKey, data: &[u8]) -> Vec<u8> {
    key.pair.sign(data).as_ref().to_vec()
}
