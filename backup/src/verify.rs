//! Verification in the manner of pg_verifybackup.
//!
//! Checks, in order, each reported as a [`Problem`] (verification goes on after a
//! problem wherever the rest can still be checked):
//! 1. the manifest parses and its checksum matches;
//! 2. every listed file exists with the listed size; no unlisted file is present;
//! 3. every file's crc32 matches;
//! 4. page checks of the pages files (`pages/NNNNNN.pages`): every header, the files
//!    the manifest lists against those the headers count, one superblock of the
//!    pinned generation, every tree page's checksum, own page number and generation;
//! 5. WAL continuity over the claimed range: consecutive segments and LSNs, rising
//!    timestamps, whole records only, ending exactly at the claimed LSN and timestamp;
//! 6. for an incremental backup, the chain: every parent present and complete, its
//!    manifest checksum, generation and chain root as the child recorded them, down to
//!    a full backup;
//! 7. deep mode only: restore into a scratch directory, open the engine, read every
//!    key, and check the restored timestamp.

use crate::error::{Error, Result};
use crate::fsutil::{self, safe_relative};
use crate::manifest::{BackupKind, MANIFEST_FILE, Manifest, SignedManifest, crc_hex};
use crate::pages::{self, PAGES_DIR, PageExpect, PagesChecked, pages_file};
use crate::walcopy;
use crate::{BackupId, SCRATCH_PREFIX, TMP_PREFIX};
use ryu_io::DynDisk;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

/// One thing wrong with a backup.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// The backup was never finalized.
    Incomplete,
    /// The manifest is missing, unreadable, fails its checksum, or is malformed.
    Manifest { detail: String },
    /// A listed file is absent.
    MissingFile { path: String },
    /// A file is present that the manifest does not list.
    ExtraFile { path: String },
    /// A listed file has another size.
    WrongSize {
        path: String,
        expected: u64,
        found: u64,
    },
    /// A listed file's crc32 differs.
    FileChecksum {
        path: String,
        expected: String,
        found: String,
    },
    /// A manifest path escapes the backup directory.
    UnsafePath { path: String },
    /// A pages file or one of its pages fails its checks.
    Page { detail: String },
    /// The WAL does not cover the claimed range continuously.
    Wal { detail: String },
    /// The incremental chain is broken or foreign.
    Chain { detail: String },
    /// A file could not be read.
    Unreadable { path: String, detail: String },
    /// Deep mode: the restored database did not open or read back as claimed.
    Deep { detail: String },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Incomplete => write!(f, "backup is incomplete (never finalized)"),
            Problem::Manifest { detail } => write!(f, "manifest: {detail}"),
            Problem::MissingFile { path } => write!(f, "{path}: missing"),
            Problem::ExtraFile { path } => write!(f, "{path}: not in the manifest"),
            Problem::WrongSize {
                path,
                expected,
                found,
            } => write!(f, "{path}: size {found}, manifest says {expected}"),
            Problem::FileChecksum {
                path,
                expected,
                found,
            } => write!(f, "{path}: crc32 {found}, manifest says {expected}"),
            Problem::UnsafePath { path } => write!(f, "{path}: escapes the backup directory"),
            Problem::Page { detail } => write!(f, "pages: {detail}"),
            Problem::Wal { detail } => write!(f, "WAL: {detail}"),
            Problem::Chain { detail } => write!(f, "chain: {detail}"),
            Problem::Unreadable { path, detail } => write!(f, "{path}: unreadable: {detail}"),
            Problem::Deep { detail } => write!(f, "deep check: {detail}"),
        }
    }
}

/// What verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub id: String,
    /// The manifest, when it could be read.
    pub manifest: Option<Manifest>,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// True when nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Verification options.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Also restore into a scratch directory (`dest/.scratch-<id>`, removed afterwards)
    /// and open the engine on it.
    pub deep: bool,
}

/// Read and check the manifest of the backup directory `dir`.
pub(crate) fn load_manifest(disk: &DynDisk, dir: &Path) -> Result<SignedManifest> {
    let path = dir.join(MANIFEST_FILE);
    let bytes = match fsutil::read_file(disk, &path) {
        Ok(b) => b,
        Err(Error::Io { source, .. }) if source.is_not_found() => {
            let id = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            return if disk.exists(dir).unwrap_or(false) {
                Err(Error::corrupted(&path, 0, "manifest missing"))
            } else {
                Err(Error::NotFound { id })
            };
        }
        Err(e) => return Err(e),
    };
    Manifest::decode(&bytes, &path)
}

/// Verify backup `id` in `dest`.
pub fn verify(
    disk: &DynDisk,
    dest: &Path,
    id: &str,
    options: &VerifyOptions,
) -> Result<VerifyReport> {
    BackupId::new(id)?;
    let dir = dest.join(id);
    let present = disk.exists(&dir).map_err(|e| Error::io("stat", &dir, e))?;
    if !present {
        let tmp = dest.join(format!("{TMP_PREFIX}{id}"));
        if disk.exists(&tmp).map_err(|e| Error::io("stat", &tmp, e))? {
            return Ok(VerifyReport {
                id: id.to_string(),
                manifest: None,
                problems: vec![Problem::Incomplete],
            });
        }
        return Err(Error::NotFound { id: id.to_string() });
    }
    let mut report = verify_dir(disk, dest, &dir)?;
    if options.deep && report.is_ok() {
        let scratch = dest.join(format!("{SCRATCH_PREFIX}{id}"));
        fsutil::remove_tree(disk, &scratch)?;
        let outcome = crate::restore::restore_and_check(disk, dest, id, disk, &scratch);
        fsutil::remove_tree(disk, &scratch)?;
        if let Err(e) = outcome {
            report.problems.push(Problem::Deep {
                detail: e.to_string(),
            });
        }
    }
    Ok(report)
}

/// The files under `dir`, relative, `/`-separated, sorted.
fn walk(disk: &DynDisk, dir: &Path, rel: &str, out: &mut Vec<String>) -> Result<()> {
    let here = if rel.is_empty() {
        dir.to_path_buf()
    } else {
        dir.join(rel)
    };
    for name in disk.list(&here).map_err(|e| Error::io("list", &here, e))? {
        let child = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        if disk
            .is_dir(&dir.join(&child))
            .map_err(|e| Error::io("stat", dir.join(&child), e))?
        {
            walk(disk, dir, &child, out)?;
        } else {
            out.push(child);
        }
    }
    Ok(())
}

/// Stream a file's crc32 and length.
fn file_crc(disk: &DynDisk, path: &Path) -> Result<(u64, String)> {
    let f = disk.open(path).map_err(|e| Error::io("open", path, e))?;
    let len = f.len().map_err(|e| Error::io("len", path, e))?;
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < len {
        let n = (len - at).min(buf.len() as u64) as usize;
        f.read_at(at, &mut buf[..n])
            .map_err(|e| Error::io("read", path, e))?;
        h.update(&buf[..n]);
        at += n as u64;
    }
    Ok((len, crc_hex(h.finalize())))
}

/// Verify one backup directory (final or temporary) whose chain lives in `dest`.
pub(crate) fn verify_dir(disk: &DynDisk, dest: &Path, dir: &Path) -> Result<VerifyReport> {
    verify_dir_with(disk, dest, dir, PagesCheck::Read)
}

/// How [`verify_dir_with`] checks the pages files.
#[derive(Debug)]
pub(crate) enum PagesCheck {
    /// Read and check them.
    Read,
    /// The caller read and checked them against this expectation (a backup job, in
    /// steps under its rate limit; a restore, on the read it writes from): used in
    /// place of reading them again if the manifest on disk expects the same.
    Done(PageExpect, PagesChecked),
    /// Their presence and sizes only, no byte read: a restore checks the rest on its
    /// one read of them and calls again with [`PagesCheck::Done`].
    SizesOnly,
}

/// [`verify_dir`], with the pages files checked as `pages` says.
pub(crate) fn verify_dir_with(
    disk: &DynDisk,
    dest: &Path,
    dir: &Path,
    pages: PagesCheck,
) -> Result<VerifyReport> {
    let id = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut problems = Vec::new();
    let signed = match load_manifest(disk, dir) {
        Ok(m) => m,
        Err(e @ Error::NotFound { .. }) => return Err(e),
        Err(e) => {
            problems.push(Problem::Manifest {
                detail: e.to_string(),
            });
            return Ok(VerifyReport {
                id,
                manifest: None,
                problems,
            });
        }
    };
    let m = signed.manifest;
    if BackupId::new(&m.backup_id).is_err() {
        problems.push(Problem::Manifest {
            detail: format!("invalid backup id {:?}", m.backup_id),
        });
    }
    let mut present = Vec::new();
    walk(disk, dir, "", &mut present)?;
    let present: BTreeSet<String> = present.into_iter().collect();
    let mut listed = BTreeSet::new();
    let mut intact = BTreeSet::new();
    // The pages files are read once: their checksums and page checks together.
    let expect = page_expect(&m);
    let checked = match pages {
        PagesCheck::Done(e, checked) if e == expect => Some(checked),
        PagesCheck::SizesOnly => None,
        _ => Some(pages::check_all(disk, dir, expect)),
    };
    let (pages_read, mut pages_crcs, checks) = match checked {
        Some(c) => {
            let read: Vec<String> = c.files.iter().map(|f| f.0.clone()).collect();
            let crcs: BTreeMap<String, Result<(u64, u32)>> = c.files.into_iter().collect();
            (read, crcs, Some(c.checks))
        }
        None => (Vec::new(), BTreeMap::new(), None),
    };
    let sizes_only = checks.is_none();
    for f in &m.files {
        let Ok(rel) = safe_relative(&f.path) else {
            problems.push(Problem::UnsafePath {
                path: f.path.clone(),
            });
            continue;
        };
        listed.insert(f.path.clone());
        if !present.contains(&f.path) {
            problems.push(Problem::MissingFile {
                path: f.path.clone(),
            });
            continue;
        }
        let crc = match pages_crcs.remove(&f.path) {
            Some(read) => read.map(|(len, crc)| (len, crc_hex(crc))),
            // The size only: the crc32 is taken as listed, to be checked later.
            None if sizes_only && f.path.starts_with(&format!("{PAGES_DIR}/")) => {
                let path = dir.join(rel);
                disk.open(&path)
                    .and_then(|file| file.len())
                    .map(|len| (len, f.crc32.clone()))
                    .map_err(|e| Error::io("len", &path, e))
            }
            None => file_crc(disk, &dir.join(rel)),
        };
        match crc {
            Ok((size, _)) if size != f.size_bytes => problems.push(Problem::WrongSize {
                path: f.path.clone(),
                expected: f.size_bytes,
                found: size,
            }),
            Ok((_, crc)) if crc != f.crc32 => problems.push(Problem::FileChecksum {
                path: f.path.clone(),
                expected: f.crc32.clone(),
                found: crc,
            }),
            Ok(_) => {
                intact.insert(f.path.clone());
            }
            Err(e) => problems.push(Problem::Unreadable {
                path: f.path.clone(),
                detail: e.to_string(),
            }),
        }
    }
    for p in &present {
        if p != MANIFEST_FILE && !listed.contains(p) {
            problems.push(Problem::ExtraFile { path: p.clone() });
        }
    }
    if let Some(checks) = checks {
        check_pages(checks, &pages_read, &m, &intact, &mut problems);
    }
    check_wal(disk, dir, &m, &intact, &mut problems);
    if let Err(detail) = check_chain(disk, dest, &m) {
        problems.push(Problem::Chain { detail });
    }
    Ok(VerifyReport {
        id,
        manifest: Some(m),
        problems,
    })
}

pub(crate) fn page_expect(m: &Manifest) -> PageExpect {
    PageExpect {
        generation: m.generation,
        page_count: m.page_count,
        newer_than: m.parent_generation,
    }
}

/// Report the outcome of the page checks made while the pages files' checksums were
/// computed (see [`pages::check_all`]), if every pages file the manifest lists is
/// intact; `read` names the files the headers counted.
fn check_pages(
    checks: Result<ryu_engine::page::Superblock>,
    read: &[String],
    m: &Manifest,
    intact: &BTreeSet<String>,
    problems: &mut Vec<Problem>,
) {
    let listed: Vec<&str> = m
        .files
        .iter()
        .map(|f| f.path.as_str())
        .filter(|p| p.starts_with(&format!("{PAGES_DIR}/")))
        .collect();
    let first = pages_file(0);
    if !listed.contains(&first.as_str()) {
        problems.push(Problem::MissingFile { path: first });
        return;
    }
    if listed.iter().any(|p| !intact.contains(*p)) {
        return; // already reported; page checks would only repeat it
    }
    let mut sorted = listed.clone();
    sorted.sort_unstable_by_key(|p| pages_order(p));
    if sorted != read {
        problems.push(Problem::Page {
            detail: format!(
                "the manifest lists pages files {sorted:?}; their headers count {read:?}"
            ),
        });
    }
    match checks {
        Ok(sb) => {
            if sb.checkpoint_ts != m.checkpoint_ts
                || (sb.wal_segment, sb.wal_lsn) != (m.wal.first_segment, m.wal.first_lsn)
            {
                problems.push(Problem::Page {
                    detail: "the superblock disagrees with the manifest's checkpoint".into(),
                });
            }
        }
        Err(e) => problems.push(Problem::Page {
            detail: e.to_string(),
        }),
    }
}

/// Sort key putting pages file names in index order: the index is zero-padded to six
/// digits and grows a seventh from 1,000,000, so the shorter name is the smaller index.
fn pages_order(path: &str) -> (usize, &str) {
    (path.len(), path)
}

fn check_wal(
    disk: &DynDisk,
    dir: &Path,
    m: &Manifest,
    intact: &BTreeSet<String>,
    problems: &mut Vec<Problem>,
) {
    let mut segments: Vec<(u64, Vec<u8>)> = Vec::new();
    let prefix = format!("{}/", ryu_engine::WAL_DIR);
    for f in &m.files {
        let Some(name) = f.path.strip_prefix(&prefix) else {
            continue;
        };
        let number = name
            .strip_suffix(".log")
            .filter(|d| d.len() == 12 && d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse::<u64>().ok());
        let Some(number) = number else {
            problems.push(Problem::Wal {
                detail: format!("{} is not a WAL segment name", f.path),
            });
            return;
        };
        if !intact.contains(&f.path) {
            return; // already reported
        }
        match fsutil::read_file(disk, &dir.join(&f.path)) {
            Ok(b) => segments.push((number, b)),
            Err(e) => {
                problems.push(Problem::Unreadable {
                    path: f.path.clone(),
                    detail: e.to_string(),
                });
                return;
            }
        }
    }
    segments.sort_by_key(|s| s.0);
    let views: Vec<(u64, &[u8])> = segments.iter().map(|(n, b)| (*n, b.as_slice())).collect();
    if m.wal.last_ts != m.snapshot_ts {
        problems.push(Problem::Wal {
            detail: format!(
                "the WAL ends at ts {} but the snapshot is at ts {}",
                m.wal.last_ts, m.snapshot_ts
            ),
        });
    }
    if let Err(e) = walcopy::check_continuity(&views, &m.wal, m.checkpoint_ts, dir) {
        problems.push(Problem::Wal {
            detail: e.to_string(),
        });
    }
}

/// Follow the parents of `m` down to a full backup, checking each link.
pub(crate) fn check_chain(
    disk: &DynDisk,
    dest: &Path,
    m: &Manifest,
) -> std::result::Result<Vec<SignedManifest>, String> {
    let mut chain = Vec::new();
    let mut seen = BTreeSet::new();
    let mut child = m.clone();
    seen.insert(child.backup_id.clone());
    loop {
        match child.kind {
            BackupKind::Full => {
                if child.parent_id.is_some()
                    || child.parent_manifest_crc32.is_some()
                    || child.parent_generation.is_some()
                    || child.chain_root_id != child.backup_id
                {
                    return Err(format!(
                        "full backup {} claims a parent or another chain root",
                        child.backup_id
                    ));
                }
                return Ok(chain);
            }
            BackupKind::Incremental => {}
        }
        let (Some(pid), Some(pcrc), Some(pgen)) = (
            child.parent_id.clone(),
            child.parent_manifest_crc32.clone(),
            child.parent_generation,
        ) else {
            return Err(format!(
                "incremental {} does not name its parent fully",
                child.backup_id
            ));
        };
        if BackupId::new(&pid).is_err() || !seen.insert(pid.clone()) {
            return Err(format!("parent id {pid:?} is invalid or loops"));
        }
        let parent = load_manifest(disk, &dest.join(&pid)).map_err(|e| match e {
            Error::NotFound { .. } => format!("parent {pid} is missing"),
            e => format!("parent {pid}: {e}"),
        })?;
        let pm = &parent.manifest;
        if parent.crc32 != pcrc {
            return Err(format!(
                "parent {pid} is not the backup {} was taken on (manifest crc32 {} != {pcrc}): a foreign chain",
                child.backup_id, parent.crc32
            ));
        }
        if pm.backup_id != pid
            || pm.generation != pgen
            || pm.chain_root_id != child.chain_root_id
            || pm.generation > child.generation
            || pm.snapshot_ts > child.snapshot_ts
        {
            return Err(format!(
                "parent {pid} does not match what {} recorded (generation, chain root or order)",
                child.backup_id
            ));
        }
        child = pm.clone();
        chain.push(parent);
    }
}

/// The directory of a complete backup, or the reason there is none.
pub(crate) fn backup_dir(disk: &DynDisk, dest: &Path, id: &str) -> Result<PathBuf> {
    BackupId::new(id)?;
    let dir = dest.join(id);
    if disk.exists(&dir).map_err(|e| Error::io("stat", &dir, e))? {
        return Ok(dir);
    }
    let tmp = dest.join(format!("{TMP_PREFIX}{id}"));
    if disk.exists(&tmp).map_err(|e| Error::io("stat", &tmp, e))? {
        return Err(Error::Incomplete { id: id.to_string() });
    }
    Err(Error::NotFound { id: id.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails with a plain string sort: `1000000.pages` sorts before `100001.pages`.
    #[test]
    fn pages_files_beyond_999999_sort_in_index_order() {
        let indexes = [0u32, 9, 10, 999_999, 1_000_000, 1_000_001, 12_345_678];
        let mut names: Vec<String> = indexes.iter().rev().map(|&i| pages_file(i)).collect();
        names.sort_by(|a, b| pages_order(a).cmp(&pages_order(b)));
        let want: Vec<String> = indexes.iter().map(|&i| pages_file(i)).collect();
        assert_eq!(names, want);
    }
}
