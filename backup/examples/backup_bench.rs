//! Backup benchmark on the real disk.
//!
//! ```text
//! cargo run --release -p ryu-backup --example backup_bench -- [--dir PATH] [--size-mib N] [--small-size-mib N] [--load-secs S] [--rate-mb N]
//! ```
//!
//! For each of two database sizes it fills a database (3 KiB values, checkpointed),
//! then measures: `cp -r` of the database directory; a backup of it (MB/s of files
//! written); foreground commits/s and p99 commit latency (4 writer threads, one small
//! write per commit) alone and while a backup runs on another thread; and a restore
//! (MB/s). Both `cp` and the backup read from a warm page cache (the database was just
//! written), so the comparison is like for like. The directory is removed at the end.
//!
//! This is a production-side program: it uses the real clock, threads and `std::fs`
//! (only to measure sizes and clean up), which the core crates may not.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // the real world's shell

use ryu_backup::{BackupId, BackupJob, BackupOptions, RestoreOptions, Step};
use ryu_engine::{Db, Options};
use ryu_io::{Clock, DynDisk, StdDisk, SystemClock};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const VALUE_BYTES: usize = 3000;
const BATCH: usize = 2000;

struct Args {
    dir: PathBuf,
    size_mib: u64,
    small_size_mib: u64,
    load_secs: u64,
    rate_mb: Option<u64>,
}

fn args() -> Args {
    let mut a = Args {
        dir: PathBuf::from("target/backup-bench"),
        size_mib: 1024,
        small_size_mib: 256,
        load_secs: 3,
        rate_mb: None,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    for pair in v.chunks(2) {
        let val = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--dir" => a.dir = PathBuf::from(val),
            "--size-mib" => a.size_mib = val.parse().expect("--size-mib N"),
            "--small-size-mib" => a.small_size_mib = val.parse().expect("--small-size-mib N"),
            "--load-secs" => a.load_secs = val.parse().expect("--load-secs S"),
            "--rate-mb" => a.rate_mb = Some(val.parse().expect("--rate-mb N")),
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

fn dir_bytes(p: &Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
        let m = e.metadata().expect("metadata");
        n += if m.is_dir() {
            dir_bytes(&e.path())
        } else {
            m.len()
        };
    }
    n
}

fn fill(db: &Db, size_mib: u64) {
    let total = size_mib << 20;
    let mut written = 0u64;
    let mut i = 0u64;
    let mut ts = db.last_committed_ts();
    while written < total {
        let writes = (0..BATCH)
            .map(|_| {
                i += 1;
                let mut v = vec![0u8; VALUE_BYTES];
                v[..8].copy_from_slice(&i.to_le_bytes());
                (format!("key{i:012}").into_bytes(), Some(v))
            })
            .collect();
        ts += 1;
        db.apply_at(ts, writes).expect("fill");
        written += (BATCH * VALUE_BYTES) as u64;
    }
    db.checkpoint().expect("checkpoint");
}

/// Commits/s and p99 latency (µs) of 4 writer threads for `secs`, while `during` runs.
fn load(db: &Db, secs: u64, during: impl FnOnce() + Send) -> (f64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4u64)
            .map(|t| {
                let db = db.clone();
                let stop = stop.clone();
                s.spawn(move || {
                    let mut lat = Vec::new();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let t0 = Instant::now();
                        let mut w = db.begin_write();
                        w.put(format!("load{t}-{n}").as_bytes(), b"value")
                            .expect("put");
                        if w.commit().is_ok() {
                            lat.push(t0.elapsed().as_micros() as u64);
                        }
                        n += 1;
                    }
                    lat
                })
            })
            .collect();
        let t0 = Instant::now();
        s.spawn(during);
        std::thread::sleep(Duration::from_secs(secs));
        stop.store(true, Ordering::Relaxed);
        let mut all: Vec<u64> = handles
            .into_iter()
            .flat_map(|h| h.join().expect("writer"))
            .collect();
        let secs = t0.elapsed().as_secs_f64();
        all.sort_unstable();
        let p99 = all.get(all.len() * 99 / 100).copied().unwrap_or(0);
        (all.len() as f64 / secs, p99)
    })
}

fn run_backup(
    db: &Db,
    disk: &DynDisk,
    dest: &Path,
    id: &str,
    rate_mb: Option<u64>,
) -> (Duration, u64) {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let options = BackupOptions {
        id: BackupId::new(id).expect("id"),
        max_bytes_per_sec: rate_mb.map(|r| r * 1_000_000),
        ..Default::default()
    };
    let t0 = Instant::now();
    let mut job = BackupJob::start(db, disk.clone(), dest, clock, options).expect("start");
    let started = t0.elapsed();
    let mut copied = None;
    let summary = loop {
        match job.step(8 << 20).expect("step") {
            Step::Done(s) => break s,
            Step::Throttled(_) => std::thread::sleep(Duration::from_millis(5)),
            Step::Progress(_) => {}
        }
        let p = job.progress();
        if copied.is_none() && p.bytes_done == p.bytes_total {
            copied = Some(t0.elapsed());
        }
    };
    if std::env::var("BENCH_PHASES").is_ok() {
        eprintln!(
            "backup {id}: start {started:.2?}, copied {copied:.2?}, done {:.2?}",
            t0.elapsed()
        );
    }
    let bytes = summary.manifest.files.iter().map(|f| f.size_bytes).sum();
    (t0.elapsed(), bytes)
}

fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

fn bench(root: &Path, size_mib: u64, load_secs: u64, rate_mb: Option<u64>) {
    let disk: DynDisk = Arc::new(StdDisk::new(root));
    let name = format!("db-{size_mib}");
    let t0 = Instant::now();
    let db = Db::open(disk.clone(), Path::new(&name), Options::default()).expect("open");
    fill(&db, size_mib);
    let db_bytes = dir_bytes(&root.join(&name));
    eprintln!(
        "filled {size_mib} MiB in {:.1?} ({db_bytes} bytes on disk)",
        t0.elapsed()
    );

    let t0 = Instant::now();
    let ok = std::process::Command::new("cp")
        .arg("-r")
        .arg(root.join(&name))
        .arg(root.join(format!("cp-{size_mib}")))
        .status()
        .expect("cp");
    assert!(ok.success());
    let cp = t0.elapsed();
    // A backup makes its files durable; `cp` does not. Also time cp followed by sync.
    let t0 = Instant::now();
    let ok = std::process::Command::new("cp")
        .arg("-r")
        .arg(root.join(&name))
        .arg(root.join(format!("cp2-{size_mib}")))
        .status()
        .expect("cp");
    assert!(ok.success());
    let ok = std::process::Command::new("sync")
        .arg("-f")
        .arg(root.join(format!("cp2-{size_mib}")))
        .status()
        .expect("sync");
    assert!(ok.success());
    let cp_sync = t0.elapsed();

    let dest = PathBuf::from(format!("backups-{size_mib}"));
    let (backup_time, backup_bytes) = run_backup(&db, &disk, &dest, "b1", None);
    let (base_cps, base_p99) = load(&db, load_secs, || {});
    let db2 = db.clone();
    let disk2 = disk.clone();
    let dest2 = dest.clone();
    let (bk_cps, bk_p99) = load(&db, load_secs, move || {
        // Back to back backups for the whole measurement window.
        let t0 = Instant::now();
        let mut i = 0;
        while t0.elapsed() < Duration::from_secs(load_secs) {
            i += 1;
            run_backup(&db2, &disk2, &dest2, &format!("load{i}"), rate_mb);
        }
    });
    let target = PathBuf::from(format!("restore-{size_mib}"));
    let t0 = Instant::now();
    ryu_backup::restore(
        &disk,
        &dest,
        "b1",
        &disk,
        &target,
        &RestoreOptions::default(),
    )
    .expect("restore");
    let restore = t0.elapsed();

    println!("| database MiB | {size_mib} |");
    println!(
        "| cp -r | {:.0} MB/s ({:.2?}) |",
        mb_per_s(db_bytes, cp),
        cp
    );
    println!(
        "| cp -r + sync | {:.0} MB/s ({:.2?}) |",
        mb_per_s(db_bytes, cp_sync),
        cp_sync
    );
    let backup_rate = mb_per_s(backup_bytes, backup_time);
    println!(
        "| backup | {backup_rate:.0} MB/s ({:.2?}, {backup_bytes} bytes): {:.0}% of cp, {:.0}% of cp + sync |",
        backup_time,
        100.0 * backup_rate / mb_per_s(db_bytes, cp),
        100.0 * backup_rate / mb_per_s(db_bytes, cp_sync)
    );
    println!("| commits/s alone | {base_cps:.0} (p99 {base_p99} µs) |");
    if let Some(r) = rate_mb {
        println!("| backups during the load limited to | {r} MB/s |");
    }
    println!(
        "| commits/s during backup | {bk_cps:.0} (p99 {bk_p99} µs): throughput {:+.1}%, p99 {:+.1}% |",
        100.0 * (bk_cps - base_cps) / base_cps,
        100.0 * (bk_p99 as f64 - base_p99 as f64) / base_p99.max(1) as f64
    );
    println!(
        "| restore | {:.0} MB/s ({:.2?}) |",
        mb_per_s(backup_bytes, restore),
        restore
    );
}

fn main() {
    let a = args();
    std::fs::create_dir_all(&a.dir).expect("create bench dir");
    println!("| measure | value |\n|---|---|");
    for size in [a.small_size_mib, a.size_mib] {
        bench(&a.dir, size, a.load_secs, a.rate_mb);
    }
    std::fs::remove_dir_all(&a.dir).expect("clean up");
}
