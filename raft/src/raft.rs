//! The Raft state machine of one node: roles, terms, elections and message
//! dispatch. Replication, snapshots and reads live in sibling modules as further
//! `impl Raft` blocks; `RawNode` wraps this with the `Ready`/`advance` protocol.
//!
//! Nothing here performs I/O: every effect is a message pushed to `msgs` (may leave
//! now) or `msgs_after_persist` (may leave only once the state it depends on is
//! durable), or state the application reads through `Ready`.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::config::{Config, LeaseRead};
use crate::error::{Error, StorageError};
use crate::log::RaftLog;
use crate::progress::Progress;
use crate::quorum::VoteResult;
use crate::read_only::ReadOnly;
use crate::storage::Storage;
use crate::tracker::{ProgressTracker, TrackerConfig};
use crate::types::{
    EntryKind, HardState, Index, Message, MessageBody, NodeId, ReadState, ReceivedChunk, Role,
    SnapshotMeta, SnapshotRequest, SoftState, Term,
};

/// A snapshot being received from a leader, identified by (`from`, index, term).
#[derive(Clone, Debug)]
pub struct IncomingSnapshot {
    pub from: NodeId,
    pub meta: SnapshotMeta,
    /// Bytes held so far; the next chunk must start here.
    pub received: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CampaignKind {
    PreVote,
    Election,
    /// Started by TimeoutNow: skips pre-vote and overrides leader stickiness.
    Transfer,
}

/// One node's protocol state. Applications drive it through `RawNode`; its fields
/// are public for inspection by checkers and tests, not for mutation.
#[derive(Debug)]
pub struct Raft<S: Storage> {
    pub id: NodeId,
    pub term: Term,
    pub vote: Option<NodeId>,
    pub log: RaftLog<S>,
    pub tracker: ProgressTracker,
    pub role: Role,
    pub leader: Option<NodeId>,
    /// The target of an ongoing leadership transfer (thesis §3.10).
    pub lead_transferee: Option<NodeId>,
    /// Index of the newest membership change (or of the term's no-op) the leader
    /// appended; another change may be proposed only once it is applied.
    pub pending_conf_index: Index,
    pub(crate) read_only: ReadOnly,
    /// Whether this leader sent TimeoutNow in its term. A delayed TimeoutNow can
    /// start an election that overrides stickiness at any later time, so from then
    /// on the lease cannot be trusted for the rest of the term.
    pub(crate) sent_timeout_now: bool,
    /// Set on a restart (a durable term exists) when lease reads are configured:
    /// until an election timeout has passed, the node refuses votes as if it had
    /// just heard from a leader. It may have acknowledged a heartbeat just before
    /// crashing, and a leader may be serving lease reads on the strength of that
    /// acknowledgement. A fresh node acknowledged nothing and is not guarded.
    pub(crate) restart_guard: bool,
    /// Reads that arrived before the leader committed in its term.
    pub(crate) pending_reads: Vec<(NodeId, Vec<u8>)>,
    pub read_states: Vec<ReadState>,
    pub msgs: Vec<Message>,
    pub msgs_after_persist: Vec<Message>,
    pub snapshot_requests: Vec<SnapshotRequest>,
    pub received_chunks: Vec<ReceivedChunk>,
    pub incoming_snapshot: Option<IncomingSnapshot>,
    pub(crate) election_elapsed: u64,
    pub(crate) heartbeat_elapsed: u64,
    pub(crate) randomized_election_timeout: u64,
    /// Ticks since start; dates heartbeats for lease reads.
    pub(crate) now_tick: u64,
    pub(crate) election_tick: u64,
    pub(crate) heartbeat_tick: u64,
    pub(crate) pre_vote: bool,
    pub(crate) check_quorum: bool,
    pub(crate) lease_read: Option<LeaseRead>,
    pub(crate) max_msg_bytes: u64,
    pub(crate) max_chunk_bytes: u64,
    /// Set when this node finds that its log lost entries it had acknowledged as
    /// durable (its disk lied). The core then refuses to act on the evidence; the
    /// application must stop the node (see [`crate::RawNode::durability_fault`]).
    pub durability_fault: Option<String>,
    rng: ChaCha8Rng,
    #[cfg(feature = "planted-bugs")]
    pub(crate) planted_bug: Option<crate::bugs::PlantedBug>,
}

impl<S: Storage> Raft<S> {
    pub fn new(config: &Config, storage: S, rng: ChaCha8Rng) -> Result<Raft<S>, Error> {
        config.validate()?;
        let (log, tracker, hs) = Self::load(config, storage)?;
        let mut raft = Raft {
            id: config.id,
            term: hs.term,
            vote: hs.vote,
            log,
            tracker,
            role: Role::Follower,
            leader: None,
            lead_transferee: None,
            pending_conf_index: 0,
            sent_timeout_now: false,
            restart_guard: config.lease_read.is_some() && hs.term > 0,
            read_only: ReadOnly::default(),
            durability_fault: None,
            pending_reads: Vec::new(),
            read_states: Vec::new(),
            msgs: Vec::new(),
            msgs_after_persist: Vec::new(),
            snapshot_requests: Vec::new(),
            received_chunks: Vec::new(),
            incoming_snapshot: None,
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: config.election_tick,
            now_tick: 0,
            election_tick: config.election_tick,
            heartbeat_tick: config.heartbeat_tick,
            pre_vote: config.pre_vote,
            check_quorum: config.check_quorum,
            lease_read: config.lease_read,
            max_msg_bytes: config.max_size_per_msg_bytes,
            max_chunk_bytes: config.max_snapshot_chunk_bytes,
            rng,
            #[cfg(feature = "planted-bugs")]
            planted_bug: config.planted_bug,
        };
        raft.become_follower(hs.term, None);
        raft.check();
        Ok(raft)
    }

    /// Opens the durable state: log, membership and hard state, checked against
    /// each other.
    fn load(
        config: &Config,
        storage: S,
    ) -> Result<(RaftLog<S>, ProgressTracker, HardState), Error> {
        let state = storage.initial_state()?;
        let mut log = RaftLog::new(storage);
        let mut tracker = ProgressTracker::new(config.max_inflight_msgs, config.max_inflight_bytes);
        let members = TrackerConfig::from_conf_state(&state.conf_state);
        tracker.apply_config(members, log.last_index() + 1);
        let hs = state.hard_state;
        if hs != HardState::default() {
            if hs.commit < log.committed || hs.commit > log.last_index() {
                let place = format!("hard state commit {} outside the stored log", hs.commit);
                return Err(Error::Storage(StorageError::Corrupted { place }));
            }
            log.committed = hs.commit;
        }
        let applied = config.applied.max(log.applied);
        if applied > log.committed {
            return Err(Error::InvalidConfig("applied index beyond commit"));
        }
        log.applied = applied;
        log.applying = applied;
        Ok((log, tracker, hs))
    }

    /// Invariants that hold between any two calls.
    pub fn check(&self) {
        self.log.check();
        assert!(self.vote.is_none() || self.term > 0, "vote without a term");
        if self.role == Role::Leader {
            assert_eq!(self.leader, Some(self.id));
            assert_eq!(self.vote, Some(self.id), "a leader voted for itself");
            let last = self.log.last_index();
            for (id, pr) in &self.tracker.progress {
                assert!(
                    pr.match_index <= last,
                    "{id} matched {} beyond {last}",
                    pr.match_index
                );
            }
            assert!(
                self.pending_conf_index <= last,
                "pending conf change beyond the log"
            );
        } else {
            assert!(
                self.lead_transferee.is_none(),
                "only a leader transfers leadership"
            );
            assert!(self.read_only.is_empty(), "only a leader confirms reads");
            assert!(self.pending_reads.is_empty(), "only a leader queues reads");
        }
        if self.role == Role::Candidate {
            assert_eq!(self.vote, Some(self.id));
        }
        for pr in self.tracker.progress.values() {
            pr.check();
        }
    }

    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed,
        }
    }

    pub fn soft_state(&self) -> SoftState {
        SoftState {
            leader: self.leader,
            role: self.role,
        }
    }

    /// Builds a message from this node at the current term.
    pub(crate) fn message(&self, to: NodeId, body: MessageBody) -> Message {
        Message {
            from: self.id,
            to,
            term: self.term,
            body,
        }
    }

    /// Queues `m`. Responses that promise something about durable state (a vote, an
    /// appended entry, a received snapshot chunk) and vote requests (which rely on
    /// the candidate's own durable vote) wait until the current `Ready` is persisted.
    pub(crate) fn send(&mut self, m: Message) {
        assert_ne!(m.to, self.id, "message to self: {m:?}");
        let after_persist = match m.body {
            MessageBody::VoteResp { .. } => !planted!(self, ReplyBeforeHardStateDurable),
            MessageBody::AppendResp { .. } => !planted!(self, AckAppendBeforeDurable),
            MessageBody::Vote { .. } | MessageBody::SnapshotChunkResp { .. } => true,
            _ => false,
        };
        if after_persist {
            self.msgs_after_persist.push(m);
        } else {
            self.msgs.push(m);
        }
    }

    /// Whether this node may become leader: a voter, not installing a snapshot.
    pub fn promotable(&self) -> bool {
        self.tracker.is_voter(self.id) && self.log.unstable.snapshot.is_none()
    }

    fn reset_randomized_election_timeout(&mut self) {
        // §5.2: randomized timeouts make split votes rare; drawn from the injected
        // RNG so a run replays from its seed.
        let extra = self.rng.random_range(0..self.election_tick);
        self.randomized_election_timeout = self.election_tick + extra;
    }

    /// Common to every role change: a new term forgets the vote.
    fn reset(&mut self, term: Term) {
        if self.term != term {
            assert!(
                term > self.term,
                "term moving back from {} to {term}",
                self.term
            );
            self.term = term;
            self.vote = None;
        }
        self.leader = None;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.reset_randomized_election_timeout();
        self.lead_transferee = None;
        self.tracker.reset_votes();
        let next = self.log.last_index() + 1;
        let persisted = self.log.persisted_index();
        let (msgs, bytes) = (
            self.tracker.max_inflight_msgs,
            self.tracker.max_inflight_bytes,
        );
        for (id, pr) in self.tracker.progress.iter_mut() {
            let is_learner = pr.is_learner;
            *pr = Progress::new(next, msgs, bytes);
            pr.is_learner = is_learner;
            if *id == self.id {
                pr.match_index = persisted.min(next - 1);
            }
        }
        self.pending_conf_index = 0;
        self.sent_timeout_now = false;
        self.read_only.reset();
        self.pending_reads.clear();
    }

    pub(crate) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        self.reset(term);
        self.role = Role::Follower;
        self.leader = leader;
    }

    fn become_pre_candidate(&mut self) {
        assert_ne!(self.role, Role::Leader, "leader cannot pre-campaign");
        // A pre-candidate changes neither term nor vote (thesis §9.6).
        self.role = Role::PreCandidate;
        self.tracker.reset_votes();
        self.leader = None;
    }

    fn become_candidate(&mut self) {
        assert_ne!(self.role, Role::Leader, "leader cannot campaign");
        self.reset(self.term + 1);
        self.vote = Some(self.id);
        self.role = Role::Candidate;
    }

    fn become_leader(&mut self) {
        assert_eq!(
            self.role,
            Role::Candidate,
            "only a candidate becomes leader"
        );
        self.reset(self.term);
        self.role = Role::Leader;
        self.leader = Some(self.id);
        let me = self.id;
        if let Some(pr) = self.tracker.progress.get_mut(&me) {
            pr.become_replicate();
            pr.recent_active = true;
        }
        // §8 / thesis §6.4: a no-op at the start of the term lets the leader commit
        // (and learn the commit index) without waiting for a client proposal.
        let noop_index = self.append_entries(vec![(EntryKind::Noop, Vec::new())]);
        // Thesis §4.1: no membership change until this term's no-op is applied.
        self.pending_conf_index = noop_index;
        if planted!(self, ConfChangeBeforeNoopCommitted) {
            self.pending_conf_index = 0;
        }
    }

    /// Advances the logical clock by one tick.
    pub fn tick(&mut self) {
        self.now_tick += 1;
        match self.role {
            Role::Leader => self.tick_heartbeat(),
            _ => self.tick_election(),
        }
    }

    fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.election_elapsed >= self.election_tick {
            self.restart_guard = false;
        }
        if self.promotable() && self.election_elapsed >= self.randomized_election_timeout {
            self.election_elapsed = 0;
            self.hup(false);
        }
    }

    fn tick_heartbeat(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.election_tick {
            self.election_elapsed = 0;
            if self.check_quorum {
                if !self.tracker.quorum_active(self.id) {
                    // Thesis §6.2: a leader cut off from a quorum steps down.
                    self.become_follower(self.term, None);
                    return;
                }
                let me = self.id;
                for (id, pr) in self.tracker.progress.iter_mut() {
                    pr.recent_active = *id == me;
                }
            }
            // Thesis §3.10: a transfer that did not finish within an election
            // timeout is abandoned, and proposals are accepted again.
            self.lead_transferee = None;
        }
        if self.heartbeat_elapsed >= self.heartbeat_tick {
            self.heartbeat_elapsed = 0;
            self.bcast_heartbeat(None);
            self.retry_stalled_snapshots();
        }
    }

    /// Starts an election if allowed.
    pub(crate) fn hup(&mut self, transfer: bool) {
        if self.role == Role::Leader || !self.promotable() {
            return;
        }
        // A configuration change that is committed but not applied may remove this
        // node or change the quorum; wait until it is applied.
        if self.has_unapplied_conf_change() {
            return;
        }
        let kind = if transfer {
            CampaignKind::Transfer
        } else if self.pre_vote {
            CampaignKind::PreVote
        } else {
            CampaignKind::Election
        };
        self.campaign(kind);
    }

    fn has_unapplied_conf_change(&self) -> bool {
        let lo = self.log.applied + 1;
        if lo > self.log.committed {
            return false;
        }
        let entries = self
            .log
            .slice(lo, self.log.committed + 1, u64::MAX)
            .unwrap_or_default();
        entries.iter().any(|e| e.kind == EntryKind::ConfChange)
    }

    pub(crate) fn campaign(&mut self, kind: CampaignKind) {
        // Campaigning, we stop backing any leader we may have acknowledged.
        self.restart_guard = false;
        let vote_term = if kind == CampaignKind::PreVote {
            self.become_pre_candidate();
            self.term + 1
        } else {
            self.become_candidate();
            self.term
        };
        let me = self.id;
        self.tracker.record_vote(me, true);
        if self.poll_votes(kind == CampaignKind::PreVote) {
            return;
        }
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        for id in self.tracker.config.voters.ids() {
            if id == me {
                continue;
            }
            let body = match kind {
                CampaignKind::PreVote => MessageBody::PreVote {
                    last_index,
                    last_term,
                },
                _ => MessageBody::Vote {
                    last_index,
                    last_term,
                    transfer: kind == CampaignKind::Transfer,
                },
            };
            self.send(Message {
                from: me,
                to: id,
                term: vote_term,
                body,
            });
        }
    }

    /// Acts on the election outcome so far; returns whether it was decided.
    fn poll_votes(&mut self, pre: bool) -> bool {
        match self.tracker.vote_result() {
            VoteResult::Won if pre => {
                self.campaign(CampaignKind::Election);
                true
            }
            VoteResult::Won => {
                self.become_leader();
                self.bcast_append();
                true
            }
            VoteResult::Lost => {
                self.become_follower(self.term, None);
                true
            }
            VoteResult::Pending => false,
        }
    }

    /// Handles one message from another node.
    pub fn step(&mut self, m: Message) {
        assert_eq!(m.to, self.id, "misdelivered {m:?}");
        if m.term > self.term {
            if !self.step_higher_term(&m) {
                return;
            }
        } else if m.term < self.term {
            self.step_lower_term(&m);
            return;
        }
        match m.body {
            MessageBody::PreVote {
                last_index,
                last_term,
            } => self.handle_vote_request(&m, last_index, last_term, true),
            MessageBody::Vote {
                last_index,
                last_term,
                ..
            } => self.handle_vote_request(&m, last_index, last_term, false),
            _ => match self.role {
                Role::Leader => self.step_leader(m),
                Role::Candidate | Role::PreCandidate => self.step_candidate(m),
                Role::Follower => self.step_follower(m),
            },
        }
        self.check();
    }

    /// A message from a newer term. Returns whether to go on handling it.
    fn step_higher_term(&mut self, m: &Message) -> bool {
        let force = matches!(m.body, MessageBody::Vote { transfer: true, .. });
        let is_vote = matches!(
            m.body,
            MessageBody::PreVote { .. } | MessageBody::Vote { .. }
        );
        let heard_recently = self.leader.is_some() || self.restart_guard;
        let in_lease =
            self.check_quorum && heard_recently && self.election_elapsed < self.election_tick;
        if is_vote && in_lease && !force {
            // Leader stickiness (thesis §4.2.3): we heard from a leader within the
            // minimum election timeout, so this candidate is disruptive; ignore it.
            return false;
        }
        match m.body {
            // A pre-vote changes nothing; a granted pre-vote response carries the
            // term the pre-candidate would campaign in, not a newer real term.
            MessageBody::PreVote { .. } | MessageBody::PreVoteResp { reject: false } => {}
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::SnapshotChunk(_) => self.become_follower(m.term, Some(m.from)),
            _ => self.become_follower(m.term, None),
        }
        true
    }

    /// A message from an older term: tell stale leaders and pre-candidates our term
    /// so they step down; ignore the rest (§5.1).
    fn step_lower_term(&mut self, m: &Message) {
        match m.body {
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::SnapshotChunk(_)
                if self.check_quorum || self.pre_vote =>
            {
                // Without this, a partitioned node with a higher term that ignores
                // votes (pre-vote, stickiness) could never learn of the old leader's
                // existence or depose it.
                let body = MessageBody::AppendResp {
                    index: 0,
                    reject: None,
                };
                self.send(self.message(m.from, body));
            }
            MessageBody::PreVote { .. } => {
                let body = MessageBody::PreVoteResp { reject: true };
                self.send(self.message(m.from, body));
            }
            _ => {}
        }
    }

    fn handle_vote_request(&mut self, m: &Message, last_index: Index, last_term: Term, pre: bool) {
        let can_vote = self.vote == Some(m.from)
            || (self.vote.is_none() && self.leader.is_none())
            || (pre && m.term > self.term);
        let up_to_date =
            self.log.is_up_to_date(last_index, last_term) || planted!(self, GrantVoteToStaleLog);
        let grant = can_vote && up_to_date;
        let body = if pre {
            MessageBody::PreVoteResp { reject: !grant }
        } else {
            MessageBody::VoteResp { reject: !grant }
        };
        // A granted pre-vote answers in the pre-candidate's future term so it can
        // count it; anything else answers in our own term.
        let term = if grant { m.term } else { self.term };
        if grant && !pre {
            assert_eq!(m.term, self.term);
            self.election_elapsed = 0;
            self.vote = Some(m.from);
        }
        self.send(Message {
            from: self.id,
            to: m.from,
            term,
            body,
        });
    }

    fn step_candidate(&mut self, m: Message) {
        match m.body {
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::SnapshotChunk(_) => {
                // §5.2: a leader of our term exists; return to follower.
                self.become_follower(m.term, Some(m.from));
                self.step_follower(m);
            }
            MessageBody::PreVoteResp { reject } if self.role == Role::PreCandidate => {
                self.tracker.record_vote(m.from, !reject);
                self.poll_votes(true);
            }
            MessageBody::VoteResp { reject } if self.role == Role::Candidate => {
                self.tracker.record_vote(m.from, !reject);
                self.poll_votes(false);
            }
            _ => {}
        }
    }

    fn step_follower(&mut self, m: Message) {
        match m.body {
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                self.heard_from_leader(m.from);
                self.handle_append(m.from, prev_index, prev_term, &entries, commit);
            }
            MessageBody::Heartbeat {
                commit,
                context,
                sent_tick,
            } => {
                self.heard_from_leader(m.from);
                self.handle_heartbeat(m.from, commit, context, sent_tick);
            }
            MessageBody::SnapshotChunk(chunk) => {
                self.heard_from_leader(m.from);
                self.handle_snapshot_chunk(m.from, chunk);
            }
            MessageBody::TimeoutNow => self.hup(true),
            MessageBody::ReadIndexResp { context, index } => {
                self.read_states.push(ReadState { index, context });
            }
            MessageBody::TransferLeader { target } => {
                if let Some(leader) = self.leader {
                    let body = MessageBody::TransferLeader { target };
                    self.send(self.message(leader, body));
                }
            }
            _ => {}
        }
    }

    fn heard_from_leader(&mut self, from: NodeId) {
        self.election_elapsed = 0;
        self.leader = Some(from);
    }

    fn step_leader(&mut self, m: Message) {
        if let Some(pr) = self.tracker.progress.get_mut(&m.from) {
            pr.recent_active = true;
        }
        match m.body {
            MessageBody::AppendResp { index, reject } => {
                self.handle_append_resp(m.from, index, reject)
            }
            MessageBody::HeartbeatResp { context, sent_tick } => {
                self.handle_heartbeat_resp(m.from, context, sent_tick)
            }
            MessageBody::SnapshotChunkResp {
                index,
                term,
                next_offset,
            } => self.handle_snapshot_chunk_resp(m.from, index, term, next_offset),
            MessageBody::ReadIndex { context } => self.handle_read_request(m.from, context),
            MessageBody::TransferLeader { target } => {
                // A forwarded request; errors only matter to a local caller.
                let _ = self.transfer_leader(target);
            }
            _ => {}
        }
    }
}
