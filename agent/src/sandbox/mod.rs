//! The sandbox trampoline. The executor runs a command as
//! `nap-agent sandbox-exec SPEC`, and that process runs in two stages:
//!
//! 1. **The supervisor** ([`supervisor`]): in its own process group, with a
//!    cleared environment, it applies the resource limits, drops to the
//!    command's user, sets `no_new_privs`, and becomes a *child subreaper*:
//!    whatever the command leaves behind — a `cmd &`, a daemon that called
//!    `setsid` — is re-parented to it rather than to init. It starts stage 2
//!    and waits; when the command ends, or the executor asks it to stop
//!    (SIGTERM), it terminates every descendant (SIGTERM, the grace period,
//!    then SIGKILL until none is left) and only then exits, with the
//!    command's status. So no descendant outlives the command, and nothing
//!    it leaves holds the output pipes open.
//! 2. **The runner** ([`confine::run`]): restricts the filesystem with
//!    Landlock where the kernel supports it and execs the program directly —
//!    never through a shell.
//!
//! Both stages are fresh processes, which keeps every step in safe code.

mod confine;
mod supervisor;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Exit codes for failures before the program starts (as shells use them).
pub const EXIT_NOT_FOUND: i32 = 127;
pub const EXIT_PERMISSION_DENIED: i32 = 126;
pub const EXIT_SANDBOX_FAILED: i32 = 125;

/// What to run and how to confine it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxSpec {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cpu_seconds: u64,
    pub memory_bytes: u64,
    pub open_files: u64,
    pub processes: u64,
    /// The user to drop to; `None` keeps the agent's own.
    pub run_as: Option<String>,
    pub landlock: bool,
    pub readable: Vec<PathBuf>,
    pub writable: Vec<PathBuf>,
    /// Between SIGTERM and SIGKILL when the supervisor ends the command's
    /// descendants.
    pub kill_grace_ms: u64,
    #[serde(default)]
    pub stage: Stage,
}

/// Which stage of the trampoline a process is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    #[default]
    Supervise,
    Run,
}

pub use confine::landlock_supported;

/// Runs the trampoline's stage named in the spec. Returns the exit code to
/// use: the command's (128 + signal when a signal ended it), or one of the
/// `EXIT_*` codes when it could not start.
#[allow(clippy::print_stderr)]
pub fn exec(spec_json: &str) -> i32 {
    let spec: SandboxSpec = match serde_json::from_str(spec_json) {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("nap-agent sandbox: bad spec: {e}");
            return EXIT_SANDBOX_FAILED;
        }
    };
    match spec.stage {
        Stage::Supervise => supervisor::supervise(spec),
        Stage::Run => confine::run(&spec),
    }
}
