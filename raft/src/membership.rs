//! Membership changes as log entries. A change takes effect on a node when its
//! application applies the entry (`apply_conf_change`), as in etcd; safety comes
//! from allowing at most one unapplied change at a time, and none before the
//! leader's no-op of its term is applied (thesis §4.1). A joint configuration with
//! `auto_leave` is left by a change the leader proposes once it has applied it.

use crate::confchange::next_config;
use crate::error::Error;
use crate::raft::Raft;
use crate::storage::Storage;
use crate::types::{ConfChange, ConfState, EntryKind, Index, Role};

impl<S: Storage> Raft<S> {
    /// Leader: proposes a membership change.
    pub fn propose_conf_change(&mut self, cc: &ConfChange) -> Result<Index, Error> {
        self.check_can_propose()?;
        if self.pending_conf_index > self.log.applied {
            return Err(Error::ConfChangePending {
                pending_index: self.pending_conf_index,
            });
        }
        // Validate against the configuration it will apply to: every earlier
        // change is applied, so that is the current one.
        next_config(&self.tracker.config, cc)?;
        let index = self.append_entries(vec![(EntryKind::ConfChange, cc.encode())]);
        self.pending_conf_index = index;
        self.bcast_append();
        Ok(index)
    }

    /// Applies a committed membership change; the application calls this when it
    /// applies the entry and stores the returned `ConfState` with its state.
    pub fn apply_conf_change(&mut self, cc: &ConfChange) -> Result<ConfState, Error> {
        let next = next_config(&self.tracker.config, cc)?;
        self.tracker.apply_config(next, self.log.last_index() + 1);
        self.after_conf_change();
        Ok(self.tracker.config.to_conf_state())
    }

    fn after_conf_change(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        if !self.tracker.is_voter(self.id) {
            // Removed or demoted: a leader outside the configuration steps down and
            // lets the remaining voters elect one of their own.
            self.become_follower(self.term, None);
            return;
        }
        if let Some(t) = self.lead_transferee
            && !self.tracker.is_voter(t)
        {
            self.lead_transferee = None;
        }
        // The quorum changed: commit may move, and new members need a probe now
        // rather than at the next heartbeat. Broadcasting does both (paused
        // followers are skipped by flow control).
        self.maybe_commit();
        self.bcast_append();
    }

    /// The application applied entries up to `index` (called from `advance`).
    pub(crate) fn on_applied(&mut self, index: Index) {
        self.log.applied_to(index);
        let cfg = &self.tracker.config;
        let leave = self.role == Role::Leader
            && cfg.voters.is_joint()
            && cfg.auto_leave
            && self.log.applied >= self.pending_conf_index;
        if leave {
            // The joint configuration is in force everywhere it matters; leave it.
            let cc = ConfChange::leave_joint();
            let index = self.append_entries(vec![(EntryKind::ConfChange, cc.encode())]);
            self.pending_conf_index = index;
            self.bcast_append();
        }
    }
}
