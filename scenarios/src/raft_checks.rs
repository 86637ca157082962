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
        for &(id, raw) in nodes {
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
            let first = log.first_index();
            let terms: Vec<Term> = (first..=log.last_index())
                .map(|i| log.term_or_zero(i))
                .collect();
            if let Some((old_first, old_terms)) = self.leader_logs.get(&(id, term)) {
                for (k, t) in old_terms.iter().enumerate() {
                    let index = old_first + k as u64;
                    if index < first {
                        continue;
                    }
                    if terms.get((index - first) as usize) != Some(t) {
                        return Err(format!(
                            "leader append-only: leader {id} of term {term} changed entry {index}"
                        ));
                    }
                }
            }
            self.leader_logs.insert((id, term), (first, terms));
        }
        check_log_matching(nodes)
    }
}

fn check_log_matching(nodes: &[(u64, &RawNode<DiskLog>)]) -> Result<(), String> {
    let logs: Vec<(u64, Index, Vec<Term>)> = nodes
        .iter()
        .map(|&(id, raw)| {
            let log = &raw.raft().log;
            let first = log.first_index();
            let terms = (first..=log.last_index())
                .map(|i| log.term_or_zero(i))
                .collect();
            (id, first, terms)
        })
        .collect();
    for (a, (ida, fa, ta)) in logs.iter().enumerate() {
        for (idb, fb, tb) in &logs[a + 1..] {
            let lo = (*fa).max(*fb);
            let hi = (fa + ta.len() as u64).min(fb + tb.len() as u64);
            let term_at = |f: Index, t: &Vec<Term>, i: Index| t[(i - f) as usize];
            // Walking down from the top: once the logs agree at an index, they must
            // agree at every lower one.
            let mut matched = false;
            for i in (lo..hi).rev() {
                let same = term_at(*fa, ta, i) == term_at(*fb, tb, i);
                if matched && !same {
                    return Err(format!(
                        "log matching: nodes {ida} and {idb} agree at a later index but differ at {i}"
                    ));
                }
                matched |= same;
            }
        }
    }
    Ok(())
}
