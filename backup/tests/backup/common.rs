//! Shared helpers: a database on a `SimDisk`, a model of committed writes per
//! timestamp, running a backup job to the end, and reading a whole database.

use ryu_backup::{BackupId, BackupJob, BackupOptions, BackupSummary, Step};
use ryu_engine::{Db, Options, Ts};
use ryu_io::{Disk, DynDisk, DynFile, File, IoError, IoResult, ManualClock};
use ryu_sim::SimDisk;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

pub const DB: &str = "db";
pub const DEST: &str = "backups";

pub type State = BTreeMap<Vec<u8>, Vec<u8>>;

pub fn small_options() -> Options {
    Options {
        cache_pages: 64,
        wal_segment_bytes: 16 << 10,
        checkpoint_after_bytes: 0,
        sync_commits: true,
    }
}

pub fn disk(seed: u64) -> DynDisk {
    Arc::new(SimDisk::new(seed))
}

pub fn open(disk: &DynDisk, dir: &str) -> Db {
    Db::open(disk.clone(), Path::new(dir), small_options()).expect("open")
}

pub fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(1_700_000_000_000_000_000))
}

/// Everything visible to a fresh snapshot.
pub fn read_all(db: &Db) -> State {
    let r = db.begin_read();
    r.range::<std::ops::RangeFull>(..)
        .collect::<ryu_engine::Result<State>>()
        .expect("read all")
}

/// Committed writes, by timestamp.
#[derive(Debug, Default, Clone)]
pub struct Model {
    pub commits: BTreeMap<Ts, Vec<ryu_engine::Write>>,
}

impl Model {
    /// The committed state at `ts`.
    pub fn state_at(&self, ts: Ts) -> State {
        let mut s = State::new();
        for writes in self.commits.range(..=ts).map(|(_, w)| w) {
            for (k, v) in writes {
                match v {
                    Some(v) => s.insert(k.clone(), v.clone()),
                    None => s.remove(k),
                };
            }
        }
        s
    }

    /// The newest commit timestamp at or below `ts` (0 when none).
    pub fn last_at_or_below(&self, ts: Ts) -> Ts {
        self.commits.range(..=ts).next_back().map_or(0, |(t, _)| *t)
    }
}

/// Commit `n` transactions of a few keys each; returns the last timestamp.
pub fn commit_some(db: &Db, model: &mut Model, round: u32, n: u32) -> Ts {
    let mut ts = 0;
    for i in 0..n {
        let mut w = db.begin_write();
        let mut writes = Vec::new();
        for j in 0..3u32 {
            let k = format!("key{:04}", (i * 7 + j * 13 + round * 5) % 300).into_bytes();
            if (i + j + round).is_multiple_of(11) {
                w.delete(&k).unwrap();
                writes.push((k, None));
            } else {
                let v =
                    format!("r{round}-i{i}-j{j}-{}", "x".repeat((i % 50) as usize)).into_bytes();
                w.put(&k, &v).unwrap();
                writes.push((k, Some(v)));
            }
        }
        ts = w.commit().unwrap();
        model.commits.insert(ts, writes);
    }
    ts
}

/// Pages files of 12 KiB (two pages each), so that the small databases of these tests
/// make backups of several pages files.
pub const PAGES_FILE_BYTES: u64 = 12 << 10;

pub fn options(id: &str, parent: Option<&str>) -> BackupOptions {
    BackupOptions {
        id: BackupId::new(id).unwrap(),
        parent: parent.map(|p| BackupId::new(p).unwrap()),
        pages_file_bytes: Some(PAGES_FILE_BYTES),
        ..Default::default()
    }
}

/// Run a backup to the end with a given step budget.
pub fn backup(db: &Db, dst: &DynDisk, id: &str, parent: Option<&str>) -> BackupSummary {
    let mut job = BackupJob::start(
        db,
        dst.clone(),
        Path::new(DEST),
        clock(),
        options(id, parent),
    )
    .expect("start");
    loop {
        if let Step::Done(s) = job.step(16 << 10).expect("step") {
            return *s;
        }
    }
}

/// A disk that fails every operation once its budget of operations is spent: the
/// writer's view of a power cut. The harness then crashes the `SimDisk` underneath.
#[derive(Debug, Clone)]
pub struct PowerCut {
    inner: DynDisk,
    budget: Arc<AtomicI64>,
}

impl PowerCut {
    pub fn new(inner: DynDisk, budget: i64) -> PowerCut {
        PowerCut {
            inner,
            budget: Arc::new(AtomicI64::new(budget)),
        }
    }
    pub fn is_cut(&self) -> bool {
        self.budget.load(Ordering::SeqCst) <= 0
    }
    fn spend(&self) -> IoResult<()> {
        if self.budget.fetch_sub(1, Ordering::SeqCst) <= 0 {
            return Err(IoError::io("power", "power cut"));
        }
        Ok(())
    }
}

#[derive(Debug)]
struct CutFile {
    inner: DynFile,
    cut: PowerCut,
}

impl File for CutFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> IoResult<()> {
        self.cut.spend()?;
        self.inner.read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> IoResult<()> {
        self.cut.spend()?;
        self.inner.write_at(offset, data)
    }
    fn sync_data(&self) -> IoResult<()> {
        self.cut.spend()?;
        self.inner.sync_data()
    }
    fn set_len(&self, len: u64) -> IoResult<()> {
        self.cut.spend()?;
        self.inner.set_len(len)
    }
    fn len(&self) -> IoResult<u64> {
        self.cut.spend()?;
        self.inner.len()
    }
}

impl Disk for PowerCut {
    fn create(&self, path: &Path) -> IoResult<DynFile> {
        self.spend()?;
        let inner = self.inner.create(path)?;
        Ok(Arc::new(CutFile {
            inner,
            cut: self.clone(),
        }))
    }
    fn open(&self, path: &Path) -> IoResult<DynFile> {
        self.spend()?;
        let inner = self.inner.open(path)?;
        Ok(Arc::new(CutFile {
            inner,
            cut: self.clone(),
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> IoResult<()> {
        self.spend()?;
        self.inner.rename(from, to)
    }
    fn remove(&self, path: &Path) -> IoResult<()> {
        self.spend()?;
        self.inner.remove(path)
    }
    fn list(&self, dir: &Path) -> IoResult<Vec<String>> {
        self.spend()?;
        self.inner.list(dir)
    }
    fn create_dir_all(&self, path: &Path) -> IoResult<()> {
        self.spend()?;
        self.inner.create_dir_all(path)
    }
    fn sync_dir(&self, dir: &Path) -> IoResult<()> {
        self.spend()?;
        self.inner.sync_dir(dir)
    }
    fn is_dir(&self, path: &Path) -> IoResult<bool> {
        self.spend()?;
        self.inner.is_dir(path)
    }
}

/// Inside `impl Disk` of a wrapper that sees only files: the directory operations,
/// passed straight to `self.inner`.
macro_rules! pass_through_dir_ops {
    () => {
        fn rename(&self, from: &Path, to: &Path) -> IoResult<()> {
            self.inner.rename(from, to)
        }
        fn remove(&self, path: &Path) -> IoResult<()> {
            self.inner.remove(path)
        }
        fn list(&self, dir: &Path) -> IoResult<Vec<String>> {
            self.inner.list(dir)
        }
        fn create_dir_all(&self, path: &Path) -> IoResult<()> {
            self.inner.create_dir_all(path)
        }
        fn sync_dir(&self, dir: &Path) -> IoResult<()> {
            self.inner.sync_dir(dir)
        }
        fn is_dir(&self, path: &Path) -> IoResult<bool> {
            self.inner.is_dir(path)
        }
    };
}
pub(crate) use pass_through_dir_ops;

/// What [`ReadTap`] calls after every read: the file's path, the offset, the bytes
/// read (which it may change).
pub type ReadHook = Arc<dyn Fn(&Path, u64, &mut [u8]) + Send + Sync>;

/// A disk that hands every read of a file opened through it to a hook: to count what
/// a reader reads, or to hand it other bytes than the disk holds.
#[derive(Clone)]
pub struct ReadTap {
    inner: DynDisk,
    hook: ReadHook,
}

impl std::fmt::Debug for ReadTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadTap").finish_non_exhaustive()
    }
}

impl ReadTap {
    pub fn new(inner: DynDisk, hook: ReadHook) -> ReadTap {
        ReadTap { inner, hook }
    }
    fn wrap(&self, path: &Path, inner: DynFile) -> DynFile {
        Arc::new(TapFile {
            inner,
            path: path.to_path_buf(),
            tap: self.clone(),
        })
    }
}

#[derive(Debug)]
struct TapFile {
    inner: DynFile,
    path: std::path::PathBuf,
    tap: ReadTap,
}

impl File for TapFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> IoResult<()> {
        self.inner.read_at(offset, buf)?;
        (self.tap.hook)(&self.path, offset, buf);
        Ok(())
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> IoResult<()> {
        self.inner.write_at(offset, data)
    }
    fn sync_data(&self) -> IoResult<()> {
        self.inner.sync_data()
    }
    fn set_len(&self, len: u64) -> IoResult<()> {
        self.inner.set_len(len)
    }
    fn len(&self) -> IoResult<u64> {
        self.inner.len()
    }
}

impl Disk for ReadTap {
    fn create(&self, path: &Path) -> IoResult<DynFile> {
        Ok(self.wrap(path, self.inner.create(path)?))
    }
    fn open(&self, path: &Path) -> IoResult<DynFile> {
        Ok(self.wrap(path, self.inner.open(path)?))
    }
    pass_through_dir_ops!();
}
