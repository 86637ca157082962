//! The application's handle on one Raft node: feed it ticks and messages, take a
//! `Ready` of work, do that work, call `advance`.
//!
//! Handling a `Ready`, in this order:
//! 1. `messages` may be sent at once (even before anything is written).
//! 2. Write `received_chunks` durably (staged snapshot payload); if `snapshot` is
//!    set, install it (the staged payload of that snapshot) and reset the log to it.
//! 3. Append `entries` (truncating any conflicting suffix) and write `hard_state`;
//!    sync if `must_sync`.
//! 4. Only now send `persisted_messages`: they promise what steps 2-3 made durable.
//! 5. Apply `committed_entries` (calling `apply_conf_change` for membership
//!    entries); serve `read_states` once applied up to their index; answer
//!    `snapshot_requests` with `send_snapshot_chunk` (at any time).
//! 6. Call `advance`. Between `ready` and `advance` the node may be ticked and
//!    stepped, but `ready` may not be called again.

use rand_chacha::ChaCha8Rng;

use crate::config::Config;
use crate::error::Error;
use crate::raft::Raft;
use crate::storage::Storage;
use crate::types::{
    ConfChange, ConfState, Entry, EntryKind, HardState, Index, Message, NodeId, ReadState,
    ReceivedChunk, SnapshotChunk, SnapshotMeta, SnapshotRequest, SoftState, Term,
};

/// Work for the application. See the module documentation for the order.
#[derive(Debug, Default)]
pub struct Ready {
    /// Leader and role, if they changed since the last `Ready`.
    pub soft_state: Option<SoftState>,
    /// Term, vote and commit to persist, if they changed.
    pub hard_state: Option<HardState>,
    /// Entries to append durably.
    pub entries: Vec<Entry>,
    /// A received snapshot to install (its payload arrived in `received_chunks`).
    pub snapshot: Option<SnapshotMeta>,
    /// Snapshot payload received from the leader, to write durably.
    pub received_chunks: Vec<ReceivedChunk>,
    /// Leader: snapshot payload the application must read and pass back.
    pub snapshot_requests: Vec<SnapshotRequest>,
    /// Committed entries to apply, in order.
    pub committed_entries: Vec<Entry>,
    /// Messages that may be sent immediately.
    pub messages: Vec<Message>,
    /// Messages that may be sent only after this `Ready`'s writes are durable.
    pub persisted_messages: Vec<Message>,
    /// Reads that are safe once applied up to their index.
    pub read_states: Vec<ReadState>,
    /// Whether the writes must be synced before `persisted_messages` leave.
    pub must_sync: bool,
}

/// What `advance` must acknowledge about the `Ready` handed out.
#[derive(Debug, Clone, Copy)]
struct Handed {
    last_entry: Option<(Index, Term)>,
    snapshot_index: Option<Index>,
    applied_index: Option<Index>,
}

#[derive(Debug)]
pub struct RawNode<S: Storage> {
    raft: Raft<S>,
    prev_soft: SoftState,
    prev_hard: HardState,
    max_committed_bytes: u64,
    handed: Option<Handed>,
}

impl<S: Storage> RawNode<S> {
    /// Opens a node over `storage` (fresh or restarted). All randomness (election
    /// timeouts) comes from `rng`.
    pub fn new(config: &Config, storage: S, rng: ChaCha8Rng) -> Result<RawNode<S>, Error> {
        let raft = Raft::new(config, storage, rng)?;
        let prev_soft = raft.soft_state();
        let prev_hard = raft.hard_state();
        Ok(RawNode {
            raft,
            prev_soft,
            prev_hard,
            max_committed_bytes: config.max_committed_bytes_per_ready,
            handed: None,
        })
    }

    /// The state machine, read-only (for inspection and checkers).
    pub fn raft(&self) -> &Raft<S> {
        &self.raft
    }

    pub fn id(&self) -> NodeId {
        self.raft.id
    }

    pub fn storage(&self) -> &S {
        &self.raft.log.storage
    }

    /// The storage, for the application's writes (steps 2-3 of a `Ready`) and
    /// compaction. It must never drop entries above the applied index.
    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.raft.log.storage
    }

    pub fn soft_state(&self) -> SoftState {
        self.raft.soft_state()
    }

    pub fn hard_state(&self) -> HardState {
        self.raft.hard_state()
    }

    pub fn tick(&mut self) {
        self.raft.tick();
    }

    /// Delivers a message from another node. Messages from unknown nodes are still
    /// handled (a node may learn of its own membership late).
    pub fn step(&mut self, m: Message) {
        self.raft.step(m);
    }

    /// Starts an election now (tests, tools, or an operator's nudge).
    pub fn campaign(&mut self) {
        self.raft.hup(false);
    }

    pub fn propose(&mut self, data: Vec<u8>) -> Result<Index, Error> {
        self.raft.propose(EntryKind::Normal, data)
    }

    pub fn propose_conf_change(&mut self, cc: &ConfChange) -> Result<Index, Error> {
        self.raft.propose_conf_change(cc)
    }

    pub fn apply_conf_change(&mut self, cc: &ConfChange) -> Result<ConfState, Error> {
        self.raft.apply_conf_change(cc)
    }

    pub fn read_index(&mut self, context: Vec<u8>) -> Result<(), Error> {
        self.raft.read_index(context)
    }

    pub fn transfer_leader(&mut self, target: NodeId) -> Result<(), Error> {
        self.raft.transfer_leader(target)
    }

    /// Leader: passes a chunk of snapshot payload a `SnapshotRequest` asked for.
    pub fn send_snapshot_chunk(&mut self, to: NodeId, chunk: SnapshotChunk) -> Result<(), Error> {
        self.raft.send_snapshot_chunk(to, chunk)
    }

    /// After a restart: the application still holds, durably, the first
    /// `received` bytes of snapshot `meta` streamed by `from`, so a transfer from
    /// the same sender resumes there instead of at zero.
    pub fn resume_snapshot_receive(&mut self, from: NodeId, meta: SnapshotMeta, received: u64) {
        if meta.index > self.raft.log.committed {
            self.raft.incoming_snapshot = Some(crate::raft::IncomingSnapshot {
                from,
                meta,
                received,
            });
        }
    }

    /// Leader: the snapshot being streamed to `to` can no longer be read.
    pub fn abort_snapshot(&mut self, to: NodeId) {
        self.raft.abort_snapshot(to);
    }

    /// Evidence that this node's durable log lost entries it had acknowledged (a
    /// disk that lies, or a storage bug). Once set, the node must not go on: the
    /// application stops it and reports the damage; restarting on the same log is
    /// only safe if the loss is repaired (in practice the node is replaced).
    pub fn durability_fault(&self) -> Option<&str> {
        self.raft.durability_fault.as_deref()
    }

    /// Whether `ready` has work. Always false while a `Ready` awaits `advance`.
    pub fn has_ready(&self) -> bool {
        if self.handed.is_some() {
            return false;
        }
        let r = &self.raft;
        r.soft_state() != self.prev_soft
            || r.hard_state() != self.prev_hard
            || !r.log.unstable_entries().is_empty()
            || r.log.unstable.snapshot.is_some()
            || !r.msgs.is_empty()
            || !r.msgs_after_persist.is_empty()
            || !r.read_states.is_empty()
            || !r.snapshot_requests.is_empty()
            || !r.received_chunks.is_empty()
            || r.log.has_next_committed()
    }

    /// Takes the pending work. Must be followed by `advance` before the next call.
    pub fn ready(&mut self) -> Ready {
        assert!(self.handed.is_none(), "ready called twice without advance");
        let r = &mut self.raft;
        let entries = r.log.unstable_entries().to_vec();
        let snapshot = r.log.unstable.snapshot.clone();
        let committed_entries = r.log.next_committed(self.max_committed_bytes);
        if let Some(last) = committed_entries.last() {
            r.log.applying = last.index;
        }
        let soft = r.soft_state();
        let hard = r.hard_state();
        let rd = Ready {
            soft_state: (soft != self.prev_soft).then_some(soft),
            hard_state: (hard != self.prev_hard).then_some(hard),
            must_sync: !entries.is_empty()
                || hard.term != self.prev_hard.term
                || hard.vote != self.prev_hard.vote
                || snapshot.is_some(),
            snapshot_requests: std::mem::take(&mut r.snapshot_requests),
            received_chunks: std::mem::take(&mut r.received_chunks),
            messages: std::mem::take(&mut r.msgs),
            persisted_messages: std::mem::take(&mut r.msgs_after_persist),
            read_states: std::mem::take(&mut r.read_states),
            entries,
            snapshot,
            committed_entries,
        };
        self.prev_soft = soft;
        self.prev_hard = hard;
        self.handed = Some(Handed {
            last_entry: rd.entries.last().map(|e| (e.index, e.term)),
            snapshot_index: rd.snapshot.as_ref().map(|s| s.index),
            applied_index: rd.committed_entries.last().map(|e| e.index),
        });
        rd
    }

    /// Acknowledges that the last `Ready` was handled: its writes are durable and
    /// its committed entries applied.
    pub fn advance(&mut self) {
        let handed = self.handed.take().expect("advance without ready");
        if let Some(index) = handed.snapshot_index {
            self.raft.log.stable_snap_to(index);
            self.raft.on_applied(index);
        }
        if let Some((index, term)) = handed.last_entry {
            self.raft.on_persisted(index, term);
        }
        if let Some(index) = handed.applied_index {
            self.raft.on_applied(index);
        }
        self.raft.check();
    }
}
