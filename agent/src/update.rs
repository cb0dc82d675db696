//! Self-update: fetch `nap-agent/{version}/{target}` and its `.sig` from
//! central (authenticated by the node token), check the SHA-256 and the
//! Ed25519 release signature, replace the binary atomically and exit so that
//! systemd restarts it. A new version that does not establish a session in
//! time is rolled back by the next start.
//!
//! The `.sig` file is two lines: `sha256:<hex>` and `ed25519:<base64>`, the
//! signature being over the 32 digest bytes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use aws_lc_rs::digest;
use base64::Engine as _;
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde::{Deserialize, Serialize};

/// The exit code systemd restarts on (`RestartForceExitStatus=75`).
pub const EXIT_RESTART: i32 = 75;

/// This build's target triple, as the artifact path names it.
pub const TARGET: &str = concat!(env!("NAP_TARGET_ARCH"), "-unknown-linux-gnu");

/// An update in progress across the restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub version: String,
    pub binary: PathBuf,
    pub previous: PathBuf,
    /// Unix seconds by which the new version must have connected.
    pub deadline: i64,
}

fn marker(state_dir: &Path) -> PathBuf {
    state_dir.join("update.json")
}

/// Reads the `.sig` file's two lines.
pub fn parse_sig(text: &str) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let mut digest = None;
    let mut signature = None;
    for line in text.lines() {
        if let Some(hex_digest) = line.trim().strip_prefix("sha256:") {
            digest = Some(hex::decode(hex_digest).context("sha256 is not hex")?);
        } else if let Some(b64) = line.trim().strip_prefix("ed25519:") {
            signature = Some(
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .context("signature is not base64")?,
            );
        }
    }
    Ok((
        digest.context("no sha256 line")?,
        signature.context("no ed25519 line")?,
    ))
}

/// Checks an artifact against its `.sig` and the release key.
pub fn verify(binary: &[u8], sig_text: &str, release_key_pem: &str) -> anyhow::Result<()> {
    let (expected, signature) = parse_sig(sig_text)?;
    let actual = digest::digest(&digest::SHA256, binary);
    if actual.as_ref() != expected.as_slice() {
        bail!("SHA-256 mismatch: the artifact is not the one that was signed");
    }
    crate::keys::verify_release_signature(release_key_pem, actual.as_ref(), &signature)
}

/// GETs `path` from central over TLS with the node token.
pub async fn fetch(
    central_url: &str,
    tls: Arc<rustls::ClientConfig>,
    token: &str,
    path: &str,
) -> anyhow::Result<Vec<u8>> {
    let uri: hyper::Uri = central_url.parse().context("central URL")?;
    let host = uri.host().context("central URL has no host")?.to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
    let name = ServerName::try_from(host.clone())?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let request = hyper::Request::get(path)
        .header("host", host)
        .header("authorization", format!("Bearer {token}"))
        .body(Empty::<Bytes>::new())?;
    let response =
        tokio::time::timeout(Duration::from_secs(60), sender.send_request(request)).await??;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!("central answered {status} for {path}");
    }
    Ok(body.to_vec())
}

/// Verifies and installs `artifact`, leaving a marker for the next start.
pub fn install(
    binary: &Path,
    state_dir: &Path,
    version: &str,
    artifact: &[u8],
    rollback_after: Duration,
) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let new = binary.with_extension("new");
    let previous = binary.with_extension("previous");
    std::fs::write(&new, artifact).with_context(|| format!("writing {}", new.display()))?;
    std::fs::set_permissions(&new, std::fs::Permissions::from_mode(0o755))?;
    std::fs::copy(binary, &previous).with_context(|| format!("keeping {}", previous.display()))?;
    let pending = Pending {
        version: version.to_owned(),
        binary: binary.to_owned(),
        previous,
        deadline: chrono::Utc::now().timestamp()
            + i64::try_from(rollback_after.as_secs()).unwrap_or(120),
    };
    std::fs::write(marker(state_dir), serde_json::to_vec(&pending)?)?;
    // The swap itself is one rename: the old binary or the new, never half.
    std::fs::rename(&new, binary).with_context(|| format!("replacing {}", binary.display()))?;
    Ok(())
}

/// At start-up: an update awaiting confirmation, if any.
pub fn pending(state_dir: &Path) -> Option<Pending> {
    let text = std::fs::read_to_string(marker(state_dir)).ok()?;
    serde_json::from_str(&text).ok()
}

/// The new version connected: keep it.
pub fn confirm(state_dir: &Path) {
    if let Some(p) = pending(state_dir) {
        let _ = std::fs::remove_file(&p.previous);
        let _ = std::fs::remove_file(marker(state_dir));
        tracing::info!(version = %p.version, "update confirmed: the new version connected");
    }
}

/// The new version did not connect in time: put the previous one back.
pub fn roll_back(state_dir: &Path, p: &Pending) -> anyhow::Result<()> {
    std::fs::rename(&p.previous, &p.binary)
        .with_context(|| format!("restoring {}", p.binary.display()))?;
    std::fs::remove_file(marker(state_dir))?;
    tracing::error!(version = %p.version, "update rolled back: the new version did not connect in time");
    Ok(())
}
