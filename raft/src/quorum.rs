//! Quorum arithmetic: majorities of one voter set, and joint configurations that
//! need a majority of two (thesis §4.3).

use std::collections::{BTreeMap, BTreeSet};

use crate::types::{Index, NodeId};

/// The outcome of counting votes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    /// Not decided: some voters have not answered.
    Pending,
    Lost,
    Won,
}

/// Index (or tick) acknowledged by a majority of `voters`, given each voter's
/// acknowledged value. Missing acks count as 0. An empty set is no constraint, so it
/// answers `u64::MAX` (it composes with `min` in a joint configuration).
pub fn majority_index(voters: &BTreeSet<NodeId>, acked: impl Fn(NodeId) -> Option<Index>) -> Index {
    if voters.is_empty() {
        return Index::MAX;
    }
    let mut values: Vec<Index> = voters.iter().map(|id| acked(*id).unwrap_or(0)).collect();
    values.sort_unstable_by(|a, b| b.cmp(a));
    // With values sorted descending, the (n/2 + 1)-th largest is held by a majority.
    let quorum = values.len() / 2 + 1;
    values[quorum - 1]
}

/// Counts votes of one voter set.
pub fn majority_vote(voters: &BTreeSet<NodeId>, votes: &BTreeMap<NodeId, bool>) -> VoteResult {
    if voters.is_empty() {
        return VoteResult::Won;
    }
    let (mut yes, mut missing) = (0, 0);
    for id in voters {
        match votes.get(id) {
            Some(true) => yes += 1,
            Some(false) => {}
            None => missing += 1,
        }
    }
    let quorum = voters.len() / 2 + 1;
    if yes >= quorum {
        VoteResult::Won
    } else if yes + missing >= quorum {
        VoteResult::Pending
    } else {
        VoteResult::Lost
    }
}

/// Voters of a possibly joint configuration: `outgoing` is empty unless joint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JointConfig {
    pub incoming: BTreeSet<NodeId>,
    pub outgoing: BTreeSet<NodeId>,
}

impl JointConfig {
    pub fn is_joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.incoming.contains(&id) || self.outgoing.contains(&id)
    }

    /// Every voter of either half.
    pub fn ids(&self) -> BTreeSet<NodeId> {
        self.incoming.union(&self.outgoing).copied().collect()
    }

    /// The largest index acknowledged by a majority of both halves.
    pub fn committed_index(&self, acked: impl Fn(NodeId) -> Option<Index>) -> Index {
        let a = majority_index(&self.incoming, &acked);
        let b = majority_index(&self.outgoing, &acked);
        a.min(b)
    }

    /// A decision needs both halves.
    pub fn vote_result(&self, votes: &BTreeMap<NodeId, bool>) -> VoteResult {
        let a = majority_vote(&self.incoming, votes);
        let b = majority_vote(&self.outgoing, votes);
        match (a, b) {
            (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
            (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
            _ => VoteResult::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[u64]) -> BTreeSet<NodeId> {
        ids.iter().copied().map(NodeId).collect()
    }

    #[test]
    fn majority_index_picks_the_median_of_acks() {
        let acks = |id: NodeId| Some([0, 5, 3, 9, 1, 7][id.0 as usize]);
        assert_eq!(majority_index(&set(&[1, 2, 3]), acks), 5);
        assert_eq!(majority_index(&set(&[1, 2, 3, 4]), acks), 3);
        assert_eq!(majority_index(&set(&[1, 2, 3, 4, 5]), acks), 5);
        assert_eq!(majority_index(&set(&[]), acks), Index::MAX);
    }

    #[test]
    fn joint_needs_both_majorities() {
        let cfg = JointConfig {
            incoming: set(&[1, 2, 3]),
            outgoing: set(&[3, 4, 5]),
        };
        let acks = |id: NodeId| Some([0, 9, 9, 2, 1, 1][id.0 as usize]);
        assert_eq!(cfg.committed_index(acks), 1);
        let mut votes = BTreeMap::new();
        votes.insert(NodeId(1), true);
        votes.insert(NodeId(2), true);
        assert_eq!(cfg.vote_result(&votes), VoteResult::Pending);
        votes.insert(NodeId(4), false);
        votes.insert(NodeId(5), false);
        assert_eq!(cfg.vote_result(&votes), VoteResult::Lost);
    }

    #[test]
    fn votes_in_a_single_majority() {
        let voters = set(&[1, 2, 3]);
        let mut votes = BTreeMap::new();
        votes.insert(NodeId(1), true);
        assert_eq!(majority_vote(&voters, &votes), VoteResult::Pending);
        votes.insert(NodeId(2), false);
        assert_eq!(majority_vote(&voters, &votes), VoteResult::Pending);
        votes.insert(NodeId(3), true);
        assert_eq!(majority_vote(&voters, &votes), VoteResult::Won);
    }
}
