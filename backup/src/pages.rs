//! The pages files `pages/NNNNNN.pages`: the pages of one checkpoint generation of
//! the engine's `data` file, packed (free pages are not stored), in ascending page
//! order, split over files of at most [`BackupOptions::pages_file_bytes`] of entries.
//!
//! Why several files: a job reads each file back (from the page cache) and drops it
//! from the cache as soon as it is complete and synced, so a backup keeps about two
//! files in the page cache (the one filling and the one being read back) instead of all
//! of them, and no write of the job lands in a file after that file was read back (a
//! damaged write caught later would otherwise go unseen).
//!
//! # Layout of one file (format version 3)
//!
//! | offset | size | field |
//! |--------|------|-------|
//! | 0      | 8    | magic `RYUBKPG\0` |
//! | 8      | 4    | format version (u32 LE), [`PAGES_VERSION`] |
//! | 12     | 4    | page size in bytes (u32 LE) |
//! | 16     | 8    | generation of the pinned tree |
//! | 24     | 8    | page count of the data file a restore makes |
//! | 32     | 8    | entry count `n` of this file |
//! | 40     | 4    | this file's index `i` (u32 LE): its name is `pages/{i:06}.pages` |
//! | 44     | 4    | count of pages files in the backup (u32 LE, at least 1) |
//! | 48     | 4    | crc32 of bytes `[0, 48)` |
//! | 52     | 12   | zero |
//! | 64     | ..   | `n` entries, ascending by page number, back to back |
//!
//! Entry:
//!
//! | offset | size | field |
//! |--------|------|-------|
//! | 0      | 8    | page number (u64 LE) |
//! | 8      | 2    | stored length `s` (u16 LE), at most the page size |
//! | 10     | `s`  | the page image's first `s` bytes; its other bytes are zero |
//!
//! The job stores each page without its run of zero bytes at the end ([`stored_len`]):
//! the engine builds every page in a zeroed buffer, so the free space after a page's
//! last entry is zero and need not be copied (a superblock page at most 92 bytes, a leaf
//! holding one 3000-byte value about 3050 of its 4096). Only bytes that are zero are
//! left out, so this holds whatever a page holds: a page without zeros at its end is
//! stored whole. A reader puts the zeros back
//! before it checks or writes a page, so the page checks (its crc32 covers the whole
//! page) and a restored `data` file see exactly the source's page. A damaged length
//! cannot pass for another page: the page's crc32 and number would have to match as
//! well, and the entries after it would no longer parse.
//!
//! Page numbers ascend across the files in index order. Exactly one entry of all files
//! is a superblock (page 0 or 1: the pinned generation's slot, so always in file 0);
//! the others are tree pages, each carrying its own crc32, number and generation (see
//! `ryu_engine::page`). A file's header is written after its entries, then the file is
//! synced: a copy cut off before its header has no valid header. One cut off between
//! the two may have a header over entries that never reached the disk; the entries
//! then end early or do not parse, or the manifest's checksum disagrees with the
//! bytes, and in any case nothing is published before every file is synced.
//!
//! Format 2 (the same header, entries of a page number and the whole page image,
//! [`PAGE_SIZE`] bytes) is still read, so backups taken before format 3 verify and
//! restore. Format 1 (one `data.pages` file, without index and count) went with
//! manifest version 1, which this build refuses ([`Error::UnsupportedVersion`]); a
//! header of any other version is refused the same way.
//!
//! [`BackupOptions::pages_file_bytes`]: crate::BackupOptions::pages_file_bytes

use crate::error::{Error, Result};
use ryu_engine::PAGE_SIZE;
use ryu_engine::page::{FIRST_TREE_PAGE, SUPER_LEN, SuperSlot, Superblock, is_tree_page};
use ryu_io::DynDisk;
use std::path::Path;

/// The directory of the pages files inside a backup directory.
pub const PAGES_DIR: &str = "pages";
/// Format version of the pages files this build writes.
pub const PAGES_VERSION: u32 = 3;
/// The oldest format version this build still reads (whole page images).
pub const PAGES_VERSION_WHOLE: u32 = 2;
/// Bytes of entries per pages file unless a job is told otherwise (64 MiB: small
/// enough that the copy's memory stays bounded, large enough that the sync each file
/// costs is noise).
pub const DEFAULT_PAGES_FILE_BYTES: u64 = 64 << 20;

/// The path, inside a backup directory, of pages file `index`.
pub fn pages_file(index: u32) -> String {
    format!("{PAGES_DIR}/{index:06}.pages")
}

/// Entries per file for a limit of `bytes` (at least one): as many as fit were no page
/// shorter stored, so a file never holds more than `bytes` of entries. (The count of
/// files goes into every header, so it is fixed before the first page is read.)
pub(crate) fn entries_per_file(bytes: u64) -> u64 {
    (bytes / MAX_ENTRY_BYTES as u64).max(1)
}

/// How many files `entries` entries take at `per_file` entries each (at least one).
pub(crate) fn file_count(entries: u64, per_file: u64) -> u64 {
    entries.div_ceil(per_file).max(1)
}
const MAGIC: [u8; 8] = *b"RYUBKPG\0";
const H_MAGIC: usize = 0;
const H_VERSION: usize = H_MAGIC + 8;
const H_PAGE_SIZE: usize = H_VERSION + 4;
const H_GENERATION: usize = H_PAGE_SIZE + 4;
const H_PAGE_COUNT: usize = H_GENERATION + 8;
const H_ENTRIES: usize = H_PAGE_COUNT + 8;
const H_INDEX: usize = H_ENTRIES + 8;
const H_COUNT: usize = H_INDEX + 4;
const H_CRC: usize = H_COUNT + 4;
/// Bytes before the first entry.
pub const PAGES_HEADER: usize = 64;
const _: () = assert!(H_CRC + 4 <= PAGES_HEADER);
/// Bytes of an entry before its page bytes: the page number and the stored length.
pub const ENTRY_HEAD: usize = 10;
/// Bytes of the longest entry (a page stored whole).
pub const MAX_ENTRY_BYTES: usize = ENTRY_HEAD + PAGE_SIZE;
const _: () = assert!(PAGE_SIZE <= u16::MAX as usize);
/// Bytes of one entry as the checks and a restore see it, whatever the file's format:
/// the page number (u64 LE), then the whole page image with its zeros put back (a
/// format 2 entry as stored).
pub const ENTRY_BYTES: usize = 8 + PAGE_SIZE;

/// How many leading bytes of `page` a format 3 entry stores: up to its last non-zero
/// byte (0 for a page of zeros).
pub fn stored_len(page: &[u8]) -> usize {
    // Eight bytes at a time from the end: a leaf's free space is often a quarter of
    // the page, and a byte loop over it would cost the copy a tenth of its speed.
    let words = page.len() / 8;
    let tail = &page[words * 8..];
    if let Some(i) = tail.iter().rposition(|&b| b != 0) {
        return words * 8 + i + 1;
    }
    let mut w = words;
    while w > 0 {
        let word = u64::from_le_bytes(page[(w - 1) * 8..w * 8].try_into().expect("8 bytes"));
        if word != 0 {
            // Little-endian: the highest non-zero byte is the last one in memory.
            return (w - 1) * 8 + 8 - (word.leading_zeros() / 8) as usize;
        }
        w -= 1;
    }
    0
}

/// Append the format 3 entry of page `no` (its image `page`, [`PAGE_SIZE`] bytes) to
/// `out`; returns the bytes appended.
pub fn encode_entry(out: &mut Vec<u8>, no: u64, page: &[u8]) -> usize {
    debug_assert_eq!(page.len(), PAGE_SIZE);
    let s = stored_len(page);
    out.extend_from_slice(&no.to_le_bytes());
    out.extend_from_slice(&(s as u16).to_le_bytes());
    out.extend_from_slice(&page[..s]);
    ENTRY_HEAD + s
}
/// Offset of a tree page's own number and generation (engine page header).
const PG_ID: usize = 8;
const PG_GEN: usize = 16;

/// The header's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PagesHeader {
    /// The file's format: [`PAGES_VERSION`] (what a job writes) or
    /// [`PAGES_VERSION_WHOLE`].
    pub version: u32,
    pub generation: u64,
    pub page_count: u64,
    /// Entries in this file.
    pub entries: u64,
    /// This file's index.
    pub index: u32,
    /// How many pages files the backup has.
    pub count: u32,
}

impl PagesHeader {
    /// The header bytes.
    pub fn encode(&self) -> [u8; PAGES_HEADER] {
        let mut h = [0u8; PAGES_HEADER];
        h[H_MAGIC..H_MAGIC + 8].copy_from_slice(&MAGIC);
        h[H_VERSION..H_VERSION + 4].copy_from_slice(&self.version.to_le_bytes());
        h[H_PAGE_SIZE..H_PAGE_SIZE + 4].copy_from_slice(&(PAGE_SIZE as u32).to_le_bytes());
        h[H_GENERATION..H_GENERATION + 8].copy_from_slice(&self.generation.to_le_bytes());
        h[H_PAGE_COUNT..H_PAGE_COUNT + 8].copy_from_slice(&self.page_count.to_le_bytes());
        h[H_ENTRIES..H_ENTRIES + 8].copy_from_slice(&self.entries.to_le_bytes());
        h[H_INDEX..H_INDEX + 4].copy_from_slice(&self.index.to_le_bytes());
        h[H_COUNT..H_COUNT + 4].copy_from_slice(&self.count.to_le_bytes());
        let crc = crc32fast::hash(&h[..H_CRC]);
        h[H_CRC..H_CRC + 4].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Parse and check a header; `file_len` must fit the entry count (exactly, in
    /// format 2; between all entries stored empty and all stored whole in format 3).
    pub fn decode(b: &[u8], file_len: u64, file: &Path) -> Result<PagesHeader> {
        let bad = |off: usize, d: &str| Error::corrupted(file, off as u64, d);
        if b.len() < PAGES_HEADER {
            return Err(bad(0, "pages file shorter than its header"));
        }
        if b[H_MAGIC..H_MAGIC + 8] != MAGIC {
            return Err(bad(0, "not a backup pages file (bad magic)"));
        }
        if crc32fast::hash(&b[..H_CRC]) != u32_at(b, H_CRC) {
            return Err(bad(H_CRC, "pages header checksum mismatch"));
        }
        let version = u32_at(b, H_VERSION);
        if version != PAGES_VERSION && version != PAGES_VERSION_WHOLE {
            return Err(Error::UnsupportedVersion {
                what: format!("pages file {}", file.display()),
                found: u64::from(version),
                supported: format!("versions {PAGES_VERSION_WHOLE} and {PAGES_VERSION}"),
            });
        }
        if u32_at(b, H_PAGE_SIZE) as usize != PAGE_SIZE {
            return Err(bad(H_PAGE_SIZE, "page size differs from this build's"));
        }
        let h = PagesHeader {
            version,
            generation: u64_at(b, H_GENERATION),
            page_count: u64_at(b, H_PAGE_COUNT),
            entries: u64_at(b, H_ENTRIES),
            index: u32_at(b, H_INDEX),
            count: u32_at(b, H_COUNT),
        };
        if h.index >= h.count {
            return Err(bad(
                H_INDEX,
                &format!("pages file {} of {}", h.index, h.count),
            ));
        }
        let span = |per_entry: usize| {
            h.entries
                .checked_mul(per_entry as u64)
                .and_then(|n| n.checked_add(PAGES_HEADER as u64))
        };
        let fits = if version == PAGES_VERSION_WHOLE {
            span(ENTRY_BYTES) == Some(file_len)
        } else {
            // Overflow of the upper bound means any length up to it fits.
            span(ENTRY_HEAD).is_some_and(|lo| lo <= file_len)
                && span(MAX_ENTRY_BYTES).is_none_or(|hi| file_len <= hi)
        };
        if !fits {
            return Err(bad(
                H_ENTRIES,
                &format!(
                    "pages file is {file_len} bytes but its header claims {} entries",
                    h.entries
                ),
            ));
        }
        Ok(h)
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// What the page checks expect of a pages file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageExpect {
    pub generation: u64,
    pub page_count: u64,
    /// Tree pages must be newer than this generation (an incremental's parent).
    pub newer_than: Option<u64>,
}

/// Bytes a scan reads at a time (about 1 MiB), and entries it checks and hands on at a
/// time: whatever the stored lengths, a scan holds about 1 MiB of bytes read and 1 MiB
/// of whole pages.
const CHUNK_BYTES: u64 = 256 * ENTRY_BYTES as u64;
const BATCH_ENTRIES: usize = 256;

/// Decode a header (the first bytes of a file of `len` bytes) and check it against
/// `expect`, the file's place `index`, and the count of files once known.
fn check_header(
    head: &[u8],
    len: u64,
    path: &Path,
    expect: PageExpect,
    index: u32,
    count: Option<u32>,
) -> Result<PagesHeader> {
    let h = PagesHeader::decode(head, len, path)?;
    if h.generation != expect.generation || h.page_count != expect.page_count {
        return Err(Error::corrupted(
            path,
            H_GENERATION as u64,
            format!(
                "pages header says generation {} with {} pages; the manifest says {} with {}",
                h.generation, h.page_count, expect.generation, expect.page_count
            ),
        ));
    }
    if h.index != index || count.is_some_and(|c| c != h.count) {
        return Err(Error::corrupted(
            path,
            H_INDEX as u64,
            format!(
                "pages header says file {} of {}; expected file {index}{}",
                h.index,
                h.count,
                count.map_or(String::new(), |c| format!(" of {c}"))
            ),
        ));
    }
    Ok(h)
}

/// What one read of a backup's pages files found.
#[derive(Debug)]
pub struct PagesChecked {
    /// Each pages file read, in index order: its path in the backup directory and its
    /// `(length, crc32 of all its bytes)` (what a manifest records), or why it could
    /// not be read to its end.
    pub files: Vec<(String, Result<(u64, u32)>)>,
    /// The page checks over all of them, made on the same bytes: the superblock, or
    /// the first problem.
    pub checks: Result<Superblock>,
}

/// Read and check all pages files of the backup in `dir` (see [`PagesChecked`]).
pub fn check_all(disk: &DynDisk, dir: &Path, expect: PageExpect) -> PagesChecked {
    let mut v = PagesVerifier::new(dir, expect, false);
    while !v.advance(disk, u64::MAX, None) {}
    v.finish()
}

/// [`check_all`] a budget of bytes at a time, so that a backup job can verify what it
/// wrote in steps under its rate limit, each file as soon as it is complete.
#[derive(Debug)]
pub(crate) struct PagesVerifier {
    dir: std::path::PathBuf,
    expect: PageExpect,
    drop_behind: bool,
    /// The count of files, once file 0's header is read.
    count: Option<u32>,
    /// The file being read, and its index.
    scan: Option<PagesScan>,
    next: u32,
    /// Once the checks fail the rest is only hashed.
    checker: Result<PageChecker>,
    files: Vec<(String, Result<(u64, u32)>)>,
    read_bytes: u64,
}

impl PagesVerifier {
    pub(crate) fn new(dir: &Path, expect: PageExpect, drop_behind: bool) -> PagesVerifier {
        PagesVerifier {
            dir: dir.to_path_buf(),
            expect,
            drop_behind,
            count: None,
            scan: None,
            next: 0,
            checker: Ok(PageChecker::new(expect)),
            files: Vec::new(),
            read_bytes: 0,
        }
    }

    /// Read and check about `budget` more bytes of the files with an index below
    /// `ready` (`None`: all files); true once every file is read. A file that cannot be
    /// read is recorded as such and the checks fail; the rest are still read.
    pub(crate) fn advance(&mut self, disk: &DynDisk, budget: u64, ready: Option<u32>) -> bool {
        self.advance_into(disk, budget, ready, &mut |_| {})
    }

    /// [`PagesVerifier::advance`], handing `sink` each run of entries (a whole number
    /// of them, in file order) once they have passed the page checks. Nothing more is
    /// handed over once a check fails; the rest is still read and hashed for the
    /// report.
    pub(crate) fn advance_into(
        &mut self,
        disk: &DynDisk,
        budget: u64,
        ready: Option<u32>,
        sink: &mut dyn FnMut(&[u8]),
    ) -> bool {
        let mut left = budget;
        loop {
            if self.count.is_some_and(|c| self.next >= c) && self.scan.is_none() {
                return true;
            }
            let Some(scan) = &mut self.scan else {
                if ready.is_some_and(|r| self.next >= r) || left == 0 {
                    return false;
                }
                self.open_next(disk);
                continue;
            };
            let before = scan.at;
            let done = scan.advance(left, &mut self.checker, sink);
            self.read_bytes += scan.at - before;
            left = left.saturating_sub(scan.at - before);
            match done {
                Ok(false) if left > 0 => continue,
                Ok(false) => return false,
                Ok(true) => {
                    let scan = self.scan.take().expect("scanning");
                    let (name, len, crc) = (scan.name.clone(), scan.len, scan.crc.finalize());
                    self.files.push((name, Ok((len, crc))));
                }
                Err(e) => {
                    let scan = self.scan.take().expect("scanning");
                    self.fail(scan.name.clone(), e);
                }
            }
        }
    }

    /// Open file `next`; on failure record it (and, for file 0, stop: the count is
    /// unknown).
    fn open_next(&mut self, disk: &DynDisk) {
        let index = self.next;
        self.next += 1;
        let name = pages_file(index);
        match PagesScan::open(disk, &self.dir, &name, self.drop_behind) {
            Ok((mut scan, head)) => {
                match check_header(&head, scan.len, &scan.path, self.expect, index, self.count) {
                    Ok(h) => {
                        self.count = Some(h.count);
                        scan.version = h.version;
                        scan.entries_left = h.entries;
                        if let Ok(c) = &mut self.checker {
                            c.start_file(&scan.path);
                        }
                    }
                    Err(e) => {
                        // The bytes are still hashed for the manifest's checksum.
                        scan.entries_unchecked = true;
                        if self.checker.is_ok() {
                            self.checker = Err(e);
                        }
                        self.count.get_or_insert(1);
                    }
                }
                self.read_bytes += scan.at;
                self.scan = Some(scan);
            }
            Err(e) => {
                // No file after one that cannot be opened is tried: a header's count
                // is trusted no further than the files that exist (a damaged or
                // crafted count of 2^32 - 1 must not make a verify try them all).
                self.count = Some(self.next);
                self.fail(name, e);
            }
        }
    }

    fn fail(&mut self, name: String, e: Error) {
        if self.checker.is_ok() {
            self.checker = Err(Error::corrupted(
                self.dir.join(&name),
                0,
                format!("pages file could not be read: {e}"),
            ));
        }
        self.files.push((name, Err(e)));
    }

    /// Bytes read so far.
    pub(crate) fn read_bytes(&self) -> u64 {
        self.read_bytes
    }

    /// The outcome, once [`PagesVerifier::advance`] returned true.
    pub(crate) fn finish(self) -> PagesChecked {
        debug_assert!(self.scan.is_none());
        PagesChecked {
            files: self.files,
            checks: self.checker.and_then(PageChecker::finish),
        }
    }
}

/// One pages file read front to back, its crc32 computed and its entries handed to a
/// [`PageChecker`].
#[derive(Debug)]
struct PagesScan {
    file: ryu_io::DynFile,
    name: String,
    path: std::path::PathBuf,
    len: u64,
    at: u64,
    crc: crc32fast::Hasher,
    /// The header failed its checks, or an entry did: hash the rest only.
    entries_unchecked: bool,
    /// The file's format and the entries its header claims that are not parsed yet.
    version: u32,
    entries_left: u64,
    /// Bytes read: a partial entry carried over from the last chunk (`carry` bytes),
    /// then the chunk.
    buf: Vec<u8>,
    carry: usize,
    /// Parsed entries with their zeros put back ([`ENTRY_BYTES`] each), and their
    /// offsets in the file, until they are checked and handed on.
    whole: Vec<u8>,
    offsets: Vec<u64>,
    /// Drop each chunk from the page cache once it is read (`File::drop_cache`).
    drop_behind: bool,
}

impl PagesScan {
    /// Open `dir/name` and read its header (returned, and hashed).
    fn open(
        disk: &DynDisk,
        dir: &Path,
        name: &str,
        drop_behind: bool,
    ) -> Result<(PagesScan, Vec<u8>)> {
        let path = dir.join(name);
        let file = disk.open(&path).map_err(|e| Error::io("open", &path, e))?;
        let len = file.len().map_err(|e| Error::io("len", &path, e))?;
        let mut crc = crc32fast::Hasher::new();
        let mut head = vec![0u8; PAGES_HEADER.min(len as usize)];
        file.read_at(0, &mut head)
            .map_err(|e| Error::io("read", &path, e))?;
        crc.update(&head);
        let scan = PagesScan {
            file,
            name: name.to_string(),
            path,
            len,
            at: head.len() as u64,
            crc,
            entries_unchecked: false,
            version: PAGES_VERSION,
            entries_left: 0,
            buf: Vec::new(),
            carry: 0,
            whole: Vec::new(),
            offsets: Vec::new(),
            drop_behind,
        };
        Ok((scan, head))
    }

    /// Read and check about `budget` more bytes (at least one chunk), and hand `sink`
    /// each batch of entries that all passed, with their zeros put back; true once the
    /// whole file is read. A failed check goes into `checker`; the error returned is
    /// an I/O error.
    fn advance(
        &mut self,
        budget: u64,
        checker: &mut Result<PageChecker>,
        sink: &mut dyn FnMut(&[u8]),
    ) -> Result<bool> {
        let chunks = budget.div_ceil(CHUNK_BYTES).max(1);
        let stop = self
            .at
            .saturating_add(chunks.saturating_mul(CHUNK_BYTES))
            .min(self.len);
        while self.at < stop {
            let n = (stop - self.at).min(CHUNK_BYTES) as usize;
            let keep = self.carry;
            self.buf.resize(keep + n, 0);
            let chunk = &mut self.buf[keep..];
            self.file
                .read_at(self.at, chunk)
                .map_err(|e| Error::io("read", &self.path, e))?;
            self.crc.update(chunk);
            self.at += n as u64;
            if let (Ok(c), false) = (&mut *checker, self.entries_unchecked)
                && let Err(err) = self.parse(c, sink)
            {
                *checker = Err(err);
                self.entries_unchecked = true;
                self.carry = 0;
            }
            if self.drop_behind {
                // From the file's start: a large folio that straddles a chunk's edge
                // is kept by a call that covers it only in part (see `WriteBehind`).
                // A hint: if the kernel refuses it nothing is lost but memory.
                let _ = self.file.drop_cache(0, self.at);
            }
        }
        Ok(self.at == self.len)
    }

    /// Parse, check and hand on the whole entries in `buf` (the file's bytes up to
    /// `at`); keep a partial entry at its end for the next chunk.
    fn parse(&mut self, checker: &mut PageChecker, sink: &mut dyn FnMut(&[u8])) -> Result<()> {
        let base = self.at - self.buf.len() as u64;
        let path = self.path.clone();
        let bad = |off: usize, d: String| Error::corrupted(&path, base + off as u64, d);
        let mut pos = 0;
        loop {
            let rest = &self.buf[pos..];
            let (head, stored) = if self.version == PAGES_VERSION_WHOLE {
                (8, PAGE_SIZE)
            } else if rest.len() < ENTRY_HEAD {
                break;
            } else {
                let s = u16::from_le_bytes([rest[8], rest[9]]) as usize;
                if s > PAGE_SIZE {
                    return Err(bad(
                        pos + 8,
                        format!("entry stores {s} bytes of a {PAGE_SIZE}-byte page"),
                    ));
                }
                (ENTRY_HEAD, s)
            };
            if rest.len() < head + stored {
                break;
            }
            if self.entries_left == 0 {
                return Err(bad(pos, "more entries than the header claims".into()));
            }
            self.entries_left -= 1;
            let no = u64_at(rest, 0);
            self.whole.extend_from_slice(&no.to_le_bytes());
            self.whole.extend_from_slice(&rest[head..head + stored]);
            self.whole.resize(self.whole.len() + PAGE_SIZE - stored, 0);
            self.offsets.push(base + pos as u64);
            pos += head + stored;
            if self.offsets.len() == BATCH_ENTRIES {
                self.check_batch(checker, sink)?;
            }
        }
        self.check_batch(checker, sink)?;
        self.buf.copy_within(pos.., 0);
        self.carry = self.buf.len() - pos;
        self.buf.truncate(self.carry);
        if self.at == self.len {
            if self.carry > 0 {
                return Err(bad(pos, "pages file ends inside an entry".into()));
            }
            if self.entries_left > 0 {
                return Err(bad(
                    pos,
                    format!(
                        "pages file is missing {} of the entries its header counts",
                        self.entries_left
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Check the parsed entries and hand them on if all passed.
    fn check_batch(
        &mut self,
        checker: &mut PageChecker,
        sink: &mut dyn FnMut(&[u8]),
    ) -> Result<()> {
        let entries = self.whole.chunks_exact(ENTRY_BYTES).zip(&self.offsets);
        for (e, &at) in entries {
            checker.entry(u64_at(e, 0), &e[8..], at)?;
        }
        if !self.whole.is_empty() {
            sink(&self.whole);
        }
        self.whole.clear();
        self.offsets.clear();
        Ok(())
    }
}

/// The page checks of [`check_all`] on one entry after another.
#[derive(Debug)]
struct PageChecker {
    /// The file being checked.
    path: std::path::PathBuf,
    expect: PageExpect,
    superblock: Option<Superblock>,
    last: Option<u64>,
}

impl PageChecker {
    fn new(expect: PageExpect) -> Self {
        PageChecker {
            path: std::path::PathBuf::new(),
            expect,
            superblock: None,
            last: None,
        }
    }

    /// The next entries come from the start of the file at `path`. Page numbers keep
    /// ascending across files.
    fn start_file(&mut self, path: &Path) {
        self.path = path.to_path_buf();
    }

    /// Check the entry of page `no` (its whole image `page`) at offset `at` of the file.
    fn entry(&mut self, no: u64, page: &[u8], at: u64) -> Result<()> {
        let expect = self.expect;
        let path = &self.path;
        let bad = |d: String| Error::corrupted(path, at, format!("page {no}: {d}"));
        if self.last.is_some_and(|l| no <= l) || no >= expect.page_count {
            return Err(bad("out of order or beyond the page count".into()));
        }
        self.last = Some(no);
        if no < FIRST_TREE_PAGE {
            if page[SUPER_LEN..].iter().any(|&b| b != 0) {
                return Err(bad("superblock page has bytes after the superblock".into()));
            }
            return match Superblock::decode(page) {
                SuperSlot::Valid(sb)
                    if sb.slot() == no
                        && sb.generation == expect.generation
                        && sb.page_count == expect.page_count
                        && self.superblock.is_none() =>
                {
                    self.superblock = Some(sb);
                    Ok(())
                }
                SuperSlot::Valid(_) => Err(bad("superblock does not fit".into())),
                other => Err(bad(format!("bad superblock: {other:?}"))),
            };
        }
        if !is_tree_page(page) {
            return Err(bad("page checksum mismatch".into()));
        }
        let (id, generation) = (u64_at(page, PG_ID), u64_at(page, PG_GEN));
        if id != no {
            return Err(bad(format!("page says it is page {id}")));
        }
        if generation > expect.generation || expect.newer_than.is_some_and(|p| generation <= p) {
            return Err(bad(format!(
                "page of generation {generation} does not belong"
            )));
        }
        Ok(())
    }

    fn finish(self) -> Result<Superblock> {
        self.superblock
            .ok_or_else(|| Error::corrupted(&self.path, 0, "no superblock in the pages file"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The word-at-a-time scan agrees with the plain one: one non-zero byte at every
    /// place, on pages of zeros and of ones, and on lengths that are not whole words.
    #[test]
    fn stored_len_ends_at_the_last_non_zero_byte() {
        let plain = |p: &[u8]| p.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        for len in [PAGE_SIZE, 0, 1, 7, 8, 9, 100] {
            let mut page = vec![0u8; len];
            assert_eq!(stored_len(&page), 0);
            for at in 0..len {
                for b in [1u8, 0x80, 0xff] {
                    page[at] = b;
                    assert_eq!(stored_len(&page), at + 1, "len {len}, byte {b} at {at}");
                    assert_eq!(stored_len(&page), plain(&page));
                }
                page[at] = 0;
            }
            page.fill(1);
            assert_eq!(stored_len(&page), len);
        }
    }

    /// An entry stores the page up to its last non-zero byte, after its number and
    /// that length.
    #[test]
    fn an_entry_stores_its_page_without_the_zeros_at_its_end() {
        let mut page = vec![0u8; PAGE_SIZE];
        page[..3000].fill(7);
        let mut out = vec![9];
        assert_eq!(encode_entry(&mut out, 42, &page), ENTRY_HEAD + 3000);
        assert_eq!(out.len(), 1 + ENTRY_HEAD + 3000);
        assert_eq!(out[1..9], 42u64.to_le_bytes());
        assert_eq!(out[9..11], 3000u16.to_le_bytes());
        assert!(out[11..].iter().all(|&b| b == 7));
    }
}
