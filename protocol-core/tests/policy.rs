//! The allow-list matcher and the branch-name validator.

use std::collections::BTreeMap;
use std::time::Duration;

use nap_core::policy::{
    AnchoredPattern, ArgRule, ArgRules, CommandRule, Policy, Refusal, validate_branch,
};
use proptest::prelude::*;

fn policy() -> Policy {
    let mut p = Policy::deny_all();
    p.allow(
        "docker",
        CommandRule {
            run_as: None,
            required_approvals: 0,
            program: "/usr/bin/docker".into(),
            args: ArgRules::Exact(vec![ArgRule::OneOf(vec!["ps".into(), "images".into()])]),
            max_timeout: Duration::from_secs(30),
            env: BTreeMap::from([("LANG".into(), "C".into())]),
        },
    );
    p.allow(
        "journalctl",
        CommandRule {
            run_as: None,
            required_approvals: 0,
            program: "/usr/bin/journalctl".into(),
            args: ArgRules::Variadic {
                fixed: vec![
                    ArgRule::Literal("-u".into()),
                    ArgRule::Pattern(AnchoredPattern::new("[a-z0-9-]+").expect("valid")),
                ],
                rest: ArgRule::OneOf(vec!["--no-pager".into(), "-q".into()]),
                max: 2,
            },
            max_timeout: Duration::from_secs(10),
            env: BTreeMap::new(),
        },
    );
    p.allow_deploy_env("production");
    p
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|a| (*a).to_owned()).collect()
}

#[test]
fn an_allowed_command_resolves_to_its_program() {
    let approved = policy()
        .check_execute("docker", &args(&["ps"]), Some(5000))
        .expect("allowed");
    assert_eq!(approved.program, "/usr/bin/docker");
    assert_eq!(approved.args, args(&["ps"]));
    assert_eq!(approved.timeout, Duration::from_secs(5));
    assert_eq!(approved.env.get("LANG").map(String::as_str), Some("C"));
    let approved = policy()
        .check_execute("journalctl", &args(&["-u", "nginx", "-q"]), None)
        .expect("allowed");
    assert_eq!(approved.timeout, Duration::from_secs(10));
}

#[test]
fn everything_else_is_refused_with_a_reason() {
    let p = policy();
    assert!(matches!(
        p.check_execute("sh", &args(&["-c", "ls"]), None),
        Err(Refusal::NotAllowed(_))
    ));
    assert!(matches!(
        p.check_execute("docker", &args(&["rm", "x"]), None),
        Err(Refusal::ArgumentCount { .. })
    ));
    assert!(matches!(
        p.check_execute("docker", &args(&["run"]), None),
        Err(Refusal::Argument { index: 0, .. })
    ));
    assert!(matches!(
        p.check_execute("journalctl", &args(&["-u", "nginx; reboot"]), None),
        Err(Refusal::Argument { index: 1, .. })
    ));
    assert!(matches!(
        p.check_execute("journalctl", &args(&["-u", "x", "-q", "-q", "-q"]), None),
        Err(Refusal::ArgumentCount { .. })
    ));
    assert!(matches!(
        p.check_execute("docker", &args(&["ps"]), Some(31_000)),
        Err(Refusal::Timeout { .. })
    ));
    assert!(matches!(
        p.check_execute("docker", &args(&["ps\0"]), None),
        Err(Refusal::Argument { .. })
    ));
    let text = p
        .check_execute("docker", &args(&["run"]), None)
        .expect_err("refused")
        .to_string();
    assert!(text.contains("one of"), "{text}");
}

#[test]
fn patterns_match_whole_arguments() {
    let p = policy();
    for bad in ["nginx$(reboot)", "a b", "a/b", "Nginx", "", "x\n"] {
        assert!(
            p.check_execute("journalctl", &args(&["-u", bad]), None)
                .is_err(),
            "{bad:?}"
        );
    }
}

#[test]
fn deploys_need_a_known_env_and_a_safe_branch() {
    let p = policy();
    assert_eq!(p.check_deploy("production", "main"), Ok(()));
    assert_eq!(p.check_deploy("production", "release/1.4"), Ok(()));
    assert!(matches!(
        p.check_deploy("staging", "main"),
        Err(Refusal::UnknownEnv(_))
    ));
    assert!(matches!(
        p.check_deploy("production", "--upload-pack=evil"),
        Err(Refusal::Branch { .. })
    ));
}

#[test]
fn branch_names_follow_git_check_ref_format() {
    for good in [
        "main",
        "feature/x",
        "release-1.2",
        "fix_123",
        "a/b/c",
        "v1.0.0",
        "héllo",
    ] {
        assert_eq!(validate_branch(good), Ok(()), "{good}");
    }
    for bad in [
        "",
        "-x",
        "--force",
        "a..b",
        "a b",
        "a~1",
        "a^",
        "a:b",
        "a?",
        "a*",
        "a[",
        "a\\b",
        "/a",
        "a/",
        "a//b",
        "a.",
        ".a",
        "a/.b",
        "a.lock",
        "a/b.lock/c",
        "a@{1}",
        "@",
        "HEAD",
        "a\u{7f}",
        "a\tb",
    ] {
        assert!(validate_branch(bad).is_err(), "{bad:?} should be refused");
    }
    assert!(validate_branch(&"a".repeat(256)).is_err());
}

proptest! {
    #[test]
    fn the_matcher_never_panics(command in ".{0,12}", list in prop::collection::vec(".{0,12}", 0..6), timeout in any::<Option<u64>>()) {
        let _ = policy().check_execute(&command, &list, timeout);
    }

    #[test]
    fn an_accepted_branch_never_starts_with_a_dash_or_holds_shell_syntax(name in ".{0,40}") {
        if validate_branch(&name).is_ok() {
            prop_assert!(!name.starts_with('-'));
            prop_assert!(!name.contains(' ') && !name.contains(".."));
            prop_assert!(!name.bytes().any(|b| b < 0x20));
        }
    }
}
