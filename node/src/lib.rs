//! `ryu-node`: the replicated database node. One Raft member ([`ryu_raft::RawNode`]
//! over the durable [`ryu_raft::DiskLog`]) and one engine ([`ryu_engine::Db`]) on the
//! same [`ryu_io::Disk`], driven as a deterministic state machine so that the
//! simulator and the production binary run the same code.
//!
//! # Driving contract
//!
//! Inputs: [`Node::tick`] (every tick interval of the node's clock, catching up
//! missed ticks before any other input), [`Node::step`] (a peer's [`Envelope`]),
//! [`Node::request`] (a client [`Request`] with a caller-chosen id). Then the Ready
//! cycle: [`Node::ready_begin`] hands out what may be sent at once, and
//! [`Node::ready_finish`] makes the batch durable, sends what had to wait for it,
//! applies committed entries and answers clients. Outputs accumulate until
//! [`Node::take_output`]. A `NodeError` from `ready_finish` means: drop the node and
//! [`Node::open`] its directory again.
//!
//! # Semantics
//!
//! - **Writes** (put, delete, compare-and-set, optimistic transactions) are proposed
//!   on the leader as one [`Command::Txn`] each; followers answer
//!   [`Response::NotLeader`] with the leader's id. The commit timestamp is the Raft
//!   index: the engine applies entry `i` at timestamp `i`
//!   ([`ryu_engine::Db::apply_at_begin`]). Checks (the compare of a CAS, the read set
//!   of a transaction) are evaluated when the entry is applied, against the state just
//!   before it, identically on every replica. A client hears back only after its entry
//!   is applied and durable in the engine.
//! - **Reads** are linearizable through ReadIndex (or the leader's lease, when the
//!   Raft config enables lease reads) on any member, leaders, followers and learners
//!   alike; [`Consistency::Stale`] reads the local applied state.
//! - **Answers are exact.** `Committed`/`Aborted` say what happened at which index;
//!   `Unavailable` and `NotLeader` mean the request had no effect. A request whose
//!   node crashes gets no answer: its outcome is unknown to the client.
//! - **Recovery.** Every applied entry also rewrites the node's [`AppliedState`]
//!   (applied index, term, membership) in the engine, atomically with the entry's
//!   writes, so after a crash the engine says exactly which entry it reflects and Raft
//!   replays the committed entries after it.
//!
//! # Directory
//!
//! `CLUSTER` (the cluster id, hex, with a crc32), `raft/` ([`ryu_raft::DiskLog`]), `db/`
//! ([`ryu_engine::Db`]).
//!
//! # Example
//!
//! ```
//! use std::path::Path;
//! use std::sync::Arc;
//! use rand_chacha::rand_core::SeedableRng;
//! use ryu_node::{Consistency, Node, NodeOptions, Request, Response};
//!
//! let disk: ryu_io::DynDisk = Arc::new(ryu_sim::SimDisk::new(7));
//! let rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
//! let mut node = Node::open(disk, Path::new("n1"), NodeOptions::new(1, vec![1]), rng).unwrap();
//! // A single voter elects itself after an election timeout.
//! while node.status().role != ryu_raft::Role::Leader {
//!     node.tick();
//!     node.run_ready().unwrap();
//! }
//! node.request(1, Request::Put { key: b"k".to_vec(), value: b"v".to_vec() });
//! node.run_ready().unwrap();
//! node.request(2, Request::Get { key: b"k".to_vec(), consistency: Consistency::Linearizable });
//! node.run_ready().unwrap();
//! let replies = node.take_output().replies;
//! assert!(matches!(replies[0], (1, Response::Committed { .. })));
//! assert!(matches!(&replies[1], (2, Response::Value { value: Some(v), .. }) if v == b"v"));
//! ```

mod api;
pub mod backups;
pub mod command;
mod node;
pub mod snapshots;

pub use api::{
    BackupResult, BackupStrategy, Consistency, Envelope, MembershipChange, Output, Payload,
    Request, Response, Status,
};
pub use backups::{BackupTarget, BackupWork, ClusterManifest, ClusterStatus, Report};
pub use command::{AppliedState, Command, increment, parse_integer};
#[cfg(feature = "planted-bugs")]
pub use node::PlantedBug;
pub use node::{
    CLUSTER_FILE, DB_DIR, MAX_COMMAND_BYTES, MAX_GET_MANY, Node, NodeError, NodeOptions, RAFT_DIR,
};
pub use snapshots::restore_cluster_node;
