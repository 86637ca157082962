//! `SimDisk`: an in-memory [`Disk`] with the crash semantics of a real page cache and a
//! seeded fault model.
//!
//! # The model, zone by zone
//!
//! **File contents.** Every file is an inode holding two images: `live`, what the OS
//! page cache shows to readers, and `durable`, what the media holds. `write_at` and
//! `set_len` change `live` at once and are remembered as *pending* operations of that
//! inode, in order. `sync_data` applies the pending operations to `durable` and forgets
//! them. (It does not copy `live`: after a failed sync the two may differ for good.)
//!
//! **Namespace.** Directories are inodes too, each with a `live` and a `durable` entry
//! table (`name -> inode`). `create`, `create_dir_all`, `rename` and `remove` change the
//! live tables at once and are remembered as pending namespace operations, each naming
//! the (directory, name) *slots* it changes. `sync_dir(d)` makes durable every pending
//! operation touching `d`, together with every earlier pending operation that shares a
//! slot with it (a journal never reorders two changes to the same name). A rename is
//! one operation: it becomes durable as a whole when either of its directories is synced.
//!
//! **Crash.** [`SimDisk::crash`] throws every live image away and rebuilds from the
//! durable ones, after deciding the fate of everything pending:
//! - each pending namespace operation, in order, is applied or lost (a lost operation
//!   takes every later operation on one of its slots with it);
//! - each pending write is independently kept whole, dropped, or torn: torn means each
//!   512-byte sector it touches (aligned to file offsets) is kept or dropped on its own;
//!   each pending `set_len` is kept or dropped;
//! - inodes no longer reachable from the root vanish.
//!
//! The disk never invents bytes: after a crash every byte of a file is a durable byte,
//! a byte some pending write put there, or a zero in a gap that a kept write or length
//! change opened. Open handles from before the crash fail with "stale handle".
//!
//! **Faults**, each an integer ratio drawn per seed ([`DiskFaults::draw`]) and counted
//! in [`FaultCounts`]:
//! - read, write and sync errors (a failed write changes nothing; a failed `sync_data`
//!   resolves the file's pending writes as a crash would, into the durable image, while
//!   readers keep seeing the live image: Linux's fsync-error behaviour);
//! - latent sector errors: a sector that fails every read until it is rewritten;
//! - silent bit flips at rest: one bit of a file changes in both images;
//! - misdirected writes: the data lands 1 to 8 sectors away from where it was aimed;
//! - no space: a write or extension beyond the byte quota fails with `NoSpace`;
//! - slow operations: an operation's simulated latency is multiplied.
//!
//! The simulated latency of every operation accumulates in [`SimDisk::take_elapsed_ns`]
//! for the harness to turn into virtual time.

use crate::rng::{Ratio, SimRng};
use ryu_io::{Disk, DynFile, File, IoError, IoResult};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// The torn-write granularity.
pub const SECTOR_SIZE: u64 = 512;

type Ino = u64;
const ROOT: Ino = 0;

/// Fault probabilities for one disk. All zero by default (a perfect disk).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskFaults {
    /// Per `read_at`: fail with an I/O error.
    pub read_error: Ratio,
    /// Per `write_at`/`set_len`: fail with an I/O error, changing nothing.
    pub write_error: Ratio,
    /// Per `sync_data`/`sync_dir`: fail with an I/O error.
    pub sync_error: Ratio,
    /// Per `write_at`: afterwards, one sector of the file becomes unreadable.
    pub latent_sector_error: Ratio,
    /// Per `write_at`: afterwards, one random bit of the file flips (in both images).
    pub bit_flip: Ratio,
    /// Per `write_at`: the data lands 1 to 8 sectors away from its offset.
    pub misdirected_write: Ratio,
    /// Per operation: its latency is multiplied by 10 to 100.
    pub slow: Ratio,
    /// Total live bytes allowed across all files; `None` for no limit.
    pub quota_bytes: Option<u64>,
}

impl DiskFaults {
    /// Swarm testing: each fault is off in about half the seeds and otherwise drawn
    /// small, so that some runs are clean and others are hostile.
    pub fn draw(rng: &mut SimRng) -> DiskFaults {
        let off = Ratio::new(1, 2);
        DiskFaults {
            read_error: rng.swarm_ratio(off, 5, 1000),
            write_error: rng.swarm_ratio(off, 5, 1000),
            sync_error: rng.swarm_ratio(off, 5, 1000),
            latent_sector_error: rng.swarm_ratio(off, 2, 1000),
            bit_flip: rng.swarm_ratio(off, 2, 1000),
            misdirected_write: rng.swarm_ratio(off, 2, 1000),
            slow: rng.swarm_ratio(off, 20, 1000),
            quota_bytes: None,
        }
    }

    /// True when no fault can fire.
    pub fn is_clean(&self) -> bool {
        *self == DiskFaults::default()
    }
}

/// How many faults of each kind fired, and what crashes did to unsynced state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub read_errors: u64,
    pub write_errors: u64,
    pub sync_errors: u64,
    pub latent_sector_errors: u64,
    pub latent_sector_reads: u64,
    pub bit_flips: u64,
    pub misdirected_writes: u64,
    pub no_space: u64,
    pub slow_ops: u64,
    pub crashes: u64,
    pub crash_writes_kept: u64,
    pub crash_writes_dropped: u64,
    pub crash_writes_torn: u64,
    pub crash_dir_ops_lost: u64,
}

impl FaultCounts {
    /// Faults that corrupt or lose data silently (as opposed to returning an error).
    pub fn silent_corruptions(&self) -> u64 {
        self.bit_flips + self.misdirected_writes
    }
}

#[derive(Debug, Clone)]
enum Pending {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Clone, Default)]
struct FileNode {
    live: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<Pending>,
}

#[derive(Debug, Clone)]
enum Node {
    File(FileNode),
    Dir {
        live: BTreeMap<String, Ino>,
        durable: BTreeMap<String, Ino>,
    },
}

/// One pending namespace operation: the slots it sets (`Some`) or clears (`None`).
#[derive(Debug, Clone)]
struct NsOp {
    changes: Vec<(Ino, String, Option<Ino>)>,
}

impl NsOp {
    fn touches_dir(&self, dir: Ino) -> bool {
        self.changes.iter().any(|(d, _, _)| *d == dir)
    }

    fn shares_slot(&self, other: &NsOp) -> bool {
        self.changes
            .iter()
            .any(|(d, n, _)| other.changes.iter().any(|(d2, n2, _)| d == d2 && n == n2))
    }
}

#[derive(Debug)]
struct State {
    rng: SimRng,
    faults: DiskFaults,
    counts: FaultCounts,
    nodes: BTreeMap<Ino, Node>,
    next_ino: Ino,
    pending_ns: Vec<NsOp>,
    latent: BTreeSet<(Ino, u64)>,
    generation: u64,
    elapsed_ns: u64,
}

/// A simulated disk. Clones share one disk (one per simulated node).
#[derive(Debug, Clone)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
}

/// A handle to a file on a [`SimDisk`]; stale after a crash.
#[derive(Debug)]
struct SimFile {
    state: Arc<Mutex<State>>,
    ino: Ino,
    generation: u64,
}

const READ_NS: u64 = 20_000;
const WRITE_NS: u64 = 20_000;
const SYNC_NS: u64 = 500_000;
const META_NS: u64 = 10_000;

fn injected(op: &'static str, what: &str) -> IoError {
    IoError::io(op, format!("injected {what}"))
}

fn parse(path: &Path) -> IoResult<Vec<String>> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(s) => match s.to_str() {
                Some(s) => parts.push(s.to_string()),
                None => {
                    return Err(IoError::io(
                        "path",
                        format!("{} is not UTF-8", path.display()),
                    ));
                }
            },
            Component::CurDir => {}
            _ => {
                return Err(IoError::io(
                    "path",
                    format!("{} is not a plain relative path", path.display()),
                ));
            }
        }
    }
    Ok(parts)
}

impl State {
    /// Draw the fault selected by `pick` from this disk's stream.
    fn roll(&mut self, pick: impl Fn(&DiskFaults) -> Ratio) -> bool {
        let ratio = pick(&self.faults);
        self.rng.chance(ratio)
    }

    fn charge(&mut self, base_ns: u64) {
        let mut ns = base_ns;
        if self.roll(|f| f.slow) {
            self.counts.slow_ops += 1;
            ns *= self.rng.between(10, 100);
        }
        self.elapsed_ns += ns;
    }

    fn dir_live(&self, ino: Ino) -> Option<&BTreeMap<String, Ino>> {
        match self.nodes.get(&ino) {
            Some(Node::Dir { live, .. }) => Some(live),
            _ => None,
        }
    }

    /// Resolve a path in the live namespace.
    fn lookup(&self, path: &Path) -> IoResult<Ino> {
        let mut ino = ROOT;
        for part in parse(path)? {
            let not_found = || IoError::NotFound {
                path: path.to_path_buf(),
            };
            ino = *self
                .dir_live(ino)
                .ok_or_else(not_found)?
                .get(&part)
                .ok_or_else(not_found)?;
        }
        Ok(ino)
    }

    /// Resolve the parent directory of `path` and return it with the final name.
    fn lookup_parent(&self, path: &Path) -> IoResult<(Ino, String)> {
        let mut parts = parse(path)?;
        let name = parts
            .pop()
            .ok_or_else(|| IoError::io("path", "the root has no parent".to_string()))?;
        let parent: PathBuf = parts.iter().collect();
        let dir = self.lookup(&parent)?;
        if self.dir_live(dir).is_none() {
            return Err(IoError::io(
                "path",
                format!("{} is not a directory", parent.display()),
            ));
        }
        Ok((dir, name))
    }

    fn alloc(&mut self, node: Node) -> Ino {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(ino, node);
        ino
    }

    /// Apply a namespace operation to the live tables and remember it as pending.
    fn ns_apply_live(&mut self, op: NsOp) {
        for (dir, name, target) in &op.changes {
            let Some(Node::Dir { live, .. }) = self.nodes.get_mut(dir) else {
                panic!("namespace op on a non-directory inode {dir}");
            };
            match target {
                Some(t) => live.insert(name.clone(), *t),
                None => live.remove(name),
            };
        }
        self.pending_ns.push(op);
    }

    fn ns_apply_durable(&mut self, op: &NsOp) {
        for (dir, name, target) in &op.changes {
            if let Some(Node::Dir { durable, .. }) = self.nodes.get_mut(dir) {
                match target {
                    Some(t) => durable.insert(name.clone(), *t),
                    None => durable.remove(name),
                };
            }
        }
    }

    /// Make durable every pending namespace op touching `dir`, plus (first, in order)
    /// every earlier op sharing a slot with one that becomes durable.
    fn sync_dir_ops(&mut self, dir: Ino) {
        let n = self.pending_ns.len();
        let mut durable = vec![false; n];
        for i in (0..n).rev() {
            if self.pending_ns[i].touches_dir(dir) {
                durable[i] = true;
            }
            if durable[i] {
                let (earlier, rest) = self.pending_ns.split_at(i);
                for (j, op) in earlier.iter().enumerate() {
                    if op.shares_slot(&rest[0]) {
                        durable[j] = true;
                    }
                }
            }
        }
        // The backward sweep already closed over slot dependencies: a later durable op
        // marks earlier sharers before they are visited.
        let ops = std::mem::take(&mut self.pending_ns);
        for (op, make_durable) in ops.into_iter().zip(durable) {
            if make_durable {
                self.ns_apply_durable(&op);
            } else {
                self.pending_ns.push(op);
            }
        }
    }

    fn file_mut(&mut self, ino: Ino) -> &mut FileNode {
        match self.nodes.get_mut(&ino) {
            Some(Node::File(f)) => f,
            _ => panic!("inode {ino} is not a file"),
        }
    }

    fn live_bytes(&self) -> u64 {
        self.nodes
            .values()
            .map(|n| match n {
                Node::File(f) => f.live.len() as u64,
                Node::Dir { .. } => 0,
            })
            .sum()
    }

    fn check_space(&mut self, ino: Ino, new_len: u64) -> IoResult<()> {
        let Some(quota) = self.faults.quota_bytes else {
            return Ok(());
        };
        let current = self.file_mut(ino).live.len() as u64;
        let used = self.live_bytes();
        if new_len > current && used - current + new_len > quota {
            self.counts.no_space += 1;
            return Err(IoError::NoSpace);
        }
        Ok(())
    }

    /// Decide the fate of a file's pending operations (on a crash or a failed sync):
    /// each write kept, dropped or torn by sector; each `set_len` kept or dropped.
    fn resolve_pending(&mut self, ino: Ino) {
        let pending = std::mem::take(&mut self.file_mut(ino).pending);
        let mut image = self.file_mut(ino).durable.clone();
        for op in pending {
            match op {
                Pending::SetLen(len) => {
                    if self.rng.chance(Ratio::new(1, 2)) {
                        image.resize(len as usize, 0);
                    }
                }
                Pending::Write { offset, data } => match self.rng.below(3) {
                    0 => {
                        self.counts.crash_writes_kept += 1;
                        put(&mut image, offset, &data);
                    }
                    1 => self.counts.crash_writes_dropped += 1,
                    _ => {
                        self.counts.crash_writes_torn += 1;
                        let end = offset + data.len() as u64;
                        let mut start = offset;
                        while start < end {
                            let sector_end = ((start / SECTOR_SIZE) + 1) * SECTOR_SIZE;
                            let piece_end = sector_end.min(end);
                            if self.rng.chance(Ratio::new(1, 2)) {
                                let (a, b) =
                                    ((start - offset) as usize, (piece_end - offset) as usize);
                                put(&mut image, start, &data[a..b]);
                            }
                            start = piece_end;
                        }
                    }
                },
            }
        }
        self.file_mut(ino).durable = image;
    }

    fn reachable_durable(&self) -> BTreeSet<Ino> {
        let mut seen = BTreeSet::from([ROOT]);
        let mut stack = vec![ROOT];
        while let Some(ino) = stack.pop() {
            if let Some(Node::Dir { durable, .. }) = self.nodes.get(&ino) {
                for child in durable.values() {
                    if seen.insert(*child) {
                        stack.push(*child);
                    }
                }
            }
        }
        seen
    }
}

/// Write `data` into `image` at `offset`, zero-filling any gap.
fn put(image: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let end = offset as usize + data.len();
    if image.len() < end {
        image.resize(end, 0);
    }
    image[offset as usize..end].copy_from_slice(data);
}

impl SimDisk {
    /// A perfect, empty disk whose crash decisions are drawn from `seed`.
    pub fn new(seed: u64) -> SimDisk {
        let mut nodes = BTreeMap::new();
        nodes.insert(
            ROOT,
            Node::Dir {
                live: BTreeMap::new(),
                durable: BTreeMap::new(),
            },
        );
        SimDisk {
            state: Arc::new(Mutex::new(State {
                rng: SimRng::new(seed),
                faults: DiskFaults::default(),
                counts: FaultCounts::default(),
                nodes,
                next_ino: ROOT + 1,
                pending_ns: Vec::new(),
                latent: BTreeSet::new(),
                generation: 0,
                elapsed_ns: 0,
            })),
        }
    }

    /// A disk with the given fault probabilities.
    pub fn with_faults(seed: u64, faults: DiskFaults) -> SimDisk {
        let disk = SimDisk::new(seed);
        disk.set_faults(faults);
        disk
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("SimDisk lock poisoned: a panic happened while it was held")
    }

    /// Replace the fault probabilities (e.g. switch faults off for a liveness phase).
    pub fn set_faults(&self, faults: DiskFaults) {
        self.lock().faults = faults;
    }

    /// The current fault probabilities.
    pub fn faults(&self) -> DiskFaults {
        self.lock().faults
    }

    /// What has fired so far.
    pub fn fault_counts(&self) -> FaultCounts {
        self.lock().counts
    }

    /// Simulated latency accumulated since the last call.
    pub fn take_elapsed_ns(&self) -> u64 {
        std::mem::take(&mut self.lock().elapsed_ns)
    }

    /// Total live bytes in files (what the quota counts).
    pub fn used_bytes(&self) -> u64 {
        self.lock().live_bytes()
    }

    /// A stable identity for the file or directory at `path` (like an inode number),
    /// for tests that follow a file across renames and crashes.
    pub fn file_id(&self, path: &Path) -> IoResult<u64> {
        self.lock().lookup(path)
    }

    /// Bit rot at rest: flip `n` random bits in the durable images (and the cached
    /// images, where they reach that far) of the files under `dir`, each bit in a
    /// byte drawn uniformly over all their durable bytes. Drawn from `rng`, not the
    /// disk's own stream; counted as bit flips. Returns where each bit flipped (file
    /// and byte offset); nothing if the files under `dir` hold no durable byte.
    pub fn flip_random_bits(
        &self,
        dir: &Path,
        n: u64,
        rng: &mut SimRng,
    ) -> IoResult<Vec<(PathBuf, u64)>> {
        let mut s = self.lock();
        let top = s.lookup(dir)?;
        let mut files = Vec::new();
        let mut stack = vec![(top, dir.to_path_buf())];
        while let Some((ino, path)) = stack.pop() {
            match s.nodes.get(&ino) {
                Some(Node::Dir { live, .. }) => {
                    stack.extend(live.iter().rev().map(|(name, &i)| (i, path.join(name))));
                }
                Some(Node::File(f)) if !f.durable.is_empty() => {
                    files.push((ino, path, f.durable.len() as u64));
                }
                _ => {}
            }
        }
        let total: u64 = files.iter().map(|(_, _, len)| len).sum();
        let mut flipped = Vec::new();
        if total == 0 {
            return Ok(flipped);
        }
        for _ in 0..n {
            let mut at = rng.below(total);
            let bit = 1u8 << rng.below(8);
            let (ino, path, _) = files
                .iter()
                .find(|(_, _, len)| {
                    let here = at < *len;
                    if !here {
                        at -= len;
                    }
                    here
                })
                .expect("a byte below the total");
            flipped.push((path.clone(), at));
            let at = at as usize;
            let file = s.file_mut(*ino);
            file.durable[at] ^= bit;
            if at < file.live.len() {
                file.live[at] ^= bit;
            }
            s.counts.bit_flips += 1;
        }
        Ok(flipped)
    }

    /// Power loss: decide the fate of everything unsynced (see the module doc), then
    /// keep only the durable images. Handles opened before the crash become stale.
    pub fn crash(&self) {
        let mut s = self.lock();
        s.counts.crashes += 1;
        let ops = std::mem::take(&mut s.pending_ns);
        let mut lost: Vec<NsOp> = Vec::new();
        for op in ops {
            let follows_lost = lost.iter().any(|l| l.shares_slot(&op));
            if !follows_lost && s.rng.chance(Ratio::new(1, 2)) {
                s.ns_apply_durable(&op);
            } else {
                s.counts.crash_dir_ops_lost += 1;
                lost.push(op);
            }
        }
        let files: Vec<Ino> = s
            .nodes
            .iter()
            .filter_map(|(ino, n)| matches!(n, Node::File(_)).then_some(*ino))
            .collect();
        for ino in files {
            s.resolve_pending(ino);
        }
        let reachable = s.reachable_durable();
        s.nodes.retain(|ino, _| reachable.contains(ino));
        s.latent.retain(|(ino, _)| reachable.contains(ino));
        for node in s.nodes.values_mut() {
            match node {
                Node::File(f) => f.live = f.durable.clone(),
                Node::Dir { live, durable } => *live = durable.clone(),
            }
        }
        s.generation += 1;
    }
}

impl SimFile {
    fn lock(&self, op: &'static str) -> IoResult<MutexGuard<'_, State>> {
        let s = self.state.lock().expect("SimDisk lock poisoned");
        if s.generation != self.generation || !s.nodes.contains_key(&self.ino) {
            return Err(IoError::io(
                op,
                "stale handle: the disk crashed since it was opened",
            ));
        }
        Ok(s)
    }
}

impl File for SimFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> IoResult<()> {
        let mut s = self.lock("read")?;
        s.charge(READ_NS);
        if s.roll(|f| f.read_error) {
            s.counts.read_errors += 1;
            return Err(injected("read", "read error"));
        }
        let end = offset + buf.len() as u64;
        let file_len = s.file_mut(self.ino).live.len() as u64;
        if end > file_len {
            return Err(IoError::UnexpectedEof {
                offset,
                len: buf.len() as u64,
                file_len,
            });
        }
        if !buf.is_empty() {
            let (first, last) = (offset / SECTOR_SIZE, (end - 1) / SECTOR_SIZE);
            if s.latent
                .range((self.ino, first)..=(self.ino, last))
                .next()
                .is_some()
            {
                s.counts.latent_sector_reads += 1;
                return Err(injected("read", "latent sector error"));
            }
        }
        buf.copy_from_slice(&s.file_mut(self.ino).live[offset as usize..end as usize]);
        Ok(())
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> IoResult<()> {
        let mut s = self.lock("write")?;
        s.charge(WRITE_NS);
        if s.roll(|f| f.write_error) {
            s.counts.write_errors += 1;
            return Err(injected("write", "write error"));
        }
        let mut target = offset;
        if s.roll(|f| f.misdirected_write) {
            s.counts.misdirected_writes += 1;
            let shift = s.rng.between(1, 8) * SECTOR_SIZE;
            target = if s.rng.chance(Ratio::new(1, 2)) || offset < shift {
                offset + shift
            } else {
                offset - shift
            };
        }
        let new_len = (s.file_mut(self.ino).live.len() as u64).max(target + data.len() as u64);
        s.check_space(self.ino, new_len)?;
        if !data.is_empty() {
            let (first, last) = (
                target / SECTOR_SIZE,
                (target + data.len() as u64 - 1) / SECTOR_SIZE,
            );
            let ino = self.ino;
            s.latent
                .retain(|&(i, sector)| i != ino || sector < first || sector > last);
        }
        let file = s.file_mut(self.ino);
        put(&mut file.live, target, data);
        file.pending.push(Pending::Write {
            offset: target,
            data: data.to_vec(),
        });
        self.after_write_faults(&mut s);
        Ok(())
    }

    fn sync_data(&self) -> IoResult<()> {
        let mut s = self.lock("sync_data")?;
        s.charge(SYNC_NS);
        if s.roll(|f| f.sync_error) {
            s.counts.sync_errors += 1;
            // The kernel may have written some pages and dropped others, marking all of
            // them clean: the media holds an unknown mix while readers see the cache.
            s.resolve_pending(self.ino);
            return Err(injected("sync_data", "sync error"));
        }
        // Flush exactly the dirty operations. Not `durable = live`: after a failed sync
        // the cache may hold pages marked clean that never reached the media, and a
        // later successful sync must not resurrect them.
        let file = s.file_mut(self.ino);
        for op in std::mem::take(&mut file.pending) {
            match op {
                Pending::Write { offset, data } => put(&mut file.durable, offset, &data),
                Pending::SetLen(len) => file.durable.resize(len as usize, 0),
            }
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> IoResult<()> {
        let mut s = self.lock("set_len")?;
        s.charge(META_NS);
        if s.roll(|f| f.write_error) {
            s.counts.write_errors += 1;
            return Err(injected("set_len", "write error"));
        }
        s.check_space(self.ino, len)?;
        let ino = self.ino;
        s.latent
            .retain(|&(i, sector)| i != ino || sector * SECTOR_SIZE < len);
        let file = s.file_mut(self.ino);
        file.live.resize(len as usize, 0);
        file.pending.push(Pending::SetLen(len));
        Ok(())
    }

    fn len(&self) -> IoResult<u64> {
        let mut s = self.lock("len")?;
        Ok(s.file_mut(self.ino).live.len() as u64)
    }
}

impl SimFile {
    /// Faults that strike the medium after a successful write: a sector going bad, or
    /// a bit rotting somewhere in the file.
    fn after_write_faults(&self, s: &mut State) {
        let len = s.file_mut(self.ino).live.len() as u64;
        if len == 0 {
            return;
        }
        if s.roll(|f| f.latent_sector_error) {
            s.counts.latent_sector_errors += 1;
            let sector = s.rng.below(len.div_ceil(SECTOR_SIZE));
            s.latent.insert((self.ino, sector));
        }
        if s.roll(|f| f.bit_flip) {
            s.counts.bit_flips += 1;
            let at = s.rng.below(len) as usize;
            let bit = 1u8 << s.rng.below(8);
            let file = s.file_mut(self.ino);
            file.live[at] ^= bit;
            if at < file.durable.len() {
                file.durable[at] ^= bit;
            }
        }
    }
}

impl Disk for SimDisk {
    fn create(&self, path: &Path) -> IoResult<DynFile> {
        let mut s = self.lock();
        s.charge(META_NS);
        let (dir, name) = s.lookup_parent(path)?;
        if s.dir_live(dir).is_some_and(|d| d.contains_key(&name)) {
            return Err(IoError::AlreadyExists {
                path: path.to_path_buf(),
            });
        }
        let ino = s.alloc(Node::File(FileNode::default()));
        s.ns_apply_live(NsOp {
            changes: vec![(dir, name, Some(ino))],
        });
        Ok(Arc::new(SimFile {
            state: self.state.clone(),
            ino,
            generation: s.generation,
        }))
    }

    fn open(&self, path: &Path) -> IoResult<DynFile> {
        let mut s = self.lock();
        s.charge(META_NS);
        let ino = s.lookup(path)?;
        if !matches!(s.nodes.get(&ino), Some(Node::File(_))) {
            return Err(IoError::io(
                "open",
                format!("{} is a directory", path.display()),
            ));
        }
        Ok(Arc::new(SimFile {
            state: self.state.clone(),
            ino,
            generation: s.generation,
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> IoResult<()> {
        let mut s = self.lock();
        s.charge(META_NS);
        let ino = s.lookup(from)?;
        let (from_dir, from_name) = s.lookup_parent(from)?;
        let (to_dir, to_name) = s.lookup_parent(to)?;
        if let Some(existing) = s.dir_live(to_dir).and_then(|d| d.get(&to_name)).copied() {
            if existing == ino {
                return Ok(());
            }
            if matches!(s.nodes.get(&existing), Some(Node::Dir { .. }))
                || matches!(s.nodes.get(&ino), Some(Node::Dir { .. }))
            {
                return Err(IoError::io("rename", format!("{} exists", to.display())));
            }
        }
        // A directory may not move below itself.
        if matches!(s.nodes.get(&ino), Some(Node::Dir { .. })) && to.starts_with(from) {
            return Err(IoError::io(
                "rename",
                format!("{} is inside {}", to.display(), from.display()),
            ));
        }
        s.ns_apply_live(NsOp {
            changes: vec![(from_dir, from_name, None), (to_dir, to_name, Some(ino))],
        });
        Ok(())
    }

    fn remove(&self, path: &Path) -> IoResult<()> {
        let mut s = self.lock();
        s.charge(META_NS);
        let ino = s.lookup(path)?;
        if s.dir_live(ino).is_some_and(|d| !d.is_empty()) {
            return Err(IoError::io(
                "remove",
                format!("{} is a non-empty directory", path.display()),
            ));
        }
        let (dir, name) = s.lookup_parent(path)?;
        s.ns_apply_live(NsOp {
            changes: vec![(dir, name, None)],
        });
        Ok(())
    }

    fn list(&self, dir: &Path) -> IoResult<Vec<String>> {
        let mut s = self.lock();
        s.charge(META_NS);
        let ino = s.lookup(dir)?;
        let entries = s
            .dir_live(ino)
            .ok_or_else(|| IoError::io("list", format!("{} is not a directory", dir.display())))?;
        Ok(entries.keys().cloned().collect())
    }

    fn create_dir_all(&self, path: &Path) -> IoResult<()> {
        let mut s = self.lock();
        s.charge(META_NS);
        let mut dir = ROOT;
        for part in parse(path)? {
            let existing = s
                .dir_live(dir)
                .ok_or_else(|| {
                    IoError::io(
                        "create_dir_all",
                        format!("{} crosses a file", path.display()),
                    )
                })?
                .get(&part)
                .copied();
            dir = match existing {
                Some(ino) => ino,
                None => {
                    let ino = s.alloc(Node::Dir {
                        live: BTreeMap::new(),
                        durable: BTreeMap::new(),
                    });
                    s.ns_apply_live(NsOp {
                        changes: vec![(dir, part, Some(ino))],
                    });
                    ino
                }
            };
        }
        if s.dir_live(dir).is_none() {
            return Err(IoError::AlreadyExists {
                path: path.to_path_buf(),
            });
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> IoResult<()> {
        let mut s = self.lock();
        s.charge(SYNC_NS);
        let ino = s.lookup(dir)?;
        if s.dir_live(ino).is_none() {
            return Err(IoError::io(
                "sync_dir",
                format!("{} is not a directory", dir.display()),
            ));
        }
        if s.roll(|f| f.sync_error) {
            s.counts.sync_errors += 1;
            return Err(injected("sync_dir", "sync error"));
        }
        s.sync_dir_ops(ino);
        Ok(())
    }

    fn is_dir(&self, path: &Path) -> IoResult<bool> {
        let s = self.lock();
        let ino = s.lookup(path)?;
        Ok(s.dir_live(ino).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> &Path {
        Path::new(s)
    }

    #[test]
    fn synced_file_in_synced_directory_survives_a_crash() {
        let disk = SimDisk::new(1);
        disk.create_dir_all(p("d")).unwrap();
        disk.sync_dir(p("")).unwrap();
        let f = disk.create(p("d/f")).unwrap();
        f.write_at(0, b"durable").unwrap();
        f.sync_data().unwrap();
        disk.sync_dir(p("d")).unwrap();
        f.write_at(0, b"XXXXXXX").unwrap();
        disk.crash();
        assert!(f.len().is_err(), "handles are stale after a crash");
        let f = disk.open(p("d/f")).unwrap();
        let mut buf = [0u8; 7];
        f.read_at(0, &mut buf).unwrap();
        // The unsynced overwrite is within one sector: all of it or none of it.
        assert!(&buf == b"durable" || &buf == b"XXXXXXX", "{buf:?}");
    }

    #[test]
    fn unsynced_create_can_vanish_and_synced_parent_cannot() {
        let mut vanished = 0;
        for seed in 0..64 {
            let disk = SimDisk::new(seed);
            disk.create(p("f")).unwrap();
            disk.crash();
            vanished += usize::from(!disk.exists(p("f")).unwrap());
        }
        assert!(vanished > 10 && vanished < 54, "{vanished}");
        let disk = SimDisk::new(0);
        disk.create(p("f")).unwrap();
        disk.sync_dir(p("")).unwrap();
        disk.crash();
        assert!(disk.exists(p("f")).unwrap());
    }

    #[test]
    fn quota_refuses_growth_and_keeps_old_bytes() {
        let disk = SimDisk::with_faults(
            3,
            DiskFaults {
                quota_bytes: Some(1000),
                ..Default::default()
            },
        );
        let f = disk.create(p("f")).unwrap();
        f.write_at(0, &[1; 900]).unwrap();
        assert_eq!(f.write_at(900, &[2; 200]), Err(IoError::NoSpace));
        assert_eq!(f.len().unwrap(), 900);
        f.write_at(0, &[3; 100]).unwrap(); // overwriting in place needs no space
        assert_eq!(disk.fault_counts().no_space, 1);
        f.set_len(100).unwrap();
        f.write_at(100, &[4; 800]).unwrap(); // space freed by truncation is usable again
    }

    #[test]
    fn latent_sector_fails_reads_until_rewritten() {
        let faults = DiskFaults {
            latent_sector_error: Ratio::ONE,
            ..Default::default()
        };
        let disk = SimDisk::with_faults(5, faults);
        let f = disk.create(p("f")).unwrap();
        f.write_at(0, &[7; 512]).unwrap(); // one sector, so the latent one is sector 0
        disk.set_faults(DiskFaults::default());
        let mut buf = [0u8; 512];
        assert!(f.read_at(0, &mut buf).is_err());
        assert!(f.read_at(0, &mut buf).is_err());
        f.write_at(0, &[8; 512]).unwrap();
        f.read_at(0, &mut buf).unwrap();
        assert_eq!(buf, [8; 512]);
        let counts = disk.fault_counts();
        assert_eq!(
            (counts.latent_sector_errors, counts.latent_sector_reads),
            (1, 2)
        );
    }

    #[test]
    fn bit_flip_changes_exactly_one_bit() {
        let disk = SimDisk::with_faults(
            9,
            DiskFaults {
                bit_flip: Ratio::ONE,
                ..Default::default()
            },
        );
        let f = disk.create(p("f")).unwrap();
        f.write_at(0, &[0; 4096]).unwrap();
        let mut buf = vec![0u8; 4096];
        f.read_at(0, &mut buf).unwrap();
        let ones: u32 = buf.iter().map(|b| b.count_ones()).sum();
        assert_eq!(ones, 1);
        assert_eq!(disk.fault_counts().bit_flips, 1);
    }

    #[test]
    fn flip_random_bits_rots_durable_bytes_under_a_directory_only() {
        let disk = SimDisk::new(3);
        disk.create_dir_all(p("a/b")).unwrap();
        disk.create_dir_all(p("c")).unwrap();
        for (name, len) in [("a/x", 1000), ("a/b/y", 3000), ("c/z", 4096)] {
            let f = disk.create(p(name)).unwrap();
            f.write_at(0, &vec![0; len]).unwrap();
            f.sync_data().unwrap();
        }
        disk.sync_dir(p("a/b")).unwrap();
        disk.sync_dir(p("a")).unwrap();
        disk.sync_dir(p("c")).unwrap();
        disk.sync_dir(p("")).unwrap();
        let mut rng = SimRng::new(5);
        let flipped = disk.flip_random_bits(p("a"), 7, &mut rng).unwrap();
        assert_eq!(flipped.len(), 7);
        assert!(
            flipped
                .iter()
                .all(|(f, at)| (f == p("a/x") && *at < 1000) || (f == p("a/b/y") && *at < 3000))
        );
        let ones = |name: &str| {
            let f = disk.open(p(name)).unwrap();
            let mut buf = vec![0u8; f.len().unwrap() as usize];
            f.read_at(0, &mut buf).unwrap();
            buf.iter().map(|b| b.count_ones()).sum::<u32>()
        };
        let before = (ones("a/x"), ones("a/b/y"));
        // Seven flips, possibly twice the same bit: an odd number of bits is set.
        assert_eq!((before.0 + before.1) % 2, 1);
        assert_eq!(ones("c/z"), 0);
        assert_eq!(disk.fault_counts().bit_flips, 7);
        // The rot is on the medium: it survives a crash.
        disk.crash();
        assert_eq!((ones("a/x"), ones("a/b/y")), before);
        // Nothing durable: nothing flips.
        disk.create_dir_all(p("d")).unwrap();
        assert!(
            disk.flip_random_bits(p("d"), 3, &mut rng)
                .unwrap()
                .is_empty()
        );
        assert!(disk.flip_random_bits(p("nope"), 3, &mut rng).is_err());
    }

    #[test]
    fn misdirected_write_misses_its_target() {
        let faults = DiskFaults {
            misdirected_write: Ratio::ONE,
            ..Default::default()
        };
        let disk = SimDisk::with_faults(11, faults);
        let f = disk.create(p("f")).unwrap();
        f.write_at(8192, &[9; 512]).unwrap();
        let len = f.len().unwrap();
        let mut image = vec![0u8; len as usize];
        f.read_at(0, &mut image).unwrap();
        let at = image.iter().position(|&b| b == 9).unwrap() as u64;
        assert_ne!(at, 8192);
        assert_eq!(at % SECTOR_SIZE, 0);
        assert!(at.abs_diff(8192) <= 8 * SECTOR_SIZE);
    }

    #[test]
    fn failed_sync_may_lose_data_that_reads_still_show() {
        let mut lost = 0;
        for seed in 0..32 {
            let disk = SimDisk::new(seed);
            let f = disk.create(p("f")).unwrap();
            disk.sync_dir(p("")).unwrap();
            f.sync_data().unwrap();
            disk.set_faults(DiskFaults {
                sync_error: Ratio::ONE,
                ..Default::default()
            });
            f.write_at(0, &[1; 1024]).unwrap();
            assert!(f.sync_data().is_err());
            let mut buf = [0u8; 1024];
            f.read_at(0, &mut buf).unwrap();
            assert_eq!(buf, [1; 1024], "the page cache still shows the write");
            disk.set_faults(DiskFaults::default());
            f.sync_data().unwrap(); // a "retry" succeeds but proves nothing
            disk.crash();
            let f = disk.open(p("f")).unwrap();
            if f.len().unwrap() < 1024 {
                lost += 1;
                continue;
            }
            f.read_at(0, &mut buf).unwrap();
            lost += usize::from(buf != [1; 1024]);
        }
        assert!(
            lost > 0,
            "a failed fsync must be able to lose data for good"
        );
    }

    #[test]
    fn rename_directory_keeps_its_children() {
        let disk = SimDisk::new(2);
        disk.create_dir_all(p("tmp")).unwrap();
        let f = disk.create(p("tmp/a")).unwrap();
        f.write_at(0, b"x").unwrap();
        f.sync_data().unwrap();
        disk.sync_dir(p("tmp")).unwrap();
        disk.rename(p("tmp"), p("final")).unwrap();
        disk.sync_dir(p("")).unwrap();
        disk.crash();
        assert_eq!(disk.list(p("")).unwrap(), vec!["final"]);
        assert_eq!(disk.list(p("final")).unwrap(), vec!["a"]);
    }
}
