//! The executor with real processes: through the sandbox trampoline (the
//! real `nap-agent` binary), in a process group, with capped output, and
//! killed as a group.

use std::collections::BTreeMap;
use std::path::PathBuf;

use nap_agent::config::SandboxConfig;
use nap_agent::executor::{Executor, Job};
use nap_core::RequestId;
use nap_core::wire::ErrorCode;

fn executor(tune: impl FnOnce(&mut SandboxConfig)) -> Executor {
    let mut sandbox = SandboxConfig {
        kill_grace_ms: 500,
        ..SandboxConfig::default()
    };
    tune(&mut sandbox);
    Executor::new(sandbox, PathBuf::from(env!("CARGO_BIN_EXE_nap-agent")))
}

fn job(program: &str, args: &[&str]) -> Vec<Job> {
    vec![Job {
        program: program.into(),
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        env: BTreeMap::new(),
    }]
}

#[tokio::test]
async fn an_allowed_command_runs_with_its_arguments_and_no_inherited_environment() {
    let mut jobs = job("/usr/bin/env", &[]);
    jobs[0].env.insert("ONLY".into(), "this".into());
    let outcome = executor(|_| {}).run(RequestId::from_u128(1), jobs).await;
    assert!(outcome.success, "{outcome:?}");
    assert_eq!(outcome.exit_code, Some(0));
    assert_eq!(outcome.stdout, "ONLY=this\n", "the environment is cleared");
    let outcome = executor(|_| {})
        .run(
            RequestId::from_u128(2),
            job("/bin/echo", &["a b", "$(reboot)", ";"]),
        )
        .await;
    assert_eq!(
        outcome.stdout, "a b $(reboot) ;\n",
        "arguments are passed verbatim, never to a shell"
    );
}

#[tokio::test]
async fn output_is_capped_and_marked_truncated() {
    let outcome = executor(|s| s.output_cap_bytes = 1000)
        .run(
            RequestId::from_u128(3),
            job("/usr/bin/seq", &["1", "100000"]),
        )
        .await;
    assert!(outcome.success);
    assert_eq!(outcome.stdout.len(), 1000);
    assert!(outcome.truncated);
}

#[tokio::test]
async fn a_missing_program_is_not_found_and_a_forbidden_one_permission_denied() {
    let outcome = executor(|_| {})
        .run(RequestId::from_u128(4), job("/nonexistent/tool", &[]))
        .await;
    assert_eq!(
        outcome.error.as_ref().map(|e| e.code),
        Some(ErrorCode::NotFound),
        "{outcome:?}"
    );
    let dir = tempfile::tempdir().expect("dir");
    let script = dir.path().join("not-executable");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").expect("write");
    let outcome = executor(|_| {})
        .run(
            RequestId::from_u128(5),
            job(script.to_str().expect("utf-8"), &[]),
        )
        .await;
    assert_eq!(
        outcome.error.as_ref().map(|e| e.code),
        Some(ErrorCode::PermissionDenied),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_failing_command_reports_its_exit_code_and_stderr() {
    let outcome = executor(|_| {})
        .run(
            RequestId::from_u128(6),
            job("/bin/ls", &["/definitely/not/here"]),
        )
        .await;
    assert!(!outcome.success);
    assert_eq!(outcome.exit_code, Some(2));
    assert!(outcome.stderr.contains("No such file"), "{outcome:?}");
    assert!(
        outcome.error.is_none(),
        "a non-zero exit is a failure, not an agent error"
    );
}

/// Processes whose process group is `pgid`, from /proc.
fn group_members(pgid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command name: state ppid pgrp ...
        let after = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest)
            .unwrap_or_default();
        let fields: Vec<&str> = after.split_whitespace().collect();
        if fields.get(2).and_then(|g| g.parse::<i32>().ok()) == Some(pgid)
            && fields.first() != Some(&"Z")
        {
            out.push(pid);
        }
    }
    out
}

#[tokio::test]
async fn a_kill_takes_the_whole_process_group() {
    let dir = tempfile::tempdir().expect("dir");
    // The script reports its pids through a FIFO: reading it waits for them.
    let pids = dir.path().join("pids");
    nix::unistd::mkfifo(&pids, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    let script = format!(
        "exec 3>{p}; sleep 300 3>&- & echo $! >&3; sleep 300 3>&- & echo $! >&3; echo $$ >&3; exec 3>&-; wait",
        p = pids.display()
    );
    let executor = executor(|s| s.landlock = false);
    let id = RequestId::from_u128(7);
    let running = {
        let executor = executor.clone();
        tokio::spawn(async move { executor.run(id, job("/bin/sh", &["-c", &script])).await })
    };
    let reported = tokio::fs::read_to_string(&pids)
        .await
        .expect("the script reports its pids");
    let group: Vec<i32> = reported
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert_eq!(
        group.len(),
        3,
        "the shell and its two children started: {reported:?}"
    );
    let pgid = group[2];
    assert_eq!(
        group_members(pgid).len(),
        3,
        "all three share the command's process group"
    );
    executor.kill(id).await;
    let outcome = running.await.expect("joined");
    assert!(!outcome.success);
    assert!(group_members(pgid).is_empty(), "no survivor in /proc");
}

#[tokio::test]
async fn resource_limits_apply_to_the_command() {
    let outcome = executor(|s| s.open_files = 17)
        .run(
            RequestId::from_u128(8),
            job("/bin/sh", &["-c", "ulimit -n"]),
        )
        .await;
    assert_eq!(outcome.stdout.trim(), "17", "{outcome:?}");
}

#[tokio::test]
async fn landlock_confines_writes_where_the_kernel_supports_it() {
    if !nap_agent::sandbox::landlock_supported() {
        eprintln!("SKIPPED: this kernel does not enforce Landlock");
        return;
    }
    let dir = tempfile::tempdir_in("/var/tmp").expect("dir");
    let target = dir.path().join("forbidden");
    let outcome = executor(|s| s.writable = vec![PathBuf::from("/dev/null")])
        .run(
            RequestId::from_u128(9),
            job("/usr/bin/touch", &[target.to_str().expect("utf-8")]),
        )
        .await;
    assert!(!outcome.success, "{outcome:?}");
    assert!(!target.exists());
}
