//! What a rollout is asked to do, and the absolute numbers it runs by.
//!
//! Amounts are a count or a percentage of the targets resolved at start.
//! Percentages round so that the rollout errs on the careful side:
//! `canary` and `maxConcurrency` round **up** (at least 1 whenever the
//! percentage is above 0 and there is a target), `maxErrors` rounds
//! **down**. A count larger than the targets is the targets.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A number of targets, or a percentage of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "AmountText", into = "String")]
pub enum Amount {
    Count(u32),
    /// 0 to 100.
    Percent(u8),
}

/// How a percentage rounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    Up,
    Down,
}

impl Amount {
    /// The absolute number for `total` targets.
    fn of(self, total: usize, round: Round) -> usize {
        match self {
            Self::Count(n) => usize::try_from(n).unwrap_or(usize::MAX).min(total),
            Self::Percent(p) => {
                let scaled = total * usize::from(p);
                match round {
                    Round::Up => scaled.div_ceil(100),
                    Round::Down => scaled / 100,
                }
            }
        }
    }
}

/// Why an amount is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a count or a percentage from 0% to 100%")]
pub struct BadAmount(String);

impl FromStr for Amount {
    type Err = BadAmount;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadAmount(s.to_owned());
        let s = s.trim();
        match s.strip_suffix('%') {
            Some(p) => match p.trim().parse::<u8>() {
                Ok(p) if p <= 100 => Ok(Self::Percent(p)),
                _ => Err(bad()),
            },
            None => s.parse::<u32>().map(Self::Count).map_err(|_| bad()),
        }
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Count(n) => write!(f, "{n}"),
            Self::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl From<Amount> for String {
    fn from(a: Amount) -> Self {
        a.to_string()
    }
}

/// An amount as JSON writes it: `5`, `"5"` or `"10%"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum AmountText {
    Number(u32),
    Text(String),
}

impl TryFrom<AmountText> for Amount {
    type Error = BadAmount;

    fn try_from(t: AmountText) -> Result<Self, Self::Error> {
        match t {
            AmountText::Number(n) => Ok(Self::Count(n)),
            AmountText::Text(s) => s.parse(),
        }
    }
}

/// What counts against `maxErrors`, and how in-flight work is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorMode {
    /// Stop starting targets once failures pass `maxErrors`; those already
    /// in flight may still fail (the overshoot is at most what was in
    /// flight).
    #[default]
    Fast,
    /// Never more than `maxErrors + 1` failures: in flight is kept at most
    /// the failures still allowed + 1 (with `maxErrors` 0, one at a time).
    Strict,
}

/// What becomes of a target that is offline when its turn comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfflineTargets {
    /// It is `skipped`; the rollout goes on without it.
    #[default]
    Skip,
    /// It waits (holding no slot) and starts when it is back, until the
    /// deadline.
    Wait,
    /// It fails (`undeliverable`), counted against `maxErrors`.
    Fail,
}

/// How a rollout proceeds. As JSON (the API's `strategy`) every field may
/// be left out for its default; times are whole seconds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Strategy {
    /// Started first, alone; the rest waits until every canary target
    /// ended (and the bake). `None` or 0: no canary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<Amount>,
    /// The wait after the canary, before the rest.
    #[serde(rename = "bakeS", with = "seconds")]
    pub bake: Duration,
    /// Targets in flight at once (delivered, not yet ended).
    pub max_concurrency: Amount,
    /// Failures tolerated; one more halts the rollout.
    pub max_errors: Amount,
    pub error_mode: ErrorMode,
    /// A slot a target freed is used again only this long after.
    #[serde(rename = "batchWaitS", with = "seconds")]
    pub batch_wait: Duration,
    pub offline: OfflineTargets,
    /// From the start: no target starts after it, and every target's
    /// command expires with it.
    #[serde(rename = "deadlineS", with = "seconds")]
    pub deadline: Duration,
}

impl Strategy {
    /// When a rollout starting at `start_at` reaches its deadline: what a
    /// rollout's approval is signed to last until (spec §8.4).
    pub fn deadline_at(&self, start_at: crate::WallTime) -> crate::WallTime {
        start_at.add_millis(i64::try_from(self.deadline.as_millis()).unwrap_or(i64::MAX))
    }

    /// A broadcast's: every target at once, no canary, no error limit,
    /// offline targets waiting for their node until `deadline`.
    pub fn all_at_once(deadline: Duration) -> Self {
        Self {
            max_concurrency: Amount::Percent(100),
            max_errors: Amount::Percent(100),
            offline: OfflineTargets::Wait,
            deadline,
            ..Self::default()
        }
    }
}

/// A duration as whole seconds.
mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

impl Default for Strategy {
    fn default() -> Self {
        Self {
            canary: None,
            bake: Duration::ZERO,
            max_concurrency: Amount::Percent(10),
            max_errors: Amount::Count(0),
            error_mode: ErrorMode::Fast,
            batch_wait: Duration::ZERO,
            offline: OfflineTargets::Skip,
            deadline: Duration::from_secs(24 * 3600),
        }
    }
}

/// A strategy's amounts for a number of targets: what the rollout runs by
/// (the API shows them before it starts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    pub targets: usize,
    /// Canary targets (0: none).
    pub canary: usize,
    /// At most in flight at once (at least 1 when there are targets).
    pub max_concurrency: usize,
    /// Failures tolerated.
    pub max_errors: usize,
    /// In strict mode, the most that can be in flight at the start
    /// (`maxErrors + 1`, or less by `maxConcurrency`).
    pub strict_in_flight: Option<usize>,
}

impl Limits {
    /// The absolute numbers of `strategy` over `targets` targets.
    pub fn of(strategy: &Strategy, targets: usize) -> Self {
        let canary = strategy
            .canary
            .map_or(0, |c| c.of(targets, Round::Up))
            .min(targets);
        let max_concurrency = strategy
            .max_concurrency
            .of(targets, Round::Up)
            .max(usize::from(targets > 0));
        let max_errors = strategy.max_errors.of(targets, Round::Down);
        let strict_in_flight = (strategy.error_mode == ErrorMode::Strict)
            .then(|| max_concurrency.min(max_errors.saturating_add(1)));
        Self {
            targets,
            canary,
            max_concurrency,
            max_errors,
            strict_in_flight,
        }
    }
}

/// A label selector: `role=web,env=prod` (every term must hold); a term is
/// `key=value`, `key!=value`, or `key` (the label is present).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Selector {
    terms: Vec<Term>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Term {
    Is(String, String),
    IsNot(String, String),
    Has(String),
}

/// Why a selector does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad label selector term `{0}`: write key=value, key!=value or key")]
pub struct BadSelector(String);

impl FromStr for Selector {
    type Err = BadSelector;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let key_ok = |k: &str| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        };
        let mut terms = Vec::new();
        for raw in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let bad = || BadSelector(raw.to_owned());
            let term = if let Some((k, v)) = raw.split_once("!=") {
                Term::IsNot(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, v)) = raw.split_once('=') {
                Term::Is(k.trim().to_owned(), v.trim().to_owned())
            } else {
                Term::Has(raw.to_owned())
            };
            let key = match &term {
                Term::Is(k, _) | Term::IsNot(k, _) | Term::Has(k) => k,
            };
            if !key_ok(key) {
                return Err(bad());
            }
            terms.push(term);
        }
        Ok(Self { terms })
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, term) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match term {
                Term::Is(k, v) => write!(f, "{k}={v}")?,
                Term::IsNot(k, v) => write!(f, "{k}!={v}")?,
                Term::Has(k) => f.write_str(k)?,
            }
        }
        Ok(())
    }
}

impl Selector {
    /// Whether a node with `labels` is selected (an empty selector selects
    /// every node).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.terms.iter().all(|term| match term {
            Term::Is(k, v) => labels.get(k) == Some(v),
            Term::IsNot(k, v) => labels.get(k) != Some(v),
            Term::Has(k) => labels.contains_key(k),
        })
    }
}
