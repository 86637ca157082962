//! The durable log as the core sees it: a narrow, read-only view of what the
//! application has already made durable. The core never writes to it; the
//! application writes what `Ready` tells it to and only then calls `advance`.
//!
//! `MemStorage` is an in-memory implementation for tests and examples.

use crate::error::StorageError;
use crate::types::{ConfState, Entry, HardState, Index, SnapshotMeta, Term};

/// What a node restarts from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InitialState {
    pub hard_state: HardState,
    /// Membership as of the application's applied index (the snapshot's, plus every
    /// applied configuration change after it).
    pub conf_state: ConfState,
}

/// Read-only view of the durable log owned by the application.
///
/// The log held is the contiguous range `first_index()..=last_index()`, preceded by
/// a snapshot at `first_index() - 1` whose term `term()` still answers. An empty
/// log has `last_index() == first_index() - 1`.
///
/// Contract (the core relies on it and panics if it is broken, because a storage
/// that lost what it promised to keep cannot be reasoned about):
/// - `term(i)` answers for `first_index() - 1 ..= last_index()`, returns
///   `Compacted` below and `Unavailable` above.
/// - `entries(lo, hi, max_bytes)` returns `[lo, hi)` in order, stopping before the
///   entry that would push the total of [`Entry::size_bytes`] over `max_bytes` but
///   always returning at least one entry when `lo < hi`.
/// - `snapshot_meta()` describes the newest snapshot whose payload the application
///   can stream; its index is at least `first_index() - 1`.
/// - Corruption should be detected when the storage is opened, not here.
pub trait Storage {
    fn initial_state(&self) -> Result<InitialState, StorageError>;
    fn entries(&self, lo: Index, hi: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError>;
    fn term(&self, index: Index) -> Result<Term, StorageError>;
    fn first_index(&self) -> Result<Index, StorageError>;
    fn last_index(&self) -> Result<Index, StorageError>;
    fn snapshot_meta(&self) -> Result<SnapshotMeta, StorageError>;
}

/// Keeps a prefix of `entries` whose total size fits `max_bytes`, but at least one.
pub fn limit_size(entries: &mut Vec<Entry>, max_bytes: u64) {
    let mut total: u64 = 0;
    let mut keep = 0;
    for e in entries.iter() {
        total += e.size_bytes();
        if keep > 0 && total > max_bytes {
            break;
        }
        keep += 1;
    }
    entries.truncate(keep);
}

/// In-memory storage. `entries[0]` is a placeholder at the snapshot's index and term,
/// so `term(first_index - 1)` always answers.
#[derive(Clone, Debug)]
pub struct MemStorage {
    hard_state: HardState,
    conf_state: ConfState,
    snapshot: SnapshotMeta,
    snapshot_data: Vec<u8>,
    entries: Vec<Entry>,
}

impl MemStorage {
    /// A fresh log for a node whose initial membership is `conf_state`.
    pub fn new(conf_state: ConfState) -> MemStorage {
        let snapshot = SnapshotMeta {
            index: 0,
            term: 0,
            conf_state: conf_state.clone(),
        };
        MemStorage {
            hard_state: HardState::default(),
            conf_state,
            snapshot,
            snapshot_data: Vec::new(),
            entries: vec![placeholder(0, 0)],
        }
    }

    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    pub fn set_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// Records the membership as of the applied index (the application calls this
    /// after applying a configuration change).
    pub fn set_conf_state(&mut self, cs: ConfState) {
        self.conf_state = cs;
    }

    /// The payload of the current snapshot.
    pub fn snapshot_data(&self) -> &[u8] {
        &self.snapshot_data
    }

    fn offset(&self) -> Index {
        self.entries[0].index
    }

    /// Appends entries, truncating any conflicting suffix first. Entries must
    /// start at or below `last_index() + 1` and above the snapshot.
    pub fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        assert!(
            first.index > self.offset(),
            "append below snapshot at {}",
            first.index
        );
        let last = self.entries.last().map(|e| e.index).unwrap_or(0);
        assert!(
            first.index <= last + 1,
            "gap: append {} after {}",
            first.index,
            last
        );
        self.entries
            .truncate((first.index - self.offset()) as usize);
        self.entries.extend_from_slice(entries);
        for pair in self.entries.windows(2) {
            assert_eq!(pair[0].index + 1, pair[1].index);
        }
    }

    /// Records a snapshot of the state machine at `index` (which must be in the
    /// log) with payload `data`. Does not compact.
    pub fn create_snapshot(&mut self, index: Index, conf_state: ConfState, data: Vec<u8>) {
        assert!(
            index >= self.snapshot.index,
            "snapshot {index} older than current"
        );
        assert!(
            index <= self.hard_state.commit,
            "snapshot {index} above commit"
        );
        let term = self.term(index).expect("snapshot index in log");
        self.snapshot = SnapshotMeta {
            index,
            term,
            conf_state,
        };
        self.snapshot_data = data;
    }

    /// Discards entries up to and including `index`; they must be covered by the
    /// snapshot.
    pub fn compact(&mut self, index: Index) {
        assert!(
            index <= self.snapshot.index,
            "compact {index} beyond snapshot"
        );
        if index <= self.offset() {
            return;
        }
        let term = self.term(index).expect("compact index in log");
        let drop = (index - self.offset()) as usize;
        self.entries.drain(..drop);
        self.entries[0] = placeholder(index, term);
    }

    /// Replaces the whole log by an installed snapshot.
    pub fn apply_snapshot(&mut self, meta: SnapshotMeta, data: Vec<u8>) {
        assert!(meta.index >= self.offset(), "installing an older snapshot");
        self.entries = vec![placeholder(meta.index, meta.term)];
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
        self.conf_state = meta.conf_state.clone();
        self.snapshot = meta;
        self.snapshot_data = data;
    }

    /// All entries currently held (for checkers).
    pub fn all_entries(&self) -> &[Entry] {
        &self.entries[1..]
    }
}

fn placeholder(index: Index, term: Term) -> Entry {
    Entry {
        term,
        index,
        kind: crate::types::EntryKind::Noop,
        data: Vec::new(),
    }
}

impl Storage for MemStorage {
    fn initial_state(&self) -> Result<InitialState, StorageError> {
        Ok(InitialState {
            hard_state: self.hard_state,
            conf_state: self.conf_state.clone(),
        })
    }

    fn entries(&self, lo: Index, hi: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        assert!(lo <= hi, "entries: lo {lo} > hi {hi}");
        if lo <= self.offset() {
            return Err(StorageError::Compacted);
        }
        if hi > self.last_index()? + 1 {
            return Err(StorageError::Unavailable);
        }
        let start = (lo - self.offset()) as usize;
        let end = (hi - self.offset()) as usize;
        let mut out = self.entries[start..end].to_vec();
        limit_size(&mut out, max_bytes);
        Ok(out)
    }

    fn term(&self, index: Index) -> Result<Term, StorageError> {
        if index < self.offset() {
            return Err(StorageError::Compacted);
        }
        let pos = (index - self.offset()) as usize;
        self.entries
            .get(pos)
            .map(|e| e.term)
            .ok_or(StorageError::Unavailable)
    }

    fn first_index(&self) -> Result<Index, StorageError> {
        Ok(self.offset() + 1)
    }

    fn last_index(&self) -> Result<Index, StorageError> {
        Ok(self.offset() + self.entries.len() as u64 - 1)
    }

    fn snapshot_meta(&self) -> Result<SnapshotMeta, StorageError> {
        Ok(self.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EntryKind;

    fn ent(index: Index, term: Term) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: vec![b'x'; 8],
        }
    }

    #[test]
    fn append_truncates_conflicting_suffix() {
        let mut s = MemStorage::new(ConfState::with_voters([1]));
        s.append(&[ent(1, 1), ent(2, 1), ent(3, 1)]);
        s.append(&[ent(2, 2)]);
        assert_eq!(s.last_index().unwrap(), 2);
        assert_eq!(s.term(2).unwrap(), 2);
    }

    #[test]
    fn compact_keeps_term_of_compaction_point() {
        let mut s = MemStorage::new(ConfState::with_voters([1]));
        s.append(&[ent(1, 1), ent(2, 1), ent(3, 2)]);
        s.set_hard_state(HardState {
            term: 2,
            vote: None,
            commit: 3,
        });
        s.create_snapshot(2, ConfState::with_voters([1]), b"state".to_vec());
        s.compact(2);
        assert_eq!(s.first_index().unwrap(), 3);
        assert_eq!(s.term(2).unwrap(), 1);
        assert_eq!(s.term(1), Err(StorageError::Compacted));
        assert_eq!(s.entries(2, 3, u64::MAX), Err(StorageError::Compacted));
        assert_eq!(s.entries(3, 4, u64::MAX).unwrap().len(), 1);
    }

    #[test]
    fn entries_respect_size_but_return_one() {
        let mut s = MemStorage::new(ConfState::with_voters([1]));
        s.append(&[ent(1, 1), ent(2, 1), ent(3, 1)]);
        assert_eq!(s.entries(1, 4, 0).unwrap().len(), 1);
        assert_eq!(s.entries(1, 4, 64).unwrap().len(), 2);
        assert_eq!(s.entries(1, 4, u64::MAX).unwrap().len(), 3);
    }
}
