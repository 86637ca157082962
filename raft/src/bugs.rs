//! Classic Raft bugs that can be switched on, one at a time, to prove that the
//! simulator catches them (a negative test in FoundationDB's sense). Each is a
//! precise, minimal deviation from the correct code at one site, marked with
//! `planted!` there. Without the `planted-bugs` feature the enum, the config field
//! and every check compile away: `planted!` expands to `false`.

/// One planted bug. The doc of each variant names the rule it breaks.
#[cfg(feature = "planted-bugs")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PlantedBug {
    /// §5.4.2 / Figure 8: the leader commits the majority-replicated index even
    /// when that entry is from an earlier term.
    CommitPreviousTermByCounting,
    /// Figure 2: vote responses leave before the term and vote are durable, so a
    /// node that crashes and restarts can vote twice in one term.
    ReplyBeforeHardStateDurable,
    /// Figure 2: append acknowledgements leave before the entries are durable (and
    /// the leader counts its own append before persisting it).
    AckAppendBeforeDurable,
    /// Figure 2, AppendEntries receiver step 3: the follower truncates everything
    /// after the message's entries even when none of them conflicts, losing entries
    /// a newer append already delivered.
    TruncateOnNonConflictingAppend,
    /// §5.4.1: votes are granted without checking the candidate's log is at least
    /// as up to date.
    GrantVoteToStaleLog,
    /// Thesis §6.4 step 1: ReadIndex is served before the leader has committed an
    /// entry in its own term, so its commit index may be stale.
    ReadIndexBeforeCommitInTerm,
    /// Thesis §4.2.1: learners are counted when computing the commit index.
    CountLearnersInQuorum,
    /// Thesis §4.1 (the 2015 raft-dev fix): a new leader proposes a membership
    /// change before committing its no-op, so two changes from different terms
    /// can overlap.
    ConfChangeBeforeNoopCommitted,
}

#[cfg(feature = "planted-bugs")]
impl PlantedBug {
    pub const ALL: [PlantedBug; 8] = [
        PlantedBug::CommitPreviousTermByCounting,
        PlantedBug::ReplyBeforeHardStateDurable,
        PlantedBug::AckAppendBeforeDurable,
        PlantedBug::TruncateOnNonConflictingAppend,
        PlantedBug::GrantVoteToStaleLog,
        PlantedBug::ReadIndexBeforeCommitInTerm,
        PlantedBug::CountLearnersInQuorum,
        PlantedBug::ConfChangeBeforeNoopCommitted,
    ];
}

/// `planted!(self, Bug)`: whether the node runs with planted bug `Bug`. Always
/// `false` (and the field is never read) without the `planted-bugs` feature.
#[cfg(feature = "planted-bugs")]
macro_rules! planted {
    ($raft:expr, $bug:ident) => {
        $raft.planted_bug == Some($crate::bugs::PlantedBug::$bug)
    };
}

#[cfg(not(feature = "planted-bugs"))]
macro_rules! planted {
    ($raft:expr, $bug:ident) => {
        false
    };
}
