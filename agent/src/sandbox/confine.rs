//! The confinement steps: resource limits, the user, `no_new_privs` (the
//! supervisor applies these, so its descendants inherit them) and Landlock
//! with the final exec (the runner).

use std::ffi::CString;
use std::path::PathBuf;

use super::{EXIT_NOT_FOUND, EXIT_PERMISSION_DENIED, EXIT_SANDBOX_FAILED, SandboxSpec};

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

/// Limits, user and `no_new_privs`, for this process and all it starts.
pub(super) fn restrict_process(spec: &SandboxSpec) -> Result<(), String> {
    use nix::sys::resource::Resource;
    limit(Resource::RLIMIT_CPU, spec.cpu_seconds).map_err(|e| format!("CPU limit: {e}"))?;
    limit(Resource::RLIMIT_AS, spec.memory_bytes).map_err(|e| format!("memory limit: {e}"))?;
    limit(Resource::RLIMIT_NOFILE, spec.open_files)
        .map_err(|e| format!("open files limit: {e}"))?;
    limit(Resource::RLIMIT_NPROC, spec.processes).map_err(|e| format!("process limit: {e}"))?;
    if let Some(user) = &spec.run_as {
        let user = nix::unistd::User::from_name(user)
            .map_err(|e| format!("looking up user {user}: {e}"))?
            .ok_or_else(|| {
                format!("no user {user} (the agent's package creates nap-run; see README)")
            })?;
        nix::unistd::setgroups(&[user.gid]).map_err(|e| format!("setgroups: {e}"))?;
        nix::unistd::setgid(user.gid).map_err(|e| format!("setgid: {e}"))?;
        nix::unistd::setuid(user.uid).map_err(|e| format!("setuid: {e}"))?;
    }
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("no_new_privs: {e}"))
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

/// The runner: Landlock, then becomes the program. Returns only on failure,
/// with the exit code to use.
#[allow(clippy::print_stderr)]
pub(super) fn run(spec: &SandboxSpec) -> i32 {
    if spec.landlock
        && let Err(e) = restrict_filesystem(spec)
    {
        eprintln!("nap-agent sandbox: landlock: {e}");
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
