//! Numbered faults, so that a run can switch some of them off.
//!
//! A scenario's fault routine numbers every fault it decides on, in the order it
//! decides: 0, 1, 2, ... (crashes, pauses, partitions, power loss in the middle of a
//! persist: whatever the routine injects on purpose, not the disk's and network's own
//! per-operation faults). [`RunOptions::skip_faults`] names ordinals not to apply.
//!
//! Skipping must keep the random stream: a skipped fault still makes every draw the
//! applied fault would have made (which node, power loss or not, how long until the
//! restart, resume or heal, the partition's shape), and only then leaves the world
//! alone. So the same seed with the same skip set is the same run, an empty skip set
//! is the run without this machinery (same fingerprint), and after a skipped fault the
//! fault routine's next draws are still the ones the original run made. Later draws
//! elsewhere may still diverge, because the world without the fault behaves
//! differently (a node that did not crash sends messages, and their latencies are
//! drawn); the shrinker accepts that, since every candidate is itself a replayable run.
//!
//! Ordinals count decisions, so they mean the same faults only up to the first skipped
//! one: without it the world differs, and the routine may decide differently later
//! (a crash refused because too many nodes were down becomes possible, say), which
//! renumbers what follows. The shrinker therefore always works from the last failing
//! run it kept; its result replays exactly, but its remaining faults need not all be
//! faults of the original run.
//!
//! A skipped fault leaves one trace line, `fault-skipped #N` followed by the kind and
//! detail of the line the fault would have left (`crash scheduled power_loss=true`,
//! `fault isolate 3`), so a replayed trace shows what was switched off. A heal
//! scheduled by a skipped partition stays scheduled: heals restore every link, and the
//! original run healed at that moment too.
//!
//! To number faults in a scenario: keep a [`FaultCounter`]; when the routine has
//! decided on a fault (before applying it), call [`FaultCounter::next`]; if it is not
//! enabled, make the remaining draws and do nothing else. For partitions use
//! [`draw_partition`], which draws exactly what `SimNetwork::random_partition` draws;
//! for other code that draws and cuts in one go, [`saved_cuts`] and [`restore_cuts`].
//! Report [`FaultCounter::scheduled`] as `RunReport::faults`.
//!
//! [`RunOptions::skip_faults`]: crate::RunOptions::skip_faults

use crate::RunOptions;
use ryu_sim::{NodeId, SimNetwork, SimRng};
use std::cell::Cell;
use std::collections::BTreeSet;

thread_local! {
    /// How many faults the run in progress on this thread has numbered. Only for the
    /// report of a run that panics: [`crate::run`] builds that report without the
    /// scenario's world, and the shrinker still needs the count. A run is one thread.
    static NUMBERED_ON_THIS_THREAD: Cell<u64> = const { Cell::new(0) };
}

/// Start counting for a new run on this thread.
pub(crate) fn reset_thread_count() {
    NUMBERED_ON_THIS_THREAD.with(|n| n.set(0));
}

/// Faults numbered by this thread's run so far.
pub(crate) fn thread_count() -> u64 {
    NUMBERED_ON_THIS_THREAD.with(Cell::get)
}

/// One fault the routine decided on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NumberedFault {
    /// Its number: how many faults were decided on before it.
    pub ordinal: u64,
    /// Whether the run applies it (`false`: it is in the skip set).
    pub enabled: bool,
}

/// Numbers a run's faults.
#[derive(Debug, Clone, Default)]
pub struct FaultCounter {
    scheduled: u64,
}

impl FaultCounter {
    /// Number the fault just decided on, and say whether `opts` lets it happen.
    pub fn next(&mut self, opts: &RunOptions) -> NumberedFault {
        let ordinal = self.scheduled;
        self.scheduled += 1;
        NUMBERED_ON_THIS_THREAD.with(|n| n.set(self.scheduled));
        NumberedFault {
            ordinal,
            enabled: opts.fault_enabled(ordinal),
        }
    }

    /// How many faults were numbered so far, skipped ones included.
    pub fn scheduled(&self) -> u64 {
        self.scheduled
    }
}

/// Draw a partition exactly as [`SimNetwork::random_partition`] does and describe it;
/// cut the links only if `apply`. Either way `rng` advances by the same draws.
pub fn draw_partition<M: Clone>(
    net: &mut SimNetwork<M>,
    rng: &mut SimRng,
    nodes: &[NodeId],
    apply: bool,
) -> String {
    if apply {
        return net.random_partition(rng, nodes);
    }
    // Let the network draw (and cut), then put the links back as they were.
    let saved = saved_cuts(net);
    let what = net.random_partition(rng, nodes);
    restore_cuts(net, saved);
    what
}

/// The links cut now. For a skipped fault whose drawing code also cuts: save, draw
/// and cut as usual, then [`restore_cuts`].
pub fn saved_cuts<M: Clone>(net: &SimNetwork<M>) -> Vec<(NodeId, NodeId)> {
    net.cut_links().collect()
}

/// Make exactly the `saved` links cut again.
pub fn restore_cuts<M: Clone>(net: &mut SimNetwork<M>, saved: Vec<(NodeId, NodeId)>) {
    net.heal();
    for (from, to) in saved {
        net.cut(from, to);
    }
}

/// `1,4,7`: the form `--skip-faults` takes.
pub fn format_ordinals(ordinals: &BTreeSet<u64>) -> String {
    ordinals
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Parse `1,4,7` (spaces allowed, empty means none).
pub fn parse_ordinals(s: &str) -> Result<BTreeSet<u64>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<u64>()
                .map_err(|e| format!("bad fault ordinal {p:?} in {s:?}: {e}"))
        })
        .collect()
}
