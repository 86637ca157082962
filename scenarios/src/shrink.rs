//! Shrinking a failing seed: find a small set of the run's faults that still makes it
//! fail, by switching the others off (see [`crate::faults`] for how a scenario numbers
//! its faults and skips one without disturbing its random stream).
//!
//! The algorithm is greedy delta debugging over fault ordinals:
//! 1. Run the seed with the given options; it must fail.
//! 2. **Chunks.** Split the faults still applied into `n` chunks (`n` = 2 at first) and
//!    try skipping each chunk in turn. The first candidate that still fails is kept
//!    and `n` shrinks by one (at least 2); when no chunk can go, `n` doubles, until
//!    chunks are single faults.
//! 3. **One at a time.** Try skipping each remaining fault alone, keeping every
//!    removal after which the run still fails; repeat the pass until one removes
//!    nothing.
//!
//! A candidate is kept only if the run still fails **and** applies fewer faults than
//! the best run so far. Switching a fault off changes the world after it, so the run
//! may decide on faults it did not before (a crash that was refused while too many
//! nodes were down, say) and apply more faults in all; such a candidate is no
//! progress. Every step looks at the faults of the run it kept, new ordinals
//! included, so the number of applied faults only goes down.
//!
//! "Still fails" means any violation, not necessarily the original one: a shrunk run
//! often fails the same way with different times in the message, and sometimes by a
//! neighbouring check. [`ShrinkResult::violation_changed`] says when the message
//! differs. At the end the skip set is trimmed to ordinals the final run actually
//! reached (the others never mattered), and that run is repeated to confirm the
//! fingerprint.
//!
//! Every candidate is a full deterministic run, so the result is exact, not a guess:
//! the replay line with its `--skip-faults` reproduces it. [`MAX_RUNS`] bounds the
//! work; a result that ran out of budget says so.

use crate::faults::format_ordinals;
use crate::{RunOptions, RunReport, run};
use std::collections::BTreeSet;

/// At most this many candidate runs per shrink.
pub const MAX_RUNS: u64 = 400;

/// What shrinking found.
#[derive(Debug, Clone)]
pub struct ShrinkResult {
    /// The options to replay the shrunk run: the input's, with the skip set.
    pub opts: RunOptions,
    /// The input run (it failed).
    pub original: RunReport,
    /// The shrunk run, with the full trace tail cut back to the input's
    /// `trace_tail_lines`.
    pub shrunk: RunReport,
    /// Faults the original run applied.
    pub faults_before: u64,
    /// Faults the shrunk run applies (scheduled and not skipped).
    pub faults_after: u64,
    /// Candidate runs made (the two runs around them not counted).
    pub runs: u64,
    /// True if [`MAX_RUNS`] stopped the search before a pass removed nothing.
    pub budget_exhausted: bool,
    /// The shrunk run's trace lines of kinds `crash`, `pause` and `fault`: what
    /// happened to the nodes and the network (crashes that followed from a disk
    /// error are among them too).
    pub fault_lines: Vec<String>,
}

impl ShrinkResult {
    /// The violation of the original run.
    pub fn original_violation(&self) -> &str {
        violation(&self.original)
    }

    /// The violation of the shrunk run.
    pub fn shrunk_violation(&self) -> &str {
        violation(&self.shrunk)
    }

    /// Whether the shrunk run fails with a different message.
    pub fn violation_changed(&self) -> bool {
        self.original_violation() != self.shrunk_violation()
    }
}

fn violation(report: &RunReport) -> &str {
    report
        .result
        .as_ref()
        .err()
        .map_or("", |f| f.message.as_str())
}

/// Faults of `report`'s run that `skip` lets happen.
pub fn applied_faults(report: &RunReport, skip: &BTreeSet<u64>) -> Vec<u64> {
    (0..report.faults).filter(|o| !skip.contains(o)).collect()
}

/// Shrink a failing run of `scenario` with `opts` (its own skip set is the start).
/// `Err` if the scenario is unknown or the run passes.
pub fn shrink(scenario: &str, opts: &RunOptions) -> Result<ShrinkResult, String> {
    shrink_with_progress(scenario, opts, &mut |_| {})
}

/// [`shrink`], reporting each step to `progress` as one line of text.
pub fn shrink_with_progress(
    scenario: &str,
    opts: &RunOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<ShrinkResult, String> {
    let mut search = Search::start(scenario, opts, progress)?;
    search.chunks();
    search.one_at_a_time();
    search.finish()
}

struct Search<'a> {
    scenario: String,
    opts: RunOptions,
    progress: &'a mut dyn FnMut(&str),
    original: RunReport,
    /// The smallest failing run so far and its skip set.
    best: RunReport,
    skip: BTreeSet<u64>,
    runs: u64,
    budget_exhausted: bool,
}

impl<'a> Search<'a> {
    fn start(
        scenario: &str,
        opts: &RunOptions,
        progress: &'a mut dyn FnMut(&str),
    ) -> Result<Search<'a>, String> {
        let mut opts = opts.clone();
        opts.echo_trace = false;
        let original = run(scenario, &opts)?;
        if original.result.is_ok() {
            return Err(format!(
                "SEED={} scenario={scenario} passes: nothing to shrink",
                opts.seed
            ));
        }
        let skip = opts.skip_faults.clone();
        progress(&format!(
            "SEED={} scenario={scenario} fails with {} of {} faults applied: {}",
            opts.seed,
            applied_faults(&original, &skip).len(),
            original.faults,
            violation(&original)
        ));
        Ok(Search {
            scenario: scenario.to_string(),
            opts,
            progress,
            best: original.clone(),
            original,
            skip,
            runs: 0,
            budget_exhausted: false,
        })
    }

    /// Run with `skip ∪ remove`; keep it if it still fails with fewer faults applied.
    /// `None`: out of budget.
    fn try_skip(&mut self, remove: &[u64]) -> Option<bool> {
        if self.runs >= MAX_RUNS {
            self.budget_exhausted = true;
            return None;
        }
        self.runs += 1;
        let mut candidate = self.skip.clone();
        candidate.extend(remove.iter().copied());
        let mut opts = self.opts.clone();
        opts.skip_faults = candidate.clone();
        let report = run(&self.scenario, &opts).expect("the scenario ran before");
        let left = applied_faults(&report, &candidate).len();
        let fails = report.result.is_err();
        let smaller = left < applied_faults(&self.best, &self.skip).len();
        let what = match remove {
            [one] => format!("fault {one}"),
            _ => format!(
                "{} faults ({})",
                remove.len(),
                format_ordinals(&remove.iter().copied().collect())
            ),
        };
        if fails && smaller {
            let changed = if violation(&report) == violation(&self.original) {
                String::new()
            } else {
                format!(": {}", violation(&report))
            };
            (self.progress)(&format!(
                "  [{}] without {what}: still fails, {left} faults left{changed}",
                self.runs
            ));
            self.skip = candidate;
            self.best = report;
        } else if fails {
            (self.progress)(&format!(
                "  [{}] without {what}: fails, but with {left} faults: no progress",
                self.runs
            ));
        } else {
            (self.progress)(&format!("  [{}] without {what}: passes", self.runs));
        }
        Some(fails && smaller)
    }

    fn chunks(&mut self) {
        let mut n = 2;
        loop {
            let applied = applied_faults(&self.best, &self.skip);
            if applied.len() < 2 {
                return;
            }
            let size = applied.len().div_ceil(n);
            if size <= 1 {
                return;
            }
            let mut removed = false;
            for chunk in applied.chunks(size) {
                match self.try_skip(chunk) {
                    None => return,
                    Some(true) => {
                        removed = true;
                        break;
                    }
                    Some(false) => {}
                }
            }
            n = if removed {
                (n - 1).max(2)
            } else {
                (n * 2).min(applied.len())
            };
        }
    }

    fn one_at_a_time(&mut self) {
        loop {
            let mut removed = false;
            for fault in applied_faults(&self.best, &self.skip) {
                // An earlier removal may have changed the run so this fault is no
                // longer scheduled (or already skipped).
                if fault >= self.best.faults || self.skip.contains(&fault) {
                    continue;
                }
                match self.try_skip(&[fault]) {
                    None => return,
                    Some(fails) => removed |= fails,
                }
            }
            if !removed {
                return;
            }
        }
    }

    fn finish(mut self) -> Result<ShrinkResult, String> {
        // Ordinals the final run never reached were never consulted: drop them.
        let faults = self.best.faults;
        self.skip.retain(|&o| o < faults);
        let mut opts = self.opts.clone();
        opts.skip_faults = self.skip.clone();
        let mut full = opts.clone();
        full.trace_tail_lines = usize::MAX;
        let mut shrunk = run(&self.scenario, &full)?;
        if shrunk.fingerprint != self.best.fingerprint {
            return Err(format!(
                "shrinking is not reproducible: skip set {:?} gave fingerprint {:016x}, then {:016x}",
                self.skip, self.best.fingerprint, shrunk.fingerprint
            ));
        }
        let mut fault_lines = Vec::new();
        if let Err(f) = &mut shrunk.result {
            fault_lines = f
                .trace_tail
                .iter()
                .filter(|l| {
                    l.split_whitespace()
                        .nth(2)
                        .is_some_and(|k| matches!(k, "crash" | "pause" | "fault"))
                })
                .cloned()
                .collect();
            let keep = self.opts.trace_tail_lines;
            let cut = f.trace_tail.len().saturating_sub(keep);
            f.trace_tail.drain(..cut);
        }
        let faults_before = applied_faults(&self.original, &self.opts.skip_faults).len() as u64;
        let faults_after = applied_faults(&shrunk, &self.skip).len() as u64;
        Ok(ShrinkResult {
            opts,
            original: self.original,
            shrunk,
            faults_before,
            faults_after,
            runs: self.runs,
            budget_exhausted: self.budget_exhausted,
            fault_lines,
        })
    }
}
