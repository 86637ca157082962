//! The real backend: `std::fs` with positional I/O, `fdatasync` and directory fsync.
//! This module and the production binary are the only places allowed to touch the
//! host file system (hence the scoped lint allowances).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use crate::disk::check_relative;
use crate::{Disk, DynFile, File, IoError, IoResult};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A [`Disk`] rooted at a host directory. Every path is resolved below the root.
#[derive(Debug, Clone)]
pub struct StdDisk {
    root: PathBuf,
}

impl StdDisk {
    /// A disk whose paths are relative to `root` (which should exist).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StdDisk { root: root.into() }
    }

    /// The host directory this disk is rooted at.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn resolve(&self, path: &Path) -> IoResult<PathBuf> {
        check_relative(path)?;
        Ok(self.root.join(path))
    }
}

#[derive(Debug)]
struct StdFile {
    file: std::fs::File,
    path: PathBuf,
}

impl File for StdFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> IoResult<()> {
        match self.file.read_exact_at(buf, offset) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                Err(IoError::UnexpectedEof {
                    offset,
                    len: buf.len() as u64,
                    file_len: self.len().unwrap_or(0),
                })
            }
            Err(e) => Err(IoError::from_std("read", &self.path, e)),
        }
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> IoResult<()> {
        self.file
            .write_all_at(data, offset)
            .map_err(|e| IoError::from_std("write", &self.path, e))
    }

    fn sync_data(&self) -> IoResult<()> {
        // fdatasync(2) on Linux.
        self.file
            .sync_data()
            .map_err(|e| IoError::from_std("sync_data", &self.path, e))
    }

    fn write_behind(&self, offset: u64, len: u64, wait: bool) -> IoResult<()> {
        write_behind(&self.file, offset, len, wait)
            .map_err(|e| IoError::from_std("sync_file_range", &self.path, e))
    }

    fn drop_cache(&self, offset: u64, len: u64) -> IoResult<()> {
        drop_cache(&self.file, offset, len)
            .map_err(|e| IoError::from_std("posix_fadvise", &self.path, e))
    }

    fn set_len(&self, len: u64) -> IoResult<()> {
        self.file
            .set_len(len)
            .map_err(|e| IoError::from_std("set_len", &self.path, e))
    }

    fn len(&self) -> IoResult<u64> {
        let meta = self
            .file
            .metadata()
            .map_err(|e| IoError::from_std("stat", &self.path, e))?;
        Ok(meta.len())
    }
}

/// `sync_file_range(2)`: `SYNC_FILE_RANGE_WRITE` starts writeback of the range's
/// dirty pages without waiting; with `wait`, `WAIT_BEFORE | WRITE | WAIT_AFTER` also
/// waits for writeback already in flight and for this one. It flushes neither the
/// file's metadata nor the device's cache, so it is never a durability point, and an
/// error it reports (EIO from an earlier writeback) is treated like a failed
/// `fdatasync` by the callers: they give up on the file.
#[cfg(target_os = "linux")]
fn write_behind(file: &std::fs::File, offset: u64, len: u64, wait: bool) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let flags = if wait {
        libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER
    } else {
        libc::SYNC_FILE_RANGE_WRITE
    };
    if len == 0 {
        return Ok(()); // to the kernel a length of 0 means "to the end of the file"
    }
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    };
    // SAFETY: the call reads no memory of ours; `file` keeps the descriptor open for
    // its duration, and any descriptor, range or flag value is safe to pass (the
    // kernel checks them and answers EBADF/EINVAL/ESPIPE).
    #[allow(unsafe_code)]
    let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, flags) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Elsewhere the hint does nothing (which the trait allows).
#[cfg(not(target_os = "linux"))]
fn write_behind(_: &std::fs::File, _: u64, _: u64, _: bool) -> std::io::Result<()> {
    Ok(())
}

/// `posix_fadvise(2)` with `POSIX_FADV_DONTNEED`: the kernel drops the range's clean,
/// unmapped pages from its cache (dirty ones get writeback started and stay). It never
/// changes the file's bytes: a later read finds them on the device.
#[cfg(target_os = "linux")]
fn drop_cache(file: &std::fs::File, offset: u64, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    if len == 0 {
        return Ok(()); // to the kernel a length of 0 means "to the end of the file"
    }
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    };
    // SAFETY: the call reads no memory of ours; `file` keeps the descriptor open for
    // its duration, and any descriptor, range or advice value is safe to pass (the
    // kernel checks them and answers EBADF/EINVAL/ESPIPE).
    #[allow(unsafe_code)]
    let rc =
        unsafe { libc::posix_fadvise(file.as_raw_fd(), offset, len, libc::POSIX_FADV_DONTNEED) };
    // posix_fadvise returns the error number instead of setting errno.
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(rc))
    }
}

/// Elsewhere the hint does nothing (which the trait allows).
#[cfg(not(target_os = "linux"))]
fn drop_cache(_: &std::fs::File, _: u64, _: u64) -> std::io::Result<()> {
    Ok(())
}

impl Disk for StdDisk {
    fn create(&self, path: &Path) -> IoResult<DynFile> {
        let full = self.resolve(path)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&full)
            .map_err(|e| IoError::from_std("create", path, e))?;
        Ok(Arc::new(StdFile {
            file,
            path: path.to_path_buf(),
        }))
    }

    fn open(&self, path: &Path) -> IoResult<DynFile> {
        let full = self.resolve(path)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&full)
            .map_err(|e| IoError::from_std("open", path, e))?;
        if file
            .metadata()
            .map_err(|e| IoError::from_std("stat", path, e))?
            .is_dir()
        {
            return Err(IoError::io(
                "open",
                format!("{} is a directory", path.display()),
            ));
        }
        Ok(Arc::new(StdFile {
            file,
            path: path.to_path_buf(),
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> IoResult<()> {
        let (f, t) = (self.resolve(from)?, self.resolve(to)?);
        std::fs::rename(f, t).map_err(|e| IoError::from_std("rename", from, e))
    }

    fn remove(&self, path: &Path) -> IoResult<()> {
        let full = self.resolve(path)?;
        let meta =
            std::fs::symlink_metadata(&full).map_err(|e| IoError::from_std("stat", path, e))?;
        if meta.is_dir() {
            std::fs::remove_dir(&full).map_err(|e| IoError::from_std("remove_dir", path, e))
        } else {
            std::fs::remove_file(&full).map_err(|e| IoError::from_std("remove", path, e))
        }
    }

    fn list(&self, dir: &Path) -> IoResult<Vec<String>> {
        let full = self.resolve(dir)?;
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&full).map_err(|e| IoError::from_std("list", dir, e))? {
            let entry = entry.map_err(|e| IoError::from_std("list", dir, e))?;
            match entry.file_name().into_string() {
                Ok(name) => names.push(name),
                Err(raw) => {
                    return Err(IoError::io(
                        "list",
                        format!("{}: non-UTF-8 name {raw:?}", dir.display()),
                    ));
                }
            }
        }
        names.sort();
        Ok(names)
    }

    fn create_dir_all(&self, path: &Path) -> IoResult<()> {
        let full = self.resolve(path)?;
        std::fs::create_dir_all(full).map_err(|e| IoError::from_std("create_dir_all", path, e))
    }

    fn sync_dir(&self, dir: &Path) -> IoResult<()> {
        let full = self.resolve(dir)?;
        let handle =
            std::fs::File::open(&full).map_err(|e| IoError::from_std("open_dir", dir, e))?;
        handle
            .sync_all()
            .map_err(|e| IoError::from_std("sync_dir", dir, e))
    }

    fn is_dir(&self, path: &Path) -> IoResult<bool> {
        let full = self.resolve(path)?;
        let meta = std::fs::metadata(full).map_err(|e| IoError::from_std("stat", path, e))?;
        Ok(meta.is_dir())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk() -> (tempfile::TempDir, StdDisk) {
        let dir = tempfile::tempdir().unwrap();
        let disk = StdDisk::new(dir.path());
        (dir, disk)
    }

    #[test]
    fn positional_io_round_trips_and_extends_with_zeros() {
        let (_dir, disk) = disk();
        let f = disk.create(Path::new("f")).unwrap();
        f.write_at(10, b"abc").unwrap();
        assert_eq!(f.len().unwrap(), 13);
        let mut buf = [0xffu8; 13];
        f.read_at(0, &mut buf).unwrap();
        assert_eq!(&buf[..10], &[0u8; 10]);
        assert_eq!(&buf[10..], b"abc");
        f.sync_data().unwrap();
        f.set_len(11).unwrap();
        assert_eq!(f.len().unwrap(), 11);
    }

    /// Write-behind is a hint: it changes no byte, works on any range of the file
    /// (holes and the part past the end included), and refuses only a range the kernel
    /// cannot name.
    #[test]
    fn write_behind_changes_nothing_and_refuses_impossible_ranges() {
        let (_dir, d) = disk();
        let f = d.create(Path::new("f")).unwrap();
        let data: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
        f.write_at(0, &data).unwrap();
        f.write_behind(0, 1 << 20, false).unwrap();
        f.write_behind(1 << 20, 1 << 20, false).unwrap();
        f.write_behind(0, 1 << 20, true).unwrap();
        f.write_behind(8 << 20, 1 << 20, true).unwrap();
        let mut back = vec![0u8; data.len()];
        f.read_at(0, &mut back).unwrap();
        assert!(back == data);
        assert_eq!(f.len().unwrap(), data.len() as u64);
        assert!(f.write_behind(u64::MAX - 5, 1, false).is_err());
    }

    /// How many of the first `pages` 4 KiB pages of `f` are in the page cache
    /// (`mincore(2)` on a mapping that is never touched, so it maps no page itself).
    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)]
    fn resident_pages(f: &std::fs::File, pages: usize) -> usize {
        use std::os::fd::AsRawFd;
        let len = pages * 4096;
        // SAFETY: a fresh read-only shared mapping of `len` bytes of an open file; it is
        // only handed to mincore (never dereferenced) and unmapped before returning.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            );
            assert_ne!(p, libc::MAP_FAILED, "mmap");
            let mut vec = vec![0u8; pages];
            assert_eq!(libc::mincore(p, len, vec.as_mut_ptr()), 0, "mincore");
            libc::munmap(p, len);
            vec.iter().filter(|&&b| b & 1 == 1).count()
        }
    }

    /// Dropping the cache of a written-back range empties the page cache of it (seen
    /// through `mincore`) and changes no byte; a range the kernel cannot name is
    /// refused. Fails against a no-op `drop_cache`.
    #[cfg(target_os = "linux")]
    #[test]
    fn drop_cache_evicts_written_back_pages_and_changes_nothing() {
        // Not in the system's temporary directory: where that is a tmpfs its pages
        // are the file's only copy and cannot be dropped.
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let d = StdDisk::new(dir.path());
        let f = d.create(Path::new("f")).unwrap();
        let data: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
        f.write_at(0, &data).unwrap();
        f.sync_data().unwrap();
        let pages = data.len() / 4096;
        let raw = std::fs::File::open(dir.path().join("f")).unwrap();
        assert_eq!(
            resident_pages(&raw, pages),
            pages,
            "written pages are cached"
        );
        f.drop_cache(0, 2 << 20).unwrap();
        let left = resident_pages(&raw, pages);
        assert!(
            left <= pages / 2,
            "{left} of {pages} pages still cached after dropping the first half"
        );
        f.drop_cache(0, data.len() as u64).unwrap();
        assert_eq!(resident_pages(&raw, pages), 0);
        let mut back = vec![0u8; data.len()];
        f.read_at(0, &mut back).unwrap();
        assert!(back == data);
        assert!(f.drop_cache(u64::MAX - 5, 1).is_err());
        // A length of 0 drops nothing (to the kernel it would mean "to the end").
        f.read_at(0, &mut back).unwrap();
        f.drop_cache(4096, 0).unwrap();
        assert_eq!(resident_pages(&raw, pages), pages);
    }

    #[test]
    fn reading_past_end_is_unexpected_eof() {
        let (_dir, disk) = disk();
        let f = disk.create(Path::new("f")).unwrap();
        f.write_at(0, b"ab").unwrap();
        let mut buf = [0u8; 4];
        let err = f.read_at(0, &mut buf).unwrap_err();
        assert_eq!(
            err,
            IoError::UnexpectedEof {
                offset: 0,
                len: 4,
                file_len: 2
            }
        );
    }

    #[test]
    fn namespace_operations_and_typed_errors() {
        let (_dir, disk) = disk();
        disk.create_dir_all(Path::new("a/b")).unwrap();
        assert!(disk.is_dir(Path::new("a/b")).unwrap());
        disk.create(Path::new("a/b/x")).unwrap();
        assert!(matches!(
            disk.create(Path::new("a/b/x")),
            Err(IoError::AlreadyExists { .. })
        ));
        assert!(matches!(
            disk.open(Path::new("a/b/nope")),
            Err(IoError::NotFound { .. })
        ));
        disk.create(Path::new("a/b/w")).unwrap();
        assert_eq!(disk.list(Path::new("a/b")).unwrap(), vec!["w", "x"]);
        disk.rename(Path::new("a/b/x"), Path::new("a/b/y")).unwrap();
        disk.sync_dir(Path::new("a/b")).unwrap();
        assert_eq!(disk.list(Path::new("a/b")).unwrap(), vec!["w", "y"]);
        disk.remove(Path::new("a/b/y")).unwrap();
        disk.remove(Path::new("a/b/w")).unwrap();
        disk.remove(Path::new("a/b")).unwrap();
        assert!(!disk.exists(Path::new("a/b")).unwrap());
        assert!(matches!(
            disk.remove(Path::new("a/b")),
            Err(IoError::NotFound { .. })
        ));
    }

    #[test]
    fn paths_escaping_the_root_are_refused() {
        let (_dir, disk) = disk();
        for bad in ["../x", "/etc/passwd", "a/../../x"] {
            let err = disk.create(Path::new(bad)).unwrap_err();
            assert!(
                matches!(err, IoError::Io { op: "path", .. }),
                "{bad}: {err}"
            );
        }
    }
}
