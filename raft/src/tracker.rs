//! The leader's (and candidate's) bookkeeping over the whole membership: one
//! `Progress` per member, the active configuration, and the votes of an election.

use std::collections::{BTreeMap, BTreeSet};

use crate::progress::Progress;
use crate::quorum::{JointConfig, VoteResult, majority_index};
use crate::types::{ConfState, Index, NodeId};

/// The active membership.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrackerConfig {
    pub voters: JointConfig,
    /// Non-voting members: they replicate the log but never count (thesis §4.2.1).
    pub learners: BTreeSet<NodeId>,
    /// Outgoing voters that become learners when the joint configuration is left.
    pub learners_next: BTreeSet<NodeId>,
    pub auto_leave: bool,
}

impl TrackerConfig {
    pub fn from_conf_state(cs: &ConfState) -> TrackerConfig {
        let cfg = TrackerConfig {
            voters: JointConfig {
                incoming: cs.voters.clone(),
                outgoing: cs.voters_outgoing.clone(),
            },
            learners: cs.learners.clone(),
            learners_next: cs.learners_next.clone(),
            auto_leave: cs.auto_leave,
        };
        cfg.check();
        cfg
    }

    pub fn to_conf_state(&self) -> ConfState {
        ConfState {
            voters: self.voters.incoming.clone(),
            learners: self.learners.clone(),
            voters_outgoing: self.voters.outgoing.clone(),
            learners_next: self.learners_next.clone(),
            auto_leave: self.auto_leave,
        }
    }

    /// Invariants of a membership (mirrors etcd's confchange checks).
    pub fn check(&self) {
        for id in &self.learners {
            assert!(!self.voters.contains(*id), "{id} is both learner and voter");
        }
        for id in &self.learners_next {
            assert!(
                self.voters.outgoing.contains(id),
                "learner_next {id} not outgoing"
            );
            assert!(
                !self.voters.incoming.contains(id),
                "learner_next {id} is incoming"
            );
        }
        if !self.voters.is_joint() {
            assert!(self.learners_next.is_empty(), "learners_next outside joint");
            assert!(!self.auto_leave, "auto_leave outside joint");
        }
    }

    /// Every member: voters of both halves, learners and future learners.
    pub fn members(&self) -> BTreeSet<NodeId> {
        let mut ids = self.voters.ids();
        ids.extend(self.learners.iter().copied());
        ids.extend(self.learners_next.iter().copied());
        ids
    }
}

#[derive(Clone, Debug)]
pub struct ProgressTracker {
    pub config: TrackerConfig,
    pub progress: BTreeMap<NodeId, Progress>,
    pub votes: BTreeMap<NodeId, bool>,
    pub max_inflight_msgs: usize,
    pub max_inflight_bytes: u64,
}

impl ProgressTracker {
    pub fn new(max_inflight_msgs: usize, max_inflight_bytes: u64) -> ProgressTracker {
        ProgressTracker {
            config: TrackerConfig::default(),
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            max_inflight_msgs,
            max_inflight_bytes,
        }
    }

    /// Installs `config`, keeping progress of members that stay and creating fresh
    /// progress (next = `next_index`) for new ones.
    pub fn apply_config(&mut self, config: TrackerConfig, next_index: Index) {
        config.check();
        let members = config.members();
        self.progress.retain(|id, _| members.contains(id));
        for id in &members {
            let (msgs, bytes) = (self.max_inflight_msgs, self.max_inflight_bytes);
            let pr = self.progress.entry(*id).or_insert_with(|| {
                let mut pr = Progress::new(next_index, msgs, bytes);
                // A new member gets a full CheckQuorum round before it counts as
                // silent, so adding one never deposes the leader at once.
                pr.recent_active = true;
                pr
            });
            pr.is_learner = config.learners.contains(id) || config.learners_next.contains(id);
        }
        self.config = config;
    }

    pub fn is_voter(&self, id: NodeId) -> bool {
        self.config.voters.contains(id)
    }

    /// The index replicated on a quorum. With the planted bug
    /// CountLearnersInQuorum, learners are counted as if they were voters.
    pub fn committed(&self, count_learners: bool) -> Index {
        let acked = |id: NodeId| self.progress.get(&id).map(|p| p.match_index);
        if count_learners {
            let mut incoming = self.config.voters.incoming.clone();
            incoming.extend(self.config.learners.iter().copied());
            let cfg = JointConfig {
                incoming,
                outgoing: self.config.voters.outgoing.clone(),
            };
            return cfg.committed_index(acked);
        }
        self.config.voters.committed_index(acked)
    }

    pub fn reset_votes(&mut self) {
        self.votes.clear();
    }

    pub fn record_vote(&mut self, id: NodeId, granted: bool) {
        self.votes.entry(id).or_insert(granted);
    }

    pub fn vote_result(&self) -> VoteResult {
        self.config.voters.vote_result(&self.votes)
    }

    /// Whether a quorum was heard from since the last check (CheckQuorum, thesis
    /// §6.2). The leader always counts itself.
    pub fn quorum_active(&self, self_id: NodeId) -> bool {
        let votes: BTreeMap<NodeId, bool> = self
            .progress
            .iter()
            .filter(|(id, _)| self.is_voter(**id))
            .map(|(id, pr)| (*id, *id == self_id || pr.recent_active))
            .collect();
        self.config.voters.vote_result(&votes) == VoteResult::Won
    }

    /// The newest leader tick such that a quorum acknowledged a heartbeat sent at
    /// or after it (the leader counts itself at `now_tick`).
    pub fn quorum_heartbeat_tick(&self, self_id: NodeId, now_tick: u64) -> u64 {
        let acked = |id: NodeId| {
            if id == self_id {
                return Some(now_tick);
            }
            self.progress.get(&id).map(|p| p.heartbeat_acked_tick)
        };
        let v = &self.config.voters;
        majority_index(&v.incoming, acked).min(majority_index(&v.outgoing, acked))
    }
}
