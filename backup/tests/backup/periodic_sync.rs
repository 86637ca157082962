//! How a job paces the files it writes. `BackupOptions::sync_every_bytes`: it syncs
//! each file as it goes, so no destination file ever holds more than that many bytes
//! written and not synced, and a crash mid-copy keeps every synced prefix.
//! `BackupOptions::write_behind_bytes`: it hands each window to the device and waits
//! for the one before, so no file ever has more than two windows not yet written back.

use crate::common::{Model, commit_some, pass_through_dir_ops, read_all};
use ryu_backup::pages::MAX_ENTRY_BYTES;
use ryu_backup::{
    BackupId, BackupJob, BackupOptions, DEFAULT_WRITE_BEHIND_BYTES, RestoreOptions, Step,
    VerifyOptions, restore, verify,
};
use ryu_engine::{Db, Options};
use ryu_io::{Disk, DynDisk, DynFile, File, IoResult, ManualClock};
use ryu_sim::SimDisk;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const DEST: &str = "backups";
const EVERY: u64 = 64 << 10;

/// What one file saw through a [`SyncLedger`].
#[derive(Debug, Default, Clone)]
struct FileLedger {
    /// The file as written through the ledger (writes only; nothing else changes it).
    image: Vec<u8>,
    /// Bytes written since the last successful sync.
    unsynced_bytes: u64,
    /// The most `unsynced_bytes` ever reached.
    max_unsynced_bytes: u64,
    /// Successful syncs.
    syncs: u64,
    /// The image's length at the last successful sync: a prefix the media holds.
    synced_len: u64,
    /// `write_behind` calls as `(offset, len, wait)`.
    write_behinds: Vec<(u64, u64, bool)>,
    /// The end of what a waiting `write_behind` or a sync has covered.
    written_back_len: u64,
    /// The most bytes a write found beyond `written_back_len` before it wrote.
    max_backlog_bytes: u64,
    /// `drop_cache` calls as `(offset, len)`.
    drops: Vec<(u64, u64)>,
    /// Bytes that a `drop_cache` asked to drop beyond `written_back_len` (still dirty).
    dropped_unwritten_bytes: u64,
    /// When (in the ledger's count of calls) the file was created and first read.
    created_at: u64,
    first_read_at: Option<u64>,
    /// A write came after a read.
    written_after_read: bool,
    /// A `drop_cache` came before the first sync.
    dropped_before_sync: bool,
}

/// A disk that records, per path, every write and sync made through it.
#[derive(Debug, Clone)]
struct SyncLedger {
    inner: DynDisk,
    files: Arc<Mutex<BTreeMap<PathBuf, FileLedger>>>,
    /// Calls made through the ledger so far (its clock).
    calls: Arc<Mutex<u64>>,
}

impl SyncLedger {
    fn new(inner: DynDisk) -> SyncLedger {
        SyncLedger {
            inner,
            files: Arc::default(),
            calls: Arc::default(),
        }
    }

    fn file(&self, path: &str) -> FileLedger {
        self.files
            .lock()
            .unwrap()
            .get(Path::new(path))
            .cloned()
            .unwrap_or_else(|| panic!("{path} was never created"))
    }

    fn paths(&self) -> Vec<PathBuf> {
        self.files.lock().unwrap().keys().cloned().collect()
    }

    fn wrap(&self, path: &Path, inner: DynFile) -> DynFile {
        Arc::new(LedgerFile {
            inner,
            path: path.to_path_buf(),
            files: self.files.clone(),
            calls: self.calls.clone(),
        })
    }
}

#[derive(Debug)]
struct LedgerFile {
    inner: DynFile,
    path: PathBuf,
    files: Arc<Mutex<BTreeMap<PathBuf, FileLedger>>>,
    calls: Arc<Mutex<u64>>,
}

fn tick(calls: &Mutex<u64>) -> u64 {
    let mut c = calls.lock().unwrap();
    *c += 1;
    *c
}

impl File for LedgerFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> IoResult<()> {
        self.inner.read_at(offset, buf)?;
        let now = tick(&self.calls);
        let mut files = self.files.lock().unwrap();
        let f = files.entry(self.path.clone()).or_default();
        f.first_read_at.get_or_insert(now);
        Ok(())
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> IoResult<()> {
        self.inner.write_at(offset, data)?;
        tick(&self.calls);
        let mut files = self.files.lock().unwrap();
        let f = files.entry(self.path.clone()).or_default();
        f.written_after_read |= f.first_read_at.is_some();
        f.max_backlog_bytes = f
            .max_backlog_bytes
            .max((f.image.len() as u64).saturating_sub(f.written_back_len));
        let end = offset as usize + data.len();
        if f.image.len() < end {
            f.image.resize(end, 0);
        }
        f.image[offset as usize..end].copy_from_slice(data);
        f.unsynced_bytes += data.len() as u64;
        f.max_unsynced_bytes = f.max_unsynced_bytes.max(f.unsynced_bytes);
        Ok(())
    }
    fn sync_data(&self) -> IoResult<()> {
        self.inner.sync_data()?;
        let mut files = self.files.lock().unwrap();
        let f = files.entry(self.path.clone()).or_default();
        f.unsynced_bytes = 0;
        f.syncs += 1;
        f.synced_len = f.image.len() as u64;
        f.written_back_len = f.synced_len;
        Ok(())
    }
    fn write_behind(&self, offset: u64, len: u64, wait: bool) -> IoResult<()> {
        self.inner.write_behind(offset, len, wait)?;
        let mut files = self.files.lock().unwrap();
        let f = files.entry(self.path.clone()).or_default();
        f.write_behinds.push((offset, len, wait));
        // The tests check separately that waited windows are back to back.
        if wait {
            f.written_back_len = f.written_back_len.max(offset + len);
        }
        Ok(())
    }
    fn drop_cache(&self, offset: u64, len: u64) -> IoResult<()> {
        self.inner.drop_cache(offset, len)?;
        let mut files = self.files.lock().unwrap();
        let f = files.entry(self.path.clone()).or_default();
        f.drops.push((offset, len));
        f.dropped_before_sync |= f.syncs == 0;
        let end = (offset + len).min(f.image.len() as u64);
        f.dropped_unwritten_bytes += end.saturating_sub(offset.max(f.written_back_len));
        Ok(())
    }
    fn set_len(&self, len: u64) -> IoResult<()> {
        self.inner.set_len(len)
    }
    fn len(&self) -> IoResult<u64> {
        self.inner.len()
    }
}

impl Disk for SyncLedger {
    fn create(&self, path: &Path) -> IoResult<DynFile> {
        let f = self.inner.create(path)?;
        let created_at = tick(&self.calls);
        self.files.lock().unwrap().insert(
            path.to_path_buf(),
            FileLedger {
                created_at,
                ..FileLedger::default()
            },
        );
        Ok(self.wrap(path, f))
    }
    fn open(&self, path: &Path) -> IoResult<DynFile> {
        let f = self.inner.open(path)?;
        Ok(self.wrap(path, f))
    }
    pass_through_dir_ops!();
}

/// A database with about 1.6 MB of pages in its checkpoint (about 1.2 MB in a backup,
/// which stores a page without its zeros at the end) and about 200 KB of WAL in one
/// segment after it.
fn source(seed: u64) -> (SimDisk, Db, Model) {
    source_of(seed, 40)
}

/// A database with `chunks` times about 40 KB of pages in its checkpoint (10 leaves of
/// one 3000-byte value each: about 31 KB in a backup) and about 200 KB of WAL in one
/// segment after it.
fn source_of(seed: u64, chunks: u32) -> (SimDisk, Db, Model) {
    let disk = SimDisk::new(seed);
    let options = Options {
        cache_pages: 64,
        wal_segment_bytes: 4 << 20,
        checkpoint_after_bytes: 0,
        sync_commits: true,
    };
    let db = Db::open(Arc::new(disk.clone()), Path::new("db"), options).expect("open");
    let mut model = Model::default();
    for chunk in 0..chunks {
        let writes: Vec<ryu_engine::Write> = (0..10u32)
            .map(|i| {
                let k = format!("big{:05}", chunk * 10 + i).into_bytes();
                (k, Some(vec![(chunk + i) as u8; 3000]))
            })
            .collect();
        let mut w = db.begin_write();
        for (k, v) in &writes {
            w.put(k, v.as_ref().unwrap()).unwrap();
        }
        let ts = w.commit().unwrap();
        model.commits.insert(ts, writes);
    }
    db.checkpoint().expect("checkpoint");
    for round in 0..20 {
        commit_some(&db, &mut model, round, 60);
    }
    (disk, db, model)
}

/// The entries of a complete pages file (format 3), each walked by its stored length;
/// they must end exactly at the file's end.
fn entries_in(b: &[u8]) -> u64 {
    let (mut at, mut n) = (64, 0);
    while at < b.len() {
        at += 10 + u16::from_le_bytes([b[at + 8], b[at + 9]]) as usize;
        n += 1;
    }
    assert_eq!(at, b.len(), "entries end with the file");
    n
}

fn job(db: &Db, dst: &SyncLedger, id: &str, sync_every_bytes: u64) -> BackupJob {
    job_paced(db, dst, id, Some(sync_every_bytes), Some(0))
}

fn job_paced(
    db: &Db,
    dst: &SyncLedger,
    id: &str,
    sync_every_bytes: Option<u64>,
    write_behind_bytes: Option<u64>,
) -> BackupJob {
    let options = BackupOptions {
        id: BackupId::new(id).unwrap(),
        sync_every_bytes,
        write_behind_bytes,
        ..Default::default()
    };
    let clock = Arc::new(ManualClock::new(1_700_000_000_000_000_000));
    BackupJob::start(db, Arc::new(dst.clone()), Path::new(DEST), clock, options).expect("start")
}

fn run(job: &mut BackupJob, budget: u64) {
    while !matches!(job.step(budget).expect("step"), Step::Done(_)) {}
}

/// By default a job syncs each file once, when complete, and writes behind in 8 MiB
/// windows, with or without a rate limit (checked on a database of about 26 MB of
/// pages, 20 MB in the backup, in steps of 10 ms at 1 GB/s). Windows smaller than a step's writes are still
/// started one at a time, each followed by the wait for the one before it: never a
/// step's worth at once (the third case: 10 MB steps, 492 KiB windows).
#[test]
fn by_default_a_job_syncs_once_and_writes_behind_every_8_mib() {
    assert_eq!(DEFAULT_WRITE_BEHIND_BYTES, 8 << 20);
    let (_src, db, _model) = source_of(1, 650);
    let cases = [
        (0, None, None),
        (1, Some(1_000_000_000), None),
        (2, Some(1_000_000_000), Some(123 * 4096)),
    ];
    for (i, limit, window) in cases {
        let dst = SyncLedger::new(Arc::new(SimDisk::new(2)));
        let clock = Arc::new(ManualClock::new(1_700_000_000_000_000_000));
        let options = BackupOptions {
            id: BackupId::new("b1").unwrap(),
            max_bytes_per_sec: limit,
            write_behind_bytes: window,
            ..Default::default()
        };
        assert_eq!(options.sync_every_bytes, None);
        let w = window.unwrap_or(8 << 20);
        let d: DynDisk = Arc::new(dst.clone());
        let mut j = BackupJob::start(&db, d, Path::new(DEST), clock.clone(), options).unwrap();
        loop {
            clock.advance(10_000_000);
            if let Step::Done(_) = j.step(u64::MAX).unwrap() {
                break;
            }
        }
        let pages = dst.file("backups/.tmp-b1/pages/000000.pages");
        let len = pages.image.len() as u64;
        assert!(len > 18_000_000, "case {i}: {len}");
        assert_eq!(pages.syncs, 1, "case {i}");
        // Windows start after the 64-byte header: [64, 64 + W), [64 + W, 64 + 2W), ...
        // each complete one is started in order, and each but the newest is waited
        // for once the one after it has started (in a 20 MB file, two 8 MiB windows).
        let n = (len - 64) / w;
        assert!(n >= 2, "case {i}: {n} windows");
        let mut expect = Vec::new();
        for k in 0..n {
            expect.push((64 + k * w, w, false));
            if k > 0 {
                expect.push((64 + (k - 1) * w, w, true));
            }
        }
        assert_eq!(pages.write_behinds, expect, "case {i}");
        assert!(pages.max_backlog_bytes < 2 * w + 10_000_000, "case {i}");
    }
}

/// With a small window the job never lets a file get more than two windows ahead of
/// what it has waited to be written back, whatever its step size; with 0 it never
/// asks. Write-behind is not a sync: the file is still synced once, at its end.
#[test]
fn write_behind_keeps_at_most_two_windows_of_a_file_unwritten() {
    let (_src, db, _model) = source(1);
    for (budget, window) in [(256 << 10, EVERY), (16 << 10, EVERY), (100_000, 3 * EVERY)] {
        let dst = SyncLedger::new(Arc::new(SimDisk::new(2)));
        let mut j = job_paced(&db, &dst, "b1", None, Some(window));
        run(&mut j, budget);
        let pages = dst.file("backups/.tmp-b1/pages/000000.pages");
        assert!(pages.image.len() > 1_000_000, "{}", pages.image.len());
        assert_eq!(pages.syncs, 1);
        // Each write finds at most two windows not yet written back, plus whatever the
        // step before it wrote past the last complete window.
        assert!(
            pages.max_backlog_bytes < 2 * window,
            "budget {budget}, window {window}: {} bytes behind",
            pages.max_backlog_bytes
        );
        // Windows are started in order, back to back, and each is waited for after
        // the next one started.
        let starts: Vec<u64> = pages
            .write_behinds
            .iter()
            .filter(|c| !c.2)
            .map(|c| c.0)
            .collect();
        let waits: Vec<u64> = pages
            .write_behinds
            .iter()
            .filter(|c| c.2)
            .map(|c| c.0)
            .collect();
        let full = (pages.image.len() as u64 - 64) / window;
        assert_eq!(starts.len() as u64, full);
        assert_eq!(waits.len() as u64, full - 1);
        for (k, s) in starts.iter().enumerate() {
            assert_eq!(*s, 64 + k as u64 * window);
        }
        assert_eq!(waits[..], starts[..waits.len()]);
        assert!(pages.write_behinds.iter().all(|c| c.1 == window));
    }
    let dst = SyncLedger::new(Arc::new(SimDisk::new(2)));
    let mut j = job_paced(&db, &dst, "b2", None, Some(0));
    run(&mut j, 256 << 10);
    let pages = dst.file("backups/.tmp-b2/pages/000000.pages");
    assert!(pages.write_behinds.is_empty());
    assert!(
        pages.max_backlog_bytes > 700_000,
        "{}",
        pages.max_backlog_bytes
    );
}

/// By default a job leaves nothing it wrote in the page cache: the pages file is
/// dropped by its read-back, every WAL copy window by window once written back (never
/// before). With `keep_in_page_cache` it drops nothing.
#[test]
fn by_default_a_job_drops_what_it_wrote_from_the_cache_once_written_back() {
    let (_src, db, _model) = source(1);
    for keep in [false, true] {
        let dst = SyncLedger::new(Arc::new(SimDisk::new(2)));
        let options = BackupOptions {
            id: BackupId::new("b1").unwrap(),
            write_behind_bytes: Some(EVERY),
            keep_in_page_cache: keep,
            ..Default::default()
        };
        let clock = Arc::new(ManualClock::new(1_700_000_000_000_000_000));
        let d: DynDisk = Arc::new(dst.clone());
        let mut j = BackupJob::start(&db, d, Path::new(DEST), clock, options).unwrap();
        run(&mut j, 100_000);
        let mut dropped_files = 0;
        for path in dst.paths() {
            let f = dst.file(path.to_str().unwrap());
            assert_eq!(
                f.dropped_unwritten_bytes, 0,
                "{path:?} dropped before written back"
            );
            dropped_files += usize::from(!f.drops.is_empty());
        }
        if keep {
            assert_eq!(dropped_files, 0);
            continue;
        }
        // The read-back's drops cover every byte of the pages file, from its start
        // each time (the page cache holds large folios).
        let pages = dst.file("backups/.tmp-b1/pages/000000.pages");
        assert!(
            !pages.dropped_before_sync,
            "the pages file was dropped as it was written: its read-back reads the device"
        );
        assert!(pages.drops.iter().all(|d| d.0 == 0));
        let covered = pages.drops.iter().map(|d| d.1).max().unwrap();
        assert_eq!(covered, pages.image.len() as u64);
        // Each waited window of a WAL copy is dropped, from the file's start.
        let wal = dst
            .paths()
            .into_iter()
            .find(|p| p.to_str().unwrap().contains("/wal/"))
            .unwrap();
        let wal = dst.file(wal.to_str().unwrap());
        let window_ends: Vec<u64> = wal
            .write_behinds
            .iter()
            .filter(|c| c.2)
            .map(|c| c.0 + c.1)
            .collect();
        assert!(!window_ends.is_empty(), "no waited window in the WAL copy");
        for end in window_ends {
            assert!(wal.drops.contains(&(0, end)), "window ending at {end} kept");
        }
    }
}

/// The pages are split over files of `pages_file_bytes`; each is synced once, read
/// back while later ones are still being written (file 0 before the last is created),
/// and never written after its read-back began (a damaged write would go unseen). The
/// backup verifies and restores to the model state.
#[test]
fn each_pages_file_is_read_back_once_complete_and_never_written_after() {
    let (_src, db, model) = source(1);
    let dst = SyncLedger::new(Arc::new(SimDisk::new(2)));
    let options = BackupOptions {
        id: BackupId::new("b1").unwrap(),
        pages_file_bytes: Some(100_000),
        ..Default::default()
    };
    let clock = Arc::new(ManualClock::new(1_700_000_000_000_000_000));
    let d: DynDisk = Arc::new(dst.clone());
    let mut j = BackupJob::start(&db, d.clone(), Path::new(DEST), clock, options).unwrap();
    let ts = j.snapshot_ts();
    run(&mut j, 64 << 10);
    let pages: Vec<FileLedger> = dst
        .paths()
        .iter()
        .filter(|p| p.starts_with("backups/.tmp-b1/pages"))
        .map(|p| dst.file(p.to_str().unwrap()))
        .collect();
    assert!(pages.len() >= 10, "{} pages files", pages.len());
    for (i, f) in pages.iter().enumerate() {
        assert_eq!(f.syncs, 1, "file {i}");
        assert!(
            !f.written_after_read,
            "file {i} written after its read-back"
        );
        // The header, then the entries it counts, back to back: 24 (as many as fit in
        // 100,000 bytes were each stored whole), the last file fewer.
        let claimed = u64::from_le_bytes(f.image[32..40].try_into().unwrap());
        let n = entries_in(&f.image);
        assert_eq!(n, claimed, "file {i}");
        if i + 1 < pages.len() {
            assert_eq!(n as usize, 100_000 / MAX_ENTRY_BYTES, "file {i}");
        }
    }
    let last_created = pages.iter().map(|f| f.created_at).max().unwrap();
    assert!(pages[0].first_read_at.unwrap() < last_created);
    let r = verify(&d, Path::new(DEST), "b1", &VerifyOptions::default()).unwrap();
    assert!(r.is_ok(), "{:?}", r.problems);
    let target = Path::new("restored");
    restore(
        &d,
        Path::new(DEST),
        "b1",
        &d,
        target,
        &RestoreOptions::default(),
    )
    .unwrap();
    let restored = Db::open(d.clone(), target, Options::default()).unwrap();
    assert_eq!(read_all(&restored), model.state_at(ts));
}

/// Steps of 256 KiB write more than the 64 KiB interval at once: the job must split
/// them. Without the periodic sync the pages file would reach a megabyte unsynced.
#[test]
fn no_file_ever_holds_more_than_sync_every_bytes_unsynced() {
    let (_src, db, model) = source(1);
    let dst = SyncLedger::new(Arc::new(SimDisk::new(2)));
    let mut j = job(&db, &dst, "b1", EVERY);
    let ts = j.snapshot_ts();
    run(&mut j, 256 << 10);
    let pages = dst.file("backups/.tmp-b1/pages/000000.pages");
    assert!(pages.image.len() > 1_000_000, "{}", pages.image.len());
    assert!(
        pages.max_unsynced_bytes <= EVERY,
        "a pages file had {} bytes unsynced",
        pages.max_unsynced_bytes
    );
    let entries = pages.image.len() as u64 - 64;
    assert!(pages.syncs > entries / EVERY, "{} syncs", pages.syncs);
    let wal: Vec<PathBuf> = dst
        .paths()
        .into_iter()
        .filter(|p| p.starts_with("backups/.tmp-b1/wal"))
        .collect();
    assert_eq!(wal.len(), 1, "{wal:?}");
    let seg = dst.file(wal[0].to_str().unwrap());
    assert!(seg.image.len() as u64 > 2 * EVERY, "{}", seg.image.len());
    assert!(
        seg.max_unsynced_bytes <= EVERY,
        "{}",
        seg.max_unsynced_bytes
    );
    assert_eq!(seg.synced_len, seg.image.len() as u64, "synced to the end");
    assert_eq!(
        pages.synced_len,
        pages.image.len() as u64,
        "synced to the end"
    );

    // Split writes change nothing in the result.
    let d: DynDisk = Arc::new(dst.clone());
    assert!(
        verify(&d, Path::new(DEST), "b1", &VerifyOptions { deep: true })
            .unwrap()
            .is_ok()
    );
    let target: DynDisk = Arc::new(SimDisk::new(3));
    restore(
        &d,
        Path::new(DEST),
        "b1",
        &target,
        Path::new("r"),
        &RestoreOptions::default(),
    )
    .unwrap();
    let restored = Db::open(target, Path::new("r"), Options::default()).unwrap();
    assert_eq!(read_all(&restored), model.state_at(ts));
}

/// With 0 each file is synced once, at its end (and the ledger sees it: the pages
/// file reaches its full size unsynced).
#[test]
fn zero_syncs_each_file_only_when_complete() {
    let (_src, db, _model) = source(1);
    let dst = SyncLedger::new(Arc::new(SimDisk::new(2)));
    let mut j = job(&db, &dst, "b1", 0);
    run(&mut j, 256 << 10);
    let pages = dst.file("backups/.tmp-b1/pages/000000.pages");
    assert_eq!(pages.syncs, 1);
    assert_eq!(pages.max_unsynced_bytes, pages.image.len() as u64);
}

/// The backup writer dies in the middle of the pages and the destination loses power:
/// every prefix synced before survives, byte for byte, and the leftover is incomplete.
#[test]
fn a_crash_mid_copy_keeps_every_synced_prefix() {
    let mut survived = 0;
    for seed in 0..8 {
        let (_src, db, _model) = source(1);
        let sim = SimDisk::new(100 + seed);
        let dst = SyncLedger::new(Arc::new(sim.clone()));
        let mut j = job(&db, &dst, "b1", EVERY);
        // About 700 KB of the 1.6 MB of pages (about 520 KB stored), in steps that do
        // not end on a boundary.
        for _ in 0..7 {
            assert!(matches!(j.step(100_000).unwrap(), Step::Progress(_)));
        }
        let before = dst.file("backups/.tmp-b1/pages/000000.pages");
        let written = before.image.len() as u64;
        assert!(written > 450_000, "{written}");
        assert!(
            before.synced_len + EVERY >= written,
            "seed {seed}: {written} bytes written, only {} synced",
            before.synced_len
        );
        drop(j);
        sim.crash();
        // The file's directory entry is synced only at finalize, so a crash may take
        // the whole file (and with it the synced bytes) away; what is there must hold
        // the synced prefix.
        let f = match sim.open(Path::new("backups/.tmp-b1/pages/000000.pages")) {
            Ok(f) => f,
            Err(e) if e.is_not_found() => continue,
            Err(e) => panic!("seed {seed}: {e}"),
        };
        survived += 1;
        let len = f.len().unwrap();
        assert!(len >= before.synced_len, "seed {seed}: {len} bytes left");
        let mut buf = vec![0u8; before.synced_len as usize];
        f.read_at(0, &mut buf).unwrap();
        assert!(
            buf == before.image[..buf.len()],
            "seed {seed}: the synced prefix changed"
        );
        let d: DynDisk = Arc::new(sim.clone());
        let listed = ryu_backup::list(&d, Path::new(DEST)).unwrap();
        assert!(
            listed
                .iter()
                .all(|e| matches!(e.status, ryu_backup::BackupStatus::Incomplete)),
            "{listed:?}"
        );
    }
    assert!(survived >= 2, "only {survived} of 8 crashes kept the file");
}

/// The read-back of the pages files before publishing reads about as much as the copy
/// wrote, so it runs in steps under the same rate limit: at 10 MB/s and 10 ms a step
/// (100 KB), the 1.6 MB of pages take 16 steps to copy and their 1.2 MB pages file a
/// dozen more to read back (with the read-back's bytes not counted, the whole backup
/// took 26 steps; it takes 37).
#[test]
fn the_read_back_verify_is_paced_by_the_rate_limit() {
    let (_src, db, _model) = source(1);
    let dst = SyncLedger::new(Arc::new(SimDisk::new(2)));
    let clock = Arc::new(ManualClock::new(1_700_000_000_000_000_000));
    let options = BackupOptions {
        id: BackupId::new("b1").unwrap(),
        max_bytes_per_sec: Some(10_000_000),
        ..Default::default()
    };
    let d: DynDisk = Arc::new(dst.clone());
    let mut j = BackupJob::start(&db, d, Path::new(DEST), clock.clone(), options).unwrap();
    let mut steps = 0u64;
    loop {
        clock.advance(10_000_000);
        steps += 1;
        if let Step::Done(_) = j.step(u64::MAX).unwrap() {
            break;
        }
    }
    let image = dst.file("backups/.tmp-b1/pages/000000.pages").image;
    let (pages, copied) = (image.len() as u64, entries_in(&image) * 4096);
    assert!(pages > 1_000_000, "{pages}");
    // 100 KB a step: the copy needs the pages it reads (whole) / 100 KB steps, the
    // read-back the pages file / 100 KB more (the WAL's few steps are the margin).
    assert!(
        steps >= copied / 100_000 + pages / 100_000,
        "{steps} steps for {copied} bytes of pages copied and {pages} read back"
    );
}
