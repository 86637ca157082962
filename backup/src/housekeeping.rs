//! Listing and pruning the backups of a destination.
//!
//! A destination directory holds `LOCK` while a job or a prune runs, complete backups
//! as `<id>/`, and leftovers that are never complete: `.tmp-<id>/` (a job that did not
//! finish), `.del-<id>/` (a prune that did not finish), `.scratch-<id>/` (a deep
//! verify that did not finish). `prune` removes the leftovers; it deletes a complete
//! backup by first renaming it to `.del-<id>` (durably), so a crash mid-delete never
//! leaves a damaged directory under a backup's name.

use crate::error::{Error, Result};
use crate::fsutil::{self, LOCK_FILE, acquire_lock, release_lock};
use crate::manifest::Manifest;
use crate::verify::load_manifest;
use crate::{DELETE_PREFIX, SCRATCH_PREFIX, TMP_PREFIX};
use ryu_io::DynDisk;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A backup's state as `list` sees it (manifest checks only; `verify` reads the files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupStatus {
    /// Finalized, with a valid manifest.
    Complete,
    /// Never finalized (or being deleted, or a scratch area): `prune` removes it.
    Incomplete,
    /// Under a backup's name but its manifest is missing or damaged.
    Corrupt { detail: String },
    /// Finalized by a build with another format version (its manifest's
    /// `manifest_version` is not [`crate::manifest::MANIFEST_VERSION`]): this build neither reads
    /// nor prunes it.
    Unsupported { detail: String },
}

/// One entry of a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupEntry {
    /// The directory name in the destination.
    pub name: String,
    /// The backup id the entry belongs to.
    pub id: String,
    pub status: BackupStatus,
    pub manifest: Option<Manifest>,
}

/// The backups of `dest`, complete ones ordered by creation time then id, then the
/// others by name. An absent destination has none.
pub fn list(disk: &DynDisk, dest: &Path) -> Result<Vec<BackupEntry>> {
    let names = match disk.list(dest) {
        Ok(n) => n,
        Err(e) if e.is_not_found() => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list", dest, e)),
    };
    let mut complete = Vec::new();
    let mut other = Vec::new();
    for name in names {
        if name == LOCK_FILE {
            continue;
        }
        let path = dest.join(&name);
        if !disk
            .is_dir(&path)
            .map_err(|e| Error::io("stat", &path, e))?
        {
            continue;
        }
        let leftover = [TMP_PREFIX, DELETE_PREFIX, SCRATCH_PREFIX]
            .iter()
            .find_map(|p| name.strip_prefix(p));
        if let Some(id) = leftover {
            other.push(BackupEntry {
                id: id.to_string(),
                name,
                status: BackupStatus::Incomplete,
                manifest: None,
            });
            continue;
        }
        match load_manifest(disk, &path) {
            Ok(m) if m.manifest.backup_id == name => complete.push(BackupEntry {
                id: name.clone(),
                name,
                status: BackupStatus::Complete,
                manifest: Some(m.manifest),
            }),
            Ok(_) => other.push(BackupEntry {
                id: name.clone(),
                name,
                status: BackupStatus::Corrupt {
                    detail: "manifest names another backup id".into(),
                },
                manifest: None,
            }),
            Err(e @ Error::UnsupportedVersion { .. }) => other.push(BackupEntry {
                id: name.clone(),
                name,
                status: BackupStatus::Unsupported {
                    detail: e.to_string(),
                },
                manifest: None,
            }),
            // Unreadable counts as corrupt: one bad manifest must not hide the others.
            Err(e) => {
                other.push(BackupEntry {
                    id: name.clone(),
                    name,
                    status: BackupStatus::Corrupt {
                        detail: e.to_string(),
                    },
                    manifest: None,
                });
            }
        }
    }
    complete.sort_by_key(|e| {
        let m = e
            .manifest
            .as_ref()
            .expect("complete entries carry manifests");
        (m.created_unix_ns, e.id.clone())
    });
    complete.extend(other);
    Ok(complete)
}

/// Which complete backups to keep. A backup is kept if any rule keeps it, and so is
/// every parent a kept incremental needs. With no rule, every complete backup is kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retention {
    /// Keep the newest `n` complete backups (by creation time).
    pub keep_last: Option<usize>,
    /// Keep backups created at or after this wall-clock time (Unix ns).
    pub keep_newer_than_unix_ns: Option<u64>,
}

/// What a prune did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Complete backups deleted.
    pub deleted: Vec<String>,
    /// Incomplete leftovers removed (directory names).
    pub removed_incomplete: Vec<String>,
    /// Complete backups kept.
    pub kept: Vec<String>,
    /// Corrupt entries left for an operator to inspect.
    pub corrupt: Vec<String>,
    /// Backups of another format version, left alone.
    pub unsupported: Vec<String>,
}

/// The complete backups `retention` keeps, closed under "parent of a kept one".
pub fn plan_retention(complete: &[Manifest], retention: &Retention) -> BTreeSet<String> {
    let mut keep = BTreeSet::new();
    let no_rule = retention.keep_last.is_none() && retention.keep_newer_than_unix_ns.is_none();
    let mut order: Vec<&Manifest> = complete.iter().collect();
    order.sort_by_key(|m| (std::cmp::Reverse(m.created_unix_ns), m.backup_id.clone()));
    for (i, m) in order.iter().enumerate() {
        let by_count = retention.keep_last.is_some_and(|n| i < n);
        let by_age = retention
            .keep_newer_than_unix_ns
            .is_some_and(|t| m.created_unix_ns >= t);
        if no_rule || by_count || by_age {
            keep.insert(m.backup_id.clone());
        }
    }
    let by_id: BTreeMap<&str, &Manifest> =
        complete.iter().map(|m| (m.backup_id.as_str(), m)).collect();
    let mut todo: Vec<String> = keep.iter().cloned().collect();
    while let Some(id) = todo.pop() {
        let parent = by_id.get(id.as_str()).and_then(|m| m.parent_id.clone());
        if let Some(p) = parent
            && keep.insert(p.clone())
        {
            todo.push(p);
        }
    }
    keep
}

/// Remove incomplete leftovers and the complete backups `retention` does not keep,
/// never a parent a kept incremental needs. Takes the destination lock.
pub fn prune(disk: &DynDisk, dest: &Path, retention: &Retention) -> Result<PruneReport> {
    acquire_lock(disk, dest, "prune")?;
    let result = prune_locked(disk, dest, retention);
    let released = release_lock(disk, dest);
    let report = result?;
    released?;
    Ok(report)
}

fn prune_locked(disk: &DynDisk, dest: &Path, retention: &Retention) -> Result<PruneReport> {
    let entries = list(disk, dest)?;
    let mut report = PruneReport::default();
    let complete: Vec<Manifest> = entries.iter().filter_map(|e| e.manifest.clone()).collect();
    let keep = plan_retention(&complete, retention);
    for e in &entries {
        match &e.status {
            BackupStatus::Incomplete => {
                fsutil::remove_tree(disk, &dest.join(&e.name))?;
                disk.sync_dir(dest)
                    .map_err(|err| Error::io("sync dir", dest, err))?;
                report.removed_incomplete.push(e.name.clone());
            }
            BackupStatus::Corrupt { .. } => report.corrupt.push(e.name.clone()),
            BackupStatus::Unsupported { .. } => report.unsupported.push(e.name.clone()),
            BackupStatus::Complete if keep.contains(&e.id) => report.kept.push(e.id.clone()),
            BackupStatus::Complete => {
                let doomed = dest.join(format!("{DELETE_PREFIX}{}", e.id));
                fsutil::remove_tree(disk, &doomed)?;
                disk.rename(&dest.join(&e.name), &doomed)
                    .and_then(|()| disk.sync_dir(dest))
                    .map_err(|err| Error::io("rename", &doomed, err))?;
                fsutil::remove_tree(disk, &doomed)?;
                disk.sync_dir(dest)
                    .map_err(|err| Error::io("sync dir", dest, err))?;
                report.deleted.push(e.id.clone());
            }
        }
    }
    Ok(report)
}
