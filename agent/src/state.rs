//! The engine's persisted state (outbox, request record, unacked telemetry)
//! in the state dir: written atomically, and a corrupt file is moved aside
//! with a clear log line rather than crashing the agent.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use nap_core::agent::AgentSnapshot;

/// Where the snapshot lives.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            path: state_dir.join("state.json"),
        }
    }

    /// The saved snapshot; `None` if there is none (or it was corrupt, in
    /// which case it is renamed `state.json.corrupt-<time>`).
    pub fn load(&self) -> Option<AgentSnapshot> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "cannot read the state file; starting empty");
                return None;
            }
        };
        match serde_json::from_str::<AgentSnapshot>(&text) {
            Ok(snapshot) if snapshot.version == AgentSnapshot::VERSION => Some(snapshot),
            Ok(snapshot) => {
                self.move_aside(&format!("unknown version {}", snapshot.version));
                None
            }
            Err(e) => {
                self.move_aside(&e.to_string());
                None
            }
        }
    }

    fn move_aside(&self, why: &str) {
        let aside = self.path.with_extension(format!(
            "json.corrupt-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
        ));
        match std::fs::rename(&self.path, &aside) {
            Ok(()) => tracing::error!(
                path = %self.path.display(),
                moved_to = %aside.display(),
                why,
                "the state file is corrupt: moved aside; starting with an empty outbox and record"
            ),
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, why, "the state file is corrupt and could not be moved aside")
            }
        }
    }

    /// Saves atomically: a temporary file, fsync, rename.
    pub fn save(&self, snapshot: &AgentSnapshot) -> anyhow::Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&serde_json::to_vec(snapshot)?)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        Ok(())
    }
}
