//! A benchmark of the engine on the real disk (not a timed test):
//!
//! ```text
//! cargo run --release -p ryu-engine --example bench [-- DIR]
//! ```
//!
//! Prints commits/s with p50/p99 commit latency for 1, 16 and 64 concurrent writers
//! (group commit at work), random point reads/s with the data about 4x the page
//! cache, and range-scan throughput. The comparison with redb the issue asks for needs
//! redb and hdrhistogram as dev-dependencies, which this crate may not add yet.
//!
//! This file is the real world's driver: it reads the wall clock and starts threads,
//! which the engine itself never does.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use ryu_engine::{Db, Options};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn open(dir: &Path, options: &Options) -> Db {
    let disk: ryu_io::DynDisk = Arc::new(ryu_io::StdDisk::new(dir));
    Db::open(disk, Path::new("db"), options.clone()).expect("open")
}

fn commits(dir: &Path, writers: usize, per_writer: usize) {
    let db = open(&dir.join(format!("w{writers}")), &Options::default());
    let start = Instant::now();
    let mut latencies: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let db = db.clone();
                s.spawn(move || {
                    let mut lat = Vec::with_capacity(per_writer);
                    for i in 0..per_writer {
                        let t = Instant::now();
                        let mut txn = db.begin_write();
                        txn.put(format!("w{w:03}-{i:08}").as_bytes(), &[7u8; 100])
                            .expect("put");
                        txn.commit().expect("commit");
                        lat.push(t.elapsed());
                    }
                    lat
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("writer"))
            .collect()
    });
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    let n = writers * per_writer;
    println!(
        "| commits, {writers:>2} writers | {:>10.0} commits/s | p50 {:>8.1?} | p99 {:>8.1?} |",
        n as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 50),
        percentile(&latencies, 99)
    );
}

fn reads_and_scans(dir: &Path) {
    let options = Options {
        cache_pages: 1024,
        ..Options::default()
    };
    let db = open(&dir.join("reads"), &options);
    let keys = 100_000u64;
    for chunk in 0..keys / 1000 {
        let mut txn = db.begin_write();
        for i in chunk * 1000..(chunk + 1) * 1000 {
            txn.put(format!("key{i:010}").as_bytes(), &[9u8; 150])
                .expect("put");
        }
        txn.commit().expect("commit");
    }
    db.checkpoint().expect("checkpoint");
    let pages = db.stats().page_count;
    println!(
        "| data: {keys} keys, {pages} pages, cache {} pages ({:.1}x) |",
        options.cache_pages,
        pages as f64 / options.cache_pages as f64
    );
    let r = db.begin_read();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let reads = 200_000;
    let start = Instant::now();
    for _ in 0..reads {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let k = format!("key{:010}", x % keys);
        assert!(r.get(k.as_bytes()).expect("get").is_some());
    }
    let elapsed = start.elapsed();
    println!(
        "| random point reads | {:>10.0} reads/s |",
        reads as f64 / elapsed.as_secs_f64()
    );
    let start = Instant::now();
    let mut bytes = 0usize;
    for e in r.range::<std::ops::RangeFull>(..) {
        let (k, v) = e.expect("scan");
        bytes += k.len() + v.len();
    }
    let elapsed = start.elapsed();
    println!(
        "| range scan | {:>10.1} MB/s |",
        bytes as f64 / 1e6 / elapsed.as_secs_f64()
    );
}

fn main() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = std::env::args()
        .nth(1)
        .map_or_else(|| tmp.path().to_path_buf(), Into::into);
    println!("| workload | throughput | latency | |");
    println!("|---|---|---|---|");
    commits(&dir, 1, 500);
    commits(&dir, 16, 200);
    commits(&dir, 64, 100);
    reads_and_scans(&dir);
}
