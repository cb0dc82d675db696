//! Signed release manifests for agent updates, and the rule that decides
//! whether a node may install one.
//!
//! A manifest is a short text, signed as a whole by the operator's release
//! key (Ed25519), published beside the binary as `{target}.manifest`:
//!
//! ```text
//! nap-release 1
//! version 1.4.0
//! target x86_64-unknown-linux-gnu
//! sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//! min-version 1.2.0
//! signature ed25519:<base64 of the signature over every byte above this line>
//! ```
//!
//! Because the version, the target and the minimum are signed with the
//! digest, an old signed build cannot be offered as new (a downgrade), a
//! build for another machine cannot be installed, and a release can say
//! which versions may upgrade to it directly. Verifying the signature is
//! the driver's (it has the crypto); the decision is here.

use std::fmt;

use semver::Version;

use crate::signed_text::{self, SplitError};

/// The first line of every manifest: the format and its version.
const MAGIC: &str = "nap-release 1";

/// What a release key signs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub version: Version,
    /// The target triple the binary is for.
    pub target: String,
    /// SHA-256 of the binary.
    pub sha256: [u8; 32],
    /// The oldest running version that may install this release.
    pub min_version: Version,
}

/// A parsed manifest with the bytes its signature covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedManifest {
    pub manifest: Manifest,
    /// Every byte before the signature line.
    pub signed: Vec<u8>,
    /// The raw Ed25519 signature.
    pub signature: Vec<u8>,
}

/// Why a manifest could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("not a NAP release manifest (the first line must be {MAGIC:?})")]
    NotAManifest,
    #[error("the manifest has no {0} line")]
    Missing(&'static str),
    #[error("the manifest's {field} is invalid: {value:?}")]
    Invalid { field: &'static str, value: String },
    #[error("the manifest has an unknown line {0:?}")]
    Unknown(String),
}

/// Why a node refuses a release whose signature verified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateRefusal {
    #[error("the manifest is for version {signed}, not the requested {requested}")]
    NotRequested { requested: String, signed: Version },
    #[error("the release is for {offered}, this node is {target}")]
    WrongTarget { offered: String, target: String },
    #[error("{offered} is not newer than the running {running} (a downgrade is refused)")]
    NotNewer { offered: Version, running: Version },
    #[error("{offered} needs at least {min} to upgrade from; this node runs {running}")]
    TooOld {
        offered: Version,
        min: Version,
        running: Version,
    },
    #[error("the binary's SHA-256 is not the signed one")]
    DigestMismatch,
    #[error("the running version {0:?} is not a version")]
    RunningVersion(String),
}

impl Manifest {
    /// The signed part: every line but the signature, each ending in `\n`.
    pub fn signed_text(&self) -> String {
        format!(
            "{MAGIC}\nversion {}\ntarget {}\nsha256 {}\nmin-version {}\n",
            self.version,
            self.target,
            hex::encode(self.sha256),
            self.min_version
        )
    }

    /// The whole manifest file, given the signature over [`signed_text`](Self::signed_text)
    /// encoded as base64.
    pub fn to_file(&self, signature_base64: &str) -> String {
        format!(
            "{}signature ed25519:{signature_base64}\n",
            self.signed_text()
        )
    }

    /// Whether a node running `running` on `target` may install this
    /// release when it was asked for `requested`. `sha256` is the digest of
    /// the binary it downloaded.
    pub fn admit(
        &self,
        requested: &str,
        running: &str,
        target: &str,
        sha256: &[u8],
    ) -> Result<(), UpdateRefusal> {
        if Version::parse(requested).ok().as_ref() != Some(&self.version) {
            return Err(UpdateRefusal::NotRequested {
                requested: requested.to_owned(),
                signed: self.version.clone(),
            });
        }
        if self.target != target {
            return Err(UpdateRefusal::WrongTarget {
                offered: self.target.clone(),
                target: target.to_owned(),
            });
        }
        if sha256 != self.sha256 {
            return Err(UpdateRefusal::DigestMismatch);
        }
        let running =
            Version::parse(running).map_err(|_| UpdateRefusal::RunningVersion(running.into()))?;
        if self.version <= running {
            return Err(UpdateRefusal::NotNewer {
                offered: self.version.clone(),
                running,
            });
        }
        if running < self.min_version {
            return Err(UpdateRefusal::TooOld {
                offered: self.version.clone(),
                min: self.min_version.clone(),
                running,
            });
        }
        Ok(())
    }
}

impl SignedManifest {
    /// Reads a manifest file. The signature line must be the last, and the
    /// signed bytes are exactly the lines before it.
    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        let text = signed_text::split(text, MAGIC).map_err(|e| match e {
            SplitError::NotOurs => ManifestError::NotAManifest,
            SplitError::Unsigned => ManifestError::Missing("signature"),
        })?;
        let (mut version, mut target, mut sha256, mut min_version) = (None, None, None, None);
        for &(line, key, value) in &text.fields {
            let invalid = |field| ManifestError::Invalid {
                field,
                value: value.to_owned(),
            };
            match key {
                "version" => version = Some(Version::parse(value).map_err(|_| invalid("version"))?),
                "target" if !value.is_empty() && !value.contains(char::is_whitespace) => {
                    target = Some(value.to_owned());
                }
                "target" => return Err(invalid("target")),
                "sha256" => sha256 = Some(unhex(value).ok_or_else(|| invalid("sha256"))?),
                "min-version" => {
                    min_version = Some(Version::parse(value).map_err(|_| invalid("min-version"))?);
                }
                _ => return Err(ManifestError::Unknown(line.to_owned())),
            }
        }
        let signature = text.signature.map_err(|line| ManifestError::Invalid {
            field: "signature",
            value: line.to_owned(),
        })?;
        Ok(Self {
            manifest: Manifest {
                version: version.ok_or(ManifestError::Missing("version"))?,
                target: target.ok_or(ManifestError::Missing("target"))?,
                sha256: sha256.ok_or(ManifestError::Missing("sha256"))?,
                min_version: min_version.ok_or(ManifestError::Missing("min-version"))?,
            },
            signed: text.signed.as_bytes().to_vec(),
            signature,
        })
    }
}

impl fmt::Display for Manifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "nap-agent {} for {} (from {})",
            self.version, self.target, self.min_version
        )
    }
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}
