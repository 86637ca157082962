//! The log as one node sees it: the durable part (the application's `Storage`)
//! followed by an unstable tail (entries and possibly a snapshot that `Ready` has
//! handed out for persisting but `advance` has not yet acknowledged).
//!
//! Invariants (checked by `check`):
//! - `applied <= committed <= last_index()`; `committed >= first_index() - 1`.
//! - The unstable tail starts at `unstable.offset`; when it holds a snapshot,
//!   `unstable.offset == snapshot.index + 1`.

use crate::error::StorageError;
use crate::storage::{Storage, limit_size};
use crate::types::{Entry, Index, SnapshotMeta, Term};

/// Entries (and a snapshot) not yet durable.
#[derive(Debug)]
pub struct Unstable {
    pub snapshot: Option<SnapshotMeta>,
    pub entries: Vec<Entry>,
    /// Index of `entries[0]` (or where it would be).
    pub offset: Index,
}

impl Unstable {
    fn maybe_first_index(&self) -> Option<Index> {
        self.snapshot.as_ref().map(|s| s.index + 1)
    }

    fn maybe_last_index(&self) -> Option<Index> {
        match self.entries.last() {
            Some(e) => Some(e.index),
            None => self.snapshot.as_ref().map(|s| s.index),
        }
    }

    fn maybe_term(&self, index: Index) -> Option<Term> {
        if index < self.offset {
            let snap = self.snapshot.as_ref()?;
            return (snap.index == index).then_some(snap.term);
        }
        let last = self.maybe_last_index()?;
        if index > last {
            return None;
        }
        Some(self.entries[(index - self.offset) as usize].term)
    }

    /// Entries up to `(index, term)` became durable: drop them, unless they were
    /// replaced in the meantime (then the term no longer matches).
    fn stable_to(&mut self, index: Index, term: Term) {
        if index < self.offset || self.maybe_term(index) != Some(term) {
            return;
        }
        let drop = (index + 1 - self.offset) as usize;
        self.entries.drain(..drop);
        self.offset = index + 1;
    }

    fn stable_snap_to(&mut self, index: Index) {
        if self.snapshot.as_ref().is_some_and(|s| s.index == index) {
            self.snapshot = None;
        }
    }

    fn restore(&mut self, snap: SnapshotMeta) {
        self.offset = snap.index + 1;
        self.entries.clear();
        self.snapshot = Some(snap);
    }

    /// Appends `entries`, first dropping any unstable suffix they replace.
    fn truncate_and_append(&mut self, entries: &[Entry]) {
        let first = entries[0].index;
        if first == self.offset + self.entries.len() as u64 {
            // Directly after: plain append.
        } else if first <= self.offset {
            // Replaces everything unstable (and maybe some stable entries, which
            // the storage overwrites when it persists these).
            self.offset = first;
            self.entries.clear();
        } else {
            self.entries.truncate((first - self.offset) as usize);
        }
        self.entries.extend_from_slice(entries);
    }
}

/// The log of one node.
#[derive(Debug)]
pub struct RaftLog<S: Storage> {
    pub storage: S,
    pub unstable: Unstable,
    /// Highest index known to be committed (§5.3).
    pub committed: Index,
    /// Highest index handed to the application for applying and acknowledged.
    pub applied: Index,
    /// Highest index whose entries were handed out in a `Ready` to apply.
    pub applying: Index,
}

/// Fatal: the storage broke its contract (see `Storage`).
fn fatal(e: StorageError) -> ! {
    panic!("storage broke its contract: {e}")
}

impl<S: Storage> RaftLog<S> {
    pub fn new(storage: S) -> RaftLog<S> {
        let first = storage.first_index().unwrap_or_else(|e| fatal(e));
        let last = storage.last_index().unwrap_or_else(|e| fatal(e));
        assert!(
            first >= 1 && last + 1 >= first,
            "storage range {first}..={last}"
        );
        RaftLog {
            storage,
            unstable: Unstable {
                snapshot: None,
                entries: Vec::new(),
                offset: last + 1,
            },
            committed: first - 1,
            applied: first - 1,
            applying: first - 1,
        }
    }

    pub fn check(&self) {
        assert!(
            self.applied <= self.applying,
            "applied {} > applying",
            self.applied
        );
        assert!(
            self.applying <= self.committed,
            "applying > committed {}",
            self.committed
        );
        assert!(
            self.committed <= self.last_index(),
            "committed {} > last",
            self.committed
        );
        if let Some(s) = &self.unstable.snapshot {
            assert_eq!(self.unstable.offset, s.index + 1);
        }
    }

    pub fn first_index(&self) -> Index {
        match self.unstable.maybe_first_index() {
            Some(i) => i,
            None => self.storage.first_index().unwrap_or_else(|e| fatal(e)),
        }
    }

    pub fn last_index(&self) -> Index {
        match self.unstable.maybe_last_index() {
            Some(i) => i,
            None => self.storage.last_index().unwrap_or_else(|e| fatal(e)),
        }
    }

    /// The last index whose entry is durable (or, for a pending snapshot, 0: nothing
    /// new is durable until the snapshot is).
    pub fn persisted_index(&self) -> Index {
        if self.unstable.snapshot.is_some() {
            return 0;
        }
        let stored = self.storage.last_index().unwrap_or_else(|e| fatal(e));
        stored.min(self.unstable.offset - 1)
    }

    /// Term of the entry at `index`; `Compacted`/`Unavailable` outside the log.
    pub fn term(&self, index: Index) -> Result<Term, StorageError> {
        let dummy = self.first_index() - 1;
        if index < dummy {
            return Err(StorageError::Compacted);
        }
        if index > self.last_index() {
            return Err(StorageError::Unavailable);
        }
        if let Some(t) = self.unstable.maybe_term(index) {
            return Ok(t);
        }
        match self.storage.term(index) {
            Ok(t) => Ok(t),
            Err(StorageError::Compacted) => Err(StorageError::Compacted),
            Err(e) => fatal(e),
        }
    }

    /// Term at `index`, or 0 if it is compacted or missing (used where a miss just
    /// means "does not match").
    pub fn term_or_zero(&self, index: Index) -> Term {
        self.term(index).unwrap_or(0)
    }

    pub fn last_term(&self) -> Term {
        self.term(self.last_index()).unwrap_or_else(|e| fatal(e))
    }

    pub fn match_term(&self, index: Index, term: Term) -> bool {
        self.term(index).is_ok_and(|t| t == term)
    }

    /// §5.4.1: a candidate's log is at least as up-to-date as ours if its last term
    /// is higher, or equal with a last index at least ours.
    pub fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        let my_term = self.last_term();
        last_term > my_term || (last_term == my_term && last_index >= self.last_index())
    }

    /// First index in `entries` whose term differs from ours (or that we lack), or
    /// `None` if we already hold every one of them (§5.3: "if an existing entry
    /// conflicts with a new one ... delete the existing entry and all that follow").
    pub fn find_conflict(&self, entries: &[Entry]) -> Option<Index> {
        entries
            .iter()
            .find(|e| !self.match_term(e.index, e.term))
            .map(|e| e.index)
    }

    /// The largest index `<= index` whose term is `<= term`, with that term: every
    /// entry above it cannot match a leader whose entry at `index` has `term`. This
    /// is the fast-backtracking hint (§5.3, the paragraph after Figure 7).
    pub fn find_conflict_by_term(&self, index: Index, term: Term) -> (Index, Term) {
        let mut i = index.min(self.last_index());
        loop {
            match self.term(i) {
                Ok(t) if t > term => i -= 1,
                Ok(t) => return (i, t),
                Err(_) => return (i, 0),
            }
        }
    }

    /// Receiver rule of AppendEntries (Figure 2): if our entry at `prev_index`
    /// matches `prev_term`, append the new entries (truncating only from the first
    /// real conflict), advance commit, and return the index of the last new entry.
    pub fn maybe_append(
        &mut self,
        prev_index: Index,
        prev_term: Term,
        commit: Index,
        entries: &[Entry],
        truncate_always: bool,
    ) -> Option<Index> {
        if !self.match_term(prev_index, prev_term) {
            return None;
        }
        let last_new = prev_index + entries.len() as u64;
        if truncate_always && !entries.is_empty() {
            // Planted bug TruncateOnNonConflictingAppend: replace the suffix even
            // when every entry already matches, losing entries after `last_new`.
            assert!(
                entries[0].index > self.committed,
                "would truncate committed"
            );
            self.unstable.truncate_and_append(entries);
        } else if let Some(conflict) = self.find_conflict(entries) {
            assert!(
                conflict > self.committed,
                "conflict {conflict} at or below commit"
            );
            let start = (conflict - (prev_index + 1)) as usize;
            self.append(&entries[start..]);
        }
        self.commit_to(commit.min(last_new));
        Some(last_new)
    }

    /// Appends entries after (or overwriting part of) the uncommitted log.
    pub fn append(&mut self, entries: &[Entry]) -> Index {
        let Some(first) = entries.first() else {
            return self.last_index();
        };
        assert!(
            first.index > self.committed,
            "append {} below commit",
            first.index
        );
        assert!(
            first.index <= self.last_index() + 1,
            "gap before {}",
            first.index
        );
        self.unstable.truncate_and_append(entries);
        self.last_index()
    }

    pub fn commit_to(&mut self, index: Index) {
        if index > self.committed {
            assert!(
                index <= self.last_index(),
                "commit {index} beyond last index"
            );
            self.committed = index;
        }
    }

    /// Advances commit to `index` if its entry is from `term` (Figure 8 rule: the
    /// caller passes its current term). Returns whether commit moved.
    pub fn maybe_commit(&mut self, index: Index, term: Term) -> bool {
        if index > self.committed && self.term_or_zero(index) == term {
            self.commit_to(index);
            return true;
        }
        false
    }

    pub fn applied_to(&mut self, index: Index) {
        assert!(
            index <= self.committed,
            "applied {index} beyond commit {}",
            self.committed
        );
        assert!(index >= self.applied, "applied moving back to {index}");
        self.applied = index;
        self.applying = self.applying.max(index);
    }

    pub fn stable_to(&mut self, index: Index, term: Term) {
        self.unstable.stable_to(index, term);
    }

    pub fn stable_snap_to(&mut self, index: Index) {
        self.unstable.stable_snap_to(index);
    }

    pub fn restore(&mut self, snap: SnapshotMeta) {
        assert!(snap.index > self.committed, "restoring an old snapshot");
        self.committed = snap.index;
        self.unstable.restore(snap);
    }

    pub fn unstable_entries(&self) -> &[Entry] {
        &self.unstable.entries
    }

    /// Entries `[lo, hi)` from storage and the unstable tail, capped by size.
    pub fn slice(&self, lo: Index, hi: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        assert!(lo <= hi, "slice {lo}..{hi}");
        if lo == hi {
            return Ok(Vec::new());
        }
        if lo < self.first_index() {
            return Err(StorageError::Compacted);
        }
        assert!(hi <= self.last_index() + 1, "slice {lo}..{hi} beyond last");
        let mut out = Vec::new();
        if lo < self.unstable.offset {
            let stored_hi = hi.min(self.unstable.offset);
            out = match self.storage.entries(lo, stored_hi, max_bytes) {
                Ok(v) => v,
                Err(StorageError::Compacted) => return Err(StorageError::Compacted),
                Err(e) => fatal(e),
            };
            if (out.len() as u64) < stored_hi - lo {
                return Ok(out); // The size cap was hit.
            }
        }
        if hi > self.unstable.offset {
            let from = lo.max(self.unstable.offset);
            let a = (from - self.unstable.offset) as usize;
            let b = (hi - self.unstable.offset) as usize;
            out.extend_from_slice(&self.unstable.entries[a..b]);
        }
        limit_size(&mut out, max_bytes);
        Ok(out)
    }

    /// Entries from `lo` to the end, capped by size.
    pub fn entries_from(&self, lo: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        if lo > self.last_index() {
            return Ok(Vec::new());
        }
        self.slice(lo, self.last_index() + 1, max_bytes)
    }

    /// Whether there are committed entries not yet handed out for applying.
    pub fn has_next_committed(&self) -> bool {
        let lo = (self.applying + 1).max(self.first_index());
        self.committed + 1 > lo && self.unstable.snapshot.is_none()
    }

    /// Committed entries not yet handed out for applying.
    pub fn next_committed(&self, max_bytes: u64) -> Vec<Entry> {
        if !self.has_next_committed() {
            return Vec::new();
        }
        let lo = (self.applying + 1).max(self.first_index());
        self.slice(lo, self.committed + 1, max_bytes)
            .unwrap_or_else(|e| fatal(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;
    use crate::types::{ConfState, EntryKind};

    fn ent(index: Index, term: Term) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: Vec::new(),
        }
    }

    fn log_with(terms: &[Term]) -> RaftLog<MemStorage> {
        let mut s = MemStorage::new(ConfState::with_voters([1]));
        let ents: Vec<Entry> = terms
            .iter()
            .enumerate()
            .map(|(i, t)| ent(i as u64 + 1, *t))
            .collect();
        s.append(&ents);
        RaftLog::new(s)
    }

    #[test]
    fn maybe_append_keeps_matching_suffix() {
        let mut log = log_with(&[1, 1, 2, 2]);
        // An old, shorter append whose entries all match must not truncate 4.
        assert_eq!(
            log.maybe_append(1, 1, 0, &[ent(2, 1), ent(3, 2)], false),
            Some(3)
        );
        assert_eq!(log.last_index(), 4);
        assert_eq!(
            log.maybe_append(1, 1, 0, &[ent(2, 1), ent(3, 3)], false),
            Some(3)
        );
        assert_eq!(log.last_index(), 3);
        assert_eq!(log.last_term(), 3);
        assert_eq!(log.maybe_append(3, 2, 0, &[], false), None);
    }

    #[test]
    fn find_conflict_by_term_skips_higher_terms() {
        let log = log_with(&[1, 1, 3, 3, 3]);
        assert_eq!(log.find_conflict_by_term(5, 2), (2, 1));
        assert_eq!(log.find_conflict_by_term(9, 3), (5, 3));
        assert_eq!(log.find_conflict_by_term(5, 0), (0, 0));
    }

    #[test]
    fn slice_spans_storage_and_unstable() {
        let mut log = log_with(&[1, 1]);
        log.append(&[ent(3, 2), ent(4, 2)]);
        let got = log.slice(1, 5, u64::MAX).unwrap();
        assert_eq!(
            got.iter().map(|e| e.index).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        assert_eq!(log.persisted_index(), 2);
        log.stable_to(4, 2);
        assert!(log.unstable_entries().is_empty());
        assert_eq!(log.unstable.offset, 5);
    }

    #[test]
    fn stable_to_ignores_replaced_entries() {
        let mut log = log_with(&[]);
        log.append(&[ent(1, 1), ent(2, 1)]);
        log.append(&[ent(2, 2)]);
        log.stable_to(2, 1);
        assert_eq!(log.unstable_entries().len(), 2);
    }
}
