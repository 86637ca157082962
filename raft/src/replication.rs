//! Log replication (§5.3): the leader's side (sending appends with flow control,
//! handling responses, advancing commit) and the follower's side (accepting
//! appends and heartbeats).

use crate::error::{Error, StorageError};
use crate::progress::ProgressState;
use crate::raft::Raft;
use crate::storage::Storage;
use crate::types::{Entry, EntryKind, Index, MessageBody, NodeId, RejectHint, Role, Term};

impl<S: Storage> Raft<S> {
    /// Appends entries of the leader's term to its own log; returns the last index.
    /// The leader's own progress moves only when the entries are durable
    /// (`on_persisted`): its vote for them counts no earlier than anyone else's.
    pub(crate) fn append_entries(&mut self, items: Vec<(EntryKind, Vec<u8>)>) -> Index {
        assert_eq!(self.role, Role::Leader);
        let mut index = self.log.last_index();
        let entries: Vec<Entry> = items
            .into_iter()
            .map(|(kind, data)| {
                index += 1;
                Entry {
                    term: self.term,
                    index,
                    kind,
                    data,
                }
            })
            .collect();
        let last = self.log.append(&entries);
        assert_eq!(last, index);
        if planted!(self, AckAppendBeforeDurable) {
            let me = self.id;
            if let Some(pr) = self.tracker.progress.get_mut(&me) {
                pr.maybe_update(last);
            }
            self.maybe_commit();
        }
        last
    }

    /// Leader: propose application data.
    pub fn propose(&mut self, kind: EntryKind, data: Vec<u8>) -> Result<Index, Error> {
        self.check_can_propose()?;
        let index = self.append_entries(vec![(kind, data)]);
        self.bcast_append();
        Ok(index)
    }

    pub(crate) fn check_can_propose(&self) -> Result<(), Error> {
        if self.role != Role::Leader || !self.tracker.progress.contains_key(&self.id) {
            return Err(Error::NotLeader {
                leader: self.leader.filter(|l| *l != self.id),
            });
        }
        if self.lead_transferee.is_some() {
            return Err(Error::TransferInProgress);
        }
        Ok(())
    }

    /// The leader's durable log reached `(index, term)` (called from `advance`).
    pub(crate) fn on_persisted(&mut self, index: Index, term: Term) {
        self.log.stable_to(index, term);
        if self.role != Role::Leader {
            return;
        }
        let persisted = self.log.persisted_index();
        let me = self.id;
        let updated = match self.tracker.progress.get_mut(&me) {
            Some(pr) => pr.maybe_update(persisted),
            None => false,
        };
        if updated && self.maybe_commit() {
            self.bcast_append();
        }
    }

    /// Recomputes the commit index from the quorum's match indexes. Returns whether
    /// it advanced.
    pub(crate) fn maybe_commit(&mut self) -> bool {
        let quorum_index = self
            .tracker
            .committed(planted!(self, CountLearnersInQuorum));
        let advanced = if planted!(self, CommitPreviousTermByCounting) {
            let target = quorum_index.min(self.log.last_index());
            let moved = target > self.log.committed;
            self.log.commit_to(target);
            moved
        } else {
            // §5.4.2: only entries of the current term are committed by counting
            // replicas; earlier ones are committed indirectly with them (Figure 8).
            self.log.maybe_commit(quorum_index, self.term)
        };
        if advanced {
            self.release_pending_reads();
        }
        advanced
    }

    /// Sends every follower what it is missing (or an empty append carrying the
    /// commit index).
    pub(crate) fn bcast_append(&mut self) {
        let ids: Vec<NodeId> = self.tracker.progress.keys().copied().collect();
        for id in ids {
            if id != self.id {
                self.maybe_send_append(id, true);
            }
        }
    }

    /// Sends one append to `to` unless flow control pauses it. With
    /// `send_if_empty` false, an append without entries is not sent. Returns whether
    /// a message went out.
    pub(crate) fn maybe_send_append(&mut self, to: NodeId, send_if_empty: bool) -> bool {
        let Some(pr) = self.tracker.progress.get(&to) else {
            return false;
        };
        if pr.is_paused() {
            return false;
        }
        let prev_index = pr.next_index - 1;
        let prev_term = self.log.term(prev_index);
        let entries = self.log.entries_from(pr.next_index, self.max_msg_bytes);
        let (prev_term, entries) = match (prev_term, entries) {
            (Ok(t), Ok(e)) => (t, e),
            (Err(StorageError::Compacted), _) | (_, Err(StorageError::Compacted)) => {
                // §7: the follower needs entries we have discarded.
                return self.start_snapshot(to);
            }
            (Err(e), _) | (_, Err(e)) => panic!("log lookup for {to} failed: {e}"),
        };
        if entries.is_empty() && !send_if_empty {
            return false;
        }
        let bytes: u64 = entries.iter().map(Entry::size_bytes).sum();
        let pr = self.tracker.progress.get_mut(&to).expect("checked above");
        pr.sent_entries(entries.len(), bytes);
        let commit = self.log.committed;
        let body = MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        };
        self.send(self.message(to, body));
        true
    }

    pub(crate) fn handle_append_resp(
        &mut self,
        from: NodeId,
        index: Index,
        reject: Option<RejectHint>,
    ) {
        let Some(pr) = self.tracker.progress.get(&from) else {
            return;
        };
        if let Some(hint) = reject {
            self.handle_append_reject(from, index, hint);
            return;
        }
        let was_paused = pr.is_paused();
        let first_index = self.log.first_index();
        let pr = self.tracker.progress.get_mut(&from).expect("present");
        let probe_answered = pr.match_index == index && pr.state == ProgressState::Probe;
        if !pr.maybe_update(index) && !probe_answered {
            return;
        }
        match pr.state {
            ProgressState::Probe => pr.become_replicate(),
            ProgressState::Snapshot => {
                let installed = pr
                    .snapshot
                    .as_ref()
                    .is_some_and(|s| pr.match_index >= s.meta.index);
                if installed || pr.match_index + 1 >= first_index {
                    pr.become_probe();
                    pr.become_replicate();
                }
            }
            ProgressState::Replicate => pr.inflights.free_le(index),
        }
        if self.maybe_commit() {
            self.bcast_append();
        } else if was_paused {
            self.maybe_send_append(from, true);
        }
        while self.maybe_send_append(from, false) {}
        let caught_up = self.tracker.progress[&from].match_index == self.log.last_index();
        if self.lead_transferee == Some(from) && caught_up {
            self.send_timeout_now(from);
        }
    }

    fn handle_append_reject(&mut self, from: NodeId, rejected: Index, hint: RejectHint) {
        // Fast backtracking: the follower's hint names the last entry that may
        // still match; skip our own entries whose terms exceed its term too, so a
        // whole conflicting term costs one round trip, not one per entry.
        let mut probe = hint.index;
        if hint.term > 0 {
            probe = self.log.find_conflict_by_term(hint.index, hint.term).0;
        }
        let pr = self.tracker.progress.get_mut(&from).expect("present");
        if pr.maybe_decr_to(rejected, probe) {
            if pr.state == ProgressState::Replicate {
                pr.become_probe();
            }
            self.maybe_send_append(from, true);
        }
    }

    /// Follower: AppendEntries receiver (Figure 2).
    pub(crate) fn handle_append(
        &mut self,
        from: NodeId,
        prev_index: Index,
        prev_term: Term,
        entries: &[Entry],
        commit: Index,
    ) {
        if prev_index < self.log.committed {
            // Everything up to our commit index already matches the leader (Log
            // Matching plus Leader Completeness); answer with it.
            let body = MessageBody::AppendResp {
                index: self.log.committed,
                reject: None,
            };
            self.send(self.message(from, body));
            return;
        }
        let truncate_always = planted!(self, TruncateOnNonConflictingAppend);
        match self
            .log
            .maybe_append(prev_index, prev_term, commit, entries, truncate_always)
        {
            Some(last_new) => {
                // Log Matching now holds up to last_new: we hold the leader's entries.
                if let Some(e) = entries.last() {
                    assert!(
                        self.log.match_term(e.index, e.term),
                        "appended {e:?} not in log"
                    );
                }
                let body = MessageBody::AppendResp {
                    index: last_new,
                    reject: None,
                };
                self.send(self.message(from, body));
            }
            None => {
                let probe = prev_index.min(self.log.last_index());
                let (index, term) = self.log.find_conflict_by_term(probe, prev_term);
                let reject = Some(RejectHint { index, term });
                let body = MessageBody::AppendResp {
                    index: prev_index,
                    reject,
                };
                self.send(self.message(from, body));
            }
        }
    }

    /// Follower: a heartbeat carries the commit index, capped by the leader at what
    /// it knows we hold.
    pub(crate) fn handle_heartbeat(
        &mut self,
        from: NodeId,
        commit: Index,
        context: Vec<u8>,
        sent_tick: u64,
    ) {
        let last = self.log.last_index();
        if commit > last {
            // A leader sends at most the match index it heard from us, so we once
            // acknowledged `commit` as durable and our log has since lost it. What
            // sits at those indices now may be a stale entry resurrected from
            // under a lost suffix: commit nothing and report.
            self.durability_fault.get_or_insert_with(|| {
                format!("leader {from} says this node acknowledged entry {commit} but its log ends at {last}")
            });
            return;
        }
        self.log.commit_to(commit);
        let body = MessageBody::HeartbeatResp { context, sent_tick };
        self.send(self.message(from, body));
    }

    /// Leader: heartbeats to every follower; `context` names a ReadIndex batch.
    pub(crate) fn bcast_heartbeat(&mut self, context: Option<Vec<u8>>) {
        let context = context
            .or_else(|| self.read_only.last_pending().cloned())
            .unwrap_or_default();
        let ids: Vec<NodeId> = self.tracker.progress.keys().copied().collect();
        for id in ids {
            if id == self.id {
                continue;
            }
            // Never tell a follower to commit beyond what it is known to hold.
            let commit = self.tracker.progress[&id]
                .match_index
                .min(self.log.committed);
            let body = MessageBody::Heartbeat {
                commit,
                context: context.clone(),
                sent_tick: self.now_tick,
            };
            self.send(self.message(id, body));
        }
    }

    pub(crate) fn handle_heartbeat_resp(&mut self, from: NodeId, context: Vec<u8>, sent_tick: u64) {
        let last_index = self.log.last_index();
        let Some(pr) = self.tracker.progress.get_mut(&from) else {
            return;
        };
        pr.probe_sent = false;
        pr.heartbeat_acked_tick = pr.heartbeat_acked_tick.max(sent_tick);
        if pr.state == ProgressState::Replicate && pr.inflights.full() {
            // The follower is alive: let one more append through in case an
            // acknowledgement was lost.
            pr.inflights.free_first_one();
        }
        if pr.match_index < last_index || pr.state == ProgressState::Probe {
            self.maybe_send_append(from, true);
        }
        if !context.is_empty() {
            self.handle_read_ack(from, &context);
        }
    }
}
