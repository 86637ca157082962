//! The database: MVCC state, transactions, group commit, checkpoints, pins.
//!
//! # Concurrency
//!
//! One mutex (`state`) guards the in-memory MVCC delta, the timestamp counters, the WAL
//! buffer, the snapshot registry, the generation pins and the free-page lists. It is
//! never held across a sync. Disk I/O happens outside it: the group-commit flusher
//! (whoever first finds records buffered and no flush running) writes and syncs every
//! buffered record while the others wait on `durable`; the checkpointer (serialized by
//! `checkpoint_lock`) writes pages and the superblock. The data file is written only
//! at pages no durable or pinned generation can reach, so readers never need a lock on
//! it beyond the page cache's.
//!
//! # Visibility
//!
//! A commit gets its timestamp and LSN together under `state`, so timestamp order is
//! log order. It becomes visible (`last_committed_ts`) only once its record and all
//! earlier ones are durable: no reader ever sees a commit a crash could take away.
//! Versions not yet durable are still in the delta, so a later writer of the same key
//! conflicts with them (first committer wins).
//!
//! With `Options::sync_commits` off (a Raft node: its log already holds every commit
//! durably), "durable" above reads "written to the WAL file": a group is visible once
//! written, and [`Db::sync`] or a checkpoint makes it durable. A crash can then take
//! visible commits away, which is why only a caller that can supply them again may
//! turn the option off.

use crate::error::{Error, Result, Ts};
use crate::page::{
    FIRST_TREE_PAGE, MAX_KEY_BYTES, MAX_VALUE_BYTES, NodeRef, PAGE_SIZE, SUPER_LEN, SuperSlot,
    Superblock,
};
use crate::store::{CacheStats, PageStore};
use crate::tree::{self, Allocator, Entry, Merge};
use crate::wal::{self, WalWriter, Write};
use ryu_io::{DynDisk, IoError};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Name of the paged data file in the database directory.
pub const DATA_FILE: &str = "data";
/// Name of the WAL directory in the database directory.
pub const WAL_DIR: &str = "wal";
const DATA_TMP: &str = "data.tmp";
const VERSION_OVERHEAD_BYTES: u64 = 48;

/// Tuning knobs. The defaults suit an embedded database of a few GiB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Page cache capacity in pages of [`crate::PAGE_SIZE`] bytes.
    pub cache_pages: usize,
    /// Size each WAL segment is preallocated to; also bounds one transaction's size.
    pub wal_segment_bytes: u64,
    /// When the in-memory delta exceeds this many bytes, the committing thread runs a
    /// checkpoint after its commit is durable. `0` disables (call [`Db::checkpoint`]).
    pub checkpoint_after_bytes: u64,
    /// Whether each group of commits is synced before it becomes visible (the
    /// default). Turn it off only when every commit is also durable elsewhere and can
    /// be supplied again after a crash, as a Raft node's applied entries are in its
    /// log: a group then becomes visible once written to the WAL file, [`Db::sync`]
    /// or a checkpoint makes it durable, and recovery ends the WAL at the first
    /// record it cannot read (any unsynced group may be lost or torn, so damage can
    /// no longer be told from a torn tail). [`Db::last_committed_ts`] after a reopen
    /// says where the caller must resume.
    pub sync_commits: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cache_pages: 4096,
            wal_segment_bytes: 8 << 20,
            checkpoint_after_bytes: 64 << 20,
            sync_commits: true,
        }
    }
}

#[derive(Debug, Clone)]
struct Version {
    ts: Ts,
    value: Option<Vec<u8>>,
}

fn version_bytes(key: &[u8], value: &Option<Vec<u8>>) -> u64 {
    (key.len() + value.as_ref().map_or(0, Vec::len)) as u64 + VERSION_OVERHEAD_BYTES
}

#[derive(Debug, Clone, Copy)]
struct Snapshot {
    start_ts: Ts,
    base_checkpoint_ts: Ts,
}

#[derive(Debug)]
struct PinnedGeneration {
    sb: Superblock,
    pins: usize,
}

#[derive(Debug)]
struct State {
    poisoned: bool,
    delta: BTreeMap<Vec<u8>, Vec<Version>>,
    delta_bytes: u64,
    last_assigned_ts: Ts,
    visible_ts: Ts,
    /// Every record up to here is in the WAL file (and synced, with `sync_commits`).
    durable_lsn: u64,
    /// Without `sync_commits`: segment files written since they were last synced.
    unsynced: BTreeMap<u64, ryu_io::DynFile>,
    wal: WalWriter,
    flushing: bool,
    snapshots: BTreeMap<u64, Snapshot>,
    next_snapshot_id: u64,
    /// The newest durable generation.
    current: Superblock,
    pinned: BTreeMap<u64, PinnedGeneration>,
    free_now: BTreeSet<u64>,
    /// Pages freed by the checkpoint that made generation `g` durable: reachable from
    /// generations below `g`, reusable once none of those is pinned.
    freed_at: BTreeMap<u64, Vec<u64>>,
}

impl State {
    fn pin(&mut self, sb: Superblock) {
        self.pinned
            .entry(sb.generation)
            .or_insert(PinnedGeneration { sb, pins: 0 })
            .pins += 1;
    }

    fn unpin(&mut self, generation: u64) {
        let p = self
            .pinned
            .get_mut(&generation)
            .expect("unpin of a pinned generation");
        assert!(p.pins > 0);
        p.pins -= 1;
        if p.pins == 0 {
            self.pinned.remove(&generation);
        }
    }

    fn register(&mut self, start_ts: Ts) -> (u64, Superblock) {
        let id = self.next_snapshot_id;
        self.next_snapshot_id += 1;
        let base = self.current;
        assert!(
            base.checkpoint_ts <= start_ts,
            "a snapshot never predates its base tree"
        );
        self.snapshots.insert(
            id,
            Snapshot {
                start_ts,
                base_checkpoint_ts: base.checkpoint_ts,
            },
        );
        self.pin(base);
        (id, base)
    }

    /// The delta's answer for `key` at a snapshot: `Some(value-or-tombstone)` when a
    /// version newer than the base tree is visible, `None` when the tree decides.
    fn delta_get(&self, key: &[u8], start_ts: Ts, base_ts: Ts) -> Option<Option<Vec<u8>>> {
        visible(self.delta.get(key)?, start_ts, base_ts).cloned()
    }

    fn insert_versions(&mut self, ts: Ts, writes: &[Write]) {
        for (k, v) in writes {
            self.delta_bytes += version_bytes(k, v);
            let versions = self.delta.entry(k.clone()).or_default();
            assert!(
                versions.last().is_none_or(|last| last.ts < ts),
                "versions ascend"
            );
            versions.push(Version {
                ts,
                value: v.clone(),
            });
        }
    }

    /// Drop versions no snapshot, future reader, or conflict check can need: a version
    /// stays if it is newer than the durable tree, newer than some live snapshot's
    /// start (conflict detection), or the one a live snapshot reads instead of its tree.
    fn collect_garbage(&mut self) {
        let snaps: Vec<Snapshot> = self.snapshots.values().copied().collect();
        let tree_ts = self.current.checkpoint_ts;
        let mut freed = 0u64;
        self.delta.retain(|key, versions| {
            let keep: Vec<bool> = (0..versions.len())
                .map(|i| {
                    let v = &versions[i];
                    v.ts > tree_ts
                        || snaps.iter().any(|s| {
                            let newest_visible =
                                versions.get(i + 1).is_none_or(|n| n.ts > s.start_ts);
                            v.ts > s.start_ts || (newest_visible && v.ts > s.base_checkpoint_ts)
                        })
                })
                .collect();
            let mut i = 0;
            versions.retain(|v| {
                let k = keep[i];
                i += 1;
                if !k {
                    freed += version_bytes(key, &v.value);
                }
                k
            });
            !versions.is_empty()
        });
        assert!(freed <= self.delta_bytes);
        self.delta_bytes -= freed;
    }
}

/// The version of a key a snapshot at `start_ts` over a tree at `base_ts` reads from
/// the delta: `None` when the tree decides (no version at or below `start_ts`, or the
/// newest such is already in the tree).
fn visible(versions: &[Version], start_ts: Ts, base_ts: Ts) -> Option<&Option<Vec<u8>>> {
    let v = versions.iter().rev().find(|v| v.ts <= start_ts)?;
    (v.ts > base_ts).then_some(&v.value)
}

#[derive(Debug)]
struct Inner {
    disk: DynDisk,
    dir: PathBuf,
    wal_dir: PathBuf,
    options: Options,
    store: PageStore,
    state: Mutex<State>,
    durable: Condvar,
    checkpoint_lock: Mutex<()>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("engine state lock poisoned by a panic")
    }

    /// Block until the record `lsn` is durable, flushing everything buffered if no one
    /// else is (group commit: one write and one sync per segment for all waiters).
    fn wait_durable(&self, lsn: u64) -> Result<()> {
        let mut st = self.lock();
        loop {
            if st.durable_lsn >= lsn {
                return Ok(());
            }
            if st.poisoned {
                return Err(Error::Poisoned);
            }
            if st.flushing {
                st = self
                    .durable
                    .wait(st)
                    .expect("engine state lock poisoned by a panic");
                continue;
            }
            st = self.flush_locked(st)?;
        }
    }

    /// Flush what is buffered now; the caller holds no flush.
    fn flush_locked<'a>(&'a self, mut st: MutexGuard<'a, State>) -> Result<MutexGuard<'a, State>> {
        assert!(!st.flushing);
        let mut chunks = st.wal.take_chunks();
        assert!(
            !chunks.is_empty() || st.durable_lsn + 1 == st.wal.next_lsn,
            "undurable records are buffered"
        );
        if chunks.is_empty() {
            return Ok(st);
        }
        st.flushing = true;
        drop(st);
        let result = wal::write_chunks(&mut chunks, self.options.sync_commits);
        let mut st = self.lock();
        if !self.options.sync_commits {
            for c in &chunks {
                st.unsynced
                    .entry(c.segment)
                    .or_insert_with(|| c.file().clone());
            }
        }
        st.flushing = false;
        self.durable.notify_all();
        match result {
            Ok(()) => {
                let last = chunks.last().expect("non-empty");
                assert!(last.last_lsn > st.durable_lsn && last.last_ts >= st.visible_ts);
                st.durable_lsn = last.last_lsn;
                st.visible_ts = last.last_ts;
                Ok(st)
            }
            Err(e) => {
                // The records' fate on the media is unknown: refuse writes until reopen.
                st.poisoned = true;
                Err(e)
            }
        }
    }

    fn apply_locked(&self, st: &mut State, ts: Ts, writes: &[Write]) -> Result<u64> {
        let payload = wal::encode_payload(ts, writes);
        let lsn = st.wal.append(ts, &payload)?;
        st.insert_versions(ts, writes);
        assert!(ts > st.last_assigned_ts);
        st.last_assigned_ts = ts;
        Ok(lsn)
    }

    /// Without `sync_commits`: sync the WAL segments numbered below `end` that were
    /// written since their last sync.
    fn sync_segments_below(&self, end: u64) -> Result<()> {
        let files = {
            let mut st = self.lock();
            // After a failed sync the fate of the written records is unknown (Linux
            // may have dropped the dirty pages): nothing may be called durable again.
            if st.poisoned {
                return Err(Error::Poisoned);
            }
            let keep = st.unsynced.split_off(&end);
            std::mem::replace(&mut st.unsynced, keep)
        };
        for file in files.values() {
            if let Err(e) = file.sync_data() {
                self.lock().poisoned = true;
                return Err(Error::io("wal sync", e));
            }
        }
        Ok(())
    }

    fn maybe_auto_checkpoint(self: &Arc<Self>) {
        let limit = self.options.checkpoint_after_bytes;
        if limit == 0 || self.lock().delta_bytes <= limit {
            return;
        }
        // A failure here poisons or is retried by the next commit; the commit that
        // triggered it is already durable, so its caller need not see it.
        let _ = Db {
            inner: self.clone(),
        }
        .checkpoint_inner(true);
    }
}

/// An open database. Cheap to clone; all clones share one engine.
#[derive(Debug, Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

/// What a checkpoint made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointInfo {
    pub generation: u64,
    pub checkpoint_ts: Ts,
    pub pages_written: u64,
    pub pages_freed: u64,
}

/// Counters for tests and monitoring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub delta_keys: usize,
    pub delta_bytes: u64,
    pub generation: u64,
    pub checkpoint_ts: Ts,
    pub last_committed_ts: Ts,
    pub page_count: u64,
    pub free_pages: usize,
    pub live_snapshots: usize,
    pub cache: CacheStats,
}

fn check_sizes(key: &[u8], value: Option<&[u8]>) -> Result<()> {
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::TooLarge {
            what: "key",
            size: key.len() as u64,
            max: MAX_KEY_BYTES as u64,
        });
    }
    if let Some(v) = value
        && v.len() > MAX_VALUE_BYTES
    {
        return Err(Error::TooLarge {
            what: "value",
            size: v.len() as u64,
            max: MAX_VALUE_BYTES as u64,
        });
    }
    Ok(())
}

impl Db {
    /// Open the database in `dir` on `disk`, creating it if `dir` is missing or empty.
    /// A directory holding anything else is `NotADatabase`; a newer format is
    /// `UnsupportedVersion`. Recovery replays the WAL from the newest valid checkpoint.
    pub fn open(disk: DynDisk, dir: &Path, options: Options) -> Result<Db> {
        assert!(
            options.wal_segment_bytes >= 4096,
            "WAL segments of at least 4 KiB"
        );
        let data_path = dir.join(DATA_FILE);
        let wal_dir = dir.join(WAL_DIR);
        // Every directory made here is durable in its parent before anything is
        // written inside: a database in a new `a/b/db` must not vanish with `a`.
        ryu_io::create_dir_all_synced(&*disk, dir).map_err(|e| Error::io("create dir", e))?;
        let entries = disk.list(dir).map_err(|e| Error::io("list", e))?;
        if !entries.iter().any(|e| e == DATA_FILE) {
            if let Some(other) = entries.iter().find(|e| *e != WAL_DIR && *e != DATA_TMP) {
                return Err(Error::NotADatabase {
                    dir: dir.to_path_buf(),
                    detail: format!("it holds {other:?} but no {DATA_FILE:?} file"),
                });
            }
            // A creation that crashed leaves at most an empty WAL directory (segments
            // appear only once `data` exists): a segment here means `data` was lost.
            if entries.iter().any(|e| e == WAL_DIR)
                && !wal::list_segments(&disk, &wal_dir)?.is_empty()
            {
                return Err(Error::corrupted(
                    dir.join(DATA_FILE),
                    0,
                    "the data file is missing but the WAL is not",
                ));
            }
            create_fresh(&disk, dir, &wal_dir)?;
        }
        let file = disk
            .open(&data_path)
            .map_err(|e| Error::io("open data", e))?;
        let store = PageStore::new(file, data_path.clone(), options.cache_pages);
        let has_wal_segments = disk.exists(&wal_dir).map_err(|e| Error::io("open", e))?
            && !wal::list_segments(&disk, &wal_dir)?.is_empty();
        let current = choose_superblock(&store, dir, has_wal_segments)?;
        if !disk.exists(&wal_dir).map_err(|e| Error::io("open", e))? {
            return Err(Error::corrupted(wal_dir, 0, "the WAL directory is missing"));
        }
        let mut delta: BTreeMap<Vec<u8>, Vec<Version>> = BTreeMap::new();
        let mut delta_bytes = 0;
        let recovered = wal::recover(
            &disk,
            &wal_dir,
            current.wal_segment,
            current.wal_lsn,
            current.checkpoint_ts,
            !options.sync_commits,
            |ts, writes| {
                for (k, v) in writes {
                    delta_bytes += version_bytes(&k, &v);
                    delta.entry(k).or_default().push(Version { ts, value: v });
                }
                Ok(())
            },
        )?;
        let mut reachable = BTreeSet::new();
        tree::walk_since(&store, current.root, 0, &mut |at, _| {
            reachable.insert(at.page);
        })?;
        if reachable.iter().any(|&p| p >= current.page_count) {
            return Err(Error::corrupted(
                &data_path,
                0,
                "tree reaches beyond the page count",
            ));
        }
        let free_now: BTreeSet<u64> = (FIRST_TREE_PAGE..current.page_count)
            .filter(|p| !reachable.contains(p))
            .collect();
        let wal = WalWriter::new(
            disk.clone(),
            wal_dir.clone(),
            options.wal_segment_bytes,
            recovered.next_segment.max(current.wal_segment),
            recovered.next_lsn,
        );
        let state = State {
            poisoned: false,
            delta,
            delta_bytes,
            last_assigned_ts: recovered.last_ts,
            visible_ts: recovered.last_ts,
            durable_lsn: recovered.next_lsn - 1,
            unsynced: BTreeMap::new(),
            wal,
            flushing: false,
            snapshots: BTreeMap::new(),
            next_snapshot_id: 1,
            current,
            pinned: BTreeMap::new(),
            free_now,
            freed_at: BTreeMap::new(),
        };
        let replayed = recovered.last_ts > current.checkpoint_ts;
        let db = Db {
            inner: Arc::new(Inner {
                disk,
                dir: dir.to_path_buf(),
                wal_dir,
                options,
                store,
                state: Mutex::new(state),
                durable: Condvar::new(),
                checkpoint_lock: Mutex::new(()),
            }),
        };
        // End-of-recovery checkpoint. What recovery read may be only in the page
        // cache: after a failed fsync Linux keeps the page readable but marks it
        // clean, so no later fsync writes it. New records go to a new segment; if
        // that one became durable while a replayed record did not, a power loss
        // would leave a gap in the WAL. A checkpoint writes the replayed state anew
        // and syncs it, so nothing the engine builds on can vanish.
        if replayed {
            db.checkpoint()?;
        }
        Ok(db)
    }

    /// Start a read-only transaction at the latest durable commit.
    pub fn begin_read(&self) -> ReadTxn {
        let mut st = self.inner.lock();
        let start_ts = st.visible_ts;
        let (id, base) = st.register(start_ts);
        ReadTxn {
            db: self.inner.clone(),
            id,
            start_ts,
            base,
        }
    }

    /// Start a read-write transaction at the latest durable commit.
    pub fn begin_write(&self) -> WriteTxn {
        WriteTxn {
            read: self.begin_read(),
            writes: BTreeMap::new(),
        }
    }

    /// Apply `writes` at timestamp `ts` (which must exceed every earlier commit), with
    /// no conflict check: the replicated node's entry point, with `ts` the Raft index.
    /// Returns once durable. Transactions begun before still conflict with it. A node
    /// that wants timestamps to equal log indices commits only through this entry
    /// point (a [`WriteTxn`] commit takes the last timestamp + 1).
    pub fn apply_at(&self, ts: Ts, writes: Vec<Write>) -> Result<()> {
        let ticket = self.apply_at_begin(ts, writes)?;
        ticket.wait()?;
        Ok(())
    }

    /// The non-blocking half of [`Db::apply_at`]: buffered, not yet durable.
    pub fn apply_at_begin(&self, ts: Ts, mut writes: Vec<Write>) -> Result<CommitTicket> {
        for (k, v) in &writes {
            check_sizes(k, v.as_deref())?;
        }
        // Last write of a key wins, as in a transaction's write set.
        writes.reverse();
        let mut seen = BTreeSet::new();
        writes.retain(|(k, _)| seen.insert(k.clone()));
        writes.sort_by(|a, b| a.0.cmp(&b.0));
        let mut st = self.inner.lock();
        if st.poisoned {
            return Err(Error::Poisoned);
        }
        if ts <= st.last_assigned_ts {
            return Err(Error::TimestampNotIncreasing {
                ts,
                last: st.last_assigned_ts,
            });
        }
        let lsn = self.inner.apply_locked(&mut st, ts, &writes)?;
        Ok(CommitTicket {
            db: self.inner.clone(),
            lsn,
            ts,
        })
    }

    /// Make every buffered commit durable now (the simulator's explicit flush); without
    /// `sync_commits`, written and visible but not synced (see [`Db::sync`]).
    /// Like a commit's wait, it may run an automatic checkpoint afterwards.
    pub fn flush(&self) -> Result<()> {
        let lsn = self.inner.lock().wal.next_lsn - 1;
        self.inner.wait_durable(lsn)?;
        self.inner.maybe_auto_checkpoint();
        Ok(())
    }

    /// Make every commit so far durable: with `sync_commits` the same as
    /// [`Db::flush`]; without it, also sync the WAL files written since the last sync.
    /// A failed sync poisons the database.
    pub fn sync(&self) -> Result<()> {
        self.flush()?;
        if self.inner.options.sync_commits {
            return Ok(());
        }
        self.inner.sync_segments_below(u64::MAX)
    }

    /// True once the ticket's commit is durable (and visible).
    pub fn is_durable(&self, ticket: &CommitTicket) -> bool {
        self.inner.lock().durable_lsn >= ticket.lsn
    }

    /// The newest commit visible to new transactions (every commit up to it is durable).
    pub fn last_committed_ts(&self) -> Ts {
        self.inner.lock().visible_ts
    }

    /// True after a failed sync: writes are refused until the database is reopened.
    pub fn is_poisoned(&self) -> bool {
        self.inner.lock().poisoned
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        let st = self.inner.lock();
        Stats {
            delta_keys: st.delta.len(),
            delta_bytes: st.delta_bytes,
            generation: st.current.generation,
            checkpoint_ts: st.current.checkpoint_ts,
            last_committed_ts: st.visible_ts,
            page_count: st.current.page_count,
            free_pages: st.free_now.len() + st.freed_at.values().map(Vec::len).sum::<usize>(),
            live_snapshots: st.snapshots.len(),
            cache: self.inner.store.stats(),
        }
    }

    /// The disk and directory this database lives in.
    pub fn location(&self) -> (DynDisk, PathBuf) {
        (self.inner.disk.clone(), self.inner.dir.clone())
    }

    /// Pin the newest durable generation: its pages are not overwritten and its WAL
    /// segments not deleted until the pin is dropped.
    pub fn pin_generation(&self) -> GenerationPin {
        let mut st = self.inner.lock();
        let sb = st.current;
        st.pin(sb);
        GenerationPin {
            db: self.inner.clone(),
            sb,
        }
    }

    /// Make the state as of the newest commit durable in the paged file, then delete
    /// the WAL segments no valid superblock needs. Commits and readers continue
    /// meanwhile; the only pause is the short section that fixes the checkpoint
    /// timestamp and collects the changes.
    pub fn checkpoint(&self) -> Result<CheckpointInfo> {
        self.checkpoint_inner(false)
            .map(|info| info.expect("a blocking checkpoint always runs"))
    }

    fn checkpoint_inner(&self, only_if_idle: bool) -> Result<Option<CheckpointInfo>> {
        let inner = &*self.inner;
        let _serial = if only_if_idle {
            match inner.checkpoint_lock.try_lock() {
                Ok(g) => g,
                Err(_) => return Ok(None),
            }
        } else {
            inner
                .checkpoint_lock
                .lock()
                .expect("checkpoint lock poisoned")
        };
        // The critical section: fix the timestamp, collect the changes, rotate the WAL.
        let (base, ckpt_ts, target_lsn, changes, wal_pos, alloc) = {
            let mut st = inner.lock();
            if st.poisoned {
                return Err(Error::Poisoned);
            }
            let base = st.current;
            let ckpt_ts = st.last_assigned_ts;
            let changes: Vec<(Vec<u8>, Option<Vec<u8>>)> = st
                .delta
                .iter()
                .filter_map(|(k, vs)| {
                    let v = vs.iter().rev().find(|v| v.ts <= ckpt_ts)?;
                    (v.ts > base.checkpoint_ts).then(|| (k.clone(), v.value.clone()))
                })
                .collect();
            let wal_pos = st.wal.rotate();
            let oldest_pin = st.pinned.keys().next().copied().unwrap_or(u64::MAX);
            let reusable: Vec<u64> = st.freed_at.range(..=oldest_pin).map(|(g, _)| *g).collect();
            for g in reusable {
                let pages = st.freed_at.remove(&g).expect("key listed above");
                st.free_now.extend(pages);
            }
            let alloc = Allocator {
                free: std::mem::take(&mut st.free_now),
                page_count: base.page_count,
                taken: Vec::new(),
            };
            (base, ckpt_ts, st.wal.next_lsn - 1, changes, wal_pos, alloc)
        };
        let mut merge = Merge {
            store: &inner.store,
            generation: base.generation + 1,
            alloc,
            freed: Vec::new(),
        };
        // Without `sync_commits`, the WAL this checkpoint rotated away from must be
        // durable before the new superblock is: open falls back to the previous
        // generation if the new superblock is ever found damaged, and replays that
        // WAL from the previous generation's start.
        let written = inner
            .wait_durable(target_lsn)
            .and_then(|()| inner.sync_segments_below(wal_pos.0))
            .and_then(|()| merge.apply(base.root, &changes));
        let root = match written {
            Ok(root) => root,
            Err(e) => {
                // Nothing durable points at the pages this attempt took: hand them back.
                let mut st = inner.lock();
                inner.store.forget(merge.alloc.taken.iter().copied());
                let keep = base.page_count;
                st.free_now
                    .extend(merge.alloc.free.iter().copied().filter(|&p| p < keep));
                st.free_now
                    .extend(merge.alloc.taken.iter().copied().filter(|&p| p < keep));
                return Err(e);
            }
        };
        let sb = Superblock {
            generation: base.generation + 1,
            checkpoint_ts: ckpt_ts,
            root,
            page_count: merge.alloc.page_count,
            wal_segment: wal_pos.0,
            wal_lsn: wal_pos.1,
        };
        if let Err(e) = write_superblock(&inner.store, &sb, Some(&base)) {
            inner.lock().poisoned = true;
            return Err(e);
        }
        let delete_below = {
            let mut st = inner.lock();
            assert_eq!(st.current, base, "checkpoints are serialized");
            // Keep the WAL the previous generation replays from: if the new
            // superblock is ever found damaged, open falls back to the previous one,
            // whose pages this checkpoint did not touch, and replays from there.
            let previous_wal = st.current.wal_segment;
            st.current = sb;
            st.free_now.extend(merge.alloc.free.iter().copied());
            st.freed_at
                .entry(sb.generation)
                .or_default()
                .extend(merge.freed.iter().copied());
            st.collect_garbage();
            st.pinned
                .values()
                .map(|p| p.sb.wal_segment)
                .fold(previous_wal, u64::min)
        };
        // Old segments are garbage now; failing to remove one only delays it.
        if let Ok(numbers) = wal::list_segments(&inner.disk, &inner.wal_dir) {
            let mut removed = false;
            for n in numbers.into_iter().filter(|&n| n < delete_below) {
                removed |= inner
                    .disk
                    .remove(&inner.wal_dir.join(wal::segment_name(n)))
                    .is_ok();
            }
            if removed {
                let _ = inner.disk.sync_dir(&inner.wal_dir);
            }
        }
        Ok(Some(CheckpointInfo {
            generation: sb.generation,
            checkpoint_ts: ckpt_ts,
            pages_written: merge.alloc.taken.len() as u64,
            pages_freed: merge.freed.len() as u64,
        }))
    }
}

/// Sync the pages, then write the superblock to its slot, sync, and read both slots
/// back. A misdirected superblock write would otherwise go unnoticed until the next
/// open, and could even have landed on the other slot, wiping the only valid
/// superblock; in that case `previous` is written back before the error is returned.
fn write_superblock(
    store: &PageStore,
    sb: &Superblock,
    previous: Option<&Superblock>,
) -> Result<()> {
    let file = &store.file;
    file.sync_data().map_err(|e| Error::io("data sync", e))?;
    let offset = sb.slot() * PAGE_SIZE as u64;
    file.write_at(offset, &sb.encode())
        .map_err(|e| Error::io("superblock write", e))?;
    file.sync_data()
        .map_err(|e| Error::io("superblock sync", e))?;
    let slot_holds = |slot: u64, want: Option<&Superblock>| -> Result<bool> {
        let mut back = vec![0u8; SUPER_LEN];
        file.read_at(slot * PAGE_SIZE as u64, &mut back)
            .map_err(|e| Error::io("superblock read", e))?;
        Ok(match (Superblock::decode(&back), want) {
            (SuperSlot::Valid(read), Some(want)) => read == *want,
            (_, Some(_)) => false,
            (SuperSlot::Valid(_), None) => false,
            (_, None) => true,
        })
    };
    if let Some(prev) = previous {
        assert_ne!(
            prev.slot(),
            sb.slot(),
            "consecutive generations alternate slots"
        );
    }
    let new_ok = slot_holds(sb.slot(), Some(sb))?;
    let other_ok = slot_holds(1 - sb.slot(), previous)?;
    if new_ok && other_ok {
        return Ok(());
    }
    if let Some(prev) = previous.filter(|_| !other_ok) {
        // Best effort: put the durable generation's superblock back where it belongs.
        let at = prev.slot() * PAGE_SIZE as u64;
        let _ = file
            .write_at(at, &prev.encode())
            .and_then(|()| file.sync_data());
    }
    Err(Error::corrupted(
        &store.path,
        offset,
        "superblock did not read back as written (misdirected write?)",
    ))
}

fn create_fresh(disk: &DynDisk, dir: &Path, wal_dir: &Path) -> Result<()> {
    let io = |what| move |e: IoError| Error::io(what, e);
    let tmp = dir.join(DATA_TMP);
    if disk.exists(&tmp).map_err(io("create"))? {
        disk.remove(&tmp).map_err(io("create"))?;
    }
    ryu_io::create_dir_all_synced(&**disk, wal_dir).map_err(io("create wal dir"))?;
    disk.sync_dir(wal_dir).map_err(io("create wal dir"))?;
    let sb = Superblock {
        generation: 1,
        checkpoint_ts: 0,
        root: None,
        page_count: FIRST_TREE_PAGE,
        wal_segment: 1,
        wal_lsn: 1,
    };
    let f = disk.create(&tmp).map_err(io("create data"))?;
    f.write_at(0, &vec![0u8; PAGE_SIZE])
        .map_err(io("create data"))?;
    let store = PageStore::new(f, tmp.clone(), 1);
    write_superblock(&store, &sb, None)?;
    disk.sync_dir(dir).map_err(io("create"))?;
    // The rename is the commit point of creation: `data` exists only when complete.
    disk.rename(&tmp, &dir.join(DATA_FILE))
        .map_err(io("create"))?;
    disk.sync_dir(dir).map_err(io("create"))?;
    Ok(())
}

/// The newest valid superblock (a damaged newest one falls back to the other slot).
fn choose_superblock(store: &PageStore, dir: &Path, has_wal_segments: bool) -> Result<Superblock> {
    let slots = [store.read_super(0)?, store.read_super(1)?];
    let mut valid = Vec::new();
    for (i, s) in slots.iter().enumerate() {
        match s {
            SuperSlot::Newer(found) => {
                return Err(Error::UnsupportedVersion {
                    file: store.path.clone(),
                    found: *found,
                    supported: crate::page::FORMAT_VERSION,
                });
            }
            SuperSlot::Valid(sb) if sb.slot() == i as u64 => valid.push(*sb),
            _ => {}
        }
    }
    valid.sort_by_key(|s| std::cmp::Reverse(s.generation));
    match valid.as_slice() {
        // Without any superblock magic the file is foreign, unless our WAL lies beside
        // it or our tree pages are in it: then the superblocks were overwritten (by a
        // misdirected page write, say).
        [] if !has_wal_segments
            && slots.iter().all(|s| matches!(s, SuperSlot::Foreign))
            && !store.has_tree_page_near_start() =>
        {
            Err(Error::NotADatabase {
                dir: dir.to_path_buf(),
                detail: format!("{} has no Ryu superblock", store.path.display()),
            })
        }
        [] => Err(Error::corrupted(
            &store.path,
            0,
            "both superblocks are damaged",
        )),
        [newest, ..] => Ok(*newest),
    }
}

/// A commit that is buffered in the WAL and may not be durable yet.
#[derive(Debug)]
pub struct CommitTicket {
    db: Arc<Inner>,
    lsn: u64,
    ts: Ts,
}

impl CommitTicket {
    /// The commit's timestamp.
    pub fn ts(&self) -> Ts {
        self.ts
    }

    /// Block until durable (joining or leading a group flush); returns the timestamp.
    pub fn wait(self) -> Result<Ts> {
        self.db.wait_durable(self.lsn)?;
        self.db.maybe_auto_checkpoint();
        Ok(self.ts)
    }
}

/// A read-only snapshot. Dropping it releases its snapshot and its generation pin.
#[derive(Debug)]
pub struct ReadTxn {
    db: Arc<Inner>,
    id: u64,
    start_ts: Ts,
    base: Superblock,
}

impl Drop for ReadTxn {
    fn drop(&mut self) {
        let mut st = self.db.lock();
        st.snapshots.remove(&self.id).expect("registered snapshot");
        st.unpin(self.base.generation);
    }
}

impl ReadTxn {
    /// The snapshot's timestamp: it sees exactly the commits at or below it.
    pub fn start_ts(&self) -> Ts {
        self.start_ts
    }

    /// The value of `key` in this snapshot.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(v) = self
            .db
            .lock()
            .delta_get(key, self.start_ts, self.base.checkpoint_ts)
        {
            return Ok(v);
        }
        tree::get(&self.db.store, self.base.root, key)
    }

    /// Entries with keys in `range`, ascending.
    pub fn range<R: RangeBounds<Vec<u8>>>(&self, range: R) -> Range<'_> {
        Range::new(
            self,
            None,
            range.start_bound().cloned(),
            range.end_bound().cloned(),
        )
    }

    /// Entries whose key starts with `prefix`, ascending.
    pub fn prefix(&self, prefix: &[u8]) -> Range<'_> {
        let (lo, hi) = prefix_bounds(prefix);
        Range::new(self, None, lo, hi)
    }
}

fn prefix_bounds(prefix: &[u8]) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return (Bound::Included(prefix.to_vec()), Bound::Excluded(end));
        }
    }
    (Bound::Included(prefix.to_vec()), Bound::Unbounded)
}

/// A read-write transaction: reads its snapshot plus its own writes; writes are
/// buffered until commit.
#[derive(Debug)]
pub struct WriteTxn {
    read: ReadTxn,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl WriteTxn {
    /// The snapshot's timestamp.
    pub fn start_ts(&self) -> Ts {
        self.read.start_ts
    }

    /// The value of `key`, own writes first.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.writes.get(key) {
            Some(v) => Ok(v.clone()),
            None => self.read.get(key),
        }
    }

    /// Set `key` to `value`.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        check_sizes(key, Some(value))?;
        self.writes.insert(key.to_vec(), Some(value.to_vec()));
        Ok(())
    }

    /// Delete `key` (a no-op if absent).
    pub fn delete(&mut self, key: &[u8]) -> Result<()> {
        check_sizes(key, None)?;
        self.writes.insert(key.to_vec(), None);
        Ok(())
    }

    /// Entries with keys in `range`, ascending, own writes included.
    pub fn range<R: RangeBounds<Vec<u8>>>(&self, range: R) -> Range<'_> {
        Range::new(
            &self.read,
            Some(&self.writes),
            range.start_bound().cloned(),
            range.end_bound().cloned(),
        )
    }

    /// Entries whose key starts with `prefix`, own writes included.
    pub fn prefix(&self, prefix: &[u8]) -> Range<'_> {
        let (lo, hi) = prefix_bounds(prefix);
        Range::new(&self.read, Some(&self.writes), lo, hi)
    }

    /// Discard the writes.
    pub fn rollback(self) {}

    /// Commit and wait until durable; returns the commit timestamp. `Conflict` if
    /// another transaction committed a write to one of this one's keys after it began.
    /// A transaction without writes commits at its start timestamp.
    pub fn commit(self) -> Result<Ts> {
        self.commit_begin()?.wait()
    }

    /// The non-blocking half of [`WriteTxn::commit`]: conflict check, timestamp, WAL
    /// buffer. The commit is acknowledged only once the ticket is durable.
    pub fn commit_begin(self) -> Result<CommitTicket> {
        let db = self.read.db.clone();
        let writes: Vec<Write> = self.writes.into_iter().collect();
        let mut st = db.lock();
        if writes.is_empty() {
            return Ok(CommitTicket {
                db: db.clone(),
                lsn: st.durable_lsn,
                ts: self.read.start_ts,
            });
        }
        if st.poisoned {
            return Err(Error::Poisoned);
        }
        for (k, _) in &writes {
            if st
                .delta
                .get(k)
                .and_then(|vs| vs.last())
                .is_some_and(|v| v.ts > self.read.start_ts)
            {
                return Err(Error::Conflict { key: k.clone() });
            }
        }
        let ts = st.last_assigned_ts + 1;
        let lsn = db.apply_locked(&mut st, ts, &writes)?;
        Ok(CommitTicket {
            db: db.clone(),
            lsn,
            ts,
        })
    }
}

/// Entries a scan takes from each source per refill. Each refill descends the tree
/// again and takes the database lock once, so a larger batch costs fewer of both per
/// entry; the lock is held for at most this many delta entries.
const SCAN_BATCH: usize = 256;

/// An ordered scan over a snapshot (and a transaction's own writes). Reads the tree in
/// batches, so a scan of any length holds no lock between items.
#[derive(Debug)]
pub struct Range<'a> {
    txn: &'a ReadTxn,
    writes: Option<&'a BTreeMap<Vec<u8>, Option<Vec<u8>>>>,
    lo: Bound<Vec<u8>>,
    hi: Bound<Vec<u8>>,
    ready: VecDeque<Entry>,
    done: bool,
    /// Entries taken from each source per refill ([`SCAN_BATCH`] unless a test sets
    /// it small to make every source's cut happen often).
    batch: usize,
}

impl<'a> Range<'a> {
    fn new(
        txn: &'a ReadTxn,
        writes: Option<&'a BTreeMap<Vec<u8>, Option<Vec<u8>>>>,
        lo: Bound<Vec<u8>>,
        hi: Bound<Vec<u8>>,
    ) -> Range<'a> {
        Range {
            txn,
            writes,
            lo,
            hi,
            ready: VecDeque::new(),
            done: false,
            batch: SCAN_BATCH,
        }
    }

    /// Take `batch` entries from each source per refill instead of the default. For
    /// tests: small batches make the cuts between the tree, the newer versions and a
    /// transaction's writes fall everywhere.
    #[doc(hidden)]
    pub fn batch_size(mut self, batch: usize) -> Self {
        assert!(batch >= 1);
        self.batch = batch;
        self
    }

    /// True when no key lies between the bounds (`BTreeMap::range` panics on some).
    fn is_empty_range(&self) -> bool {
        match (&self.lo, &self.hi) {
            (Bound::Included(l), Bound::Included(h)) => l > h,
            (Bound::Included(l) | Bound::Excluded(l), Bound::Excluded(h) | Bound::Included(h)) => {
                l >= h
            }
            _ => false,
        }
    }

    /// Merge one batch from each source up to the smallest key where a source was cut.
    fn refill(&mut self) -> Result<()> {
        if self.is_empty_range() {
            self.done = true;
            return Ok(());
        }
        let txn = self.txn;
        let mut from_tree = Vec::new();
        tree::scan(
            &txn.db.store,
            txn.base.root,
            &self.lo,
            &self.hi,
            self.batch,
            &mut from_tree,
        )?;
        let mut horizon: Option<Vec<u8>> =
            (from_tree.len() == self.batch).then(|| from_tree[self.batch - 1].0.clone());
        // Newer layers over the tree, each sorted and distinct: committed versions
        // newer than the base tree, then this transaction's own writes.
        let mut from_delta: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        {
            let st = txn.db.lock();
            let mut seen = 0;
            for (k, versions) in st
                .delta
                .range::<Vec<u8>, _>((self.lo.clone(), self.hi.clone()))
            {
                seen += 1;
                if let Some(v) = visible(versions, txn.start_ts, txn.base.checkpoint_ts) {
                    from_delta.push((k.clone(), v.clone()));
                }
                if seen == self.batch {
                    horizon = Some(horizon.map_or(k.clone(), |h| h.min(k.clone())));
                    break;
                }
            }
        }
        let mut from_writes: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        if let Some(writes) = self.writes {
            for (i, (k, v)) in writes
                .range::<Vec<u8>, _>((self.lo.clone(), self.hi.clone()))
                .enumerate()
            {
                from_writes.push((k.clone(), v.clone()));
                if i + 1 == self.batch {
                    horizon = Some(horizon.map_or(k.clone(), |h| h.min(k.clone())));
                    break;
                }
            }
        }
        let tree: Vec<(Vec<u8>, Option<Vec<u8>>)> =
            from_tree.into_iter().map(|(k, v)| (k, Some(v))).collect();
        let merged = overlay(overlay(tree, from_delta), from_writes);
        for (k, v) in merged {
            if horizon.as_ref().is_some_and(|h| k > *h) {
                break;
            }
            if let Some(v) = v {
                self.ready.push_back((k, v));
            }
        }
        match horizon {
            Some(h) => self.lo = Bound::Excluded(h),
            None => self.done = true,
        }
        Ok(())
    }
}

/// Merge two sorted runs of distinct keys; where both hold a key, `top`'s entry wins
/// (`None` is a deletion that hides the key below).
fn overlay(
    base: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    top: Vec<(Vec<u8>, Option<Vec<u8>>)>,
) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    if top.is_empty() {
        return base;
    }
    let mut out = Vec::with_capacity(base.len() + top.len());
    let mut base = base.into_iter().peekable();
    for (k, v) in top {
        while let Some(e) = base.next_if(|(bk, _)| *bk < k) {
            out.push(e);
        }
        base.next_if(|(bk, _)| *bk == k);
        out.push((k, v));
    }
    out.extend(base);
    debug_assert!(out.windows(2).all(|w| w[0].0 < w[1].0));
    out
}

impl Iterator for Range<'_> {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Result<Entry>> {
        while self.ready.is_empty() && !self.done {
            if let Err(e) = self.refill() {
                self.done = true;
                return Some(Err(e));
            }
        }
        self.ready.pop_front().map(Ok)
    }
}

/// A run of consecutive pages of the data file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PageRange {
    pub first_page: u64,
    pub page_count: u64,
}

impl PageRange {
    /// Byte offset of the first page.
    pub fn offset_bytes(&self) -> u64 {
        self.first_page * PAGE_SIZE as u64
    }

    /// Length in bytes.
    pub fn len_bytes(&self) -> u64 {
        self.page_count * PAGE_SIZE as u64
    }
}

fn coalesce(mut pages: Vec<u64>) -> Vec<PageRange> {
    pages.sort_unstable();
    pages.dedup();
    let mut out: Vec<PageRange> = Vec::new();
    for p in pages {
        match out.last_mut() {
            Some(r) if r.first_page + r.page_count == p => r.page_count += 1,
            _ => out.push(PageRange {
                first_page: p,
                page_count: 1,
            }),
        }
    }
    out
}

/// A file of the database directory, relative to it, with the byte ranges that matter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileExtent {
    pub path: PathBuf,
    /// `(offset, len)` pairs, ascending.
    pub ranges: Vec<(u64, u64)>,
}

/// A pinned checkpoint generation: its pages are never overwritten and its WAL
/// segments never deleted while the pin lives. A backup copies [`GenerationPin::tree_pages`]
/// of the data file, writes [`GenerationPin::superblock_image`] at
/// [`GenerationPin::superblock_offset`], and copies the WAL from
/// [`GenerationPin::wal_start`] up to the timestamp it wants.
#[derive(Debug)]
pub struct GenerationPin {
    db: Arc<Inner>,
    sb: Superblock,
}

impl Drop for GenerationPin {
    fn drop(&mut self) {
        self.db.lock().unpin(self.sb.generation);
    }
}

impl GenerationPin {
    /// Unpin now (dropping the pin does the same).
    pub fn release(self) {}

    /// The pinned generation's number.
    pub fn generation(&self) -> u64 {
        self.sb.generation
    }

    /// Every commit at or below this timestamp is in the pinned tree.
    pub fn checkpoint_ts(&self) -> Ts {
        self.sb.checkpoint_ts
    }

    /// The first WAL segment and LSN to replay on top of the pinned tree.
    pub fn wal_start(&self) -> (u64, u64) {
        (self.sb.wal_segment, self.sb.wal_lsn)
    }

    /// The pinned generation's superblock page. The slot in the live file may already
    /// hold a newer generation, so copy this image rather than the file's bytes.
    pub fn superblock_image(&self) -> Vec<u8> {
        self.sb.encode()
    }

    /// Where the superblock image belongs in a copy of the data file.
    pub fn superblock_offset(&self) -> u64 {
        self.sb.slot() * PAGE_SIZE as u64
    }

    /// Length of the data file a copy needs (pages beyond it are unused).
    pub fn data_len_bytes(&self) -> u64 {
        self.sb.page_count * PAGE_SIZE as u64
    }

    /// All tree pages of the pinned generation, coalesced into ascending runs.
    pub fn tree_pages(&self) -> Result<Vec<PageRange>> {
        self.pages_written_since(0)
    }

    /// The tree pages of the pinned generation written after generation `since` (for
    /// an incremental backup whose parent pinned `since`).
    pub fn pages_written_since(&self, since: u64) -> Result<Vec<PageRange>> {
        let mut pages = Vec::new();
        tree::walk_since(
            &self.db.store,
            self.sb.root,
            since,
            &mut |at: NodeRef, _| pages.push(at.page),
        )?;
        Ok(coalesce(pages))
    }

    /// The files and byte ranges that make up this generation, relative to the database
    /// directory: the superblock slot and tree pages of `data`, and every WAL segment
    /// from [`GenerationPin::wal_start`] on (whole files, as long as they are now).
    pub fn files(&self) -> Result<Vec<FileExtent>> {
        let mut ranges = vec![(self.superblock_offset(), PAGE_SIZE as u64)];
        ranges.extend(
            self.tree_pages()?
                .iter()
                .map(|r| (r.offset_bytes(), r.len_bytes())),
        );
        ranges.sort_unstable();
        let mut out = vec![FileExtent {
            path: PathBuf::from(DATA_FILE),
            ranges,
        }];
        let db = &self.db;
        for n in wal::list_segments(&db.disk, &db.wal_dir)? {
            if n < self.sb.wal_segment {
                continue;
            }
            let name = wal::segment_name(n);
            let f = db
                .disk
                .open(&db.wal_dir.join(&name))
                .map_err(|e| Error::io("wal open", e))?;
            let len = f.len().map_err(|e| Error::io("wal len", e))?;
            out.push(FileExtent {
                path: Path::new(WAL_DIR).join(name),
                ranges: vec![(0, len)],
            });
        }
        Ok(out)
    }
}
