//! Stage 1: the supervisor. A child subreaper that starts the command (stage
//! 2), forwards a stop request to it and to everything it started, and does
//! not exit before every descendant is gone.

use std::collections::BTreeMap;
use std::os::fd::AsFd as _;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal, kill, killpg};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::{EXIT_SANDBOX_FAILED, SandboxSpec, Stage, confine};

/// How often the supervisor looks again for descendants to kill once it is
/// killing: an orphan re-parented to it sends no signal.
const RESCAN: Duration = Duration::from_millis(20);

/// Runs the command under supervision; returns its exit code.
#[allow(clippy::print_stderr)]
pub(super) fn supervise(mut spec: SandboxSpec) -> i32 {
    match start(&mut spec) {
        Ok((command, signals)) => {
            let grace = Duration::from_millis(spec.kill_grace_ms);
            watch(command, &signals, grace)
        }
        Err(e) => {
            eprintln!("nap-agent sandbox: {e}");
            EXIT_SANDBOX_FAILED
        }
    }
}

/// Becomes a subreaper, takes the stop signals through a descriptor,
/// confines itself and starts the runner.
fn start(spec: &mut SandboxSpec) -> Result<(Pid, SignalFd), String> {
    // Before the change of user: afterwards /proc/self is root's.
    let exe = std::env::current_exe().map_err(|e| format!("own binary: {e}"))?;
    nix::sys::prctl::set_child_subreaper(true).map_err(|e| format!("subreaper: {e}"))?;
    let mut mask = SigSet::empty();
    for signal in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        mask.add(signal);
    }
    mask.thread_block()
        .map_err(|e| format!("blocking signals: {e}"))?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| format!("signalfd: {e}"))?;
    confine::restrict_process(spec)?;
    spec.stage = Stage::Run;
    let runner = serde_json::to_string(&*spec).map_err(|e| format!("spec: {e}"))?;
    // The standard library resets the signal mask in the child; its own
    // process group lets a stop reach the command and what stays in it.
    use std::os::unix::process::CommandExt as _;
    let child = std::process::Command::new(exe)
        .arg("sandbox-exec")
        .arg(runner)
        .env_clear()
        .process_group(0)
        .spawn()
        .map_err(|e| format!("starting the command: {e}"))?;
    let pid = i32::try_from(child.id()).map_err(|_| "pid out of range".to_owned())?;
    // The child is reaped with waitpid below, not through `Child`.
    drop(child);
    Ok((Pid::from_raw(pid), signals))
}

/// What the supervisor is doing about the command's descendants.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// The command runs.
    Running,
    /// SIGTERM was sent; SIGKILL follows at the deadline.
    Ending { deadline: Instant },
    /// Killing until no child is left.
    Killing,
}

fn watch(command: Pid, signals: &SignalFd, grace: Duration) -> i32 {
    let mut status = None;
    let mut phase = Phase::Running;
    let mut leftovers = 0usize;
    loop {
        if reap(command, &mut status) {
            break;
        }
        let now = Instant::now();
        if status.is_some() && matches!(phase, Phase::Running) {
            // The command ended: what it left behind goes too.
            leftovers = signal_descendants(command, false, Signal::SIGTERM);
            phase = Phase::Ending {
                deadline: now + grace,
            };
        }
        if let Phase::Ending { deadline } = phase
            && now >= deadline
        {
            phase = Phase::Killing;
        }
        let timeout = match phase {
            Phase::Running => PollTimeout::NONE,
            Phase::Ending { deadline } => timeout(deadline - now),
            Phase::Killing => {
                signal_children(command, status.is_none(), Signal::SIGKILL);
                timeout(RESCAN)
            }
        };
        let mut fds = [PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => phase = Phase::Killing,
        }
        while let Ok(Some(info)) = signals.read_signal() {
            let stop = i32::try_from(info.ssi_signo).ok() != Some(Signal::SIGCHLD as i32);
            if stop && matches!(phase, Phase::Running) {
                signal_descendants(command, status.is_none(), Signal::SIGTERM);
                phase = Phase::Ending {
                    deadline: Instant::now() + grace,
                };
            }
        }
    }
    if leftovers > 0 {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("nap-agent sandbox: ended {leftovers} process(es) the command left running");
        }
    }
    status.unwrap_or(EXIT_SANDBOX_FAILED)
}

fn timeout(d: Duration) -> PollTimeout {
    PollTimeout::try_from(d.max(Duration::from_millis(1))).unwrap_or(PollTimeout::MAX)
}

/// Reaps every child that has ended, noting the command's status. True
/// once no child is left at all.
fn reap(command: Pid, status: &mut Option<i32>) -> bool {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => {
                if pid == command {
                    *status = Some(code);
                }
            }
            Ok(WaitStatus::Signaled(pid, signal, _)) => {
                if pid == command {
                    *status = Some(128 + signal as i32);
                }
            }
            Ok(WaitStatus::StillAlive) => return false,
            Ok(_) => {}
            Err(Errno::EINTR) => {}
            Err(_) => return true,
        }
    }
}

/// Sends `signal` to the command's process group (while the command has not
/// been reaped, its id cannot name another group) and to this process's
/// direct children, which it alone reaps — so their pids cannot be reused
/// under it. Returns how many children were signalled.
fn signal_children(command: Pid, group: bool, signal: Signal) -> usize {
    if group {
        let _ = killpg(command, signal);
    }
    let me = nix::unistd::getpid();
    let children: Vec<Pid> = processes()
        .into_iter()
        .filter(|(_, parent)| *parent == me)
        .map(|(pid, _)| pid)
        .collect();
    for &pid in &children {
        let _ = kill(pid, signal);
    }
    children.len()
}

/// Sends `signal` to every descendant, however deep, and to the command's
/// group; returns how many processes other than the command were signalled.
/// Used for SIGTERM, where a missed process is caught by the SIGKILL rounds.
fn signal_descendants(command: Pid, group: bool, signal: Signal) -> usize {
    if group {
        let _ = killpg(command, signal);
    }
    let table = processes();
    let mut children: BTreeMap<Pid, Vec<Pid>> = BTreeMap::new();
    for (pid, parent) in table {
        children.entry(parent).or_default().push(pid);
    }
    let mut stack = vec![nix::unistd::getpid()];
    let mut count = 0;
    while let Some(parent) = stack.pop() {
        for &pid in children.get(&parent).into_iter().flatten() {
            let _ = kill(pid, signal);
            if pid != command {
                count += 1;
            }
            stack.push(pid);
        }
    }
    count
}

/// Every live process with its parent, from /proc (zombies are skipped).
fn processes() -> Vec<(Pid, Pid)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // After the command name: state, parent, ...
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let parent = fields.next().and_then(|p| p.parse::<i32>().ok());
        if let (Some(state), Some(parent)) = (state, parent)
            && state != "Z"
        {
            out.push((Pid::from_raw(pid), Pid::from_raw(parent)));
        }
    }
    out
}
