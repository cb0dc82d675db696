//! Runs what the core allowed: each command through the sandbox trampoline,
//! in its own process group, with a cleared environment and capped output.
//! A kill asks the trampoline's supervisor to stop the command: it ends every
//! descendant (SIGTERM, a grace period, then SIGKILL) before it exits; the
//! executor kills the supervisor's group itself only if that does not happen
//! in time.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nap_core::RequestId;
use nap_core::agent::CommandOutcome;
use nap_core::wire::{CommandError, ErrorCode};
use nix::sys::signal::{Signal, kill, killpg};
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
    /// The user it runs as when the agent is root; `None` is the sandbox's
    /// default.
    pub run_as: Option<String>,
}

/// How long the executor waits, past the grace period, for the supervisor to
/// end a command before it kills the supervisor's group itself.
const SUPERVISOR_MARGIN: Duration = Duration::from_secs(2);

/// How long output is still read once the supervisor has exited. Its
/// descendants are gone by then, so end-of-file is at hand; the bound keeps a
/// pipe inherited by an escaped process from holding the task.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(1);

/// Starts jobs and kills their process groups.
#[derive(Debug, Clone)]
pub struct Executor {
    sandbox: SandboxConfig,
    trampoline: std::path::PathBuf,
    groups: Arc<Mutex<BTreeMap<RequestId, Pid>>>,
    root: bool,
}

impl Executor {
    /// `trampoline` is the agent binary (it has the `sandbox-exec` subcommand).
    pub fn new(sandbox: SandboxConfig, trampoline: std::path::PathBuf) -> Self {
        Self {
            sandbox,
            trampoline,
            groups: Arc::new(Mutex::new(BTreeMap::new())),
            root: nix::unistd::geteuid().is_root(),
        }
    }

    /// The user a job runs as: only a root agent can switch, and `root`
    /// means no switch.
    fn user(&self, job: &Job) -> Option<String> {
        let user = job.run_as.as_ref().or(self.sandbox.run_as.as_ref())?;
        (self.root && user != "root").then(|| user.clone())
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
            run_as: self.user(job),
            landlock: s.landlock,
            readable: s.readable.clone(),
            writable: s.writable.clone(),
            kill_grace_ms: s.kill_grace_ms,
            stage: crate::sandbox::Stage::Supervise,
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
        let (stdout, out_cut) = drain(stdout).await;
        let (stderr, err_cut) = drain(stderr).await;
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

    /// Stops the request's command and everything it started: SIGTERM to the
    /// supervisor, which ends the descendants within the grace period; its
    /// group is killed here only if it has not exited by then.
    pub async fn kill(&self, request_id: RequestId) {
        let Some(supervisor) = self.running(request_id) else {
            return;
        };
        let _ = kill(supervisor, Signal::SIGTERM);
        let grace = Duration::from_millis(self.sandbox.kill_grace_ms);
        let deadline = Instant::now() + grace + SUPERVISOR_MARGIN;
        while Instant::now() < deadline {
            // The entry goes when the supervisor has been reaped.
            if self.running(request_id) != Some(supervisor) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if self.running(request_id) == Some(supervisor) {
            tracing::warn!(request = %request_id, "the sandbox supervisor did not end the command in time; killing its group");
            let _ = killpg(supervisor, Signal::SIGKILL);
        }
    }

    fn running(&self, request_id: RequestId) -> Option<Pid> {
        self.lock().get(&request_id).copied()
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

/// The output a reader has collected, waiting at most [`DRAIN_AFTER_EXIT`].
async fn drain(reader: tokio::task::JoinHandle<(String, bool)>) -> (String, bool) {
    let abort = reader.abort_handle();
    match tokio::time::timeout(DRAIN_AFTER_EXIT, reader).await {
        Ok(read) => read.unwrap_or_default(),
        Err(_) => {
            abort.abort();
            tracing::warn!("a command's output stayed open after it ended; stopped reading");
            (String::new(), true)
        }
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
