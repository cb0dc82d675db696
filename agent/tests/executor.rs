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
        // The test's own user; the default user has its own test.
        run_as: None,
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
        run_as: None,
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

/// Whether `pid` is a live (not zombie) process.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z")
    })
}

/// A guard against a hang (the failure these tests look for), not a
/// measure of speed.
async fn ends<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(120), f)
        .await
        .unwrap_or_else(|_| panic!("{what} never ended"))
}

fn pids(stdout: &str) -> Vec<i32> {
    stdout
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[tokio::test]
async fn what_a_command_leaves_running_ends_with_it_and_cannot_hold_its_output() {
    // The background sleep inherits stdout: before, the executor waited for
    // its end of file for 300 s; the second one also leaves the group.
    let outcome = ends(
        "a command that left children",
        executor(|s| s.landlock = false).run(
            RequestId::from_u128(10),
            job(
                "/bin/sh",
                &[
                    "-c",
                    "sleep 300 & echo $!; /usr/bin/setsid /bin/sleep 300 & echo $!; echo done",
                ],
            ),
        ),
    )
    .await;
    assert!(outcome.success, "{outcome:?}");
    let left = pids(&outcome.stdout);
    assert_eq!(left.len(), 2, "{outcome:?}");
    for pid in left {
        assert!(!alive(pid), "{pid} outlived the command");
    }
    assert!(
        outcome.stderr.contains("left running"),
        "the result says what was ended: {outcome:?}"
    );
}

#[tokio::test]
async fn a_kill_reaches_descendants_that_left_the_group_or_ignore_sigterm() {
    let dir = tempfile::tempdir().expect("dir");
    let fifo = dir.path().join("pids");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    // One child in a session of its own, one ignoring SIGTERM (an ignored
    // signal stays ignored across exec), the shell waiting for both.
    let script = format!(
        "exec 3>{p}; /usr/bin/setsid /bin/sleep 300 3>&- & echo $! >&3; \
         (trap '' TERM; exec /bin/sleep 300) 3>&- & echo $! >&3; exec 3>&-; wait",
        p = fifo.display()
    );
    let executor = executor(|s| s.landlock = false);
    let id = RequestId::from_u128(11);
    let running = {
        let executor = executor.clone();
        tokio::spawn(async move { executor.run(id, job("/bin/sh", &["-c", &script])).await })
    };
    let reported = tokio::fs::read_to_string(&fifo).await.expect("pids");
    let started = pids(&reported);
    assert_eq!(started.len(), 2, "{reported:?}");
    assert!(started.iter().all(|&p| alive(p)));
    ends("the kill", executor.kill(id)).await;
    let outcome = ends("the killed command", running).await.expect("joined");
    assert!(!outcome.success);
    for pid in started {
        assert!(!alive(pid), "{pid} survived the kill");
    }
}

#[tokio::test]
async fn commands_run_as_the_unprivileged_user_by_default_and_as_root_only_when_an_entry_says_so() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED the run_as test: it needs the agent to run as root");
        return;
    }
    let Ok(Some(user)) = nix::unistd::User::from_name(nap_agent::config::DEFAULT_RUN_AS) else {
        assert!(
            std::env::var_os("NAP_REQUIRE_SERVICES").is_none(),
            "the user nap-run is missing (.ci/run creates it)"
        );
        eprintln!("SKIPPED the run_as test: create the user nap-run (see .ci/run)");
        return;
    };
    let executor = Executor::new(
        SandboxConfig::default(),
        PathBuf::from(env!("CARGO_BIN_EXE_nap-agent")),
    );
    let outcome = executor
        .run(RequestId::from_u128(12), job("/usr/bin/id", &["-u"]))
        .await;
    assert_eq!(outcome.stdout.trim(), user.uid.to_string(), "{outcome:?}");
    let mut as_root = job("/usr/bin/id", &["-u"]);
    as_root[0].run_as = Some("root".into());
    let outcome = executor.run(RequestId::from_u128(13), as_root).await;
    assert_eq!(outcome.stdout.trim(), "0", "{outcome:?}");
}
