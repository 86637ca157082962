//! Restore: a backup (and its incremental chain) into an empty or absent directory,
//! at its snapshot timestamp or any earlier timestamp it covers.
//!
//! One read of the pages: every backup of the chain is verified before anything is
//! written, except for the bytes of its pages files (their presence and sizes are
//! checked); those are checked on the one read the restore writes from (each file's
//! crc32 and the page checks), and each backup's verify is completed with them before
//! the restore commits. The WAL copies (small next to the pages) are read by the
//! checks before and after the pages and once more to be cut, and that read must
//! match the manifest's crc32 too: every byte written is a byte checked. A restore
//! that finds a problem, or fails to write before its commit point, removes what it
//! wrote and leaves the target as it found it (absent, or empty), and removes the new
//! directories it made above it. Reading the pages once, not once to verify and again to
//! write, halves what a restore of a large backup reads.
//!
//! Order of writes, so that a crash mid-restore never leaves a directory the engine
//! would open as a (wrong) database: first an empty `data.restore`, made durable (the
//! engine refuses a directory holding a name it does not know), then the WAL segments,
//! then the pages into `data.restore`, synced, then the rename to `data` and a sync of
//! the directory. The rename is the commit point. A crashed restore leaves a non-empty
//! target, which a new restore refuses: remove it first. The clean-up of a failed
//! restore removes `data.restore` last, so a clean-up cut short leaves a directory the
//! engine refuses too.

use crate::error::{Error, Result};
use crate::fsutil::{self, WriteBehind, is_absent_or_empty, write_file_synced};
use crate::job::DEFAULT_WRITE_BEHIND_BYTES;
use crate::manifest::{BackupKind, Manifest, crc_hex};
use crate::pages::{ENTRY_BYTES, PagesVerifier};
use crate::verify::{PagesCheck, Problem, backup_dir, check_chain, page_expect, verify_dir_with};
use crate::walcopy;
use ryu_engine::{DATA_FILE, Db, Options, PAGE_SIZE, Ts, WAL_DIR};
use ryu_io::DynDisk;
use std::cell::RefCell;
use std::path::{Path, PathBuf};

/// The data file's name while a restore writes it.
pub const RESTORE_TMP: &str = "data.restore";

/// Restore options.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Restore the state as of this timestamp (point in time); `None` for the
    /// backup's snapshot timestamp. Must lie in the backup's covered range
    /// (its checkpoint timestamp up to its snapshot timestamp).
    pub as_of_ts: Option<Ts>,
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreSummary {
    /// The restored database's newest commit timestamp (the newest commit at or below
    /// the requested timestamp).
    pub restored_ts: Ts,
    /// The backups applied, root (full) first.
    pub chain: Vec<String>,
    pub pages_written: u64,
    pub wal_segments: u64,
}

/// Restore backup `id` from `dest` on `disk` into `target` on `target_disk`, which must
/// be absent or an empty directory. Every backup of the chain is verified as it is
/// read (see the module's doc); on any problem the restore fails with
/// [`Error::VerifyFailed`] (or [`Error::BrokenChain`]) and the target is left as it
/// was found. So is it on an I/O error before the commit point (the rename of
/// `data.restore` to `data`); a failed rename leaves `data.restore`, which the engine
/// refuses to open, and a failed directory sync after it a restored database whose
/// rename may not be durable: remove the target and restore again.
pub fn restore(
    disk: &DynDisk,
    dest: &Path,
    id: &str,
    target_disk: &DynDisk,
    target: &Path,
    options: &RestoreOptions,
) -> Result<RestoreSummary> {
    if !is_absent_or_empty(target_disk, target)? {
        return Err(Error::TargetNotEmpty {
            target: target.to_path_buf(),
        });
    }
    let dir = backup_dir(disk, dest, id)?;
    // Everything but the bytes of the pages files, before a byte is written.
    let precheck = |dir: &Path, id: &str| -> Result<Manifest> {
        let report = verify_dir_with(disk, dest, dir, PagesCheck::SizesOnly)?;
        report
            .manifest
            .filter(|_| report.problems.is_empty())
            .ok_or_else(|| Error::VerifyFailed {
                id: id.to_string(),
                problems: report.problems.iter().map(ToString::to_string).collect(),
            })
    };
    let last = precheck(&dir, id)?;
    let parents = check_chain(disk, dest, &last).map_err(|detail| Error::BrokenChain {
        id: id.to_string(),
        detail,
    })?;
    for p in &parents {
        let pid = &p.manifest.backup_id;
        precheck(&dest.join(pid), pid)?;
    }
    // Each backup with the directory it was read from (a parent's is its id, which
    // `check_chain` checked is valid and is the id in its manifest).
    let mut chain: Vec<(PathBuf, Manifest)> = parents
        .into_iter()
        .rev()
        .map(|p| (dest.join(&p.manifest.backup_id), p.manifest))
        .collect();
    chain.push((dir, last));
    assert_eq!(
        chain[0].1.kind,
        BackupKind::Full,
        "check_chain ends at a full"
    );
    let (from_ts, to_ts) = chain[chain.len() - 1].1.covered();
    let ts = options.as_of_ts.unwrap_or(to_ts);
    if ts < from_ts || ts > to_ts {
        return Err(Error::NotCovered { ts, from_ts, to_ts });
    }
    let tmp = target.join(RESTORE_TMP);
    let mut made = Made::default();
    let written = write_restore(disk, dest, &chain, target_disk, target, ts, &mut made);
    let written = written.inspect_err(|_| {
        if !made.data_restore {
            // Not even `data.restore` was made: anything in the target is not ours
            // (another restore into it that got there first).
            return;
        }
        // Best effort: the error that stopped the restore is the one to report. The
        // WAL goes first and `data.restore` last (see the module's doc), then the
        // directories made for the target, innermost first.
        let _ = fsutil::remove_tree(target_disk, &target.join(WAL_DIR))
            .and_then(|()| fsutil::remove_tree(target_disk, &tmp));
        let _ = if made.dirs.is_empty() {
            target_disk.sync_dir(target)
        } else {
            fsutil::remove_made_dirs(target_disk, &made.dirs)
        };
    })?;
    // The commit point. Past it nothing is removed: a failed rename leaves
    // `data.restore` (the engine refuses the directory), and a rename that may have
    // happened must not lose its WAL.
    target_disk
        .rename(&tmp, &target.join(DATA_FILE))
        .map_err(|e| Error::io("rename", &tmp, e))?;
    target_disk
        .sync_dir(target)
        .map_err(|e| Error::io("sync dir", target, e))?;
    Ok(written)
}

/// What a restore made in the target's file system, for the clean-up of a failed one.
#[derive(Debug, Default)]
struct Made {
    /// The directories made for the target, outermost first.
    dirs: Vec<PathBuf>,
    /// `data.restore` was created by this restore (not by another one that got to the
    /// target first).
    data_restore: bool,
}

/// Everything up to the commit point: the WAL and `data.restore`, synced, each backup
/// of `chain` verified on the bytes written.
fn write_restore(
    disk: &DynDisk,
    dest: &Path,
    chain: &[(PathBuf, Manifest)],
    tdisk: &DynDisk,
    target: &Path,
    ts: Ts,
    made: &mut Made,
) -> Result<RestoreSummary> {
    let (src_dir, last) = chain.last().expect("a chain has a last backup");
    let io = |what: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |e| Error::io(what, p, e)
    };
    // `data.restore` exists durably before anything else is written: until the final
    // rename, the engine refuses the directory (a foreign name) instead of creating a
    // fresh database in it or replaying a WAL without its pages.
    // Every directory made for the target is durable in its parent before the restore
    // reports success: a restored database must not vanish with a new parent.
    let tmp = target.join(RESTORE_TMP);
    made.dirs =
        ryu_io::create_dir_all_synced(&**tdisk, target).map_err(io("create dir", target))?;
    let data = tdisk.create(&tmp).map_err(io("create", &tmp))?;
    made.data_restore = true;
    tdisk.sync_dir(target).map_err(io("sync dir", target))?;
    tdisk
        .create_dir_all(&target.join(WAL_DIR))
        .and_then(|()| tdisk.sync_dir(target))
        .map_err(io("create dir", target))?;
    // WAL: the last backup's segments, each cut after its last record at or below ts;
    // trailing segments left without records are dropped. Each image read must be the
    // one the manifest lists (its crc32): the bytes written are the bytes checked.
    let mut cuts: Vec<(u64, Vec<u8>, usize)> = Vec::new();
    let mut restored_ts = last.checkpoint_ts;
    for f in &last.files {
        if !f.path.starts_with(&format!("{WAL_DIR}/")) {
            continue;
        }
        let rel = fsutil::safe_relative(&f.path)?;
        let path = src_dir.join(rel);
        let image = fsutil::read_file(disk, &path)?;
        let number = last.wal.first_segment.wrapping_add(cuts.len() as u64);
        let crc = crc_hex(crc32fast::hash(&image));
        if f.path != walcopy::segment_path(number)
            || image.len() as u64 != f.size_bytes
            || crc != f.crc32
        {
            return Err(Error::VerifyFailed {
                id: last.backup_id.clone(),
                problems: vec![format!(
                    "{}: {} bytes, crc32 {crc}; the manifest lists {} bytes, crc32 {}, as segment {number}",
                    f.path,
                    image.len(),
                    f.size_bytes,
                    f.crc32
                )],
            });
        }
        let (kept, len) = walcopy::cut(&image, ts);
        if let Some(r) = kept.last() {
            restored_ts = r.commit_ts;
        }
        cuts.push((number, image[..len].to_vec(), kept.len()));
    }
    while cuts.last().is_some_and(|c| c.2 == 0) {
        cuts.pop();
    }
    for (number, image, _) in &cuts {
        let path = target.join(walcopy::segment_path(*number));
        write_file_synced(tdisk, &path, image)?;
    }
    let wal_dir = target.join(WAL_DIR);
    tdisk.sync_dir(&wal_dir).map_err(io("sync dir", &wal_dir))?;
    // Data: overlay the chain's pages, root first; only the last superblock counts.
    let mut pages_written = 0;
    for (i, (dir, m)) in chain.iter().enumerate() {
        let is_last = i + 1 == chain.len();
        let expect = page_expect(m);
        // A full backup's pages ascend, so the data file is written front to back
        // (holes for free pages); an incremental overlays it again from the front.
        let mut behind = WriteBehind::new(0, DEFAULT_WRITE_BEHIND_BYTES, false);
        let failed: RefCell<Option<Error>> = RefCell::new(None);
        let mut buf = Vec::new();
        let mut write = |entries: &[u8]| {
            if failed.borrow().is_some() {
                return;
            }
            // Consecutive page numbers go out in one write.
            let mut run_start = None;
            buf.clear();
            let mut flush = |first: Option<u64>, buf: &mut Vec<u8>| -> Result<()> {
                let Some(first) = first else { return Ok(()) };
                let at = first * PAGE_SIZE as u64;
                data.write_at(at, buf).map_err(io("write", &tmp))?;
                behind.written_to(&data, &tmp, at + buf.len() as u64)?;
                buf.clear();
                Ok(())
            };
            for e in entries.chunks_exact(ENTRY_BYTES) {
                let no = u64::from_le_bytes(e[..8].try_into().expect("8 bytes"));
                let next = run_start.map(|f: u64| f + (buf.len() / PAGE_SIZE) as u64);
                if next != Some(no) {
                    if let Err(err) = flush(run_start, &mut buf) {
                        *failed.borrow_mut() = Some(err);
                        return;
                    }
                    run_start = Some(no);
                }
                if no >= 2 || is_last {
                    buf.extend_from_slice(&e[8..]);
                } else {
                    // An earlier generation's superblock: leave the slot zero.
                    buf.extend_from_slice(&[0u8; PAGE_SIZE]);
                }
                pages_written += 1;
            }
            if let Err(err) = flush(run_start, &mut buf) {
                *failed.borrow_mut() = Some(err);
            }
        };
        // A step at a time, so that a failed write stops the reading too.
        let mut verifier = PagesVerifier::new(dir, expect, false);
        while !verifier.advance_into(disk, 8 << 20, None, &mut write) {
            if failed.borrow().is_some() {
                break;
            }
        }
        if let Some(e) = failed.into_inner() {
            return Err(e);
        }
        // The rest of verify, with the pages as they were read and written. Its
        // manifest must be the one the restore used: were the backup replaced under
        // it, the page expectations could differ and verify read the pages anew, so
        // that no check would have covered the bytes written.
        let pages = PagesCheck::Done(expect, verifier.finish());
        let mut report = verify_dir_with(disk, dest, dir, pages)?;
        if report.manifest.as_ref() != Some(m) {
            report.problems.push(Problem::Manifest {
                detail: "the manifest changed while the restore read the backup".into(),
            });
        }
        if !report.is_ok() {
            return Err(Error::VerifyFailed {
                id: m.backup_id.clone(),
                problems: report.problems.iter().map(ToString::to_string).collect(),
            });
        }
    }
    data.set_len(last.page_count * PAGE_SIZE as u64)
        .and_then(|()| data.sync_data())
        .map_err(io("sync", &tmp))?;
    tdisk.sync_dir(target).map_err(io("sync dir", target))?;
    Ok(RestoreSummary {
        restored_ts,
        chain: chain.iter().map(|(_, m)| m.backup_id.clone()).collect(),
        pages_written,
        wal_segments: cuts.len() as u64,
    })
}
/// Deep verification: restore into `scratch`, open the engine there, read every key,
/// and check the restored timestamp and generation.
pub(crate) fn restore_and_check(
    disk: &DynDisk,
    dest: &Path,
    id: &str,
    scratch_disk: &DynDisk,
    scratch: &Path,
) -> Result<()> {
    let summary = restore(
        disk,
        dest,
        id,
        scratch_disk,
        scratch,
        &RestoreOptions::default(),
    )?;
    let m = crate::verify::load_manifest(disk, &dest.join(id))?.manifest;
    let db = Db::open(scratch_disk.clone(), scratch, Options::default())?;
    if db.last_committed_ts() != m.snapshot_ts || summary.restored_ts != m.snapshot_ts {
        return Err(Error::corrupted(
            scratch,
            0,
            format!(
                "restored database is at ts {}, the manifest says {}",
                db.last_committed_ts(),
                m.snapshot_ts
            ),
        ));
    }
    // Opening replays the WAL above the checkpoint and then writes an end-of-recovery
    // checkpoint: one generation more, exactly when there was WAL to replay.
    let expected_generation = m.generation + u64::from(m.snapshot_ts > m.checkpoint_ts);
    if db.stats().generation != expected_generation {
        return Err(Error::corrupted(
            scratch,
            0,
            "restored database has another generation",
        ));
    }
    let r = db.begin_read();
    for entry in r.range::<std::ops::RangeFull>(..) {
        entry?;
    }
    Ok(())
}
