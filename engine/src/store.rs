//! The data file behind a bounded page cache.
//!
//! The cache holds validated page images ([`Page`]) keyed by page number and remembers
//! the full pointer (generation and checksum) each was read or written under, so a
//! page reused by a later checkpoint is never served for an older pointer.
//!
//! Eviction is CLOCK (second chance): each slot has a referenced bit that a hit sets;
//! the hand clears set bits and evicts the first slot whose bit is clear. A hit costs
//! one ordered-map lookup and a bit store, an eviction amortised O(1). Everything is
//! ordered (no hashing), so eviction is deterministic for a given access sequence.

use crate::error::{Error, Result};
use crate::page::{
    Node, NodeRef, PAGE_SIZE, Page, SUPER_LEN, SuperSlot, Superblock, page_checksum,
};
use ryu_io::DynFile;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

#[derive(Debug)]
struct Slot {
    at: NodeRef,
    page: Arc<Page>,
    referenced: bool,
}

#[derive(Debug, Default)]
struct Cache {
    /// Page number to its slot in `slots`.
    index: BTreeMap<u64, usize>,
    /// `None` marks a slot freed by `forget`, listed in `empty`.
    slots: Vec<Option<Slot>>,
    empty: Vec<usize>,
    hand: usize,
    hits: u64,
    misses: u64,
}

impl Cache {
    fn get(&mut self, at: NodeRef) -> Option<Arc<Page>> {
        let &i = self.index.get(&at.page)?;
        let slot = self.slots[i].as_mut().expect("indexed slots are full");
        if slot.at != at {
            return None;
        }
        slot.referenced = true;
        Some(slot.page.clone())
    }

    fn insert(&mut self, at: NodeRef, page: Arc<Page>, capacity: usize) {
        let slot = Slot {
            at,
            page,
            referenced: true,
        };
        if let Some(&i) = self.index.get(&at.page) {
            self.slots[i] = Some(slot);
            return;
        }
        let i = if let Some(i) = self.empty.pop() {
            i
        } else if self.slots.len() < capacity.max(1) {
            self.slots.push(None);
            self.slots.len() - 1
        } else {
            self.evict()
        };
        debug_assert!(self.slots[i].is_none());
        self.slots[i] = Some(slot);
        self.index.insert(at.page, i);
        debug_assert_eq!(self.index.len() + self.empty.len(), self.slots.len());
    }

    /// Empty the first slot past the hand whose referenced bit is clear, clearing set
    /// bits on the way (at most one full turn does that), and return it.
    fn evict(&mut self) -> usize {
        assert!(self.empty.is_empty() && !self.slots.is_empty());
        loop {
            let i = self.hand;
            self.hand = (self.hand + 1) % self.slots.len();
            let slot = self.slots[i]
                .as_mut()
                .expect("a full cache has no empty slot");
            if slot.referenced {
                slot.referenced = false;
                continue;
            }
            let victim = self.slots[i].take().expect("checked");
            self.index
                .remove(&victim.at.page)
                .expect("slot was indexed");
            return i;
        }
    }

    fn forget(&mut self, page: u64) {
        if let Some(i) = self.index.remove(&page) {
            self.slots[i] = None;
            self.empty.push(i);
        }
    }
}

/// Cache statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub resident_pages: usize,
}

/// The data file and its cache.
#[derive(Debug)]
pub struct PageStore {
    pub file: DynFile,
    pub path: PathBuf,
    capacity_pages: usize,
    cache: Mutex<Cache>,
}

impl PageStore {
    pub fn new(file: DynFile, path: PathBuf, capacity_pages: usize) -> PageStore {
        PageStore {
            file,
            path,
            capacity_pages: capacity_pages.max(1),
            cache: Mutex::new(Cache::default()),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().expect("page cache lock poisoned")
    }

    /// The page at `at`, from the cache or the file.
    pub fn load(&self, at: NodeRef) -> Result<Arc<Page>> {
        {
            let mut c = self.cache();
            if let Some(page) = c.get(at) {
                c.hits += 1;
                return Ok(page);
            }
            c.misses += 1;
        }
        let mut buf = vec![0u8; PAGE_SIZE].into_boxed_slice();
        self.file
            .read_at(at.page * PAGE_SIZE as u64, &mut buf)
            .map_err(|e| match e {
                ryu_io::IoError::UnexpectedEof { .. } => Error::corrupted(
                    &self.path,
                    at.page * PAGE_SIZE as u64,
                    format!("page {} lies past the end of the file", at.page),
                ),
                e => Error::io("page read", e),
            })?;
        let page = Arc::new(Page::parse(buf, at, &self.path)?);
        self.cache().insert(at, page.clone(), self.capacity_pages);
        Ok(page)
    }

    /// Write `node` as page `page` of `generation`, cache it, and return the pointer a
    /// parent must record (with the page's checksum).
    pub fn store(&self, page: u64, generation: u64, node: Node) -> Result<NodeRef> {
        let bytes = node.encode(page, generation);
        let at = NodeRef {
            page,
            generation,
            checksum: page_checksum(&bytes),
        };
        self.file
            .write_at(page * PAGE_SIZE as u64, &bytes)
            .map_err(|e| Error::io("page write", e))?;
        // Checked after writing as after reading: an encoder bug stops here, not in a
        // later reader.
        let parsed = Page::parse(bytes.into_boxed_slice(), at, &self.path)
            .expect("a page this build encoded parses");
        self.cache()
            .insert(at, Arc::new(parsed), self.capacity_pages);
        Ok(at)
    }

    /// Forget cached copies of `pages` (after a failed checkpoint wrote them).
    pub fn forget(&self, pages: impl IntoIterator<Item = u64>) {
        let mut c = self.cache();
        for p in pages {
            c.forget(p);
        }
    }

    /// Read superblock slot `slot`; a file too short for it reads as a blank slot.
    pub fn read_super(&self, slot: u64) -> Result<SuperSlot> {
        let mut buf = vec![0u8; SUPER_LEN];
        match self.file.read_at(slot * PAGE_SIZE as u64, &mut buf) {
            Ok(()) => Ok(Superblock::decode(&buf)),
            Err(ryu_io::IoError::UnexpectedEof { .. }) => Ok(SuperSlot::Foreign),
            Err(e) => Err(Error::io("superblock read", e)),
        }
    }

    /// Whether one of the first pages is an intact tree page: then a file without any
    /// superblock is ours, its superblocks overwritten, not a foreign file.
    pub fn has_tree_page_near_start(&self) -> bool {
        let mut buf = vec![0u8; PAGE_SIZE];
        (0..4u64).any(|p| {
            self.file.read_at(p * PAGE_SIZE as u64, &mut buf).is_ok()
                && crate::page::is_tree_page(&buf)
        })
    }

    pub fn stats(&self) -> CacheStats {
        let c = self.cache();
        CacheStats {
            hits: c.hits,
            misses: c.misses,
            resident_pages: c.index.len(),
        }
    }
}
