//! The data file: two superblocks, then fixed-size tree pages.
//!
//! # `data` file layout
//!
//! The file is an array of [`PAGE_SIZE`]-byte pages. Pages 0 and 1 are the two
//! superblock slots; generation `g` is written to slot `g % 2`, so the previous
//! generation's superblock survives a torn write of the next one. Pages from
//! [`FIRST_TREE_PAGE`] on are B+tree nodes or free space.
//!
//! ## Superblock (first [`SUPER_LEN`] bytes of page 0 or 1; the rest of the page is zero)
//!
//! | offset | size | field |
//! |--------|------|-------|
//! | 0      | 8    | magic `RYUDATA\0` |
//! | 8      | 4    | format version (u32 LE), [`FORMAT_VERSION`] |
//! | 12     | 4    | crc32 of bytes `[0, 12)`: the version stamp |
//! | 16     | 4    | page size in bytes (u32 LE) |
//! | 20     | 4    | zero |
//! | 24     | 8    | generation (u64 LE), >= 1 |
//! | 32     | 8    | checkpoint timestamp: the tree holds every commit with ts <= this |
//! | 40     | 8    | root page (0 = empty tree) |
//! | 48     | 8    | generation that wrote the root page |
//! | 56     | 4    | the root page's crc32 (its bytes 0..4) |
//! | 60     | 4    | zero |
//! | 64     | 8    | page count: pages `[0, count)` may be in use |
//! | 72     | 8    | first WAL segment to replay |
//! | 80     | 8    | LSN of the first record that segment must start with |
//! | 88     | 4    | crc32 of bytes `[0, 88)` |
//!
//! Magic, version and version stamp are the same in every format version, so a file
//! written by a newer build is reported as such (its stamp checks out) even if that
//! build laid out the rest differently, while damage to the version bytes is not
//! mistaken for a newer format.
//!
//! ## Tree page
//!
//! | offset | size | field |
//! |--------|------|-------|
//! | 0      | 4    | crc32 of bytes `[4, PAGE_SIZE)` |
//! | 4      | 1    | page type: 1 leaf, 2 branch |
//! | 5      | 1    | level: 0 for a leaf, 1 + the children's level for a branch |
//! | 6      | 2    | zero |
//! | 8      | 8    | this page's own number (catches misdirected writes) |
//! | 16     | 8    | generation that wrote it (its parent records the same number) |
//! | 24     | 2    | entry count (u16 LE) |
//! | 26     | 6    | zero |
//! | 32     | ..   | body |
//!
//! Leaf body: `count` entries `key_len u16 | value_len u16 | key | value`, keys strictly
//! ascending. Branch body: a child pointer `page u64 | gen u64 | crc u32`, then
//! `count - 1` entries `key_len u16 | key | child pointer`: child `i` holds the keys in
//! `[key_i, key_{i+1})` (child 0 from minus infinity), keys strictly ascending. All
//! leaves are at the same depth, so a walker knows a page's kind from its parent's
//! level without reading it.
//!
//! Every pointer (a branch's, or the superblock's to the root) carries the page number,
//! the generation that wrote the page and the page's crc32, and a read checks all three.
//! A stale page left by a lost or misdirected write therefore never passes for the page
//! its parent means, even if an earlier, abandoned checkpoint of the same generation
//! number wrote it.

use crate::error::{Error, Result};
use std::path::Path;

/// Bytes per page.
pub const PAGE_SIZE: usize = 4096;
/// Format version of the `data` file this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Superblock magic.
pub const SUPER_MAGIC: [u8; 8] = *b"RYUDATA\0";
/// The first page that can hold a tree node.
pub const FIRST_TREE_PAGE: u64 = 2;
/// Page numbers stay below this (a 2^48-page file is 1 EiB), so byte offsets never
/// overflow even for a damaged pointer that slipped past its checksum.
pub const MAX_PAGES: u64 = 1 << 48;
/// The largest key accepted.
pub const MAX_KEY_BYTES: usize = 512;
/// The largest value accepted.
pub const MAX_VALUE_BYTES: usize = 3072;

const SB_MAGIC: usize = 0;
const SB_VERSION: usize = SB_MAGIC + 8;
const SB_VERSION_CHECK: usize = SB_VERSION + 4;
const SB_PAGE_SIZE: usize = SB_VERSION_CHECK + 4;
const SB_GEN: usize = SB_PAGE_SIZE + 8;
const SB_CKPT_TS: usize = SB_GEN + 8;
const SB_ROOT: usize = SB_CKPT_TS + 8;
const SB_ROOT_GEN: usize = SB_ROOT + 8;
const SB_ROOT_CRC: usize = SB_ROOT_GEN + 8;
const SB_PAGE_COUNT: usize = SB_ROOT_CRC + 8;
const SB_WAL_SEG: usize = SB_PAGE_COUNT + 8;
const SB_WAL_LSN: usize = SB_WAL_SEG + 8;
const SB_CRC: usize = SB_WAL_LSN + 8;
/// Meaningful bytes of a superblock.
pub const SUPER_LEN: usize = SB_CRC + 4;
const _: () = assert!(SUPER_LEN == 92);
// A superblock fits in one sector, so a torn write keeps it whole or loses it whole
// on disks with 512-byte atomicity; the crc covers the other cases.
const _: () = assert!(SUPER_LEN <= 512);

const PG_CRC: usize = 0;
const PG_TYPE: usize = PG_CRC + 4;
const PG_LEVEL: usize = PG_TYPE + 1;
const PG_ID: usize = PG_LEVEL + 3;
const PG_GEN: usize = PG_ID + 8;
const PG_COUNT: usize = PG_GEN + 8;
/// Bytes of a tree page's header.
pub const PAGE_HEADER: usize = PG_COUNT + 8;
const _: () = assert!(PAGE_HEADER == 32);
/// Bytes available to a node's body.
pub const PAGE_BODY: usize = PAGE_SIZE - PAGE_HEADER;
const LEAF_ENTRY_OVERHEAD: usize = 4;
const BRANCH_CHILD: usize = 20;
const BRANCH_ENTRY_OVERHEAD: usize = 2 + BRANCH_CHILD;
// The largest leaf entry fits a page alone; a branch holds at least three largest
// separators, so splitting always makes progress.
const _: () = assert!(LEAF_ENTRY_OVERHEAD + MAX_KEY_BYTES + MAX_VALUE_BYTES <= PAGE_BODY);
const _: () = assert!(BRANCH_CHILD + 3 * (BRANCH_ENTRY_OVERHEAD + MAX_KEY_BYTES) <= PAGE_BODY);

const TYPE_LEAF: u8 = 1;
const TYPE_BRANCH: u8 = 2;

/// A pointer to a tree page: its number and the generation that wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct NodeRef {
    pub page: u64,
    pub generation: u64,
    /// The page's crc32 as written (its bytes `[0, 4)`).
    pub checksum: u32,
}

/// One decoded superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Superblock {
    pub generation: u64,
    pub checkpoint_ts: u64,
    /// `None` for an empty tree.
    pub root: Option<NodeRef>,
    pub page_count: u64,
    pub wal_segment: u64,
    pub wal_lsn: u64,
}

/// What a superblock slot held.
#[derive(Debug)]
pub enum SuperSlot {
    Valid(Superblock),
    /// No magic: never written, or not ours.
    Foreign,
    /// Our magic, a newer version.
    Newer(u32),
    /// Our magic, bad checksum or fields.
    Damaged(String),
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl Superblock {
    /// The slot this generation is written to.
    pub fn slot(&self) -> u64 {
        self.generation % 2
    }

    /// The full page image of this superblock.
    pub fn encode(&self) -> Vec<u8> {
        assert!(self.generation >= 1, "generation 0 is never written");
        assert!(self.page_count >= FIRST_TREE_PAGE);
        assert!(self.wal_segment >= 1 && self.wal_lsn >= 1);
        let mut b = vec![0u8; PAGE_SIZE];
        b[SB_MAGIC..SB_MAGIC + 8].copy_from_slice(&SUPER_MAGIC);
        b[SB_VERSION..SB_VERSION + 4].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        let check = crc32fast::hash(&b[..SB_VERSION_CHECK]);
        b[SB_VERSION_CHECK..SB_VERSION_CHECK + 4].copy_from_slice(&check.to_le_bytes());
        b[SB_PAGE_SIZE..SB_PAGE_SIZE + 4].copy_from_slice(&(PAGE_SIZE as u32).to_le_bytes());
        b[SB_GEN..SB_GEN + 8].copy_from_slice(&self.generation.to_le_bytes());
        b[SB_CKPT_TS..SB_CKPT_TS + 8].copy_from_slice(&self.checkpoint_ts.to_le_bytes());
        let (root, root_gen, root_crc) = self
            .root
            .map_or((0, 0, 0), |r| (r.page, r.generation, r.checksum));
        assert!(root == 0 || (root >= FIRST_TREE_PAGE && root < self.page_count));
        b[SB_ROOT..SB_ROOT + 8].copy_from_slice(&root.to_le_bytes());
        b[SB_ROOT_GEN..SB_ROOT_GEN + 8].copy_from_slice(&root_gen.to_le_bytes());
        b[SB_ROOT_CRC..SB_ROOT_CRC + 4].copy_from_slice(&root_crc.to_le_bytes());
        b[SB_PAGE_COUNT..SB_PAGE_COUNT + 8].copy_from_slice(&self.page_count.to_le_bytes());
        b[SB_WAL_SEG..SB_WAL_SEG + 8].copy_from_slice(&self.wal_segment.to_le_bytes());
        b[SB_WAL_LSN..SB_WAL_LSN + 8].copy_from_slice(&self.wal_lsn.to_le_bytes());
        let crc = crc32fast::hash(&b[..SB_CRC]);
        b[SB_CRC..SB_CRC + 4].copy_from_slice(&crc.to_le_bytes());
        debug_assert!(matches!(Superblock::decode(&b), SuperSlot::Valid(s) if s == *self));
        b
    }

    /// Decode a slot (at least `SUPER_LEN` bytes).
    pub fn decode(b: &[u8]) -> SuperSlot {
        assert!(b.len() >= SUPER_LEN);
        if b[SB_MAGIC..SB_MAGIC + 8] != SUPER_MAGIC {
            return SuperSlot::Foreign;
        }
        let version = u32_at(b, SB_VERSION);
        if crc32fast::hash(&b[..SB_VERSION_CHECK]) != u32_at(b, SB_VERSION_CHECK) {
            return SuperSlot::Damaged("superblock version stamp damaged".into());
        }
        if version > FORMAT_VERSION {
            return SuperSlot::Newer(version);
        }
        if crc32fast::hash(&b[..SB_CRC]) != u32_at(b, SB_CRC) {
            return SuperSlot::Damaged("superblock checksum mismatch".into());
        }
        if version != FORMAT_VERSION || u32_at(b, SB_PAGE_SIZE) as usize != PAGE_SIZE {
            return SuperSlot::Damaged(format!("version {version} or page size unsupported"));
        }
        let root_page = u64_at(b, SB_ROOT);
        let s = Superblock {
            generation: u64_at(b, SB_GEN),
            checkpoint_ts: u64_at(b, SB_CKPT_TS),
            root: (root_page != 0).then(|| NodeRef {
                page: root_page,
                generation: u64_at(b, SB_ROOT_GEN),
                checksum: u32_at(b, SB_ROOT_CRC),
            }),
            page_count: u64_at(b, SB_PAGE_COUNT),
            wal_segment: u64_at(b, SB_WAL_SEG),
            wal_lsn: u64_at(b, SB_WAL_LSN),
        };
        let root_ok = s.root.is_none_or(|r| {
            r.page >= FIRST_TREE_PAGE && r.page < s.page_count && r.generation <= s.generation
        });
        if s.generation == 0
            || s.page_count < FIRST_TREE_PAGE
            || s.page_count > MAX_PAGES
            || !root_ok
            || s.wal_segment == 0
        {
            return SuperSlot::Damaged("superblock fields out of range".into());
        }
        SuperSlot::Valid(s)
    }
}

/// A decoded tree node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Leaf(Vec<(Vec<u8>, Vec<u8>)>),
    /// `keys.len() + 1 == children.len()`; child `i + 1` holds keys `>= keys[i]`.
    Branch {
        level: u8,
        keys: Vec<Vec<u8>>,
        children: Vec<NodeRef>,
    },
}

impl Node {
    /// Encoded body size of a leaf entry.
    pub fn leaf_entry_size(key: &[u8], value: &[u8]) -> usize {
        LEAF_ENTRY_OVERHEAD + key.len() + value.len()
    }

    /// Encoded body size of a branch separator + child.
    pub fn branch_entry_size(key: &[u8]) -> usize {
        BRANCH_ENTRY_OVERHEAD + key.len()
    }

    /// Body size of a branch's first child pointer.
    pub const BRANCH_FIRST: usize = BRANCH_CHILD;

    /// Encode as page `page` written by generation `generation`.
    pub fn encode(&self, page: u64, generation: u64) -> Vec<u8> {
        assert!(page >= FIRST_TREE_PAGE);
        let mut b = vec![0u8; PAGE_SIZE];
        let mut at = PAGE_HEADER;
        let (kind, level, count) = match self {
            Node::Leaf(entries) => {
                for (k, v) in entries {
                    assert!(k.len() <= MAX_KEY_BYTES && v.len() <= MAX_VALUE_BYTES);
                    b[at..at + 2].copy_from_slice(&(k.len() as u16).to_le_bytes());
                    b[at + 2..at + 4].copy_from_slice(&(v.len() as u16).to_le_bytes());
                    at += 4;
                    b[at..at + k.len()].copy_from_slice(k);
                    at += k.len();
                    b[at..at + v.len()].copy_from_slice(v);
                    at += v.len();
                }
                debug_assert!(entries.windows(2).all(|w| w[0].0 < w[1].0));
                (TYPE_LEAF, 0, entries.len())
            }
            Node::Branch {
                level,
                keys,
                children,
            } => {
                assert_eq!(keys.len() + 1, children.len());
                assert!(*level >= 1);
                debug_assert!(keys.windows(2).all(|w| w[0] < w[1]));
                let put_child = |b: &mut [u8], at: usize, c: &NodeRef| {
                    assert!(c.page >= FIRST_TREE_PAGE && c.generation <= generation);
                    b[at..at + 8].copy_from_slice(&c.page.to_le_bytes());
                    b[at + 8..at + 16].copy_from_slice(&c.generation.to_le_bytes());
                    b[at + 16..at + 20].copy_from_slice(&c.checksum.to_le_bytes());
                };
                put_child(&mut b, at, &children[0]);
                at += BRANCH_CHILD;
                for (k, c) in keys.iter().zip(&children[1..]) {
                    b[at..at + 2].copy_from_slice(&(k.len() as u16).to_le_bytes());
                    at += 2;
                    b[at..at + k.len()].copy_from_slice(k);
                    at += k.len();
                    put_child(&mut b, at, c);
                    at += BRANCH_CHILD;
                }
                (TYPE_BRANCH, *level, children.len())
            }
        };
        assert!(at <= PAGE_SIZE && count <= usize::from(u16::MAX));
        b[PG_TYPE] = kind;
        b[PG_LEVEL] = level;
        b[PG_ID..PG_ID + 8].copy_from_slice(&page.to_le_bytes());
        b[PG_GEN..PG_GEN + 8].copy_from_slice(&generation.to_le_bytes());
        b[PG_COUNT..PG_COUNT + 2].copy_from_slice(&(count as u16).to_le_bytes());
        let crc = crc32fast::hash(&b[PG_TYPE..]);
        b[PG_CRC..PG_CRC + 4].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decode page `expect.page`, which its parent says generation `expect.generation`
    /// wrote. Any mismatch is `Corrupted` naming `file` and the page's byte offset.
    pub fn decode(b: &[u8], expect: NodeRef, file: &Path) -> Result<Node> {
        Ok(Page::parse(b.into(), expect, file)?.to_node())
    }
}

/// A validated tree page, searched in place.
///
/// The page cache holds these rather than decoded [`Node`]s: a lookup is a binary
/// search over `offsets` comparing keys where they lie in `bytes`, so loading a page
/// costs two allocations (the bytes and the offset table) however many entries it
/// has, and evicting one frees two. Every check [`Node::decode`] makes is made once,
/// in [`Page::parse`]; the accessors then index without further checks.
#[derive(Debug)]
pub struct Page {
    bytes: Box<[u8]>,
    /// Leaf: the offset of entry `i` (its `key_len`). Branch: the offset of separator
    /// `i`'s `key_len`, which is followed by its key and child `i + 1`'s pointer.
    offsets: Vec<u16>,
    level: u8,
}

// Offsets within a page fit a u16.
const _: () = assert!(PAGE_SIZE <= u16::MAX as usize + 1);

impl Page {
    /// Check `b` (a whole page) against the pointer `expect` its parent holds and
    /// index its entries. Any mismatch is `Corrupted` naming `file` and the byte.
    pub fn parse(b: Box<[u8]>, expect: NodeRef, file: &Path) -> Result<Page> {
        assert_eq!(b.len(), PAGE_SIZE);
        let base = expect.page * PAGE_SIZE as u64;
        let bad = |at: usize, what: String| Error::corrupted(file, base + at as u64, what);
        if crc32fast::hash(&b[PG_TYPE..]) != u32_at(&b, PG_CRC) {
            return Err(bad(0, format!("page {} checksum mismatch", expect.page)));
        }
        if u32_at(&b, PG_CRC) != expect.checksum {
            return Err(bad(
                0,
                format!(
                    "page {} is not the page its parent points to (lost or misdirected write)",
                    expect.page
                ),
            ));
        }
        let (id, generation) = (u64_at(&b, PG_ID), u64_at(&b, PG_GEN));
        if id != expect.page || generation != expect.generation {
            return Err(bad(
                PG_ID,
                format!(
                    "page {} holds page {id} of generation {generation}, expected generation {} (misdirected or lost write)",
                    expect.page, expect.generation
                ),
            ));
        }
        let count = usize::from(u16_at(&b, PG_COUNT));
        let mut at = PAGE_HEADER;
        let need = |at: usize, n: usize| -> Result<()> {
            if at + n > PAGE_SIZE {
                Err(bad(at, "entry runs past the page end".into()))
            } else {
                Ok(())
            }
        };
        let level = b[PG_LEVEL];
        // The count is not trusted yet: no page holds more entries than this.
        let mut offsets: Vec<u16> = Vec::with_capacity(count.min(PAGE_BODY / LEAF_ENTRY_OVERHEAD));
        match b[PG_TYPE] {
            TYPE_LEAF if level != 0 => {
                return Err(bad(PG_LEVEL, "leaf with a nonzero level".into()));
            }
            TYPE_BRANCH if level == 0 => {
                return Err(bad(PG_LEVEL, "branch at level zero".into()));
            }
            TYPE_LEAF => {
                let mut prev: Option<(usize, usize)> = None;
                for _ in 0..count {
                    need(at, 4)?;
                    let (kl, vl) = (usize::from(u16_at(&b, at)), usize::from(u16_at(&b, at + 2)));
                    if kl > MAX_KEY_BYTES || vl > MAX_VALUE_BYTES {
                        return Err(bad(at, "leaf entry length out of range".into()));
                    }
                    need(at + 4, kl + vl)?;
                    let key = (at + 4, kl);
                    if prev.is_some_and(|(p, pl)| b[p..p + pl] >= b[key.0..key.0 + kl]) {
                        return Err(bad(at + 4, "leaf keys out of order".into()));
                    }
                    prev = Some(key);
                    offsets.push(at as u16);
                    at += 4 + kl + vl;
                }
            }
            TYPE_BRANCH => {
                if count == 0 {
                    return Err(bad(PG_COUNT, "branch without children".into()));
                }
                let check_child = |at: usize| -> Result<()> {
                    need(at, BRANCH_CHILD)?;
                    let page = u64_at(&b, at);
                    if !(FIRST_TREE_PAGE..MAX_PAGES).contains(&page)
                        || u64_at(&b, at + 8) > generation
                    {
                        return Err(bad(at, "branch child pointer out of range".into()));
                    }
                    Ok(())
                };
                check_child(at)?;
                at += BRANCH_CHILD;
                let mut prev: Option<(usize, usize)> = None;
                for _ in 1..count {
                    need(at, 2)?;
                    let kl = usize::from(u16_at(&b, at));
                    if kl > MAX_KEY_BYTES {
                        return Err(bad(at, "branch key length out of range".into()));
                    }
                    need(at + 2, kl)?;
                    let key = (at + 2, kl);
                    if prev.is_some_and(|(p, pl)| b[p..p + pl] >= b[key.0..key.0 + kl]) {
                        return Err(bad(at + 2, "branch keys out of order".into()));
                    }
                    prev = Some(key);
                    offsets.push(at as u16);
                    at += 2 + kl;
                    check_child(at)?;
                    at += BRANCH_CHILD;
                }
            }
            other => return Err(bad(PG_TYPE, format!("unknown page type {other}"))),
        }
        Ok(Page {
            bytes: b,
            offsets,
            level,
        })
    }

    /// 0 for a leaf; a branch's children are one level lower.
    pub fn level(&self) -> u8 {
        self.level
    }

    pub fn is_leaf(&self) -> bool {
        self.level == 0
    }

    /// Entries of a leaf.
    pub fn leaf_len(&self) -> usize {
        debug_assert!(self.is_leaf());
        self.offsets.len()
    }

    /// Key of leaf entry `i`.
    pub fn leaf_key(&self, i: usize) -> &[u8] {
        debug_assert!(self.is_leaf());
        let at = usize::from(self.offsets[i]);
        let kl = usize::from(u16_at(&self.bytes, at));
        &self.bytes[at + 4..at + 4 + kl]
    }

    /// Value of leaf entry `i`.
    pub fn leaf_value(&self, i: usize) -> &[u8] {
        debug_assert!(self.is_leaf());
        let at = usize::from(self.offsets[i]);
        let kl = usize::from(u16_at(&self.bytes, at));
        let vl = usize::from(u16_at(&self.bytes, at + 2));
        &self.bytes[at + 4 + kl..at + 4 + kl + vl]
    }

    /// `Ok(i)` if leaf entry `i` has `key`, else `Err(i)` with the entry it would
    /// precede.
    pub fn leaf_find(&self, key: &[u8]) -> std::result::Result<usize, usize> {
        let (mut lo, mut hi) = (0, self.leaf_len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.leaf_key(mid).cmp(key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(lo)
    }

    /// Children of a branch (one more than its separators).
    pub fn children_len(&self) -> usize {
        debug_assert!(!self.is_leaf());
        self.offsets.len() + 1
    }

    /// Separator `i` of a branch: the smallest key child `i + 1` may hold.
    pub fn separator(&self, i: usize) -> &[u8] {
        debug_assert!(!self.is_leaf());
        let at = usize::from(self.offsets[i]);
        let kl = usize::from(u16_at(&self.bytes, at));
        &self.bytes[at + 2..at + 2 + kl]
    }

    /// Pointer to child `i` of a branch.
    pub fn child(&self, i: usize) -> NodeRef {
        debug_assert!(!self.is_leaf());
        let at = if i == 0 {
            PAGE_HEADER
        } else {
            let sep = usize::from(self.offsets[i - 1]);
            sep + 2 + usize::from(u16_at(&self.bytes, sep))
        };
        NodeRef {
            page: u64_at(&self.bytes, at),
            generation: u64_at(&self.bytes, at + 8),
            checksum: u32_at(&self.bytes, at + 16),
        }
    }

    /// Index of the child of a branch that holds `key`: the number of separators at
    /// or below it.
    pub fn child_index(&self, key: &[u8]) -> usize {
        let (mut lo, mut hi) = (0, self.offsets.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.separator(mid) <= key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// The page as an owned [`Node`], for a checkpoint's merge to rewrite.
    pub fn to_node(&self) -> Node {
        if self.is_leaf() {
            Node::Leaf(
                (0..self.leaf_len())
                    .map(|i| (self.leaf_key(i).to_vec(), self.leaf_value(i).to_vec()))
                    .collect(),
            )
        } else {
            Node::Branch {
                level: self.level,
                keys: (0..self.offsets.len())
                    .map(|i| self.separator(i).to_vec())
                    .collect(),
                children: (0..self.children_len()).map(|i| self.child(i)).collect(),
            }
        }
    }
}

/// Whether `b` (a whole page) is an intact tree page of ours, wherever it sits.
pub fn is_tree_page(b: &[u8]) -> bool {
    b.len() == PAGE_SIZE
        && matches!(b[PG_TYPE], TYPE_LEAF | TYPE_BRANCH)
        && crc32fast::hash(&b[PG_TYPE..]) == u32_at(b, PG_CRC)
}

/// The crc32 a page image carries (what its parent records).
pub fn page_checksum(page: &[u8]) -> u32 {
    u32_at(page, PG_CRC)
}

impl Node {
    /// 0 for a leaf; a branch's children are one level lower.
    pub fn level(&self) -> u8 {
        match self {
            Node::Leaf(_) => 0,
            Node::Branch { level, .. } => *level,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superblock_round_trips_and_detects_damage() {
        let s = Superblock {
            generation: 7,
            checkpoint_ts: 99,
            root: Some(NodeRef {
                page: 5,
                generation: 6,
                checksum: 77,
            }),
            page_count: 10,
            wal_segment: 3,
            wal_lsn: 1000,
        };
        let mut b = s.encode();
        assert!(matches!(Superblock::decode(&b), SuperSlot::Valid(d) if d == s));
        b[20] ^= 1;
        assert!(matches!(Superblock::decode(&b), SuperSlot::Damaged(_)));
        b[SB_VERSION] = 9;
        assert!(matches!(Superblock::decode(&b), SuperSlot::Damaged(_)));
        let stamp = crc32fast::hash(&b[..SB_VERSION_CHECK]);
        b[SB_VERSION_CHECK..SB_VERSION_CHECK + 4].copy_from_slice(&stamp.to_le_bytes());
        assert!(matches!(Superblock::decode(&b), SuperSlot::Newer(9)));
        assert!(matches!(
            Superblock::decode(&[0u8; PAGE_SIZE]),
            SuperSlot::Foreign
        ));
    }

    #[test]
    fn nodes_round_trip_and_check_their_address() {
        let file = Path::new("data");
        let leaf = Node::Leaf(vec![
            (b"a".to_vec(), b"1".to_vec()),
            (b"b".to_vec(), vec![]),
        ]);
        let b = leaf.encode(4, 2);
        let at = NodeRef {
            page: 4,
            generation: 2,
            checksum: page_checksum(&b),
        };
        assert_eq!(Node::decode(&b, at, file).unwrap(), leaf);
        let wrong_gen = NodeRef {
            generation: 1,
            ..at
        };
        let wrong_crc = NodeRef {
            checksum: at.checksum ^ 1,
            ..at
        };
        assert!(
            Node::decode(&b, wrong_crc, file)
                .unwrap_err()
                .is_corrupted()
        );
        assert!(
            Node::decode(&b, wrong_gen, file)
                .unwrap_err()
                .is_corrupted()
        );
        let branch = Node::Branch {
            level: 1,
            keys: vec![b"m".to_vec()],
            children: vec![
                at,
                NodeRef {
                    page: 9,
                    generation: 1,
                    checksum: 5,
                },
            ],
        };
        let b = branch.encode(11, 3);
        let here = NodeRef {
            page: 11,
            generation: 3,
            checksum: page_checksum(&b),
        };
        assert_eq!(Node::decode(&b, here, file).unwrap(), branch);
        let mut flipped = b.clone();
        flipped[100] ^= 4;
        assert!(
            Node::decode(&flipped, here, file)
                .unwrap_err()
                .is_corrupted()
        );
    }
}
