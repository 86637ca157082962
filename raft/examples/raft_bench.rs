//! Raft throughput and commit-latency benchmark (issue 4, last "Done when" item).
//!
//! An in-process 3-node cluster of [`RawNode`]s with no network delay: one thread
//! drives every node, handing each round's messages straight to their recipients.
//! `P` concurrent proposers each keep one proposal in flight; a proposer proposes
//! again as soon as the leader applies its previous proposal. Every round, each
//! node handles one `Ready` holding whatever piled up since the last one, which is
//! how Raft amortises: many proposals share one append message and one write.
//!
//! Measured: proposals committed (applied on the leader) per second, and the commit
//! latency from `propose` to the leader applying the entry, p50 and p99, as the
//! median of 3 repetitions (each on a fresh cluster). Storage variants:
//!
//! - `mem`: [`MemStorage`], no disk. It is compacted every few thousand entries, up
//!   to what every node applied (`MemStorage::append` re-checks the whole log's
//!   index contiguity on every call, so an uncompacted log makes appends O(n)).
//! - `disk`: the durable [`DiskLog`] over [`StdDisk`] on a temp directory, one log
//!   per node, with the real fsyncs `DiskLog::persist` does for every `Ready`.
//!
//! Run: `cargo run --release -p ryu-raft --example raft_bench` (under a minute), or
//! with `-- --quick` for a ~10 s smoke run.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use ryu_io::{DynDisk, StdDisk};
use ryu_raft::{
    ConfState, Config, DiskLog, DiskLogOptions, Entry, EntryKind, HardState, MemStorage, Message,
    RawNode, Role, Storage,
};

/// This example is a driver, not core code: it measures wall-clock time, so it
/// reads the real clock (the determinism ban is for the core crates).
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
mod clock {
    use std::time::{Duration, Instant};

    #[derive(Clone, Copy)]
    pub struct Stamp(Instant);

    pub fn now() -> Stamp {
        Stamp(Instant::now())
    }

    impl Stamp {
        pub fn since(self, earlier: Stamp) -> Duration {
            self.0.duration_since(earlier.0)
        }
    }
}
use clock::Stamp;

const PROPOSERS: [usize; 3] = [1, 64, 256];
const REPETITIONS: usize = 3;
/// Proposal payload: the proposer's id (8 bytes) plus padding.
const PAYLOAD_BYTES: usize = 16;
/// `MemStorage` is compacted once this many applied entries sit above its snapshot.
const COMPACT_EVERY: u64 = 4096;

/// The write side of a `Ready` for each storage variant.
trait BenchStorage: Storage + Sized {
    /// Make `entries` and `hs` durable (steps 2-3 of a `Ready`).
    fn persist(&mut self, hs: Option<HardState>, entries: &[Entry]);
    /// Discard entries up to `index` (everyone applied them), if worthwhile.
    fn maybe_compact(&mut self, index: u64, conf: &ConfState);
}

impl BenchStorage for MemStorage {
    fn persist(&mut self, hs: Option<HardState>, entries: &[Entry]) {
        self.append(entries);
        if let Some(hs) = hs {
            self.set_hard_state(hs);
        }
    }

    fn maybe_compact(&mut self, index: u64, conf: &ConfState) {
        let first = self.first_index().expect("first index");
        if index >= first + COMPACT_EVERY {
            self.create_snapshot(index, conf.clone(), Vec::new());
            self.compact(index);
        }
    }
}

impl BenchStorage for DiskLog {
    fn persist(&mut self, hs: Option<HardState>, entries: &[Entry]) {
        DiskLog::persist(self, hs, entries).expect("disk log write");
    }

    /// Not compacted: it keeps entries in memory cheaply, and a compaction is a
    /// metadata write of its own that the measurement should not include.
    fn maybe_compact(&mut self, _index: u64, _conf: &ConfState) {}
}

struct Outcome {
    committed: u64,
    /// Readys in which the leader wrote entries, during the measured window.
    leader_writes: u64,
    elapsed: Duration,
    latency_ns: Histogram<u64>,
}

fn voters() -> ConfState {
    ConfState::with_voters([1, 2, 3])
}

/// Runs `proposers` closed-loop proposers against a 3-node cluster over `storages`
/// for `warmup + measure`, recording only what completes during `measure`.
fn run<S: BenchStorage>(
    storages: Vec<S>,
    proposers: usize,
    warmup: Duration,
    measure: Duration,
) -> Outcome {
    let conf = voters();
    let mut nodes: Vec<RawNode<S>> = storages
        .into_iter()
        .enumerate()
        .map(|(i, storage)| {
            let id = i as u64 + 1;
            RawNode::new(&Config::new(id), storage, ChaCha8Rng::seed_from_u64(id))
                .expect("raw node")
        })
        .collect();
    let mut applied = [0u64; 3];
    let mut inbox: Vec<Message> = Vec::new();
    let mut leader_writes = 0u64;

    // One round: every node with work handles one Ready; then messages are delivered.
    // Calls `on_apply(data)` for each entry the leader (node 1) applies.
    fn round<S: BenchStorage>(
        nodes: &mut [RawNode<S>],
        applied: &mut [u64; 3],
        inbox: &mut Vec<Message>,
        leader_writes: &mut u64,
        mut on_apply: impl FnMut(&[u8]),
    ) -> bool {
        let mut worked = false;
        for (i, node) in nodes.iter_mut().enumerate() {
            if !node.has_ready() {
                continue;
            }
            worked = true;
            let mut rd = node.ready();
            inbox.append(&mut rd.messages);
            assert!(rd.snapshot.is_none(), "no snapshots in a healthy cluster");
            if i == 0 && !rd.entries.is_empty() {
                *leader_writes += 1;
            }
            node.storage_mut().persist(rd.hard_state, &rd.entries);
            inbox.append(&mut rd.persisted_messages);
            for e in &rd.committed_entries {
                if i == 0 && e.kind == EntryKind::Normal && !e.data.is_empty() {
                    on_apply(&e.data);
                }
            }
            if let Some(last) = rd.committed_entries.last() {
                applied[i] = last.index;
            }
            node.advance();
        }
        for m in inbox.drain(..) {
            nodes[(m.to.0 - 1) as usize].step(m);
        }
        worked
    }

    nodes[0].campaign();
    while round(
        &mut nodes,
        &mut applied,
        &mut inbox,
        &mut leader_writes,
        |_| {},
    ) {}
    assert_eq!(nodes[0].soft_state().role, Role::Leader, "node 1 leads");

    let mut latency_ns = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("hist");
    let mut in_flight: Vec<Option<Stamp>> = vec![None; proposers];
    let mut idle: Vec<usize> = (0..proposers).collect();
    let mut committed = 0u64;
    let start = clock::now();
    let mut measuring: Option<Stamp> = None;
    loop {
        let now = clock::now();
        if measuring.is_none() && now.since(start) >= warmup {
            measuring = Some(now);
            leader_writes = 0;
        }
        if let Some(m) = measuring
            && now.since(m) >= measure
        {
            return Outcome {
                committed,
                leader_writes,
                elapsed: now.since(m),
                latency_ns,
            };
        }
        for p in idle.drain(..) {
            let mut data = vec![0u8; PAYLOAD_BYTES];
            data[..8].copy_from_slice(&(p as u64).to_le_bytes());
            nodes[0].propose(data).expect("leader accepts proposals");
            in_flight[p] = Some(now);
        }
        let counting = measuring;
        round(
            &mut nodes,
            &mut applied,
            &mut inbox,
            &mut leader_writes,
            |data| {
                let p = u64::from_le_bytes(data[..8].try_into().expect("8 bytes")) as usize;
                let began = in_flight[p].take().expect("proposal in flight");
                if counting.is_some() {
                    let done = clock::now();
                    latency_ns.saturating_record(done.since(began).as_nanos() as u64);
                    committed += 1;
                }
                idle.push(p);
            },
        );
        let everyone = *applied.iter().min().expect("three nodes");
        for node in nodes.iter_mut() {
            node.storage_mut().maybe_compact(everyone, &conf);
        }
    }
}

struct Row {
    variant: &'static str,
    proposers: usize,
    per_sec: f64,
    batch: f64,
    p50: Duration,
    p99: Duration,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn measure_variant<S: BenchStorage>(
    variant: &'static str,
    proposers: usize,
    warmup: Duration,
    measure: Duration,
    mut make: impl FnMut() -> Vec<S>,
) -> Row {
    let (mut rates, mut batches) = (Vec::new(), Vec::new());
    let (mut p50s, mut p99s) = (Vec::new(), Vec::new());
    for _ in 0..REPETITIONS {
        let out = run(make(), proposers, warmup, measure);
        rates.push(out.committed as f64 / out.elapsed.as_secs_f64());
        batches.push(out.committed as f64 / out.leader_writes.max(1) as f64);
        p50s.push(out.latency_ns.value_at_quantile(0.50) as f64);
        p99s.push(out.latency_ns.value_at_quantile(0.99) as f64);
    }
    Row {
        variant,
        proposers,
        per_sec: median(rates),
        batch: median(batches),
        p50: Duration::from_nanos(median(p50s) as u64),
        p99: Duration::from_nanos(median(p99s) as u64),
    }
}

/// A temp directory holding one `DiskLog` per node; dropped (deleted) with the logs.
struct DiskCluster {
    _dir: tempfile::TempDir,
}

fn disk_logs(base: &Path) -> (DiskCluster, Vec<DiskLog>) {
    let dir = tempfile::tempdir_in(base).expect("temp dir");
    let disk: DynDisk = Arc::new(StdDisk::new(dir.path()));
    let logs = (1..=3)
        .map(|id| {
            DiskLog::open(
                disk.clone(),
                Path::new(&format!("n{id}")),
                voters(),
                DiskLogOptions::default(),
            )
            .expect("open disk log")
        })
        .collect();
    (DiskCluster { _dir: dir }, logs)
}

/// Reads host facts for the machine line. A driver, not core code: it reads
/// `/proc` directly rather than through the `io` Disk trait.
#[allow(clippy::disallowed_methods)]
fn machine_line(temp: &Path) -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string());
    let temp = temp.canonicalize().unwrap_or_else(|_| temp.to_path_buf());
    // The mount with the longest mount point that is a prefix of the temp dir.
    let fs = std::fs::read_to_string("/proc/mounts")
        .ok()
        .and_then(|s| {
            s.lines()
                .filter_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    (f.len() >= 3 && temp.starts_with(f[1])).then(|| (f[1].len(), f[2], f[0]))
                })
                .max_by_key(|m| m.0)
                .map(|(_, fstype, dev)| format!("{fstype} ({dev})"))
        })
        .unwrap_or_else(|| "unknown".to_string());
    format!(
        "machine: nproc={cores}, CPU: {cpu}, temp dir {} on {fs}",
        temp.display()
    )
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (warmup, measure) = if quick {
        (Duration::from_millis(100), Duration::from_millis(400))
    } else {
        (Duration::from_millis(300), Duration::from_secs(2))
    };
    let base: PathBuf = std::env::temp_dir();
    println!("ryu-raft bench: in-process 3-node cluster, no network delay, single driver thread");
    println!("{}", machine_line(&base));
    println!(
        "{} proposers closed-loop, {PAYLOAD_BYTES}-byte payloads, {:?} warmup + {:?} measured, \
         median of {REPETITIONS} runs{}",
        PROPOSERS.map(|p| p.to_string()).join("/"),
        warmup,
        measure,
        if quick { " (--quick)" } else { "" }
    );
    println!();

    let mut rows = Vec::new();
    for &p in &PROPOSERS {
        rows.push(measure_variant("mem", p, warmup, measure, || {
            (0..3).map(|_| MemStorage::new(voters())).collect()
        }));
    }
    for &p in &PROPOSERS {
        let mut keep = Vec::new();
        rows.push(measure_variant("disk", p, warmup, measure, || {
            let (dir, logs) = disk_logs(&base);
            keep.push(dir);
            logs
        }));
        keep.clear();
    }

    println!(
        "{:<8} {:>9} {:>14} {:>12} {:>12} {:>7}   openraft (M1 Max)",
        "storage", "proposers", "proposals/s", "p50", "p99", "batch"
    );
    for r in &rows {
        let reference = match (r.variant, r.proposers) {
            ("mem", 1) => "33,000/s",
            ("mem", 256) => "1,808,000/s",
            _ => "-",
        };
        println!(
            "{:<8} {:>9} {:>14.0} {:>12} {:>12} {:>7.1}   {reference}",
            r.variant,
            r.proposers,
            r.per_sec,
            ms(r.p50),
            ms(r.p99),
            r.batch
        );
    }
    println!();
    println!("batch: proposals committed per leader log write (how far each Ready amortises).");
    println!(
        "disk: one DiskLog per node on the same device, written one after another by the single \
         driver thread (a real cluster fsyncs on three machines in parallel)."
    );
    println!(
        "openraft figures: its published in-memory benchmark (1 and 256 clients, 3 nodes) on an \
         Apple M1 Max; a different machine and implementation, comparable at most in order of \
         magnitude."
    );
}
