//! The write-ahead log: segmented, preallocated files of checksummed records, written
//! in groups (one `write_at` + one `sync_data` per group of commits).
//!
//! # Segment file `wal/NNNNNNNNNNNN.log` (12 decimal digits, numbered from 1)
//!
//! | offset | size | field |
//! |--------|------|-------|
//! | 0      | 8    | magic `RYUWAL\0\0` |
//! | 8      | 4    | format version (u32 LE), [`WAL_VERSION`] |
//! | 12     | 4    | crc32 of bytes `[0, 12)`: the version stamp (same in every version) |
//! | 16     | 8    | segment number |
//! | 24     | 8    | LSN of the segment's first record |
//! | 32     | 4    | crc32 of bytes `[0, 32)` |
//! | 36     | 28   | zero |
//! | 64     | ..   | records, back to back, each 8-byte aligned; then zeros |
//!
//! A segment is created (header written and read back, length preallocated with zeros,
//! directory entry synced) when a commit first needs room in it, so running out of
//! space fails that commit before it gets a timestamp, group writes never grow a file,
//! and segments exist durably in number order.
//!
//! # Record
//!
//! | offset | size | field |
//! |--------|------|-------|
//! | 0      | 4    | record length `len` in bytes (multiple of 8, padding included) |
//! | 4      | 4    | `!len`: a single damaged bit in the length is caught before it is trusted |
//! | 8      | 4    | crc32 of bytes `[0, 8)` and `[12, len)` |
//! | 12     | 4    | payload length |
//! | 16     | 8    | LSN (consecutive across segments) |
//! | 24     | 8    | offset of this record in its segment (catches misdirected writes) |
//! | 32     | 8    | offset where the group write carrying this record began |
//! | 40     | ..   | payload then zero padding, XORed with a keystream derived from the LSN |
//!
//! Payload: `commit_ts u64 | count u32 | count x (op u8 (1 put, 0 delete) | key_len u16 |
//! value_len u16 | key | value)`.
//!
//! # Why torn tails can be told apart from damage
//!
//! A group is written with one `write_at` only after every earlier group was synced,
//! and segment `n + 1` receives records only after segment `n`'s were synced. So after a
//! crash at most the last group is torn, and a torn record has lost at least one whole
//! sector piece, which reads as zeros (preallocated) or lies past the end of the file.
//! The keystream makes it practically impossible for a piece of a real record to be all
//! zeros. Recovery therefore truncates a bad record only if (a) its length words are
//! zero, or consistent and it has a zeroed piece or runs past the end, and (b) no valid
//! record after it in the segment is misplaced or belongs to a later group. Anything else
//! is `Corrupted { file, offset }`: a bit flip in the last synced record, a misdirected
//! group, damage in a segment that later segments follow.

use crate::error::{Error, Result, Ts};
use crate::page::{MAX_KEY_BYTES, MAX_VALUE_BYTES};
use ryu_io::{DynDisk, DynFile};
use std::path::{Path, PathBuf};

/// Format version of WAL segments.
pub const WAL_VERSION: u32 = 1;
const WAL_MAGIC: [u8; 8] = *b"RYUWAL\0\0";
const SEG_MAGIC: usize = 0;
const SEG_VERSION: usize = SEG_MAGIC + 8;
const SEG_VERSION_CHECK: usize = SEG_VERSION + 4;
const SEG_NUMBER: usize = SEG_VERSION_CHECK + 4;
const SEG_FIRST_LSN: usize = SEG_NUMBER + 8;
const SEG_CRC: usize = SEG_FIRST_LSN + 8;
/// Bytes before the first record of a segment.
pub const SEG_HEADER: usize = 64;
const _: () = assert!(SEG_CRC + 4 <= SEG_HEADER && SEG_HEADER.is_multiple_of(8));

const REC_LEN: usize = 0;
const REC_LEN_CHECK: usize = REC_LEN + 4;
const REC_CRC: usize = REC_LEN_CHECK + 4;
const REC_PAYLOAD_LEN: usize = REC_CRC + 4;
const REC_LSN: usize = REC_PAYLOAD_LEN + 4;
const REC_OFFSET: usize = REC_LSN + 8;
const REC_BASE: usize = REC_OFFSET + 8;
/// Bytes of a record header.
pub const REC_HEADER: usize = REC_BASE + 8;
const _: () = assert!(REC_HEADER == 40 && REC_HEADER.is_multiple_of(8));
const SECTOR: usize = 512;

/// One write of a transaction: `None` deletes.
pub type Write = (Vec<u8>, Option<Vec<u8>>);

/// The file name of segment `n`.
pub fn segment_name(n: u64) -> String {
    format!("{n:012}.log")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    (digits.len() == 12 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// XOR `body` (which starts at record offset `REC_HEADER`) with the LSN's keystream.
fn scramble(lsn: u64, body: &mut [u8]) {
    let seed = splitmix64(lsn ^ 0x5259_552d_5741_4c00);
    for (i, chunk) in body.chunks_mut(8).enumerate() {
        let ks = splitmix64(seed.wrapping_add(i as u64)).to_le_bytes();
        for (b, k) in chunk.iter_mut().zip(ks) {
            *b ^= k;
        }
    }
}

fn record_crc(rec: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&rec[..REC_CRC]);
    h.update(&rec[REC_PAYLOAD_LEN..]);
    h.finalize()
}

/// Encode a commit's payload.
pub fn encode_payload(ts: Ts, writes: &[Write]) -> Vec<u8> {
    let mut p = Vec::with_capacity(
        12 + writes
            .iter()
            .map(|(k, v)| 5 + k.len() + v.as_ref().map_or(0, Vec::len))
            .sum::<usize>(),
    );
    p.extend_from_slice(&ts.to_le_bytes());
    p.extend_from_slice(&(writes.len() as u32).to_le_bytes());
    for (k, v) in writes {
        assert!(k.len() <= MAX_KEY_BYTES);
        p.push(u8::from(v.is_some()));
        p.extend_from_slice(&(k.len() as u16).to_le_bytes());
        let value = v.as_deref().unwrap_or(&[]);
        assert!(value.len() <= MAX_VALUE_BYTES);
        p.extend_from_slice(&(value.len() as u16).to_le_bytes());
        p.extend_from_slice(k);
        p.extend_from_slice(value);
    }
    p
}

/// Decode a payload; `None` if malformed.
pub fn decode_payload(p: &[u8]) -> Option<(Ts, Vec<Write>)> {
    let ts = u64::from_le_bytes(p.get(..8)?.try_into().ok()?);
    let count = u32::from_le_bytes(p.get(8..12)?.try_into().ok()?) as usize;
    let mut at = 12;
    let mut writes = Vec::with_capacity(count.min(4096));
    for _ in 0..count {
        let op = *p.get(at)?;
        let kl = usize::from(u16::from_le_bytes(p.get(at + 1..at + 3)?.try_into().ok()?));
        let vl = usize::from(u16::from_le_bytes(p.get(at + 3..at + 5)?.try_into().ok()?));
        at += 5;
        let key = p.get(at..at + kl)?.to_vec();
        let value = p.get(at + kl..at + kl + vl)?.to_vec();
        at += kl + vl;
        writes.push(match op {
            1 => (key, Some(value)),
            0 if vl == 0 => (key, None),
            _ => return None,
        });
    }
    (at == p.len()).then_some((ts, writes))
}

/// Encoded length of a record with this payload.
pub fn record_len(payload_len: usize) -> usize {
    (REC_HEADER + payload_len).next_multiple_of(8)
}

/// A record as laid out at `offset`, without its group base and crc (set at write time).
fn encode_record(lsn: u64, offset: u64, payload: &[u8]) -> Vec<u8> {
    let len = record_len(payload.len());
    let mut r = vec![0u8; len];
    r[REC_LEN..REC_LEN + 4].copy_from_slice(&(len as u32).to_le_bytes());
    r[REC_LEN_CHECK..REC_LEN_CHECK + 4].copy_from_slice(&(!(len as u32)).to_le_bytes());
    r[REC_PAYLOAD_LEN..REC_PAYLOAD_LEN + 4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    r[REC_LSN..REC_LSN + 8].copy_from_slice(&lsn.to_le_bytes());
    r[REC_OFFSET..REC_OFFSET + 8].copy_from_slice(&offset.to_le_bytes());
    r[REC_HEADER..REC_HEADER + payload.len()].copy_from_slice(payload);
    scramble(lsn, &mut r[REC_HEADER..]);
    r
}

/// Set a record's group base and checksum just before it is written.
fn seal_record(rec: &mut [u8], base: u64) {
    rec[REC_BASE..REC_BASE + 8].copy_from_slice(&base.to_le_bytes());
    let crc = record_crc(rec);
    rec[REC_CRC..REC_CRC + 4].copy_from_slice(&crc.to_le_bytes());
}

fn segment_header(number: u64, first_lsn: u64) -> [u8; SEG_HEADER] {
    let mut h = [0u8; SEG_HEADER];
    h[SEG_MAGIC..SEG_MAGIC + 8].copy_from_slice(&WAL_MAGIC);
    h[SEG_VERSION..SEG_VERSION + 4].copy_from_slice(&WAL_VERSION.to_le_bytes());
    let stamp = crc32fast::hash(&h[..SEG_VERSION_CHECK]);
    h[SEG_VERSION_CHECK..SEG_VERSION_CHECK + 4].copy_from_slice(&stamp.to_le_bytes());
    h[SEG_NUMBER..SEG_NUMBER + 8].copy_from_slice(&number.to_le_bytes());
    h[SEG_FIRST_LSN..SEG_FIRST_LSN + 8].copy_from_slice(&first_lsn.to_le_bytes());
    let crc = crc32fast::hash(&h[..SEG_CRC]);
    h[SEG_CRC..SEG_CRC + 4].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Bytes appended to one segment since the last flush: written with one `write_at`.
#[derive(Debug)]
pub(crate) struct Chunk {
    pub segment: u64,
    file: DynFile,
    start: u64,
    bytes: Vec<u8>,
    record_starts: Vec<usize>,
    pub last_lsn: u64,
    pub last_ts: Ts,
}

/// The open segment receiving records.
#[derive(Debug)]
struct OpenSegment {
    number: u64,
    file: DynFile,
    /// Next free byte (the reservation pointer).
    end: u64,
}

/// The in-memory side of the WAL writer, kept under the engine's state lock.
#[derive(Debug)]
pub(crate) struct WalWriter {
    disk: DynDisk,
    dir: PathBuf,
    segment_bytes: u64,
    open: Option<OpenSegment>,
    /// Segment number the next created segment gets.
    pub next_segment: u64,
    /// LSN the next record gets.
    pub next_lsn: u64,
    chunks: Vec<Chunk>,
}

impl WalWriter {
    /// A writer that starts a fresh segment `next_segment` on its first append.
    pub fn new(
        disk: DynDisk,
        dir: PathBuf,
        segment_bytes: u64,
        next_segment: u64,
        next_lsn: u64,
    ) -> WalWriter {
        assert!(next_segment >= 1 && next_lsn >= 1);
        WalWriter {
            disk,
            dir,
            segment_bytes,
            open: None,
            next_segment,
            next_lsn,
            chunks: Vec::new(),
        }
    }

    /// The largest payload a record may carry.
    pub fn max_payload(&self) -> usize {
        self.segment_bytes as usize - SEG_HEADER - REC_HEADER - 8
    }

    /// Make the next append start a new segment; returns that segment's number and the
    /// LSN its first record will carry (a checkpoint's WAL position).
    pub fn rotate(&mut self) -> (u64, u64) {
        self.open = None;
        (self.next_segment, self.next_lsn)
    }

    /// Buffer a record; creates (and preallocates) a segment when needed, so `NoSpace`
    /// surfaces here, before the caller commits to anything. Returns the record's LSN.
    pub fn append(&mut self, ts: Ts, payload: &[u8]) -> Result<u64> {
        let len = record_len(payload.len()) as u64;
        if payload.len() > self.max_payload() {
            return Err(Error::TooLarge {
                what: "transaction",
                size: payload.len() as u64,
                max: self.max_payload() as u64,
            });
        }
        if self
            .open
            .as_ref()
            .is_none_or(|s| s.end + len > self.segment_bytes)
        {
            self.open_segment()?;
        }
        let seg = self.open.as_mut().expect("segment opened above");
        let lsn = self.next_lsn;
        let rec = encode_record(lsn, seg.end, payload);
        assert_eq!(rec.len() as u64, len);
        let contiguous = self
            .chunks
            .last()
            .is_some_and(|c| c.segment == seg.number && c.start + c.bytes.len() as u64 == seg.end);
        if !contiguous {
            self.chunks.push(Chunk {
                segment: seg.number,
                file: seg.file.clone(),
                start: seg.end,
                bytes: Vec::new(),
                record_starts: Vec::new(),
                last_lsn: 0,
                last_ts: 0,
            });
        }
        let chunk = self.chunks.last_mut().expect("chunk pushed above");
        chunk.record_starts.push(chunk.bytes.len());
        chunk.bytes.extend_from_slice(&rec);
        assert!(
            chunk.last_lsn < lsn && chunk.last_ts < ts,
            "LSN and ts rise together"
        );
        chunk.last_lsn = lsn;
        chunk.last_ts = ts;
        seg.end += len;
        assert!(seg.end <= self.segment_bytes);
        self.next_lsn += 1;
        Ok(lsn)
    }

    fn open_segment(&mut self) -> Result<()> {
        let number = self.next_segment;
        let path = self.dir.join(segment_name(number));
        // A leftover of a creation that failed (e.g. no space) is empty: replace it.
        if self
            .disk
            .exists(&path)
            .map_err(|e| Error::io("wal exists", e))?
        {
            self.disk
                .remove(&path)
                .map_err(|e| Error::io("wal remove", e))?;
        }
        let file = self
            .disk
            .create(&path)
            .map_err(|e| Error::io("wal create", e))?;
        let header = segment_header(number, self.next_lsn);
        // Read the header back: a misdirected header write would leave a blank header
        // in front of acknowledged records, which recovery must be able to read as
        // "never synced".
        let mut back = [0u8; SEG_HEADER];
        let made = file
            .write_at(0, &header)
            .and_then(|()| file.read_at(0, &mut back))
            .and_then(|()| {
                if back == header {
                    Ok(())
                } else {
                    Err(ryu_io::IoError::io(
                        "wal create",
                        "segment header did not read back",
                    ))
                }
            })
            .and_then(|()| file.set_len(self.segment_bytes))
            // The entry is made durable now, before any later segment can be created:
            // segments then exist durably in order, and a crash never leaves a gap.
            .and_then(|()| self.disk.sync_dir(&self.dir));
        if let Err(e) = made {
            let _ = self.disk.remove(&path); // best effort; an empty leftover is harmless
            return Err(Error::io("wal preallocate", e));
        }
        self.open = Some(OpenSegment {
            number,
            file,
            end: SEG_HEADER as u64,
        });
        self.next_segment += 1;
        Ok(())
    }

    /// Hand the buffered chunks to a flusher.
    pub fn take_chunks(&mut self) -> Vec<Chunk> {
        std::mem::take(&mut self.chunks)
    }
}

/// Write and sync chunks in order: a segment's records are durable before anything is
/// written to the next. (Segment directory entries were made durable at creation.)
/// Seal and write every chunk; sync each one after writing it unless `sync` is false
/// (a database whose commits are durable elsewhere: see `Options::sync_commits`).
pub(crate) fn write_chunks(chunks: &mut [Chunk], sync: bool) -> Result<()> {
    for c in chunks.iter_mut() {
        let starts = c.record_starts.clone();
        for (i, &s) in starts.iter().enumerate() {
            let e = starts.get(i + 1).copied().unwrap_or(c.bytes.len());
            seal_record(&mut c.bytes[s..e], c.start);
        }
        c.file
            .write_at(c.start, &c.bytes)
            .map_err(|e| Error::io("wal write", e))?;
        if sync {
            c.file.sync_data().map_err(|e| Error::io("wal sync", e))?;
        }
    }
    Ok(())
}

impl Chunk {
    /// The segment file this chunk was written to.
    pub(crate) fn file(&self) -> &DynFile {
        &self.file
    }
}

enum Parsed {
    /// A checksummed record.
    Valid {
        len: usize,
        lsn: u64,
        offset: u64,
        base: u64,
        payload: Vec<u8>,
    },
    /// Length words both zero: nothing was written here.
    Blank,
    /// Fewer than 8 bytes left in the file.
    Eof,
    /// Length words disagree or are out of range.
    BadLength,
    /// Consistent length, bad checksum.
    BadRecord { len: usize },
}

fn parse_at(b: &[u8], at: usize) -> Parsed {
    if at + 8 > b.len() {
        return Parsed::Eof;
    }
    let (len, check) = (u32_at(b, at + REC_LEN), u32_at(b, at + REC_LEN_CHECK));
    if len == 0 && check == 0 {
        return Parsed::Blank;
    }
    let len_ok = check == !len && (len as usize) >= REC_HEADER + 12 && len % 8 == 0;
    if !len_ok {
        return Parsed::BadLength;
    }
    let len = len as usize;
    if at + len > b.len() {
        return Parsed::BadRecord { len };
    }
    let rec = &b[at..at + len];
    if record_crc(rec) != u32_at(rec, REC_CRC) {
        return Parsed::BadRecord { len };
    }
    let lsn = u64_at(rec, REC_LSN);
    let payload_len = u32_at(rec, REC_PAYLOAD_LEN) as usize;
    let mut body = rec[REC_HEADER..].to_vec();
    scramble(lsn, &mut body);
    if payload_len > body.len() || body[payload_len..].iter().any(|&x| x != 0) {
        return Parsed::BadLength;
    }
    body.truncate(payload_len);
    Parsed::Valid {
        len,
        lsn,
        offset: u64_at(rec, REC_OFFSET),
        base: u64_at(rec, REC_BASE),
        payload: body,
    }
}

/// Whether a record header at `at` (length words consistent, checksum not needed)
/// names `at` as both its offset and the start of its group.
fn group_starts_at(b: &[u8], at: usize) -> bool {
    let (len, check) = (u32_at(b, at + REC_LEN), u32_at(b, at + REC_LEN_CHECK));
    let len_ok = len != 0 && check == !len && (len as usize) >= REC_HEADER + 12 && len % 8 == 0;
    len_ok && u64_at(b, at + REC_OFFSET) == at as u64 && u64_at(b, at + REC_BASE) == at as u64
}

/// Some sector piece of `[at, at + len)` is all zeros or beyond the end: the mark a
/// crash leaves on a torn write into preallocated space.
fn has_lost_piece(b: &[u8], at: usize, len: usize) -> bool {
    let end = at + len;
    if end > b.len() {
        return true;
    }
    let mut s = at;
    while s < end {
        let piece_end = ((s / SECTOR) + 1) * SECTOR;
        let piece_end = piece_end.min(end);
        if b[s..piece_end].iter().all(|&x| x == 0) {
            return true;
        }
        s = piece_end;
    }
    false
}

/// A record found by [`scan_records`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordInfo {
    /// Byte offset of the record in its segment.
    pub offset: u64,
    /// Encoded length in bytes (the next record starts at `offset + len`).
    pub len: u64,
    pub lsn: u64,
    pub commit_ts: Ts,
}

/// The valid records at the start of a segment image, in order, up to the first
/// position that does not hold one. Read-only: for a backup that copies the WAL up to
/// a timestamp and cuts the copy at a record boundary. Whether what follows is a torn
/// tail or damage is for recovery to judge.
pub fn scan_records(image: &[u8]) -> Vec<RecordInfo> {
    let mut out = Vec::new();
    let mut pos = SEG_HEADER;
    while let Parsed::Valid {
        len,
        lsn,
        offset,
        payload,
        ..
    } = parse_at(image, pos)
    {
        let Some((commit_ts, _)) = decode_payload(&payload) else {
            break;
        };
        if offset != pos as u64 {
            break;
        }
        out.push(RecordInfo {
            offset,
            len: len as u64,
            lsn,
            commit_ts,
        });
        pos += len;
    }
    out
}

/// What recovery found.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub next_segment: u64,
    pub next_lsn: u64,
    pub last_ts: Ts,
    pub records: u64,
    /// A torn tail was cut off (and how many bytes of it were not blank).
    pub truncated_tail: bool,
}

fn read_all(file: &DynFile) -> std::result::Result<Vec<u8>, ryu_io::IoError> {
    let len = file.len()?;
    let mut b = vec![0u8; len as usize];
    file.read_at(0, &mut b)?;
    Ok(b)
}

/// Whether anything was ever written after the header. Not just "is there a record at
/// the first position": a misdirected first group leaves that position blank and its
/// records further on, and such a segment must be examined, never dropped as empty.
fn has_records(b: &[u8]) -> bool {
    b.len() > SEG_HEADER && b[SEG_HEADER..].iter().any(|&x| x != 0)
}

/// The segment numbers in `dir`, ascending; a foreign name is corruption of the log.
pub(crate) fn list_segments(disk: &DynDisk, dir: &Path) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    for name in disk.list(dir).map_err(|e| Error::io("wal list", e))? {
        match parse_segment_name(&name) {
            Some(n) => out.push(n),
            None => {
                return Err(Error::corrupted(
                    dir.join(&name),
                    0,
                    "unexpected file in the WAL directory",
                ));
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Replay every record from segment `first_segment` (which must begin at LSN
/// `first_lsn`) whose commit timestamp is above `after_ts`, calling `apply` in order.
/// Cuts a torn tail off the last written segment and removes the empty segments after
/// it; reports any other damage as `Corrupted`.
///
/// `lenient` is for a WAL written without a sync per group (`Options::sync_commits`
/// off): any group may then be lost or torn in a crash, so damage cannot be told from
/// a torn tail. The first record (or segment) that does not read cleanly ends the
/// log; it and everything after it are cut off durably, so that nothing behind the
/// cut can come back later. The caller supplies the lost commits again.
pub(crate) fn recover(
    disk: &DynDisk,
    dir: &Path,
    first_segment: u64,
    first_lsn: u64,
    after_ts: Ts,
    lenient: bool,
    mut apply: impl FnMut(Ts, Vec<Write>) -> Result<()>,
) -> Result<Recovered> {
    let mut numbers: Vec<u64> = list_segments(disk, dir)?
        .into_iter()
        .filter(|&n| n >= first_segment)
        .collect();
    // In lenient mode a gap ends the log: the segments after it are cut off.
    let contiguous = numbers
        .iter()
        .enumerate()
        .take_while(|&(i, &n)| n == first_segment + i as u64)
        .count();
    if lenient && contiguous < numbers.len() {
        remove_segments(disk, dir, &numbers[contiguous..])?;
        numbers.truncate(contiguous);
    }
    if numbers.first().is_some_and(|&n| n != first_segment) {
        return Err(Error::corrupted(
            dir.join(segment_name(first_segment)),
            0,
            "WAL segment missing",
        ));
    }
    for w in numbers.windows(2) {
        if w[1] != w[0] + 1 {
            return Err(Error::corrupted(
                dir.join(segment_name(w[0] + 1)),
                0,
                "WAL segment missing",
            ));
        }
    }
    let mut files = Vec::with_capacity(numbers.len());
    let mut images = Vec::with_capacity(numbers.len());
    for &n in &numbers {
        let path = dir.join(segment_name(n));
        let file = disk.open(&path).map_err(|e| Error::io("wal open", e))?;
        images.push(read_all(&file).map_err(|e| Error::io("wal read", e))?);
        files.push((path, file));
    }
    let mut out = Recovered {
        next_segment: numbers.last().map_or(first_segment, |n| n + 1),
        next_lsn: first_lsn,
        last_ts: after_ts,
        records: 0,
        truncated_tail: false,
    };
    for i in 0..numbers.len() {
        let (path, file) = &files[i];
        let b = &images[i];
        let later_written = images[i + 1..].iter().any(|img| has_records(img));
        let header_blank = b.len() < SEG_HEADER || b[..SEG_HEADER].iter().all(|&x| x == 0);
        if header_blank
            || (!has_records(b) && !later_written && u64_at(b, SEG_FIRST_LSN) != out.next_lsn)
        {
            // The header is written before any record and made durable by the first
            // successful sync of the segment, so a blank header proves no record here
            // was ever acknowledged: the segment is a torn tail, unless a later segment
            // (written only after this one synced) holds records.
            if later_written && !lenient {
                return Err(Error::corrupted(
                    path,
                    0,
                    "WAL segment header lost before written records",
                ));
            }
            out.truncated_tail |= has_records(b) || later_written;
            remove_segments(disk, dir, &numbers[i..])?;
            out.next_segment = numbers[i];
            return Ok(out);
        }
        match check_segment_header(b, numbers[i], out.next_lsn, path) {
            Ok(()) => {}
            Err(Error::Corrupted { .. }) if lenient => {
                // A damaged header ends the log here.
                out.truncated_tail = true;
                remove_segments(disk, dir, &numbers[i..])?;
                out.next_segment = numbers[i];
                return Ok(out);
            }
            Err(e) => return Err(e),
        }
        let mut pos = SEG_HEADER;
        let mut cut = false;
        loop {
            match parse_at(b, pos) {
                Parsed::Valid {
                    len,
                    lsn,
                    offset,
                    base,
                    payload,
                } if lsn == out.next_lsn && offset == pos as u64 && base <= offset => {
                    let Some((ts, writes)) = decode_payload(&payload) else {
                        if lenient {
                            cut = true;
                            break;
                        }
                        return Err(Error::corrupted(path, pos as u64, "malformed WAL payload"));
                    };
                    if ts <= out.last_ts && ts > after_ts {
                        if lenient {
                            cut = true;
                            break;
                        }
                        return Err(Error::corrupted(
                            path,
                            pos as u64,
                            "WAL timestamps out of order",
                        ));
                    }
                    if ts > after_ts {
                        apply(ts, writes)?;
                        out.last_ts = ts;
                    }
                    out.records += 1;
                    out.next_lsn += 1;
                    pos += len;
                }
                Parsed::Valid { .. } if lenient => {
                    cut = true;
                    break;
                }
                Parsed::Valid { .. } => {
                    return Err(Error::corrupted(
                        path,
                        pos as u64,
                        "WAL record out of sequence or misplaced",
                    ));
                }
                _ => break,
            }
        }
        let end = if cut {
            EndKind::Torn
        } else {
            match classify_end(b, pos, later_written, path) {
                Ok(end) => end,
                Err(Error::Corrupted { .. }) if lenient => EndKind::Torn,
                Err(e) => return Err(e),
            }
        };
        if later_written && end == EndKind::Clean {
            continue;
        }
        if end == EndKind::Torn || later_written {
            out.truncated_tail = true;
        }
        // Cut the preallocated or torn rest so that this segment reads cleanly once
        // newer segments follow it, and drop the segments created after it.
        if (b.len() as u64) > pos as u64 {
            file.set_len(pos as u64)
                .map_err(|e| Error::io("wal truncate", e))?;
            file.sync_data()
                .map_err(|e| Error::io("wal truncate sync", e))?;
        }
        remove_segments(disk, dir, &numbers[i + 1..])?;
        out.next_segment = numbers[i] + 1;
        return Ok(out);
    }
    Ok(out)
}

fn check_segment_header(b: &[u8], number: u64, expect_lsn: u64, path: &Path) -> Result<()> {
    if b[SEG_MAGIC..SEG_MAGIC + 8] != WAL_MAGIC {
        return Err(Error::corrupted(path, 0, "not a WAL segment"));
    }
    let version = u32_at(b, SEG_VERSION);
    if crc32fast::hash(&b[..SEG_VERSION_CHECK]) != u32_at(b, SEG_VERSION_CHECK) {
        return Err(Error::corrupted(
            path,
            SEG_VERSION as u64,
            "WAL segment version stamp damaged",
        ));
    }
    if version > WAL_VERSION {
        return Err(Error::UnsupportedVersion {
            file: path.to_path_buf(),
            found: version,
            supported: WAL_VERSION,
        });
    }
    if crc32fast::hash(&b[..SEG_CRC]) != u32_at(b, SEG_CRC) || version != WAL_VERSION {
        return Err(Error::corrupted(
            path,
            0,
            "WAL segment header checksum mismatch",
        ));
    }
    if u64_at(b, SEG_NUMBER) != number {
        return Err(Error::corrupted(
            path,
            SEG_NUMBER as u64,
            "WAL segment number does not match its name",
        ));
    }
    if u64_at(b, SEG_FIRST_LSN) != expect_lsn {
        return Err(Error::corrupted(
            path,
            SEG_FIRST_LSN as u64,
            format!(
                "WAL segment starts at LSN {} but {expect_lsn} is next",
                u64_at(b, SEG_FIRST_LSN)
            ),
        ));
    }
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
enum EndKind {
    Clean,
    Torn,
}

/// Decide whether the records of a segment may end at `pos`.
fn classify_end(b: &[u8], pos: usize, later_written: bool, path: &Path) -> Result<EndKind> {
    let damaged = |why: &str| Err(Error::corrupted(path, pos as u64, why.to_string()));
    let kind = match parse_at(b, pos) {
        Parsed::Eof | Parsed::Blank => EndKind::Clean,
        Parsed::BadLength => return damaged("damaged WAL record length"),
        Parsed::BadRecord { len } if !later_written && has_lost_piece(b, pos, len) => EndKind::Torn,
        Parsed::BadRecord { .. } => {
            return damaged("WAL record checksum mismatch before the end of the log");
        }
        Parsed::Valid { .. } => return damaged("WAL record out of sequence or misplaced"),
    };
    // Look for surviving records beyond the end: they may only be the rest of the one
    // torn group, written at the place they name.
    let mut q = pos + 8;
    while q + 8 <= b.len() {
        if let Parsed::Valid { offset, base, .. } = parse_at(b, q)
            && (later_written || offset != q as u64 || base > pos as u64)
        {
            return Err(Error::corrupted(
                path,
                pos as u64,
                "WAL damaged before later records",
            ));
        }
        // A later group's first record, even torn (its checksum fails), still shows
        // where that group began: a record header at `q` naming itself as both its
        // own offset and its group's start. A group is written only after every
        // earlier one was synced, so the bytes before it were acknowledged: a blank
        // or torn record at `pos` is a lost (misdirected) group, not a torn tail.
        if q + REC_HEADER <= b.len() && group_starts_at(b, q) {
            return Err(Error::corrupted(
                path,
                pos as u64,
                "WAL group lost before a later group",
            ));
        }
        q += 8;
    }
    Ok(kind)
}

/// Remove the empty segments at the end of the log, newest first, each removal made
/// durable before the next: a crash in between leaves a shorter run of segments, never
/// a gap (which recovery would rightly call a missing segment).
fn remove_segments(disk: &DynDisk, dir: &Path, numbers: &[u64]) -> Result<()> {
    for &n in numbers.iter().rev() {
        disk.remove(&dir.join(segment_name(n)))
            .map_err(|e| Error::io("wal remove", e))?;
        disk.sync_dir(dir)
            .map_err(|e| Error::io("wal dir sync", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_records_lists_a_segment_up_to_the_first_gap() {
        let mut image = segment_header(1, 10).to_vec();
        for (i, ts) in [5u64, 9].into_iter().enumerate() {
            let at = image.len() as u64;
            let mut rec = encode_record(
                10 + i as u64,
                at,
                &encode_payload(ts, &[(b"k".to_vec(), None)]),
            );
            seal_record(&mut rec, at);
            image.extend_from_slice(&rec);
        }
        image.extend_from_slice(&[0u8; 64]);
        let found = scan_records(&image);
        assert_eq!(
            found
                .iter()
                .map(|r| (r.lsn, r.commit_ts))
                .collect::<Vec<_>>(),
            vec![(10, 5), (11, 9)]
        );
        assert_eq!(found[1].offset, found[0].offset + found[0].len);
    }

    #[test]
    fn payload_round_trips() {
        let writes = vec![
            (b"k".to_vec(), Some(b"v".to_vec())),
            (b"gone".to_vec(), None),
        ];
        let p = encode_payload(42, &writes);
        assert_eq!(decode_payload(&p), Some((42, writes)));
        assert_eq!(decode_payload(&p[..p.len() - 1]), None);
    }

    #[test]
    fn sealed_record_parses_and_pieces_are_never_zero() {
        let payload = encode_payload(7, &[(vec![0; 100], Some(vec![0; 1500]))]);
        let mut rec = encode_record(3, 64, &payload);
        seal_record(&mut rec, 64);
        let mut image = vec![0u8; 64];
        image.extend_from_slice(&rec);
        assert!(matches!(
            parse_at(&image, 64),
            Parsed::Valid {
                lsn: 3,
                offset: 64,
                base: 64,
                ..
            }
        ));
        assert!(
            !has_lost_piece(&image, 64, rec.len()),
            "a whole record of zero values has no zero piece"
        );
        image[64 + 600] ^= 1;
        assert!(matches!(parse_at(&image, 64), Parsed::BadRecord { .. }));
    }
}
