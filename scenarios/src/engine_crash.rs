//! `engine-crash`: the storage engine alone on a `SimDisk`, crashed at random points.
//!
//! Each seed draws a workload (transactions, external-timestamp batches, flushes,
//! checkpoints), a fault mix (swarm: half the seeds run on a perfect disk), sometimes
//! a space quota, and cuts power after a random number of disk operations, anywhere:
//! inside a group commit, a segment creation, a checkpoint's page writes or its
//! superblock, or recovery itself. Then the `SimDisk` crashes (unsynced writes kept,
//! dropped or torn by sector) and the database is reopened on a disk without new
//! faults. The recovered state must be exactly the acknowledged commits plus a prefix
//! of the in-doubt ones (atomic, in order); an injected corruption may instead be
//! reported as `Corrupted` (or a latent sector as an I/O error), never returned as
//! data. Three cycles per seed.
//!
//! Variants: `engine-crash` (a cache of 256 pages), `engine-crash-tiny-cache` (3
//! pages, automatic checkpoints: the data outgrows the cache many times) and
//! `engine-crash-without-commit-syncs` (`Options::sync_commits` off, as a Raft node
//! runs its engine: only commits made durable by `Db::sync` or a checkpoint are
//! acknowledged, and a flipped bit in the WAL may shorten the history but never
//! change it).

use crate::{Failure, RunOptions, RunReport};
use ryu_engine::{CommitTicket, Db, Error, Options, Ts, Write};
use ryu_sim::{DiskFaults, FaultCounts, PowerCut, Ratio, SimDisk, SimRng};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

const DIR: &str = "db";
const CYCLES: usize = 3;

type State = BTreeMap<Vec<u8>, Vec<u8>>;

/// Everything visible to a fresh snapshot.
fn read_all(db: &Db) -> ryu_engine::Result<State> {
    let r = db.begin_read();
    r.range::<std::ops::RangeFull>(..).collect()
}

/// Which engine configuration a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Standard,
    TinyCache,
    WithoutCommitSyncs,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Standard => "engine-crash",
            Variant::TinyCache => "engine-crash-tiny-cache",
            Variant::WithoutCommitSyncs => "engine-crash-without-commit-syncs",
        }
    }

    fn params(self) -> Params {
        match self {
            Variant::Standard => Params {
                options: Options {
                    cache_pages: 256,
                    wal_segment_bytes: 16 << 10,
                    checkpoint_after_bytes: 0,
                    sync_commits: true,
                },
                keys: 200,
            },
            Variant::TinyCache => Params {
                options: Options {
                    cache_pages: 3,
                    wal_segment_bytes: 16 << 10,
                    // Checkpoints also start on their own, inside flushes and commits.
                    checkpoint_after_bytes: 24 << 10,
                    sync_commits: true,
                },
                keys: 2000,
            },
            Variant::WithoutCommitSyncs => Params {
                options: Options {
                    cache_pages: 64,
                    wal_segment_bytes: 16 << 10,
                    checkpoint_after_bytes: 24 << 10,
                    sync_commits: false,
                },
                keys: 300,
            },
        }
    }
}

struct Params {
    options: Options,
    keys: u64,
}

/// What a range of seeds reached, so a test can check the sweep tests what it claims.
#[derive(Debug, Default, Clone)]
pub struct Totals {
    pub seeds: u64,
    pub acked: u64,
    pub recovered_in_doubt: u64,
    pub reported_corruption: u64,
    pub cuts_in_checkpoint: u64,
    pub max_pages: u64,
    /// Seeds in which each kind of fault fired at least once.
    pub seeds_with_no_space: u64,
    pub seeds_with_silent_corruption: u64,
    pub seeds_with_sync_errors: u64,
    pub seeds_with_torn_writes: u64,
}

/// Run one seed of `variant`.
pub fn run(variant: Variant, opts: &RunOptions) -> RunReport {
    let mut totals = Totals::default();
    let mut outcome = Vec::new();
    run_seed(opts.seed, &variant.params(), &mut totals, &mut outcome);
    totals.seeds = 1;
    RunReport {
        scenario: variant.name(),
        seed: opts.seed,
        fingerprint: u64::from(crc32fast::hash(&outcome)) << 32
            | u64::from(crc32fast::hash(format!("{totals:?}").as_bytes())),
        events: totals.acked + totals.recovered_in_doubt,
        sim_ns: 0,
        faults: 0,
        summary: format!("{totals:?}"),
        result: Ok(()),
    }
}

/// Run `seeds` of `variant` in order and add up what they reached. A failing seed
/// panics with its message (the caller prints the replay line).
pub fn totals(variant: Variant, seeds: std::ops::Range<u64>) -> Result<Totals, Failure> {
    let mut totals = Totals::default();
    for seed in seeds {
        let mut outcome = Vec::new();
        let params = variant.params();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_seed(seed, &params, &mut totals, &mut outcome)
        }));
        if let Err(panic) = r {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            return Err(Failure {
                message: format!(
                    "seed {seed}: {message}\nreplay: {}",
                    crate::replay_command(variant.name(), &RunOptions::new(seed))
                ),
                trace_tail: Vec::new(),
            });
        }
        totals.seeds += 1;
    }
    Ok(totals)
}

#[derive(Debug, Clone)]
struct Commit {
    ts: Ts,
    writes: Vec<Write>,
}

fn apply(state: &mut State, c: &Commit) {
    for (k, v) in &c.writes {
        match v {
            Some(v) => state.insert(k.clone(), v.clone()),
            None => state.remove(k),
        };
    }
}

/// The seed's world and its history of commits.
struct Run<'a> {
    rng: SimRng,
    sim: SimDisk,
    params: &'a Params,
    /// Acknowledged commits, in timestamp order.
    acked: Vec<Commit>,
    /// Commits buffered but not known durable, in timestamp order, after `acked`.
    pending: Vec<(CommitTicket, Commit)>,
    last_ts: Ts,
    counter: u64,
}

fn allowed_failure(e: &Error, counts: &FaultCounts) -> bool {
    match e {
        Error::Corrupted { .. } => counts.silent_corruptions() > 0,
        Error::Io { .. } => counts.latent_sector_errors > 0,
        _ => false,
    }
}

fn run_seed(seed: u64, params: &Params, totals: &mut Totals, outcome: &mut Vec<u8>) {
    let mut rng = SimRng::new(seed);
    let sim = SimDisk::new(rng.next_u64());
    let mut faults = if rng.chance(Ratio::new(1, 2)) {
        DiskFaults::draw(&mut rng)
    } else {
        DiskFaults::default()
    };
    if rng.chance(Ratio::new(1, 5)) {
        faults.quota_bytes = Some(rng.between(60_000, 300_000));
    }
    let mut run = Run {
        rng,
        sim,
        params,
        acked: Vec::new(),
        pending: Vec::new(),
        last_ts: 0,
        counter: 0,
    };
    for _ in 0..CYCLES {
        let budget = run.rng.between(20, 2500) as i64;
        let cut = PowerCut::new(Arc::new(run.sim.clone()), budget);
        run.sim.set_faults(faults);
        if let Ok(db) = Db::open(
            Arc::new(cut.clone()),
            Path::new(DIR),
            params.options.clone(),
        ) {
            run.last_ts = db.last_committed_ts();
            run.workload(&db, &cut, totals);
            totals.max_pages = totals.max_pages.max(db.stats().page_count);
        }
        // Power is gone: whatever the engine still holds is lost with the process.
        run.sim.crash();
        run.sim.set_faults(DiskFaults::default());
        let reported = !run.verify(totals);
        // What each cycle recovered, for the run's fingerprint.
        outcome.extend_from_slice(&run.last_ts.to_le_bytes());
        outcome.extend_from_slice(&(run.acked.len() as u64).to_le_bytes());
        outcome.push(u8::from(reported));
        if reported {
            totals.reported_corruption += 1;
            break;
        }
    }
    let counts = run.sim.fault_counts();
    totals.seeds_with_no_space += u64::from(counts.no_space > 0);
    totals.seeds_with_silent_corruption += u64::from(counts.silent_corruptions() > 0);
    totals.seeds_with_sync_errors += u64::from(counts.sync_errors > 0);
    totals.seeds_with_torn_writes += u64::from(counts.crash_writes_torn > 0);
}

impl Run<'_> {
    fn key(&mut self) -> Vec<u8> {
        format!("key{:05}", self.rng.below(self.params.keys)).into_bytes()
    }

    fn writes(&mut self) -> Vec<Write> {
        self.counter += 1;
        let n = self.rng.between(1, 6);
        let mut writes: Vec<Write> = Vec::new();
        for _ in 0..n {
            let k = self.key();
            writes.retain(|(old, _)| *old != k);
            if self.rng.chance(Ratio::new(1, 5)) {
                writes.push((k, None));
            } else {
                let mut v =
                    format!("c{}-{}", self.counter, String::from_utf8_lossy(&k)).into_bytes();
                v.resize(v.len() + self.rng.below(400) as usize, b'.');
                writes.push((k, Some(v)));
            }
        }
        writes.sort();
        writes
    }

    /// Without `sync_commits` a commit is only written (visible) until `Db::sync` or
    /// a checkpoint makes it durable.
    fn lenient(&self) -> bool {
        !self.params.options.sync_commits
    }

    /// Move commits whose records are durable to `acked`, in order.
    fn promote(&mut self, db: &Db) {
        if self.lenient() {
            return;
        }
        self.promote_written(db);
    }

    /// Move every commit whose record is written to `acked`: durable once a sync (or
    /// a checkpoint covering it) succeeded after it was written.
    fn promote_written(&mut self, db: &Db) {
        while self.pending.first().is_some_and(|(t, _)| db.is_durable(t)) {
            let (_, c) = self.pending.remove(0);
            self.acked.push(c);
        }
    }

    fn state(&self, upto: usize) -> State {
        let mut s = State::new();
        let all = self.acked.iter().chain(self.pending.iter().map(|(_, c)| c));
        for c in all.take(upto) {
            apply(&mut s, c);
        }
        s
    }

    fn workload(&mut self, db: &Db, cut: &PowerCut, totals: &mut Totals) {
        let steps = self.rng.between(10, 80);
        for _ in 0..steps {
            if cut.is_cut() {
                return;
            }
            match self.rng.below(100) {
                0..60 => self.transaction(db),
                60..78 if self.lenient() => {
                    if db.sync().is_ok() {
                        self.promote_written(db);
                    }
                }
                60..78 => {
                    let _ = db.flush();
                }
                78..86 => {
                    // Often aim the cut inside this checkpoint: its page writes, the
                    // syncs, the superblock, the WAL cleanup.
                    if self.rng.chance(Ratio::new(1, 3)) {
                        cut.arm(self.rng.between(1, 40) as i64);
                    }
                    let before = cut.is_cut();
                    let visible = db.last_committed_ts();
                    if let Ok(info) = db.checkpoint()
                        && self.lenient()
                    {
                        // The checkpoint made its state durable: commits written up to
                        // its timestamp cannot be lost any more.
                        assert!(info.checkpoint_ts >= visible);
                        while self
                            .pending
                            .first()
                            .is_some_and(|(t, c)| db.is_durable(t) && c.ts <= info.checkpoint_ts)
                        {
                            let (_, c) = self.pending.remove(0);
                            self.acked.push(c);
                        }
                    }
                    if !before && cut.is_cut() {
                        totals.cuts_in_checkpoint += 1;
                    }
                }
                86..92 => {
                    let ts = self.last_ts + self.rng.between(1, 4);
                    let writes = self.writes();
                    if let Ok(t) = db.apply_at_begin(ts, writes.clone()) {
                        self.last_ts = ts;
                        self.pending.push((t, Commit { ts, writes }));
                    }
                }
                _ => {
                    self.transaction(db);
                    let _ = db.flush();
                }
            }
            self.promote(db);
        }
    }

    /// A transaction that reads a few keys (checked against the model) and writes.
    fn transaction(&mut self, db: &Db) {
        let mut w = db.begin_write();
        let start = w.start_ts();
        let acked_visible = self.acked.iter().take_while(|c| c.ts <= start).count();
        assert_eq!(
            acked_visible,
            self.acked.len(),
            "a snapshot starts at the newest acknowledged commit"
        );
        // Commits written but not yet durable are visible too (only without
        // `sync_commits`; with it, `promote` has just acknowledged every written one).
        let written = self
            .pending
            .iter()
            .take_while(|(t, _)| db.is_durable(t))
            .count();
        let expect = self.state(acked_visible + written);
        for _ in 0..2 {
            let k = self.key();
            match w.get(&k) {
                Ok(v) => assert_eq!(
                    v.as_ref(),
                    expect.get(&k),
                    "read of {:?} at ts {start}",
                    String::from_utf8_lossy(&k)
                ),
                Err(e) => assert!(
                    matches!(e, Error::Io { .. }) || allowed_failure(&e, &self.sim.fault_counts()),
                    "read failed with {e}"
                ),
            }
        }
        let writes = self.writes();
        for (k, v) in &writes {
            match v {
                Some(v) => w.put(k, v).unwrap(),
                None => w.delete(k).unwrap(),
            }
        }
        match w.commit_begin() {
            Ok(t) => {
                assert_eq!(t.ts(), self.last_ts + 1);
                self.last_ts = t.ts();
                let ts = t.ts();
                self.pending.push((t, Commit { ts, writes }));
            }
            Err(Error::Conflict { key }) => assert!(
                self.pending
                    .iter()
                    .any(|(_, c)| c.writes.iter().any(|(k, _)| *k == key)),
                "a lone writer conflicts only with commits not yet durable at its start"
            ),
            Err(_) => {} // refused before it got a timestamp: never committed
        }
    }

    /// Reopen on the crashed disk and compare with the history. False if the damage was
    /// (legitimately) reported instead.
    fn verify(&mut self, totals: &mut Totals) -> bool {
        let counts = self.sim.fault_counts();
        let db = match Db::open(
            Arc::new(self.sim.clone()),
            Path::new(DIR),
            self.params.options.clone(),
        ) {
            Ok(db) => db,
            Err(e) => {
                assert!(
                    allowed_failure(&e, &counts),
                    "reopen failed: {e}; faults {counts:?}"
                );
                return false;
            }
        };
        let got = match read_all(&db) {
            Ok(s) => s,
            Err(e) => {
                assert!(
                    allowed_failure(&e, &counts),
                    "read after recovery failed: {e}; faults {counts:?}"
                );
                return false;
            }
        };
        // Without `sync_commits` the WAL cannot tell rot from a torn tail: a flipped
        // bit in a synced record ends the log there, and recovery returns a shorter
        // (never a different) history, which the caller supplies again.
        let lo = if self.lenient() && counts.silent_corruptions() > 0 {
            0
        } else {
            self.acked.len()
        };
        let hi = self.acked.len() + self.pending.len();
        let got_ts = db.last_committed_ts();
        let ts_at = |k: usize| {
            let all = self.acked.iter().chain(self.pending.iter().map(|(_, c)| c));
            all.take(k).last().map_or(0, |c| c.ts)
        };
        let Some(k) = (lo..=hi).find(|&k| ts_at(k) == got_ts && self.state(k) == got) else {
            let want = self.state(lo);
            let missing: Vec<_> = want
                .keys()
                .filter(|k| got.get(*k) != want.get(*k))
                .take(5)
                .collect();
            panic!(
                "recovered state is not the acknowledged commits plus an in-doubt prefix: {} acked, {} in doubt, recovered ts {got_ts}, {} keys recovered, {} expected; differing keys {missing:?}; faults {counts:?}",
                lo,
                hi - lo,
                got.len(),
                want.len()
            );
        };
        let all: Vec<Commit> = self
            .acked
            .iter()
            .cloned()
            .chain(self.pending.drain(..).map(|(_, c)| c))
            .take(k)
            .collect();
        let acked = self.acked.len().min(k);
        totals.acked += acked as u64;
        totals.recovered_in_doubt += (k - acked) as u64;
        self.acked = all;
        let last = self.acked.last().map_or(0, |c| c.ts);
        assert_eq!(db.last_committed_ts(), last, "recovered timestamp");
        self.last_ts = last;
        true
    }
}
