//! Backup benchmark on the real disk.
//!
//! ```text
//! cargo run --release -p ryu-backup --example backup_bench -- [--dir PATH] [--size-mib N] [--small-size-mib N] [--copy-size-mib N[,N..]] [--load-secs S] [--rate-mb N[,N..]] [--reps N] [--pacing S/W[/N[i][k][w]],..] [--step-mib N]
//! ```
//!
//! For each of two database sizes it fills a database (random 3000-byte values,
//! checkpointed),
//! then measures, `--reps` times (default 3) with the settings interleaved, and prints
//! medians: `cp -r` of the database directory, alone and followed by `sync -f` (after
//! an untimed `cp -r`, in alternating order); a
//! backup of it for each `--pacing` setting `S/W[/N[i][k][w]]` (`BackupOptions::sync_every_bytes`
//! and `BackupOptions::write_behind_bytes` in MiB, or KiB with a `k` suffix as in
//! `64k`, 0 for none, `auto` for the default; `N` the nice value of the thread that
//! runs backups beside the load, default 10 as the server's backup thread, `i` to put
//! its I/O in the idle class, `k` to set `BackupOptions::keep_in_page_cache`, `w` to
//! set `BackupOptions::whole_pages` (pages files in format 2, each page stored whole);
//! default `auto/auto`) in MB/s of the database (its bytes on disk, as for `cp`; the
//! backup itself is smaller), in steps of `--step-mib` (default 1,
//! as the server); foreground commits/s and p99 (and p99.9, p99.99 and the longest) commit latency (4 writer threads, one
//! small write per commit) for each setting at each rate while backups limited to
//! `--rate-mb` (a list: every rate with every setting; 0 or the default unlimited) run
//! back to back on another thread (for at least `--load-secs` and until the last
//! backup is complete, its syncs included), each such window paired with the load
//! alone for as long, right after it in even repetitions and right before it in odd
//! ones (the machine's speed drifts over minutes, so each window is compared with its
//! neighbour: the table shows the median of the pairs' changes and
//! the range of the p99 changes), and in each repetition a control pair of two windows
//! of the load alone (how far neighbouring windows differ with no backup at all); and
//! a restore (MB/s of the database it makes). With `--interleave S[/G]` the load is
//! measured another way instead (see [`Slots`]): per case and repetition one window of
//! `--load-secs` cut into pairs of `S`-second slots, the backups stepping in one slot
//! of each pair (which one drawn per pair) and paused in the other, the first `G`
//! seconds of every slot (default 0.25) not counted; and a control window whose "on"
//! slots run nothing. It prints the p99 of all on slots against all off slots, the
//! median of the pairs' p99 changes with a bootstrap 95% interval, and that median less
//! the control's. `--copy-size-mib` (default none) adds sizes at which only the
//! copies are timed (`cp`, `cp` + `sync`, the backups unthrottled, the restore; no
//! load): pick one larger than the kernel's dirty-page limit (`vm.dirty_ratio` of
//! memory), where a plain `cp` can no longer return with its copy still in memory and
//! is timed at the speed it really copies. A size of 0 is skipped. Both `cp` and
//! the backup read from a warm page cache (the database was just written) as far as
//! it holds the database beside its copy, so the comparison is like for like. Before every timed phase the copies of earlier
//! phases are removed and the file system synced, so no phase pays for another's
//! writeback. The directory is removed at the end.
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

const USAGE: &str = "usage: backup_bench [--dir PATH] [--size-mib N] [--small-size-mib N] \
[--copy-size-mib N[,N..]] [--load-secs S] [--rate-mb N[,N..]] [--reps N] [--pacing S/W[/N[i][k][w]],..] [--step-mib N] [--interleave S[/G]]
  (see the comment at the top of backup/examples/backup_bench.rs)";

const VALUE_BYTES: usize = 3000;
const BATCH: usize = 2000;
/// `fill` checkpoints after every this many bytes of values, so a database larger
/// than memory never has to sit whole in the engine's in-memory delta.
const FILL_CHECKPOINT_BYTES: u64 = 1 << 30;

/// `(sync_every_bytes, write_behind_bytes, nice, io_idle, keep_in_page_cache)`: `None` for the job's default;
/// the nice value and I/O class of the thread that runs the backups beside the load.
type Pacing = (Option<u64>, Option<u64>, i32, bool, bool, bool);

/// The server's backup worker runs at this nice value (`src/server/core.rs`)...
const BACKUP_NICE: i32 = 10;
/// ... and in the default I/O class (`N` + `i` in `--pacing` tries the idle class).
const BACKUP_IO_IDLE: bool = false;

struct Args {
    dir: PathBuf,
    size_mib: u64,
    small_size_mib: u64,
    /// Sizes at which only the copies are timed, no load.
    copy_size_mib: Vec<u64>,
    load_secs: u64,
    /// The rate limits (MB/s) of the backups beside the load, each measured with every
    /// pacing setting; `None` for unlimited.
    rate_mb: Vec<Option<u64>>,
    reps: usize,
    /// Each setting (see [`Pacing`]).
    pacing: Vec<Pacing>,
    /// The budget of each `BackupJob::step`, in MiB.
    step_mib: u64,
    /// Measure the load interleaved (see [`Slots`]) instead of in contiguous pairs.
    interleave: Option<Slots>,
}

fn args() -> Args {
    let mut a = Args {
        dir: PathBuf::from("target/backup-bench"),
        size_mib: 1024,
        small_size_mib: 256,
        copy_size_mib: Vec::new(),
        load_secs: 3,
        rate_mb: vec![None],
        reps: 3,
        pacing: vec![(None, None, BACKUP_NICE, BACKUP_IO_IDLE, false, false)],
        step_mib: 1,
        interleave: None,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    if v.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        std::process::exit(0);
    }
    for pair in v.chunks(2) {
        let val = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--dir" => a.dir = PathBuf::from(val),
            "--size-mib" => a.size_mib = val.parse().expect("--size-mib N"),
            "--small-size-mib" => a.small_size_mib = val.parse().expect("--small-size-mib N"),
            "--copy-size-mib" => {
                a.copy_size_mib = val
                    .split(',')
                    .map(|n| n.parse().expect("--copy-size-mib N[,N..]"))
                    .collect()
            }
            "--load-secs" => a.load_secs = val.parse().expect("--load-secs S"),
            "--rate-mb" => {
                a.rate_mb = val
                    .split(',')
                    // 0: unlimited (a job refuses a rate of zero).
                    .map(|r| Some(r.parse().expect("--rate-mb N[,N..]")).filter(|&r| r > 0))
                    .collect()
            }
            "--step-mib" => a.step_mib = val.parse().expect("--step-mib N"),
            "--interleave" => {
                let (secs, guard) = val.split_once('/').unwrap_or((&val, "0.25"));
                let slots = Slots {
                    secs: secs.parse().expect("--interleave S[/G]"),
                    guard: guard.parse().expect("--interleave S[/G]"),
                };
                assert!(
                    slots.secs > 0.0 && (0.0..slots.secs).contains(&slots.guard),
                    "--interleave S[/G]: a slot longer than its guard"
                );
                // Checked against `--load-secs` once all arguments are read.
                a.interleave = Some(slots);
            }
            "--reps" => a.reps = val.parse().expect("--reps N"),
            "--pacing" => {
                // A size in MiB, or in KiB with a `k` suffix; kept in bytes.
                let mib = |v: &str| {
                    (v != "auto").then(|| match v.strip_suffix('k') {
                        Some(k) => k.parse::<u64>().expect("--pacing S/W[/N[i]],..") << 10,
                        None => v.parse::<u64>().expect("--pacing S/W[/N[i]],..") << 20,
                    })
                };
                a.pacing = val
                    .split(',')
                    .map(|p| {
                        let v: Vec<&str> = p.split('/').collect();
                        assert!(matches!(v.len(), 2 | 3), "--pacing S/W[/N[i]],..");
                        let (nice, idle, keep, whole) =
                            v.get(2)
                                .map_or((BACKUP_NICE, BACKUP_IO_IDLE, false, false), |n| {
                                    let flags = (n.contains('i'), n.contains('k'), n.contains('w'));
                                    let n = n.trim_end_matches(['i', 'k', 'w']);
                                    (n.parse().expect("nice"), flags.0, flags.1, flags.2)
                                });
                        (mib(v[0]), mib(v[1]), nice, idle, keep, whole)
                    })
                    .collect()
            }
            other => {
                eprintln!("unknown argument {other}\n{USAGE}");
                std::process::exit(2);
            }
        }
    }
    if let Some(slots) = a.interleave {
        assert!(
            a.load_secs as f64 >= 2.0 * slots.secs && a.load_secs < 4000,
            "--interleave S: --load-secs must hold at least one pair of slots, and less than 4000 s (µs in a u32)"
        );
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

/// `VALUE_BYTES` bytes that no layer can store in fewer (xorshift64* from the key's
/// number): the backup stores a page without its zeros at the end, and values of
/// zeros would flatter it as real data never does. (Before format 3 of the pages
/// files the values were zeros but for an 8-byte counter.)
fn random_value(i: u64) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(VALUE_BYTES);
    while v.len() < VALUE_BYTES {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    v.truncate(VALUE_BYTES);
    v
}

fn fill(db: &Db, size_mib: u64) {
    let total = size_mib << 20;
    let mut written = 0u64;
    let mut i = 0u64;
    let mut ts = db.last_committed_ts();
    let mut since_checkpoint = 0u64;
    while written < total {
        let writes = (0..BATCH)
            .map(|_| {
                i += 1;
                (format!("key{i:012}").into_bytes(), Some(random_value(i)))
            })
            .collect();
        ts += 1;
        db.apply_at(ts, writes).expect("fill");
        written += (BATCH * VALUE_BYTES) as u64;
        since_checkpoint += (BATCH * VALUE_BYTES) as u64;
        if since_checkpoint >= FILL_CHECKPOINT_BYTES && written < total {
            db.checkpoint().expect("checkpoint");
            since_checkpoint = 0;
        }
    }
    db.checkpoint().expect("checkpoint");
}

/// Commits/s, latency percentiles, the longest commit and the seconds measured, of 4 writer threads while
/// `during` runs, for at least `secs` and until `during` returns (it is handed the
/// start time).
fn load(db: &Db, secs: f64, during: impl FnOnce(Instant) + Send) -> Window {
    let (samples, secs) = load_samples(db, secs, during);
    let mut all: Vec<u64> = samples.iter().map(|&(_, l)| u64::from(l)).collect();
    all.sort_unstable();
    let at = |per_10k: usize| all.get(all.len() * per_10k / 10_000).copied().unwrap_or(0);
    Window {
        cps: all.len() as f64 / secs,
        p99: at(9_900),
        p999: at(9_990),
        p9999: at(9_999),
        max: all.last().copied().unwrap_or(0),
        secs,
    }
}

/// Every commit of 4 writer threads while `during` runs, for at least `secs` and until
/// `during` returns (it is handed the start time): when it started (µs after the
/// start) and how long it took (µs); and the seconds measured.
fn load_samples(db: &Db, secs: f64, during: impl FnOnce(Instant) + Send) -> (Vec<(u32, u32)>, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4u64)
            .map(|t| {
                let db = db.clone();
                let stop = stop.clone();
                s.spawn(move || {
                    let mut samples = Vec::new();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let t0 = Instant::now();
                        let mut w = db.begin_write();
                        w.put(format!("load{t}-{n}").as_bytes(), b"value")
                            .expect("put");
                        if w.commit().is_ok() {
                            // µs in a u32: windows up to 71 minutes.
                            let at = t0.saturating_duration_since(start).as_micros();
                            let took = t0.elapsed().as_micros();
                            samples.push((at as u32, took as u32));
                        }
                        n += 1;
                    }
                    samples
                })
            })
            .collect();
        let background = s.spawn(move || during(start));
        std::thread::sleep(Duration::from_secs_f64(secs));
        background.join().expect("background");
        stop.store(true, Ordering::Relaxed);
        let all: Vec<(u32, u32)> = handles
            .into_iter()
            .flat_map(|h| h.join().expect("writer"))
            .collect();
        (all, start.elapsed().as_secs_f64())
    })
}

/// Start a backup job with a `--pacing` setting at a rate.
fn start_backup(
    db: &Db,
    disk: &DynDisk,
    dest: &Path,
    id: &str,
    rate_mb: Option<u64>,
    pacing: Pacing,
) -> BackupJob {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let options = BackupOptions {
        id: BackupId::new(id).expect("id"),
        max_bytes_per_sec: rate_mb.map(|r| r * 1_000_000),
        sync_every_bytes: pacing.0,
        write_behind_bytes: pacing.1,
        keep_in_page_cache: pacing.4,
        whole_pages: pacing.5,
        ..Default::default()
    };
    BackupJob::start(db, disk.clone(), dest, clock, options).expect("start")
}

/// Run one backup to the end. Returns the time taken and the bytes of files made.
fn run_backup(
    db: &Db,
    disk: &DynDisk,
    dest: &Path,
    id: &str,
    rate_mb: Option<u64>,
    pacing: Pacing,
    step_mib: u64,
) -> (Duration, u64) {
    let t0 = Instant::now();
    let mut job = start_backup(db, disk, dest, id, rate_mb, pacing);
    let started = t0.elapsed();
    let mut copied = None;
    // After the copy: sync the pages file, write the manifest, read the pages file back
    // (one step per budget), verify the rest, publish, unlock.
    let mut finalize = Vec::new();
    let summary = loop {
        let t1 = Instant::now();
        let step = job.step(step_mib << 20).expect("step");
        if copied.is_some() {
            finalize.push(t1.elapsed());
        }
        match step {
            Step::Done(s) => break s,
            // As the server's backup thread: until the job may go on, at most 5 ms.
            Step::Throttled(_) => std::thread::sleep(
                Duration::from_nanos(job.next_step_in_ns()).min(Duration::from_millis(5)),
            ),
            Step::Progress(_) => {}
        }
        let p = job.progress();
        if copied.is_none() && p.bytes_done == p.bytes_total {
            copied = Some(t0.elapsed());
        }
    };
    if std::env::var("BENCH_PHASES").is_ok() {
        eprintln!(
            "backup {id} ({}): start {started:.2?}, copied {copied:.2?}, done {:.2?}; {} finalize steps, the longest {:.1?}, {:.1?} in all",
            label(pacing),
            t0.elapsed(),
            finalize.len(),
            finalize.iter().max().copied().unwrap_or_default(),
            finalize.iter().sum::<Duration>(),
        );
    }
    let bytes = summary.manifest.files.iter().map(|f| f.size_bytes).sum();
    (t0.elapsed(), bytes)
}

/// One window of load.
#[derive(Debug, Clone, Copy)]
struct Window {
    /// Commits per second.
    cps: f64,
    /// Commit latency percentiles and the longest commit, in µs.
    p99: u64,
    p999: u64,
    p9999: u64,
    max: u64,
    /// The window's length.
    secs: f64,
}

/// The changes of the first window of each pair against the second, in commits/s and
/// in p99, p99.9 and p99.99 latency: the median of the pairs, and the range of the p99
/// changes; and the median longest commit of each side.
fn pair_changes(pairs: &[(Window, Window)]) -> String {
    let changes = |f: fn(&Window) -> f64| {
        let mut v: Vec<f64> = pairs
            .iter()
            .map(|(w, a)| 100.0 * (f(w) - f(a)) / f(a).max(1.0))
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let (c, p) = (changes(|w| w.cps), changes(|w| w.p99 as f64));
    let p999 = changes(|w| w.p999 as f64);
    let p9999 = changes(|w| w.p9999 as f64);
    // The longest commit is one sample, not a rate: shown as the median of each
    // side's, in ms, rather than as a change.
    let max_ms = |f: fn(&(Window, Window)) -> u64| {
        median(
            &pairs
                .iter()
                .map(|w| f(w) as f64 / 1000.0)
                .collect::<Vec<_>>(),
        )
    };
    format!(
        "throughput {:+.1}%, p99 {:+.1}%, p99.9 {:+.1}%, p99.99 {:+.1}%, longest commit {:.1} ms against {:.1} ms (medians of {} pairs; p99 from {:+.1}% to {:+.1}%)",
        median(&c),
        median(&p),
        median(&p999),
        median(&p9999),
        max_ms(|w| w.0.max),
        max_ms(|w| w.1.max),
        p.len(),
        p[0],
        p[p.len() - 1]
    )
}

/// The interleaved measure (`--interleave S`): one window of load, `--load-secs`
/// long, cut into slots of `S` seconds taken in pairs, one slot of each pair with the
/// backups stepping and one with them paused, in an order drawn for each pair. The
/// contiguous pairs above compare windows a minute apart, and this VM drifts by more
/// than the backups cost between them (control pairs differ by -13% to +14% in p99);
/// slots a second or two apart share the machine's state, so the drift cancels and
/// many pairs fit in one window.
#[derive(Debug, Clone, Copy)]
struct Slots {
    secs: f64,
    /// The start of each slot not counted: the switch's aftermath (the window the
    /// backup handed over last is still being written in the first milliseconds of
    /// an off slot; a resumed job reads its one burst at the start of an on slot).
    guard: f64,
}

impl Slots {
    /// Whether slot `k` runs backups: one slot of each pair `(2j, 2j + 1)` does, which
    /// one drawn from `j` (splitmix64), so no rhythm of the machine lines up with the
    /// schedule and neither place in a pair is favoured.
    fn on(k: u64) -> bool {
        (k & 1) == (splitmix64(k / 2) & 1)
    }

    fn slot_at(&self, secs: f64) -> u64 {
        (secs / self.secs) as u64
    }
}

/// A pair of slots either of which counted fewer commits is left out (a p99 of fewer
/// than 10 tail samples is not one).
const MIN_SLOT_COMMITS: usize = 1000;

/// What one interleaved window measured, slot by slot.
#[derive(Debug, Default, Clone)]
struct SlotRun {
    /// Per pair of slots: (p99 on, p99 off, commits/s on, commits/s off).
    pairs: Vec<(f64, f64, f64, f64)>,
    /// Latencies (µs) of every counted commit of the on slots and of the off slots;
    /// of the off slots, those right after an on slot and those right after an off one
    /// (the spill check: if a paused backup's writes still cost the commits after the
    /// guard, the first are slower).
    on: Vec<u32>,
    off: Vec<u32>,
    off_after_on: Vec<u32>,
    off_after_off: Vec<u32>,
}

impl SlotRun {
    fn add(&mut self, other: SlotRun) {
        self.pairs.extend(other.pairs);
        self.on.extend(other.on);
        self.off.extend(other.off);
        self.off_after_on.extend(other.off_after_on);
        self.off_after_off.extend(other.off_after_off);
    }
}

fn p99_of(v: &mut [u32]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable();
    f64::from(v[v.len() * 99 / 100])
}

/// The load for `secs` with backups (`backups`: a rate and a setting; `None` for the
/// control, whose "on" slots run nothing) stepping in the on slots only, back to back,
/// each from where the last slot left it; the job running at the end is aborted.
#[allow(clippy::too_many_arguments)]
fn interleaved(
    db: &Db,
    disk: &DynDisk,
    dest: &Path,
    id: &str,
    secs: f64,
    slots: Slots,
    backups: Option<(Option<u64>, Pacing)>,
    step_mib: u64,
) -> SlotRun {
    let (samples, _) = load_samples(db, secs, |t0| {
        let Some((rate_mb, pacing)) = backups else {
            return;
        };
        ryu_io::set_thread_nice(pacing.2).expect("nice");
        if pacing.3 {
            ryu_io::set_thread_io_idle().expect("ionice");
        }
        let mut job: Option<BackupJob> = None;
        let mut k = 0;
        loop {
            let now = t0.elapsed().as_secs_f64();
            if now >= secs {
                break;
            }
            let slot = slots.slot_at(now);
            let slot_end = (slot + 1) as f64 * slots.secs;
            if !Slots::on(slot) {
                // Paused: not stepped until the next slot (the job keeps its pin).
                std::thread::sleep(Duration::from_secs_f64((slot_end.min(secs) - now).max(0.0)));
                continue;
            }
            let j = job.get_or_insert_with(|| {
                k += 1;
                start_backup(db, disk, dest, &format!("{id}-{k}"), rate_mb, pacing)
            });
            match j.step(step_mib << 20).expect("step") {
                Step::Done(_) => job = None,
                // As the server's backup thread: until the job may go on, at most
                // 5 ms, and not past the slot's end.
                Step::Throttled(_) => std::thread::sleep(
                    Duration::from_nanos(j.next_step_in_ns())
                        .min(Duration::from_millis(5))
                        .min(Duration::from_secs_f64((slot_end - now).max(0.0))),
                ),
                Step::Progress(_) => {}
            }
        }
        if let Some(j) = job {
            j.abort().expect("abort");
        }
    });
    // Whole slots only (the last may be cut short by the window's end).
    let slot_count = slots.slot_at(secs) as usize;
    let mut per_slot: Vec<Vec<u32>> = vec![Vec::new(); slot_count];
    for (at, took) in samples {
        let at_s = f64::from(at) / 1e6;
        let slot = slots.slot_at(at_s) as usize;
        if slot < slot_count && at_s - slot as f64 * slots.secs >= slots.guard {
            per_slot[slot].push(took);
        }
    }
    let counted = slots.secs - slots.guard;
    let mut run = SlotRun::default();
    for pair in 0..slot_count / 2 {
        let (a, b) = (2 * pair, 2 * pair + 1);
        let (on, off) = if Slots::on(a as u64) { (a, b) } else { (b, a) };
        // A slot the machine stalled through has too few commits for a p99.
        if per_slot[on].len() < MIN_SLOT_COMMITS || per_slot[off].len() < MIN_SLOT_COMMITS {
            eprintln!(
                "  pair {pair} skipped: {} and {} commits",
                per_slot[on].len(),
                per_slot[off].len()
            );
            continue;
        }
        let cps = |s: usize| per_slot[s].len() as f64 / counted;
        let (on_cps, off_cps) = (cps(on), cps(off));
        run.pairs.push((
            p99_of(&mut per_slot[on].clone()),
            p99_of(&mut per_slot[off].clone()),
            on_cps,
            off_cps,
        ));
    }
    for (slot, lat) in per_slot.into_iter().enumerate().take(slot_count / 2 * 2) {
        if Slots::on(slot as u64) {
            run.on.extend(lat);
        } else {
            if slot > 0 && Slots::on(slot as u64 - 1) {
                run.off_after_on.extend(lat.iter().copied());
            } else {
                run.off_after_off.extend(lat.iter().copied());
            }
            run.off.extend(lat);
        }
    }
    run
}

const SPLITMIX_STEP: u64 = 0x9E37_79B9_7F4A_7C15;

/// One splitmix64 output: the state `x` advanced by one step, then mixed.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(SPLITMIX_STEP);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Small deterministic generator for the bootstrap (splitmix64).
struct Mix(u64);

impl Mix {
    fn below(&mut self, n: usize) -> usize {
        let z = splitmix64(self.0);
        self.0 = self.0.wrapping_add(SPLITMIX_STEP);
        (z % n as u64) as usize
    }
}

/// The p99 change (%) of each pair of slots, on against off.
fn slot_changes(run: &SlotRun) -> Vec<f64> {
    run.pairs
        .iter()
        .map(|&(on, off, _, _)| 100.0 * (on - off) / off.max(1.0))
        .collect()
}

/// The 95% bootstrap interval of the median of `a`'s values minus the median of
/// `b`'s (`b` empty: of `a`'s median alone), 2000 resamples.
fn bootstrap_median_difference(a: &[f64], b: &[f64]) -> (f64, f64) {
    let mut mix = Mix(1);
    let mut resample = |v: &[f64]| {
        if v.is_empty() {
            return 0.0;
        }
        median(
            &(0..v.len())
                .map(|_| v[mix.below(v.len())])
                .collect::<Vec<_>>(),
        )
    };
    let mut d: Vec<f64> = (0..2000).map(|_| resample(a) - resample(b)).collect();
    d.sort_by(f64::total_cmp);
    (d[50], d[1949])
}

/// One interleaved case as a table row's value.
fn slot_summary(run: &SlotRun, control: Option<&SlotRun>) -> String {
    let mut run = run.clone();
    let (on, off) = (p99_of(&mut run.on), p99_of(&mut run.off));
    let changes = slot_changes(&run);
    let (lo, hi) = bootstrap_median_difference(&changes, &[]);
    let cps: Vec<f64> = run
        .pairs
        .iter()
        .map(|&(_, _, on, off)| 100.0 * (on - off) / off.max(1.0))
        .collect();
    let after_on = p99_of(&mut run.off_after_on);
    let after_off = p99_of(&mut run.off_after_off);
    let cost = control.map_or(String::new(), |c| {
        let base = slot_changes(c);
        let (lo, hi) = bootstrap_median_difference(&changes, &base);
        format!(
            "; less the control's: **{:+.1}%** (95% {lo:+.1}% to {hi:+.1}%)",
            median(&changes) - median(&base)
        )
    });
    format!(
        "p99 {on:.0} µs on, {off:.0} µs off: **{:+.1}%** pooled; median of {} pairs {:+.1}% (95% {lo:+.1}% to {hi:+.1}%){cost}; throughput {:+.1}%; off slots after an on slot p99 {after_on:.0} µs, after an off slot {after_off:.0} µs",
        100.0 * (on - off) / off.max(1.0),
        changes.len(),
        median(&changes),
        median(&cps),
    )
}

/// A `--pacing` setting as the table shows it.
fn label(p: Pacing) -> String {
    let sync = match p.0 {
        None | Some(0) => "sync at end".to_string(),
        Some(b) => format!("sync every {}", size(b)),
    };
    let behind = match p.1 {
        None => "write-behind 8 MiB (default)".to_string(),
        Some(0) => "no write-behind".to_string(),
        Some(b) => format!("write-behind {}", size(b)),
    };
    let io = if p.3 { ", idle I/O" } else { "" };
    let cache = if p.4 {
        ", kept in cache"
    } else {
        ", dropped behind"
    };
    let pages = if p.5 { ", whole pages (format 2)" } else { "" };
    format!("{sync}, {behind}, nice {}{io}{cache}{pages}", p.2)
}

/// `b` bytes in MiB, or in KiB when not whole MiB.
fn size(b: u64) -> String {
    if b.is_multiple_of(1 << 20) {
        format!("{} MiB", b >> 20)
    } else {
        format!("{} KiB", b >> 10)
    }
}

fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn run(cmd: &str, args: &[&Path]) {
    let ok = std::process::Command::new(cmd)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(ok.success(), "{cmd} failed");
}

/// Remove `p` if it is there, then sync every file system: the next phase starts with
/// no writeback of an earlier one pending.
fn settle(p: &Path) {
    if p.exists() {
        std::fs::remove_dir_all(p).expect("remove");
    }
    run("sync", &[]);
}

/// Time `cp -r` (and `sync -f` of the copy when `sync`), leaving the disk settled.
fn time_cp(root: &Path, name: &str, sync: bool) -> Duration {
    let to = root.join("cp-copy");
    settle(&to);
    let t0 = Instant::now();
    run("cp", &[Path::new("-r"), &root.join(name), &to]);
    if sync {
        run("sync", &[Path::new("-f"), &to]);
    }
    let took = t0.elapsed();
    settle(&to);
    took
}

/// Fill a database of `size_mib` MiB of values and time its copies; with `with_load`,
/// the commits beside throttled backups as well.
fn bench(root: &Path, size_mib: u64, a: &Args, with_load: bool) {
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
    let dest = PathBuf::from(format!("backups-{size_mib}"));
    let settings = &a.pacing;
    let (mut cp, mut cp_sync) = (Vec::new(), Vec::new());
    let mut backup_rate = vec![Vec::new(); settings.len()];
    let mut base = Vec::new();
    // Per case and repetition: (with backups, alone for as long, right after or before).
    // Indexed by case: pacing setting `i % settings.len()` at rate `i / settings.len()`.
    let mut during: Vec<Vec<(Window, Window)>> = vec![Vec::new(); settings.len() * a.rate_mb.len()];
    let mut control: Vec<(Window, Window)> = Vec::new();
    // With `--interleave`: per case, and the control.
    let mut slot_runs = vec![SlotRun::default(); settings.len() * a.rate_mb.len()];
    let mut slot_control = SlotRun::default();
    // The length of each case's last window with backups (a window lasts until its
    // last backup is done, so it depends on the rate), for the pair that runs before
    // the next one; and of the last window of all, for the control pair.
    let mut case_secs = vec![a.load_secs as f64; settings.len() * a.rate_mb.len()];
    let mut window_secs = a.load_secs as f64;
    // Each setting's backup size in the first repetition (later ones copy the load's
    // WAL as well).
    let mut backup_bytes = vec![0; settings.len()];
    let mut n = 0;
    settle(&root.join("none"));
    for rep in 0..a.reps {
        // The first large write after the earlier phases' copies were removed runs at
        // a fraction of the speed of the next (on the VM of the README, 280 to 510
        // against 1950 to 3580 MB/s for `cp`: fresh memory costs the host's page
        // faults). An untimed `cp` takes that cost, so neither timed one is flattered
        // or penalised by its place; they still alternate.
        time_cp(root, &name, false);
        // The load's commits grow the database from one repetition to the next.
        let db_bytes = dir_bytes(&root.join(&name));
        for sync in [rep % 2 == 1, rep % 2 == 0] {
            let rate = mb_per_s(db_bytes, time_cp(root, &name, sync));
            if sync { &mut cp_sync } else { &mut cp }.push(rate);
        }
        // Rotate the order of the settings from one repetition to the next.
        let order: Vec<usize> = (0..settings.len())
            .map(|i| (i + rep) % settings.len())
            .collect();
        for &i in &order {
            n += 1;
            let id = format!("b{n}");
            let (took, bytes) = run_backup(&db, &disk, &dest, &id, None, settings[i], a.step_mib);
            // The database's bytes, as for `cp`: the backup writes fewer (no page's
            // zeros at its end), and its speed is how soon the database is safe.
            backup_rate[i].push(mb_per_s(db_bytes, took));
            if rep == 0 {
                backup_bytes[i] = bytes;
            }
            if n > 1 {
                settle(&root.join(&dest).join(&id));
            } else {
                run("sync", &[]);
            }
        }
        if !with_load {
            continue;
        }
        let cases = settings.len() * a.rate_mb.len();
        if let Some(slots) = a.interleave {
            // Every case, rotated, and the control (slots with nothing in the "on"
            // ones) in its turn among them.
            for i in (0..=cases).map(|i| (i + rep) % (cases + 1)) {
                n += 1;
                let backups = (i < cases)
                    .then(|| (a.rate_mb[i / settings.len()], settings[i % settings.len()]));
                let slot_run = interleaved(
                    &db,
                    &disk,
                    &dest,
                    &format!("load{n}"),
                    a.load_secs as f64,
                    slots,
                    backups,
                    a.step_mib,
                );
                for e in std::fs::read_dir(root.join(&dest)).expect("list").flatten() {
                    if e.file_name().to_string_lossy().starts_with("load") {
                        std::fs::remove_dir_all(e.path()).expect("remove");
                    }
                }
                run("sync", &[]);
                if i < cases {
                    slot_runs[i].add(slot_run);
                } else {
                    slot_control.add(slot_run);
                }
            }
            continue;
        }
        // Under load, every pacing setting at every rate, rotated as well.
        for i in (0..cases).map(|i| (i + rep) % cases) {
            let (every, rate_mb) = (settings[i % settings.len()], a.rate_mb[i / settings.len()]);
            n += 1;
            let id = format!("load{n}");
            let (db2, disk2, dest2) = (db.clone(), disk.clone(), dest.clone());
            // Its pair: the load alone for as long, right after the window with backups
            // in even repetitions and right before it in odd ones (the machine's speed
            // drifts over minutes, so each window is compared with its neighbour; the
            // alternation cancels whatever the place in a pair favours, which the
            // control below measures). A window before has the length of its case's
            // last one.
            let before = (rep % 2 == 1).then(|| {
                let w = load(&db, case_secs[i], |_| {});
                run("sync", &[]);
                w
            });
            let d = load(&db, a.load_secs as f64, move |t0| {
                // Back to back backups, each to its end (its last sync included), for
                // at least the measurement window.
                ryu_io::set_thread_nice(every.2).expect("nice");
                if every.3 {
                    ryu_io::set_thread_io_idle().expect("ionice");
                }
                let mut k = 0;
                while k == 0 || t0.elapsed() < Duration::from_secs(a.load_secs) {
                    k += 1;
                    let id = format!("{id}-{k}");
                    run_backup(&db2, &disk2, &dest2, &id, rate_mb, every, a.step_mib);
                }
            });
            // Remove them after the window (deleting is file system work too).
            for e in std::fs::read_dir(root.join(&dest)).expect("list").flatten() {
                if e.file_name().to_string_lossy().starts_with("load") {
                    std::fs::remove_dir_all(e.path()).expect("remove");
                }
            }
            run("sync", &[]);
            let alone = before.unwrap_or_else(|| {
                let w = load(&db, d.secs, |_| {});
                run("sync", &[]);
                w
            });
            base.push(alone);
            during[i].push((d, alone));
            case_secs[i] = d.secs;
            window_secs = d.secs;
        }
        // The control: the same pair of windows with no backup in the first, which
        // shows how far two neighbouring windows of the same load differ on their own
        // (and whether the first of a pair is favoured by its place).
        let first = load(&db, window_secs, |_| {});
        run("sync", &[]);
        let second = load(&db, window_secs, |_| {});
        run("sync", &[]);
        control.push((first, second));
    }
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
    let restored_bytes = dir_bytes(&root.join(&target));

    let (cp_med, cp_sync_med) = (median(&cp), median(&cp_sync));
    let cps = |v: &[Window]| median(&v.iter().map(|x| x.cps).collect::<Vec<_>>());
    let p99 = |v: &[Window]| median(&v.iter().map(|x| x.p99 as f64).collect::<Vec<_>>());
    println!("| database | {size_mib} MiB of values, {db_bytes} bytes on disk |");
    println!("| cp -r | {cp_med:.0} MB/s |");
    println!("| cp -r + sync -f | {cp_sync_med:.0} MB/s |");
    if with_load && a.interleave.is_none() {
        let (base_cps, base_p99) = (cps(&base), p99(&base));
        println!("| commits/s alone | {base_cps:.0} (p99 {base_p99:.0} µs) |");
    }
    for (i, every) in settings.iter().enumerate() {
        let rate = median(&backup_rate[i]);
        println!(
            "| backup, {} | {rate:.0} MB/s of the database (the first backup: {} bytes): {:.0}% of cp, {:.0}% of cp + sync |",
            label(*every),
            backup_bytes[i],
            100.0 * rate / cp_med,
            100.0 * rate / cp_sync_med
        );
    }
    if let Some(slots) = a.interleave.filter(|_| with_load) {
        let row = |what: String, run: &SlotRun, control: Option<&SlotRun>| {
            println!(
                "| {what}, {} s slots ({} s counted) of {} s windows, on against off | {} |",
                slots.secs,
                slots.secs - slots.guard,
                a.load_secs,
                slot_summary(run, control)
            )
        };
        for (i, run) in slot_runs.iter().enumerate() {
            let (every, rate_mb) = (settings[i % settings.len()], a.rate_mb[i / settings.len()]);
            let rate = rate_mb.map_or("unlimited".to_string(), |r| r.to_string());
            row(
                format!("backups at {rate} MB/s, {}", label(every)),
                run,
                Some(&slot_control),
            );
        }
        row("control: no backups in either".into(), &slot_control, None);
        let round = |v: Vec<f64>| {
            v.iter()
                .map(|r| (r * 10.0).round() / 10.0)
                .collect::<Vec<_>>()
        };
        for (i, run) in slot_runs.iter().enumerate() {
            eprintln!(
                "  case {i}, the p99 change of every pair of slots: {:?}",
                round(slot_changes(run))
            );
        }
        eprintln!(
            "  control, every pair: {:?}",
            round(slot_changes(&slot_control))
        );
    }
    for (i, pairs) in during
        .iter()
        .enumerate()
        .filter(|_| with_load && a.interleave.is_none())
    {
        let (every, rate_mb) = (settings[i % settings.len()], a.rate_mb[i / settings.len()]);
        let with: Vec<Window> = pairs.iter().map(|w| w.0).collect();
        let (c, p) = (cps(&with), p99(&with));
        println!(
            "| commits/s during backups at {} MB/s, {} | {c:.0} (p99 {p:.0} µs): against the load alone right after or before each window, {} |",
            rate_mb.map_or("unlimited".to_string(), |r| r.to_string()),
            label(every),
            pair_changes(pairs),
        );
    }
    if with_load && a.interleave.is_none() {
        println!(
            "| control: the load alone against the load alone right after | {} |",
            pair_changes(&control)
        );
    }
    println!(
        "| restore | {:.0} MB/s of the database restored ({restored_bytes} bytes in {:.2?}) |",
        mb_per_s(restored_bytes, restore),
        restore
    );
    eprintln!("{size_mib} MiB, every repetition:");
    let round = |v: &[f64]| v.iter().map(|r| r.round()).collect::<Vec<_>>();
    eprintln!(
        "  cp MB/s {:?}; cp + sync MB/s {:?}",
        round(&cp),
        round(&cp_sync)
    );
    eprintln!("  alone (commits/s, p99 µs) {base:?}");
    eprintln!("  control pairs {control:?}");
    for (i, every) in settings.iter().enumerate() {
        eprintln!(
            "  {}: backup MB/s {:?}",
            label(*every),
            backup_rate[i].iter().map(|r| r.round()).collect::<Vec<_>>(),
        );
    }
    for (i, pairs) in during.iter().enumerate().filter(|_| with_load) {
        let (every, rate_mb) = (settings[i % settings.len()], a.rate_mb[i / settings.len()]);
        eprintln!(
            "  during backups at {rate_mb:?} MB/s, {}: {pairs:?}",
            label(every)
        );
    }
    drop(db);
    for p in [
        &name,
        &format!("backups-{size_mib}"),
        &format!("restore-{size_mib}"),
    ] {
        settle(&root.join(p));
    }
}

fn main() {
    let a = args();
    std::fs::create_dir_all(&a.dir).expect("create bench dir");
    assert!(a.reps > 0 && !a.pacing.is_empty());
    println!("| measure | value |\n|---|---|");
    // A size of 0 is skipped.
    let copy_only = a.copy_size_mib.iter().map(|&s| (s, false));
    for (size, with_load) in [(a.small_size_mib, true), (a.size_mib, true)]
        .into_iter()
        .chain(copy_only)
    {
        if size > 0 {
            bench(&a.dir, size, &a, with_load);
        }
    }
    std::fs::remove_dir_all(&a.dir).expect("clean up");
}
