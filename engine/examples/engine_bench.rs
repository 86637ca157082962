//! Ryu against redb on the real disk, side by side in one run (not a timed test):
//!
//! ```text
//! cargo run --release -p ryu-engine --example engine_bench [-- [--quick] [--reps N] [--checkpoint-mib N] [DIR]]
//! ```
//!
//! Both engines run the same workloads on the same file system, alternating within
//! each repetition (commit cells in slices, Ryu and redb taking turns; which one goes
//! first alternates), and the table shows the median over the repetitions of each
//! engine's value and of the per-repetition ratio: the machine is shared, and pairing
//! keeps a slow patch of the disk from landing on one engine only.
//! The disk's `fdatasync` latency is probed before and after the commit cells, and the
//! 1-minute load average at start and end, so a reader can tell a quiet run from a
//! busy one.
//!
//! - **Commits**: 1, 16 and 64 threads each commit single-key transactions (a fresh
//!   key and a 100-byte value) in a loop for a fixed time, every commit durable
//!   before it returns: redb with `Durability::Immediate` (its default; one
//!   `fdatasync` per commit, writers serialized), Ryu with its normal `commit`
//!   (group commit: one `fdatasync` for every commit buffered meanwhile). Latency is
//!   from `begin_write` to `commit` returning, recorded in an hdrhistogram.
//! - **Random point reads**: one thread, `get` of uniformly random existing keys in one
//!   read transaction, the logical data (keys + values) 4x the cache each engine is
//!   given (Ryu `Options::cache_pages`, redb `Builder::set_cache_size`, the same bytes).
//!   The OS page cache is not dropped, so an engine cache miss costs a `pread` from
//!   kernel memory and a page decode, not a device read.
//! - **Range scan**: one thread, a full ordered scan of the same data; MB/s of key and
//!   value bytes returned.
//!
//! Progress and per-repetition numbers go to stderr; the table (Markdown) to stdout.
//! `--quick` is a smoke run (short cells, small data). The databases live in a
//! temporary directory made inside DIR (default /tmp) and removed at the end.
//! `--checkpoint-mib N` sets Ryu's `checkpoint_after_bytes` (default: the engine's).
//!
//! This file is the real world's driver: it reads the wall clock, starts threads and
//! reads /proc and the host file system, which the engine itself never does.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use hdrhistogram::Histogram;
use redb::{ReadableDatabase, TableDefinition};
use ryu_engine::{Db, Options, PAGE_SIZE};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("bench");
const WRITERS: [usize; 3] = [1, 16, 64];
const COMMIT_VALUE: [u8; 100] = [7u8; 100];
const READ_VALUE_BYTES: usize = 150;
const LOAD_BATCH: u64 = 1000;

struct Config {
    mode: &'static str,
    reps: usize,
    /// Per engine and cell, cut into `commit_slices` alternating slices.
    commit_time: Duration,
    commit_slices: usize,
    read_keys: u64,
    reads: u64,
    scan_passes: usize,
    /// Ryu's `Options::checkpoint_after_bytes`; `None` keeps the engine default.
    checkpoint_after_bytes: Option<u64>,
}

impl Config {
    fn full() -> Config {
        Config {
            mode: "full",
            reps: 5,
            commit_time: Duration::from_secs(2),
            commit_slices: 4,
            read_keys: 400_000,
            reads: 200_000,
            scan_passes: 3,
            checkpoint_after_bytes: None,
        }
    }

    fn quick() -> Config {
        Config {
            mode: "quick",
            reps: 3,
            commit_time: Duration::from_millis(300),
            commit_slices: 2,
            read_keys: 50_000,
            reads: 20_000,
            scan_passes: 1,
            checkpoint_after_bytes: None,
        }
    }

    fn logical_bytes(&self) -> u64 {
        self.read_keys * (read_key(0).len() + READ_VALUE_BYTES) as u64
    }

    /// Both engines' cache: a quarter of the logical data, in whole pages.
    fn cache_pages(&self) -> usize {
        (self.logical_bytes() / 4 / PAGE_SIZE as u64) as usize
    }

    fn cache_bytes(&self) -> usize {
        self.cache_pages() * PAGE_SIZE
    }
}

fn read_key(i: u64) -> String {
    format!("key{i:011}")
}

fn read_value(i: u64) -> Vec<u8> {
    (0..READ_VALUE_BYTES)
        .map(|j| (i as usize).wrapping_mul(31).wrapping_add(j) as u8)
        .collect()
}

/// xorshift64: the same key sequence for both engines.
fn random_keys(seed: u64, keys: u64) -> impl Iterator<Item = u64> {
    let mut x = seed | 1;
    std::iter::repeat_with(move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % keys
    })
}

/// One engine's view for the benchmark.
trait Engine: Sync {
    fn commit_one(&self, key: &[u8], value: &[u8]);
}

struct Ryu(Db);

impl Engine for Ryu {
    fn commit_one(&self, key: &[u8], value: &[u8]) {
        let mut txn = self.0.begin_write();
        txn.put(key, value).expect("ryu put");
        txn.commit().expect("ryu commit");
    }
}

struct Redb(redb::Database);

impl Engine for Redb {
    fn commit_one(&self, key: &[u8], value: &[u8]) {
        // Durability::Immediate is the default: durable when commit returns.
        let txn = self.0.begin_write().expect("redb begin");
        {
            let mut table = txn.open_table(TABLE).expect("redb table");
            table.insert(key, value).expect("redb insert");
        }
        txn.commit().expect("redb commit");
    }
}

fn open_ryu(disk: &ryu_io::DynDisk, name: &str, cfg: &Config) -> Db {
    let defaults = Options::default();
    let options = Options {
        cache_pages: cfg.cache_pages(),
        checkpoint_after_bytes: cfg
            .checkpoint_after_bytes
            .unwrap_or(defaults.checkpoint_after_bytes),
        ..defaults
    };
    Db::open(disk.clone(), Path::new(name), options).expect("ryu open")
}

fn open_redb(path: &Path, cache_bytes: usize) -> redb::Database {
    let db = redb::Database::builder()
        .set_cache_size(cache_bytes)
        .create(path)
        .expect("redb create");
    // Create the table up front so every measured commit does the same work.
    let txn = db.begin_write().expect("redb begin");
    txn.open_table(TABLE).expect("redb table");
    txn.commit().expect("redb commit");
    db
}

#[derive(Debug, Clone, Copy)]
struct CommitResult {
    per_sec: f64,
    p50: Duration,
    p99: Duration,
}

/// Commits, wall time and latencies of one or more slices of a cell.
struct Tally {
    count: u64,
    elapsed: Duration,
    hist: Histogram<u64>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            count: 0,
            elapsed: Duration::ZERO,
            hist: Histogram::<u64>::new(3).expect("histogram"),
        }
    }

    fn add(&mut self, other: &Tally) {
        self.count += other.count;
        self.elapsed += other.elapsed;
        self.hist.add(&other.hist).expect("merge histograms");
    }

    fn result(&self) -> CommitResult {
        CommitResult {
            per_sec: self.count as f64 / self.elapsed.as_secs_f64(),
            p50: Duration::from_nanos(self.hist.value_at_quantile(0.50)),
            p99: Duration::from_nanos(self.hist.value_at_quantile(0.99)),
        }
    }
}

/// `writers` threads commit in a loop until `time` is up (keys unique per `slice`).
fn commit_run(engine: &dyn Engine, writers: usize, time: Duration, slice: usize) -> Tally {
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let (count, hist) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let stop = &stop;
                s.spawn(move || {
                    let mut hist = Histogram::<u64>::new(3).expect("histogram");
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let key = format!("s{slice:02}-w{w:03}-{i:010}");
                        let t = Instant::now();
                        engine.commit_one(key.as_bytes(), &COMMIT_VALUE);
                        hist.record(t.elapsed().as_nanos() as u64)
                            .expect("record latency");
                        i += 1;
                    }
                    (i, hist)
                })
            })
            .collect();
        std::thread::sleep(time);
        stop.store(true, Ordering::Relaxed);
        let mut total = 0;
        let mut merged = Histogram::<u64>::new(3).expect("histogram");
        for h in handles {
            let (n, hist) = h.join().expect("writer thread");
            total += n;
            merged.add(&hist).expect("merge histograms");
        }
        (total, merged)
    });
    Tally {
        count,
        elapsed: start.elapsed(),
        hist,
    }
}

fn load_ryu(db: &Db, keys: u64) {
    for chunk in 0..keys.div_ceil(LOAD_BATCH) {
        let mut txn = db.begin_write();
        for i in chunk * LOAD_BATCH..((chunk + 1) * LOAD_BATCH).min(keys) {
            txn.put(read_key(i).as_bytes(), &read_value(i))
                .expect("ryu put");
        }
        txn.commit().expect("ryu commit");
    }
    // Everything into the paged tree: reads then come from the B+tree and its cache.
    db.checkpoint().expect("ryu checkpoint");
}

fn load_redb(db: &redb::Database, keys: u64) {
    for chunk in 0..keys.div_ceil(LOAD_BATCH) {
        let txn = db.begin_write().expect("redb begin");
        {
            let mut table = txn.open_table(TABLE).expect("redb table");
            for i in chunk * LOAD_BATCH..((chunk + 1) * LOAD_BATCH).min(keys) {
                table
                    .insert(read_key(i).as_bytes(), read_value(i).as_slice())
                    .expect("redb insert");
            }
        }
        txn.commit().expect("redb commit");
    }
}

/// Reads per second, after a warm-up of a tenth as many reads.
fn reads_ryu(db: &Db, cfg: &Config, seed: u64) -> f64 {
    let r = db.begin_read();
    let mut keys = random_keys(seed, cfg.read_keys);
    let mut run = |n: u64| {
        let mut bytes = 0usize;
        for i in keys.by_ref().take(n as usize) {
            let v = r.get(read_key(i).as_bytes()).expect("ryu get");
            bytes += v.expect("key present").len();
        }
        assert_eq!(bytes, n as usize * READ_VALUE_BYTES);
    };
    run(cfg.reads / 10);
    let start = Instant::now();
    run(cfg.reads);
    cfg.reads as f64 / start.elapsed().as_secs_f64()
}

fn reads_redb(db: &redb::Database, cfg: &Config, seed: u64) -> f64 {
    let txn = db.begin_read().expect("redb begin_read");
    let table = txn.open_table(TABLE).expect("redb table");
    let mut keys = random_keys(seed, cfg.read_keys);
    let mut run = |n: u64| {
        let mut bytes = 0usize;
        for i in keys.by_ref().take(n as usize) {
            let v = table.get(read_key(i).as_bytes()).expect("redb get");
            bytes += v.expect("key present").value().len();
        }
        assert_eq!(bytes, n as usize * READ_VALUE_BYTES);
    };
    run(cfg.reads / 10);
    let start = Instant::now();
    run(cfg.reads);
    cfg.reads as f64 / start.elapsed().as_secs_f64()
}

/// MB/s of keys and values over `passes` full scans.
fn scan_ryu(db: &Db, cfg: &Config) -> f64 {
    let r = db.begin_read();
    let start = Instant::now();
    let mut bytes = 0usize;
    for _ in 0..cfg.scan_passes {
        let mut n = 0u64;
        for e in r.range::<std::ops::RangeFull>(..) {
            let (k, v) = e.expect("ryu scan");
            bytes += k.len() + v.len();
            n += 1;
        }
        assert_eq!(n, cfg.read_keys);
    }
    bytes as f64 / 1e6 / start.elapsed().as_secs_f64()
}

fn scan_redb(db: &redb::Database, cfg: &Config) -> f64 {
    let txn = db.begin_read().expect("redb begin_read");
    let table = txn.open_table(TABLE).expect("redb table");
    let start = Instant::now();
    let mut bytes = 0usize;
    for _ in 0..cfg.scan_passes {
        let mut n = 0u64;
        for e in table.range::<&[u8]>(..).expect("redb range") {
            let (k, v) = e.expect("redb scan");
            bytes += k.value().len() + v.value().len();
            n += 1;
        }
        assert_eq!(n, cfg.read_keys);
    }
    bytes as f64 / 1e6 / start.elapsed().as_secs_f64()
}

/// p50 of `n` small `write_at` + `sync_data` pairs on a fresh file: the disk's durable
/// write latency right now, which sets the pace of every commit below.
fn fsync_p50(disk: &ryu_io::DynDisk, n: usize) -> Duration {
    let path = Path::new("fsync-probe");
    let file = disk.create(path).expect("probe create");
    file.write_at(0, &[0u8; 1 << 16]).expect("probe write");
    file.sync_data().expect("probe sync");
    let mut lat: Vec<Duration> = (0..n)
        .map(|i| {
            let t = Instant::now();
            file.write_at((i as u64 * 256) % (1 << 16), &[1u8; 256])
                .expect("probe write");
            file.sync_data().expect("probe sync");
            t.elapsed()
        })
        .collect();
    drop(file);
    disk.remove(path).expect("probe remove");
    lat.sort_unstable();
    lat[n / 2]
}

/// Medians of Ryu's and redb's values, and the median of the per-repetition ratios
/// (the engines took turns within each repetition, so the ratio pairs like with like
/// even when the shared machine's speed drifts between repetitions).
fn paired(ryu: &[f64], redb: &[f64]) -> (f64, f64, f64) {
    let ratios = ryu.iter().zip(redb).map(|(a, b)| a / b).collect();
    (median(ryu.to_vec()), median(redb.to_vec()), median(ratios))
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn dir_bytes(path: &Path) -> u64 {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => std::fs::read_dir(path)
            .expect("read_dir")
            .map(|e| dir_bytes(&e.expect("dir entry").path()))
            .sum(),
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}

fn remove(path: &Path) {
    let _ = std::fs::remove_dir_all(path).or_else(|_| std::fs::remove_file(path));
}

/// `nproc`, the CPU model and the file system holding `dir`.
fn machine(dir: &Path) -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim())
        .to_string();
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0.0, |kb| kb as f64 / (1024.0 * 1024.0));
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let fs = mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && dir.starts_with(f[1])).then(|| (f[1].len(), f[0], f[1], f[2]))
        })
        .max_by_key(|m| m.0)
        .map_or("unknown fs".to_string(), |(_, dev, at, ty)| {
            format!("{ty} on {dev} (mounted at {at})")
        });
    format!(
        "{cores} cores (nproc), {cpu}, {mem_gib:.0} GiB RAM; {fs}; directory {}",
        dir.display()
    )
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// The 1-minute load average: on a shared machine, other work skews the numbers.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn fmt_rate(x: f64, unit: &str) -> String {
    if x >= 100.0 {
        format!("{x:.0} {unit}")
    } else {
        format!("{x:.1} {unit}")
    }
}

fn fmt_dur(secs: f64) -> String {
    format!("{:.1?}", Duration::from_secs_f64(secs))
}

struct Row {
    name: String,
    ryu: String,
    redb: String,
    ratio: f64,
    target: String,
}

fn row(name: String, ryu: String, redb: String, ratio: f64, target: Option<(f64, &str)>) -> Row {
    let target = match target {
        Some((min, what)) => format!(
            "{what}: {}",
            if ratio >= min {
                "**met**"
            } else {
                "**NOT met**"
            }
        ),
        None => String::new(),
    };
    Row {
        name,
        ryu,
        redb,
        ratio,
        target,
    }
}

fn main() {
    let mut cfg = Config::full();
    let mut dir_arg: Option<PathBuf> = None;
    let mut reps: Option<usize> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => cfg = Config::quick(),
            "--checkpoint-mib" => {
                cfg.checkpoint_after_bytes = Some(
                    args.next()
                        .and_then(|n| n.parse::<u64>().ok())
                        .expect("--checkpoint-mib N")
                        << 20,
                );
            }
            "--reps" => {
                reps = Some(
                    args.next()
                        .and_then(|n| n.parse().ok())
                        .filter(|&n| n > 0)
                        .expect("--reps N (N >= 1)"),
                );
            }
            "-h" | "--help" => {
                println!("usage: bench [--quick] [--reps N] [--checkpoint-mib N] [DIR]");
                return;
            }
            other if other.starts_with('-') => panic!("unknown flag {other}"),
            other => dir_arg = Some(other.into()),
        }
    }
    if let Some(r) = reps {
        cfg.reps = r;
    }
    let tmp = tempfile::Builder::new()
        .prefix("ryu-bench-")
        .tempdir_in(dir_arg.as_deref().unwrap_or(Path::new("/tmp")))
        .expect("tempdir");
    let dir = tmp.path().to_path_buf();
    let disk: ryu_io::DynDisk = Arc::new(ryu_io::StdDisk::new(&dir));
    let started = Instant::now();
    let load_before = load_average();
    let machine = machine(&dir);
    eprintln!("machine: {machine}");

    // Commits: fresh databases for every cell, engines interleaved.
    let mut commit_results: Vec<[Vec<CommitResult>; 2]> =
        WRITERS.iter().map(|_| [Vec::new(), Vec::new()]).collect();
    let probes = if cfg.mode == "quick" { 50 } else { 200 };
    let fsync_before = fsync_p50(&disk, probes);
    eprintln!("fdatasync p50 before the commit cells: {fsync_before:.1?}");
    let mut ryu_checkpoints = 0;
    for rep in 0..cfg.reps {
        for (wi, &writers) in WRITERS.iter().enumerate() {
            let ryu_name = format!("ryu-w{writers}-r{rep}");
            let ryu = Ryu(open_ryu(&disk, &ryu_name, &cfg));
            // One durable commit up front, as redb's table creation in `open_redb`:
            // Ryu's first commit creates the first WAL segment, a one-time cost the
            // measured cell should not include.
            ryu.commit_one(b"warm-up", b"");
            let generation = ryu.0.stats().generation;
            let redb_path = dir.join(format!("redb-w{writers}-r{rep}.redb"));
            let redb = Redb(open_redb(&redb_path, cfg.cache_bytes()));
            // The cell's time is cut into slices that alternate between the engines
            // (who goes first alternates too), so a change in the shared disk's speed
            // lands on both rather than on whichever happened to run then.
            let (mut ta, mut tb) = (Tally::new(), Tally::new());
            let slice_time = cfg.commit_time / cfg.commit_slices as u32;
            for slice in 0..cfg.commit_slices {
                if (rep + slice) % 2 == 0 {
                    ta.add(&commit_run(&ryu, writers, slice_time, slice));
                    tb.add(&commit_run(&redb, writers, slice_time, slice));
                } else {
                    tb.add(&commit_run(&redb, writers, slice_time, slice));
                    ta.add(&commit_run(&ryu, writers, slice_time, slice));
                }
            }
            ryu_checkpoints += ryu.0.stats().generation - generation;
            drop(ryu);
            drop(redb);
            remove(&dir.join(&ryu_name));
            remove(&redb_path);
            let (a, b) = (ta.result(), tb.result());
            eprintln!(
                "rep {rep} commits {writers:>2} writers: ryu {:>8.0}/s p50 {:>9.1?} p99 {:>9.1?} | redb {:>8.0}/s p50 {:>9.1?} p99 {:>9.1?}",
                a.per_sec, a.p50, a.p99, b.per_sec, b.p50, b.p99
            );
            commit_results[wi][0].push(a);
            commit_results[wi][1].push(b);
        }
    }

    let fsync_after = fsync_p50(&disk, probes);
    eprintln!("fdatasync p50 after the commit cells: {fsync_after:.1?}");

    // Reads and scans: one loaded database per engine, repetitions interleaved.
    eprintln!(
        "loading {} keys ({:.1} MiB logical) into each engine, cache {:.1} MiB",
        cfg.read_keys,
        mib(cfg.logical_bytes()),
        mib(cfg.cache_bytes() as u64)
    );
    let ryu = open_ryu(&disk, "ryu-read", &cfg);
    let t = Instant::now();
    load_ryu(&ryu, cfg.read_keys);
    let ryu_load = t.elapsed();
    let ryu_disk = ryu.stats().page_count * PAGE_SIZE as u64;
    let redb_path = dir.join("redb-read.redb");
    let redb = open_redb(&redb_path, cfg.cache_bytes());
    let t = Instant::now();
    load_redb(&redb, cfg.read_keys);
    let redb_load = t.elapsed();
    let redb_disk = dir_bytes(&redb_path);
    eprintln!(
        "loaded: ryu {ryu_load:.1?} ({:.1} MiB of pages, WAL {:.1} MiB), redb {redb_load:.1?} ({:.1} MiB file)",
        mib(ryu_disk),
        mib(dir_bytes(&dir.join("ryu-read").join(ryu_engine::WAL_DIR))),
        mib(redb_disk),
    );
    let mut reads = [Vec::new(), Vec::new()];
    let mut scans = [Vec::new(), Vec::new()];
    for rep in 0..cfg.reps {
        let seed = 0x9e37_79b9_7f4a_7c15 ^ rep as u64;
        let (a, b, c, d) = if rep % 2 == 0 {
            let a = reads_ryu(&ryu, &cfg, seed);
            let b = reads_redb(&redb, &cfg, seed);
            (a, b, scan_ryu(&ryu, &cfg), scan_redb(&redb, &cfg))
        } else {
            let b = reads_redb(&redb, &cfg, seed);
            let a = reads_ryu(&ryu, &cfg, seed);
            let d = scan_redb(&redb, &cfg);
            (a, b, scan_ryu(&ryu, &cfg), d)
        };
        let hits = ryu.stats().cache;
        eprintln!(
            "rep {rep} reads: ryu {a:>8.0}/s redb {b:>8.0}/s | scan: ryu {c:>7.1} MB/s redb {d:>7.1} MB/s | ryu cache hits {} misses {}",
            hits.hits, hits.misses
        );
        reads[0].push(a);
        reads[1].push(b);
        scans[0].push(c);
        scans[1].push(d);
    }
    drop(ryu);
    drop(redb);

    // The table.
    let mut rows = Vec::new();
    for (wi, &writers) in WRITERS.iter().enumerate() {
        let [a, b] = &commit_results[wi];
        let pair = |f: fn(&CommitResult) -> f64| {
            let (xs, ys): (Vec<f64>, Vec<f64>) =
                (a.iter().map(f).collect(), b.iter().map(f).collect());
            paired(&xs, &ys)
        };
        let (ra, rb, ratio) = pair(|r| r.per_sec);
        let target = match writers {
            1 => Some((1.0, ">= 1x")),
            64 => Some((10.0, ">= 10x")),
            _ => None,
        };
        let s = if writers == 1 { "" } else { "s" };
        rows.push(row(
            format!("commits/s, {writers} writer{s}"),
            fmt_rate(ra, "/s"),
            fmt_rate(rb, "/s"),
            ratio,
            target,
        ));
        for (label, f) in [
            (
                "p50",
                (|r: &CommitResult| r.p50.as_secs_f64()) as fn(&CommitResult) -> f64,
            ),
            ("p99", |r: &CommitResult| r.p99.as_secs_f64()),
        ] {
            let (la, lb, ratio) = pair(f);
            rows.push(row(
                format!("{label} commit latency, {writers} writer{s}"),
                fmt_dur(la),
                fmt_dur(lb),
                ratio,
                None,
            ));
        }
    }
    let (ra, rb, ratio) = paired(&reads[0], &reads[1]);
    rows.push(row(
        "random point reads/s (data 4x cache)".into(),
        fmt_rate(ra, "/s"),
        fmt_rate(rb, "/s"),
        ratio,
        Some((1.0, ">= 1x")),
    ));
    let (sa, sb, ratio) = paired(&scans[0], &scans[1]);
    rows.push(row(
        "range scan MB/s".into(),
        fmt_rate(sa, "MB/s"),
        fmt_rate(sb, "MB/s"),
        ratio,
        None,
    ));

    let ckpt = cfg.checkpoint_after_bytes.map_or_else(
        || "engine default".to_string(),
        |b| format!("{:.0} MiB", mib(b)),
    );
    println!("machine: {machine}");
    println!(
        "run: {}, median of {} repetitions, total {:.0?}; 1-min load average {load_before} at \
         start, {} at end",
        cfg.mode,
        cfg.reps,
        started.elapsed(),
        load_average(),
    );
    println!(
        "commits: {:.1?} per engine and cell in {} alternating slices, fresh databases, 1 key + {} B value per commit; \
         disk fdatasync p50 {fsync_before:.1?} before, {fsync_after:.1?} after; \
         Ryu checkpoints during the cells: {ryu_checkpoints} (checkpoint_after_bytes: {ckpt})",
        cfg.commit_time,
        cfg.commit_slices,
        COMMIT_VALUE.len(),
    );
    println!(
        "reads/scans: {} keys x {} B = {:.1} MiB logical; cache {:.1} MiB for both \
         (Ryu {} pages, redb set_cache_size); on disk Ryu {:.1} MiB, redb {:.1} MiB; \
         {} reads and {} full scan(s) per repetition; OS page cache warm",
        cfg.read_keys,
        read_key(0).len() + READ_VALUE_BYTES,
        mib(cfg.logical_bytes()),
        mib(cfg.cache_bytes() as u64),
        cfg.cache_pages(),
        mib(ryu_disk),
        mib(redb_disk),
        cfg.reads,
        cfg.scan_passes,
    );
    println!();
    println!("| workload | Ryu | redb | Ryu/redb | target |");
    println!("|---|---:|---:|---:|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {:.2}x | {} |",
            r.name, r.ryu, r.redb, r.ratio, r.target
        );
    }
    println!();
    println!(
        "Ryu/redb is the median of the per-repetition ratios (the engines take turns \
         within each repetition), so it can differ from the quotient of the two medians \
         when the shared disk's speed changed between repetitions. Above 1x favours Ryu for throughput rows, below 1x for latency rows. \
         Targets (issue 3): 64 writers >= 10x redb commits/s; 1 writer commits/s and \
         random reads >= redb."
    );
}
