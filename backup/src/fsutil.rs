//! Small helpers over the [`ryu_io::Disk`] trait: whole-file reads and synced writes,
//! recursive removal, safe relative paths, and the destination lock file.

use crate::error::{Error, Result};
use ryu_io::{DynDisk, DynFile, IoError};
use std::path::{Component, Path, PathBuf};

/// Name of the lock file in a destination directory.
pub const LOCK_FILE: &str = "LOCK";

/// Read a whole file.
pub(crate) fn read_file(disk: &DynDisk, path: &Path) -> Result<Vec<u8>> {
    let f = disk.open(path).map_err(|e| Error::io("open", path, e))?;
    let len = f.len().map_err(|e| Error::io("len", path, e))?;
    let len = usize::try_from(len).map_err(|_| Error::corrupted(path, 0, "file too large"))?;
    let mut buf = vec![0u8; len];
    f.read_at(0, &mut buf)
        .map_err(|e| Error::io("read", path, e))?;
    Ok(buf)
}

/// Create `path` (which must not exist), write `bytes`, and sync the data. The caller
/// syncs the directory.
pub(crate) fn write_file_synced(disk: &DynDisk, path: &Path, bytes: &[u8]) -> Result<()> {
    let f = disk
        .create(path)
        .map_err(|e| Error::io("create", path, e))?;
    f.write_at(0, bytes)
        .map_err(|e| Error::io("write", path, e))?;
    f.sync_data().map_err(|e| Error::io("sync", path, e))?;
    Ok(())
}

/// Writes one destination file front to back and syncs it after every
/// `sync_every_bytes` written (0: never; the owner syncs at the end), so no more than
/// that much of it is ever dirty and unsynced. A write that would cross the boundary is
/// split there.
#[derive(Debug)]
pub(crate) struct Appender {
    file: DynFile,
    path: PathBuf,
    at: u64,
    unsynced_bytes: u64,
    sync_every_bytes: u64,
}

impl Appender {
    /// Append to `file` (named `path` in errors) from offset `at`.
    pub(crate) fn new(file: DynFile, path: PathBuf, at: u64, sync_every_bytes: u64) -> Appender {
        Appender {
            file,
            path,
            at,
            unsynced_bytes: 0,
            sync_every_bytes,
        }
    }

    /// Write `data` at the end of what was appended so far, syncing at each boundary.
    pub(crate) fn append(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            let n = match self.sync_every_bytes {
                0 => data.len(),
                every => {
                    assert!(self.unsynced_bytes < every);
                    data.len()
                        .min(usize::try_from(every - self.unsynced_bytes).unwrap_or(usize::MAX))
                }
            };
            let (now, rest) = data.split_at(n);
            self.file
                .write_at(self.at, now)
                .map_err(|e| Error::io("write", &self.path, e))?;
            self.at += n as u64;
            self.unsynced_bytes += n as u64;
            data = rest;
            if self.sync_every_bytes > 0 && self.unsynced_bytes == self.sync_every_bytes {
                self.sync()?;
            }
        }
        Ok(())
    }

    /// Sync the file now.
    pub(crate) fn sync(&mut self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| Error::io("sync", &self.path, e))?;
        self.unsynced_bytes = 0;
        Ok(())
    }

    /// Bytes appended since the last sync (by [`Appender::sync`] or a boundary).
    pub(crate) fn unsynced_bytes(&self) -> u64 {
        self.unsynced_bytes
    }

    /// The file, for the owner's last writes and sync.
    pub(crate) fn into_file(self) -> DynFile {
        self.file
    }
}

/// Create `path` (which must not exist), write `bytes` through an [`Appender`] syncing
/// every `sync_every_bytes`, and make sure the whole file is synced. The caller syncs
/// the directory. For a file no larger than `sync_every_bytes` (or with 0) this is one
/// write and one sync, as [`write_file_synced`].
pub(crate) fn write_file_synced_every(
    disk: &DynDisk,
    path: &Path,
    bytes: &[u8],
    sync_every_bytes: u64,
) -> Result<()> {
    let f = disk
        .create(path)
        .map_err(|e| Error::io("create", path, e))?;
    let mut out = Appender::new(f, path.to_path_buf(), 0, sync_every_bytes);
    out.append(bytes)?;
    if out.unsynced_bytes() > 0 || bytes.is_empty() {
        out.sync()?;
    }
    Ok(())
}

/// Remove a file or a directory tree. Missing is fine.
pub fn remove_tree(disk: &DynDisk, path: &Path) -> Result<()> {
    let is_dir = match disk.is_dir(path) {
        Ok(d) => d,
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(Error::io("stat", path, e)),
    };
    if is_dir {
        for name in disk.list(path).map_err(|e| Error::io("list", path, e))? {
            remove_tree(disk, &path.join(name))?;
        }
    }
    disk.remove(path).map_err(|e| Error::io("remove", path, e))
}

/// The parent of `path` as the disk names it (`""` for the root).
pub(crate) fn parent_of(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new(""))
}

/// Whether `dir` is absent or an empty directory.
pub(crate) fn is_absent_or_empty(disk: &DynDisk, dir: &Path) -> Result<bool> {
    match disk.is_dir(dir) {
        Ok(true) => Ok(disk
            .list(dir)
            .map_err(|e| Error::io("list", dir, e))?
            .is_empty()),
        Ok(false) => Ok(false),
        Err(e) if e.is_not_found() => Ok(true),
        Err(e) => Err(Error::io("stat", dir, e)),
    }
}

/// Turn a manifest path into a relative path that stays inside its directory: no
/// absolute paths, no `..`, no empty or `.` components, `/` separators only.
pub fn safe_relative(path: &str) -> Result<PathBuf> {
    let unsafe_path = || Error::UnsafePath {
        path: path.to_string(),
    };
    if path.is_empty() || path.contains('\\') || path.contains('\0') {
        return Err(unsafe_path());
    }
    let p = Path::new(path);
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(s) if s != "." && s != ".." => out.push(s),
            _ => return Err(unsafe_path()),
        }
    }
    if path
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(unsafe_path());
    }
    Ok(out)
}

/// Take the destination lock: create `dest/LOCK` holding `holder`, durably. A lock
/// left by a crashed job stays until [`break_lock`] removes it: without process ids in
/// a deterministic core, only the operator can tell a stale lock from a live one.
pub(crate) fn acquire_lock(disk: &DynDisk, dest: &Path, holder: &str) -> Result<()> {
    disk.create_dir_all(dest)
        .map_err(|e| Error::io("create dir", dest, e))?;
    disk.sync_dir(parent_of(dest))
        .map_err(|e| Error::io("sync dir", parent_of(dest), e))?;
    let path = dest.join(LOCK_FILE);
    match disk.create(&path) {
        Ok(f) => {
            f.write_at(0, holder.as_bytes())
                .and_then(|()| f.sync_data())
                .map_err(|e| Error::io("write lock", &path, e))?;
            disk.sync_dir(dest)
                .map_err(|e| Error::io("sync dir", dest, e))?;
            Ok(())
        }
        Err(IoError::AlreadyExists { .. }) => {
            let holder = read_file(disk, &path)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_else(|_| "an unknown holder".to_string());
            Err(Error::Locked {
                lock_file: path,
                holder,
            })
        }
        Err(e) => Err(Error::io("create lock", &path, e)),
    }
}

/// Release a lock this process holds.
pub(crate) fn release_lock(disk: &DynDisk, dest: &Path) -> Result<()> {
    let path = dest.join(LOCK_FILE);
    disk.remove(&path)
        .map_err(|e| Error::io("remove lock", &path, e))?;
    disk.sync_dir(dest)
        .map_err(|e| Error::io("sync dir", dest, e))
}

/// Remove a stale lock left by a crashed job. Only call this when no job is running
/// on `dest`; returns the holder string the lock named, or `None` if there was none.
pub fn break_lock(disk: &DynDisk, dest: &Path) -> Result<Option<String>> {
    let path = dest.join(LOCK_FILE);
    if !disk
        .exists(&path)
        .map_err(|e| Error::io("stat", &path, e))?
    {
        return Ok(None);
    }
    let holder = read_file(disk, &path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    release_lock(disk, dest)?;
    Ok(Some(holder))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_relative_refuses_escapes() {
        for bad in [
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/..",
            "",
            "a//b",
            "./a",
            "a\\..\\b",
        ] {
            assert!(
                matches!(safe_relative(bad), Err(Error::UnsafePath { .. })),
                "{bad}"
            );
        }
        assert_eq!(
            safe_relative("wal/000000000001.log").unwrap(),
            PathBuf::from("wal/000000000001.log")
        );
    }
}
