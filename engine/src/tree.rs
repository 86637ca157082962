//! The copy-on-write B+tree: lookups and scans over a generation's root, and the
//! checkpoint's bulk merge of a sorted change list into a new generation.
//!
//! Copy-on-write rule: a merge never writes a page reachable from the root it started
//! from; every node on a changed path is written to a page taken from the
//! [`Allocator`] (pages free in every generation anyone may still read), and the
//! replaced pages are reported in [`Merge::freed`] so the caller can reuse them once no
//! pin on an older generation remains.

use crate::error::{Error, Result};
use crate::page::{FIRST_TREE_PAGE, Node, NodeRef, PAGE_BODY, Page};
use crate::store::PageStore;
use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::Arc;

/// A key with its value.
pub type Entry = (Vec<u8>, Vec<u8>);

fn load_child(store: &PageStore, parent_level: u8, at: NodeRef) -> Result<Arc<Page>> {
    let page = store.load(at)?;
    if page.level() + 1 != parent_level {
        return Err(Error::corrupted(
            &store.path,
            at.page * crate::page::PAGE_SIZE as u64,
            format!(
                "page {} has level {}, its parent expects {}",
                at.page,
                page.level(),
                parent_level - 1
            ),
        ));
    }
    Ok(page)
}

/// A leaf's keys must lie in `[lo, hi)`, the separators its ancestors route by. A
/// checksum-valid page that breaks this (a bug, or a page copied whole into the wrong
/// place) would make reads miss keys and scans return them out of order: report it.
fn check_leaf_bounds(
    store: &PageStore,
    at: NodeRef,
    leaf: &Page,
    lo: Option<&[u8]>,
    hi: Option<&[u8]>,
) -> Result<()> {
    let n = leaf.leaf_len();
    if n == 0 {
        return Ok(());
    }
    if lo.is_some_and(|lo| leaf.leaf_key(0) < lo) || hi.is_some_and(|hi| leaf.leaf_key(n - 1) >= hi)
    {
        return Err(Error::corrupted(
            &store.path,
            at.page * crate::page::PAGE_SIZE as u64,
            format!(
                "page {} holds keys outside the range its parent routes to it",
                at.page
            ),
        ));
    }
    Ok(())
}

/// A separator of a branch page: `page.separator(index)`, kept alive past the descent.
type Separator = Option<(Arc<Page>, usize)>;

fn separator(s: &Separator) -> Option<&[u8]> {
    s.as_ref().map(|(page, i)| page.separator(*i))
}

/// The value of `key` in the tree at `root`.
pub fn get(store: &PageStore, root: Option<NodeRef>, key: &[u8]) -> Result<Option<Vec<u8>>> {
    let Some(root) = root else { return Ok(None) };
    let mut at = root;
    let mut page = store.load(root)?;
    let (mut lo, mut hi): (Separator, Separator) = (None, None);
    while !page.is_leaf() {
        let i = page.child_index(key);
        if i > 0 {
            lo = Some((page.clone(), i - 1));
        }
        if i + 1 < page.children_len() {
            hi = Some((page.clone(), i));
        }
        at = page.child(i);
        page = load_child(store, page.level(), at)?;
    }
    check_leaf_bounds(store, at, &page, separator(&lo), separator(&hi))?;
    Ok(page
        .leaf_find(key)
        .ok()
        .map(|i| page.leaf_value(i).to_vec()))
}

fn below(hi: &Bound<Vec<u8>>, key: &[u8]) -> bool {
    match hi {
        Bound::Unbounded => true,
        Bound::Included(h) => key <= h.as_slice(),
        Bound::Excluded(h) => key < h.as_slice(),
    }
}

/// Append to `out` up to `limit` entries of the tree in `(lo, hi)`, ascending.
pub fn scan(
    store: &PageStore,
    root: Option<NodeRef>,
    lo: &Bound<Vec<u8>>,
    hi: &Bound<Vec<u8>>,
    limit: usize,
    out: &mut Vec<Entry>,
) -> Result<()> {
    let Some(root) = root else { return Ok(()) };
    let page = store.load(root)?;
    let walk = Walk {
        store,
        lo,
        hi,
        limit,
    };
    walk.page(root, &page, (None, None), out)
}

/// One scan's fixed arguments.
struct Walk<'a> {
    store: &'a PageStore,
    lo: &'a Bound<Vec<u8>>,
    hi: &'a Bound<Vec<u8>>,
    limit: usize,
}

impl Walk<'_> {
    /// Scan `page` (at `at`), whose keys its ancestors bound to `[routed.0, routed.1)`.
    fn page(
        &self,
        at: NodeRef,
        page: &Page,
        routed: (Option<&[u8]>, Option<&[u8]>),
        out: &mut Vec<Entry>,
    ) -> Result<()> {
        if page.is_leaf() {
            check_leaf_bounds(self.store, at, page, routed.0, routed.1)?;
            let first = match self.lo {
                Bound::Unbounded => 0,
                Bound::Included(l) => page.leaf_find(l).unwrap_or_else(|i| i),
                Bound::Excluded(l) => page.leaf_find(l).map_or_else(|i| i, |i| i + 1),
            };
            for i in first..page.leaf_len() {
                let k = page.leaf_key(i);
                if out.len() >= self.limit || !below(self.hi, k) {
                    break;
                }
                out.push((k.to_vec(), page.leaf_value(i).to_vec()));
            }
            return Ok(());
        }
        let first = match self.lo {
            Bound::Unbounded => 0,
            Bound::Included(l) | Bound::Excluded(l) => page.child_index(l),
        };
        let n = page.children_len();
        for i in first..n {
            if out.len() >= self.limit || (i > 0 && !below(self.hi, page.separator(i - 1))) {
                break;
            }
            let child_at = page.child(i);
            let child = load_child(self.store, page.level(), child_at)?;
            let bounds = (
                if i > 0 {
                    Some(page.separator(i - 1))
                } else {
                    routed.0
                },
                if i + 1 < n {
                    Some(page.separator(i))
                } else {
                    routed.1
                },
            );
            self.page(child_at, &child, bounds, out)?;
        }
        Ok(())
    }
}

/// Visit every page of the tree at `root` whose generation is above `since`, with its
/// level (0 = leaf). Subtrees whose root is not newer are skipped: copy-on-write
/// rewrites every ancestor of a changed page, so an old page has only old descendants.
/// Leaves are never read.
pub fn walk_since(
    store: &PageStore,
    root: Option<NodeRef>,
    since: u64,
    visit: &mut dyn FnMut(NodeRef, u8),
) -> Result<()> {
    let Some(root) = root else { return Ok(()) };
    if root.generation <= since {
        return Ok(());
    }
    let page = store.load(root)?;
    walk_page(store, root, &page, since, visit)
}

fn walk_page(
    store: &PageStore,
    at: NodeRef,
    page: &Page,
    since: u64,
    visit: &mut dyn FnMut(NodeRef, u8),
) -> Result<()> {
    visit(at, page.level());
    if page.is_leaf() {
        return Ok(());
    }
    for i in 0..page.children_len() {
        let c = page.child(i);
        if c.generation > at.generation {
            return Err(Error::corrupted(
                &store.path,
                at.page * crate::page::PAGE_SIZE as u64,
                "child newer than its parent",
            ));
        }
        if c.generation <= since {
            continue;
        }
        if page.level() == 1 {
            visit(c, 0);
        } else {
            let child = load_child(store, page.level(), c)?;
            walk_page(store, c, &child, since, visit)?;
        }
    }
    Ok(())
}

/// Hands out pages for a checkpoint: free pages first (lowest number first, for
/// locality), then new pages at the end of the file.
#[derive(Debug)]
pub struct Allocator {
    pub free: BTreeSet<u64>,
    pub page_count: u64,
    /// Pages handed out, in order.
    pub taken: Vec<u64>,
}

impl Allocator {
    pub fn alloc(&mut self) -> u64 {
        let page = match self.free.pop_first() {
            Some(p) => p,
            None => {
                self.page_count += 1;
                self.page_count - 1
            }
        };
        assert!(page >= FIRST_TREE_PAGE && page < self.page_count);
        self.taken.push(page);
        page
    }
}

/// One checkpoint's merge.
#[derive(Debug)]
pub struct Merge<'a> {
    pub store: &'a PageStore,
    pub generation: u64,
    pub alloc: Allocator,
    /// Pages of the old tree replaced by this merge.
    pub freed: Vec<u64>,
}

type Part = (Option<Vec<u8>>, NodeRef);

impl Merge<'_> {
    /// Apply sorted, distinct-key `changes` (`None` deletes) to the tree at `root`;
    /// returns the new root.
    pub fn apply(
        &mut self,
        root: Option<NodeRef>,
        changes: &[(Vec<u8>, Option<Vec<u8>>)],
    ) -> Result<Option<NodeRef>> {
        assert!(
            changes.windows(2).all(|w| w[0].0 < w[1].0),
            "changes sorted and distinct"
        );
        if changes.is_empty() {
            return Ok(root);
        }
        let (mut parts, mut level) = match root {
            None => (self.write_leaves(merge_sorted(Vec::new(), changes))?, 0u8),
            Some(r) => {
                let node = self.store.load(r)?.to_node();
                let level = node.level();
                (self.merge_node(r, &node, changes)?, level)
            }
        };
        while parts.len() > 1 {
            level += 1;
            parts = self.write_branches(level, parts)?;
        }
        let Some((_, mut root)) = parts.pop() else {
            return Ok(None);
        };
        // Shrink the height while the root is a branch with a single child. A page this
        // merge wrote goes straight back to the allocator; an older one is freed.
        loop {
            let page = self.store.load(root)?;
            if page.is_leaf() || page.children_len() > 1 {
                return Ok(Some(root));
            }
            if root.generation == self.generation {
                self.alloc.free.insert(root.page);
                self.alloc.taken.retain(|&p| p != root.page);
            } else {
                self.freed.push(root.page);
            }
            root = page.child(0);
        }
    }

    fn merge_node(
        &mut self,
        at: NodeRef,
        node: &Node,
        changes: &[(Vec<u8>, Option<Vec<u8>>)],
    ) -> Result<Vec<Part>> {
        assert!(!changes.is_empty());
        assert!(
            at.generation < self.generation,
            "a merge only replaces older pages"
        );
        self.freed.push(at.page);
        match node {
            Node::Leaf(entries) => self.write_leaves(merge_sorted(entries.clone(), changes)),
            Node::Branch {
                level,
                keys,
                children,
            } => {
                let mut out: Vec<Part> = Vec::with_capacity(children.len() + 2);
                // Above leaves, the changed leaves of a run of adjacent children are
                // merged into one sorted run and packed afresh, so deletions spread
                // over neighbouring leaves compact them instead of leaving each nearly
                // empty. `run_lo` is the lower bound of the run's first child.
                let mut run: Vec<Entry> = Vec::new();
                let mut run_lo: Option<Option<Vec<u8>>> = None;
                let mut rest = changes;
                for (i, &child) in children.iter().enumerate() {
                    let lo = if i == 0 {
                        None
                    } else {
                        Some(keys[i - 1].clone())
                    };
                    let take = match keys.get(i) {
                        Some(hi) => rest.partition_point(|(k, _)| k < hi),
                        None => rest.len(),
                    };
                    let (mine, after) = rest.split_at(take);
                    rest = after;
                    if mine.is_empty() {
                        self.flush_run(&mut run, &mut run_lo, &mut out)?;
                        out.push((lo, child));
                        continue;
                    }
                    let child_node = load_child(self.store, *level, child)?.to_node();
                    if let Node::Leaf(entries) = &child_node {
                        assert_eq!(*level, 1);
                        assert!(child.generation < self.generation);
                        self.freed.push(child.page);
                        run_lo.get_or_insert(lo);
                        debug_assert!(
                            run.last()
                                .is_none_or(|(k, _)| entries.first().is_none_or(|(f, _)| k < f))
                        );
                        run.extend(merge_sorted(entries.clone(), mine));
                        continue;
                    }
                    for (j, (bound, r)) in self
                        .merge_node(child, &child_node, mine)?
                        .into_iter()
                        .enumerate()
                    {
                        out.push((if j == 0 { lo.clone() } else { bound }, r));
                    }
                }
                self.flush_run(&mut run, &mut run_lo, &mut out)?;
                assert!(rest.is_empty());
                if out.is_empty() {
                    return Ok(Vec::new());
                }
                self.write_branches(*level, out)
            }
        }
    }

    /// Pack a run of merged leaf entries into leaves, the first taking the run's lower
    /// bound; an empty run (everything deleted) adds nothing.
    fn flush_run(
        &mut self,
        run: &mut Vec<Entry>,
        run_lo: &mut Option<Option<Vec<u8>>>,
        out: &mut Vec<Part>,
    ) -> Result<()> {
        let Some(lo) = run_lo.take() else {
            assert!(run.is_empty());
            return Ok(());
        };
        for (j, (bound, r)) in self
            .write_leaves(std::mem::take(run))?
            .into_iter()
            .enumerate()
        {
            out.push((if j == 0 { lo.clone() } else { bound }, r));
        }
        Ok(())
    }

    fn write(&mut self, node: Node) -> Result<NodeRef> {
        let page = self.alloc.alloc();
        self.store.store(page, self.generation, node)
    }

    /// Pack sorted entries greedily into leaves.
    fn write_leaves(&mut self, entries: Vec<Entry>) -> Result<Vec<Part>> {
        let mut parts = Vec::new();
        let mut current: Vec<Entry> = Vec::new();
        let mut size = 0;
        for (k, v) in entries {
            let add = Node::leaf_entry_size(&k, &v);
            if size + add > PAGE_BODY {
                let bound = (!parts.is_empty()).then(|| current[0].0.clone());
                parts.push((bound, self.write(Node::Leaf(std::mem::take(&mut current)))?));
                size = 0;
            }
            size += add;
            current.push((k, v));
        }
        if !current.is_empty() {
            let bound = (!parts.is_empty()).then(|| current[0].0.clone());
            parts.push((bound, self.write(Node::Leaf(current))?));
        }
        Ok(parts)
    }

    /// Pack children (each with its lower bound; the first may lack one) into branches
    /// of `level`; returns the branches with their lower bounds.
    fn write_branches(&mut self, level: u8, children: Vec<Part>) -> Result<Vec<Part>> {
        assert!(!children.is_empty() && level >= 1);
        let mut parts = Vec::new();
        let mut group: Vec<Part> = Vec::new();
        let mut size = 0;
        for (bound, child) in children {
            let add = if group.is_empty() {
                Node::BRANCH_FIRST
            } else {
                Node::branch_entry_size(
                    bound
                        .as_deref()
                        .expect("only the first child lacks a bound"),
                )
            };
            if !group.is_empty() && size + add > PAGE_BODY {
                parts.push(self.write_branch(
                    level,
                    std::mem::take(&mut group),
                    parts.is_empty(),
                )?);
                size = 0;
            }
            size += if group.is_empty() {
                Node::BRANCH_FIRST
            } else {
                add
            };
            group.push((bound, child));
        }
        parts.push(self.write_branch(level, group, parts.is_empty())?);
        Ok(parts)
    }

    fn write_branch(&mut self, level: u8, group: Vec<Part>, first: bool) -> Result<Part> {
        let bound = if first { None } else { group[0].0.clone() };
        let mut keys = Vec::with_capacity(group.len() - 1);
        let mut children = Vec::with_capacity(group.len());
        for (i, (b, c)) in group.into_iter().enumerate() {
            if i > 0 {
                keys.push(b.expect("inner children have bounds"));
            }
            children.push(c);
        }
        let at = self.write(Node::Branch {
            level,
            keys,
            children,
        })?;
        Ok((bound, at))
    }
}

/// Merge sorted `entries` with sorted `changes` (`None` deletes).
fn merge_sorted(entries: Vec<Entry>, changes: &[(Vec<u8>, Option<Vec<u8>>)]) -> Vec<Entry> {
    let mut out = Vec::with_capacity(entries.len() + changes.len());
    let mut it = entries.into_iter().peekable();
    for (k, v) in changes {
        while let Some(e) = it.next_if(|(ek, _)| ek < k) {
            out.push(e);
        }
        it.next_if(|(ek, _)| ek == k);
        if let Some(v) = v {
            out.push((k.clone(), v.clone()));
        }
    }
    out.extend(it);
    debug_assert!(out.windows(2).all(|w| w[0].0 < w[1].0));
    out
}
