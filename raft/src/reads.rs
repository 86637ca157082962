//! Linearizable reads without writing to the log (thesis §6.4): ReadIndex, with a
//! round of heartbeats, and lease reads, without one.

use std::collections::BTreeMap;

use crate::error::Error;
use crate::quorum::VoteResult;
use crate::raft::Raft;
use crate::storage::Storage;
use crate::types::{Index, MessageBody, NodeId, ReadState, Role};

impl<S: Storage> Raft<S> {
    /// Requests a read identified by `context`; a `ReadState` appears in a later
    /// `Ready` once it is safe. Followers forward the request to their leader.
    pub fn read_index(&mut self, context: Vec<u8>) -> Result<(), Error> {
        match self.role {
            Role::Leader => {
                self.handle_read_request(self.id, context);
                Ok(())
            }
            _ => match self.leader {
                Some(leader) => {
                    let body = MessageBody::ReadIndex { context };
                    self.send(self.message(leader, body));
                    Ok(())
                }
                None => Err(Error::NotLeader { leader: None }),
            },
        }
    }

    /// Whether the leader has committed an entry of its own term. Until then its
    /// commit index may lag the true one (thesis §6.4 step 1).
    pub(crate) fn committed_in_term(&self) -> bool {
        self.log.term_or_zero(self.log.committed) == self.term
    }

    pub(crate) fn handle_read_request(&mut self, from: NodeId, context: Vec<u8>) {
        assert_eq!(self.role, Role::Leader);
        if !self.committed_in_term() && !planted!(self, ReadIndexBeforeCommitInTerm) {
            self.pending_reads.push((from, context));
            return;
        }
        let commit = self.log.committed;
        let single = self.tracker.config.voters.ids().len() == 1 && self.tracker.is_voter(self.id);
        if single || self.lease_valid() {
            self.respond_read(from, context, commit);
            return;
        }
        self.read_only.add(from, context.clone(), commit, self.id);
        self.bcast_heartbeat(Some(context));
    }

    /// Lease reads (thesis §6.4.1): a quorum acknowledged a heartbeat sent at tick
    /// `t`; each of them refuses votes for `election_tick` of its own ticks after
    /// receiving it, so with clocks drifting by at most `max_clock_drift_ticks` no
    /// other leader can exist before `t + election_tick - drift`. Not during a
    /// transfer: TimeoutNow deliberately overrides the followers' stickiness.
    pub(crate) fn lease_valid(&self) -> bool {
        let Some(lease) = self.lease_read else {
            return false;
        };
        if !self.check_quorum || self.lead_transferee.is_some() || self.sent_timeout_now {
            return false;
        }
        let acked_tick = self.tracker.quorum_heartbeat_tick(self.id, self.now_tick);
        // Tick 0 means "never acknowledged in this term".
        acked_tick > 0
            && self.now_tick < acked_tick + self.election_tick - lease.max_clock_drift_ticks
    }

    fn respond_read(&mut self, from: NodeId, context: Vec<u8>, index: Index) {
        if from == self.id {
            self.read_states.push(ReadState { index, context });
        } else {
            let body = MessageBody::ReadIndexResp { context, index };
            self.send(self.message(from, body));
        }
    }

    /// A heartbeat response echoed a ReadIndex context.
    pub(crate) fn handle_read_ack(&mut self, from: NodeId, context: &[u8]) {
        let Some(acks) = self.read_only.recv_ack(from, context) else {
            return;
        };
        let votes: BTreeMap<NodeId, bool> = acks.iter().map(|id| (*id, true)).collect();
        if self.tracker.config.voters.vote_result(&votes) != VoteResult::Won {
            return;
        }
        for req in self.read_only.advance(context) {
            self.respond_read(req.from, req.context, req.index);
        }
    }

    /// Serves the reads that waited for the first commit of the term.
    pub(crate) fn release_pending_reads(&mut self) {
        if self.pending_reads.is_empty() || !self.committed_in_term() {
            return;
        }
        for (from, context) in std::mem::take(&mut self.pending_reads) {
            self.handle_read_request(from, context);
        }
    }

    pub(crate) fn send_timeout_now(&mut self, target: NodeId) {
        self.sent_timeout_now = true;
        self.send(self.message(target, MessageBody::TimeoutNow));
    }

    /// Leader: hands leadership to `target` (thesis §3.10). Proposals are refused
    /// until the transfer completes or an election timeout passes.
    pub fn transfer_leader(&mut self, target: NodeId) -> Result<(), Error> {
        if self.role != Role::Leader {
            return match self.leader {
                Some(leader) => {
                    self.send(self.message(leader, MessageBody::TransferLeader { target }));
                    Ok(())
                }
                None => Err(Error::NotLeader { leader: None }),
            };
        }
        if !self.tracker.is_voter(target) {
            return Err(Error::ConfChange(format!(
                "transfer target {target} is not a voter"
            )));
        }
        if target == self.id || self.lead_transferee == Some(target) {
            return Ok(());
        }
        self.lead_transferee = Some(target);
        // The transfer gets one election timeout to finish.
        self.election_elapsed = 0;
        if self.tracker.progress[&target].match_index == self.log.last_index() {
            self.send_timeout_now(target);
        } else {
            self.maybe_send_append(target, true);
        }
        Ok(())
    }
}
