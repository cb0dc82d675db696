//! Anchoring the audit chain. The chain alone proves that no entry was
//! edited or removed *in the middle*; whoever can write the database could
//! still delete the newest entries or rewrite the whole chain with fresh
//! hashes. So central checkpoints the chain's head — its sequence number and
//! hash, signed with a key of its own — in a file outside the database
//! (`audit_anchor`, one JSON line per checkpoint, appended and synced).
//! `audit verify` then checks that every checkpoint's entry is still in the
//! chain with the same hash: a truncation or a rewrite before the newest
//! checkpoint fails.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use base64::Engine as _;
use nap_core::WallTime;
use serde::{Deserialize, Serialize};

use super::AuditEntry;

/// One signed checkpoint of the chain's head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: u64,
    pub hash: String,
    /// When central saw this head.
    pub at: WallTime,
    /// Ed25519 over [`Checkpoint::signed_bytes`], base64.
    pub signature: String,
}

impl Checkpoint {
    fn signed_bytes(seq: u64, hash: &str, at: WallTime) -> Vec<u8> {
        format!("nap-audit-checkpoint 1\n{seq}\n{hash}\n{at}\n").into_bytes()
    }
}

/// Why the anchor and the chain disagree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnchorBreak {
    #[error("checkpoint {line} of the anchor is unreadable: {reason}")]
    Unreadable { line: usize, reason: String },
    #[error("checkpoint {line} (entry {seq}) is not signed by this central's anchor key")]
    BadSignature { line: usize, seq: u64 },
    #[error(
        "the chain was cut: the anchor saw entry {anchored} (at {at}), the database ends at entry {last}"
    )]
    Truncated {
        anchored: u64,
        at: WallTime,
        last: u64,
    },
    #[error("entry {seq} was rewritten: the anchor saw hash {anchored}, the database has {found}")]
    Rewritten {
        seq: u64,
        anchored: String,
        found: String,
    },
}

/// The anchor file and the key that signs its checkpoints.
pub struct Anchor {
    path: PathBuf,
    key: Ed25519KeyPair,
}

impl std::fmt::Debug for Anchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Anchor")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Anchor {
    /// Opens the anchor at `path`, with its key at `path` + `.key`, made
    /// (mode 0600) when it does not exist yet.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let key_path = key_path(path);
        let der = match std::fs::read_to_string(&key_path) {
            Ok(text) => pem::parse(&text)
                .with_context(|| format!("{} is not PEM", key_path.display()))?
                .into_contents(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let rng = aws_lc_rs::rand::SystemRandom::new();
                let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
                    .map_err(|_| anyhow::anyhow!("key generation failed"))?;
                let text = pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.as_ref().to_vec()));
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&key_path)
                    .with_context(|| format!("creating {}", key_path.display()))?;
                file.write_all(text.as_bytes())?;
                file.sync_all()?;
                pkcs8.as_ref().to_vec()
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", key_path.display())),
        };
        let key = Ed25519KeyPair::from_pkcs8(&der)
            .map_err(|_| anyhow::anyhow!("{} is not an Ed25519 key", key_path.display()))?;
        Ok(Self {
            path: path.to_owned(),
            key,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends a signed checkpoint of `head` and syncs it to disk.
    pub fn checkpoint(&self, head: &AuditEntry, at: WallTime) -> std::io::Result<Checkpoint> {
        let signature = self
            .key
            .sign(&Checkpoint::signed_bytes(head.seq, &head.hash, at));
        let checkpoint = Checkpoint {
            seq: head.seq,
            hash: head.hash.clone(),
            at,
            signature: base64::engine::general_purpose::STANDARD.encode(signature.as_ref()),
        };
        let mut line = serde_json::to_string(&checkpoint).map_err(std::io::Error::other)?;
        line.push('\n');
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(&self.path)?;
        file.write_all(line.as_bytes())?;
        file.sync_data()?;
        Ok(checkpoint)
    }

    /// The newest checkpoint in the file, if any (to resume after a restart
    /// without writing the same head again).
    pub fn newest(&self) -> Option<Checkpoint> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        text.lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok())
    }

    /// Checks `entries` (the whole chain, oldest first, already verified
    /// link by link) against every checkpoint in the file. Returns how many
    /// checkpoints were checked.
    pub fn verify(&self, entries: &[AuditEntry]) -> Result<usize, AnchorBreak> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                return Err(AnchorBreak::Unreadable {
                    line: 0,
                    reason: e.to_string(),
                });
            }
        };
        let public = UnparsedPublicKey::new(&ED25519, self.key.public_key().as_ref().to_vec());
        let last = entries.last().map_or(0, |e| e.seq);
        let mut checked = 0;
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let number = i + 1;
            let c: Checkpoint =
                serde_json::from_str(line).map_err(|e| AnchorBreak::Unreadable {
                    line: number,
                    reason: e.to_string(),
                })?;
            let signature = base64::engine::general_purpose::STANDARD
                .decode(&c.signature)
                .unwrap_or_default();
            if public
                .verify(&Checkpoint::signed_bytes(c.seq, &c.hash, c.at), &signature)
                .is_err()
            {
                return Err(AnchorBreak::BadSignature {
                    line: number,
                    seq: c.seq,
                });
            }
            let Some(entry) = entries
                .binary_search_by_key(&c.seq, |e| e.seq)
                .ok()
                .map(|i| &entries[i])
            else {
                return Err(AnchorBreak::Truncated {
                    anchored: c.seq,
                    at: c.at,
                    last,
                });
            };
            if entry.hash != c.hash {
                return Err(AnchorBreak::Rewritten {
                    seq: c.seq,
                    anchored: c.hash,
                    found: entry.hash.clone(),
                });
            }
            checked += 1;
        }
        Ok(checked)
    }
}

fn key_path(anchor: &Path) -> PathBuf {
    let mut name = anchor.as_os_str().to_owned();
    name.push(".key");
    PathBuf::from(name)
}
