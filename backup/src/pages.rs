//! The pages file `data.pages`: the pages of one checkpoint generation of the engine's
//! `data` file, packed (free pages are not stored).
//!
//! # Layout
//!
//! | offset | size | field |
//! |--------|------|-------|
//! | 0      | 8    | magic `RYUBKPG\0` |
//! | 8      | 4    | format version (u32 LE), [`PAGES_VERSION`] |
//! | 12     | 4    | page size in bytes (u32 LE) |
//! | 16     | 8    | generation of the pinned tree |
//! | 24     | 8    | page count of the data file a restore makes |
//! | 32     | 8    | entry count `n` |
//! | 40     | 4    | crc32 of bytes `[0, 40)` |
//! | 44     | 20   | zero |
//! | 64     | ..   | `n` entries, ascending by page number |
//!
//! Entry: `page number u64 LE | page image (PAGE_SIZE bytes)`. Exactly one entry is a
//! superblock (page 0 or 1: the pinned generation's slot); the others are tree pages,
//! each carrying its own crc32, number and generation (see `ryu_engine::page`). The
//! header is written last, after every entry, so a torn copy has no valid header.

use crate::error::{Error, Result};
use ryu_engine::PAGE_SIZE;
use ryu_engine::page::{FIRST_TREE_PAGE, SUPER_LEN, SuperSlot, Superblock, is_tree_page};
use ryu_io::DynDisk;
use std::path::Path;

/// The pages file's name inside a backup directory.
pub const PAGES_FILE: &str = "data.pages";
/// Format version of the pages file.
pub const PAGES_VERSION: u32 = 1;
const MAGIC: [u8; 8] = *b"RYUBKPG\0";
const H_MAGIC: usize = 0;
const H_VERSION: usize = H_MAGIC + 8;
const H_PAGE_SIZE: usize = H_VERSION + 4;
const H_GENERATION: usize = H_PAGE_SIZE + 4;
const H_PAGE_COUNT: usize = H_GENERATION + 8;
const H_ENTRIES: usize = H_PAGE_COUNT + 8;
const H_CRC: usize = H_ENTRIES + 8;
/// Bytes before the first entry.
pub const PAGES_HEADER: usize = 64;
const _: () = assert!(H_CRC + 4 <= PAGES_HEADER);
/// Bytes of one entry.
pub const ENTRY_BYTES: usize = 8 + PAGE_SIZE;
/// Offset of a tree page's own number and generation (engine page header).
const PG_ID: usize = 8;
const PG_GEN: usize = 16;

/// The header's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PagesHeader {
    pub generation: u64,
    pub page_count: u64,
    pub entries: u64,
}

impl PagesHeader {
    /// The header bytes.
    pub fn encode(&self) -> [u8; PAGES_HEADER] {
        let mut h = [0u8; PAGES_HEADER];
        h[H_MAGIC..H_MAGIC + 8].copy_from_slice(&MAGIC);
        h[H_VERSION..H_VERSION + 4].copy_from_slice(&PAGES_VERSION.to_le_bytes());
        h[H_PAGE_SIZE..H_PAGE_SIZE + 4].copy_from_slice(&(PAGE_SIZE as u32).to_le_bytes());
        h[H_GENERATION..H_GENERATION + 8].copy_from_slice(&self.generation.to_le_bytes());
        h[H_PAGE_COUNT..H_PAGE_COUNT + 8].copy_from_slice(&self.page_count.to_le_bytes());
        h[H_ENTRIES..H_ENTRIES + 8].copy_from_slice(&self.entries.to_le_bytes());
        let crc = crc32fast::hash(&h[..H_CRC]);
        h[H_CRC..H_CRC + 4].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Parse and check a header; `file_len` must match the entry count exactly.
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
        if version != PAGES_VERSION {
            return Err(Error::UnsupportedVersion {
                what: format!("pages file {}", file.display()),
                found: u64::from(version),
                supported: u64::from(PAGES_VERSION),
            });
        }
        if u32_at(b, H_PAGE_SIZE) as usize != PAGE_SIZE {
            return Err(bad(H_PAGE_SIZE, "page size differs from this build's"));
        }
        let h = PagesHeader {
            generation: u64_at(b, H_GENERATION),
            page_count: u64_at(b, H_PAGE_COUNT),
            entries: u64_at(b, H_ENTRIES),
        };
        let want = h
            .entries
            .checked_mul(ENTRY_BYTES as u64)
            .and_then(|n| n.checked_add(PAGES_HEADER as u64));
        if want != Some(file_len) {
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

/// Read a pages file in chunks: check its header against `expect`, then hand each
/// run of entries `(page number, page image)` to `f`. The file's length must match
/// the header exactly.
pub fn read_entries(
    disk: &DynDisk,
    path: &Path,
    expect: PageExpect,
    mut f: impl FnMut(&[(u64, &[u8])]) -> Result<()>,
) -> Result<PagesHeader> {
    let file = disk.open(path).map_err(|e| Error::io("open", path, e))?;
    let len = file.len().map_err(|e| Error::io("len", path, e))?;
    let mut head = vec![0u8; PAGES_HEADER.min(len as usize)];
    file.read_at(0, &mut head)
        .map_err(|e| Error::io("read", path, e))?;
    let h = check_header(&head, len, path, expect)?;
    let mut buf = Vec::new();
    let mut done = 0u64;
    while done < h.entries {
        let n = (h.entries - done).min(CHUNK_ENTRIES);
        buf.resize(n as usize * ENTRY_BYTES, 0);
        let at = PAGES_HEADER as u64 + done * ENTRY_BYTES as u64;
        file.read_at(at, &mut buf)
            .map_err(|e| Error::io("read", path, e))?;
        let run: Vec<(u64, &[u8])> = buf
            .chunks_exact(ENTRY_BYTES)
            .map(|e| (u64_at(e, 0), &e[8..]))
            .collect();
        f(&run)?;
        done += n;
    }
    Ok(h)
}

const CHUNK_ENTRIES: u64 = 256;

/// Decode a header (the first bytes of a file of `len` bytes) and check it against
/// `expect`.
fn check_header(head: &[u8], len: u64, path: &Path, expect: PageExpect) -> Result<PagesHeader> {
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
    Ok(h)
}

/// What one read of a whole pages file found: its length, the crc32 of all its bytes
/// (what a manifest records), and the outcome of [`check`] on those same bytes.
pub type PagesChecked = (u64, u32, Result<Superblock>);

/// One read of a whole pages file for verification (see [`PagesChecked`]). The outer
/// error is an I/O error (the file could not be read to the end).
pub fn check_with_crc(disk: &DynDisk, path: &Path, expect: PageExpect) -> Result<PagesChecked> {
    let mut scan = PagesScan::open(disk, path, expect, false)?;
    while !scan.advance(u64::MAX)? {}
    Ok(scan.finish())
}

/// [`check_with_crc`] a budget of bytes at a time, so that a backup job can verify
/// what it wrote in steps under its rate limit, as it copied.
#[derive(Debug)]
pub(crate) struct PagesScan {
    file: ryu_io::DynFile,
    path: std::path::PathBuf,
    len: u64,
    at: u64,
    crc: crc32fast::Hasher,
    /// Once the checks fail the rest is only hashed.
    checks: Result<PageChecker>,
    buf: Vec<u8>,
    /// Drop each chunk from the page cache once it is read (`File::drop_cache`).
    drop_behind: bool,
}

impl PagesScan {
    /// Open the file and read its header.
    pub(crate) fn open(
        disk: &DynDisk,
        path: &Path,
        expect: PageExpect,
        drop_behind: bool,
    ) -> Result<PagesScan> {
        let file = disk.open(path).map_err(|e| Error::io("open", path, e))?;
        let len = file.len().map_err(|e| Error::io("len", path, e))?;
        let mut crc = crc32fast::Hasher::new();
        let mut head = vec![0u8; PAGES_HEADER.min(len as usize)];
        file.read_at(0, &mut head)
            .map_err(|e| Error::io("read", path, e))?;
        crc.update(&head);
        let checks = check_header(&head, len, path, expect).map(|_| PageChecker::new(path, expect));
        Ok(PagesScan {
            file,
            path: path.to_path_buf(),
            len,
            at: head.len() as u64,
            crc,
            checks,
            buf: Vec::new(),
            drop_behind,
        })
    }

    /// Read and check about `budget` more bytes (at least one chunk of entries);
    /// true once the whole file is read.
    pub(crate) fn advance(&mut self, budget: u64) -> Result<bool> {
        // Whole chunks only (the last one excepted), so that every chunk starts on an
        // entry: `at` stays `PAGES_HEADER` plus a multiple of `chunk_bytes`.
        let chunk_bytes = (CHUNK_ENTRIES as usize * ENTRY_BYTES) as u64;
        let chunks = budget.div_ceil(chunk_bytes).max(1);
        let stop = self
            .at
            .saturating_add(chunks.saturating_mul(chunk_bytes))
            .min(self.len);
        while self.at < stop {
            let n = (stop - self.at).min(chunk_bytes) as usize;
            self.buf.resize(n, 0);
            let chunk = &mut self.buf[..n];
            self.file
                .read_at(self.at, chunk)
                .map_err(|e| Error::io("read", &self.path, e))?;
            self.crc.update(chunk);
            if let Ok(c) = &mut self.checks {
                // A valid header means the length is whole entries, so the last chunk
                // is whole entries too.
                for e in chunk.chunks_exact(ENTRY_BYTES) {
                    if let Err(err) = c.entry(u64_at(e, 0), &e[8..]) {
                        self.checks = Err(err);
                        break;
                    }
                }
            }
            if self.drop_behind {
                // From the file's start: a large folio that straddles a chunk's edge
                // is kept by a call that covers it only in part (see `WriteBehind`).
                self.file
                    .drop_cache(0, self.at + n as u64)
                    .map_err(|e| Error::io("drop cache", &self.path, e))?;
            }
            self.at += n as u64;
        }
        Ok(self.at == self.len)
    }

    /// Bytes read so far.
    pub(crate) fn read_bytes(&self) -> u64 {
        self.at
    }

    /// The outcome, once [`PagesScan::advance`] returned true.
    pub(crate) fn finish(self) -> PagesChecked {
        debug_assert_eq!(self.at, self.len);
        (
            self.len,
            self.crc.finalize(),
            self.checks.and_then(PageChecker::finish),
        )
    }
}

/// The checks of [`check`] on one entry after another.
#[derive(Debug)]
struct PageChecker {
    path: std::path::PathBuf,
    expect: PageExpect,
    superblock: Option<Superblock>,
    last: Option<u64>,
    index: u64,
}

impl PageChecker {
    fn new(path: &Path, expect: PageExpect) -> Self {
        PageChecker {
            path: path.to_path_buf(),
            expect,
            superblock: None,
            last: None,
            index: 0,
        }
    }

    fn entry(&mut self, no: u64, page: &[u8]) -> Result<()> {
        let expect = self.expect;
        let at = PAGES_HEADER as u64 + self.index * ENTRY_BYTES as u64;
        self.index += 1;
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

/// Check a whole pages file: its header against `expect`, ascending unique entries,
/// one valid superblock of the right generation in its slot, and every tree page's
/// checksum, own number and generation. Returns the superblock.
pub fn check(disk: &DynDisk, path: &Path, expect: PageExpect) -> Result<Superblock> {
    let mut checker = PageChecker::new(path, expect);
    read_entries(disk, path, expect, |run| {
        run.iter()
            .try_for_each(|&(no, page)| checker.entry(no, page))
    })?;
    checker.finish()
}
