//! The agent's local audit log: JSON lines, each record carrying the hash of
//! its predecessor, so an edited or removed line breaks the chain after it.
//! Every command request, decision and outcome is recorded.

use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};

use aws_lc_rs::digest;
use serde::{Deserialize, Serialize};

/// One record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    pub at: String,
    pub event: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub request_id: Option<String>,
    pub detail: serde_json::Value,
    pub prev: String,
    pub hash: String,
}

fn hash(
    prev: &str,
    seq: u64,
    at: &str,
    event: &str,
    request_id: Option<&str>,
    detail: &serde_json::Value,
) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    let seq = seq.to_string();
    let detail = detail.to_string();
    for part in [prev, &seq, at, event, request_id.unwrap_or(""), &detail] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    hex::encode(ctx.finish().as_ref())
}

/// The open log.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    seq: u64,
    prev: String,
}

impl AuditLog {
    /// Opens (creating) the log and continues its chain.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let mut seq = 0;
        let mut prev = String::new();
        if let Ok(file) = std::fs::File::open(path) {
            for line in std::io::BufReader::new(file).lines() {
                let line = line?;
                if let Ok(record) = serde_json::from_str::<AuditRecord>(&line) {
                    seq = record.seq;
                    prev = record.hash;
                }
            }
        }
        Ok(Self {
            path: path.to_owned(),
            seq,
            prev,
        })
    }

    /// Appends a record (and flushes it to the file).
    pub fn record(
        &mut self,
        event: &str,
        request_id: Option<String>,
        detail: serde_json::Value,
    ) -> anyhow::Result<()> {
        let seq = self.seq + 1;
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let hash = hash(&self.prev, seq, &at, event, request_id.as_deref(), &detail);
        let record = AuditRecord {
            seq,
            at,
            event: event.to_owned(),
            request_id,
            detail,
            prev: std::mem::take(&mut self.prev),
            hash: hash.clone(),
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        let mut line = serde_json::to_string(&record)?;
        line.push('\n');
        file.write_all(line.as_bytes())?;
        self.seq = seq;
        self.prev = hash;
        Ok(())
    }
}

/// Verifies a log: the number of records, or the first broken one.
pub fn verify(path: &Path) -> anyhow::Result<Result<u64, u64>> {
    let file = std::fs::File::open(path)?;
    let mut prev = String::new();
    let mut count = 0;
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        let Ok(r) = serde_json::from_str::<AuditRecord>(&line) else {
            return Ok(Err(n as u64 + 1));
        };
        let expected = hash(
            &prev,
            r.seq,
            &r.at,
            &r.event,
            r.request_id.as_deref(),
            &r.detail,
        );
        if r.prev != prev || r.hash != expected {
            return Ok(Err(r.seq));
        }
        prev = r.hash;
        count += 1;
    }
    Ok(Ok(count))
}
