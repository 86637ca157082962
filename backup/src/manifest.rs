//! The backup manifest: `manifest.json`, human-readable, versioned, self-checksummed.
//!
//! # File format
//!
//! UTF-8 JSON, one object, pretty-printed with two-space indentation. Its last member
//! is `"manifest_crc32"`: eight lowercase hex digits of the crc32 of every byte of the
//! file before the line holding that member (in the manner of pg_verifybackup's
//! `Manifest-Checksum`). The file therefore ends with exactly
//! `  "manifest_crc32": "xxxxxxxx"\n}\n`. A reader checks the checksum before it
//! trusts any field, then refuses a `manifest_version` other than [`MANIFEST_VERSION`]
//! with [`Error::UnsupportedVersion`]. Version 1 described pages format 1 (one
//! `data.pages` file); version 2 lists the pages files `pages/NNNNNN.pages` (see
//! [`crate::pages`]). A version-1 backup is read by the build that made it.
//!
//! Members (see [`Manifest`] for their meaning): `format` (always
//! `"ryu-backup-manifest"`), `manifest_version`, `backup_id`, `kind` (`"full"` or
//! `"incremental"`), `parent_id`, `parent_manifest_crc32`, `chain_root_id`,
//! `snapshot_ts`, `checkpoint_ts`, `generation`, `parent_generation`, `page_count`,
//! `wal` (`first_segment`, `first_lsn`, `last_lsn`, `last_ts`),
//! `engine_format_version`, `wal_format_version`, `created_unix_ns`, `tool`, `cluster`
//! (`null` or `cluster_id`, `raft_index`, `raft_term`), `files` (each `path`,
//! `size_bytes`, `crc32`), then `manifest_crc32`.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The manifest's file name inside a backup directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The manifest format version this build writes and reads (2: the pages are in
/// pages files, format 2; version 1 named one `data.pages` and is refused).
pub const MANIFEST_VERSION: u32 = 2;
/// The `format` member's value.
pub const MANIFEST_FORMAT: &str = "ryu-backup-manifest";
/// The tool version recorded in every manifest.
pub const TOOL: &str = concat!("ryu-backup ", env!("CARGO_PKG_VERSION"));

const CRC_KEY: &str = "  \"manifest_crc32\": \"";

/// Full or incremental.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupKind {
    /// Every page of the pinned generation.
    Full,
    /// Only the pages written since the parent's generation.
    Incremental,
}

/// The WAL a backup carries: records `first_lsn..=last_lsn` (none when `last_lsn + 1 ==
/// first_lsn`), in segments numbered from `first_segment`, the last at `last_ts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalRange {
    pub first_segment: u64,
    pub first_lsn: u64,
    pub last_lsn: u64,
    /// Commit timestamp of the last record (the checkpoint's when there is none).
    pub last_ts: u64,
}

/// The replicated case: the Raft position the snapshot corresponds to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub cluster_id: String,
    pub raft_index: u64,
    pub raft_term: u64,
}

/// One file of a backup, relative to the backup directory, `/`-separated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub size_bytes: u64,
    /// crc32 (IEEE) of the whole file, eight lowercase hex digits.
    pub crc32: String,
}

/// A backup's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub manifest_version: u32,
    pub backup_id: String,
    pub kind: BackupKind,
    /// The parent backup of an incremental.
    pub parent_id: Option<String>,
    /// The parent's `manifest_crc32`: a parent replaced by another backup of the same
    /// id (a foreign chain) does not match.
    pub parent_manifest_crc32: Option<String>,
    /// The full backup at the root of the chain (itself for a full backup).
    pub chain_root_id: String,
    /// The backup restores to exactly the committed state at this timestamp.
    pub snapshot_ts: u64,
    /// The pinned generation's checkpoint timestamp: the earliest point-in-time target.
    pub checkpoint_ts: u64,
    /// The pinned checkpoint generation.
    pub generation: u64,
    /// The parent's generation (incremental only): pages written after it are here.
    pub parent_generation: Option<u64>,
    /// Pages in the restored data file.
    pub page_count: u64,
    pub wal: WalRange,
    pub engine_format_version: u32,
    pub wal_format_version: u32,
    /// Wall-clock creation time from the job's `Clock` (metadata only).
    pub created_unix_ns: u64,
    pub tool: String,
    pub cluster: Option<ClusterInfo>,
    pub files: Vec<FileEntry>,
}

/// A manifest as read back, with its checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedManifest {
    pub manifest: Manifest,
    pub crc32: String,
}

/// Format a crc32 the way manifests carry it.
pub fn crc_hex(crc: u32) -> String {
    format!("{crc:08x}")
}

impl Manifest {
    /// The file bytes: pretty JSON ending in the checksum member.
    pub fn encode(&self) -> (Vec<u8>, String) {
        let body = serde_json::to_string_pretty(self).expect("a manifest always serializes");
        let open = body
            .strip_suffix("\n}")
            .expect("a pretty-printed object ends with a closing brace");
        let mut prefix = String::with_capacity(body.len() + 64);
        prefix.push_str(open);
        prefix.push_str(",\n");
        let crc = crc_hex(crc32fast::hash(prefix.as_bytes()));
        let mut out = prefix.into_bytes();
        out.extend_from_slice(format!("{CRC_KEY}{crc}\"\n}}\n").as_bytes());
        (out, crc)
    }

    /// Check the checksum, then parse. `file` names the manifest in errors.
    pub fn decode(bytes: &[u8], file: &Path) -> Result<SignedManifest> {
        let bad = |offset: usize, detail: &str| Error::corrupted(file, offset as u64, detail);
        let tail_len = CRC_KEY.len() + 8 + "\"\n}\n".len();
        if bytes.len() < tail_len {
            return Err(bad(0, "manifest too short"));
        }
        let split = bytes.len() - tail_len;
        let (prefix, tail) = bytes.split_at(split);
        let tail = std::str::from_utf8(tail).map_err(|_| bad(split, "manifest tail not UTF-8"))?;
        let stored = tail
            .strip_prefix(CRC_KEY)
            .and_then(|t| t.strip_suffix("\"\n}\n"))
            .filter(|h| h.len() == 8 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| bad(split, "manifest does not end with its checksum"))?;
        let actual = crc_hex(crc32fast::hash(prefix));
        if stored != actual {
            return Err(bad(
                0,
                &format!("manifest checksum mismatch: stored {stored}, computed {actual}"),
            ));
        }
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| bad(0, &format!("manifest JSON: {e}")))?;
        let version = value
            .get("manifest_version")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| bad(0, "manifest has no manifest_version"))?;
        if version != u64::from(MANIFEST_VERSION) {
            return Err(Error::UnsupportedVersion {
                what: format!("manifest {}", file.display()),
                found: version,
                supported: format!("version {MANIFEST_VERSION}"),
            });
        }
        let manifest: Manifest =
            serde_json::from_value(value).map_err(|e| bad(0, &format!("manifest fields: {e}")))?;
        if manifest.format != MANIFEST_FORMAT {
            return Err(bad(0, "not a Ryu backup manifest"));
        }
        Ok(SignedManifest {
            manifest,
            crc32: stored.to_string(),
        })
    }

    /// The timestamps a restore of this backup can reach.
    pub fn covered(&self) -> (u64, u64) {
        (self.checkpoint_ts, self.snapshot_ts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT.into(),
            manifest_version: MANIFEST_VERSION,
            backup_id: "b1".into(),
            kind: BackupKind::Full,
            parent_id: None,
            parent_manifest_crc32: None,
            chain_root_id: "b1".into(),
            snapshot_ts: 9,
            checkpoint_ts: 4,
            generation: 3,
            parent_generation: None,
            page_count: 7,
            wal: WalRange {
                first_segment: 2,
                first_lsn: 5,
                last_lsn: 9,
                last_ts: 9,
            },
            engine_format_version: 1,
            wal_format_version: 1,
            created_unix_ns: 1,
            tool: TOOL.into(),
            cluster: None,
            files: vec![FileEntry {
                path: "pages/000000.pages".into(),
                size_bytes: 10,
                crc32: "00000000".into(),
            }],
        }
    }

    #[test]
    fn round_trips_and_every_byte_is_covered() {
        let m = sample();
        let (bytes, crc) = m.encode();
        let back = Manifest::decode(&bytes, Path::new("m")).unwrap();
        assert_eq!(back.manifest, m);
        assert_eq!(back.crc32, crc);
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(
                Manifest::decode(&b, Path::new("m")).is_err(),
                "flip at {i} not caught"
            );
        }
        assert!(Manifest::decode(&bytes[..bytes.len() - 1], Path::new("m")).is_err());
    }
}
