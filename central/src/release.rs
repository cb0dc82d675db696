//! Agent releases: the operator's release key and signed manifests
//! (`nap-central release keygen` and `nap-central release sign`). The key
//! is made and kept by the operator; nodes hold only its public half
//! (`update.release_key` in the agent's configuration). The manifest's
//! format and the rule a node applies to it are in `nap_core::release`.

use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use aws_lc_rs::digest;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use base64::Engine as _;
use nap_core::release::Manifest;

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410).
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Writes a new release key pair: `release.key` (PKCS#8, mode 0600, never
/// overwritten) and `release.pub` (SPKI, for the nodes).
pub fn generate_key(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|_| anyhow::anyhow!("key generation failed"))?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .map_err(|_| anyhow::anyhow!("the generated key does not parse"))?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (key_path, pub_path) = (dir.join("release.key"), dir.join("release.pub"));
    let private = pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.as_ref().to_vec()));
    write_new(&key_path, private.as_bytes(), 0o600)?;
    let mut spki = ED25519_SPKI_PREFIX.to_vec();
    spki.extend_from_slice(pair.public_key().as_ref());
    write_new(
        &pub_path,
        pem::encode(&pem::Pem::new("PUBLIC KEY", spki)).as_bytes(),
        0o644,
    )?;
    Ok((key_path, pub_path))
}

/// What `release sign` publishes.
#[derive(Debug, Clone)]
pub struct Release<'a> {
    pub binary: &'a Path,
    pub version: &'a str,
    pub target: &'a str,
    /// The oldest version that may upgrade to this one (default: 0.0.0).
    pub min_version: Option<&'a str>,
}

/// Signs `release` with the key at `key_path` and publishes it under
/// `artifacts` as central serves it: `nap-agent/{version}/{target}` and
/// `{target}.manifest`. Returns the manifest's path.
pub fn sign(key_path: &Path, release: &Release<'_>, artifacts: &Path) -> anyhow::Result<PathBuf> {
    let key = load_key(key_path)?;
    let binary = std::fs::read(release.binary)
        .with_context(|| format!("reading {}", release.binary.display()))?;
    let mut sha256 = [0u8; 32];
    sha256.copy_from_slice(digest::digest(&digest::SHA256, &binary).as_ref());
    let parse = |what: &str, v: &str| {
        semver::Version::parse(v).with_context(|| format!("{what} {v:?} is not a version"))
    };
    let manifest = Manifest {
        version: parse("version", release.version)?,
        target: release.target.to_owned(),
        sha256,
        min_version: parse("min-version", release.min_version.unwrap_or("0.0.0"))?,
    };
    if manifest.min_version > manifest.version {
        bail!("min-version {} is above the version", manifest.min_version);
    }
    if release.target.is_empty()
        || !release
            .target
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        bail!("target {:?} is not a target triple", release.target);
    }
    let signature = key.sign(manifest.signed_text().as_bytes());
    let text =
        manifest.to_file(&base64::engine::general_purpose::STANDARD.encode(signature.as_ref()));
    let dir = artifacts
        .join("nap-agent")
        .join(manifest.version.to_string());
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let published = dir.join(release.target);
    std::fs::write(&published, &binary)
        .with_context(|| format!("writing {}", published.display()))?;
    let manifest_path = dir.join(format!("{}.manifest", release.target));
    std::fs::write(&manifest_path, text)
        .with_context(|| format!("writing {}", manifest_path.display()))?;
    Ok(manifest_path)
}

fn load_key(path: &Path) -> anyhow::Result<Ed25519KeyPair> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!("{} is readable by others: chmod 600 it", path.display());
    }
    let text = std::fs::read_to_string(path)?;
    let parsed = pem::parse(&text).with_context(|| format!("{} is not PEM", path.display()))?;
    Ed25519KeyPair::from_pkcs8(parsed.contents())
        .map_err(|_| anyhow::anyhow!("{} is not an Ed25519 PKCS#8 key", path.display()))
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| {
            format!(
                "creating {} (an existing key is never replaced)",
                path.display()
            )
        })?;
    file.write_all(bytes)?;
    Ok(())
}
