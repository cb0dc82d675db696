//! A table of named deadlines. `poll_timeout` of every engine is its minimum;
//! the table is public so a model checker or a test can see what is armed.

use std::collections::BTreeMap;

use crate::Timestamp;

/// Named deadlines of type `K`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Timers<K: Ord> {
    armed: BTreeMap<K, Timestamp>,
}

impl<K: Ord + Clone> Default for Timers<K> {
    fn default() -> Self {
        Self {
            armed: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Clone> Timers<K> {
    /// Arms (or re-arms) `kind` for `at`.
    pub fn set(&mut self, kind: K, at: Timestamp) {
        self.armed.insert(kind, at);
    }

    /// Disarms `kind`.
    pub fn stop(&mut self, kind: &K) {
        self.armed.remove(kind);
    }

    /// When `kind` fires, if armed.
    pub fn get(&self, kind: &K) -> Option<Timestamp> {
        self.armed.get(kind).copied()
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Timestamp> {
        self.armed.values().min().copied()
    }

    /// Removes and returns the earliest timer due at `now`, if any.
    pub fn pop_due(&mut self, now: Timestamp) -> Option<K> {
        let (kind, _) = self
            .armed
            .iter()
            .filter(|(_, at)| **at <= now)
            .min_by_key(|(_, at)| **at)?;
        let kind = kind.clone();
        self.armed.remove(&kind);
        Some(kind)
    }

    /// Disarms every timer for which `keep` is false.
    pub fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        self.armed.retain(|k, _| keep(k));
    }

    /// Every armed timer.
    pub fn iter(&self) -> impl Iterator<Item = (&K, Timestamp)> {
        self.armed.iter().map(|(k, at)| (k, *at))
    }
}
