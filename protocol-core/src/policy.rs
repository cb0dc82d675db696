//! The agent's command policy: a pure allow-list matcher (fed by the driver's
//! configuration) and the deploy branch-name validator. Nothing runs that
//! this module did not allow.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use regex::Regex;

use crate::signed_approval::ApprovalTrust;

/// Which commands may run, and how.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    commands: BTreeMap<String, CommandRule>,
    deploy_envs: BTreeSet<String>,
    /// The timeout for health checks, deploys and updates, which have no
    /// allow-list entry of their own.
    pub task_timeout: Duration,
    /// The approval roots this node trusts, for entries that require
    /// approval (spec §8.2).
    pub approval_trust: Option<ApprovalTrust>,
}

/// One allow-list entry.
#[derive(Debug, Clone)]
pub struct CommandRule {
    /// Absolute path of the program; never looked up in `PATH`.
    pub program: String,
    /// What the arguments may be.
    pub args: ArgRules,
    /// The longest the command may run; also its timeout when none is asked.
    pub max_timeout: Duration,
    /// Environment variables set for the child (all others are cleared).
    pub env: BTreeMap<String, String>,
    /// The user the command runs as; `None` is the agent's sandbox default
    /// (an unprivileged user). Root only where the entry says so.
    pub run_as: Option<String>,
    /// Signed approvals, by distinct people, the node verifies itself before
    /// it runs the command (`approval = "required"`; 0: none, central's
    /// approval alone decides).
    pub required_approvals: u8,
}

/// The arguments an entry accepts.
#[derive(Debug, Clone)]
pub enum ArgRules {
    /// Exactly these positional rules, one argument each.
    Exact(Vec<ArgRule>),
    /// These positional rules, then any number of arguments matching `rest`.
    Variadic {
        fixed: Vec<ArgRule>,
        rest: ArgRule,
        max: usize,
    },
}

/// What one argument may be.
#[derive(Debug, Clone)]
pub enum ArgRule {
    /// Exactly this string.
    Literal(String),
    /// One of these strings.
    OneOf(Vec<String>),
    /// A string the whole of which matches this pattern.
    Pattern(AnchoredPattern),
}

/// A regular expression that must match a whole argument.
#[derive(Debug, Clone)]
pub struct AnchoredPattern {
    source: String,
    regex: Regex,
}

impl AnchoredPattern {
    /// Compiles `pattern`, anchored at both ends.
    pub fn new(pattern: &str) -> Result<Self, regex::Error> {
        let regex = regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
            .size_limit(1 << 20)
            .build()?;
        Ok(Self {
            source: pattern.to_owned(),
            regex,
        })
    }

    /// Whether `arg` matches as a whole.
    pub fn matches(&self, arg: &str) -> bool {
        self.regex.is_match(arg)
    }

    /// The pattern as configured.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl ArgRule {
    fn allows(&self, arg: &str) -> bool {
        match self {
            Self::Literal(s) => s == arg,
            Self::OneOf(options) => options.iter().any(|o| o == arg),
            Self::Pattern(p) => p.matches(arg),
        }
    }
}

impl fmt::Display for ArgRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Literal(s) => write!(f, "{s:?}"),
            Self::OneOf(options) => write!(f, "one of {options:?}"),
            Self::Pattern(p) => write!(f, "a match of /{}/", p.as_str()),
        }
    }
}

/// An allowed command, resolved to what the driver must run.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Approved {
    pub program: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub timeout: Duration,
    pub run_as: Option<String>,
    /// See [`CommandRule::required_approvals`].
    pub required_approvals: u8,
}

/// Why a command was refused; the text goes into the `blocked` result and
/// the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Refusal {
    #[error("command {0:?} is not on the allow-list")]
    NotAllowed(String),
    #[error("{command}: expected {expected} arguments, got {got}")]
    ArgumentCount {
        command: String,
        expected: String,
        got: usize,
    },
    #[error("{command}: argument {index} {arg:?} is not {rule}")]
    Argument {
        command: String,
        index: usize,
        arg: String,
        rule: String,
    },
    #[error("{command}: timeout of {requested_ms} ms is over the maximum of {max_ms} ms")]
    Timeout {
        command: String,
        requested_ms: u64,
        max_ms: u64,
    },
    #[error(
        "{0} requires approval on this node (its allow-list entry says approval = \"required\"): send it with requiresApproval"
    )]
    ApprovalRequired(String),
    #[error("{0} requires signed approvals and this node has no approval root configured")]
    NoApprovalRoot(String),
    #[error("deploy environment {0:?} is not configured")]
    UnknownEnv(String),
    #[error("branch name {name:?} is invalid: {reason}")]
    Branch { name: String, reason: &'static str },
}

impl Policy {
    /// A policy that allows nothing.
    pub fn deny_all() -> Self {
        Self {
            task_timeout: Duration::from_secs(600),
            ..Self::default()
        }
    }

    /// Allows `name` under `rule`.
    pub fn allow(&mut self, name: impl Into<String>, rule: CommandRule) -> &mut Self {
        self.commands.insert(name.into(), rule);
        self
    }

    /// Allows deploys to `env`.
    pub fn allow_deploy_env(&mut self, env: impl Into<String>) -> &mut Self {
        self.deploy_envs.insert(env.into());
        self
    }

    /// Decides an `execute`.
    pub fn check_execute(
        &self,
        command: &str,
        args: &[String],
        timeout_ms: Option<u64>,
    ) -> Result<Approved, Refusal> {
        let rule = self
            .commands
            .get(command)
            .ok_or_else(|| Refusal::NotAllowed(command.to_owned()))?;
        let (fixed, rest, expected) = match &rule.args {
            ArgRules::Exact(fixed) => (fixed.as_slice(), None, fixed.len().to_string()),
            ArgRules::Variadic { fixed, rest, max } => (
                fixed.as_slice(),
                Some((rest, *max)),
                format!("{} to {}", fixed.len(), fixed.len() + max),
            ),
        };
        let allowed_count = match rest {
            None => args.len() == fixed.len(),
            Some((_, max)) => args.len() >= fixed.len() && args.len() - fixed.len() <= max,
        };
        if !allowed_count {
            return Err(Refusal::ArgumentCount {
                command: command.to_owned(),
                expected,
                got: args.len(),
            });
        }
        for (index, arg) in args.iter().enumerate() {
            let arg_rule = fixed
                .get(index)
                .or(rest.map(|(r, _)| r))
                .expect("count checked above");
            // A NUL cannot be passed to exec; refuse it whatever the rule says.
            if arg.contains('\0') || !arg_rule.allows(arg) {
                return Err(Refusal::Argument {
                    command: command.to_owned(),
                    index,
                    arg: arg.clone(),
                    rule: arg_rule.to_string(),
                });
            }
        }
        let max_ms = u64::try_from(rule.max_timeout.as_millis()).unwrap_or(u64::MAX);
        let timeout = match timeout_ms {
            Some(requested) if requested > max_ms => {
                return Err(Refusal::Timeout {
                    command: command.to_owned(),
                    requested_ms: requested,
                    max_ms,
                });
            }
            Some(requested) => Duration::from_millis(requested),
            None => rule.max_timeout,
        };
        Ok(Approved {
            program: rule.program.clone(),
            args: args.to_vec(),
            env: rule.env.clone(),
            timeout,
            run_as: rule.run_as.clone(),
            required_approvals: rule.required_approvals,
        })
    }

    /// Decides a `deploy`.
    pub fn check_deploy(&self, env: &str, branch: &str) -> Result<(), Refusal> {
        if !self.deploy_envs.contains(env) {
            return Err(Refusal::UnknownEnv(env.to_owned()));
        }
        validate_branch(branch).map_err(|reason| Refusal::Branch {
            name: branch.to_owned(),
            reason,
        })
    }
}

/// Checks a branch name as `git check-ref-format --branch` would, and also
/// refuses a leading `-` so the name can never be read as an option.
pub fn validate_branch(name: &str) -> Result<(), &'static str> {
    const MAX_LEN: usize = 255;
    if name.is_empty() {
        return Err("empty");
    }
    if name.len() > MAX_LEN {
        return Err("longer than 255 bytes");
    }
    if name.starts_with('-') {
        return Err("starts with '-'");
    }
    if name == "@" || name == "HEAD" {
        return Err("is a reserved name");
    }
    if name.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err("contains a control character");
    }
    if name
        .chars()
        .any(|c| matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\'))
    {
        return Err("contains one of space ~ ^ : ? * [ \\");
    }
    if name.contains("..") {
        return Err("contains '..'");
    }
    if name.contains("@{") {
        return Err("contains '@{'");
    }
    if name.starts_with('/') || name.ends_with('/') || name.contains("//") {
        return Err("has an empty path component");
    }
    if name.ends_with('.') {
        return Err("ends with '.'");
    }
    for component in name.split('/') {
        if component.starts_with('.') {
            return Err("has a component starting with '.'");
        }
        if component.ends_with(".lock") {
            return Err("has a component ending with '.lock'");
        }
    }
    Ok(())
}
