//! A rollout's targets as one hash (spec/protocol.md §8.4): a Merkle tree
//! over its (node, request id) pairs in order, so that approvers sign one
//! statement for the whole set and each node checks, with a proof of about
//! log₂ n hashes, that it is in it — as the command it holds, under its own
//! request id.
//!
//! A leaf is SHA-256 over `0x00` and [`leaf_bytes`]; an inner node is
//! SHA-256 over `0x01`, its left child and its right child (the prefixes
//! keep a leaf from passing for an inner node). On a level of odd width the
//! last node has no sibling and moves up unchanged. The root of one target
//! is its leaf.

use crate::crypto::Crypto;
use crate::{NodeId, RequestId};

/// One hash of the tree.
pub type Hash = [u8; 32];

/// What one target's leaf covers.
pub fn leaf_bytes(node_id: NodeId, request_id: RequestId) -> Vec<u8> {
    format!("nap-rollout-target 1\nnode {node_id}\nrequest {request_id}\n").into_bytes()
}

fn leaf(crypto: &dyn Crypto, node_id: NodeId, request_id: RequestId) -> Hash {
    let mut data = vec![0u8];
    data.extend(leaf_bytes(node_id, request_id));
    crypto.sha256(&data)
}

fn inner(crypto: &dyn Crypto, left: &Hash, right: &Hash) -> Hash {
    let mut data = [0u8; 65];
    data[0] = 1;
    data[1..33].copy_from_slice(left);
    data[33..].copy_from_slice(right);
    crypto.sha256(&data)
}

/// The whole tree, built once by central; every level kept, so that a
/// target's proof is read off rather than computed again.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TargetSet {
    /// Leaves first; the last level holds the root alone.
    levels: Vec<Vec<Hash>>,
}

impl TargetSet {
    /// The tree over `targets`, in their order. Empty for no targets.
    pub fn new(crypto: &dyn Crypto, targets: &[(NodeId, RequestId)]) -> Self {
        let leaves: Vec<Hash> = targets
            .iter()
            .map(|(node, request)| leaf(crypto, *node, *request))
            .collect();
        let mut levels = vec![leaves];
        while levels.last().is_some_and(|l| l.len() > 1) {
            let below = levels.last().map(Vec::as_slice).unwrap_or_default();
            let above = below
                .chunks(2)
                .map(|pair| match pair {
                    [left, right] => inner(crypto, left, right),
                    [last] => *last,
                    _ => unreachable!("chunks of two"),
                })
                .collect();
            levels.push(above);
        }
        Self { levels }
    }

    /// How many targets it covers.
    pub fn len(&self) -> usize {
        self.levels.first().map_or(0, Vec::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The root (all zeros for no targets).
    pub fn root(&self) -> Hash {
        self.levels
            .last()
            .and_then(|l| l.first())
            .copied()
            .unwrap_or([0; 32])
    }

    /// The siblings from the leaf at `index` up to the root, the level
    /// where it has none left out.
    pub fn proof(&self, index: usize) -> Vec<Hash> {
        let mut proof = Vec::new();
        let mut position = index;
        for level in &self.levels[..self.levels.len().saturating_sub(1)] {
            if let Some(sibling) = level.get(position ^ 1) {
                proof.push(*sibling);
            }
            position /= 2;
        }
        proof
    }
}

/// The root that a target's leaf and its proof lead to, for a set of
/// `count` targets in which it is at `index`; `None` when the proof cannot
/// be one (index out of range, too few or too many hashes).
pub fn root_from_proof(
    crypto: &dyn Crypto,
    node_id: NodeId,
    request_id: RequestId,
    index: usize,
    count: usize,
    proof: &[Hash],
) -> Option<Hash> {
    if index >= count {
        return None;
    }
    let mut hash = leaf(crypto, node_id, request_id);
    let mut siblings = proof.iter();
    let (mut position, mut width) = (index, count);
    while width > 1 {
        if position % 2 == 1 {
            hash = inner(crypto, siblings.next()?, &hash);
        } else if position + 1 < width {
            hash = inner(crypto, &hash, siblings.next()?);
        }
        position /= 2;
        width = width.div_ceil(2);
    }
    siblings.next().is_none().then_some(hash)
}
