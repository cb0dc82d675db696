//! Ed25519 key files: PKCS#8 in PEM, mode 0600, never overwritten. The
//! private half never leaves the file it was made in.

use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use anyhow::{Context as _, bail};
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use nap_core::signed_approval::PublicKey;

/// Makes a key at `path` and returns its public half.
pub fn generate(path: &Path) -> anyhow::Result<PublicKey> {
    use std::io::Write as _;
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|_| anyhow::anyhow!("key generation failed"))?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .map_err(|_| anyhow::anyhow!("the generated key does not parse"))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.as_ref().to_vec()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| {
            format!(
                "creating {} (an existing key is never replaced)",
                path.display()
            )
        })?;
    file.write_all(text.as_bytes())?;
    Ok(public_of(&pair))
}

/// Reads the key at `path`, refusing one that others can read.
pub fn load(path: &Path) -> anyhow::Result<Ed25519KeyPair> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!("{} is readable by others: chmod 600 it", path.display());
    }
    let text = std::fs::read_to_string(path)?;
    let parsed = pem::parse(&text).with_context(|| format!("{} is not PEM", path.display()))?;
    Ed25519KeyPair::from_pkcs8(parsed.contents())
        .map_err(|_| anyhow::anyhow!("{} is not an Ed25519 PKCS#8 key", path.display()))
}

/// The public half of `pair`.
pub fn public_of(pair: &Ed25519KeyPair) -> PublicKey {
    let mut raw = [0u8; 32];
    raw.copy_from_slice(pair.public_key().as_ref());
    PublicKey(raw)
}
