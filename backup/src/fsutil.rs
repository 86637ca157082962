//! Small helpers over the [`ryu_io::Disk`] trait: whole-file reads and synced writes,
//! recursive removal, safe relative paths, and the destination lock file.

use crate::error::{Error, Result};
use ryu_io::{DynDisk, DynFile, IoError, IoResult};
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

/// How a long write is paced towards the device (see `BackupOptions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pacing {
    /// `sync_data` after every this many bytes (0: only the owner's sync at the end).
    pub sync_every_bytes: u64,
    /// Start writeback of every window of this many bytes once it is written, and wait
    /// for the window before it (0: never).
    pub write_behind_bytes: u64,
    /// Drop each window from the page cache once it is written back (`File::drop_cache`).
    pub drop_behind: bool,
}

impl Pacing {
    /// The pacing of a pages file: never dropped from the cache as it is written back,
    /// because the job reads it back once complete (and drops it then).
    pub(crate) fn pages(self) -> Pacing {
        Pacing {
            drop_behind: false,
            ..self
        }
    }
}

/// Writes one destination file front to back. With `sync_every_bytes` it syncs after
/// every that many bytes, so no more than that much of it is ever unsynced (a write
/// that would cross the boundary is split there). With `write_behind_bytes = W` it
/// hands each complete window of `W` bytes to the device as soon as it is written
/// (`File::write_behind`, no wait) and then waits for the window before it: so at most
/// about `2W` of the file is dirty or in flight at any time, the device writes while
/// the job copies, and the final sync finds little left to do. Neither touches
/// durability: only `sync_data` does.
#[derive(Debug)]
pub(crate) struct Appender {
    file: DynFile,
    path: PathBuf,
    at: u64,
    unsynced_bytes: u64,
    sync_every_bytes: u64,
    behind: WriteBehind,
}

/// The write-behind of one file written front to back (not necessarily densely: a
/// restore leaves holes for free pages) from `base`: windows of `window` bytes are
/// handed to the device in order as the writes pass their end, and each is waited for
/// once the next one has started.
#[derive(Debug)]
pub(crate) struct WriteBehind {
    window: u64,
    drop_behind: bool,
    /// Writeback has been started for `[base, started)`...
    started: u64,
    /// ... and waited for over `[base, waited)`.
    waited: u64,
}

impl WriteBehind {
    /// Windows of `window` bytes from `base` (0: do nothing).
    pub(crate) fn new(base: u64, window: u64, drop_behind: bool) -> WriteBehind {
        WriteBehind {
            window,
            drop_behind,
            started: base,
            waited: base,
        }
    }

    /// Everything below `end` has been written: start every window that is now
    /// complete, one at a time, each followed by a wait for all but the newest window
    /// started. Interleaved, so that a write spanning many windows still keeps at
    /// most two in flight: started all at once, they would reach the device as one
    /// burst that the database's commit syncs queue behind.
    pub(crate) fn written_to(&mut self, file: &DynFile, path: &Path, end: u64) -> Result<()> {
        let window = self.window;
        if window == 0 {
            return Ok(());
        }
        let fail = |e| Error::io("write behind", path, e);
        while end.saturating_sub(self.started) >= window {
            file.write_behind(self.started, window, false)
                .map_err(fail)?;
            self.started += window;
            self.wait_all_but_newest(file, path)?;
        }
        Ok(())
    }

    /// Wait for every window started but the newest.
    fn wait_all_but_newest(&mut self, file: &DynFile, path: &Path) -> Result<()> {
        let window = self.window;
        let fail = |e| Error::io("write behind", path, e);
        while self.started - self.waited > window {
            file.write_behind(self.waited, window, true).map_err(fail)?;
            if self.drop_behind {
                // From the file's start, not the window's: the page cache holds large
                // folios (2 MiB and more), and one a window only partly covers is
                // kept; the next call covers it whole (ranges already dropped cost a
                // walk over an empty index).
                // A hint: if the kernel refuses it nothing is lost but memory.
                let _ = file.drop_cache(0, self.waited + window);
            }
            self.waited += window;
        }
        Ok(())
    }
}

impl Appender {
    /// Append to `file` (named `path` in errors) from offset `at`.
    pub(crate) fn new(file: DynFile, path: PathBuf, at: u64, pacing: Pacing) -> Appender {
        Appender {
            file,
            path,
            at,
            unsynced_bytes: 0,
            sync_every_bytes: pacing.sync_every_bytes,
            behind: WriteBehind::new(at, pacing.write_behind_bytes, pacing.drop_behind),
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
            self.behind.written_to(&self.file, &self.path, self.at)?;
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

/// Create `path` (which must not exist), write `bytes` through an [`Appender`] paced by
/// `pacing`, and make sure the whole file is synced (then, with `drop_behind`, dropped
/// from the page cache). The caller syncs the directory.
/// For a file smaller than both intervals this is one write and one sync, as
/// [`write_file_synced`].
pub(crate) fn write_file_paced(
    disk: &DynDisk,
    path: &Path,
    bytes: &[u8],
    pacing: Pacing,
) -> Result<()> {
    let f = disk
        .create(path)
        .map_err(|e| Error::io("create", path, e))?;
    let mut out = Appender::new(f, path.to_path_buf(), 0, pacing);
    out.append(bytes)?;
    if out.unsynced_bytes() > 0 || bytes.is_empty() {
        out.sync()?;
    }
    if pacing.drop_behind {
        // The windows write-behind has not dropped yet (the last one or two, or all of
        // a file smaller than two): all written back now. A hint, so a refusal is
        // ignored.
        let _ = out.into_file().drop_cache(0, bytes.len() as u64);
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

/// Remove the directories a failed operation made (`ryu_io::create_dir_all_synced`'s
/// list, outermost first), innermost first, and sync the parent of the last one
/// removed. Each must be empty by then; the first that is not stops the removal: it
/// holds something else's (another restore into a new sibling of the target that
/// shares the new parents, say), and it and the directories above it stay.
pub(crate) fn remove_made_dirs(disk: &DynDisk, made: &[PathBuf]) -> IoResult<()> {
    let mut removed = None;
    let mut outcome = Ok(());
    for d in made.iter().rev() {
        match disk.remove(d) {
            Ok(()) => removed = Some(d),
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
    }
    match removed {
        Some(d) => disk.sync_dir(parent_of(d)).and(outcome),
        None => outcome,
    }
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
    // Every directory made for `dest` is durable before a backup is published in it.
    ryu_io::create_dir_all_synced(&**disk, dest).map_err(|e| Error::io("create dir", dest, e))?;
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
