//! The sandbox trampoline. The executor runs a command as
//! `nap-agent sandbox-exec SPEC`: this process, already in its own process
//! group with a cleared environment, applies the resource limits, drops to
//! the configured user, sets `no_new_privs`, restricts the filesystem with
//! Landlock where the kernel supports it, and then execs the program
//! directly — never through a shell. Doing this in a fresh process keeps
//! every step in safe code.

use std::ffi::CString;
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
    pub run_as: Option<String>,
    pub landlock: bool,
    pub readable: Vec<PathBuf>,
    pub writable: Vec<PathBuf>,
}

/// Whether this kernel enforces Landlock (logged once at start-up).
pub fn landlock_supported() -> bool {
    use landlock::{
        ABI, Access as _, AccessFs, CompatLevel, Compatible as _, Ruleset, RulesetAttr as _,
    };
    Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(ABI::V1))
        .and_then(Ruleset::create)
        .is_ok()
}

fn limit(resource: nix::sys::resource::Resource, value: u64) -> nix::Result<()> {
    nix::sys::resource::setrlimit(resource, value, value)
}

fn confine(spec: &SandboxSpec) -> Result<(), String> {
    use nix::sys::resource::Resource;
    limit(Resource::RLIMIT_CPU, spec.cpu_seconds).map_err(|e| format!("CPU limit: {e}"))?;
    limit(Resource::RLIMIT_AS, spec.memory_bytes).map_err(|e| format!("memory limit: {e}"))?;
    limit(Resource::RLIMIT_NOFILE, spec.open_files)
        .map_err(|e| format!("open files limit: {e}"))?;
    limit(Resource::RLIMIT_NPROC, spec.processes).map_err(|e| format!("process limit: {e}"))?;
    if let Some(user) = &spec.run_as {
        let user = nix::unistd::User::from_name(user)
            .map_err(|e| format!("looking up user {user}: {e}"))?
            .ok_or_else(|| format!("no user {user}"))?;
        nix::unistd::setgroups(&[user.gid]).map_err(|e| format!("setgroups: {e}"))?;
        nix::unistd::setgid(user.gid).map_err(|e| format!("setgid: {e}"))?;
        nix::unistd::setuid(user.uid).map_err(|e| format!("setuid: {e}"))?;
    }
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("no_new_privs: {e}"))?;
    if spec.landlock {
        restrict_filesystem(spec).map_err(|e| format!("landlock: {e}"))?;
    }
    Ok(())
}

fn restrict_filesystem(spec: &SandboxSpec) -> Result<(), landlock::RulesetError> {
    use landlock::{
        ABI, Access, AccessFs, CompatLevel, Compatible as _, Ruleset, RulesetAttr as _,
        RulesetCreatedAttr as _, path_beneath_rules,
    };
    let abi = ABI::V3;
    let existing = |paths: &[PathBuf]| {
        paths
            .iter()
            .filter(|p| p.exists())
            .cloned()
            .collect::<Vec<_>>()
    };
    // Best effort: on a kernel without Landlock this does nothing (the agent
    // logs that at start-up).
    Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(abi))?
        .create()?
        .add_rules(path_beneath_rules(
            existing(&spec.readable),
            AccessFs::from_read(abi),
        ))?
        .add_rules(path_beneath_rules(
            existing(&spec.writable),
            AccessFs::from_all(abi),
        ))?
        .restrict_self()?;
    Ok(())
}

/// Runs the trampoline: confines this process, then becomes the program.
/// Returns only on failure, with the exit code to use.
#[allow(clippy::print_stderr)]
pub fn exec(spec_json: &str) -> i32 {
    let spec: SandboxSpec = match serde_json::from_str(spec_json) {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("nap-agent sandbox: bad spec: {e}");
            return EXIT_SANDBOX_FAILED;
        }
    };
    if let Err(e) = confine(&spec) {
        eprintln!("nap-agent sandbox: {e}");
        return EXIT_SANDBOX_FAILED;
    }
    let cstr = |s: &str| CString::new(s).map_err(|_| format!("{s:?} contains a NUL byte"));
    let built = (|| -> Result<(CString, Vec<CString>, Vec<CString>), String> {
        let program = cstr(&spec.program)?;
        let mut argv = vec![program.clone()];
        for a in &spec.args {
            argv.push(cstr(a)?);
        }
        let env = spec
            .env
            .iter()
            .map(|(k, v)| cstr(&format!("{k}={v}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((program, argv, env))
    })();
    let (program, argv, env) = match built {
        Ok(parts) => parts,
        Err(e) => {
            eprintln!("nap-agent sandbox: {e}");
            return EXIT_SANDBOX_FAILED;
        }
    };
    let err = match nix::unistd::execve(&program, &argv, &env) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    eprintln!("nap-agent sandbox: cannot run {}: {err}", spec.program);
    match err {
        nix::errno::Errno::ENOENT => EXIT_NOT_FOUND,
        nix::errno::Errno::EACCES | nix::errno::Errno::EPERM => EXIT_PERMISSION_DENIED,
        _ => EXIT_SANDBOX_FAILED,
    }
}
