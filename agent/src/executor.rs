//! Runs what the core allowed: each command through the sandbox trampoline,
//! in its own process group, with a cleared environment and capped output.
//! Killing is for the whole group: SIGTERM, a grace period, then SIGKILL.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nap_core::RequestId;
use nap_core::agent::CommandOutcome;
use nap_core::wire::{CommandError, ErrorCode};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt as _};

use crate::config::SandboxConfig;
use crate::sandbox::{EXIT_NOT_FOUND, EXIT_PERMISSION_DENIED, EXIT_SANDBOX_FAILED, SandboxSpec};

/// One program to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub program: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
}

/// Starts jobs and kills their process groups.
#[derive(Debug, Clone)]
pub struct Executor {
    sandbox: SandboxConfig,
    trampoline: std::path::PathBuf,
    groups: Arc<Mutex<BTreeMap<RequestId, Pid>>>,
}

impl Executor {
    /// `trampoline` is the agent binary (it has the `sandbox-exec` subcommand).
    pub fn new(sandbox: SandboxConfig, trampoline: std::path::PathBuf) -> Self {
        Self {
            sandbox,
            trampoline,
            groups: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    fn spec(&self, job: &Job) -> SandboxSpec {
        let s = &self.sandbox;
        SandboxSpec {
            program: job.program.clone(),
            args: job.args.clone(),
            env: job
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            cpu_seconds: s.cpu_seconds,
            memory_bytes: s.memory_bytes,
            open_files: s.open_files,
            processes: s.processes,
            run_as: s.run_as.clone(),
            landlock: s.landlock,
            readable: s.readable.clone(),
            writable: s.writable.clone(),
        }
    }

    /// Runs `jobs` one after another (a deploy recipe is several), stopping
    /// at the first failure; the outcome is the last job's, with all output.
    pub async fn run(&self, request_id: RequestId, jobs: Vec<Job>) -> CommandOutcome {
        let started = Instant::now();
        let mut all = CommandOutcome::default();
        for job in jobs {
            let outcome = self.run_one(request_id, &job).await;
            all.stdout.push_str(&outcome.stdout);
            all.stderr.push_str(&outcome.stderr);
            all.truncated |= outcome.truncated;
            all.exit_code = outcome.exit_code;
            all.success = outcome.success;
            all.error = outcome.error;
            if !all.success {
                break;
            }
        }
        tracing::debug!(request = %request_id, elapsed = ?started.elapsed(), success = all.success, "command ended");
        all
    }

    async fn run_one(&self, request_id: RequestId, job: &Job) -> CommandOutcome {
        let spec = match serde_json::to_string(&self.spec(job)) {
            Ok(spec) => spec,
            Err(e) => return failure(ErrorCode::Internal, format!("sandbox spec: {e}")),
        };
        let mut command = tokio::process::Command::new(&self.trampoline);
        command
            .arg("sandbox-exec")
            .arg(spec)
            .env_clear()
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                return failure(
                    ErrorCode::Internal,
                    format!("could not start the sandbox: {e}"),
                );
            }
        };
        if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
            self.lock().insert(request_id, Pid::from_raw(pid));
        }
        let cap = self.sandbox.output_cap_bytes;
        let stdout = tokio::spawn(read_capped(child.stdout.take(), cap));
        let stderr = tokio::spawn(read_capped(child.stderr.take(), cap));
        let status = child.wait().await;
        self.lock().remove(&request_id);
        let (stdout, out_cut) = stdout.await.unwrap_or_default();
        let (stderr, err_cut) = stderr.await.unwrap_or_default();
        let mut outcome = CommandOutcome {
            success: false,
            exit_code: None,
            stdout,
            stderr,
            truncated: out_cut || err_cut,
            error: None,
        };
        match status {
            Ok(status) => {
                use std::os::unix::process::ExitStatusExt as _;
                outcome.exit_code = status.code().or_else(|| status.signal().map(|s| 128 + s));
                outcome.success = status.success();
                outcome.error = match status.code() {
                    Some(EXIT_NOT_FOUND) => Some(error(ErrorCode::NotFound, &outcome.stderr)),
                    Some(EXIT_PERMISSION_DENIED) => {
                        Some(error(ErrorCode::PermissionDenied, &outcome.stderr))
                    }
                    Some(EXIT_SANDBOX_FAILED) => Some(error(ErrorCode::Internal, &outcome.stderr)),
                    _ => None,
                };
            }
            Err(e) => {
                outcome.error = Some(error(
                    ErrorCode::Internal,
                    &format!("waiting for the command: {e}"),
                ))
            }
        }
        outcome
    }

    /// Kills the request's whole process group: SIGTERM, then SIGKILL after
    /// the grace period if anything is left.
    pub async fn kill(&self, request_id: RequestId) {
        let Some(pgid) = self.lock().get(&request_id).copied() else {
            return;
        };
        let _ = killpg(pgid, Signal::SIGTERM);
        let grace = Duration::from_millis(self.sandbox.kill_grace_ms);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            // Signal 0 probes whether any process of the group is left.
            if killpg(pgid, None).is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = killpg(pgid, Signal::SIGKILL);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<RequestId, Pid>> {
        self.groups
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn error(code: ErrorCode, detail: &str) -> CommandError {
    let message = detail.lines().last().unwrap_or(detail).trim().to_owned();
    CommandError { code, message }
}

fn failure(code: ErrorCode, message: String) -> CommandOutcome {
    CommandOutcome {
        success: false,
        error: Some(CommandError { code, message }),
        ..CommandOutcome::default()
    }
}

/// Reads everything, keeping the first `cap` bytes (on a character boundary).
async fn read_capped(stream: Option<impl AsyncRead + Unpin>, cap: usize) -> (String, bool) {
    let Some(mut stream) = stream else {
        return (String::new(), false);
    };
    let mut kept = Vec::with_capacity(cap.min(8192));
    let mut buf = [0u8; 8192];
    let mut truncated = false;
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                truncated |= n > room;
            }
        }
    }
    let text = String::from_utf8_lossy(&kept).into_owned();
    (text, truncated)
}
