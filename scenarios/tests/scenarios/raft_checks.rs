//! The Raft checker's log comparisons against their plain definitions. The checker
//! reads logs as slices and compares them a run at a time (it runs after every
//! simulated event); these definitions walk index by index, as the checker once did.

use proptest::prelude::*;
use ryu_raft::{Index, Term};
use ryu_scenarios::raft_checks::{append_only_violation, check_log_matching};

/// Append-only by definition: the first index, ascending, at or above the new first
/// index, where the new log lacks the old entry.
fn append_only_by_definition(
    old_first: Index,
    old: &[Term],
    first: Index,
    now: &[Term],
) -> Option<Index> {
    old.iter().enumerate().find_map(|(k, t)| {
        let index = old_first + k as u64;
        (index >= first && now.get((index - first) as usize) != Some(t)).then_some(index)
    })
}

/// Log matching by definition: walking down from the top of the overlap, the first
/// index where a pair differs after having agreed above it.
fn log_matching_by_definition(logs: &[(u64, Index, Vec<Term>)]) -> Option<Index> {
    for (a, (_, fa, ta)) in logs.iter().enumerate() {
        for (_, fb, tb) in &logs[a + 1..] {
            let lo = (*fa).max(*fb);
            let hi = (fa + ta.len() as u64).min(fb + tb.len() as u64);
            let mut matched = false;
            for i in (lo..hi).rev() {
                let same = ta[(i - fa) as usize] == tb[(i - fb) as usize];
                if matched && !same {
                    return Some(i);
                }
                matched |= same;
            }
        }
    }
    None
}

fn error_index(result: Result<(), String>) -> Option<Index> {
    result.err().map(|e| {
        let index = e.rsplit(' ').next().unwrap();
        index
            .parse()
            .unwrap_or_else(|_| panic!("no index in {e:?}"))
    })
}

#[test]
fn hand_written_logs() {
    // Agree at the top, differ below: a violation at the highest differing index.
    let bad = vec![(1, 1, vec![1, 1, 2, 3]), (2, 1, vec![1, 2, 2, 3])];
    assert_eq!(error_index(check_log_matching(&bad)), Some(2));
    // Diverging tails after a common prefix are legal; so are disjoint ranges.
    let ok = vec![
        (1, 1, vec![1, 1, 2, 2]),
        (2, 1, vec![1, 1, 3]),
        (3, 10, vec![4, 4]),
    ];
    assert_eq!(check_log_matching(&ok), Ok(()));
    // A compacted log is compared from its first index on.
    let ok = vec![(1, 3, vec![2, 3]), (2, 1, vec![1, 1, 2, 3, 3])];
    assert_eq!(check_log_matching(&ok), Ok(()));
    // Appending is legal, changing or dropping an entry is not; compaction is.
    assert_eq!(append_only_violation(1, &[1, 1], 1, &[1, 1, 2]), None);
    assert_eq!(append_only_violation(1, &[1, 1, 2], 1, &[1, 2, 2]), Some(2));
    assert_eq!(append_only_violation(1, &[1, 1, 2], 1, &[1, 1]), Some(3));
    assert_eq!(append_only_violation(1, &[1, 1, 2], 3, &[2, 2]), None);
    assert_eq!(append_only_violation(1, &[1, 1, 2], 5, &[3]), None);
}

fn terms() -> impl Strategy<Value = Vec<Term>> {
    // Few distinct terms, so agreements and differences both occur often.
    proptest::collection::vec(1..4u64, 0..12).prop_map(|mut t| {
        t.sort_unstable();
        t
    })
}

proptest! {
    #[test]
    fn log_matching_agrees_with_its_definition(
        logs in proptest::collection::vec((1..5u64, terms()), 2..5),
        mutate in proptest::option::of((0..5usize, 0..12usize, 1..4u64)),
    ) {
        let mut logs: Vec<(u64, Index, Vec<Term>)> = logs
            .into_iter()
            .enumerate()
            .map(|(id, (first, t))| (id as u64, first, t))
            .collect();
        if let Some((which, at, term)) = mutate {
            let n = logs.len();
            let log = &mut logs[which % n].2;
            if !log.is_empty() {
                let at = at % log.len();
                log[at] = term;
            }
        }
        prop_assert_eq!(
            error_index(check_log_matching(&logs)),
            log_matching_by_definition(&logs)
        );
    }

    #[test]
    fn append_only_agrees_with_its_definition(
        old_first in 1..5u64,
        old in terms(),
        first in 1..8u64,
        now in terms(),
    ) {
        prop_assert_eq!(
            append_only_violation(old_first, &old, first, &now),
            append_only_by_definition(old_first, &old, first, &now)
        );
    }
}
