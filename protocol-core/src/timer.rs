//! A table of named deadlines. `poll_timeout` of every engine is its minimum;
//! the table is public so a model checker or a test can see what is armed.

use std::collections::{BTreeMap, BTreeSet};

use crate::Timestamp;

/// Named deadlines of type `K`. Indexed both by name and by deadline, so
/// that the earliest is found in O(log n): a hub holds one per open command,
/// 10,000 in a fan-out, and asks for the earliest after every event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Timers<K: Ord> {
    armed: BTreeMap<K, Timestamp>,
    /// The same timers by deadline; ties in name order.
    by_deadline: BTreeSet<(Timestamp, K)>,
}

impl<K: Ord + Clone> Default for Timers<K> {
    fn default() -> Self {
        Self {
            armed: BTreeMap::new(),
            by_deadline: BTreeSet::new(),
        }
    }
}

impl<K: Ord + Clone> Timers<K> {
    /// Arms (or re-arms) `kind` for `at`.
    pub fn set(&mut self, kind: K, at: Timestamp) {
        if let Some(was) = self.armed.insert(kind.clone(), at) {
            self.by_deadline.remove(&(was, kind.clone()));
        }
        self.by_deadline.insert((at, kind));
    }

    /// Disarms `kind`.
    pub fn stop(&mut self, kind: &K) {
        if let Some(was) = self.armed.remove(kind) {
            self.by_deadline.remove(&(was, kind.clone()));
        }
    }

    /// When `kind` fires, if armed.
    pub fn get(&self, kind: &K) -> Option<Timestamp> {
        self.armed.get(kind).copied()
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Timestamp> {
        self.by_deadline.first().map(|(at, _)| *at)
    }

    /// Removes and returns the earliest timer due at `now`, if any (of
    /// several due at the same instant, the first in name order).
    pub fn pop_due(&mut self, now: Timestamp) -> Option<K> {
        if self.next()? > now {
            return None;
        }
        let (_, kind) = self.by_deadline.pop_first()?;
        self.armed.remove(&kind);
        Some(kind)
    }

    /// Disarms every timer for which `keep` is false.
    pub fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        self.armed.retain(|k, _| keep(k));
        self.by_deadline.retain(|(_, k)| self.armed.contains_key(k));
    }

    /// Every armed timer.
    pub fn iter(&self) -> impl Iterator<Item = (&K, Timestamp)> {
        self.armed.iter().map(|(k, at)| (k, *at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Set(u8, u16),
        Stop(u8),
        PopDue(u16),
        Retain(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..8u8, 0..50u16).prop_map(|(k, at)| Op::Set(k, at)),
            (0..8u8).prop_map(Op::Stop),
            (0..50u16).prop_map(Op::PopDue),
            (1..4u8).prop_map(Op::Retain),
        ]
    }

    fn at(ms: u16) -> Timestamp {
        Timestamp::from_millis(u64::from(ms))
    }

    proptest! {
        /// The deadline index answers what a scan of every timer would.
        #[test]
        fn the_index_answers_as_a_scan_would(ops in proptest::collection::vec(op(), 0..60)) {
            let mut timers = Timers::default();
            let mut naive: BTreeMap<u8, Timestamp> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Set(k, ms) => {
                        timers.set(k, at(ms));
                        naive.insert(k, at(ms));
                    }
                    Op::Stop(k) => {
                        timers.stop(&k);
                        naive.remove(&k);
                    }
                    Op::PopDue(ms) => {
                        let expected = naive
                            .iter()
                            .filter(|(_, t)| **t <= at(ms))
                            .min_by_key(|(_, t)| **t)
                            .map(|(k, _)| *k);
                        if let Some(k) = expected {
                            naive.remove(&k);
                        }
                        prop_assert_eq!(timers.pop_due(at(ms)), expected);
                    }
                    Op::Retain(m) => {
                        timers.retain(|k| k % m == 0);
                        naive.retain(|k, _| k % m == 0);
                    }
                }
                prop_assert_eq!(timers.next(), naive.values().min().copied());
                prop_assert_eq!(timers.iter().map(|(k, t)| (*k, t)).collect::<Vec<_>>(),
                    naive.iter().map(|(k, t)| (*k, *t)).collect::<Vec<_>>());
            }
        }
    }
}
