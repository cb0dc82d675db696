//! A batch of state changes reduced to what each row ends as, so that a
//! backend writes one statement per table instead of one per change (a
//! fan-out's 10,000 commands each go `sent` then `succeeded`, and their
//! rollout targets with them). Applying the reduction is the same as
//! applying the changes in order.

use std::collections::HashMap;

use nap_core::central::CommandState;
use nap_core::central::rollout::{RolloutState, TargetState};
use nap_core::wire::NodeStatus;
use nap_core::{NodeId, RequestId, RolloutId, WallTime};

use super::StateChange;

/// What a batch of changes leaves behind.
#[derive(Debug, Default, PartialEq)]
pub struct NetChanges {
    /// Every status change, in order: each is a history row.
    pub status_history: Vec<(NodeId, WallTime, NodeStatus, Option<String>)>,
    /// Each node's last status, and the latest instant it was seen.
    pub nodes: Vec<(NodeId, NodeStatus, WallTime)>,
    /// Each command's state as the batch leaves it: its first terminal
    /// state if it reached one (a terminal state is final), its last
    /// otherwise. Still subject to the store's own rule that a command
    /// already terminal there does not change.
    pub commands: Vec<(RequestId, CommandState, WallTime)>,
    /// Each rollout's last state.
    pub rollouts: Vec<(RolloutId, RolloutState, WallTime)>,
    /// Each rollout target's last state.
    pub targets: Vec<(RolloutId, NodeId, TargetState, WallTime)>,
}

impl NetChanges {
    pub fn of(changes: &[StateChange]) -> Self {
        let mut net = Self::default();
        let mut nodes: HashMap<NodeId, usize> = HashMap::new();
        let mut commands: HashMap<RequestId, usize> = HashMap::new();
        let mut rollouts: HashMap<RolloutId, usize> = HashMap::new();
        let mut targets: HashMap<(RolloutId, NodeId), usize> = HashMap::new();
        for change in changes {
            match change {
                StateChange::Status {
                    node_id,
                    status,
                    reason,
                    at,
                } => {
                    net.status_history
                        .push((*node_id, *at, *status, reason.clone()));
                    match nodes.get(node_id) {
                        Some(&i) => {
                            let seen = net.nodes[i].2.max(*at);
                            net.nodes[i] = (*node_id, *status, seen);
                        }
                        None => {
                            nodes.insert(*node_id, net.nodes.len());
                            net.nodes.push((*node_id, *status, *at));
                        }
                    }
                }
                StateChange::Command {
                    request_id,
                    state,
                    at,
                } => match commands.get(request_id) {
                    Some(&i) if net.commands[i].1.is_terminal() => {}
                    Some(&i) => net.commands[i] = (*request_id, *state, *at),
                    None => {
                        commands.insert(*request_id, net.commands.len());
                        net.commands.push((*request_id, *state, *at));
                    }
                },
                StateChange::Rollout {
                    rollout_id,
                    state,
                    at,
                } => match rollouts.get(rollout_id) {
                    Some(&i) => net.rollouts[i] = (*rollout_id, *state, *at),
                    None => {
                        rollouts.insert(*rollout_id, net.rollouts.len());
                        net.rollouts.push((*rollout_id, *state, *at));
                    }
                },
                StateChange::RolloutTarget {
                    rollout_id,
                    node_id,
                    state,
                    at,
                } => match targets.get(&(*rollout_id, *node_id)) {
                    Some(&i) => net.targets[i] = (*rollout_id, *node_id, *state, *at),
                    None => {
                        targets.insert((*rollout_id, *node_id), net.targets.len());
                        net.targets.push((*rollout_id, *node_id, *state, *at));
                    }
                },
            }
        }
        net
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> WallTime {
        WallTime::from_unix_millis(ms).expect("in range")
    }

    #[test]
    fn a_command_keeps_its_first_terminal_state_and_otherwise_its_last() {
        let (a, b) = (RequestId::from_u128(1), RequestId::from_u128(2));
        let command = |request_id, state, ms| StateChange::Command {
            request_id,
            state,
            at: at(ms),
        };
        let net = NetChanges::of(&[
            command(a, CommandState::Sent, 1),
            command(b, CommandState::Sent, 2),
            command(a, CommandState::Succeeded, 3),
            command(a, CommandState::Expired, 4),
            command(b, CommandState::Held, 5),
        ]);
        assert_eq!(
            net.commands,
            vec![
                (a, CommandState::Succeeded, at(3)),
                (b, CommandState::Held, at(5)),
            ]
        );
    }

    #[test]
    fn every_status_change_is_history_and_the_node_ends_at_its_last() {
        let n = NodeId::from_u128(7);
        let status = |status, ms| StateChange::Status {
            node_id: n,
            status,
            reason: None,
            at: at(ms),
        };
        let net = NetChanges::of(&[
            status(NodeStatus::Online, 5),
            status(NodeStatus::Offline, 3),
        ]);
        assert_eq!(net.status_history.len(), 2);
        assert_eq!(net.nodes, vec![(n, NodeStatus::Offline, at(5))]);
    }

    #[test]
    fn rollouts_and_targets_end_at_their_last_state() {
        let (r, n) = (RolloutId::from_u128(1), NodeId::from_u128(2));
        let net = NetChanges::of(&[
            StateChange::RolloutTarget {
                rollout_id: r,
                node_id: n,
                state: TargetState::Command(CommandState::Sent),
                at: at(1),
            },
            StateChange::Rollout {
                rollout_id: r,
                state: RolloutState::Rolling,
                at: at(1),
            },
            StateChange::RolloutTarget {
                rollout_id: r,
                node_id: n,
                state: TargetState::Command(CommandState::Failed),
                at: at(2),
            },
            StateChange::Rollout {
                rollout_id: r,
                state: RolloutState::Halted,
                at: at(2),
            },
        ]);
        assert_eq!(
            net.targets,
            vec![(r, n, TargetState::Command(CommandState::Failed), at(2))]
        );
        assert_eq!(net.rollouts, vec![(r, RolloutState::Halted, at(2))]);
    }
}
