//! The disk traits. Paths are relative to the disk's root and use `/` separators;
//! `..` and absolute paths are refused by every implementation.

use crate::IoResult;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An open file: positional I/O only, so one handle can be shared by threads.
///
/// Durability contract (the one the simulator enforces): bytes written by `write_at`
/// and length changes by `set_len` are volatile until `sync_data` returns `Ok`. A
/// failed `sync_data` leaves the unsynced bytes in an unknown state on the media even
/// though reads may still return them; callers must stop trusting the file.
pub trait File: Send + Sync + Debug {
    /// Fill `buf` from `offset`. Reading past the end is `IoError::UnexpectedEof`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> IoResult<()>;
    /// Write all of `data` at `offset`, extending the file if needed (a gap reads as zeros).
    fn write_at(&self, offset: u64, data: &[u8]) -> IoResult<()>;
    /// Make every earlier write and length change of this file durable (`fdatasync`).
    fn sync_data(&self) -> IoResult<()>;
    /// Truncate or extend (with zeros) to `len` bytes.
    fn set_len(&self, len: u64) -> IoResult<()>;
    /// Current length in bytes, as readers see it.
    fn len(&self) -> IoResult<u64>;
    /// A hint, never a durability point: start writing the bytes of
    /// `[offset, offset + len)` already written to the device, and with `wait` also
    /// wait until that writeback (and any started earlier for the range) is done.
    /// Nothing becomes durable until `sync_data`; a writer that streams a large file
    /// calls this every few MiB so the kernel never holds a large dirty backlog that
    /// a later `sync_data` (its own, or another file's on the same disk) would wait
    /// behind, and so that backlog's writeback overlaps the writing instead of
    /// following it (RocksDB's `bytes_per_sync`). The default does nothing, which is
    /// a correct implementation: the simulator's disks keep it.
    fn write_behind(&self, offset: u64, len: u64, wait: bool) -> IoResult<()> {
        let _ = (offset, len, wait);
        Ok(())
    }
    /// A hint, never a change to the file: the bytes of `[offset, offset + len)` need
    /// not stay in memory. A writer that streams a large file nobody will read soon (a
    /// backup) calls this for each range once it is written back (and, if it reads the
    /// range back, once read), so the
    /// copy neither evicts the database's own cached pages nor makes the kernel find
    /// fresh memory for every MiB it writes. Ranges still dirty may be kept. The default
    /// does nothing, which is a correct implementation: the simulator's disks keep it.
    fn drop_cache(&self, offset: u64, len: u64) -> IoResult<()> {
        let _ = (offset, len);
        Ok(())
    }
    /// True when the file holds no bytes.
    fn is_empty(&self) -> IoResult<bool> {
        Ok(self.len()? == 0)
    }
}

/// A directory tree. Namespace changes (create, rename, remove, create_dir_all) are
/// volatile until `sync_dir` is called on every directory they touched.
pub trait Disk: Send + Sync + Debug {
    /// Create a new, empty file; `AlreadyExists` if something is at `path`. The parent
    /// directory must exist.
    fn create(&self, path: &Path) -> IoResult<DynFile>;
    /// Open an existing file for reading and writing.
    fn open(&self, path: &Path) -> IoResult<DynFile>;
    /// Atomically replace `to` (if it exists) with `from`. Works for files and for
    /// directories (a directory may only replace nothing).
    fn rename(&self, from: &Path, to: &Path) -> IoResult<()>;
    /// Remove a file, or an empty directory.
    fn remove(&self, path: &Path) -> IoResult<()>;
    /// The names in a directory, sorted bytewise (never in hash order).
    fn list(&self, dir: &Path) -> IoResult<Vec<String>>;
    /// Create a directory and any missing parents.
    fn create_dir_all(&self, path: &Path) -> IoResult<()>;
    /// Make the directory's entries durable (`fsync` on the directory).
    fn sync_dir(&self, dir: &Path) -> IoResult<()>;
    /// Whether `path` names a directory (`NotFound` if nothing is there).
    fn is_dir(&self, path: &Path) -> IoResult<bool>;
    /// Whether something exists at `path`.
    fn exists(&self, path: &Path) -> IoResult<bool> {
        match self.is_dir(path) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// A shared, type-erased file handle.
pub type DynFile = Arc<dyn File>;
/// A shared, type-erased disk.
pub type DynDisk = Arc<dyn Disk>;

/// Check that `path` stays inside the root: relative, no `..`, no root or prefix.
/// Every backend calls this first, so a hostile name (from a backup manifest, say)
/// can never reach outside the tree it was handed.
pub fn check_relative(path: &Path) -> IoResult<()> {
    use std::path::Component;
    for c in path.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            _ => {
                return Err(crate::IoError::io(
                    "path",
                    format!("{} is not a plain relative path", path.display()),
                ));
            }
        }
    }
    Ok(())
}

/// Create `dir` and any missing parents durably: before it returns, every directory on
/// the path, `dir` included, is synced into its parent. `Disk::create_dir_all` alone
/// leaves new entries volatile, and syncing only `dir`'s own parent leaves the outer
/// ones so: a power cut could then drop the outermost new directory, and with it
/// everything later written and synced inside (a database, a backup). Directories that
/// were already there are synced too: one made by an earlier call that failed before
/// its sync is visible but may not be durable. Returns the directories this call made,
/// outermost first (none if `dir` was there), so a caller that fails can remove them.
pub fn create_dir_all_synced(disk: &dyn Disk, dir: &Path) -> IoResult<Vec<PathBuf>> {
    let on_path: Vec<&Path> = dir
        .ancestors()
        .filter(|p| !p.as_os_str().is_empty())
        .collect();
    let mut made = Vec::new();
    for p in &on_path {
        if disk.exists(p)? {
            break;
        }
        made.push(p.to_path_buf());
    }
    made.reverse();
    disk.create_dir_all(dir)?;
    for p in on_path.iter().rev() {
        disk.sync_dir(p.parent().unwrap_or(Path::new("")))?;
    }
    Ok(made)
}
