//! The reference model of a Ryu cluster's replicated state: a `BTreeMap` fed every
//! committed entry once, in index order, with the node's command semantics
//! re-implemented independently (a check compares the current value; a failed check
//! writes nothing). Backups are judged against it: a backup at index `i` must hold
//! exactly [`KvModel::state_at`]`(i)`.

use ryu_node::Command;
use ryu_raft::{EntryKind, Index};
use std::collections::BTreeMap;

type Writes = Vec<(Vec<u8>, Option<Vec<u8>>)>;

#[derive(Debug, Default)]
pub struct KvModel {
    /// The last index fed.
    pub index: Index,
    state: BTreeMap<Vec<u8>, Vec<u8>>,
    /// index -> the writes that took effect there (absent: none).
    writes: BTreeMap<Index, Writes>,
    /// Cluster backup id -> the index of its barrier.
    pub barriers: BTreeMap<String, Index>,
    /// Applied increments by request id: the value each read and the one it wrote.
    pub increments: crate::history::AppliedIncrements,
}

impl KvModel {
    /// Feed the entry at `index`; entries must come in order, each once.
    pub fn apply(&mut self, index: Index, kind: EntryKind, data: &[u8]) -> Result<(), String> {
        if index != self.index + 1 {
            return Err(format!("model fed {index} after {}", self.index));
        }
        self.index = index;
        if kind != EntryKind::Normal || data.is_empty() {
            return Ok(());
        }
        match Command::decode(data).map_err(|e| format!("entry {index}: {e}"))? {
            Command::Txn { checks, writes, .. } => {
                let holds = checks
                    .iter()
                    .all(|(k, expected)| self.state.get(k) == expected.as_ref());
                if holds && !writes.is_empty() {
                    for (k, v) in &writes {
                        match v {
                            Some(v) => self.state.insert(k.clone(), v.clone()),
                            None => self.state.remove(k),
                        };
                    }
                    self.writes.insert(index, writes);
                }
            }
            Command::Incr {
                key,
                delta,
                request,
                ..
            } => {
                let before = self.state.get(&key).cloned();
                // Re-implemented, not the node's function: plain `i64` parsing, which
                // agrees with Redis's stricter rules on the canonical decimal strings
                // increments write (the only values counter keys hold here).
                let current = match &before {
                    None => Some(0),
                    Some(v) => std::str::from_utf8(v)
                        .ok()
                        .and_then(|t| t.parse::<i64>().ok()),
                };
                if let Some(value) = current.and_then(|n| n.checked_add(delta)) {
                    let after = value.to_string().into_bytes();
                    // One request is one entry: a second would count it twice.
                    if self
                        .increments
                        .insert(request, (before, after.clone()))
                        .is_some()
                    {
                        return Err(format!(
                            "entry {index}: increment request {request} applied twice"
                        ));
                    }
                    self.state.insert(key.clone(), after.clone());
                    self.writes.insert(index, vec![(key, Some(after))]);
                }
            }
            // A second barrier of one id is ignored, as the node does.
            Command::BackupBarrier { backup_id, .. } => {
                self.barriers.entry(backup_id).or_insert(index);
            }
        }
        Ok(())
    }

    /// The client-visible state after applying every entry up to `index`.
    pub fn state_at(&self, index: Index) -> BTreeMap<Vec<u8>, Vec<u8>> {
        assert!(index <= self.index, "model has not seen {index} yet");
        let mut state = BTreeMap::new();
        for writes in self.writes.range(..=index).map(|(_, w)| w) {
            for (k, v) in writes {
                match v {
                    Some(v) => state.insert(k.clone(), v.clone()),
                    None => state.remove(k),
                };
            }
        }
        state
    }
}
