//! v0.3 rollouts (spec/protocol.md §8.3): one command to many nodes, under
//! a strategy — a canary first, a bake, bounded concurrency, an error
//! budget, a deadline — driven by the states of its targets' commands.

mod engine;
mod plan;

pub use engine::{
    Counts, Rollout, RolloutOutput, RolloutRefusal, RolloutState, RolloutTimer, Target, TargetState,
};
pub use plan::{
    Amount, BadAmount, BadSelector, ErrorMode, Limits, OfflineTargets, Selector, Strategy,
};
