//! What a leader knows about each follower's log, and the flow control that keeps
//! replication pipelined but bounded.
//!
//! A follower's progress is in one of three states:
//! - `Probe`: the leader does not know where the logs match; it sends one append at
//!   a time and waits for the answer (or a heartbeat response) before the next.
//! - `Replicate`: logs match up to `match_index`; appends are pipelined
//!   optimistically (`next_index` runs ahead) up to the in-flight caps.
//! - `Snapshot`: the follower needs entries the leader has compacted; a snapshot is
//!   streamed and appends pause until it is acknowledged.

use std::collections::VecDeque;

use crate::types::{Index, SnapshotMeta};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    Probe,
    Replicate,
    Snapshot,
}

/// Appends sent but not yet acknowledged, capped by count and by bytes.
#[derive(Clone, Debug)]
pub struct Inflights {
    /// (last index of the message, its size in bytes), oldest first.
    queue: VecDeque<(Index, u64)>,
    bytes: u64,
    max_msgs: usize,
    max_bytes: u64,
}

impl Inflights {
    pub fn new(max_msgs: usize, max_bytes: u64) -> Inflights {
        assert!(max_msgs > 0, "max_inflight_msgs must be positive");
        Inflights {
            queue: VecDeque::new(),
            bytes: 0,
            max_msgs,
            max_bytes,
        }
    }

    pub fn full(&self) -> bool {
        self.queue.len() >= self.max_msgs || self.bytes >= self.max_bytes
    }

    pub fn count(&self) -> usize {
        self.queue.len()
    }

    pub fn add(&mut self, last_index: Index, size_bytes: u64) {
        assert!(!self.full(), "adding to full inflights");
        if let Some((last, _)) = self.queue.back() {
            assert!(
                last_index > *last,
                "inflights out of order: {last_index} after {last}"
            );
        }
        self.queue.push_back((last_index, size_bytes));
        self.bytes += size_bytes;
    }

    /// Frees every message whose last index is `<= index` (acknowledged).
    pub fn free_le(&mut self, index: Index) {
        while let Some(&(last, size)) = self.queue.front() {
            if last > index {
                break;
            }
            self.queue.pop_front();
            self.bytes -= size;
        }
    }

    pub fn free_first_one(&mut self) {
        if let Some((_, size)) = self.queue.pop_front() {
            self.bytes -= size;
        }
    }

    pub fn reset(&mut self) {
        self.queue.clear();
        self.bytes = 0;
    }
}

/// An outgoing snapshot transfer (§7, chunked as in thesis §5.3).
#[derive(Clone, Debug)]
pub struct SnapshotSend {
    pub meta: SnapshotMeta,
    /// The offset the application was asked to read from, until the chunk at it is
    /// acknowledged.
    pub requested: Option<u64>,
    /// Heartbeat rounds without progress; the offer is resent when it grows.
    pub stalled_heartbeats: u32,
}

/// A leader's view of one follower (Figure 2, "Volatile state on leaders").
#[derive(Clone, Debug)]
pub struct Progress {
    pub match_index: Index,
    pub next_index: Index,
    pub state: ProgressState,
    /// In `Probe`: an append is outstanding, wait for its answer.
    pub probe_sent: bool,
    pub inflights: Inflights,
    /// Whether the follower was heard from since the last CheckQuorum round.
    pub recent_active: bool,
    /// Leader tick of the newest heartbeat this follower acknowledged (leases).
    pub heartbeat_acked_tick: u64,
    pub is_learner: bool,
    pub snapshot: Option<SnapshotSend>,
}

impl Progress {
    pub fn new(next_index: Index, max_msgs: usize, max_bytes: u64) -> Progress {
        assert!(next_index >= 1);
        Progress {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            probe_sent: false,
            inflights: Inflights::new(max_msgs, max_bytes),
            recent_active: false,
            heartbeat_acked_tick: 0,
            is_learner: false,
            snapshot: None,
        }
    }

    pub fn check(&self) {
        assert!(
            self.match_index < self.next_index,
            "match {} >= next",
            self.match_index
        );
        assert_eq!(
            self.state == ProgressState::Snapshot,
            self.snapshot.is_some()
        );
        if self.state != ProgressState::Replicate {
            assert_eq!(self.inflights.count(), 0, "inflights outside replicate");
        }
    }

    fn reset_state(&mut self, state: ProgressState) {
        self.probe_sent = false;
        self.snapshot = None;
        self.state = state;
        self.inflights.reset();
    }

    pub fn become_probe(&mut self) {
        // After a snapshot, the follower holds at least the snapshot's index.
        let floor = self.snapshot.as_ref().map_or(0, |s| s.meta.index);
        let next = (self.match_index + 1).max(floor + 1);
        self.reset_state(ProgressState::Probe);
        self.next_index = next;
    }

    pub fn become_replicate(&mut self) {
        self.reset_state(ProgressState::Replicate);
        self.next_index = self.match_index + 1;
    }

    pub fn become_snapshot(&mut self, meta: SnapshotMeta) {
        self.reset_state(ProgressState::Snapshot);
        self.snapshot = Some(SnapshotSend {
            meta,
            requested: None,
            stalled_heartbeats: 0,
        });
    }

    /// Whether appends to this follower must wait.
    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.full(),
            ProgressState::Snapshot => true,
        }
    }

    /// Records an append of `count` entries (`size_bytes` total) just sent.
    pub fn sent_entries(&mut self, count: usize, size_bytes: u64) {
        match self.state {
            ProgressState::Replicate => {
                if count > 0 {
                    let last = self.next_index + count as u64 - 1;
                    self.inflights.add(last, size_bytes);
                    self.next_index = last + 1;
                }
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot => panic!("append sent in snapshot state"),
        }
    }

    /// A successful append response up to `index`. Returns whether it told us
    /// anything new.
    pub fn maybe_update(&mut self, index: Index) -> bool {
        let updated = self.match_index < index;
        if updated {
            self.match_index = index;
            self.probe_sent = false;
        }
        self.next_index = self.next_index.max(index + 1);
        updated
    }

    /// A rejection of the append whose previous index was `rejected`; `hint` is the
    /// highest index that may still match. Returns false if the rejection is stale.
    pub fn maybe_decr_to(&mut self, rejected: Index, hint: Index) -> bool {
        if self.state == ProgressState::Replicate {
            // Out-of-order or duplicate: an append at or below match cannot fail.
            if rejected <= self.match_index {
                return false;
            }
            self.next_index = self.match_index + 1;
            return true;
        }
        // In probe state only the answer to the outstanding probe counts.
        if self.next_index - 1 != rejected {
            return false;
        }
        self.next_index = (rejected.min(hint + 1)).max(self.match_index + 1);
        self.probe_sent = false;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflights_cap_by_count_and_bytes() {
        let mut inf = Inflights::new(3, 100);
        inf.add(1, 10);
        inf.add(2, 10);
        assert!(!inf.full());
        inf.add(3, 10);
        assert!(inf.full());
        inf.free_le(2);
        assert_eq!(inf.count(), 1);
        inf.add(5, 95);
        assert!(inf.full(), "byte cap reached");
        inf.free_first_one();
        assert!(!inf.full());
    }

    #[test]
    fn probe_decrements_to_hint() {
        let mut pr = Progress::new(11, 4, 1024);
        pr.sent_entries(1, 10);
        assert!(pr.is_paused());
        assert!(!pr.maybe_decr_to(5, 2), "stale rejection");
        assert!(pr.maybe_decr_to(10, 4));
        assert_eq!(pr.next_index, 5);
        assert!(!pr.is_paused());
    }

    #[test]
    fn replicate_pipelines_until_full() {
        let mut pr = Progress::new(1, 2, 1024);
        pr.become_replicate();
        pr.sent_entries(3, 30);
        pr.sent_entries(2, 30);
        assert_eq!(pr.next_index, 6);
        assert!(pr.is_paused());
        assert!(pr.maybe_update(3));
        pr.inflights.free_le(3);
        assert!(!pr.is_paused());
        assert!(pr.maybe_decr_to(5, 0));
        assert_eq!(pr.next_index, 4);
    }
}
