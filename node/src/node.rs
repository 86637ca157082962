//! The replicated node: one Raft member and its engine, as a deterministic state
//! machine. See the crate documentation for the driving contract.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use rand::RngCore;
use rand_chacha::ChaCha8Rng;
use ryu_engine::{Db, MAX_KEY_BYTES, MAX_VALUE_BYTES};
use ryu_io::{DynDisk, IoError};
use ryu_raft::{
    ConfChange, ConfChangeKind, ConfState, Config, DiskLog, DiskLogOptions, Entry, EntryKind,
    HardState, Index, LogError, RawNode, Ready, Role, SnapshotMeta, SoftState, Storage, Term,
};

use crate::api::{
    Consistency, Envelope, MembershipChange, Output, Payload, Request, Response, Status,
};
use crate::backups::{BackupTarget, Barrier, BarrierRecord, Running};
use crate::command::{APPLIED_KEY, AppliedState, Command, KeyValue, SYSTEM_PREFIX};
use crate::snapshots;

/// The largest command (encoded) a node proposes. Cluster-wide, so that every
/// replica can apply every committed entry: a node refuses to open with WAL segments
/// too small to hold one.
pub const MAX_COMMAND_BYTES: usize = 16 << 10;

/// The most keys one [`Request::GetMany`] reads.
pub const MAX_GET_MANY: usize = 10_000;

/// The Raft log's directory inside the node's directory.
pub const RAFT_DIR: &str = "raft";
/// The engine's directory inside the node's directory.
pub const DB_DIR: &str = "db";
/// Holds the cluster id with its checksum (see `encode_cluster_file`).
pub const CLUSTER_FILE: &str = "CLUSTER";

/// Planted node-level bugs the simulator must catch (feature `planted-bugs` only).
#[cfg(feature = "planted-bugs")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlantedBug {
    /// A follower answers a linearizable read from its own applied state, without
    /// asking the leader (ReadIndex): it may be arbitrarily stale.
    FollowerReadWithoutReadIndex,
    /// A node backs up at the end of the batch that applied a barrier (its applied
    /// index) instead of at the barrier's index.
    BackupAtAppliedIndex,
    /// The coordinator declares a cluster backup complete on the first digest,
    /// before every required node reported.
    ClusterBackupSuccessBeforeAllDigests,
}

#[cfg(feature = "planted-bugs")]
macro_rules! planted {
    ($node:expr, $bug:ident) => {
        $node.options.planted_bug == Some(PlantedBug::$bug)
    };
}
#[cfg(not(feature = "planted-bugs"))]
macro_rules! planted {
    ($node:expr, $bug:ident) => {
        false
    };
}

/// How to open a node.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// This node's Raft id (non-zero).
    pub id: u64,
    /// The cluster id to record when the directory is new; an existing directory
    /// keeps its own.
    pub cluster_id: u64,
    /// The bootstrap membership (as etcd's `--initial-cluster`): every node, joining
    /// ones too, starts from it and replays membership changes from the log.
    pub initial_voters: Vec<u64>,
    /// Raft tuning; `id` and `applied` are filled in by the node.
    pub raft: Config,
    pub engine: ryu_engine::Options,
    pub log: DiskLogOptions,
    /// A linearizable read that has not completed after this many ticks is answered
    /// `Unavailable` (its ReadIndex request or answer was lost).
    pub read_timeout_ticks: u64,
    /// Where backups go; `None` refuses backup requests.
    pub backup: Option<BackupTarget>,
    /// Cap each backup job's average read rate (bytes per second of the backup
    /// target's clock); `None`: as fast as the disk allows. Raft snapshots are never
    /// throttled (a lagging follower waits for them).
    pub backup_max_bytes_per_sec: Option<u64>,
    /// The write-behind window of each backup job
    /// (`ryu_backup::BackupOptions::write_behind_bytes`): `None` for the job's default
    /// (8 MiB), `Some(0)` for none. Smaller windows, stepped as the job asks, trade
    /// a higher p99 of the commits during a rate-limited backup for a much lower
    /// p99.9 (see the backup crate's README).
    pub backup_write_behind_bytes: Option<u64>,
    /// A coordinator fails a cluster backup whose reports have not all arrived
    /// after this many ticks of its leadership.
    pub backup_timeout_ticks: u64,
    /// A node resends its unacknowledged cluster-backup reports this often.
    pub report_every_ticks: u64,
    /// Snapshot and compact the log once it holds this many applied entries
    /// (0: never).
    pub compact_after_entries: u64,
    #[cfg(feature = "planted-bugs")]
    pub planted_bug: Option<PlantedBug>,
}

impl NodeOptions {
    pub fn new(id: u64, initial_voters: Vec<u64>) -> NodeOptions {
        NodeOptions {
            id,
            cluster_id: 1,
            initial_voters,
            raft: Config::new(id),
            // Every entry the node applies is already durable in its own Raft log,
            // so the engine need not sync each apply (one fsync fewer per Ready, of
            // three): a crash may take the engine back to an earlier applied index and
            // Raft replays the rest. The log is compacted only past what the engine
            // has synced (`finish_snapshot`).
            engine: ryu_engine::Options {
                sync_commits: false,
                ..ryu_engine::Options::default()
            },
            log: DiskLogOptions::default(),
            read_timeout_ticks: 30,
            backup: None,
            backup_max_bytes_per_sec: None,
            backup_write_behind_bytes: None,
            backup_timeout_ticks: 600,
            report_every_ticks: 10,
            compact_after_entries: 10_000,
            #[cfg(feature = "planted-bugs")]
            planted_bug: None,
        }
    }
}

/// Why a node stopped. Every variant except `Config` means: drop this `Node` and
/// open the directory again (a failed sync is not retryable).
#[derive(Debug)]
#[non_exhaustive]
pub enum NodeError {
    Log(LogError),
    Engine(ryu_engine::Error),
    Raft(ryu_raft::Error),
    Io(IoError),
    /// Durable state is inconsistent in a way recovery must not paper over.
    Corrupted(String),
    /// The options are unusable; the text says which and why.
    Config(String),
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeError::Log(e) => write!(f, "{e}"),
            NodeError::Engine(e) => write!(f, "engine: {e}"),
            NodeError::Raft(e) => write!(f, "raft: {e}"),
            NodeError::Io(e) => write!(f, "node I/O: {e}"),
            NodeError::Corrupted(what) => write!(f, "node state corrupted: {what}"),
            NodeError::Config(what) => write!(f, "node options: {what}"),
        }
    }
}

impl std::error::Error for NodeError {}

impl From<LogError> for NodeError {
    fn from(e: LogError) -> Self {
        NodeError::Log(e)
    }
}
impl From<ryu_engine::Error> for NodeError {
    fn from(e: ryu_engine::Error) -> Self {
        NodeError::Engine(e)
    }
}
impl From<IoError> for NodeError {
    fn from(e: IoError) -> Self {
        NodeError::Io(e)
    }
}

#[derive(Clone, Debug)]
enum ReadOp {
    Get(Vec<u8>),
    GetMany(Vec<Vec<u8>>),
    Scan {
        start: Vec<u8>,
        end: Option<Vec<u8>>,
        limit: usize,
    },
}

#[derive(Clone, Debug)]
struct ReadWaiter {
    request: u64,
    op: ReadOp,
    issued_tick: u64,
}

/// A write this node proposed: it is ours if the entry applied at its index has
/// the term it was proposed in (an index and term name one entry, cluster-wide).
#[derive(Clone, Copy, Debug)]
struct WriteWaiter {
    request: u64,
    term: Term,
}

/// One replicated node. Single-threaded and deterministic: it does I/O only through
/// the `Disk` it was opened on, and randomness only from the RNG it was handed.
pub struct Node {
    pub(crate) options: NodeOptions,
    pub(crate) id: u64,
    pub(crate) cluster_id: u64,
    pub(crate) disk: DynDisk,
    pub(crate) dir: PathBuf,
    pub(crate) raw: RawNode<DiskLog>,
    pub(crate) db: Db,
    pub(crate) applied: AppliedState,
    soft: SoftState,
    pub(crate) ticks: u64,
    /// Prefix of this incarnation's read contexts: a ReadIndex answer addressed to an
    /// earlier incarnation must never complete a read of this one.
    read_nonce: u64,
    next_read: u64,
    writes: BTreeMap<Index, WriteWaiter>,
    reads: BTreeMap<Vec<u8>, ReadWaiter>,
    /// Reads the leader has confirmed at an index this node has not applied yet.
    confirmed_reads: Vec<(Index, ReadWaiter)>,
    pending: Option<Ready>,
    pub(crate) out: Output,
    pub(crate) jobs: Vec<Running>,
    /// Jobs a driver thread is running (see [`crate::backups::BackupWork`]), by
    /// sequence number.
    pub(crate) jobs_out: BTreeMap<u64, crate::backups::OutJob>,
    pub(crate) next_job_seq: u64,
    pub(crate) barriers: BTreeMap<String, Barrier>,
    /// Cluster backups requested here: backup id -> request id.
    pub(crate) cluster_waiters: BTreeMap<String, u64>,
    /// The engine's directory under `dir` (see [`crate::snapshots`]).
    pub(crate) engine_dir: String,
    pub(crate) snapshots_made: u64,
    pub(crate) snapshots_installed: u64,
    pub(crate) last_snapshot_error: Option<String>,
    /// Damage this node found in its own durable state outside the Ready cycle
    /// (a snapshot archive it was about to send): reported by the next
    /// `ready_finish`, which makes the driver reopen the node.
    pub(crate) detected_corruption: Option<String>,
    /// Raft asked for a snapshot archive that does not exist: make a new one.
    pub(crate) snapshot_archive_missing: bool,
    foreign_dropped: u64,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .field("cluster_id", &self.cluster_id)
            .field("applied", &self.applied.index)
            .field("soft", &self.soft)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Open (or create) the node in `dir` on `disk`. Recovery: the engine says which
    /// entry it reflects ([`AppliedState`]); Raft replays committed entries after it.
    pub fn open(
        disk: DynDisk,
        dir: &Path,
        options: NodeOptions,
        mut rng: ChaCha8Rng,
    ) -> Result<Node, NodeError> {
        if options.engine.wal_segment_bytes < 4 * MAX_COMMAND_BYTES as u64 {
            return Err(NodeError::Config(format!(
                "engine WAL segments of {} bytes cannot hold a command of {MAX_COMMAND_BYTES} bytes with its applied state; use at least {}",
                options.engine.wal_segment_bytes,
                4 * MAX_COMMAND_BYTES
            )));
        }
        ryu_io::create_dir_all_synced(&*disk, dir)?;
        let cluster_id = open_cluster_id(&disk, dir, options.cluster_id)?;
        let engine_dir = snapshots::engine_dir(&disk, dir)?;
        // What was just read may be visible but not durable: a snapshot install that
        // renamed `ENGINE` and then failed to sync the directory leaves the new
        // pointer (and the new engine directory's entry) in place until the next power
        // loss. The log below may record that engine's snapshot durably, so make the
        // pointer durable first; if that fails, nothing has changed on disk.
        disk.sync_dir(dir)?;
        let db = Db::open(disk.clone(), &dir.join(&engine_dir), options.engine.clone())?;
        let initial = ConfState::with_voters(options.initial_voters.iter().copied());
        let applied = snapshots::read_applied(&db)?.unwrap_or_else(|| AppliedState {
            conf: initial.clone(),
            ..AppliedState::default()
        });
        let mut log = DiskLog::open(disk.clone(), &dir.join(RAFT_DIR), initial, options.log)?;
        let corrupt = |e: ryu_raft::StorageError| NodeError::Corrupted(e.to_string());
        let snap = log.snapshot_meta().map_err(corrupt)?;
        let last = log.last_index().map_err(corrupt)?;
        let hs = log.hard_state();
        // The log's commit index is only a lower bound (see `DiskLog`'s meta), while
        // the engine applies committed entries only. If the log holds the very entry
        // the engine last applied, the log agrees with the engine up to there (log
        // matching) and only its commit index lags: raise it, keeping the entries
        // after it, which this node may have acknowledged to a leader.
        let holds_applied = applied.index > hs.commit
            && applied.index >= snap.index
            && applied.index <= last
            && log.term(applied.index).ok() == Some(applied.term);
        if holds_applied {
            log.set_hard_state(HardState {
                commit: applied.index,
                ..hs
            })?;
        } else if applied.index > hs.commit || applied.index > last {
            // The engine holds an installed snapshot the log has not recorded yet (a
            // crash between the two steps): the log catches up with the engine.
            log.install_snapshot(SnapshotMeta {
                index: applied.index,
                term: applied.term,
                conf_state: applied.conf.clone(),
            })?;
        }
        if applied.index < snap.index {
            return Err(NodeError::Corrupted(format!(
                "the log is compacted to {} but the engine reflects only entry {}",
                snap.index, applied.index
            )));
        }
        // Raft hands out (and we re-apply) every committed entry after `applied`,
        // membership changes included: it must restart from the membership as of
        // `applied`, not the newest one it saw.
        let log_conf = log.initial_state().map_err(corrupt)?.conf_state;
        if log_conf != applied.conf {
            log.set_conf_state(applied.conf.clone())?;
        }
        remove_leftovers(&disk, dir, &engine_dir)?;
        let commit = log.hard_state().commit;
        if applied.index > commit {
            return Err(NodeError::Corrupted(format!(
                "engine applied index {} beyond the log's durable commit {commit}",
                applied.index
            )));
        }
        let config = Config {
            id: ryu_raft::NodeId(options.id),
            applied: applied.index,
            ..options.raft.clone()
        };
        let read_nonce = rng.next_u64();
        let raw = RawNode::new(&config, log, rng).map_err(NodeError::Raft)?;
        let soft = raw.soft_state();
        let mut node = Node {
            id: options.id,
            options,
            cluster_id,
            disk,
            dir: dir.to_path_buf(),
            raw,
            db,
            applied,
            soft,
            ticks: 0,
            read_nonce,
            next_read: 0,
            writes: BTreeMap::new(),
            reads: BTreeMap::new(),
            confirmed_reads: Vec::new(),
            pending: None,
            out: Output::default(),
            jobs: Vec::new(),
            jobs_out: BTreeMap::new(),
            next_job_seq: 0,
            barriers: BTreeMap::new(),
            cluster_waiters: BTreeMap::new(),
            engine_dir,
            snapshots_made: 0,
            snapshots_installed: 0,
            last_snapshot_error: None,
            detected_corruption: None,
            snapshot_archive_missing: false,
            foreign_dropped: 0,
        };
        node.load_barriers()?;
        if let Some(t) = &node.options.backup {
            // No job of this node runs before it is open: a lock in its own backup
            // directory was left by a crash (jobs die with the process).
            let _ = ryu_backup::break_lock(&t.disk, &t.dir.join(format!("node-{}", node.id)));
        }
        Ok(node)
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// The engine (for checkers and backups; writes must go through Raft).
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The Raft core (read-only, for checkers).
    pub fn raft(&self) -> &RawNode<DiskLog> {
        &self.raw
    }

    /// The entry the engine reflects.
    pub fn applied(&self) -> &AppliedState {
        &self.applied
    }

    pub fn disk(&self) -> (&DynDisk, &Path) {
        (&self.disk, &self.dir)
    }

    pub fn status(&self) -> Status {
        let hs = self.raw.hard_state();
        let soft = self.raw.soft_state();
        Status {
            id: self.id,
            cluster_id: self.cluster_id,
            role: soft.role,
            leader: soft.leader.map(|l| l.0),
            term: hs.term,
            commit: hs.commit,
            applied: self.applied.index,
            voters: self.applied.conf.voters.iter().map(|n| n.0).collect(),
            learners: self.applied.conf.learners.iter().map(|n| n.0).collect(),
        }
    }

    /// Everything produced since the last call: messages to send, replies to give.
    pub fn take_output(&mut self) -> Output {
        std::mem::take(&mut self.out)
    }

    // ---- inputs ---------------------------------------------------------------------

    /// One tick of the node's clock (the driver calls it every tick interval, and
    /// catches up on missed ticks before any other input).
    pub fn tick(&mut self) {
        self.raw.tick();
        self.ticks += 1;
        let deadline = self.options.read_timeout_ticks;
        let now = self.ticks;
        let expired: Vec<Vec<u8>> = self
            .reads
            .iter()
            .filter(|(_, w)| now - w.issued_tick >= deadline)
            .map(|(ctx, _)| ctx.clone())
            .collect();
        for ctx in expired {
            let w = self.reads.remove(&ctx).expect("present");
            self.reply(w.request, unavailable("read not confirmed in time"));
        }
        // A confirmed read whose index this node does not reach (it was removed, or
        // is cut off from the leader) gives up too; a read has no effect, so this
        // answer is exact.
        let (late, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.confirmed_reads)
            .into_iter()
            .partition(|(_, w)| now - w.issued_tick >= 4 * deadline);
        self.confirmed_reads = waiting;
        for (_, w) in late {
            self.reply(
                w.request,
                unavailable("node did not catch up to the read index in time"),
            );
        }
        if self
            .ticks
            .is_multiple_of(self.options.report_every_ticks.max(1))
        {
            self.send_reports();
        }
        self.coordinate();
    }

    /// A message from a peer. Messages from another cluster, and messages whose
    /// inner sender or addressee is not the envelope's (a transport authenticates
    /// the envelope's sender only), are dropped and counted.
    pub fn step(&mut self, env: Envelope) {
        if env.cluster != self.cluster_id || env.to != self.id {
            self.foreign_dropped += 1;
            return;
        }
        match env.payload {
            Payload::Raft(m) if m.from.0 == env.from && m.to.0 == env.to => self.raw.step(m),
            Payload::BackupReport(r) if r.node == env.from => self.receive_report(r),
            Payload::BackupAck { backup_id } => self.receive_ack(&backup_id),
            Payload::Raft(_) | Payload::BackupReport(_) => self.foreign_dropped += 1,
        }
    }

    /// A client request; its answer comes out in [`Output::replies`] under `request`.
    pub fn request(&mut self, request: u64, req: Request) {
        if let Err(reason) = validate(&req) {
            self.reply(request, Response::Invalid { reason });
            return;
        }
        match req {
            Request::Status => {
                let s = self.status();
                self.reply(request, Response::Status(s));
            }
            Request::Get { key, consistency } => self.read(request, ReadOp::Get(key), consistency),
            Request::GetMany { keys, consistency } => {
                self.read(request, ReadOp::GetMany(keys), consistency)
            }
            Request::Scan {
                start,
                end,
                limit,
                consistency,
            } => self.read(request, ReadOp::Scan { start, end, limit }, consistency),
            Request::Put { key, value } => self.propose(request, vec![], vec![(key, Some(value))]),
            Request::Delete { key } => self.propose(request, vec![], vec![(key, None)]),
            Request::Cas { key, expected, new } => {
                self.propose(request, vec![(key.clone(), expected)], vec![(key, new)])
            }
            Request::Txn { reads, writes } => self.propose(request, reads, writes),
            Request::Incr { key, delta } => {
                let cmd = Command::Incr {
                    origin: self.id,
                    request,
                    key,
                    delta,
                };
                self.propose_command(request, cmd);
            }
            Request::Backup { id, strategy } => self.request_backup(request, id, strategy),
            Request::ChangeMembership(change) => self.change_membership(request, change),
        }
    }

    fn read(&mut self, request: u64, op: ReadOp, consistency: Consistency) {
        let local = consistency == Consistency::Stale
            || (planted!(self, FollowerReadWithoutReadIndex)
                && self.raw.soft_state().role != Role::Leader);
        if local {
            let r = self.serve(&op);
            self.reply(request, r);
            return;
        }
        let mut ctx = self.read_nonce.to_be_bytes().to_vec();
        ctx.extend_from_slice(&self.next_read.to_be_bytes());
        self.next_read += 1;
        match self.raw.read_index(ctx.clone()) {
            Ok(()) => {
                let waiter = ReadWaiter {
                    request,
                    op,
                    issued_tick: self.ticks,
                };
                self.reads.insert(ctx, waiter);
            }
            Err(ryu_raft::Error::NotLeader { leader }) => {
                self.reply(
                    request,
                    Response::NotLeader {
                        leader: leader.map(|l| l.0),
                    },
                );
            }
            Err(e) => self.reply(request, unavailable(&e.to_string())),
        }
    }

    fn propose(&mut self, request: u64, checks: Vec<KeyValue>, writes: Vec<KeyValue>) {
        let cmd = Command::Txn {
            origin: self.id,
            request,
            checks,
            writes,
        };
        self.propose_command(request, cmd);
    }

    /// Propose a client's command on the leader; its waiter is answered when the entry
    /// is applied.
    fn propose_command(&mut self, request: u64, cmd: Command) {
        let soft = self.raw.soft_state();
        if soft.role != Role::Leader {
            let leader = soft.leader.map(|l| l.0).filter(|&l| l != self.id);
            self.reply(request, Response::NotLeader { leader });
            return;
        }
        let bytes = cmd.encode();
        if bytes.len() > MAX_COMMAND_BYTES {
            self.reply(
                request,
                Response::Invalid {
                    reason: format!(
                        "a transaction of {} bytes exceeds the limit of {MAX_COMMAND_BYTES}",
                        bytes.len()
                    ),
                },
            );
            return;
        }
        match self.raw.propose(bytes) {
            Ok(index) => {
                let term = self.raw.hard_state().term;
                self.add_write_waiter(index, WriteWaiter { request, term });
            }
            Err(ryu_raft::Error::NotLeader { leader }) => self.reply(
                request,
                Response::NotLeader {
                    leader: leader.map(|l| l.0),
                },
            ),
            Err(e) => self.reply(request, unavailable(&e.to_string())),
        }
    }

    /// Remember a proposal. A waiter already at that index belongs to an entry of an
    /// earlier term that this leader's log has since replaced: it can never commit.
    fn add_write_waiter(&mut self, index: Index, waiter: WriteWaiter) {
        if let Some(old) = self.writes.insert(index, waiter) {
            self.reply(
                old.request,
                unavailable("entry overwritten by a new leader; the write was not applied"),
            );
        }
    }

    fn change_membership(&mut self, request: u64, change: MembershipChange) {
        let soft = self.raw.soft_state();
        if soft.role != Role::Leader {
            let leader = soft.leader.map(|l| l.0).filter(|&l| l != self.id);
            self.reply(request, Response::NotLeader { leader });
            return;
        }
        let (kind, node) = match change {
            MembershipChange::AddVoter(n) => (ConfChangeKind::AddVoter, n),
            MembershipChange::AddLearner(n) => (ConfChangeKind::AddLearner, n),
            MembershipChange::Remove(n) => (ConfChangeKind::Remove, n),
        };
        match self
            .raw
            .propose_conf_change(&ConfChange::single(kind, node))
        {
            Ok(index) => {
                let term = self.raw.hard_state().term;
                self.add_write_waiter(index, WriteWaiter { request, term });
            }
            Err(e) => self.reply(request, unavailable(&e.to_string())),
        }
    }

    // ---- the Ready cycle --------------------------------------------------------------

    /// Whether [`Node::ready_begin`] has work.
    pub fn has_ready(&self) -> bool {
        // A durability fault is reported by `ready_finish`, even with nothing to do.
        self.pending.is_none() && (self.raw.has_ready() || self.raw.durability_fault().is_some())
    }

    /// Take the next batch of Raft work: messages that may leave now go to the output;
    /// the writes wait for [`Node::ready_finish`]. The simulator puts disk latency
    /// between the two calls; production calls them back to back. Returns false if
    /// there is nothing to do (or a batch is already in flight).
    pub fn ready_begin(&mut self) -> bool {
        if !self.has_ready() {
            return false;
        }
        let mut rd = self.raw.ready();
        if let Some(soft) = rd.soft_state {
            self.on_soft_state(soft);
        }
        for m in std::mem::take(&mut rd.messages) {
            self.send(m);
        }
        for req in std::mem::take(&mut rd.snapshot_requests) {
            self.serve_snapshot_request(req);
        }
        self.pending = Some(rd);
        true
    }

    /// Make the pending batch durable, send what had to wait for it, apply committed
    /// entries and answer their clients. An error means the node must be dropped and
    /// reopened (its log or engine may be poisoned).
    pub fn ready_finish(&mut self) -> Result<(), NodeError> {
        if let Some(why) = self.detected_corruption.take() {
            return Err(NodeError::Corrupted(why));
        }
        if let Some(why) = self.raw.durability_fault() {
            return Err(NodeError::Corrupted(why.to_string()));
        }
        let Some(mut rd) = self.pending.take() else {
            return Ok(());
        };
        self.stage_chunks(std::mem::take(&mut rd.received_chunks))?;
        if let Some(meta) = rd.snapshot.take() {
            self.install_snapshot(meta)?;
            self.expire_write_waiters();
        }
        self.raw.storage_mut().persist(rd.hard_state, &rd.entries)?;
        for m in std::mem::take(&mut rd.persisted_messages) {
            self.send(m);
        }
        let committed = std::mem::take(&mut rd.committed_entries);
        self.apply(&committed)?;
        for rs in std::mem::take(&mut rd.read_states) {
            if let Some(w) = self.reads.remove(&rs.context) {
                self.confirmed_reads.push((rs.index, w));
            }
        }
        self.raw.advance();
        self.serve_confirmed_reads();
        self.maybe_snapshot();
        Ok(())
    }

    /// Messages dropped because they came from another cluster (or were misaddressed).
    pub fn foreign_messages_dropped(&self) -> u64 {
        self.foreign_dropped
    }

    /// Snapshot counters: (made here, installed from a leader).
    pub fn snapshot_counts(&self) -> (u64, u64) {
        (self.snapshots_made, self.snapshots_installed)
    }

    /// Run every pending batch to completion (production, and tests without disk
    /// latency).
    pub fn run_ready(&mut self) -> Result<(), NodeError> {
        while self.ready_begin() {
            self.ready_finish()?;
        }
        Ok(())
    }

    fn on_soft_state(&mut self, soft: SoftState) {
        if soft.role != Role::Leader && self.soft.role == Role::Leader {
            self.release_cluster_waiters();
        }
        if soft.leader != self.soft.leader {
            // A ReadIndex request sent to the old leader may never be answered.
            // Writes keep waiting: their entries may still commit.
            for (_, w) in std::mem::take(&mut self.reads) {
                self.reply(w.request, unavailable("leader changed; retry the read"));
            }
        }
        self.soft = soft;
    }

    fn send(&mut self, m: ryu_raft::Message) {
        self.out.messages.push(Envelope {
            cluster: self.cluster_id,
            from: self.id,
            to: m.to.0,
            payload: Payload::Raft(m),
        });
    }

    pub(crate) fn reply(&mut self, request: u64, response: Response) {
        self.out.replies.push((request, response));
    }

    // ---- applying ---------------------------------------------------------------------

    /// Apply committed entries to the engine, each at its Raft index, then make them
    /// durable with one flush (group commit) before anyone is answered.
    fn apply(&mut self, entries: &[Entry]) -> Result<(), NodeError> {
        if entries.is_empty() {
            return Ok(());
        }
        // The engine shows a batch only once it is durable: checks of later entries
        // in this batch must see the writes of earlier ones through this overlay.
        let mut overlay: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        let snapshot = self.db.begin_read();
        let mut answers = Vec::new();
        let mut late_barriers: Vec<BarrierRecord> = Vec::new();
        for e in entries {
            if e.index <= self.applied.index {
                continue;
            }
            assert_eq!(
                e.index,
                self.applied.index + 1,
                "node {} applies {} after {}",
                self.id,
                e.index,
                self.applied.index
            );
            let mut writes: Vec<KeyValue> = Vec::new();
            let mut outcome = None;
            let mut barrier = None;
            match e.kind {
                EntryKind::Normal if e.data.is_empty() => {}
                EntryKind::Noop => {}
                EntryKind::Normal => match Command::decode(&e.data) {
                    Ok(Command::Txn {
                        checks, writes: w, ..
                    }) => {
                        let mut failed = None;
                        for (key, expected) in checks {
                            let current = match overlay.get(&key) {
                                Some(v) => v.clone(),
                                None => snapshot.get(&key)?,
                            };
                            if current != expected {
                                failed = Some((key, current));
                                break;
                            }
                        }
                        outcome = Some(match failed {
                            None => {
                                writes = w;
                                Response::Committed { index: e.index }
                            }
                            Some((key, current)) => Response::Aborted {
                                index: e.index,
                                key,
                                current,
                            },
                        });
                    }
                    Ok(Command::Incr { key, delta, .. }) => {
                        let current = match overlay.get(&key) {
                            Some(v) => v.clone(),
                            None => snapshot.get(&key)?,
                        };
                        outcome =
                            Some(match crate::command::increment(current.as_deref(), delta) {
                                Ok(value) => {
                                    writes.push((key, Some(value.to_string().into_bytes())));
                                    Response::Incremented {
                                        value,
                                        index: e.index,
                                    }
                                }
                                Err(reason) => Response::Invalid {
                                    reason: reason.into(),
                                },
                            });
                    }
                    Ok(Command::BackupBarrier {
                        backup_id,
                        quorum_only,
                        ..
                    }) => {
                        let key = BarrierRecord::key(&backup_id);
                        let known = match overlay.get(&key) {
                            Some(v) => v.is_some(),
                            None => snapshot.get(&key)?.is_some(),
                        };
                        // A second barrier of one id (a retried request) or an id that
                        // is not a valid backup id is ignored, identically everywhere.
                        if !known && ryu_backup::BackupId::new(&backup_id).is_ok() {
                            let record = BarrierRecord {
                                id: backup_id,
                                index: e.index,
                                term: e.term,
                                quorum_only,
                                voters: self.applied.conf.voters.iter().map(|n| n.0).collect(),
                            };
                            writes.push((key, Some(record.encode())));
                            barrier = Some(record);
                        }
                    }
                    // Every replica decodes the same bytes the same way, so skipping
                    // keeps them equal; the proposer hears why.
                    Err(err) => {
                        outcome = Some(Response::Invalid {
                            reason: err.to_string(),
                        })
                    }
                },
                EntryKind::ConfChange => {
                    let cc = ConfChange::decode(&e.data).map_err(|err| {
                        NodeError::Corrupted(format!("committed conf change {}: {err}", e.index))
                    })?;
                    let cs = self.raw.apply_conf_change(&cc).map_err(NodeError::Raft)?;
                    self.raw.storage_mut().set_conf_state(cs.clone())?;
                    self.applied.conf = cs;
                    outcome = Some(Response::Committed { index: e.index });
                }
            }
            self.applied.index = e.index;
            self.applied.term = e.term;
            for (k, v) in &writes {
                overlay.insert(k.clone(), v.clone());
            }
            writes.push((APPLIED_KEY.to_vec(), Some(self.applied.encode())));
            self.db.apply_at_begin(e.index, writes)?;
            if let Some(w) = self.writes.remove(&e.index) {
                answers.push((w, e.term, outcome));
            }
            if let Some(record) = barrier {
                if planted!(self, BackupAtAppliedIndex) {
                    late_barriers.push(record);
                } else {
                    // The barrier's backup is of exactly the state at its index, and
                    // the barrier record is durable before its backup starts: were it
                    // lost in a crash, replaying the barrier would start that backup
                    // again over the finished one and report a failure.
                    self.db.sync()?;
                    self.on_barrier_applied(record);
                }
            }
        }
        drop(snapshot);
        self.db.flush()?;
        for record in late_barriers {
            self.on_barrier_applied(record);
        }
        for (w, term, outcome) in answers {
            let r = match outcome {
                Some(r) if term == w.term => r,
                _ => unavailable("entry overwritten by a new leader; the write was not applied"),
            };
            self.reply(w.request, r);
        }
        self.expire_write_waiters();
        Ok(())
    }

    /// Waiters at or below the applied index whose entry we never saw (a snapshot
    /// skipped them) can no longer be matched: their outcome is unknown here.
    fn expire_write_waiters(&mut self) {
        let stale: Vec<Index> = self
            .writes
            .range(..=self.applied.index)
            .map(|(i, _)| *i)
            .collect();
        for i in stale {
            let w = self.writes.remove(&i).expect("present");
            // Never `Unavailable`: the entry may well have been applied.
            self.reply(
                w.request,
                Response::OutcomeUnknown {
                    reason: "the node installed a snapshot past this write's entry".into(),
                },
            );
        }
    }

    fn serve_confirmed_reads(&mut self) {
        let applied = self.applied.index;
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.confirmed_reads)
            .into_iter()
            .partition(|(index, _)| *index <= applied);
        self.confirmed_reads = waiting;
        for (_, w) in ready {
            let r = self.serve(&w.op);
            self.reply(w.request, r);
        }
    }

    fn serve(&self, op: &ReadOp) -> Response {
        let txn = self.db.begin_read();
        let index = self.applied.index;
        debug_assert_eq!(txn.start_ts(), index, "engine and applied index disagree");
        let result = match op {
            ReadOp::Get(key) => txn.get(key).map(|value| Response::Value { value, index }),
            ReadOp::GetMany(keys) => keys
                .iter()
                .map(|k| txn.get(k))
                .collect::<Result<Vec<_>, _>>()
                .map(|values| Response::Values { values, index }),
            ReadOp::Scan { start, end, limit } => {
                let end = end.clone().unwrap_or_else(|| vec![SYSTEM_PREFIX]);
                let end = end.min(vec![SYSTEM_PREFIX]);
                let mut entries = Vec::new();
                let mut err = None;
                if start < &end {
                    for item in txn.range(start.clone()..end) {
                        match item {
                            Ok(kv) => entries.push(kv),
                            Err(e) => {
                                err = Some(e);
                                break;
                            }
                        }
                        if entries.len() >= *limit {
                            break;
                        }
                    }
                }
                match err {
                    None => Ok(Response::Entries { entries, index }),
                    Some(e) => Err(e),
                }
            }
        };
        result.unwrap_or_else(|e| unavailable(&format!("read failed: {e}")))
    }
}

fn unavailable(reason: &str) -> Response {
    Response::Unavailable {
        reason: reason.to_string(),
    }
}

fn validate(req: &Request) -> Result<(), String> {
    let key_ok = |k: &[u8]| -> Result<(), String> {
        if k.first() == Some(&SYSTEM_PREFIX) {
            return Err("keys starting with byte 0xff are reserved".into());
        }
        if k.len() > MAX_KEY_BYTES {
            return Err(format!("key of {} bytes exceeds {MAX_KEY_BYTES}", k.len()));
        }
        Ok(())
    };
    let value_ok = |v: &Option<Vec<u8>>| -> Result<(), String> {
        match v {
            Some(v) if v.len() > MAX_VALUE_BYTES => Err(format!(
                "value of {} bytes exceeds {MAX_VALUE_BYTES}",
                v.len()
            )),
            _ => Ok(()),
        }
    };
    match req {
        Request::Get { key, .. } | Request::Delete { key } | Request::Incr { key, .. } => {
            key_ok(key)
        }
        Request::GetMany { keys, .. } => {
            if keys.is_empty() || keys.len() > MAX_GET_MANY {
                return Err(format!("a multi-key read takes 1 to {MAX_GET_MANY} keys"));
            }
            keys.iter().try_for_each(|k| key_ok(k))
        }
        Request::Scan { limit, .. } if *limit == 0 => Err("scan limit must be positive".into()),
        Request::Scan { .. }
        | Request::Status
        | Request::Backup { .. }
        | Request::ChangeMembership(_) => Ok(()),
        Request::Put { key, value } => {
            key_ok(key)?;
            value_ok(&Some(value.clone()))
        }
        Request::Cas { key, expected, new } => {
            key_ok(key)?;
            value_ok(expected)?;
            value_ok(new)
        }
        Request::Txn { reads, writes } => {
            // A transaction without writes still goes through the log: it checks
            // that its reads were all current at one index (a read-only snapshot).
            if writes.is_empty() && reads.is_empty() {
                return Err("a transaction needs at least one read or write".into());
            }
            for (k, v) in reads.iter().chain(writes) {
                key_ok(k)?;
                value_ok(v)?;
            }
            Ok(())
        }
    }
}

/// Remove what an interrupted snapshot installation left: engine directories not in
/// use, and the receive area (a transfer starts over).
fn remove_leftovers(disk: &DynDisk, dir: &Path, engine_dir: &str) -> Result<(), NodeError> {
    let corrupt = |e: ryu_backup::Error| NodeError::Corrupted(e.to_string());
    for name in disk.list(dir)? {
        if (name == DB_DIR || name.starts_with("db-")) && name != engine_dir {
            ryu_backup::remove_tree(disk, &dir.join(&name)).map_err(corrupt)?;
        }
    }
    ryu_backup::remove_tree(disk, &dir.join(snapshots::RECV_DIR)).map_err(corrupt)?;
    disk.sync_dir(dir)?;
    Ok(())
}

/// Read the cluster id, or record `new_id` if the directory has none yet.
fn open_cluster_id(disk: &DynDisk, dir: &Path, new_id: u64) -> Result<u64, NodeError> {
    let path = dir.join(CLUSTER_FILE);
    match disk.open(&path) {
        Ok(f) => {
            let len = f.len()?;
            if len == LEGACY_CLUSTER_FILE_BYTES as u64 {
                // Written before the checksum existed: take the id and rewrite the
                // file with its checksum, so an old directory opens and loses
                // nothing. (A damaged current file can never have this length.)
                let mut buf = [0u8; LEGACY_CLUSTER_FILE_BYTES];
                f.read_at(0, &mut buf)?;
                let id = std::str::from_utf8(&buf[..16])
                    .ok()
                    .and_then(|s| u64::from_str_radix(s, 16).ok())
                    .filter(|_| buf[16] == b'\n')
                    .ok_or_else(|| {
                        NodeError::Corrupted(format!("{CLUSTER_FILE} does not parse"))
                    })?;
                write_file_atomic(disk, dir, CLUSTER_FILE, &encode_cluster_file(id))?;
                return Ok(id);
            }
            if len != CLUSTER_FILE_BYTES as u64 {
                return Err(NodeError::Corrupted(format!(
                    "{CLUSTER_FILE} has {len} bytes"
                )));
            }
            let mut buf = [0u8; CLUSTER_FILE_BYTES];
            f.read_at(0, &mut buf)?;
            decode_cluster_file(&buf).ok_or_else(|| {
                NodeError::Corrupted(format!(
                    "{CLUSTER_FILE} does not parse or fails its checksum"
                ))
            })
        }
        Err(e) if e.is_not_found() => {
            write_file_atomic(disk, dir, CLUSTER_FILE, &encode_cluster_file(new_id))?;
            Ok(new_id)
        }
        Err(e) => Err(e.into()),
    }
}

/// Bytes of the `CLUSTER` file.
const CLUSTER_FILE_BYTES: usize = 26;
/// Bytes of the first format: 16 hex digits and a newline, no checksum.
const LEGACY_CLUSTER_FILE_BYTES: usize = 17;

/// The `CLUSTER` file: the cluster id as 16 lowercase hex digits, a space, the
/// crc32 of the id's 8 little-endian bytes as 8 hex digits, a newline (26 bytes).
/// The checksum matters: a flipped bit that still spells hex would otherwise move
/// the node into another cluster without a word.
pub(crate) fn encode_cluster_file(id: u64) -> Vec<u8> {
    format!("{id:016x} {:08x}\n", crc32fast::hash(&id.to_le_bytes())).into_bytes()
}

fn decode_cluster_file(buf: &[u8]) -> Option<u64> {
    if buf.len() != CLUSTER_FILE_BYTES || buf[16] != b' ' || buf[25] != b'\n' {
        return None;
    }
    let hex = |b: &[u8]| {
        let s = std::str::from_utf8(b).ok()?;
        s.bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
            .then(|| u64::from_str_radix(s, 16).ok())
            .flatten()
    };
    let id = hex(&buf[..16])?;
    let crc = hex(&buf[17..25])?;
    (crc == u64::from(crc32fast::hash(&id.to_le_bytes()))).then_some(id)
}

/// Write a whole file atomically: temp file, sync, rename, sync the directory.
pub(crate) fn write_file_atomic(
    disk: &DynDisk,
    dir: &Path,
    name: &str,
    bytes: &[u8],
) -> Result<(), IoError> {
    let tmp = dir.join(format!("{name}.tmp"));
    match disk.remove(&tmp) {
        Ok(()) => {}
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e),
    }
    let f = disk.create(&tmp)?;
    f.write_at(0, bytes)?;
    f.sync_data()?;
    disk.rename(&tmp, &dir.join(name))?;
    disk.sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_file_round_trips_and_every_bit_flip_is_caught() {
        let bytes = encode_cluster_file(0x0123_4567_89ab_cdef);
        assert_eq!(bytes.len(), CLUSTER_FILE_BYTES);
        assert_eq!(decode_cluster_file(&bytes), Some(0x0123_4567_89ab_cdef));
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert_eq!(
                decode_cluster_file(&b),
                None,
                "flip of bit {i} went unnoticed"
            );
        }
    }
}
