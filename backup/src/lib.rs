//! `ryu-backup`: the one way state leaves a Ryu node. It owns online backups of a
//! live [`ryu_engine::Db`], their manifests, verification, restore (also to a point in
//! time), incremental chains, and the housekeeping of a destination directory.
//!
//! # Shape
//!
//! - **Online, cooperative.** [`BackupJob::start`] pins the engine's newest checkpoint
//!   generation (its pages are never overwritten while pinned) and fixes the snapshot
//!   timestamp; [`BackupJob::step`] then copies up to a byte budget per call: the
//!   pinned pages, then the WAL from the checkpoint up to the snapshot, cut at a record
//!   boundary. The simulator interleaves steps with commits, checkpoints and crashes;
//!   a production thread loops on `step`. Optional rate limits: bytes per step, bytes
//!   per second of the [`ryu_io::Clock`] handed in.
//! - **Atomic finalize.** Files go to `dest/.tmp-<id>`, each handed to the device as
//!   it is written (every [`BackupOptions::write_behind_bytes`]) and synced when
//!   complete (optionally also every [`BackupOptions::sync_every_bytes`]); the manifest is
//!   written last and synced; the temporary directory is synced, read back and
//!   verified, renamed to `dest/<id>`, and `dest` synced. Each pages file is synced and
//!   read back as soon as it is complete, while the next is copied. Unless
//!   [`BackupOptions::keep_in_page_cache`], each window is dropped from the page cache
//!   once written back, each WAL copy once synced, and each pages file once read
//!   back: the page cache holds about two pages files of a backup (the one filling,
//!   the one being read back) instead of all of it, and the database's own pages are
//!   not pushed out by the copy (the final verify reads the WAL copies once more and
//!   leaves them cached). A crash leaves a complete
//!   backup or a `.tmp-` leftover that [`list`] reports incomplete and [`prune`]
//!   removes. `dest/LOCK` keeps two jobs (or a job and a prune) apart; a lock left by a
//!   crash is reported as [`Error::Locked`] and removed by [`break_lock`].
//! - **A backup directory** holds `manifest.json` (see [`manifest`]),
//!   `pages/NNNNNN.pages` (the pages of the pinned generation, packed, each without
//!   the zeros at its end, in files of at most [`BackupOptions::pages_file_bytes`];
//!   see [`pages`]) and
//!   `wal/NNNNNNNNNNNN.log` (engine WAL segments, each cut after its last record at or
//!   below the snapshot).
//! - **Verify** ([`verify()`]) checks the manifest checksum, missing, extra and
//!   wrong-size files, file checksums, page checksums, WAL continuity and the chain;
//!   the deep mode restores into a scratch directory and opens the engine.
//! - **Restore** ([`restore()`]) writes only into an empty or absent directory. It
//!   verifies every backup of the chain before writing, except for the bytes of the
//!   pages files, which it checks on the single read it writes them from (the WAL it
//!   writes is checked against the manifest's crc32), all before its commit point (a
//!   rename); one that finds a problem removes what it wrote. Paths come from the
//!   format, never from the manifest's strings, and a manifest path that would escape
//!   is a verification problem. A point-in-time restore cuts the WAL at any timestamp between the
//!   backup's checkpoint and its snapshot.
//! - **Incremental** backups copy only pages written since the parent's generation,
//!   plus their own WAL; restore overlays the chain root first and refuses a broken or
//!   foreign chain (the child records its parent's manifest checksum).
//! - **Determinism.** No clock, randomness, threads or `std::fs` here: time comes from
//!   the `Clock`, disks from `ryu_io::Disk`, backup ids from the caller
//!   ([`BackupId::generate`] takes the random bits as an argument).
//! - **Tests.** `tests/backup/sim.rs` sweeps seeds on `SimDisk` (commits, checkpoints,
//!   power cuts and crashes of the writer and the whole process, faults on both disks)
//!   and checks every complete backup against a model; the `planted-bugs` feature
//!   switches on classic backup bugs the sweep must catch. `examples/backup_bench.rs` measures
//!   on the real disk (see `README.md`).
//!
//! # Example
//!
//! ```
//! use ryu_backup::{BackupId, BackupJob, BackupOptions, RestoreOptions, Step, VerifyOptions};
//! use ryu_engine::{Db, Options};
//! use ryu_io::{DynDisk, ManualClock};
//! use std::path::Path;
//! use std::sync::Arc;
//!
//! let disk: DynDisk = Arc::new(ryu_sim::SimDisk::new(1));
//! let clock = Arc::new(ManualClock::new(1_700_000_000_000_000_000));
//! let db = Db::open(disk.clone(), Path::new("db"), Options::default()).unwrap();
//! let mut w = db.begin_write();
//! w.put(b"k", b"v1").unwrap();
//! w.commit().unwrap();
//! db.checkpoint().unwrap();
//! let mut w = db.begin_write();
//! w.put(b"k", b"v2").unwrap();
//! let ts = w.commit().unwrap();
//!
//! let id = BackupId::generate(clock.wall_unix_ns(), 0x5eed);
//! let options = BackupOptions { id: id.clone(), ..Default::default() };
//! let mut job = BackupJob::start(&db, disk.clone(), Path::new("backups"), clock, options).unwrap();
//! let summary = loop {
//!     // Commits may go on between steps.
//!     if let Step::Done(s) = job.step(64 << 10).unwrap() {
//!         break s;
//!     }
//! };
//! assert_eq!(summary.manifest.snapshot_ts, ts);
//!
//! let dest = Path::new("backups");
//! assert!(ryu_backup::verify(&disk, dest, id.as_str(), &VerifyOptions { deep: true }).unwrap().is_ok());
//! ryu_backup::restore(&disk, dest, id.as_str(), &disk, Path::new("restored"), &RestoreOptions::default()).unwrap();
//! let restored = Db::open(disk.clone(), Path::new("restored"), Options::default()).unwrap();
//! assert_eq!(restored.begin_read().get(b"k").unwrap(), Some(b"v2".to_vec()));
//! # use ryu_io::Clock;
//! ```

mod error;
mod fsutil;
mod housekeeping;
mod job;
pub mod manifest;
pub mod pages;
mod restore;
mod verify;
mod walcopy;

pub use error::{Error, Result};
pub use fsutil::{LOCK_FILE, break_lock, remove_tree, safe_relative};
pub use housekeeping::{
    BackupEntry, BackupStatus, PruneReport, Retention, list, plan_retention, prune,
};
#[cfg(feature = "planted-bugs")]
pub use job::PlantedBug;
pub use job::{
    BackupJob, BackupOptions, BackupSummary, DEFAULT_WRITE_BEHIND_BYTES, MIN_PACING_BYTES,
    Progress, ProgressFn, Step,
};
pub use manifest::{BackupKind, ClusterInfo, FileEntry, Manifest, WalRange};
pub use restore::{RESTORE_TMP, RestoreOptions, RestoreSummary, restore};
pub use verify::{Problem, VerifyOptions, VerifyReport, verify};

use std::fmt;

/// Prefix of a job's temporary directory in a destination.
pub const TMP_PREFIX: &str = ".tmp-";
/// Prefix of a backup being deleted by `prune`.
pub const DELETE_PREFIX: &str = ".del-";
/// Prefix of a deep verification's scratch directory.
pub const SCRATCH_PREFIX: &str = ".scratch-";

/// A backup's id: 1 to 64 characters of `[A-Za-z0-9_-]` (so it is a safe directory
/// name and never collides with the `.`-prefixed leftovers).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct BackupId(String);

impl BackupId {
    /// Check and wrap an id.
    pub fn new(id: &str) -> Result<BackupId> {
        let id = BackupId(id.to_string());
        id.validate()?;
        Ok(id)
    }

    /// An id that sorts by creation time: `YYYYMMDDTHHMMSSZ-xxxxxxxx`, from a wall
    /// clock reading and caller-supplied random bits (the core has no randomness).
    pub fn generate(wall_unix_ns: u64, random: u64) -> BackupId {
        let secs = wall_unix_ns / 1_000_000_000;
        let (days, rem) = (secs / 86_400, secs % 86_400);
        let (y, m, d) = civil_from_days(days as i64);
        BackupId(format!(
            "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z-{:08x}",
            rem / 3600,
            rem / 60 % 60,
            rem % 60,
            random as u32
        ))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let ok = !self.0.is_empty()
            && self.0.len() <= 64
            && self
                .0
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidId { id: self.0.clone() })
        }
    }
}

impl fmt::Display for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_valid_and_sort_by_time() {
        let a = BackupId::generate(1_700_000_000_000_000_000, 7);
        assert_eq!(a.as_str(), "20231114T221320Z-00000007");
        let b = BackupId::generate(1_700_000_001_000_000_000, 1);
        assert!(a < b);
        assert!(BackupId::new(a.as_str()).is_ok());
        for bad in ["", ".tmp-x", "a/b", "..", &"x".repeat(65)] {
            assert!(BackupId::new(bad).is_err(), "{bad}");
        }
    }
}
