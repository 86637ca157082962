//! The Raft safety properties (Figure 3 of the Raft paper), checked over every live
//! node's in-memory log after every event. Shared by the `raft` and `cluster`
//! scenarios, which differ only in what they replicate.
//!
//! - **Election safety**: at most one leader per term.
//! - **Leader append-only**: a leader never changes or drops an entry of its log
//!   during its term (compaction aside).
//! - **Log matching**: two logs with an entry of the same index and term agree on all
//!   entries before it.
//! - **Leader completeness**: a new leader's log holds every entry applied anywhere
//!   that was committed in an earlier term.
//!
//! State machine safety (no two nodes apply different entries at one index) is the
//! caller's, since only it knows what an entry means; it reports first applications
//! here so that leader completeness knows what was committed when.

use ryu_raft::{DiskLog, Index, RawNode, Role, Term};
use std::collections::BTreeMap;

#[derive(Debug, Default)]
pub struct RaftChecker {
    /// term -> leader, as observed.
    leaders: BTreeMap<Term, u64>,
    /// (node, term) -> the leader's log terms from its first index when last checked.
    leader_logs: BTreeMap<(u64, Term), (Index, Vec<Term>)>,
    /// index -> (term of the entry applied there, the highest term any node had
    /// reached when it was first applied). The entry was committed in that term or
    /// earlier, so every leader of a later term must hold it.
    applied: BTreeMap<Index, (Term, Term)>,
}

impl RaftChecker {
    /// How many terms had a leader.
    pub fn leader_count(&self) -> usize {
        self.leaders.len()
    }

    /// The entry `term`/`index` was applied for the first time anywhere, when the
    /// highest term any node had reached was `max_term`.
    pub fn first_applied(&mut self, index: Index, term: Term, max_term: Term) {
        self.applied.entry(index).or_insert((term, max_term));
    }

    /// Check every property over the live nodes.
    pub fn check(&mut self, nodes: &[(u64, &RawNode<DiskLog>)]) -> Result<(), String> {
        // Each log's terms from its first index, read once per check: the checks below
        // walk them several times, and this runs after every simulated event.
        let logs: Vec<(u64, Index, Vec<Term>)> = nodes
            .iter()
            .map(|&(id, raw)| {
                let log = &raw.raft().log;
                (id, log.first_index(), terms_of(log))
            })
            .collect();
        for (&(id, raw), (_, first, terms)) in nodes.iter().zip(&logs) {
            let (term, role) = (raw.hard_state().term, raw.soft_state().role);
            if role != Role::Leader {
                continue;
            }
            let log = &raw.raft().log;
            match self.leaders.get(&term) {
                Some(&other) if other != id => {
                    return Err(format!(
                        "election safety: nodes {other} and {id} are both leaders of term {term}"
                    ));
                }
                Some(_) => {}
                None => {
                    self.leaders.insert(term, id);
                    for (&index, &(applied_term, by_term)) in
                        self.applied.range(log.first_index()..)
                    {
                        if by_term >= term {
                            continue;
                        }
                        if log.term(index).ok() != Some(applied_term) {
                            return Err(format!(
                                "leader completeness: new leader {id} of term {term} lacks applied entry {applied_term}/{index}"
                            ));
                        }
                    }
                }
            }
            let first = *first;
            if let Some((old_first, old_terms)) = self.leader_logs.get_mut(&(id, term)) {
                if let Some(index) = append_only_violation(*old_first, old_terms, first, terms) {
                    return Err(format!(
                        "leader append-only: leader {id} of term {term} changed entry {index}"
                    ));
                }
                *old_first = first;
                old_terms.clone_from(terms);
            } else {
                self.leader_logs.insert((id, term), (first, terms.clone()));
            }
        }
        check_log_matching(&logs)
    }
}

/// The terms of `log`'s entries from its first index to its last, 0 where a term is
/// unknown: what `term_or_zero` returns index by index, read from the stored and
/// unstable entries directly (the index-by-index path dominated a sweep's time).
fn terms_of(log: &ryu_raft::RaftLog<DiskLog>) -> Vec<Term> {
    let (first, last) = (log.first_index(), log.last_index());
    let unstable = &log.unstable;
    let terms: Vec<Term> = if unstable.snapshot.is_none()
        && first == ryu_raft::Storage::first_index(&log.storage).expect("in memory")
    {
        let stored = log.storage.all_entries();
        let stable_end = if unstable.entries.is_empty() {
            last + 1
        } else {
            unstable.offset
        };
        let mut out: Vec<Term> = Vec::with_capacity((last + 1 - first) as usize);
        out.extend(
            (first..stable_end.min(last + 1))
                .map(|i| stored.get((i - first) as usize).map_or(0, |e| e.term)),
        );
        out.extend(unstable.entries.iter().map(|e| e.term));
        out.truncate((last + 1 - first) as usize);
        out
    } else {
        (first..=last).map(|i| log.term_or_zero(i)).collect()
    };
    debug_assert_eq!(
        terms,
        (first..=last)
            .map(|i| log.term_or_zero(i))
            .collect::<Vec<_>>(),
        "the fast read of a log's terms agrees with term_or_zero"
    );
    terms
}

/// The lowest index at which a leader's log `(first, terms)` no longer holds an entry
/// of the log `(old_first, old_terms)` it held earlier in its term; entries below the
/// new first index were compacted and are not compared. `None`: append-only holds.
pub fn append_only_violation(
    old_first: Index,
    old_terms: &[Term],
    first: Index,
    terms: &[Term],
) -> Option<Index> {
    let start = first.max(old_first);
    let kept = old_terms.get((start - old_first) as usize..).unwrap_or(&[]);
    let now = terms.get((start - first) as usize..).unwrap_or(&[]);
    if now.len() >= kept.len() && now[..kept.len()] == *kept {
        return None;
    }
    let k = (0..kept.len())
        .find(|&k| now.get(k) != Some(&kept[k]))
        .expect("a difference exists");
    Some(start + k as u64)
}

/// Log matching over logs given as `(node, first index, terms from it)`: two logs that
/// agree at an index agree at every lower index both hold. The error names the
/// highest index where a pair differs below an index where it agrees.
pub fn check_log_matching(logs: &[(u64, Index, Vec<Term>)]) -> Result<(), String> {
    for (a, (ida, fa, ta)) in logs.iter().enumerate() {
        for (idb, fb, tb) in &logs[a + 1..] {
            let lo = (*fa).max(*fb);
            let hi = (fa + ta.len() as u64).min(fb + tb.len() as u64);
            if lo >= hi {
                continue;
            }
            let a_range = &ta[(lo - fa) as usize..(hi - fa) as usize];
            let b_range = &tb[(lo - fb) as usize..(hi - fb) as usize];
            // Once the logs agree at an index, they must agree at every lower one:
            // find the highest agreement, then compare everything below it at once.
            let Some(top) = (0..a_range.len()).rev().find(|&k| a_range[k] == b_range[k]) else {
                continue;
            };
            if a_range[..top] != b_range[..top] {
                let k = (0..top)
                    .rev()
                    .find(|&k| a_range[k] != b_range[k])
                    .expect("a difference exists");
                let i = lo + k as u64;
                return Err(format!(
                    "log matching: nodes {ida} and {idb} agree at a later index but differ at {i}"
                ));
            }
        }
    }
    Ok(())
}
