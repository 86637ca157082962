//! Cutting and checking copies of WAL segments (format: `ryu_engine::wal`).
//!
//! A backup's WAL is the engine's segments from the pinned checkpoint's WAL start, each
//! cut right after its last record at or below the snapshot timestamp: a copied
//! segment is exactly its 64-byte header plus whole records, no preallocated tail. The
//! engine's recovery reads such a file as a log that ends cleanly.

use crate::error::{Error, Result};
use crate::manifest::WalRange;
use ryu_engine::Ts;
use ryu_engine::wal::{RecordInfo, SEG_HEADER, WAL_VERSION, scan_records, segment_name};
use std::path::Path;

const SEG_MAGIC: &[u8; 8] = b"RYUWAL\0\0";
const SEG_VERSION: usize = 8;
const SEG_NUMBER: usize = 16;
const SEG_FIRST_LSN: usize = 24;
const SEG_CRC: usize = 32;

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Whether a partial read `buf` of a segment (the file is `file_len` bytes) already
/// shows everything a cut at `upto_ts` needs: a record above `upto_ts`, or the end of
/// the records (a blank or undecodable position, or the end of the file).
pub(crate) fn scan_is_final(buf: &[u8], file_len: u64, upto_ts: Ts) -> bool {
    if buf.len() as u64 >= file_len {
        return true;
    }
    let recs = scan_records(buf);
    if recs.last().is_some_and(|r| r.commit_ts > upto_ts) {
        return true;
    }
    let end = recs
        .last()
        .map_or(SEG_HEADER, |r| (r.offset + r.len) as usize);
    if buf.len() < end + 8 {
        return false;
    }
    let (len, check) = (u32_at(buf, end), u32_at(buf, end + 4));
    let plausible = check == !len && len > 0;
    // A plausible record that runs past what was read needs more bytes; anything else
    // ends the records here.
    !(plausible && end + len as usize > buf.len())
}

/// The records of a segment image at or below `upto_ts`, and the byte length of the
/// image cut after the last of them (`SEG_HEADER` when none).
pub(crate) fn cut(image: &[u8], upto_ts: Ts) -> (Vec<RecordInfo>, usize) {
    let kept: Vec<RecordInfo> = scan_records(image)
        .into_iter()
        .take_while(|r| r.commit_ts <= upto_ts)
        .collect();
    let len = kept
        .last()
        .map_or(SEG_HEADER, |r| (r.offset + r.len) as usize);
    (kept, len.min(image.len()))
}

/// Check a segment header: magic, version, checksum, number and first LSN.
pub(crate) fn check_header(b: &[u8], number: u64, first_lsn: u64, file: &Path) -> Result<()> {
    let bad = |off: usize, d: String| Error::corrupted(file, off as u64, d);
    if b.len() < SEG_HEADER || &b[..8] != SEG_MAGIC {
        return Err(bad(0, "not a WAL segment".into()));
    }
    if crc32fast::hash(&b[..SEG_CRC]) != u32_at(b, SEG_CRC) {
        return Err(bad(SEG_CRC, "WAL segment header checksum mismatch".into()));
    }
    if u32_at(b, SEG_VERSION) != WAL_VERSION {
        return Err(bad(SEG_VERSION, "unsupported WAL version".into()));
    }
    if u64_at(b, SEG_NUMBER) != number {
        return Err(bad(SEG_NUMBER, format!("segment number is not {number}")));
    }
    if u64_at(b, SEG_FIRST_LSN) != first_lsn {
        return Err(bad(
            SEG_FIRST_LSN,
            format!(
                "segment starts at LSN {} but {first_lsn} is next",
                u64_at(b, SEG_FIRST_LSN)
            ),
        ));
    }
    Ok(())
}

/// The path of segment `n` inside a backup or database directory.
pub(crate) fn segment_path(n: u64) -> String {
    format!("{}/{}", ryu_engine::WAL_DIR, segment_name(n))
}

/// Check WAL continuity over a backup's claimed range: `segments` are `(number, image)`
/// ascending; they must be consecutive from `range.first_segment`, each exactly header
/// plus whole records, LSNs consecutive from `range.first_lsn` to `range.last_lsn`,
/// timestamps rising above `checkpoint_ts` and ending at `range.last_ts`.
pub(crate) fn check_continuity(
    segments: &[(u64, &[u8])],
    range: &WalRange,
    checkpoint_ts: Ts,
    dir: &Path,
) -> Result<()> {
    let mut next_lsn = range.first_lsn;
    let mut last_ts = checkpoint_ts;
    for (i, (n, image)) in segments.iter().enumerate() {
        let file = dir.join(segment_path(*n));
        if *n != range.first_segment.wrapping_add(i as u64) {
            return Err(Error::corrupted(
                &file,
                0,
                format!(
                    "WAL segment {} is missing",
                    range.first_segment.wrapping_add(i as u64)
                ),
            ));
        }
        check_header(image, *n, next_lsn, &file)?;
        let recs = scan_records(image);
        for r in &recs {
            if r.lsn != next_lsn || r.commit_ts <= last_ts {
                return Err(Error::corrupted(
                    &file,
                    r.offset,
                    format!(
                        "record LSN {} ts {} breaks the sequence (want LSN {next_lsn}, ts above {last_ts})",
                        r.lsn, r.commit_ts
                    ),
                ));
            }
            next_lsn = next_lsn.wrapping_add(1);
            last_ts = r.commit_ts;
        }
        let end = recs.last().map_or(SEG_HEADER as u64, |r| r.offset + r.len);
        if end != image.len() as u64 {
            return Err(Error::corrupted(
                &file,
                end,
                "WAL segment holds bytes that are not whole valid records",
            ));
        }
    }
    if Some(next_lsn) != range.last_lsn.checked_add(1) || last_ts != range.last_ts {
        return Err(Error::corrupted(
            dir.join(ryu_engine::WAL_DIR),
            0,
            format!(
                "WAL ends at LSN {} ts {last_ts}; the manifest claims LSN {} ts {}",
                next_lsn.wrapping_sub(1),
                range.last_lsn,
                range.last_ts
            ),
        ));
    }
    Ok(())
}
