//! `ryu-raft`: a hand-written, sans-IO Raft consensus core.
//!
//! This crate owns the protocol: elections (with pre-vote and leader stickiness),
//! replication with flow control and fast backtracking, the commit rule, ReadIndex
//! and lease reads, leadership transfer, membership change (joint consensus and one
//! server at a time), learners, and chunked, resumable snapshot streaming. It
//! performs no I/O, reads no clock, spawns no thread and draws randomness only from
//! the seeded RNG it is given: the application (the `node` crate, or the simulator)
//! feeds it ticks and messages, and carries out the work it returns in a [`Ready`].
//! The durable log is the application's, seen through the narrow [`Storage`] trait;
//! snapshot payloads are opaque bytes the application produces and consumes.
//!
//! References: "In Search of an Understandable Consensus Algorithm" (the paper,
//! cited as §n) and Ongaro's thesis "Consensus: Bridging Theory and Practice"
//! (cited as thesis §n).
//!
//! # Example: three nodes in memory elect a leader and commit one entry
//!
//! ```
//! use rand::SeedableRng;
//! use rand_chacha::ChaCha8Rng;
//! use ryu_raft::{Config, ConfState, MemStorage, Message, NodeId, RawNode, Role, Storage};
//!
//! let voters = ConfState::with_voters([1, 2, 3]);
//! let mut nodes: Vec<RawNode<MemStorage>> = (1..=3)
//!     .map(|id| {
//!         let storage = MemStorage::new(voters.clone());
//!         let rng = ChaCha8Rng::seed_from_u64(id);
//!         RawNode::new(&Config::new(id), storage, rng).unwrap()
//!     })
//!     .collect();
//!
//! // Handle every node's Ready until the cluster is quiet; return what was applied.
//! fn stabilize(nodes: &mut [RawNode<MemStorage>], applied: &mut Vec<Vec<u8>>) {
//!     loop {
//!         let mut inbox: Vec<Message> = Vec::new();
//!         for node in nodes.iter_mut() {
//!             if !node.has_ready() {
//!                 continue;
//!             }
//!             let mut rd = node.ready();
//!             inbox.append(&mut rd.messages);
//!             node.storage_mut().append(&rd.entries);
//!             if let Some(hs) = rd.hard_state {
//!                 node.storage_mut().set_hard_state(hs);
//!             }
//!             inbox.append(&mut rd.persisted_messages); // now durable
//!             for e in &rd.committed_entries {
//!                 if node.id() == NodeId(1) && !e.data.is_empty() {
//!                     applied.push(e.data.clone());
//!                 }
//!             }
//!             node.advance();
//!         }
//!         if inbox.is_empty() {
//!             return;
//!         }
//!         for m in inbox {
//!             nodes[(m.to.0 - 1) as usize].step(m);
//!         }
//!     }
//! }
//!
//! let mut applied = Vec::new();
//! nodes[0].campaign();
//! stabilize(&mut nodes, &mut applied);
//! assert_eq!(nodes[0].soft_state().role, Role::Leader);
//!
//! nodes[0].propose(b"hello".to_vec()).unwrap();
//! stabilize(&mut nodes, &mut applied);
//! assert_eq!(applied, vec![b"hello".to_vec()]);
//! for node in &nodes {
//!     // The no-op of term 1 at index 1, the proposal at index 2, on every node.
//!     assert_eq!(node.storage().last_index().unwrap(), 2);
//!     assert_eq!(node.hard_state().commit, 2);
//! }
//! ```
//!
//! # Contracts the application keeps
//!
//! - Handle a [`Ready`] in the order documented on [`RawNode`]'s module: write
//!   entries, hard state and received snapshot chunks durably before sending
//!   `persisted_messages`; then apply `committed_entries` and call
//!   [`RawNode::advance`].
//! - Apply membership entries through [`RawNode::apply_conf_change`] and keep the
//!   returned [`ConfState`] with the state machine: on restart,
//!   `Storage::initial_state` must return the membership as of [`Config::applied`].
//! - Serve [`SnapshotRequest`]s with [`RawNode::send_snapshot_chunk`], serving
//!   identical bytes for one snapshot identity; stage received chunks durably and
//!   install the payload when `Ready::snapshot` names it.
//! - Proposals and transfers go to the leader; followers return
//!   [`Error::NotLeader`] with a hint. Read requests may be made on any node (they
//!   are forwarded); one whose answer never comes must be retried by the caller.
//!
//! # Planted bugs
//!
//! With the `planted-bugs` feature, `Config::planted_bug` selects one classic
//! Raft bug (see `PlantedBug`) so the simulator can prove it catches it. Without
//! the feature the switch and its checks do not exist.

#[macro_use]
mod bugs;
mod confchange;
mod config;
pub mod disk_log;
mod error;
mod log;
mod membership;
mod progress;
mod quorum;
mod raft;
mod raw_node;
mod read_only;
mod reads;
mod replication;
mod snapshot;
mod storage;
mod tracker;
mod types;

#[cfg(feature = "planted-bugs")]
pub use bugs::PlantedBug;
pub use config::{Config, LeaseRead};
pub use disk_log::{DiskLog, DiskLogOptions, LogError};
pub use error::{Error, StorageError};
pub use log::RaftLog;
pub use progress::{Progress, ProgressState};
pub use quorum::{JointConfig, VoteResult};
pub use raft::{IncomingSnapshot, Raft};
pub use raw_node::{RawNode, Ready};
pub use storage::{InitialState, MemStorage, Storage, limit_size};
pub use tracker::{ProgressTracker, TrackerConfig};
pub use types::{
    ConfChange, ConfChangeKind, ConfChangeSingle, ConfChangeTransition, ConfState,
    ENTRY_OVERHEAD_BYTES, Entry, EntryKind, HardState, Index, Message, MessageBody, NodeId,
    ReadState, ReceivedChunk, RejectHint, Role, SnapshotChunk, SnapshotMeta, SnapshotRequest,
    SoftState, Term,
};
