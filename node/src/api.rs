//! What clients ask a node and what it answers, and what nodes send each other.

use ryu_raft::{Index, Message, Role, Term};
use serde::{Deserialize, Serialize};

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Consistency {
    /// Linearizable: the node confirms with the leader (ReadIndex, or the leader's
    /// lease when configured) and waits until it has applied that far.
    Linearizable,
    /// Whatever this node has applied: may be stale, never torn.
    Stale,
}

/// A client request. Keys starting with byte `0xff` are reserved for the node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Get {
        key: Vec<u8>,
        consistency: Consistency,
    },
    /// Several keys read from one snapshot (one ReadIndex, one engine read): the
    /// values all held together at the answer's index.
    GetMany {
        keys: Vec<Vec<u8>>,
        consistency: Consistency,
    },
    /// Keys in `[start, end)` (`end: None` = to the end of the client key space), at
    /// most `limit` of them, in key order.
    Scan {
        start: Vec<u8>,
        end: Option<Vec<u8>>,
        limit: usize,
        consistency: Consistency,
    },
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        key: Vec<u8>,
    },
    /// Set `key` to `new` (`None` deletes) only if its value is `expected` (`None`:
    /// the key must not exist).
    Cas {
        key: Vec<u8>,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    },
    /// An optimistic transaction's commit: apply `writes` atomically only if every
    /// key in `reads` still has the value the transaction read (`None`: absent).
    /// Validation happens when the entry is applied, identically on every replica, so
    /// a committed transaction is serializable at its Raft index.
    Txn {
        reads: Vec<(Vec<u8>, Option<Vec<u8>>)>,
        writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    },
    /// Role, term and indexes of this node.
    Status,
    /// Take a backup named `id` (1-64 of `[A-Za-z0-9_-]`) by `strategy`.
    Backup {
        id: String,
        strategy: BackupStrategy,
    },
    /// Change the membership by one node (sent to the leader). A new node starts
    /// empty with the bootstrap membership and catches up by log or snapshot.
    ChangeMembership(MembershipChange),
    // New variants go last: postcard encodes a variant by its position.
    /// Add `delta` to the integer stored at `key` (absent counts as 0), atomically
    /// when the entry is applied: Redis's INCRBY, which never conflicts. Answered with
    /// [`Response::Incremented`], or `Invalid` when the value is not an integer or the
    /// sum overflows (then nothing is written).
    Incr {
        key: Vec<u8>,
        delta: i64,
    },
}

/// One membership change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipChange {
    AddVoter(u64),
    AddLearner(u64),
    Remove(u64),
}

/// Which node backs up what (see [`crate::backups`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackupStrategy {
    /// Sent to the leader: it backs up its own applied state.
    Leader,
    /// Sent to a follower: it backs up, or aborts if its role changes meanwhile.
    Follower,
    /// Sent to the leader: every node backs up at one barrier index.
    Cluster { quorum_only: bool },
}

/// A finished leader or follower backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupResult {
    pub id: String,
    pub strategy: BackupStrategy,
    pub node: u64,
    /// The backup holds exactly the state after applying entry `index` (of `term`).
    pub index: Index,
    pub term: Term,
    /// The state digest (see [`crate::backups`]).
    pub digest: u64,
    /// The backup's directory in the backup store.
    pub dir: String,
}

impl Request {
    /// Whether this request changes state (goes through the Raft log).
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Request::Put { .. }
                | Request::Delete { .. }
                | Request::Cas { .. }
                | Request::Txn { .. }
                | Request::ChangeMembership(_)
        )
    }
}

/// A node's answer. Every request gets exactly one, unless the node crashes first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// A read's result, as of applied index `index`.
    Value {
        value: Option<Vec<u8>>,
        index: Index,
    },
    Entries {
        entries: Vec<(Vec<u8>, Vec<u8>)>,
        index: Index,
    },
    /// A `GetMany`'s values, in the order of its keys, as of applied index `index`.
    Values {
        values: Vec<Option<Vec<u8>>>,
        index: Index,
    },
    /// The write was applied at `index` (its commit timestamp).
    Committed {
        index: Index,
    },
    /// A check failed when the entry was applied at `index`: nothing was written.
    /// `key` is the first key whose value differed; `current` its value then.
    Aborted {
        index: Index,
        key: Vec<u8>,
        current: Option<Vec<u8>>,
    },
    /// Writes (and linearizable reads when no leader is known) go to the leader.
    NotLeader {
        leader: Option<u64>,
    },
    /// The request definitely had no effect; retrying is safe. `reason` says why
    /// (no leader, leadership changed, the entry was overwritten, timeout of a read).
    Unavailable {
        reason: String,
    },
    /// A write whose outcome this node cannot tell: it may or may not have been
    /// applied (the node skipped its entry by installing a snapshot). Read before
    /// retrying.
    OutcomeUnknown {
        reason: String,
    },
    /// The request is malformed (reserved key, too large); retrying will not help.
    Invalid {
        reason: String,
    },
    Status(Status),
    BackupDone(BackupResult),
    /// A cluster backup finished (complete or failed: see its status).
    ClusterBackupDone(Box<crate::backups::ClusterManifest>),
    /// The backup did not complete; nothing is reported as a backup.
    BackupFailed {
        reason: String,
    },
    // New variants go last: postcard encodes a variant by its position.
    /// An [`Request::Incr`] was applied at `index`; `value` is the key's new integer.
    Incremented {
        value: i64,
        index: Index,
    },
}

/// A node's view of itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub id: u64,
    pub cluster_id: u64,
    pub role: Role,
    pub leader: Option<u64>,
    pub term: Term,
    pub commit: Index,
    pub applied: Index,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
}

/// What one node sends another. `cluster` is the sender's cluster id: a node drops
/// anything from another cluster (a restored cluster has a new id, so it can never
/// talk to the one it was restored from).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub cluster: u64,
    pub from: u64,
    pub to: u64,
    pub payload: Payload,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    Raft(Message),
    /// A node's part of a cluster backup, to the leader.
    BackupReport(crate::backups::Report),
    /// The leader has finished cluster backup `backup_id`: stop resending.
    BackupAck {
        backup_id: String,
    },
}

/// Everything a node produced since the last [`crate::Node::take_output`].
#[derive(Debug, Default)]
pub struct Output {
    pub messages: Vec<Envelope>,
    /// `(request id, response)`, in the order they became final.
    pub replies: Vec<(u64, Response)>,
}
