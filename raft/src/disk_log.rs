//! `DiskLog`: the durable Raft log and hard state over the `io` [`Disk`] trait.
//!
//! It implements [`Storage`] (the core's read-only view) and offers the write side the
//! node drives from `Ready`: [`DiskLog::append`], [`DiskLog::set_hard_state`] (or both
//! at once with [`DiskLog::persist`]), snapshots and compaction. Every write method
//! returns only once what it wrote is durable, so the caller may then release the
//! messages that depend on it.
//!
//! # Files, in the log's directory
//!
//! `meta`: two 4096-byte slots (at offsets 0 and 4096) written alternately, each:
//!
//! ```text
//! offset size field
//!      0    8 magic "RYURMETA"
//!      8    4 format version (1)
//!     12    4 payload length P (<= SLOT_PAYLOAD_MAX)
//!     16    8 sequence number (the newer valid slot wins)
//!     24    P payload: hard state, snapshot meta, applied conf state (see `encode_meta`)
//!   24+P    4 crc32 of bytes 0 .. 24+P
//! ```
//!
//! The newest valid slot (highest sequence number) wins. Every update that changes
//! anything but the commit index (term, vote, snapshot, membership, segment floor)
//! is written to BOTH slots, one after the other with a sync after each; an update
//! of the commit index alone is written to one slot, the older one. So the two slots
//! always agree on everything except the commit index, and:
//!
//! - a torn slot write (a crash while writing it) leaves the other slot, which holds
//!   either the previous state (the update was never acknowledged) or, when the tear
//!   hit the second copy, the new state itself;
//! - bit rot in one slot at rest loses at most the newest commit index, which is a
//!   lower bound anyway (the commit index need not be durable for Raft's safety; the
//!   node raises it again from the engine's applied index). Term and vote never roll
//!   back: a node cannot vote twice in a term because one sector rotted.
//!
//! Both slots damaged is reported as `Corrupted`, never guessed around. Files written
//! with alternating slots by earlier builds read the same way and are rewritten to
//! both slots when opened.
//!
//! `log-<seq:020>`: append-only segments, ordered by sequence number. Sector 0 is the
//! segment header; then sector-aligned batches, one per `append` call:
//!
//! ```text
//! segment header (512 bytes)          batch (starts on a 512-byte boundary)
//! offset size field                   offset size field
//!      0    8 magic "RYURLOG\0"            0    4 magic "RBAT"
//!      8    4 format version (1)           4    4 crc32 of bytes 8 .. 32+L
//!     12    4 reserved (0)                 8    8 index of the batch's first entry
//!     16    8 segment sequence number     16    4 entry count N
//!     24    4 crc32 of bytes 0..24        20    4 payload length L
//!     28  484 zero                        24    8 reserved (0)
//!                                         32    L N entries: term u64, kind u8,
//!                                                 data length u32, data
//!                                       32+L      zero padding to the next sector
//! ```
//!
//! A batch whose first index is at or below the log's last index replaces the suffix
//! from that index: a conflicting suffix is truncated durably exactly when the batch
//! that replaces it is durable, and segment files are never rewritten in place.
//!
//! # Recovery
//!
//! Batches are replayed in order. The first batch that fails its checksum ends the log
//! if nothing valid follows it (a torn tail: the crash hit the last, unsynced batch,
//! and the segment is cut back to before it). If a valid batch follows anywhere later,
//! the damage is before the tail and `open` fails with `Corrupted { file, offset }`:
//! entries that were durable are never skipped. A recovered log that ends below the
//! persisted commit index is also reported as corrupted. What a checksum cannot tell
//! apart is a torn final batch from a bit flip in the final batch: both lose only
//! entries after the last durable commit index.
//!
//! Entries since the last snapshot are also held in memory (as etcd's `MemoryStorage`
//! does), so reads never touch the disk; compaction bounds that memory.

use crate::{
    ConfState, Entry, EntryKind, HardState, Index, InitialState, NodeId, SnapshotMeta, Storage,
    StorageError, Term,
};
use ryu_io::{DynDisk, DynFile, IoError};
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

/// Disk sector: batches start on sector boundaries so a torn batch never damages a
/// neighbour.
const SECTOR: u64 = 512;
const FORMAT_VERSION: u32 = 1;

const META_FILE: &str = "meta";
const META_MAGIC: &[u8; 8] = b"RYURMETA";
const SLOT_SIZE: u64 = 4096;
const SLOT_HEADER: usize = 24;
const SLOT_PAYLOAD_MAX: usize = SLOT_SIZE as usize - SLOT_HEADER - 4;

const SEGMENT_MAGIC: &[u8; 8] = b"RYURLOG\0";
const SEGMENT_HEADER: u64 = SECTOR;
const BATCH_MAGIC: &[u8; 4] = b"RBAT";
const BATCH_HEADER: usize = 32;

const _: () = assert!(SLOT_HEADER == 8 + 4 + 4 + 8);
const _: () = assert!(BATCH_HEADER == 4 + 4 + 8 + 4 + 4 + 8);
const _: () = assert!(SEGMENT_HEADER.is_multiple_of(SECTOR));

/// Options for a [`DiskLog`].
#[derive(Debug, Clone, Copy)]
pub struct DiskLogOptions {
    /// Start a new segment once the current one is at least this big.
    pub segment_size_bytes: u64,
}

impl Default for DiskLogOptions {
    fn default() -> Self {
        DiskLogOptions {
            segment_size_bytes: 8 << 20,
        }
    }
}

/// What can go wrong in the durable log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogError {
    /// The device failed. After a failed sync the log is poisoned.
    Io(IoError),
    /// Bytes on disk are damaged in a way recovery must not paper over.
    Corrupted {
        file: PathBuf,
        offset: u64,
        what: String,
    },
    /// An earlier sync failed; the log refuses writes until it is reopened.
    Poisoned,
    /// The directory holds a log written by a newer format version.
    UnsupportedVersion { file: PathBuf, version: u32 },
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogError::Io(e) => write!(f, "raft log I/O: {e}"),
            LogError::Corrupted { file, offset, what } => {
                write!(
                    f,
                    "raft log corrupted: {} at offset {offset}: {what}",
                    file.display()
                )
            }
            LogError::Poisoned => {
                write!(f, "raft log poisoned by an earlier failed sync; reopen it")
            }
            LogError::UnsupportedVersion { file, version } => write!(
                f,
                "{} has format version {version}; this build reads up to {FORMAT_VERSION}",
                file.display()
            ),
        }
    }
}

impl std::error::Error for LogError {}

impl From<IoError> for LogError {
    fn from(e: IoError) -> LogError {
        LogError::Io(e)
    }
}

/// The durable state kept in `meta`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Meta {
    hard_state: HardState,
    snapshot: SnapshotMeta,
    conf_state: ConfState,
    /// Segments with a lower sequence number hold nothing live (a snapshot replaced
    /// the whole log); recovery deletes them instead of replaying them.
    segment_floor: u64,
}

#[derive(Debug)]
struct Segment {
    seq: u64,
    file: DynFile,
    /// End of the last valid batch: where the next batch goes.
    len: u64,
    /// Highest entry index written into this segment (0 if none).
    max_index: Index,
}

/// The durable Raft log. See the module documentation for formats and recovery.
#[derive(Debug)]
pub struct DiskLog {
    disk: DynDisk,
    dir: PathBuf,
    options: DiskLogOptions,
    meta: Meta,
    meta_file: DynFile,
    meta_seq: u64,
    /// What both slots agree on (everything but the commit index), as last written;
    /// `None` until both slots are known to hold it.
    meta_both: Option<Meta>,
    segments: Vec<Segment>,
    /// Sequence number of the next segment to create.
    next_segment_seq: u64,
    /// Entries after the snapshot, in index order: `entries[0].index == snapshot.index + 1`.
    entries: Vec<Entry>,
    poisoned: bool,
}

fn io_at(file: &Path, offset: u64, what: impl Into<String>) -> LogError {
    LogError::Corrupted {
        file: file.to_path_buf(),
        offset,
        what: what.into(),
    }
}

fn align_up(x: u64) -> u64 {
    x.div_ceil(SECTOR) * SECTOR
}

fn segment_name(seq: u64) -> String {
    format!("log-{seq:020}")
}

// ---- meta encoding -------------------------------------------------------------

fn put_ids(out: &mut Vec<u8>, ids: &BTreeSet<NodeId>) {
    out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
    for id in ids {
        out.extend_from_slice(&id.0.to_le_bytes());
    }
}

fn put_conf(out: &mut Vec<u8>, cs: &ConfState) {
    put_ids(out, &cs.voters);
    put_ids(out, &cs.learners);
    put_ids(out, &cs.voters_outgoing);
    put_ids(out, &cs.learners_next);
    out.push(u8::from(cs.auto_leave));
}

/// Payload layout: hard state (term u64, vote u64 with 0 = none, commit u64), snapshot
/// (index u64, term u64, conf state), applied conf state, segment floor u64. A conf
/// state is four id sets (count u32 then ids u64: voters, learners, voters_outgoing,
/// learners_next) and auto_leave u8.
fn encode_meta(meta: &Meta) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&meta.hard_state.term.to_le_bytes());
    out.extend_from_slice(&meta.hard_state.vote.map_or(0, |v| v.0).to_le_bytes());
    out.extend_from_slice(&meta.hard_state.commit.to_le_bytes());
    out.extend_from_slice(&meta.snapshot.index.to_le_bytes());
    out.extend_from_slice(&meta.snapshot.term.to_le_bytes());
    put_conf(&mut out, &meta.snapshot.conf_state);
    put_conf(&mut out, &meta.conf_state);
    out.extend_from_slice(&meta.segment_floor.to_le_bytes());
    out
}

/// A cursor over bytes that fails (instead of panicking) when they run out.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let out = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(out)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
    fn ids(&mut self) -> Option<BTreeSet<NodeId>> {
        let n = self.u32()?;
        (0..n).map(|_| self.u64().map(NodeId)).collect()
    }
    fn conf(&mut self) -> Option<ConfState> {
        Some(ConfState {
            voters: self.ids()?,
            learners: self.ids()?,
            voters_outgoing: self.ids()?,
            learners_next: self.ids()?,
            auto_leave: match self.u8()? {
                0 => false,
                1 => true,
                _ => return None,
            },
        })
    }
}

fn decode_meta(payload: &[u8]) -> Option<Meta> {
    let mut r = Reader {
        bytes: payload,
        at: 0,
    };
    let term = r.u64()?;
    let vote = r.u64()?;
    let commit = r.u64()?;
    let snapshot = SnapshotMeta {
        index: r.u64()?,
        term: r.u64()?,
        conf_state: r.conf()?,
    };
    let conf_state = r.conf()?;
    let segment_floor = r.u64()?;
    if r.at != payload.len() {
        return None;
    }
    let vote = (vote != 0).then_some(NodeId(vote));
    Some(Meta {
        hard_state: HardState { term, vote, commit },
        snapshot,
        conf_state,
        segment_floor,
    })
}

fn kind_byte(kind: EntryKind) -> u8 {
    match kind {
        EntryKind::Normal => 0,
        EntryKind::ConfChange => 1,
        EntryKind::Noop => 2,
    }
}

fn byte_kind(b: u8) -> Option<EntryKind> {
    match b {
        0 => Some(EntryKind::Normal),
        1 => Some(EntryKind::ConfChange),
        2 => Some(EntryKind::Noop),
        _ => None,
    }
}

/// Encode entries (contiguous, ascending) as one sector-padded batch.
fn encode_batch(entries: &[Entry]) -> Vec<u8> {
    let first = entries
        .first()
        .expect("a batch holds at least one entry")
        .index;
    let mut out = vec![0u8; BATCH_HEADER];
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(
            e.index,
            first + i as u64,
            "batch entries must be contiguous"
        );
        out.extend_from_slice(&e.term.to_le_bytes());
        out.push(kind_byte(e.kind));
        out.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
        out.extend_from_slice(&e.data);
    }
    let payload_len = (out.len() - BATCH_HEADER) as u32;
    out[0..4].copy_from_slice(BATCH_MAGIC);
    out[8..16].copy_from_slice(&first.to_le_bytes());
    out[16..20].copy_from_slice(&(entries.len() as u32).to_le_bytes());
    out[20..24].copy_from_slice(&payload_len.to_le_bytes());
    let crc = crc32fast::hash(&out[8..]);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out.resize(align_up(out.len() as u64) as usize, 0);
    out
}

/// A batch as read back. `None` means "not a valid batch here".
fn decode_batch(bytes: &[u8]) -> Option<(Vec<Entry>, u64)> {
    let mut r = Reader { bytes, at: 0 };
    if r.take(4)? != BATCH_MAGIC {
        return None;
    }
    let crc = r.u32()?;
    let first = r.u64()?;
    let count = r.u32()?;
    let payload_len = r.u32()? as usize;
    let end = BATCH_HEADER.checked_add(payload_len)?;
    if crc32fast::hash(bytes.get(8..end)?) != crc || count == 0 {
        return None;
    }
    let mut p = Reader {
        bytes: &bytes[BATCH_HEADER..end],
        at: 0,
    };
    let mut entries = Vec::with_capacity(count as usize);
    for i in 0..u64::from(count) {
        let term = p.u64()?;
        let kind = byte_kind(p.u8()?)?;
        let len = p.u32()? as usize;
        let data = p.take(len)?.to_vec();
        entries.push(Entry {
            term,
            index: first.checked_add(i)?,
            kind,
            data,
        });
    }
    if p.at != payload_len {
        return None;
    }
    Some((entries, align_up(end as u64)))
}

impl DiskLog {
    /// Open the log in `dir`, creating it (with membership `initial`) if the directory
    /// holds no log yet. `initial` is ignored when a log exists.
    pub fn open(
        disk: DynDisk,
        dir: &Path,
        initial: ConfState,
        options: DiskLogOptions,
    ) -> Result<DiskLog, LogError> {
        let meta_path = dir.join(META_FILE);
        if !disk.exists(&meta_path)? {
            // A new log: its directory entries must be durable before anything in it is.
            disk.create_dir_all(dir)?;
            for ancestor in dir.ancestors().skip(1) {
                disk.sync_dir(ancestor)?;
            }
        }
        let existing = match disk.open(&meta_path) {
            Ok(file) => match read_meta(&file, &meta_path) {
                Ok(found) => Some((file, found)),
                // No slot ever became durable and no segment exists: creating the log
                // never finished, so nothing was acknowledged. Start again.
                Err(LogError::Corrupted { .. }) if !has_segments(&*disk, dir)? => {
                    disk.remove(&meta_path)?;
                    None
                }
                Err(e) => return Err(e),
            },
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e.into()),
        };
        let (meta_file, meta, meta_seq, fresh) = match existing {
            Some((file, (meta, seq))) => (file, meta, seq, false),
            None => {
                let file = disk.create(&meta_path)?;
                let meta = Meta {
                    snapshot: SnapshotMeta {
                        conf_state: initial.clone(),
                        ..SnapshotMeta::default()
                    },
                    conf_state: initial,
                    ..Meta::default()
                };
                (file, meta, 0, true)
            }
        };
        let mut log = DiskLog {
            disk,
            dir: dir.to_path_buf(),
            options,
            meta,
            meta_file,
            meta_seq,
            meta_both: None,
            segments: Vec::new(),
            next_segment_seq: 1,
            entries: Vec::new(),
            poisoned: false,
        };
        // Fresh or not, (re)write the meta before recovery acts on it: recovery
        // deletes segments below its floor, and a meta read back from the page cache
        // after a failed sync may not be durable (see `reseal`).
        log.write_meta()?;
        if fresh {
            log.disk.sync_dir(dir)?;
        }
        log.recover_segments()?;
        if !fresh {
            log.reseal()?;
        }
        let last = log.last_index_inner();
        if last < log.meta.hard_state.commit {
            return Err(io_at(
                &log.dir,
                0,
                format!(
                    "log ends at {last} below the durable commit index {}",
                    log.meta.hard_state.commit
                ),
            ));
        }
        Ok(log)
    }

    fn recover_segments(&mut self) -> Result<(), LogError> {
        let mut seqs = Vec::new();
        for name in self.disk.list(&self.dir)? {
            if let Some(seq) = name.strip_prefix("log-") {
                let seq = seq
                    .parse::<u64>()
                    .map_err(|_| io_at(&self.dir.join(&name), 0, "unexpected file name"))?;
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();
        let floor = self.meta.segment_floor;
        for &seq in seqs.iter().filter(|&&s| s < floor) {
            // Left behind by a crash during `install_snapshot`.
            self.disk.remove(&self.dir.join(segment_name(seq)))?;
        }
        seqs.retain(|&s| s >= floor);
        self.next_segment_seq = seqs.last().map_or(floor.max(1), |s| s + 1);
        let count = seqs.len();
        for (i, seq) in seqs.into_iter().enumerate() {
            let is_last = i + 1 == count;
            let segment = self.recover_segment(seq, is_last)?;
            self.segments.push(segment);
        }
        Ok(())
    }

    fn recover_segment(&mut self, seq: u64, is_last: bool) -> Result<Segment, LogError> {
        let path = self.dir.join(segment_name(seq));
        let file = self.disk.open(&path)?;
        let file_len = file.len()?;
        if file_len < SEGMENT_HEADER {
            // Created but its header never became durable: only possible for the last
            // segment, before anything was written into it.
            if !is_last {
                return Err(io_at(&path, 0, "segment shorter than its header"));
            }
            let mut seg = Segment {
                seq,
                file,
                len: 0,
                max_index: 0,
            };
            file_truncate_and_header(self, &mut seg)?;
            return Ok(seg);
        }
        let mut image = vec![0u8; file_len as usize];
        file.read_at(0, &mut image)?;
        if !check_segment_header(&image, seq, &path, is_last)? {
            let mut seg = Segment {
                seq,
                file,
                len: 0,
                max_index: 0,
            };
            file_truncate_and_header(self, &mut seg)?;
            return Ok(seg);
        }
        let mut at = SEGMENT_HEADER;
        let mut max_index = 0;
        while at < file_len {
            let Some((batch, size)) = decode_batch(&image[at as usize..]) else {
                if let Some(later) = find_valid_batch(&image, at + SECTOR) {
                    return Err(io_at(
                        &path,
                        at,
                        format!("damaged batch before a valid one at {later}"),
                    ));
                }
                if !is_last && image[at as usize..].iter().any(|&b| b != 0) {
                    return Err(io_at(
                        &path,
                        at,
                        "damaged batch at the end of a sealed segment",
                    ));
                }
                // A torn tail: cut it off so the next append starts clean.
                file.set_len(at)?;
                file.sync_data()?;
                break;
            };
            max_index = max_index.max(batch.last().expect("non-empty").index);
            self.replay_batch(batch, &path, at)?;
            at += size;
        }
        Ok(Segment {
            seq,
            file,
            len: at.min(file_len),
            max_index,
        })
    }

    /// Apply a recovered batch: it replaces the suffix from its first index.
    fn replay_batch(
        &mut self,
        batch: Vec<Entry>,
        path: &Path,
        offset: u64,
    ) -> Result<(), LogError> {
        let snap = self.meta.snapshot.index;
        let first = batch[0].index;
        let last = self.last_index_inner();
        if first > last + 1 {
            // A batch entirely below the snapshot is normal (compacted, not yet deleted).
            if batch.last().expect("non-empty").index <= snap {
                return Ok(());
            }
            return Err(io_at(
                path,
                offset,
                format!("gap: batch starts at {first} after {last}"),
            ));
        }
        let keep_from = first.max(snap + 1);
        self.entries.truncate((keep_from - snap - 1) as usize);
        self.entries
            .extend(batch.into_iter().filter(|e| e.index > snap));
        for pair in self.entries.windows(2) {
            if pair[1].term < pair[0].term {
                return Err(io_at(
                    path,
                    offset,
                    format!("term goes down at index {}", pair[1].index),
                ));
            }
        }
        Ok(())
    }

    fn check_writable(&self) -> Result<(), LogError> {
        if self.poisoned {
            Err(LogError::Poisoned)
        } else {
            Ok(())
        }
    }

    /// Run a sync; a failure poisons the log (fsync errors are not retryable).
    fn sync(&mut self, file: &DynFile) -> Result<(), LogError> {
        file.sync_data().map_err(|e| {
            self.poisoned = true;
            LogError::Io(e)
        })
    }

    fn write_meta(&mut self) -> Result<(), LogError> {
        let payload = encode_meta(&self.meta);
        assert!(
            payload.len() <= SLOT_PAYLOAD_MAX,
            "membership too large for a meta slot"
        );
        let seq = self.meta_seq + 1;
        let mut slot = Vec::with_capacity(SLOT_HEADER + payload.len() + 4);
        slot.extend_from_slice(META_MAGIC);
        slot.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        slot.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        slot.extend_from_slice(&seq.to_le_bytes());
        slot.extend_from_slice(&payload);
        let crc = crc32fast::hash(&slot);
        slot.extend_from_slice(&crc.to_le_bytes());
        let mut agreed = self.meta.clone();
        agreed.hard_state.commit = 0;
        let both = self.meta_both.as_ref() != Some(&agreed);
        // The older slot first: until it is durable the newer one still holds the
        // previous state whole.
        let first = seq % 2;
        let slots: &[u64] = if both { &[first, 1 - first] } else { &[first] };
        let file = self.meta_file.clone();
        for &slot_no in slots {
            file.write_at(slot_no * SLOT_SIZE, &slot)
                .inspect_err(|_| self.poisoned = true)?;
            self.sync(&file)?;
        }
        self.meta_seq = seq;
        self.meta_both = Some(agreed);
        Ok(())
    }

    fn write_segment_header(&mut self, seg: &mut Segment) -> Result<(), LogError> {
        let mut header = vec![0u8; SEGMENT_HEADER as usize];
        header[0..8].copy_from_slice(SEGMENT_MAGIC);
        header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        header[16..24].copy_from_slice(&seg.seq.to_le_bytes());
        let crc = crc32fast::hash(&header[0..24]);
        header[24..28].copy_from_slice(&crc.to_le_bytes());
        seg.file
            .write_at(0, &header)
            .inspect_err(|_| self.poisoned = true)?;
        seg.len = SEGMENT_HEADER;
        Ok(())
    }

    /// Make `entries` durable. They must start at or below `last_index() + 1` and above
    /// the snapshot; entries from their first index on replace what the log held.
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), LogError> {
        self.check_writable()?;
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let (snap, last) = (self.meta.snapshot.index, self.last_index_inner());
        assert!(
            first.index > snap,
            "append at {} is below the snapshot at {snap}",
            first.index
        );
        assert!(
            first.index <= last + 1,
            "append at {} leaves a gap after {last}",
            first.index
        );
        let batch = encode_batch(entries);
        let need_new = self
            .segments
            .last()
            .is_none_or(|s| s.len >= self.options.segment_size_bytes);
        if need_new {
            self.start_segment()?;
        }
        let seg = self.segments.last_mut().expect("a current segment");
        let (file, at) = (seg.file.clone(), seg.len);
        // A failed write leaves unknown bytes where the next batch would go: poison, so
        // that recovery (which cuts a torn tail) decides what is there.
        file.write_at(at, &batch)
            .inspect_err(|_| self.poisoned = true)?;
        self.sync(&file)?;
        if need_new {
            // The new segment's name must be durable too before anything depends on it.
            self.disk
                .sync_dir(&self.dir)
                .inspect_err(|_| self.poisoned = true)?;
        }
        let seg = self.segments.last_mut().expect("a current segment");
        seg.len = at + batch.len() as u64;
        seg.max_index = seg.max_index.max(entries.last().expect("non-empty").index);
        self.entries.truncate((first.index - snap - 1) as usize);
        self.entries.extend_from_slice(entries);
        debug_assert!(
            self.entries
                .windows(2)
                .all(|p| p[0].index + 1 == p[1].index)
        );
        Ok(())
    }

    fn start_segment(&mut self) -> Result<(), LogError> {
        let seq = self.next_segment_seq;
        self.next_segment_seq += 1;
        let path = self.dir.join(segment_name(seq));
        let file = self.disk.create(&path)?;
        let mut seg = Segment {
            seq,
            file,
            len: 0,
            max_index: 0,
        };
        self.write_segment_header(&mut seg)?;
        self.segments.push(seg);
        Ok(())
    }

    /// After a failed sync, the page cache may show bytes that never reached the media
    /// and that a later sync will not write (they are marked clean). A restarted process
    /// would read them as durable. So on open, rewrite the tail segment with what
    /// recovery read (the meta was rewritten first thing) and sync: from here on, what
    /// we read is durable.
    fn reseal(&mut self) -> Result<(), LogError> {
        if let Some(seg) = self.segments.last() {
            let file = seg.file.clone();
            let mut image = vec![0u8; seg.len as usize];
            file.read_at(0, &mut image)?;
            file.write_at(0, &image)
                .inspect_err(|_| self.poisoned = true)?;
            self.sync(&file)?;
        }
        // Recovery may have kept a segment whose creation was never made durable
        // (the append that would have synced the directory failed).
        self.disk
            .sync_dir(&self.dir)
            .inspect_err(|_| self.poisoned = true)?;
        Ok(())
    }

    /// Make the hard state durable (term and vote change atomically).
    pub fn set_hard_state(&mut self, hs: HardState) -> Result<(), LogError> {
        self.check_writable()?;
        assert!(hs.term >= self.meta.hard_state.term, "term went backwards");
        self.meta.hard_state = hs;
        self.write_meta()
    }

    /// Persist what a `Ready` asks for: entries first, then the hard state (whose commit
    /// index may refer to them).
    pub fn persist(&mut self, hs: Option<HardState>, entries: &[Entry]) -> Result<(), LogError> {
        self.append(entries)?;
        match hs {
            Some(hs) if hs != self.meta.hard_state => self.set_hard_state(hs),
            _ => Ok(()),
        }
    }

    /// Record the membership as of the applied index.
    pub fn set_conf_state(&mut self, cs: ConfState) -> Result<(), LogError> {
        self.check_writable()?;
        self.meta.conf_state = cs;
        self.write_meta()
    }

    /// Record that the state machine has a snapshot at `meta.index` (which must be in
    /// the log) and discard the entries it covers, deleting whole segments below it.
    pub fn compact(&mut self, snapshot: SnapshotMeta) -> Result<(), LogError> {
        self.check_writable()?;
        let old = self.meta.snapshot.index;
        if snapshot.index <= old {
            return Ok(());
        }
        assert!(
            snapshot.index <= self.last_index_inner(),
            "compacting beyond the log"
        );
        assert_eq!(
            self.term_inner(snapshot.index),
            Some(snapshot.term),
            "snapshot term mismatch"
        );
        self.meta.snapshot = snapshot;
        self.write_meta()?;
        self.entries
            .drain(..(self.meta.snapshot.index - old) as usize);
        self.delete_covered_segments()
    }

    /// Replace the whole log by a snapshot received from the leader (the application
    /// has installed its payload). Every segment is discarded: the meta's segment floor
    /// moves past them first, so a crash before their deletion cannot revive them.
    pub fn install_snapshot(&mut self, snapshot: SnapshotMeta) -> Result<(), LogError> {
        self.check_writable()?;
        self.meta.hard_state.commit = self.meta.hard_state.commit.max(snapshot.index);
        self.meta.conf_state = snapshot.conf_state.clone();
        self.meta.snapshot = snapshot;
        self.meta.segment_floor = self.next_segment_seq;
        self.write_meta()?;
        self.entries.clear();
        for seg in std::mem::take(&mut self.segments) {
            self.disk.remove(&self.dir.join(segment_name(seg.seq)))?;
        }
        self.disk
            .sync_dir(&self.dir)
            .inspect_err(|_| self.poisoned = true)?;
        Ok(())
    }

    fn delete_covered_segments(&mut self) -> Result<(), LogError> {
        let snap = self.meta.snapshot.index;
        // Only a prefix of segments, never the current one.
        while self.segments.len() > 1 && self.segments[0].max_index <= snap {
            let seg = self.segments.remove(0);
            self.disk.remove(&self.dir.join(segment_name(seg.seq)))?;
        }
        self.disk
            .sync_dir(&self.dir)
            .inspect_err(|_| self.poisoned = true)?;
        Ok(())
    }

    /// The durable hard state.
    pub fn hard_state(&self) -> HardState {
        self.meta.hard_state
    }

    /// All entries held (after the snapshot), for checkers.
    pub fn all_entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The number of segment files.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    fn last_index_inner(&self) -> Index {
        self.meta.snapshot.index + self.entries.len() as u64
    }

    fn term_inner(&self, index: Index) -> Option<Term> {
        let snap = &self.meta.snapshot;
        if index == snap.index {
            return Some(snap.term);
        }
        if index < snap.index {
            return None;
        }
        self.entries
            .get((index - snap.index - 1) as usize)
            .map(|e| e.term)
    }
}

fn has_segments(disk: &dyn ryu_io::Disk, dir: &Path) -> Result<bool, LogError> {
    Ok(disk.list(dir)?.iter().any(|n| n.starts_with("log-")))
}

fn read_meta(file: &DynFile, path: &Path) -> Result<(Meta, u64), LogError> {
    let len = file.len()?;
    let mut best: Option<(Meta, u64)> = None;
    for slot in 0..2u64 {
        let at = slot * SLOT_SIZE;
        if len < at + SLOT_HEADER as u64 + 4 {
            continue;
        }
        let n = (len - at).min(SLOT_SIZE) as usize;
        let mut buf = vec![0u8; n];
        file.read_at(at, &mut buf)?;
        if &buf[0..8] != META_MAGIC {
            continue;
        }
        let version = u32::from_le_bytes(buf[8..12].try_into().expect("4 bytes"));
        let payload_len = u32::from_le_bytes(buf[12..16].try_into().expect("4 bytes")) as usize;
        if payload_len > SLOT_PAYLOAD_MAX || SLOT_HEADER + payload_len + 4 > n {
            continue;
        }
        let body = &buf[..SLOT_HEADER + payload_len];
        let crc = u32::from_le_bytes(buf[body.len()..body.len() + 4].try_into().expect("4 bytes"));
        if crc != crc32fast::hash(body) {
            continue;
        }
        if version > FORMAT_VERSION {
            return Err(LogError::UnsupportedVersion {
                file: path.to_path_buf(),
                version,
            });
        }
        let seq = u64::from_le_bytes(buf[16..24].try_into().expect("8 bytes"));
        let meta = decode_meta(&buf[SLOT_HEADER..SLOT_HEADER + payload_len])
            .ok_or_else(|| io_at(path, at, "meta slot payload does not decode"))?;
        if best.as_ref().is_none_or(|(_, s)| seq > *s) {
            best = Some((meta, seq));
        }
    }
    best.ok_or_else(|| io_at(path, 0, "no valid meta slot"))
}

/// Check a segment's header. `Ok(false)`: the header never became durable, which is
/// only possible for the last segment, with nothing acknowledged in it; the caller
/// resets the segment.
fn check_segment_header(
    image: &[u8],
    seq: u64,
    path: &Path,
    is_last: bool,
) -> Result<bool, LogError> {
    let crc = u32::from_le_bytes(image[24..28].try_into().expect("4 bytes"));
    if &image[0..8] != SEGMENT_MAGIC || crc != crc32fast::hash(&image[0..24]) {
        // The header goes to disk with the segment's first batch, in one sync, and is
        // never rewritten with other bytes. So an invalid header on the last segment
        // means no sync of this segment ever succeeded: nothing in it was acknowledged.
        if is_last {
            return Ok(false);
        }
        return Err(io_at(path, 0, "bad segment header"));
    }
    let version = u32::from_le_bytes(image[8..12].try_into().expect("4 bytes"));
    if version > FORMAT_VERSION {
        return Err(LogError::UnsupportedVersion {
            file: path.to_path_buf(),
            version,
        });
    }
    let found = u64::from_le_bytes(image[16..24].try_into().expect("8 bytes"));
    if found != seq {
        return Err(io_at(
            path,
            16,
            format!("segment header says sequence {found}"),
        ));
    }
    Ok(true)
}

/// Reset an empty last segment to just a fresh header, durably.
fn file_truncate_and_header(log: &mut DiskLog, seg: &mut Segment) -> Result<(), LogError> {
    seg.file.set_len(0)?;
    log.write_segment_header(seg)?;
    let file = seg.file.clone();
    log.sync(&file)
}

/// The offset of the first valid batch at or after `from` (sector-aligned), if any.
fn find_valid_batch(image: &[u8], from: u64) -> Option<u64> {
    let mut at = align_up(from);
    while at < image.len() as u64 {
        if image[at as usize..].starts_with(BATCH_MAGIC)
            && decode_batch(&image[at as usize..]).is_some()
        {
            return Some(at);
        }
        at += SECTOR;
    }
    None
}

impl Storage for DiskLog {
    fn initial_state(&self) -> Result<InitialState, StorageError> {
        Ok(InitialState {
            hard_state: self.meta.hard_state,
            conf_state: self.meta.conf_state.clone(),
        })
    }

    fn entries(&self, lo: Index, hi: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        assert!(lo <= hi, "entries: lo {lo} > hi {hi}");
        let snap = self.meta.snapshot.index;
        if lo <= snap {
            return Err(StorageError::Compacted);
        }
        if hi > self.last_index_inner() + 1 {
            return Err(StorageError::Unavailable);
        }
        let mut out = self.entries[(lo - snap - 1) as usize..(hi - snap - 1) as usize].to_vec();
        crate::limit_size(&mut out, max_bytes);
        Ok(out)
    }

    fn term(&self, index: Index) -> Result<Term, StorageError> {
        if index < self.meta.snapshot.index {
            return Err(StorageError::Compacted);
        }
        self.term_inner(index).ok_or(StorageError::Unavailable)
    }

    fn first_index(&self) -> Result<Index, StorageError> {
        Ok(self.meta.snapshot.index + 1)
    }

    fn last_index(&self) -> Result<Index, StorageError> {
        Ok(self.last_index_inner())
    }

    fn snapshot_meta(&self) -> Result<SnapshotMeta, StorageError> {
        Ok(self.meta.snapshot.clone())
    }
}
