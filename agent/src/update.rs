//! Self-update: fetch `nap-agent/{version}/{target}` and its signed
//! `.manifest` from central (authenticated by the node token), check the
//! release key's signature, let the core decide whether this node may install
//! it (the requested version, this target, the digest, newer than the running
//! version, not below the release's minimum), replace the binary atomically
//! and exit so that systemd restarts it.
//!
//! The previous binary is kept beside the new one, with a marker in the state
//! directory, until the new version confirms by reaching central. Two things
//! that are not the new build put it back if that does not happen in time:
//! the guard script that systemd runs before every start and from a timer
//! (`packaging/systemd/nap-agent-guard`), and — when the new build does run —
//! the engine's probation. The marker is `key=value` lines, which the guard
//! reads with `sed`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use aws_lc_rs::digest;
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use nap_core::release::{Manifest, SignedManifest};
use rustls::pki_types::ServerName;

/// The exit code systemd restarts on (`RestartForceExitStatus=75`).
pub const EXIT_RESTART: i32 = 75;

/// This build's target triple, as the artifact path names it.
pub const TARGET: &str = concat!(env!("NAP_TARGET_ARCH"), "-unknown-linux-gnu");

/// This build's version, as releases compare it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// An update in progress across the restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub version: String,
    pub binary: PathBuf,
    pub previous: PathBuf,
    /// Unix seconds by which the new version must have connected.
    pub deadline: i64,
}

impl Pending {
    fn to_text(&self) -> String {
        format!(
            "version={}\nbinary={}\nprevious={}\ndeadline={}\nstarts=0\n",
            self.version,
            self.binary.display(),
            self.previous.display(),
            self.deadline
        )
    }

    fn parse(text: &str) -> Option<Self> {
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_owned)
        };
        Some(Self {
            version: field("version")?,
            binary: field("binary")?.into(),
            previous: field("previous")?.into(),
            deadline: field("deadline")?.parse().ok()?,
        })
    }
}

/// The marker's path in the state directory.
pub fn marker(state_dir: &Path) -> PathBuf {
    state_dir.join("update.pending")
}

/// Checks an artifact against its signed manifest and the release key, and
/// whether a node running `running` may install it as `requested`.
pub fn verify(
    binary: &[u8],
    manifest: &str,
    release_key_pem: &str,
    requested: &str,
    running: &str,
) -> anyhow::Result<Manifest> {
    let signed = SignedManifest::parse(manifest)?;
    crate::keys::verify_release_signature(release_key_pem, &signed.signed, &signed.signature)?;
    let actual = digest::digest(&digest::SHA256, binary);
    signed
        .manifest
        .admit(requested, running, TARGET, actual.as_ref())?;
    Ok(signed.manifest)
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
    let written = marker(state_dir).with_extension("writing");
    std::fs::write(&written, pending.to_text())?;
    std::fs::rename(&written, marker(state_dir))?;
    // The swap itself is one rename: the old binary or the new, never half.
    std::fs::rename(&new, binary).with_context(|| format!("replacing {}", binary.display()))?;
    Ok(())
}

/// At start-up: an update awaiting confirmation, if any.
pub fn pending(state_dir: &Path) -> Option<Pending> {
    Pending::parse(&std::fs::read_to_string(marker(state_dir)).ok()?)
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
