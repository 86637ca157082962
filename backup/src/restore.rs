//! Restore: a backup (and its incremental chain) into an empty or absent directory,
//! at its snapshot timestamp or any earlier timestamp it covers.
//!
//! Order of writes, so that a crash mid-restore never leaves a directory the engine
//! would open as a (wrong) database: first an empty `data.restore`, made durable (the
//! engine refuses a directory holding a name it does not know), then the WAL segments,
//! then the pages into `data.restore`, synced, then the rename to `data` and a sync of
//! the directory. The rename is the commit point. A crashed restore leaves a non-empty
//! target, which a new restore refuses: remove it first.

use crate::error::{Error, Result};
use crate::fsutil::{self, WriteBehind, is_absent_or_empty, parent_of, write_file_synced};
use crate::job::DEFAULT_WRITE_BEHIND_BYTES;
use crate::manifest::{BackupKind, Manifest};
use crate::pages;
use crate::verify::{backup_dir, check_chain, page_expect, verify_dir};
use crate::walcopy;
use ryu_engine::{DATA_FILE, Db, Options, PAGE_SIZE, Ts, WAL_DIR};
use ryu_io::DynDisk;
use std::path::Path;

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
/// be absent or an empty directory. Every backup of the chain is verified first (no
/// byte is written into `target` if any check fails).
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
    let report = verify_dir(disk, dest, &dir)?;
    let Some(last) = report.manifest.clone().filter(|_| report.is_ok()) else {
        return Err(Error::VerifyFailed {
            id: id.to_string(),
            problems: report.problems.iter().map(ToString::to_string).collect(),
        });
    };
    let parents = check_chain(disk, dest, &last).map_err(|detail| Error::BrokenChain {
        id: id.to_string(),
        detail,
    })?;
    let mut chain: Vec<Manifest> = Vec::new();
    for p in parents.iter().rev() {
        let r = verify_dir(disk, dest, &dest.join(&p.manifest.backup_id))?;
        if !r.is_ok() {
            return Err(Error::VerifyFailed {
                id: p.manifest.backup_id.clone(),
                problems: r.problems.iter().map(ToString::to_string).collect(),
            });
        }
        chain.push(p.manifest.clone());
    }
    chain.push(last.clone());
    assert_eq!(
        chain[0].kind,
        BackupKind::Full,
        "check_chain ends at a full"
    );
    let (from_ts, to_ts) = last.covered();
    let ts = options.as_of_ts.unwrap_or(to_ts);
    if ts < from_ts || ts > to_ts {
        return Err(Error::NotCovered { ts, from_ts, to_ts });
    }
    write_restore(disk, dest, &chain, target_disk, target, ts)
}

fn write_restore(
    disk: &DynDisk,
    dest: &Path,
    chain: &[Manifest],
    tdisk: &DynDisk,
    target: &Path,
    ts: Ts,
) -> Result<RestoreSummary> {
    let last = chain.last().expect("a chain has a last backup");
    let io = |what: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |e| Error::io(what, p, e)
    };
    // `data.restore` exists durably before anything else is written: until the final
    // rename, the engine refuses the directory (a foreign name) instead of creating a
    // fresh database in it or replaying a WAL without its pages.
    let tmp = target.join(RESTORE_TMP);
    tdisk
        .create_dir_all(target)
        .map_err(io("create dir", target))?;
    let data = tdisk.create(&tmp).map_err(io("create", &tmp))?;
    tdisk
        .sync_dir(parent_of(target))
        .and_then(|()| tdisk.sync_dir(target))
        .map_err(io("sync dir", target))?;
    tdisk
        .create_dir_all(&target.join(WAL_DIR))
        .and_then(|()| tdisk.sync_dir(target))
        .map_err(io("create dir", target))?;
    // WAL: the last backup's segments, each cut after its last record at or below ts;
    // trailing segments left without records are dropped.
    let src_dir = dest.join(&last.backup_id);
    let mut cuts: Vec<(u64, Vec<u8>, usize)> = Vec::new();
    let mut restored_ts = last.checkpoint_ts;
    for f in &last.files {
        if !f.path.starts_with(&format!("{WAL_DIR}/")) {
            continue;
        }
        let rel = fsutil::safe_relative(&f.path)?;
        let image = fsutil::read_file(disk, &src_dir.join(rel))?;
        let number = last.wal.first_segment.wrapping_add(cuts.len() as u64);
        if f.path != walcopy::segment_path(number) {
            return Err(Error::corrupted(
                src_dir.join(&f.path),
                0,
                "unexpected WAL file",
            ));
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
    for (i, m) in chain.iter().enumerate() {
        let is_last = i + 1 == chain.len();
        let dir = dest.join(&m.backup_id);
        let expect = page_expect(m);
        // A full backup's pages ascend, so the data file is written front to back
        // (holes for free pages); an incremental overlays it again from the front.
        let mut behind = WriteBehind::new(0, DEFAULT_WRITE_BEHIND_BYTES, false);
        pages::read_entries(disk, &dir, expect, |run| {
            let mut j = 0;
            while j < run.len() {
                let first = run[j].0;
                let mut k = j;
                let mut buf = Vec::new();
                while k < run.len() && run[k].0 == first + (k - j) as u64 {
                    if run[k].0 >= 2 || is_last {
                        buf.extend_from_slice(run[k].1);
                    } else {
                        // An earlier generation's superblock: leave the slot zero.
                        buf.extend_from_slice(&[0u8; PAGE_SIZE]);
                    }
                    k += 1;
                }
                let at = first * PAGE_SIZE as u64;
                data.write_at(at, &buf).map_err(io("write", &tmp))?;
                behind.written_to(&data, &tmp, at + buf.len() as u64)?;
                pages_written += (k - j) as u64;
                j = k;
            }
            Ok(())
        })?;
    }
    data.set_len(last.page_count * PAGE_SIZE as u64)
        .and_then(|()| data.sync_data())
        .map_err(io("sync", &tmp))?;
    tdisk.sync_dir(target).map_err(io("sync dir", target))?;
    tdisk
        .rename(&tmp, &target.join(DATA_FILE))
        .map_err(io("rename", &tmp))?;
    tdisk.sync_dir(target).map_err(io("sync dir", target))?;
    Ok(RestoreSummary {
        restored_ts,
        chain: chain.iter().map(|m| m.backup_id.clone()).collect(),
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
