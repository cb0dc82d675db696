//! v0.2 approval: who may approve a held command and what an approval is
//! bound to (spec/protocol.md §8.1). The rules are pure; the hub applies
//! them to the commands it tracks.
//!
//! An approval is between people: a [`Person`] is a user, whatever token
//! they came with. It is bound to the command's **digest** — SHA-256 over
//! [`canonical_bytes`], computed by the driver — so an approval given for one
//! command cannot be counted for another, nor for the same command edited.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::wire::{CentralMessage, SignedApproval};
use crate::{NodeId, RequestId, RolloutId, WallTime};

/// The fewest and the most approvals a request may ask for.
pub const MIN_APPROVALS: u8 = 1;
pub const MAX_APPROVALS: u8 = 5;

/// How long approvals are collected, how long a complete approval may wait
/// for its node before it must be given again, and which commands need
/// approval whatever their request says.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ApprovalPolicy {
    /// A request nobody decided in this time ends `approval_expired`.
    pub request_ttl: Duration,
    /// A complete approval whose node is offline is delivered within this
    /// time or ends `approval_expired`.
    pub release_ttl: Duration,
    /// Central's approval rules, in configuration order.
    pub rules: Vec<ApprovalRule>,
}

impl Default for ApprovalPolicy {
    fn default() -> Self {
        Self {
            request_ttl: Duration::from_secs(4 * 3600),
            release_ttl: Duration::from_secs(15 * 60),
            rules: Vec::new(),
        }
    }
}

/// One of central's approval rules (spec §8.1): the `execute` commands it
/// matches need approval, by at least `min_approvals` people, whatever the
/// request says — no request skips it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ApprovalRule {
    /// The command it is for; every command when absent.
    pub command: Option<String>,
    /// Node labels that must all be present with these values; every node
    /// when empty.
    pub labels: BTreeMap<String, String>,
    /// Distinct approvers needed, the requester never among them.
    pub min_approvals: u8,
    /// Who may approve, as `approver` is written; the request's when absent.
    pub approver: Option<String>,
}

impl ApprovalRule {
    fn matches(&self, command: &str, labels: &BTreeMap<String, String>) -> bool {
        self.command.as_deref().is_none_or(|c| c == command)
            && self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// What a request for approval asked for (`requiresApproval: true`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Asked {
    /// `minApprovals`, if given.
    pub min_approvals: Option<u8>,
    /// `approver`, if given.
    pub approver: Option<String>,
}

/// What a command needs: its request and the rules that match it together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub min_approvals: u8,
    pub approver: Option<String>,
}

/// Why a command cannot be requested as it was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequirementError {
    #[error(
        "{command} on this node needs approval (approval rule {rule}): send it with requiresApproval: true and a reason"
    )]
    RuleRequiresApproval { command: String, rule: usize },
    #[error("approval rule {rule} names the approver {ruled:?}; the request names {asked:?}")]
    ApproverConflict {
        rule: usize,
        ruled: String,
        asked: String,
    },
}

impl ApprovalPolicy {
    /// What `command` on a node labelled `labels` needs, given what its
    /// request `asked` (`None`: it did not ask for approval). Rules only
    /// add: the most approvals any of them or the request asks for, and the
    /// first matching rule's approver. Rules are numbered from 1.
    pub fn requirement(
        &self,
        command: &str,
        labels: &BTreeMap<String, String>,
        asked: Option<&Asked>,
    ) -> Result<Option<Requirement>, RequirementError> {
        let matching: Vec<(usize, &ApprovalRule)> = (1..)
            .zip(&self.rules)
            .filter(|(_, r)| r.matches(command, labels))
            .collect();
        let Some(asked) = asked else {
            return match matching.first() {
                Some((rule, _)) => Err(RequirementError::RuleRequiresApproval {
                    command: command.to_owned(),
                    rule: *rule,
                }),
                None => Ok(None),
            };
        };
        let ruled = matching
            .iter()
            .find_map(|(n, r)| r.approver.as_ref().map(|a| (*n, a)));
        let approver = match (ruled, &asked.approver) {
            (Some((rule, ruled)), Some(asked)) if ruled != asked => {
                return Err(RequirementError::ApproverConflict {
                    rule,
                    ruled: ruled.clone(),
                    asked: asked.clone(),
                });
            }
            (Some((_, ruled)), _) => Some(ruled.clone()),
            (None, asked) => asked.clone(),
        };
        let min_approvals = matching
            .iter()
            .map(|(_, r)| r.min_approvals)
            .chain(asked.min_approvals)
            .max()
            .unwrap_or(MIN_APPROVALS)
            .clamp(MIN_APPROVALS, MAX_APPROVALS);
        Ok(Some(Requirement {
            min_approvals,
            approver,
        }))
    }
}

/// Who may approve a request: the seed's `approver`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Approvers {
    /// Anyone with the operator role but the requester.
    Anyone,
    /// This user.
    User(String),
    /// A member of this group (`approver: "group:NAME"`).
    Group(String),
}

impl Approvers {
    /// Reads the seed's `approver` field: `group:NAME`, a user name, or
    /// nothing.
    pub fn parse(approver: Option<&str>) -> Self {
        match approver.map(str::trim).filter(|a| !a.is_empty()) {
            None => Self::Anyone,
            Some(a) => match a.strip_prefix("group:") {
                Some(group) => Self::Group(group.to_owned()),
                None => Self::User(a.to_owned()),
            },
        }
    }

    /// Whether `person` is among those who may approve (the requester
    /// rule is [`Pending::decide`]'s).
    pub fn admits(&self, person: &Person) -> bool {
        match self {
            Self::Anyone => true,
            Self::User(user) => *user == person.user,
            Self::Group(group) => person.groups.contains(group),
        }
    }
}

/// A person deciding: a user, their groups, and whether they administer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Person {
    pub user: String,
    pub groups: BTreeSet<String>,
    pub admin: bool,
}

/// What an operator asked for when they submitted a command for approval.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ApprovalRequest {
    pub requester: String,
    pub approvers: Approvers,
    /// Distinct approvers needed, the requester never among them.
    pub min_approvals: u8,
    /// Why the requester wants it (required).
    pub reason: String,
    /// Hex SHA-256 of the command's canonical encoding.
    pub digest: String,
    /// When the request ends `approval_expired` if it is not decided.
    pub expires_at: WallTime,
    /// Approvals already given (a request loaded back from the store).
    pub approved_by: Vec<String>,
    /// Their signatures, for nodes that verify approvals themselves (§8.2).
    pub signatures: Vec<SignedApproval>,
}

/// A decision on a pending request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Decision {
    /// Approve the command whose digest is this (what the approver saw),
    /// signed by the approver's own key where they have one (§8.2).
    Approve {
        digest: String,
        signature: Option<SignedApproval>,
    },
    /// Reject it; one rejection is enough.
    Reject { reason: String },
    /// Withdraw it (the requester, or an administrator).
    Cancel,
}

/// Why a decision was refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error, Serialize, Deserialize)]
pub enum ApprovalRefusal {
    #[error("no such command awaits approval")]
    NotPending,
    #[error("the requester cannot approve their own request")]
    OwnRequest,
    #[error("only {0} may approve this request")]
    NotAnApprover(String),
    #[error("this person has approved it already")]
    AlreadyApproved,
    #[error(
        "the approval is for another command (its digest differs): the command changed or the approval belongs elsewhere"
    )]
    DigestMismatch,
    #[error("a rejection needs a reason")]
    ReasonRequired,
    #[error("only the requester or an administrator can cancel it")]
    NotRequester,
    #[error("the signature is {signed}'s, not {person}'s: an approver signs with their own key")]
    NotOwnSignature { signed: String, person: String },
}

/// What a decision changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Decided {
    /// Counted; more approvals are needed.
    Counted {
        approvals: u8,
        needed: u8,
    },
    /// The last approval needed: the command is released.
    Approved,
    Rejected,
    Cancelled,
}

/// Approvals gathered for one tracked command.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pending {
    pub request: ApprovalRequest,
    approved_by: BTreeSet<String>,
    signatures: BTreeMap<String, SignedApproval>,
}

impl Pending {
    pub fn new(mut request: ApprovalRequest) -> Self {
        request.min_approvals = request.min_approvals.clamp(MIN_APPROVALS, MAX_APPROVALS);
        let approved_by = request
            .approved_by
            .iter()
            .filter(|u| **u != request.requester)
            .cloned()
            .collect::<BTreeSet<_>>();
        let signatures = request
            .signatures
            .iter()
            .filter(|s| approved_by.contains(&s.user))
            .map(|s| (s.user.clone(), s.clone()))
            .collect();
        Self {
            request,
            approved_by,
            signatures,
        }
    }

    /// The approvers' signatures, in name order.
    pub fn signatures(&self) -> impl Iterator<Item = &SignedApproval> {
        self.signatures.values()
    }

    /// Whether enough distinct people have approved.
    pub fn complete(&self) -> bool {
        self.approved_by.len() >= usize::from(self.request.min_approvals)
    }

    /// Who approved, in name order.
    pub fn approvers(&self) -> impl Iterator<Item = &str> {
        self.approved_by.iter().map(String::as_str)
    }

    /// Applies `decision` by `person`: the rules of spec §8.1.
    pub fn decide(
        &mut self,
        person: &Person,
        decision: &Decision,
    ) -> Result<Decided, ApprovalRefusal> {
        // Approved is decided for good, also when restored from the store
        // (where the command reads as open again until it is released).
        if self.complete() {
            return Err(ApprovalRefusal::NotPending);
        }
        let request = &self.request;
        match decision {
            Decision::Approve { digest, signature } => {
                // No role bypasses this, administrators included.
                if person.user == request.requester {
                    return Err(ApprovalRefusal::OwnRequest);
                }
                if !request.approvers.admits(person) {
                    return Err(ApprovalRefusal::NotAnApprover(describe(&request.approvers)));
                }
                if *digest != request.digest {
                    return Err(ApprovalRefusal::DigestMismatch);
                }
                if let Some(signed) = signature.as_ref().filter(|s| s.user != person.user) {
                    return Err(ApprovalRefusal::NotOwnSignature {
                        signed: signed.user.clone(),
                        person: person.user.clone(),
                    });
                }
                if !self.approved_by.insert(person.user.clone()) {
                    return Err(ApprovalRefusal::AlreadyApproved);
                }
                if let Some(signed) = signature {
                    self.signatures.insert(person.user.clone(), signed.clone());
                }
                let approvals = u8::try_from(self.approved_by.len()).unwrap_or(u8::MAX);
                Ok(if self.complete() {
                    Decided::Approved
                } else {
                    Decided::Counted {
                        approvals,
                        needed: request.min_approvals,
                    }
                })
            }
            Decision::Reject { reason } => {
                if reason.trim().is_empty() {
                    return Err(ApprovalRefusal::ReasonRequired);
                }
                if person.user != request.requester && !request.approvers.admits(person) {
                    return Err(ApprovalRefusal::NotAnApprover(describe(&request.approvers)));
                }
                Ok(Decided::Rejected)
            }
            Decision::Cancel => {
                if person.user != request.requester && !person.admin {
                    return Err(ApprovalRefusal::NotRequester);
                }
                Ok(Decided::Cancelled)
            }
        }
    }
}

fn describe(approvers: &Approvers) -> String {
    match approvers {
        Approvers::Anyone => "an operator".to_owned(),
        Approvers::User(u) => format!("user {u}"),
        Approvers::Group(g) => format!("members of group {g}"),
    }
}

/// The bytes an approval's digest covers (spec §8.1): a versioned, line-based
/// encoding of everything that makes the command what it is — its node, its
/// request id, its kind and every field, and the request's expiry — with
/// each value JSON-encoded (so no value can contain a line break) in a fixed
/// order. Changing any of them changes the digest.
pub fn canonical_bytes(
    node_id: NodeId,
    request_id: RequestId,
    message: &CentralMessage,
    expires_at: WallTime,
) -> Vec<u8> {
    use crate::codec::Message as _;
    let mut out = format!(
        "nap-approval 1\nnode {}\nrequest {}\ntype {}\nexpires {}\n",
        node_id,
        request_id,
        message.message_type(),
        expires_at.unix_millis()
    );
    push_fields(&mut out, message);
    out.into_bytes()
}

/// The bytes a rollout's approval covers (spec §8.4): as
/// [`canonical_bytes`], with the rollout in place of one node and request —
/// its id, and its targets as their count and the root of their tree
/// ([`crate::target_set`]), which holds each target's node and request id.
pub fn rollout_canonical_bytes(
    rollout_id: RolloutId,
    targets: usize,
    root: &crate::target_set::Hash,
    message: &CentralMessage,
    expires_at: WallTime,
) -> Vec<u8> {
    use crate::codec::Message as _;
    let mut out = format!(
        "nap-rollout-approval 1\nrollout {}\ntargets {} {}\ntype {}\nexpires {}\n",
        rollout_id,
        targets,
        hex::encode(root),
        message.message_type(),
        expires_at.unix_millis()
    );
    push_fields(&mut out, message);
    out.into_bytes()
}

/// The command's own fields, one `<name> <JSON value>` line each.
fn push_fields(out: &mut String, message: &CentralMessage) {
    let fields = match message {
        CentralMessage::Execute(e) => vec![
            ("command", serde_json::json!(e.command)),
            ("args", serde_json::json!(e.args)),
            ("timeout", serde_json::json!(e.timeout)),
            ("approver", serde_json::json!(e.approver)),
            ("requestedBy", serde_json::json!(e.requested_by)),
        ],
        CentralMessage::Deploy(d) => vec![
            ("env", serde_json::json!(d.env)),
            ("branch", serde_json::json!(d.branch)),
        ],
        CentralMessage::UpdateAgent(u) => vec![("version", serde_json::json!(u.version))],
        other => vec![("message", serde_json::to_value(other).unwrap_or_default())],
    };
    for (name, value) in fields {
        out.push_str(name);
        out.push(' ');
        out.push_str(&value.to_string());
        out.push('\n');
    }
}
