//! Expected failures of the core's API surface, as typed errors.

use std::fmt;

use crate::types::{Index, NodeId};

/// Errors a [`crate::Storage`] may return. Only `Compacted` and `Unavailable` are
/// expected conditions the core handles; anything else means the storage broke its
/// contract and the core stops (see the trait's documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StorageError {
    /// The requested index is below the first index: compacted into a snapshot.
    Compacted,
    /// The requested index is above the last index.
    Unavailable,
    /// No snapshot can be produced right now; the core will retry later.
    SnapshotTemporarilyUnavailable,
    /// Bytes read back do not decode. `place` names where.
    Corrupted { place: String },
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::Compacted => write!(f, "log compacted"),
            StorageError::Unavailable => write!(f, "log index unavailable"),
            StorageError::SnapshotTemporarilyUnavailable => {
                write!(f, "snapshot temporarily unavailable")
            }
            StorageError::Corrupted { place } => write!(f, "corrupted: {place}"),
        }
    }
}

impl std::error::Error for StorageError {}

/// Errors of `RawNode` calls.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is unusable; the text says which field and why.
    InvalidConfig(&'static str),
    /// Storage returned an unexpected error while opening the node.
    Storage(StorageError),
    /// Proposals go to the leader; this node is not it. `leader` is a hint.
    NotLeader { leader: Option<NodeId> },
    /// The leader is handing over leadership and accepts no proposals (§3.10).
    TransferInProgress,
    /// A membership change is still pending (not yet applied), or the leader has
    /// not yet applied its term's no-op (thesis §4.1 bug fix); retry later.
    ConfChangePending { pending_index: Index },
    /// The change is not valid against the current configuration.
    ConfChange(String),
    /// A snapshot chunk handed in by the application no longer matches what the
    /// core is sending (the follower moved on, or leadership was lost).
    StaleSnapshotChunk,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidConfig(why) => write!(f, "invalid config: {why}"),
            Error::Storage(e) => write!(f, "storage: {e}"),
            Error::NotLeader { leader: Some(l) } => write!(f, "not leader (leader is {l})"),
            Error::NotLeader { leader: None } => write!(f, "not leader (no known leader)"),
            Error::TransferInProgress => write!(f, "leadership transfer in progress"),
            Error::ConfChangePending { pending_index } => {
                write!(f, "configuration change pending at index {pending_index}")
            }
            Error::ConfChange(why) => write!(f, "invalid configuration change: {why}"),
            Error::StaleSnapshotChunk => write!(f, "stale snapshot chunk"),
        }
    }
}

impl std::error::Error for Error {}

impl From<StorageError> for Error {
    fn from(e: StorageError) -> Error {
        Error::Storage(e)
    }
}
