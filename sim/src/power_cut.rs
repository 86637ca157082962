//! `PowerCut`: a disk wrapper that loses power after a budget of operations, so a
//! harness can cut power at any point inside a call (a group commit, a checkpoint's
//! page writes, recovery itself) and then crash the `SimDisk` underneath.

use ryu_io::{Disk, DynDisk, DynFile, File, IoError, IoResult};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// A disk that fails every operation once its budget of operations is spent: the
/// process's view of a power cut at an arbitrary point. The harness then crashes the
/// `SimDisk` underneath.
#[derive(Debug, Clone)]
pub struct PowerCut {
    inner: DynDisk,
    budget: Arc<AtomicI64>,
    syncs: Arc<AtomicI64>,
}

impl PowerCut {
    pub fn new(inner: DynDisk, budget: i64) -> PowerCut {
        PowerCut {
            inner,
            budget: Arc::new(AtomicI64::new(budget)),
            syncs: Arc::new(AtomicI64::new(0)),
        }
    }

    /// Cut power after `ops` more operations (to aim a cut inside one call).
    pub fn arm(&self, ops: i64) {
        self.budget.store(ops, Ordering::SeqCst);
    }

    /// `sync_data` calls that reached the disk.
    pub fn file_syncs(&self) -> i64 {
        self.syncs.load(Ordering::SeqCst)
    }

    pub fn is_cut(&self) -> bool {
        self.budget.load(Ordering::SeqCst) <= 0
    }

    fn spend(&self, op: &'static str) -> IoResult<()> {
        if self.budget.fetch_sub(1, Ordering::SeqCst) <= 0 {
            Err(IoError::io(op, "power lost"))
        } else {
            Ok(())
        }
    }
}

#[derive(Debug)]
struct PowerCutFile {
    inner: DynFile,
    cut: PowerCut,
}

impl File for PowerCutFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> IoResult<()> {
        self.cut.spend("read")?;
        self.inner.read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> IoResult<()> {
        self.cut.spend("write")?;
        self.inner.write_at(offset, data)
    }
    fn sync_data(&self) -> IoResult<()> {
        self.cut.spend("sync")?;
        self.cut.syncs.fetch_add(1, Ordering::SeqCst);
        self.inner.sync_data()
    }
    fn set_len(&self, len: u64) -> IoResult<()> {
        self.cut.spend("set_len")?;
        self.inner.set_len(len)
    }
    fn len(&self) -> IoResult<u64> {
        self.cut.spend("len")?;
        self.inner.len()
    }
}

impl Disk for PowerCut {
    fn create(&self, path: &Path) -> IoResult<DynFile> {
        self.spend("create")?;
        let inner = self.inner.create(path)?;
        Ok(Arc::new(PowerCutFile {
            inner,
            cut: self.clone(),
        }))
    }
    fn open(&self, path: &Path) -> IoResult<DynFile> {
        self.spend("open")?;
        let inner = self.inner.open(path)?;
        Ok(Arc::new(PowerCutFile {
            inner,
            cut: self.clone(),
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> IoResult<()> {
        self.spend("rename")?;
        self.inner.rename(from, to)
    }
    fn remove(&self, path: &Path) -> IoResult<()> {
        self.spend("remove")?;
        self.inner.remove(path)
    }
    fn list(&self, dir: &Path) -> IoResult<Vec<String>> {
        self.spend("list")?;
        self.inner.list(dir)
    }
    fn create_dir_all(&self, path: &Path) -> IoResult<()> {
        self.spend("create_dir_all")?;
        self.inner.create_dir_all(path)
    }
    fn sync_dir(&self, dir: &Path) -> IoResult<()> {
        self.spend("sync_dir")?;
        self.inner.sync_dir(dir)
    }
    fn is_dir(&self, path: &Path) -> IoResult<bool> {
        self.spend("is_dir")?;
        self.inner.is_dir(path)
    }
}
