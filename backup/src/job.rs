//! The online backup job: cooperative steps that copy one pinned checkpoint
//! generation and the WAL up to a snapshot timestamp, then finalize atomically.
//!
//! # Phases
//!
//! 1. `start`: take the destination lock, pin the newest checkpoint generation, fix the
//!    snapshot timestamp (the newest durable commit, never below the pinned checkpoint),
//!    list the pages to copy (all tree pages, or those written since the parent's
//!    generation for an incremental) and the WAL segments from the pinned WAL start.
//! 2. Pages: each step reads up to its budget of pages from the source `data` file (a
//!    pinned generation's pages are never overwritten) and appends them to the current
//!    pages file `pages/NNNNNN.pages` in the temporary directory `dest/.tmp-<id>`,
//!    handing every few MiB to the device as it goes (`BackupOptions::write_behind_bytes`:
//!    the job never leaves a large dirty backlog for the kernel to write back in a
//!    burst, ahead of the database's own syncs). A full pages file gets its header and
//!    its sync, and is then read back and checked (from the page cache, and dropped
//!    from it) by the following steps, as much again as each copies (at least one
//!    read of up to a chunk), while the next file fills: nothing writes to a file after
//!    its read-back began.
//! 3. WAL: each step reads up to its budget of the current segment; once the records up
//!    to the snapshot timestamp are in memory, the copy is cut after the last of them,
//!    written (paced the same way) and synced. The pin is released when the
//!    last byte has been read.
//! 4. Finalize, one action per step so a crash can fall between any two: write and
//!    sync the manifest, sync the temporary directories; finish reading the pages files
//!    back, a budget at a time under the same rate limit as the copy (the read-back is
//!    as large as the pages files, which store the pages without their zeros at the
//!    end); verify the rest of the temporary backup with that
//!    outcome; rename it to `dest/<id>` and sync `dest`; release the lock. Until the
//!    rename is durable the backup exists only as `.tmp-<id>`, which `list` reports as
//!    incomplete and `prune` removes.
//!
//! A failed step abandons the job: the pin is released, the temporary directory and
//! the lock are removed (best effort), and every later step returns `JobFinished`.

use crate::error::{Error, Result};
use crate::fsutil::{
    self, Appender, Pacing, acquire_lock, release_lock, write_file_paced, write_file_synced,
};
use crate::manifest::{
    BackupKind, ClusterInfo, FileEntry, MANIFEST_FILE, MANIFEST_FORMAT, MANIFEST_VERSION, Manifest,
    TOOL, WalRange, crc_hex,
};
use crate::pages::{
    DEFAULT_PAGES_FILE_BYTES, PAGES_DIR, PAGES_HEADER, PAGES_VERSION, PAGES_VERSION_WHOLE,
    PageExpect, PagesChecked, PagesHeader, PagesVerifier, encode_entry, entries_per_file,
    file_count, pages_file,
};
use crate::verify::{PagesCheck, load_manifest, page_expect, verify_dir_with};
use crate::walcopy;
use crate::{BackupId, TMP_PREFIX};
use ryu_engine::page::FORMAT_VERSION;
use ryu_engine::wal::{WAL_VERSION, scan_records};
use ryu_engine::{DATA_FILE, Db, GenerationPin, PAGE_SIZE, Ts, WAL_DIR};
use ryu_io::{Clock, DynDisk, DynFile};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How a backup job runs.
#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    /// The new backup's id (see [`BackupId`]).
    pub id: BackupId,
    /// Make an incremental backup on top of this complete backup in the same
    /// destination; `None` for a full backup.
    pub parent: Option<BackupId>,
    /// Cap every step's budget at this many bytes.
    pub max_bytes_per_step: Option<u64>,
    /// Cap the average read rate, measured on the job's clock (monotonic time): reads
    /// of the source and the read-back of the pages files before publishing (as large
    /// as the pages files: 70 to 100% of the pages copied, so a limited backup takes
    /// up to twice as long as its copy alone). Every byte read is written at most
    /// once, so this caps the writes too. A token bucket: allowance the job does not
    /// use (its driver did not step it) piles up to one write-behind window, or a
    /// tenth of a second at the rate if that is more, and no further, so a job stepped
    /// again after a pause does not read the pause's worth in one burst (one step reads
    /// at most twice that: its copy and the read-back beside it).
    /// `Some(0)` is refused by [`BackupJob::start`].
    pub max_bytes_per_sec: Option<u64>,
    /// Recorded in the manifest for a replicated node's backup.
    pub cluster: Option<ClusterInfo>,
    /// Sync each file the job writes after every this many bytes, not only once at its
    /// end; `None` or `Some(0)`: only at its end. Each sync is a blocking `fdatasync`
    /// (a device cache flush) that stops the copy; write-behind (below) bounds the dirty
    /// backlog without one, so periodic syncs are only for a caller that wants a crash
    /// mid-copy to keep what was copied (the job itself starts over).
    pub sync_every_bytes: Option<u64>,
    /// Hand each window of this many bytes of every file the job writes to the device
    /// as soon as it is written, and wait for the window before it
    /// (`File::write_behind`, `sync_file_range(2)` on Linux; RocksDB's
    /// `bytes_per_sync`); `None` picks [`DEFAULT_WRITE_BEHIND_BYTES`], `Some(0)` turns
    /// it off. A backup that leaves hundreds of MB dirty in the page cache hands the
    /// writeback to the kernel, which does it in bursts that the database's own commit
    /// syncs on the same disk wait behind, and the job's last sync then writes it all
    /// while the copy stands still. Write-behind keeps at most two windows dirty or in
    /// flight and overlaps their writeback with the copy. It is a hint: durability
    /// still comes only from the syncs before the backup is published. Under load the
    /// window shapes the commits' tail: the commit syncs that follow a handover wait
    /// while the window is written, so the window trades the commits' p99 against
    /// their tail. Measured under a 50 MB/s backup on one disk (the crate's README,
    /// "Benchmark"): 8 MiB windows cost p99 +9% to +18% and p99.9 +242% to +441%;
    /// 32 KiB windows, with a driver that steps the job as
    /// [`BackupJob::next_step_in_ns`] says (a step about every 0.65 ms), p99 +21% to
    /// +25%, but p99.9 only +41% to +81% and p99.99 +10% to +17%; 64 MiB windows p99
    /// +5% to +10%, but they stall commits for 40 to 50 ms at a time on a disk that
    /// writes 1.5 GB/s.
    pub write_behind_bytes: Option<u64>,
    /// Keep what the job writes in the page cache (`true`), or drop each window once it
    /// is written back, each WAL copy once synced and each pages file's read-back once
    /// it is checked (`false`, the default; `File::drop_cache`, `posix_fadvise(DONTNEED)`
    /// on Linux).
    pub keep_in_page_cache: bool,
    /// Write the pages files in format 2, every page stored whole (see
    /// [`crate::pages`]), as builds before format 3 read them: a backup an older build
    /// can restore, about a third larger for pages a quarter empty. `false` (the
    /// default) writes format 3.
    pub whole_pages: bool,
    /// Split the pages over files of at most this many bytes of entries (see
    /// [`crate::pages`]); `None` picks [`DEFAULT_PAGES_FILE_BYTES`]. Each file is synced,
    /// read back and (unless [`BackupOptions::keep_in_page_cache`]) dropped from the
    /// page cache as soon as it is complete. A file holds as many entries as fit were
    /// every page stored whole (4,106 bytes an entry: most are shorter), at least one.
    pub pages_file_bytes: Option<u64>,
    /// Switch on one planted bug (tests of the simulator only).
    #[cfg(feature = "planted-bugs")]
    pub planted_bug: Option<PlantedBug>,
}

/// The write-behind window a job uses unless told otherwise (see
/// [`BackupOptions::write_behind_bytes`]; why 8 MiB: the crate's README, "Choosing
/// the window").
pub const DEFAULT_WRITE_BEHIND_BYTES: u64 = 8 << 20;

/// The least a rate-limited job lets its allowance grow before it asks to be stepped
/// again ([`BackupJob::next_step_in_ns`]), however small its write-behind window: a
/// driver that woke for every 4 KiB page would wake 12,000 times a second at 50 MB/s.
pub const MIN_PACING_BYTES: u64 = 32 << 10;

impl BackupOptions {
    /// How the job paces the files it writes.
    pub(crate) fn pacing(&self) -> Pacing {
        Pacing {
            sync_every_bytes: self.sync_every_bytes.unwrap_or(0),
            write_behind_bytes: self
                .write_behind_bytes
                .unwrap_or(DEFAULT_WRITE_BEHIND_BYTES),
            drop_behind: !self.keep_in_page_cache,
        }
    }
}

/// Classic backup bugs the simulated sweep must catch (feature `planted-bugs` only).
#[cfg(feature = "planted-bugs")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlantedBug {
    /// Release the generation pin before copying: checkpoints may reuse the pages.
    CopyWithoutPin,
    /// Publish (rename) before the copied files are synced.
    PublishBeforeSync,
    /// Cut the WAL one record short of the snapshot and claim the snapshot anyway.
    WalRangeOffByOne,
}

#[cfg(feature = "planted-bugs")]
macro_rules! planted {
    ($job:expr, $bug:ident) => {
        $job.options.planted_bug == Some(PlantedBug::$bug)
    };
}
#[cfg(not(feature = "planted-bugs"))]
macro_rules! planted {
    ($job:expr, $bug:ident) => {
        false
    };
}

/// Bytes read from the source so far, of the total the job expects to read. The
/// finalize steps after the copy (the read-back among them) are not counted: a job
/// whose progress is complete is finalizing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// What a finished job made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    pub id: String,
    pub dir: PathBuf,
    pub manifest: Manifest,
}

/// The outcome of one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Work remains.
    Progress(Progress),
    /// The rate limit allows no bytes now; step again later.
    Throttled(Progress),
    /// The backup is complete and durable.
    Done(Box<BackupSummary>),
}

/// Free pages a read may span to join two runs of needed pages.
const MAX_GAP_PAGES: u64 = 16;

/// A progress callback.
pub type ProgressFn = Box<dyn FnMut(Progress) + Send>;

#[derive(Debug)]
struct SegmentCopy {
    number: u64,
    file_len: u64,
    buf: Vec<u8>,
    scanned_at_len: usize,
}

enum Phase {
    Pages,
    Wal,
    WriteManifest,
    /// Finish reading the pages files back and checking them, a budget at a time.
    VerifyPages,
    /// Verify the rest of the temporary directory, with the outcome of `VerifyPages`.
    VerifyTmp,
    Publish,
    Unlock,
    Finished,
}

/// A running backup. Drive it with [`BackupJob::step`] until it returns
/// [`Step::Done`] or an error.
pub struct BackupJob {
    src_disk: DynDisk,
    src_dir: PathBuf,
    pin: Option<GenerationPin>,
    dst: DynDisk,
    dest: PathBuf,
    tmp: PathBuf,
    clock: Arc<dyn Clock>,
    options: BackupOptions,
    on_progress: Option<ProgressFn>,
    /// The rate limit's origin on the job's clock: the job may have read
    /// `max_bytes_per_sec` bytes for every second since it. Starts at the job's start
    /// and moves forward when the job was not stepped for a while, so that the
    /// allowance it did not use never exceeds [`BackupJob::rate_burst`].
    rate_origin_ns: u64,
    progress: Progress,
    /// Bytes read from the source, gaps between needed pages included (what the rate
    /// limit counts).
    read_bytes: u64,
    phase: Phase,
    manifest: Manifest,
    // Pages phase.
    data_file: Option<DynFile>,
    pages_out: Option<Appender>,
    /// Buffers of the pages phase, kept from step to step (a fresh multi-MB buffer per
    /// step costs a page fault per 4 KiB).
    read_buf: Vec<u8>,
    out_buf: Vec<u8>,
    superblock_image: Vec<u8>,
    superblock_page: u64,
    page_queue: Vec<u64>,
    page_next: usize,
    pages_written: u64,
    /// Entries per pages file, and how many files.
    pages_per_file: u64,
    pages_files: u32,
    /// The pages file being written (`pages_out`): its index, entries, their bytes and
    /// their crc32.
    pages_index: u32,
    pages_in_file: u64,
    pages_file_len: u64,
    pages_crc: crc32fast::Hasher,
    // WAL phase.
    segments: Vec<(u64, u64)>,
    segment_next: usize,
    current: Option<SegmentCopy>,
    /// Header-only copies held back until a later segment with records follows them.
    pending_empty: Vec<(u64, Vec<u8>)>,
    next_lsn: u64,
    last_ts: Ts,
    wal_done: bool,
    files: Vec<FileEntry>,
    // Verify phases.
    /// Reads back each complete pages file (those below `pages_ready`).
    pages_verifier: Option<PagesVerifier>,
    pages_ready: u32,
    pages_checked: Option<(PageExpect, PagesChecked)>,
}

// A production driver runs the job on a background thread.
const _: fn() = || {
    fn assert_send<T: Send>() {}
    assert_send::<BackupJob>();
};

impl fmt::Debug for BackupJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackupJob")
            .field("id", &self.manifest.backup_id)
            .field("dest", &self.dest)
            .field("progress", &self.progress)
            .finish_non_exhaustive()
    }
}

fn engine_io(context: &'static str, path: &Path, e: ryu_io::IoError) -> Error {
    Error::Engine(ryu_engine::Error::Io {
        context,
        source: ryu_io::IoError::io(context, format!("{}: {e}", path.display())),
    })
}

impl BackupJob {
    /// Start a backup of `db` into `dest_dir/<id>` on `dest_disk`. Takes the
    /// destination lock (`Locked` if another job holds it), pins the newest checkpoint
    /// generation and fixes the snapshot timestamp. For an incremental backup the parent
    /// must be a complete backup in the same destination of an older or equal
    /// generation.
    pub fn start(
        db: &Db,
        dest_disk: DynDisk,
        dest_dir: &Path,
        clock: Arc<dyn Clock>,
        options: BackupOptions,
    ) -> Result<BackupJob> {
        let id = options.id.clone();
        id.validate()?;
        let holder = format!(
            "backup job {} started at unix ns {}",
            id,
            clock.wall_unix_ns()
        );
        acquire_lock(&dest_disk, dest_dir, &holder)?;
        match Self::start_locked(db, dest_disk.clone(), dest_dir, clock, options) {
            Ok(job) => Ok(job),
            Err(e) => {
                // Best effort: a leftover is harmless (incomplete, pruned) but untidy.
                let tmp = dest_dir.join(format!("{TMP_PREFIX}{id}"));
                let _ = fsutil::remove_tree(&dest_disk, &tmp);
                let _ = release_lock(&dest_disk, dest_dir);
                Err(e)
            }
        }
    }

    fn start_locked(
        db: &Db,
        dst: DynDisk,
        dest: &Path,
        clock: Arc<dyn Clock>,
        options: BackupOptions,
    ) -> Result<BackupJob> {
        // A rate of zero would leave a job that holds its pin and the lock and never
        // moves (every step throttled): refuse it up front. (A step cap of zero still
        // moves a page per step.)
        if options.max_bytes_per_sec == Some(0) {
            return Err(Error::Invalid {
                detail: "max_bytes_per_sec is 0: a job limited to nothing never finishes \
                         (None for no limit)"
                    .into(),
            });
        }
        let id = options.id.as_str().to_string();
        let final_dir = dest.join(&id);
        if dst
            .exists(&final_dir)
            .map_err(|e| Error::io("stat", &final_dir, e))?
        {
            return Err(Error::Invalid {
                detail: format!("a backup {id:?} already exists in {}", dest.display()),
            });
        }
        let parent = match &options.parent {
            Some(p) => Some(load_manifest(&dst, &dest.join(p.as_str()))?),
            None => None,
        };
        // Pin first, then read the newest durable commit: the pinned checkpoint is
        // durable, so its timestamp never exceeds the visible one read after it.
        let pin = db.pin_generation();
        let snapshot_ts = db.last_committed_ts();
        assert!(pin.checkpoint_ts() <= snapshot_ts);
        let (kind, pages, parent_fields) = match &parent {
            None => (BackupKind::Full, pin.tree_pages()?, None),
            Some(p) => {
                let pm = &p.manifest;
                if pm.generation > pin.generation() || pm.snapshot_ts > snapshot_ts {
                    return Err(Error::BrokenChain {
                        id: id.clone(),
                        detail: format!(
                            "parent {} (generation {}, ts {}) is newer than the database (generation {}, ts {snapshot_ts})",
                            pm.backup_id,
                            pm.generation,
                            pm.snapshot_ts,
                            pin.generation()
                        ),
                    });
                }
                let fields = (
                    pm.backup_id.clone(),
                    p.crc32.clone(),
                    pm.chain_root_id.clone(),
                    pm.generation,
                );
                (
                    BackupKind::Incremental,
                    pin.pages_written_since(pm.generation)?,
                    Some(fields),
                )
            }
        };
        let mut page_queue: Vec<u64> = pages
            .iter()
            .flat_map(|r| r.first_page..r.first_page + r.page_count)
            .collect();
        let superblock_page = pin.superblock_offset() / PAGE_SIZE as u64;
        page_queue.push(superblock_page);
        page_queue.sort_unstable();
        page_queue.dedup();
        let (wal_segment, wal_lsn) = pin.wal_start();
        let mut segments = Vec::new();
        let mut wal_bytes = 0;
        for f in pin.files()? {
            if f.path.starts_with(WAL_DIR) {
                let name = f.path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                let number = name
                    .strip_suffix(".log")
                    .and_then(|d| d.parse::<u64>().ok())
                    .ok_or_else(|| Error::Invalid {
                        detail: format!("unexpected WAL file {}", f.path.display()),
                    })?;
                let len = f.ranges.iter().map(|r| r.0 + r.1).max().unwrap_or(0);
                segments.push((number, len));
                wal_bytes += len;
            }
        }
        segments.sort_unstable();
        let (src_disk, src_dir) = db.location();
        let tmp = dest.join(format!("{TMP_PREFIX}{id}"));
        // We hold the lock, so a leftover temporary directory of this id is dead.
        fsutil::remove_tree(&dst, &tmp)?;
        dst.create_dir_all(&tmp.join(WAL_DIR))
            .and_then(|()| dst.create_dir_all(&tmp.join(PAGES_DIR)))
            .map_err(|e| Error::io("create dir", &tmp, e))?;
        dst.sync_dir(&tmp)
            .and_then(|()| dst.sync_dir(dest))
            .map_err(|e| Error::io("sync dir", dest, e))?;
        let pages_path = tmp.join(pages_file(0));
        let first_pages_file = dst
            .create(&pages_path)
            .map_err(|e| Error::io("create", &pages_path, e))?;
        let data_path = src_dir.join(DATA_FILE);
        let data_file = src_disk
            .open(&data_path)
            .map_err(|e| engine_io("open", &data_path, e))?;
        let (parent_id, parent_crc, chain_root, parent_generation) = match parent_fields {
            Some((a, b, c, d)) => (Some(a), Some(b), c, Some(d)),
            None => (None, None, id.clone(), None),
        };
        let manifest = Manifest {
            format: MANIFEST_FORMAT.to_string(),
            manifest_version: MANIFEST_VERSION,
            backup_id: id,
            kind,
            parent_id,
            parent_manifest_crc32: parent_crc,
            chain_root_id: chain_root,
            snapshot_ts,
            checkpoint_ts: pin.checkpoint_ts(),
            generation: pin.generation(),
            parent_generation,
            page_count: pin.data_len_bytes() / PAGE_SIZE as u64,
            wal: WalRange {
                first_segment: wal_segment,
                first_lsn: wal_lsn,
                last_lsn: wal_lsn - 1,
                last_ts: pin.checkpoint_ts(),
            },
            engine_format_version: FORMAT_VERSION,
            wal_format_version: WAL_VERSION,
            created_unix_ns: clock.wall_unix_ns(),
            tool: TOOL.to_string(),
            cluster: options.cluster.clone(),
            files: Vec::new(),
        };
        let bytes_total = page_queue.len() as u64 * PAGE_SIZE as u64 + wal_bytes;
        let rate_origin_ns = clock.monotonic_ns();
        let pacing = options.pacing();
        let pages_per_file =
            entries_per_file(options.pages_file_bytes.unwrap_or(DEFAULT_PAGES_FILE_BYTES));
        let pages_files = u32::try_from(file_count(page_queue.len() as u64, pages_per_file))
            .map_err(|_| Error::Invalid {
                detail: "more than 2^32 - 1 pages files: raise pages_file_bytes".into(),
            })?;
        let mut job = BackupJob {
            src_disk,
            src_dir,
            superblock_image: pin.superblock_image(),
            superblock_page,
            pin: Some(pin),
            dst,
            dest: dest.to_path_buf(),
            tmp,
            clock,
            options,
            on_progress: None,
            rate_origin_ns,
            read_bytes: 0,
            progress: Progress {
                bytes_done: 0,
                bytes_total,
            },
            phase: Phase::Pages,
            manifest,
            data_file: Some(data_file),
            pages_out: Some(Appender::new(
                first_pages_file,
                pages_path,
                PAGES_HEADER as u64,
                pacing.pages(),
            )),
            read_buf: Vec::new(),
            out_buf: Vec::new(),
            page_queue,
            page_next: 0,
            pages_written: 0,
            pages_per_file,
            pages_files,
            pages_index: 0,
            pages_in_file: 0,
            pages_file_len: 0,
            pages_crc: crc32fast::Hasher::new(),
            segments,
            segment_next: 0,
            current: None,
            pending_empty: Vec::new(),
            next_lsn: wal_lsn,
            last_ts: 0,
            wal_done: false,
            pages_verifier: None,
            pages_ready: 0,
            pages_checked: None,
            files: Vec::new(),
        };
        if planted!(job, CopyWithoutPin) {
            job.pin = None;
        }
        Ok(job)
    }

    /// Call `f` after every step that moved bytes.
    pub fn on_progress(&mut self, f: ProgressFn) {
        self.on_progress = Some(f);
    }

    /// Progress so far.
    pub fn progress(&self) -> Progress {
        self.progress
    }

    /// The snapshot timestamp the backup restores to.
    pub fn snapshot_ts(&self) -> Ts {
        self.manifest.snapshot_ts
    }

    /// The backup's id.
    pub fn id(&self) -> &str {
        &self.manifest.backup_id
    }

    /// Do up to `budget_bytes` of source reads (at least one page or one finalize
    /// action). An error abandons the job and cleans up.
    pub fn step(&mut self, budget_bytes: u64) -> Result<Step> {
        if matches!(self.phase, Phase::Finished) {
            return Err(Error::JobFinished);
        }
        match self.step_inner(budget_bytes) {
            Ok(s) => Ok(s),
            Err(e) => {
                self.abandon();
                Err(e)
            }
        }
    }

    /// Give up: release the pin, remove the temporary directory and the lock.
    pub fn abort(mut self) -> Result<()> {
        if matches!(self.phase, Phase::Finished) {
            return Ok(());
        }
        self.phase = Phase::Finished;
        self.pin = None;
        fsutil::remove_tree(&self.dst, &self.tmp)?;
        self.dst
            .sync_dir(&self.dest)
            .map_err(|e| Error::io("sync dir", &self.dest, e))?;
        release_lock(&self.dst, &self.dest)
    }

    fn abandon(&mut self) {
        self.phase = Phase::Finished;
        self.pin = None;
        let _ = fsutil::remove_tree(&self.dst, &self.tmp);
        let _ = self.dst.sync_dir(&self.dest);
        let _ = release_lock(&self.dst, &self.dest);
    }

    /// How long a driver should wait, in nanoseconds of the job's clock, before its
    /// next step: until the rate limit allows one more write-behind window of reads
    /// (at least [`MIN_PACING_BYTES`]; with write-behind off, [`DEFAULT_WRITE_BEHIND_BYTES`]),
    /// or 0 when the job has no rate limit, is past its copying, or may go on now. A
    /// driver that sleeps this long between throttled steps spreads the job's writes
    /// evenly, a window's worth of reads at a time (while pages files are read back
    /// beside the copy, up to half of those reads are the read-back: a 50 MB/s job with
    /// 32 KiB windows steps every 0.65 ms and writes a window every 1.3 ms); one that
    /// sleeps longer lets the allowance pile up and then writes it in a burst, which
    /// the commits on the same disk pay for (see [`BackupOptions::write_behind_bytes`]).
    /// A driver may cap the sleep (the server's at 5 ms) to stay responsive; stepping
    /// early yields [`Step::Throttled`] or a smaller step.
    pub fn next_step_in_ns(&self) -> u64 {
        let Some(rate) = self.options.max_bytes_per_sec else {
            return 0;
        };
        if !matches!(self.phase, Phase::Pages | Phase::Wal | Phase::VerifyPages) {
            return 0;
        }
        // The allowance reaches `read_bytes + quantum` once the job has run
        // `(read_bytes + quantum) / rate` seconds past its rate origin (rounded up:
        // `allowance` rounds down). `rate_burst` is at least the quantum, so the
        // allowance's cap never keeps it from getting there.
        let due = self.rate_due_ns(self.pacing_quantum(), rate);
        let elapsed = self
            .clock
            .monotonic_ns()
            .saturating_sub(self.rate_origin_ns);
        u64::try_from(due.saturating_sub(u128::from(elapsed))).unwrap_or(u64::MAX)
    }

    /// The allowance a rate-limited driver waits for between steps (see
    /// [`BackupJob::next_step_in_ns`]): one write-behind window, at least
    /// [`MIN_PACING_BYTES`]; with write-behind off, [`DEFAULT_WRITE_BEHIND_BYTES`].
    fn pacing_quantum(&self) -> u64 {
        match self.options.pacing().write_behind_bytes {
            0 => DEFAULT_WRITE_BEHIND_BYTES,
            w => w.max(MIN_PACING_BYTES),
        }
    }

    /// The allowance a rate-limited job may gather, however long it went unstepped:
    /// one pacing quantum, or a tenth of a second at the rate if that is more (so a
    /// driver that wakes a few ms late does not lose rate with small windows). A step
    /// may read up to twice its allowance (a copy step reads back as much again of the
    /// pages files already complete) and then waits until the overshoot is paid off,
    /// so the average holds and one step after a pause reads at most two bursts. Without
    /// a cap, a job whose driver stalled for ten seconds (a busy server thread, a
    /// paused benchmark) would then read ten seconds' worth at the device's full
    /// speed: the burst on the shared disk that the limit is there to prevent.
    fn rate_burst(&self, rate: u64) -> u64 {
        self.pacing_quantum().max(rate / 10)
    }

    /// Nanoseconds after the rate origin at which the allowance reaches `ahead` bytes
    /// past what the job has read.
    fn rate_due_ns(&self, ahead: u64, rate: u64) -> u128 {
        ((u128::from(self.read_bytes) + u128::from(ahead)) * 1_000_000_000)
            .div_ceil(u128::from(rate))
    }

    /// Forget the allowance beyond [`BackupJob::rate_burst`]: move the rate origin
    /// forward to the earliest point from which the allowance is at most one burst.
    fn cap_rate_allowance(&mut self) {
        let Some(rate) = self.options.max_bytes_per_sec else {
            return;
        };
        let span = self.rate_due_ns(self.rate_burst(rate), rate);
        let now = self.clock.monotonic_ns();
        let earliest = u64::try_from(u128::from(now).saturating_sub(span)).unwrap_or(0);
        self.rate_origin_ns = self.rate_origin_ns.max(earliest);
    }

    /// Bytes the rate limit allows now (`u64::MAX` without one).
    fn rate_allowance(&self) -> u64 {
        let Some(rate) = self.options.max_bytes_per_sec else {
            return u64::MAX;
        };
        let elapsed = self
            .clock
            .monotonic_ns()
            .saturating_sub(self.rate_origin_ns);
        let allowed = u128::from(rate) * u128::from(elapsed) / 1_000_000_000;
        u64::try_from(allowed)
            .unwrap_or(u64::MAX)
            .saturating_sub(self.read_bytes)
    }

    fn advance(&mut self, bytes: u64) {
        self.progress.bytes_done += bytes;
        if let Some(f) = self.on_progress.as_mut() {
            f(self.progress);
        }
    }

    fn step_inner(&mut self, budget: u64) -> Result<Step> {
        // Reading the backup back counts against the rate limit as copying does.
        let copying = matches!(self.phase, Phase::Pages | Phase::Wal | Phase::VerifyPages);
        // Throttled only by the rate: a caller's budget or `max_bytes_per_step` below a
        // page still moves a page per step (each copy moves at least one), where
        // counting them here would throttle the job forever.
        self.cap_rate_allowance();
        let allowed = self.rate_allowance();
        if copying && allowed < PAGE_SIZE as u64 {
            return Ok(Step::Throttled(self.progress));
        }
        let budget = self
            .options
            .max_bytes_per_step
            .map_or(budget, |cap| budget.min(cap))
            .min(allowed);
        match self.phase {
            Phase::Pages => self.copy_pages(budget)?,
            Phase::Wal => self.copy_wal(budget)?,
            Phase::WriteManifest => self.write_manifest()?,
            Phase::VerifyPages => self.verify_pages(budget)?,
            Phase::VerifyTmp => {
                let pages = match self.pages_checked.take() {
                    Some((expect, checked)) => PagesCheck::Done(expect, checked),
                    None => PagesCheck::Read,
                };
                let report = verify_dir_with(&self.dst, &self.dest, &self.tmp, pages)?;
                if !report.problems.is_empty() {
                    return Err(Error::VerifyFailed {
                        id: self.manifest.backup_id.clone(),
                        problems: report.problems.iter().map(ToString::to_string).collect(),
                    });
                }
                self.phase = Phase::Publish;
            }
            Phase::Publish => {
                let to = self.dest.join(&self.manifest.backup_id);
                self.dst
                    .rename(&self.tmp, &to)
                    .map_err(|e| Error::io("rename", &self.tmp, e))?;
                self.dst
                    .sync_dir(&self.dest)
                    .map_err(|e| Error::io("sync dir", &self.dest, e))?;
                self.phase = Phase::Unlock;
            }
            Phase::Unlock => {
                // The backup is durable; a crash now leaves only a stale lock.
                self.phase = Phase::Finished;
                release_lock(&self.dst, &self.dest)?;
                return Ok(Step::Done(Box::new(BackupSummary {
                    id: self.manifest.backup_id.clone(),
                    dir: self.dest.join(&self.manifest.backup_id),
                    manifest: self.manifest.clone(),
                })));
            }
            Phase::Finished => unreachable!("checked by step"),
        }
        Ok(Step::Progress(self.progress))
    }

    fn copy_pages(&mut self, budget: u64) -> Result<()> {
        let mut left = (budget / PAGE_SIZE as u64).max(1) as usize;
        while left > 0 && self.page_next < self.page_queue.len() {
            left = left.saturating_sub(self.copy_run(left)?);
        }
        // Read back the files already complete, as much again as was copied.
        self.verify_pages_upto(budget, Some(self.pages_ready))?;
        if self.page_next == self.page_queue.len() {
            self.data_file = None;
            self.read_buf = Vec::new();
            self.out_buf = Vec::new();
            self.phase = Phase::Wal;
        }
        Ok(())
    }

    /// Copy the next pages that lie within one read of at most `want` pages; returns
    /// the pages read. Gaps of up to [`MAX_GAP_PAGES`] free pages are read and dropped:
    /// one large sequential read beats many small ones (a tree that many checkpoints
    /// rewrote is scattered over the file).
    fn copy_run(&mut self, want: usize) -> Result<usize> {
        let start = self.page_next;
        let first = self.page_queue[start];
        let mut end = start + 1;
        while end < self.page_queue.len()
            && self.page_queue[end] - first < want as u64
            && self.page_queue[end] - self.page_queue[end - 1] <= MAX_GAP_PAGES
        {
            end += 1;
        }
        let span = (self.page_queue[end - 1] - first + 1) as usize;
        // Taken out of `self` for the loop below (which finishes files); an error
        // loses them, and the job with them.
        let mut buf = std::mem::take(&mut self.read_buf);
        buf.resize(span * PAGE_SIZE, 0);
        let data_path = self.src_dir.join(DATA_FILE);
        let data = self.data_file.as_ref().expect("open while copying pages");
        data.read_at(first * PAGE_SIZE as u64, &mut buf)
            .map_err(|e| engine_io("read", &data_path, e))?;
        self.read_bytes += buf.len() as u64;
        let n = end - start;
        let mut out = std::mem::take(&mut self.out_buf);
        let mut at = start;
        while at < end {
            // The entries that still go into the file being written.
            let room = (self.pages_per_file - self.pages_in_file) as usize;
            let upto = end.min(at + room);
            out.clear();
            for &no in &self.page_queue[at..upto] {
                // The live slot may hold a newer generation: copy the pinned image.
                let page = if no == self.superblock_page {
                    &self.superblock_image[..]
                } else {
                    let from = (no - first) as usize * PAGE_SIZE;
                    &buf[from..from + PAGE_SIZE]
                };
                if self.options.whole_pages {
                    out.extend_from_slice(&no.to_le_bytes());
                    out.extend_from_slice(page);
                } else {
                    encode_entry(&mut out, no, page);
                }
            }
            self.pages_out
                .as_mut()
                .expect("open while copying pages")
                .append(&out)?;
            self.pages_crc.update(&out);
            self.pages_file_len += out.len() as u64;
            let entries = (upto - at) as u64;
            self.pages_in_file += entries;
            self.pages_written += entries;
            if self.pages_in_file == self.pages_per_file
                || self.pages_written == self.page_queue.len() as u64
            {
                self.finish_pages_file()?;
            }
            at = upto;
        }
        self.read_buf = buf;
        self.out_buf = out;
        self.page_next = end;
        self.advance((n * PAGE_SIZE) as u64);
        Ok(span)
    }

    /// The newest commit timestamp the WAL copy keeps.
    fn wal_upto(&self) -> Ts {
        let snapshot = self.manifest.snapshot_ts;
        if planted!(self, WalRangeOffByOne) {
            return snapshot.saturating_sub(1);
        }
        snapshot
    }

    fn copy_wal(&mut self, budget: u64) -> Result<()> {
        let snapshot = self.wal_upto();
        if self.wal_done || (self.current.is_none() && self.segment_next == self.segments.len()) {
            return self.finish_wal();
        }
        if self.current.is_none() {
            let (number, file_len) = self.segments[self.segment_next];
            self.segment_next += 1;
            self.current = Some(SegmentCopy {
                number,
                file_len,
                buf: Vec::new(),
                scanned_at_len: 0,
            });
        }
        let seg = self.current.as_mut().expect("set above");
        let path = self
            .src_dir
            .join(WAL_DIR)
            .join(ryu_engine::wal::segment_name(seg.number));
        let n = budget
            .max(PAGE_SIZE as u64)
            .min(seg.file_len - seg.buf.len() as u64) as usize;
        if n > 0 {
            let f = self
                .src_disk
                .open(&path)
                .map_err(|e| engine_io("open", &path, e))?;
            let at = seg.buf.len();
            seg.buf.resize(at + n, 0);
            f.read_at(at as u64, &mut seg.buf[at..])
                .map_err(|e| engine_io("read", &path, e))?;
        }
        let bytes_read = n as u64;
        self.read_bytes += bytes_read;
        // Scanning is linear in what was read: rescan only once the buffer doubled.
        let full = seg.buf.len() as u64 == seg.file_len;
        let rescan = full || seg.buf.len() >= 2 * seg.scanned_at_len.max(PAGE_SIZE);
        let finished = rescan && {
            seg.scanned_at_len = seg.buf.len();
            walcopy::scan_is_final(&seg.buf, seg.file_len, snapshot)
        };
        self.advance(bytes_read);
        if finished {
            let seg = self.current.take().expect("set above");
            self.progress.bytes_done += seg.file_len - seg.buf.len() as u64;
            self.finish_segment(seg)?;
        }
        Ok(())
    }

    fn finish_segment(&mut self, seg: SegmentCopy) -> Result<()> {
        let snapshot = self.wal_upto();
        let seg_path = self
            .src_dir
            .join(WAL_DIR)
            .join(ryu_engine::wal::segment_name(seg.number));
        walcopy::check_header(&seg.buf, seg.number, self.next_lsn, &seg_path)
            .map_err(|e| Error::Engine(to_engine(e)))?;
        let (kept, len) = walcopy::cut(&seg.buf, snapshot);
        for r in &kept {
            if r.lsn != self.next_lsn {
                return Err(Error::Engine(ryu_engine::Error::Corrupted {
                    file: seg_path.clone(),
                    offset: r.offset,
                    detail: format!("WAL record LSN {} where {} was next", r.lsn, self.next_lsn),
                }));
            }
            self.next_lsn += 1;
            self.last_ts = r.commit_ts;
        }
        let reached = self.last_ts == snapshot;
        let image = seg.buf[..len].to_vec();
        if kept.is_empty() {
            if reached || self.manifest.checkpoint_ts == snapshot {
                self.wal_done = true;
            } else {
                self.pending_empty.push((seg.number, image));
            }
            return Ok(());
        }
        for (n, empty) in std::mem::take(&mut self.pending_empty) {
            self.write_wal_file(n, &empty)?;
        }
        self.write_wal_file(seg.number, &image)?;
        // Any record beyond the cut means the snapshot's records all lie behind us.
        if reached || scan_records(&seg.buf).len() > kept.len() {
            self.wal_done = true;
        }
        Ok(())
    }

    fn write_wal_file(&mut self, number: u64, image: &[u8]) -> Result<()> {
        let rel = walcopy::segment_path(number);
        let path = self.tmp.join(&rel);
        write_file_paced(&self.dst, &path, image, self.options.pacing())?;
        self.files.push(FileEntry {
            path: rel,
            size_bytes: image.len() as u64,
            crc32: crc_hex(crc32fast::hash(image)),
        });
        Ok(())
    }

    fn finish_wal(&mut self) -> Result<()> {
        let snapshot = self.manifest.snapshot_ts;
        let ckpt = self.manifest.checkpoint_ts;
        let last_ts = if self.next_lsn == self.manifest.wal.first_lsn {
            ckpt
        } else {
            self.last_ts
        };
        if last_ts != snapshot && !planted!(self, WalRangeOffByOne) {
            return Err(Error::Engine(ryu_engine::Error::Corrupted {
                file: self.src_dir.join(WAL_DIR),
                offset: 0,
                detail: format!(
                    "the WAL ends at ts {last_ts} but the snapshot is at ts {snapshot}"
                ),
            }));
        }
        self.manifest.wal.last_lsn = self.next_lsn - 1;
        self.manifest.wal.last_ts = last_ts;
        self.pin = None; // everything is read: let the engine reuse the pages
        self.progress.bytes_done = self.progress.bytes_total;
        self.phase = Phase::WriteManifest;
        Ok(())
    }

    /// Complete the pages file being written: its header, its sync; then it may be
    /// read back (nothing writes to it again), and the next one is created.
    fn finish_pages_file(&mut self) -> Result<()> {
        let index = self.pages_index;
        let header = PagesHeader {
            version: if self.options.whole_pages {
                PAGES_VERSION_WHOLE
            } else {
                PAGES_VERSION
            },
            generation: self.manifest.generation,
            page_count: self.manifest.page_count,
            entries: self.pages_in_file,
            index,
            count: self.pages_files,
        }
        .encode();
        let rel = pages_file(index);
        let path = self.tmp.join(&rel);
        let f = self
            .pages_out
            .take()
            .expect("pages file open until complete")
            .into_file();
        f.write_at(0, &header)
            .and_then(|()| {
                if planted!(self, PublishBeforeSync) {
                    return Ok(());
                }
                f.sync_data()
            })
            .map_err(|e| Error::io("write", &path, e))?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header);
        crc.combine(&self.pages_crc);
        self.files.push(FileEntry {
            path: rel,
            size_bytes: PAGES_HEADER as u64 + self.pages_file_len,
            crc32: crc_hex(crc.finalize()),
        });
        self.pages_ready = index + 1;
        self.pages_index += 1;
        self.pages_in_file = 0;
        self.pages_file_len = 0;
        self.pages_crc = crc32fast::Hasher::new();
        if self.pages_index < self.pages_files {
            let path = self.tmp.join(pages_file(self.pages_index));
            let file = self
                .dst
                .create(&path)
                .map_err(|e| Error::io("create", &path, e))?;
            self.pages_out = Some(Appender::new(
                file,
                path,
                PAGES_HEADER as u64,
                self.options.pacing().pages(),
            ));
        }
        Ok(())
    }

    fn write_manifest(&mut self) -> Result<()> {
        self.manifest.files = std::mem::take(&mut self.files);
        self.manifest.files.sort_by(|a, b| a.path.cmp(&b.path));
        let (bytes, _) = self.manifest.encode();
        let path = self.tmp.join(MANIFEST_FILE);
        write_file_synced(&self.dst, &path, &bytes)?;
        let wal = self.tmp.join(WAL_DIR);
        let pages = self.tmp.join(PAGES_DIR);
        self.dst
            .sync_dir(&wal)
            .and_then(|()| self.dst.sync_dir(&pages))
            .and_then(|()| self.dst.sync_dir(&self.tmp))
            .map_err(|e| Error::io("sync dir", &self.tmp, e))?;
        self.phase = Phase::VerifyPages;
        Ok(())
    }

    /// Read back and check the rest of the pages files, up to `budget` bytes a step:
    /// the part of the read-back verify that grows with the database (the WAL copies
    /// and the manifest are read in `VerifyTmp`).
    fn verify_pages(&mut self, budget: u64) -> Result<()> {
        if self.verify_pages_upto(budget, None)? {
            let expect = page_expect(&self.manifest);
            let verifier = self.pages_verifier.take().expect("verified");
            self.pages_checked = Some((expect, verifier.finish()));
            self.phase = Phase::VerifyTmp;
        }
        Ok(())
    }

    /// Read back up to about `budget` bytes of the pages files below `ready` (`None`:
    /// all); true once all are read. Counted against the rate limit.
    fn verify_pages_upto(&mut self, budget: u64, ready: Option<u32>) -> Result<bool> {
        let expect = page_expect(&self.manifest);
        let drop_behind = !self.options.keep_in_page_cache;
        let tmp = &self.tmp;
        let verifier = self
            .pages_verifier
            .get_or_insert_with(|| PagesVerifier::new(tmp, expect, drop_behind));
        let before = verifier.read_bytes();
        let done = verifier.advance(&self.dst, budget, ready);
        self.read_bytes += verifier.read_bytes() - before;
        Ok(done)
    }
}

fn to_engine(e: Error) -> ryu_engine::Error {
    match e {
        Error::Corrupted {
            file,
            offset,
            detail,
        } => ryu_engine::Error::Corrupted {
            file,
            offset,
            detail,
        },
        other => ryu_engine::Error::Corrupted {
            file: PathBuf::new(),
            offset: 0,
            detail: other.to_string(),
        },
    }
}
