//! The data file behind a bounded page cache.
//!
//! The cache holds decoded nodes keyed by page number and remembers the full pointer
//! (generation and checksum) each was read or written under, so a page reused by a
//! later checkpoint is never served for an older pointer. Eviction is least-recently-used by a logical counter: deterministic, and
//! independent of hashing.

use crate::error::{Error, Result};
use crate::page::{Node, NodeRef, PAGE_SIZE, SUPER_LEN, SuperSlot, Superblock, page_checksum};
use ryu_io::DynFile;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

#[derive(Debug)]
struct Cached {
    node: Arc<Node>,
    at: NodeRef,
    tick: u64,
}

#[derive(Debug, Default)]
struct Cache {
    pages: BTreeMap<u64, Cached>,
    by_tick: BTreeMap<u64, u64>,
    tick: u64,
    hits: u64,
    misses: u64,
}

impl Cache {
    fn touch(&mut self, page: u64) {
        self.tick += 1;
        let tick = self.tick;
        if let Some(c) = self.pages.get_mut(&page) {
            self.by_tick.remove(&c.tick);
            c.tick = tick;
            self.by_tick.insert(tick, page);
        }
    }

    fn insert(&mut self, at: NodeRef, node: Arc<Node>, capacity: usize) {
        let page = at.page;
        if let Some(old) = self.pages.remove(&page) {
            self.by_tick.remove(&old.tick);
        }
        while self.pages.len() >= capacity.max(1) {
            let (_, victim) = self.by_tick.pop_first().expect("non-empty cache has ticks");
            self.pages
                .remove(&victim)
                .expect("tick index matches pages");
        }
        self.tick += 1;
        self.pages.insert(
            page,
            Cached {
                node,
                at,
                tick: self.tick,
            },
        );
        self.by_tick.insert(self.tick, page);
        debug_assert_eq!(self.pages.len(), self.by_tick.len());
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

    /// The node at `at`, from the cache or the file.
    pub fn load(&self, at: NodeRef) -> Result<Arc<Node>> {
        {
            let mut c = self.cache();
            if let Some(hit) = c.pages.get(&at.page)
                && hit.at == at
            {
                let node = hit.node.clone();
                c.touch(at.page);
                c.hits += 1;
                return Ok(node);
            }
            c.misses += 1;
        }
        let mut buf = vec![0u8; PAGE_SIZE];
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
        let node = Arc::new(Node::decode(&buf, at, &self.path)?);
        self.cache().insert(at, node.clone(), self.capacity_pages);
        Ok(node)
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
        self.cache().insert(at, Arc::new(node), self.capacity_pages);
        Ok(at)
    }

    /// Forget cached copies of `pages` (after a failed checkpoint wrote them).
    pub fn forget(&self, pages: impl IntoIterator<Item = u64>) {
        let mut c = self.cache();
        for p in pages {
            if let Some(old) = c.pages.remove(&p) {
                c.by_tick.remove(&old.tick);
            }
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
            resident_pages: c.pages.len(),
        }
    }
}
