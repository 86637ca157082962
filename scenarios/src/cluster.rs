//! Scenario `cluster`: 3 or 5 replicated Ryu nodes ([`ryu_node::Node`]: Raft, the
//! durable log and the engine on one `SimDisk` each) over one `SimNetwork`, with
//! closed-loop clients doing gets, puts, deletes, compare-and-sets and optimistic
//! transactions against whichever node they believe leads.
//!
//! Each seed draws its own fault mix (swarm testing): process crashes and power loss
//! (also aimed at the window between a node's `ready` and its writes being durable),
//! pauses, every partition shape, loss, duplication, reordering, clock drift, write
//! and sync errors, lease reads or ReadIndex. Persistence and client links take
//! simulated time.
//!
//! Checked:
//! - after every event: **election safety** (one leader per term), and **replica
//!   equality**: two nodes that applied the same index hold the same engine contents
//!   (compared by a digest of a full scan, cached per node and index);
//! - **state machine safety**: no two nodes apply different entries at one index;
//! - at the end: the client history (every acknowledged and every unknown-outcome
//!   operation, plus a final read of every key) is **linearizable** (so no
//!   acknowledged write was lost), checked per key with Wing and Gong search;
//! - **liveness**: after faults heal, within a bounded simulated time every node has
//!   applied a probe write, and the final reads complete.
//!
//! Catalogue entry `disk-corruption-on-a-minority` ([`Profile::DiskCorruptionOnAMinority`]):
//! once, at a drawn time in the fault phase (when enough voters are up that losing
//! them keeps a quorum), a minority of voters (1 of 3, 1 or 2 of 5) crash, 1 to 64
//! random bits of their files flip at rest ([`SimDisk::flip_random_bits`]: log
//! segments, engine pages and WAL, snapshots, metadata, used bytes or not), and they
//! restart over them. A node whose `open`, Ready, backup step or full engine scan then
//! fails with corruption (not a transient I/O error) stays down for good; the harness
//! plays the operator: it asks the leader to remove it, starts a spare with a new id
//! empty, adds it as a learner (it catches up by log or snapshot) and promotes it. The
//! bad id is never reused. Corruption nobody notices (flipped bytes no one reads) is
//! fine as long as every checker passes; liveness requires the members the leader
//! knows, plus every replacement done. The summary counts victims, bits flipped,
//! nodes that detected corruption and nodes replaced.

use crate::faults::{FaultCounter, draw_partition, restore_cuts, saved_cuts};
use crate::history::{History, OpKind, Outcome};
use crate::kv_model::KvModel;
use crate::raft_checks::RaftChecker;
use crate::{Failure, RunOptions, RunReport};
use ryu_io::{Clock, Disk, DynDisk};
use ryu_node::backups::CLUSTER_MANIFEST;
use ryu_node::{
    BackupResult, BackupStrategy, BackupTarget, ClusterManifest, ClusterStatus, Consistency,
    Envelope, MembershipChange, Node, NodeError, NodeOptions, Request, Response,
};
use ryu_raft::{Config, DiskLogOptions, Index, LeaseRead, Role, Term};
use ryu_sim::{
    DiskFaults, EventQueue, Lifecycle, NetConfig, Next, Ratio, SimClock, SimDisk, SimNetwork,
    SimRng, Trace, WorldTime, next_happening, trace_event,
};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// Planted node-level bugs this scenario can switch on (feature `planted-bugs`).
#[cfg(feature = "planted-bugs")]
pub const BUGS: &[(&str, &str)] = &[
    (
        "follower-read-without-read-index",
        "a follower serves a linearizable read from its own state",
    ),
    (
        "backup-at-applied-index",
        "a node backs up at its applied index instead of the barrier's",
    ),
    (
        "cluster-backup-success-before-all-digests",
        "the cluster backup reports success before every digest arrived",
    ),
];
#[cfg(not(feature = "planted-bugs"))]
pub const BUGS: &[(&str, &str)] = &[];

const TICK_NS: u64 = 10_000_000;
const LIVENESS_BOUND_NS: u64 = 60_000_000_000;
const NODE_DIR: &str = "node";
const KEYS: u64 = 6;
const BACKUP_DIR: &str = "backups";
/// Client id of the operator's admin requests (0 is the liveness probe).
const ADMIN: u64 = u64::MAX;

#[derive(Debug, Clone)]
struct Shape {
    voters: u64,
    clients: u64,
    fault_phase_ns: u64,
    fault_interval_ns: u64,
    think_ns_max: u64,
    client_timeout_ns: u64,
    crashes: bool,
    power_loss: Ratio,
    pauses: bool,
    partitions: bool,
    net: NetConfig,
    disk: DiskFaults,
    drift_ppm_max: i64,
    lease: bool,
    persist_ns_max: u64,
    crash_in_persist: Ratio,
    /// Share of client requests sent to a random node instead of the believed leader.
    misdirect: Ratio,
    /// Admin backups during the fault phase, drawn from `backup_strategies`.
    backups: bool,
    backup_interval_ns: u64,
    backup_strategies: Vec<BackupStrategy>,
    /// Crashes and pauses hit the leader.
    target_leader: bool,
    /// Partitions are one-way: a node can send but not hear, or hear but not send.
    one_way: bool,
    heal_ms: (u64, u64),
    /// Right after asking for a backup, crash (or cut off) the leader.
    fail_leader_after_backup: bool,
    /// Nodes snapshot (a backup of themselves) and compact their log this often.
    compact_after_entries: u64,
    /// Nodes beyond the bootstrap voters, added during the run.
    spares: u64,
    /// Membership changes (add a learner, promote it, remove a voter) during faults.
    membership: bool,
    /// Voters whose disks rot once during the fault phase (0: none); each one found
    /// corrupted is replaced by a spare with a new id.
    corrupt_voters: u64,
    /// Clients only increment counters (`Request::Incr`) and read them.
    counters: bool,
}

/// The scenario catalogue: one world, shaped by a profile. `Mixed` draws everything
/// from the seed (swarm testing); the others bias it toward one named situation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    Mixed,
    SteadyLoad,
    LeaderChurn,
    FlappingPartitions,
    AsymmetricPartition,
    BackupUnderLeaderFailover,
    FollowerBackupWithPromotion,
    CoordinatedBackupUnderPartition,
    SnapshotInstallUnderLoad,
    RestoreClusterAndResume,
    MembershipChangeDuringBackup,
    DiskCorruptionOnAMinority,
    Counters,
}

impl Profile {
    /// The scenario name.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Mixed => "cluster",
            Profile::SteadyLoad => "steady-load",
            Profile::LeaderChurn => "leader-churn",
            Profile::FlappingPartitions => "flapping-partitions",
            Profile::AsymmetricPartition => "asymmetric-partition",
            Profile::BackupUnderLeaderFailover => "backup-under-leader-failover",
            Profile::FollowerBackupWithPromotion => "follower-backup-with-promotion",
            Profile::CoordinatedBackupUnderPartition => "coordinated-backup-under-partition",
            Profile::SnapshotInstallUnderLoad => "snapshot-install-under-load",
            Profile::RestoreClusterAndResume => "restore-cluster-and-resume",
            Profile::MembershipChangeDuringBackup => "membership-change-during-backup",
            Profile::DiskCorruptionOnAMinority => "disk-corruption-on-a-minority",
            Profile::Counters => "counters",
        }
    }

    /// Bias a drawn shape. Draws only for non-mixed profiles, so `cluster` seeds
    /// keep their runs.
    fn adjust(self, s: &mut Shape, rng: &mut SimRng) {
        let all = vec![
            BackupStrategy::Leader,
            BackupStrategy::Follower,
            BackupStrategy::Cluster { quorum_only: false },
            BackupStrategy::Cluster { quorum_only: true },
        ];
        let quiet = |s: &mut Shape| {
            s.crashes = false;
            s.pauses = false;
            s.partitions = false;
            s.crash_in_persist = Ratio::ZERO;
        };
        match self {
            Profile::Mixed => {}
            Profile::SteadyLoad => {
                quiet(s);
                s.net.loss = Ratio::ZERO;
                s.net.duplicate = Ratio::ZERO;
                s.net.reorder = Ratio::ZERO;
                s.disk = DiskFaults::default();
                s.backups = true;
                s.backup_strategies = all;
            }
            Profile::LeaderChurn => {
                quiet(s);
                s.crashes = true;
                s.pauses = true;
                s.target_leader = true;
                s.fault_interval_ns = rng.between(100, 600) * 1_000_000;
            }
            Profile::FlappingPartitions => {
                quiet(s);
                s.partitions = true;
                s.fault_interval_ns = rng.between(20, 150) * 1_000_000;
                s.heal_ms = (10, 300);
            }
            Profile::AsymmetricPartition => {
                quiet(s);
                s.partitions = true;
                s.one_way = true;
                s.heal_ms = (100, 2_000);
            }
            Profile::BackupUnderLeaderFailover => {
                s.backups = true;
                s.backup_interval_ns = rng.between(200, 800) * 1_000_000;
                s.backup_strategies = vec![
                    BackupStrategy::Leader,
                    BackupStrategy::Cluster { quorum_only: false },
                    BackupStrategy::Cluster { quorum_only: true },
                ];
                s.fail_leader_after_backup = true;
            }
            Profile::FollowerBackupWithPromotion => {
                s.backups = true;
                s.backup_interval_ns = rng.between(200, 800) * 1_000_000;
                s.backup_strategies = vec![BackupStrategy::Follower];
                s.fail_leader_after_backup = true;
            }
            Profile::SnapshotInstallUnderLoad => {
                // Long partitions and crashes leave nodes far behind a log that is
                // compacted every few entries: they can only catch up by snapshot.
                quiet(s);
                s.crashes = true;
                s.partitions = true;
                s.heal_ms = (500, 3_000);
                s.compact_after_entries = rng.between(5, 20);
                s.think_ns_max = rng.between(1, 5) * 1_000_000;
            }
            Profile::MembershipChangeDuringBackup => {
                s.spares = rng.between(1, 2);
                s.membership = true;
                s.compact_after_entries = [0, 10, 30][rng.index(3)];
                s.backups = true;
                s.backup_interval_ns = rng.between(200, 800) * 1_000_000;
                s.backup_strategies = vec![
                    BackupStrategy::Leader,
                    BackupStrategy::Follower,
                    BackupStrategy::Cluster { quorum_only: false },
                    BackupStrategy::Cluster { quorum_only: true },
                ];
            }
            Profile::Counters => {
                // Increments in the log through every fault, compaction into
                // snapshots and every backup strategy.
                s.counters = true;
                s.backups = true;
                s.backup_strategies = all;
                s.compact_after_entries = [0, 10, 30][rng.index(3)];
            }
            Profile::DiskCorruptionOnAMinority => {
                // A minority of voters (1 of 3, 1 or 2 of 5), one spare for each.
                s.corrupt_voters = if s.voters == 3 { 1 } else { rng.between(1, 2) };
                s.spares = s.corrupt_voters;
                s.compact_after_entries = [0, 10, 30][rng.index(3)];
            }
            Profile::RestoreClusterAndResume => {
                s.backups = true;
                s.backup_interval_ns = rng.between(200, 800) * 1_000_000;
                s.backup_strategies = vec![
                    BackupStrategy::Cluster { quorum_only: false },
                    BackupStrategy::Cluster { quorum_only: true },
                ];
            }
            Profile::CoordinatedBackupUnderPartition => {
                quiet(s);
                s.partitions = true;
                s.backups = true;
                s.backup_interval_ns = rng.between(200, 800) * 1_000_000;
                s.backup_strategies = vec![
                    BackupStrategy::Cluster { quorum_only: false },
                    BackupStrategy::Cluster { quorum_only: true },
                ];
            }
        }
    }
}

impl Shape {
    fn draw(rng: &mut SimRng) -> Shape {
        let mut disk = DiskFaults::default();
        if rng.chance(Ratio::new(1, 2)) {
            disk.write_error = Ratio::new(rng.between(1, 3) as u32, 1000);
            disk.sync_error = Ratio::new(rng.between(1, 3) as u32, 1000);
        }
        let mut net = NetConfig::draw(rng);
        net.latency_max_ns = net.latency_max_ns.min(20_000_000);
        Shape {
            voters: [3, 3, 5][rng.index(3)],
            clients: rng.between(2, 6),
            fault_phase_ns: rng.between(2_000, 8_000) * 1_000_000,
            fault_interval_ns: rng.between(50, 600) * 1_000_000,
            think_ns_max: rng.between(1, 40) * 1_000_000,
            client_timeout_ns: rng.between(200, 2_000) * 1_000_000,
            crashes: rng.chance(Ratio::new(3, 4)),
            power_loss: Ratio::new(rng.between(0, 4) as u32, 4),
            pauses: rng.chance(Ratio::new(1, 2)),
            partitions: rng.chance(Ratio::new(3, 4)),
            net,
            disk,
            drift_ppm_max: [0, 100, 10_000][rng.index(3)] as i64,
            lease: rng.chance(Ratio::new(1, 4)),
            persist_ns_max: rng.between(100_000, 5_000_000),
            crash_in_persist: rng.swarm_ratio(Ratio::new(1, 2), 3, 100),
            misdirect: Ratio::new(rng.between(0, 3) as u32, 4),
            backups: rng.chance(Ratio::new(3, 4)),
            backup_interval_ns: rng.between(300, 2_000) * 1_000_000,
            backup_strategies: vec![
                BackupStrategy::Leader,
                BackupStrategy::Follower,
                BackupStrategy::Cluster { quorum_only: false },
                BackupStrategy::Cluster { quorum_only: true },
            ],
            target_leader: false,
            one_way: false,
            heal_ms: (50, 3_000),
            fail_leader_after_backup: false,
            compact_after_entries: [0, 10, 30, 100][rng.index(4)],
            spares: 0,
            membership: false,
            corrupt_voters: 0,
            counters: false,
        }
    }
}

struct SimNode {
    disk: SimDisk,
    clock: SimClock,
    life: Lifecycle,
    incarnation: u64,
    node: Option<Node>,
    held: Vec<Envelope>,
    ticks: u64,
    persist_scheduled: bool,
    backup_step_scheduled: bool,
    rng: SimRng,
    /// (applied index, digest of the engine's contents there), last computed.
    digest: Option<(Index, u64)>,
    /// A spare is not started until it is added; a removed node stays down.
    started: bool,
    removed: bool,
    /// Bits of its disk were flipped at rest (`disk-corruption-on-a-minority`).
    corrupt: bool,
    /// It found its state corrupted: it stays down until the operator replaces it.
    detected: bool,
}

#[derive(Debug)]
enum Ev {
    /// An operator asks for a backup.
    Backup,
    /// Crash or cut off whoever leads now (if a failure is allowed).
    FailLeader,
    /// The operator changes the membership by one node.
    Membership,
    /// Flip bits at rest on the disks of a minority of voters.
    Corrupt,
    /// The operator replaces a node that found its state corrupted (retried until a
    /// spare with a new id is a voter and the node is out).
    Replace(u64),
    /// Advance a node's backup jobs: (node, incarnation).
    BackupStep(u64, u64),
    Tick(u64),
    PersistDone(u64, u64),
    Restart(u64),
    Resume(u64),
    Fault,
    Heal,
    /// A request reaches a node: (node, request id).
    Arrive(u64, u64),
    /// A reply reaches its client: (request id, response).
    Answer(u64, Response),
    ClientNext(u64),
    ClientTimeout(u64, u64),
    EndFaults,
    Probe,
    Deadline,
}

/// What a client is doing now.
#[derive(Debug, Clone)]
enum Step {
    /// A single operation.
    Single,
    /// An optimistic transaction: reading `keys` one by one, then committing.
    TxnReads {
        keys: Vec<Vec<u8>>,
        read: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    },
    /// The final read of every key, in the liveness phase.
    Final { next_key: u64 },
}

#[derive(Debug)]
struct Client {
    /// The request in flight: (request id, history index of its operation).
    in_flight: Option<(u64, usize)>,
    believed_leader: u64,
    step: Step,
    last_seen: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    next_value: u64,
    done: bool,
}

/// Where each request id goes.
#[derive(Debug, Clone)]
struct RequestInfo {
    client: u64,
    node: u64,
    request: Request,
}

/// Run one seed.
pub fn run(opts: &RunOptions) -> RunReport {
    run_profile(Profile::Mixed, opts)
}

/// Run one seed of one catalogue entry.
pub fn run_profile(profile: Profile, opts: &RunOptions) -> RunReport {
    let mut world = World::new(opts.clone(), profile);
    let result = world.run();
    RunReport {
        scenario: profile.name(),
        seed: opts.seed,
        fingerprint: world.trace.fingerprint(),
        events: world.trace.events(),
        sim_ns: world.now(),
        faults: world.faults.scheduled(),
        summary: world.summary(),
        result: result.map_err(|message| Failure {
            message,
            trace_tail: world.trace.tail().map(String::from).collect(),
        }),
    }
}

struct World {
    #[cfg_attr(not(feature = "planted-bugs"), allow(dead_code))]
    opts: RunOptions,
    profile: Profile,
    cluster_id: u64,
    /// Set once the cluster was restored from the backup at this barrier index.
    restored_at: Option<Index>,
    /// Messages of the retired cluster sent to the restored one.
    stale_sent: u64,
    shape: Shape,
    rng: SimRng,
    time: WorldTime,
    queue: EventQueue<Ev>,
    net: SimNetwork<Envelope>,
    trace: Trace,
    nodes: BTreeMap<u64, SimNode>,
    clients: BTreeMap<u64, Client>,
    requests: BTreeMap<u64, RequestInfo>,
    next_request: u64,
    history: History,
    faults_on: bool,
    /// Numbers the faults `fault`, `persist_done` and `FailLeader` decide on (see
    /// `crate::faults`).
    faults: FaultCounter,
    raft_checker: RaftChecker,
    /// index -> term of the entry applied there, by anyone.
    applied: BTreeMap<Index, Term>,
    /// applied index -> engine digest, from the first node that reported it.
    digests: BTreeMap<Index, (u64, u64)>,
    probe: Option<(u64, Index)>,
    /// What the last probe found unfinished, for the liveness failure message.
    unconverged: String,
    ops_ok: u64,
    ops_unknown: u64,
    ops_failed: u64,
    /// The backup store every node writes to (a separate, fault-free device).
    store: SimDisk,
    model: KvModel,
    backups_done: Vec<BackupResult>,
    next_backup: u64,
    backups_ok: u64,
    backup_failures: u64,
    backup_aborts: u64,
    cluster_complete: u64,
    cluster_failed: u64,
    /// Snapshot counters of node incarnations that crashed: (made, installed).
    snapshots_gone: (u64, u64),
    membership_answers: u64,
    /// `disk-corruption-on-a-minority`: voters whose disks rotted, bits flipped, nodes
    /// that found corruption, and the spare (new id) replacing each of them.
    corrupt_victims: u64,
    corrupt_bits: u64,
    corrupt_detected: u64,
    replacements: BTreeMap<u64, u64>,
    replaced: u64,
}

impl World {
    fn new(opts: RunOptions, profile: Profile) -> World {
        let mut rng = SimRng::new(opts.seed);
        let mut shape = Shape::draw(&mut rng);
        profile.adjust(&mut shape, &mut rng);
        let ids: Vec<u64> = (1..=shape.voters + shape.spares).collect();
        let net = SimNetwork::new(rng.fork("net"), shape.net, &ids);
        let time = WorldTime::new();
        let mut nodes = BTreeMap::new();
        for &id in &ids {
            let drift = if shape.drift_ppm_max == 0 {
                0
            } else {
                rng.between(0, 2 * shape.drift_ppm_max as u64) as i64 - shape.drift_ppm_max
            };
            let disk = SimDisk::with_faults(rng.fork("disk").next_u64(), shape.disk);
            nodes.insert(
                id,
                SimNode {
                    disk,
                    clock: SimClock::new(time.clone(), drift, 0),
                    life: Lifecycle::Crashed,
                    incarnation: 0,
                    node: None,
                    held: Vec::new(),
                    ticks: 0,
                    persist_scheduled: false,
                    backup_step_scheduled: false,
                    rng: rng.fork("node"),
                    digest: None,
                    started: id <= shape.voters,
                    removed: false,
                    corrupt: false,
                    detected: false,
                },
            );
        }
        let clients = (1..=shape.clients)
            .map(|c| {
                (
                    c,
                    Client {
                        in_flight: None,
                        believed_leader: 1 + (c - 1) % shape.voters,
                        step: Step::Single,
                        last_seen: BTreeMap::new(),
                        next_value: 0,
                        done: false,
                    },
                )
            })
            .collect();
        let mut trace = Trace::new(opts.trace_tail_lines.max(60));
        trace.set_echo(opts.echo_trace);
        let store = SimDisk::new(opts.seed ^ 0x5707e);
        World {
            cluster_id: 0x5eed_0000 ^ opts.seed,
            opts,
            profile,
            restored_at: None,
            stale_sent: 0,
            shape,
            rng,
            time,
            queue: EventQueue::new(),
            net,
            trace,
            nodes,
            clients,
            requests: BTreeMap::new(),
            next_request: 1,
            history: History::default(),
            faults_on: true,
            faults: FaultCounter::default(),
            raft_checker: RaftChecker::default(),
            applied: BTreeMap::new(),
            digests: BTreeMap::new(),
            probe: None,
            unconverged: String::new(),
            ops_ok: 0,
            ops_unknown: 0,
            ops_failed: 0,
            store,
            model: KvModel::default(),
            backups_done: Vec::new(),
            next_backup: 1,
            backups_ok: 0,
            backup_failures: 0,
            backup_aborts: 0,
            cluster_complete: 0,
            cluster_failed: 0,
            snapshots_gone: (0, 0),
            membership_answers: 0,
            corrupt_victims: 0,
            corrupt_bits: 0,
            corrupt_detected: 0,
            replacements: BTreeMap::new(),
            replaced: 0,
        }
    }

    fn summary(&self) -> String {
        let s = &self.shape;
        let n = self.net.counts();
        let crashes: u64 = self
            .nodes
            .values()
            .map(|n| n.disk.fault_counts().crashes)
            .sum();
        let snapshots = self
            .nodes
            .values()
            .filter_map(|n| n.node.as_ref().map(Node::snapshot_counts))
            .fold(self.snapshots_gone, |a, b| (a.0 + b.0, a.1 + b.1));
        let corruption = if s.corrupt_voters > 0 {
            format!(
                "; corruption: victims={} bits={} detected={} replaced={}",
                self.corrupt_victims, self.corrupt_bits, self.corrupt_detected, self.replaced
            )
        } else {
            String::new()
        };
        format!(
            "sim={:.1}s voters={} clients={} lease={} drift<={}ppm loss={} dup={} reorder={}; ops ok={} unknown={} failed={} \
             applied={} leaders={} crashes={} net: sent={} lost={}; backups ok={} failed={} aborted={} cluster complete={} failed={}; \
             snapshots made={} installed={}{}",
            self.now() as f64 / 1e9,
            s.voters,
            s.clients,
            s.lease,
            s.drift_ppm_max,
            s.net.loss,
            s.net.duplicate,
            s.net.reorder,
            self.ops_ok,
            self.ops_unknown,
            self.ops_failed,
            self.applied.len(),
            self.raft_checker.leader_count(),
            crashes,
            n.sent,
            n.lost,
            self.backups_ok,
            self.backup_failures,
            self.backup_aborts,
            self.cluster_complete,
            self.cluster_failed,
            snapshots.0,
            snapshots.1,
            corruption,
        )
    }

    fn now(&self) -> u64 {
        self.queue.now_ns()
    }

    fn node_options(&self, id: u64) -> NodeOptions {
        let mut o = NodeOptions::new(id, (1..=self.shape.voters).collect());
        o.cluster_id = self.cluster_id;
        let mut c = Config::new(id);
        c.election_tick = 10;
        c.heartbeat_tick = 2;
        c.max_size_per_msg_bytes = 8192;
        c.max_inflight_msgs = 16;
        if self.shape.lease {
            c.lease_read = Some(LeaseRead {
                max_clock_drift_ticks: 2,
            });
        }
        o.raft = c;
        o.log = DiskLogOptions {
            segment_size_bytes: 32 << 10,
        };
        o.engine.wal_segment_bytes = 64 << 10;
        o.engine.checkpoint_after_bytes = 16 << 10;
        o.engine.cache_pages = 64;
        o.read_timeout_ticks = 50;
        o.backup = Some(BackupTarget {
            disk: Arc::new(self.store.clone()),
            dir: BACKUP_DIR.into(),
            clock: Arc::new(self.nodes[&id].clock.clone()),
        });
        o.backup_timeout_ticks = 300;
        o.compact_after_entries = self.shape.compact_after_entries;
        #[cfg(feature = "planted-bugs")]
        {
            use ryu_node::PlantedBug as B;
            let bugs = [
                (
                    "follower-read-without-read-index",
                    B::FollowerReadWithoutReadIndex,
                ),
                ("backup-at-applied-index", B::BackupAtAppliedIndex),
                (
                    "cluster-backup-success-before-all-digests",
                    B::ClusterBackupSuccessBeforeAllDigests,
                ),
            ];
            o.planted_bug = bugs
                .iter()
                .find(|(name, _)| self.opts.bugs.contains(*name))
                .map(|(_, b)| *b);
        }
        o
    }

    fn run(&mut self) -> Result<(), String> {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.start(id)?;
        }
        let clients: Vec<u64> = self.clients.keys().copied().collect();
        for c in clients {
            let d = self.rng.between(1, 50) * 1_000_000;
            self.queue.schedule_in(d, Ev::ClientNext(c));
        }
        self.queue
            .schedule_in(self.shape.fault_interval_ns, Ev::Fault);
        if self.shape.backups {
            self.queue
                .schedule_in(self.shape.backup_interval_ns, Ev::Backup);
        }
        if self.shape.membership {
            let d = self.rng.between(200, 1_000) * 1_000_000;
            self.queue.schedule_in(d, Ev::Membership);
        }
        if self.shape.corrupt_voters > 0 {
            let p = self.shape.fault_phase_ns;
            let d = self.rng.between(p / 5, p * 3 / 5);
            self.queue.schedule_in(d, Ev::Corrupt);
        }
        self.queue
            .schedule_in(self.shape.fault_phase_ns, Ev::EndFaults);
        loop {
            match next_happening(&mut self.queue, &mut self.net) {
                None => return Err("the world stopped: no event left".into()),
                Some(Next::Deliver(d)) => {
                    self.time.set(d.at_ns);
                    self.deliver(d.to, d.msg)?;
                }
                Some(Next::Dropped(at)) => self.time.set(at),
                Some(Next::Event(at, ev)) => {
                    self.time.set(at);
                    if self.handle(ev)? {
                        if let Some(barrier) = self.restored_at {
                            return self.check_restored_cluster(barrier);
                        }
                        self.final_checks()?;
                        if self.profile != Profile::RestoreClusterAndResume
                            || !self.restore_cluster()?
                        {
                            return Ok(());
                        }
                    }
                }
            }
            self.check()?;
        }
    }

    fn handle(&mut self, ev: Ev) -> Result<bool, String> {
        match ev {
            Ev::Tick(id) => self.tick(id)?,
            Ev::PersistDone(id, inc) => self.persist_done(id, inc)?,
            Ev::Restart(id) => self.start(id)?,
            Ev::Resume(id) => self.resume(id)?,
            Ev::Fault => {
                if self.faults_on {
                    self.fault();
                    let d = self.rng.between(1, 2 * self.shape.fault_interval_ns);
                    self.queue.schedule_in(d, Ev::Fault);
                }
            }
            Ev::Heal => {
                trace_event!(self.trace, self.now(), None, "heal", "");
                self.net.heal();
            }
            Ev::Arrive(node, request) => self.arrive(node, request)?,
            Ev::Answer(request, response) => self.answer(request, response)?,
            Ev::ClientNext(c) => self.client_next(c)?,
            Ev::ClientTimeout(c, request) => self.client_timeout(c, request)?,
            Ev::EndFaults => self.end_faults()?,
            Ev::Probe => return self.probe(),
            Ev::Backup => {
                if self.faults_on {
                    self.admin_backup();
                    let d = self.rng.between(1, 2 * self.shape.backup_interval_ns);
                    self.queue.schedule_in(d, Ev::Backup);
                }
            }
            Ev::BackupStep(id, inc) => self.backup_step(id, inc)?,
            Ev::Membership => {
                if self.faults_on {
                    self.membership_change()?;
                    let d = self.rng.between(200, 1_000) * 1_000_000;
                    self.queue.schedule_in(d, Ev::Membership);
                }
            }
            Ev::Corrupt => self.corrupt(),
            Ev::Replace(bad) => self.replace(bad)?,
            Ev::FailLeader => {
                if self.faults_on
                    && self.may_fail()
                    && let Some(l) = self.leader()
                {
                    if self.rng.chance(Ratio::new(1, 2)) {
                        let power = self.rng.chance(self.shape.power_loss);
                        let what = format!(
                            "crash leader failure after a backup request power_loss={power}"
                        );
                        if self.fault_enabled(Some(l), &what) {
                            self.crash(l, power, "leader failure after a backup request");
                        } else {
                            self.draw_restart_delay_ns(l);
                        }
                    } else {
                        let what = "fault isolated after a backup request";
                        if self.fault_enabled(Some(l), what) {
                            self.net.isolate(l);
                            trace_event!(
                                self.trace,
                                self.now(),
                                Some(l),
                                "fault",
                                "isolated after a backup request"
                            );
                        }
                        // Scheduled for a skipped isolation too, as for partitions.
                        let d = self.rng.between(100, 1_500) * 1_000_000;
                        self.queue.schedule_in(d, Ev::Heal);
                    }
                }
            }
            Ev::Deadline => {
                return Err(format!(
                    "liveness: the cluster did not converge within {} s after faults healed ({})",
                    LIVENESS_BOUND_NS / 1_000_000_000,
                    if self.unconverged.is_empty() {
                        "no leader to probe"
                    } else {
                        &self.unconverged
                    }
                ));
            }
        }
        Ok(false)
    }

    // ---- nodes ------------------------------------------------------------------------

    fn start(&mut self, id: u64) -> Result<(), String> {
        let now = self.now();
        let options = self.node_options(id);
        let n = self.nodes.get_mut(&id).expect("node exists");
        if n.life != Lifecycle::Crashed || !n.started || n.removed || n.detected {
            return Ok(());
        }
        let disk: DynDisk = Arc::new(n.disk.clone());
        let rng = n.rng.child_chacha("node");
        match Node::open(disk, Path::new(NODE_DIR), options, rng) {
            Ok(node) => {
                trace_event!(
                    self.trace,
                    now,
                    Some(id),
                    "start",
                    "applied={} hs={:?} log={}..={}",
                    node.applied().index,
                    node.raft().hard_state(),
                    ryu_raft::Storage::first_index(node.raft().storage()).unwrap_or(0),
                    ryu_raft::Storage::last_index(node.raft().storage()).unwrap_or(0)
                );
                n.node = Some(node);
            }
            Err(e @ (NodeError::Io(_) | NodeError::Log(_) | NodeError::Engine(_)))
                if is_transient(&e) =>
            {
                trace_event!(self.trace, now, Some(id), "start-failed", "{e}");
                n.disk.crash();
                self.queue.schedule_in(50_000_000, Ev::Restart(id));
                return Ok(());
            }
            Err(e) if n.corrupt => {
                self.found_corruption(id, &format!("open: {e}"));
                return Ok(());
            }
            Err(e) => return Err(format!("node {id} cannot recover its disk: {e}")),
        }
        n.ticks = n.clock.monotonic_ns() / TICK_NS;
        n.persist_scheduled = false;
        n.backup_step_scheduled = false;
        n.life = Lifecycle::Up;
        n.incarnation += 1;
        self.schedule_tick(id);
        self.drive(id)
    }

    fn schedule_tick(&mut self, id: u64) {
        let n = &self.nodes[&id];
        let drift = n.clock.drift_ppm();
        let interval = (i128::from(TICK_NS) * 1_000_000 / (1_000_000 + i128::from(drift))) as u64;
        self.queue.schedule_in(interval, Ev::Tick(id));
    }

    fn crash(&mut self, id: u64, power_loss: bool, why: &str) {
        let now = self.now();
        trace_event!(
            self.trace,
            now,
            Some(id),
            "crash",
            "{why} power_loss={power_loss}"
        );
        let n = self.nodes.get_mut(&id).expect("node exists");
        if let Some(node) = &n.node {
            let (m, i) = node.snapshot_counts();
            self.snapshots_gone.0 += m;
            self.snapshots_gone.1 += i;
        }
        n.node = None;
        n.held.clear();
        n.life = Lifecycle::Crashed;
        n.persist_scheduled = false;
        n.digest = None;
        if power_loss {
            n.disk.crash();
        }
        self.net.drop_node_traffic(id);
        if let Some(d) = self.draw_restart_delay_ns(id) {
            self.queue.schedule_in(d, Ev::Restart(id));
        }
    }

    /// How long a crashed node stays down (`None`: removed nodes stay down). A
    /// skipped crash makes this draw too.
    fn draw_restart_delay_ns(&mut self, id: u64) -> Option<u64> {
        (!self.nodes[&id].removed).then(|| self.rng.between(10, 1000) * 1_000_000)
    }

    /// Number the fault just decided on. `false`: the run skips it (traced as such);
    /// the caller still makes the fault's remaining draws.
    fn fault_enabled(&mut self, node: Option<u64>, what: &str) -> bool {
        let fault = self.faults.next(&self.opts);
        if !fault.enabled {
            let now = self.now();
            trace_event!(
                self.trace,
                now,
                node,
                "fault-skipped",
                "#{} {what}",
                fault.ordinal
            );
        }
        fault.enabled
    }

    fn resume(&mut self, id: u64) -> Result<(), String> {
        if self.nodes[&id].life != Lifecycle::Paused {
            return Ok(());
        }
        trace_event!(self.trace, self.now(), Some(id), "resume", "");
        let n = self.nodes.get_mut(&id).expect("node");
        n.life = Lifecycle::Up;
        for m in std::mem::take(&mut n.held) {
            self.deliver(id, m)?;
        }
        self.schedule_tick(id);
        self.drive(id)
    }

    fn tick(&mut self, id: u64) -> Result<(), String> {
        if self.nodes[&id].life != Lifecycle::Up {
            return Ok(());
        }
        self.catch_up_ticks(id);
        self.schedule_tick(id);
        self.drive(id)
    }

    /// Hand the node every tick its clock says is due, before any other input (a
    /// paused process must learn that time passed before it answers anything).
    fn catch_up_ticks(&mut self, id: u64) {
        let n = self.nodes.get_mut(&id).expect("node");
        let Some(node) = n.node.as_mut() else { return };
        let due = n.clock.monotonic_ns() / TICK_NS;
        while n.ticks < due {
            node.tick();
            n.ticks += 1;
        }
    }

    fn deliver(&mut self, to: u64, msg: Envelope) -> Result<(), String> {
        let Some(n) = self.nodes.get_mut(&to) else {
            return Ok(());
        };
        match n.life {
            Lifecycle::Crashed => return Ok(()),
            Lifecycle::Paused => {
                n.held.push(msg);
                return Ok(());
            }
            Lifecycle::Up => {}
        }
        trace_event!(
            self.trace,
            self.now(),
            Some(to),
            "recv",
            "{:?}",
            msg.payload
        );
        self.catch_up_ticks(to);
        let n = self.nodes.get_mut(&to).expect("node");
        n.node.as_mut().expect("up").step(msg);
        self.drive(to)
    }

    /// Send what the node produced and start its next Ready if it has one.
    fn drive(&mut self, id: u64) -> Result<(), String> {
        self.flush_output(id);
        let n = self.nodes.get_mut(&id).expect("node");
        if n.life != Lifecycle::Up {
            return Ok(());
        }
        if !n.backup_step_scheduled && n.node.as_ref().is_some_and(Node::has_backup_work) {
            n.backup_step_scheduled = true;
            let inc = n.incarnation;
            let d = self.rng.between(1, 5) * 1_000_000;
            self.queue.schedule_in(d, Ev::BackupStep(id, inc));
        }
        let n = self.nodes.get_mut(&id).expect("node");
        if n.persist_scheduled {
            return Ok(());
        }
        let node = n.node.as_mut().expect("up");
        if !node.ready_begin() {
            return Ok(());
        }
        n.persist_scheduled = true;
        let inc = n.incarnation;
        self.flush_output(id);
        let delay = self.rng.between(10_000, self.shape.persist_ns_max);
        self.queue.schedule_in(delay, Ev::PersistDone(id, inc));
        Ok(())
    }

    fn flush_output(&mut self, id: u64) {
        let now = self.now();
        let Some(node) = self.nodes.get_mut(&id).and_then(|n| n.node.as_mut()) else {
            return;
        };
        let out = node.take_output();
        for m in out.messages {
            trace_event!(self.trace, now, Some(id), "send", "{:?}", m.payload);
            let to = m.to;
            self.net.send(now, id, to, m);
        }
        for (request, response) in out.replies {
            let d = self.rng.between(50_000, 2_000_000);
            self.queue.schedule_in(d, Ev::Answer(request, response));
        }
    }

    fn persist_done(&mut self, id: u64, incarnation: u64) -> Result<(), String> {
        let n = self.nodes.get_mut(&id).expect("node");
        if n.incarnation != incarnation || n.life == Lifecycle::Crashed {
            return Ok(());
        }
        if n.life == Lifecycle::Paused {
            self.queue
                .schedule_in(TICK_NS, Ev::PersistDone(id, incarnation));
            return Ok(());
        }
        if self.faults_on && self.may_fail() && self.rng.chance(self.shape.crash_in_persist) {
            if self.fault_enabled(Some(id), "crash power loss during persist power_loss=true") {
                self.crash(id, true, "power loss during persist");
                return Ok(());
            }
            // Skipped: make the crash's draw, then persist as if no power was lost.
            self.draw_restart_delay_ns(id);
        }
        self.catch_up_ticks(id);
        let n = self.nodes.get_mut(&id).expect("node");
        n.persist_scheduled = false;
        let node = n.node.as_mut().expect("up");
        let before = node.applied().index;
        if let Err(e) = node.ready_finish() {
            if n.corrupt && !is_transient(&e) {
                self.found_corruption(id, &format!("ready: {e}"));
                return Ok(());
            }
            let power = self.rng.chance(Ratio::new(1, 2));
            self.crash(id, power, &format!("node error: {e}"));
            return Ok(());
        }
        let after = node.applied().index;
        if after > before {
            self.record_applied(id, before, after)?;
        }
        self.drive(id)
    }

    /// State machine safety: every entry applied anywhere is the same entry
    /// everywhere (an index and a term name one entry, by log matching).
    fn record_applied(&mut self, id: u64, before: Index, after: Index) -> Result<(), String> {
        let max_term = self.max_term();
        let node = self.nodes[&id].node.as_ref().expect("up");
        let log = &node.raft().raft().log;
        for index in before + 1..=after {
            let Ok(term) = log.term(index) else { continue };
            match self.applied.get(&index) {
                Some(&t) if t != term => {
                    return Err(format!(
                        "state machine safety: node {id} applied {term}/{index} but another node applied {t}/{index}"
                    ));
                }
                Some(_) => {}
                None => {
                    self.applied.insert(index, term);
                    self.raft_checker.first_applied(index, term, max_term);
                }
            }
        }
        Ok(())
    }

    /// Feed the reference model every newly committed entry, in order, from any live
    /// node whose log still holds it (committed entries are the same everywhere).
    fn feed_model(&mut self) -> Result<(), String> {
        'next: loop {
            let index = self.model.index + 1;
            for n in self.nodes.values() {
                let Some(node) = n.node.as_ref() else {
                    continue;
                };
                let log = &node.raft().raft().log;
                if log.committed < index || log.first_index() > index {
                    continue;
                }
                let Ok(entries) = log.slice(index, index + 1, u64::MAX) else {
                    continue;
                };
                self.model.apply(index, entries[0].kind, &entries[0].data)?;
                continue 'next;
            }
            return Ok(());
        }
    }

    /// The highest term any live node has reached.
    fn max_term(&self) -> Term {
        self.nodes
            .values()
            .filter_map(|n| Some(n.node.as_ref()?.raft().hard_state().term))
            .max()
            .unwrap_or(0)
    }

    fn may_fail(&self) -> bool {
        let f = (self.shape.voters - 1) / 2;
        let down = self
            .nodes
            .values()
            .filter(|n| n.started && !n.removed && n.life != Lifecycle::Up)
            .count() as u64;
        down < f
    }

    fn random_up_node(&mut self) -> Option<u64> {
        let up: Vec<u64> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.life == Lifecycle::Up)
            .map(|(id, _)| *id)
            .collect();
        (!up.is_empty()).then(|| up[self.rng.index(up.len())])
    }

    fn fault(&mut self) {
        let may_fail = self.may_fail();
        match self.rng.below(3) {
            0 if self.shape.crashes && may_fail => {
                if let Some(id) = self.fault_target() {
                    let power = self.rng.chance(self.shape.power_loss);
                    let what = format!("crash scheduled power_loss={power}");
                    if self.fault_enabled(Some(id), &what) {
                        self.crash(id, power, "scheduled");
                    } else {
                        self.draw_restart_delay_ns(id);
                    }
                }
            }
            1 if self.shape.pauses && may_fail => {
                if let Some(id) = self.fault_target() {
                    let enabled = self.fault_enabled(Some(id), "pause");
                    // Drawn for a skipped pause too, to keep the random stream.
                    let d = self.rng.between(10, 2000) * 1_000_000;
                    if enabled {
                        trace_event!(self.trace, self.now(), Some(id), "pause", "");
                        self.nodes.get_mut(&id).expect("node").life = Lifecycle::Paused;
                        self.queue.schedule_in(d, Ev::Resume(id));
                    }
                }
            }
            2 if self.shape.partitions => {
                let nodes: Vec<u64> = self.nodes.keys().copied().collect();
                let fault = self.faults.next(&self.opts);
                let what = if self.shape.one_way {
                    let saved = saved_cuts(&self.net);
                    let what = self.one_way_cut(&nodes);
                    if !fault.enabled {
                        restore_cuts(&mut self.net, saved);
                    }
                    what
                } else {
                    draw_partition(&mut self.net, &mut self.rng, &nodes, fault.enabled)
                };
                if fault.enabled {
                    trace_event!(self.trace, self.now(), None, "fault", "{what}");
                } else {
                    trace_event!(
                        self.trace,
                        self.now(),
                        None,
                        "fault-skipped",
                        "#{} fault {what}",
                        fault.ordinal
                    );
                }
                // Scheduled even for a skipped partition: a heal restores every link,
                // and the original run healed here too.
                let (lo, hi) = self.shape.heal_ms;
                let d = self.rng.between(lo, hi) * 1_000_000;
                self.queue.schedule_in(d, Ev::Heal);
            }
            _ => {}
        }
    }

    /// Who a crash or pause hits: the leader if the profile says so, else anyone up.
    fn fault_target(&mut self) -> Option<u64> {
        if self.shape.target_leader
            && let Some(l) = self.leader()
        {
            return Some(l);
        }
        self.random_up_node()
    }

    /// Cut one node's links in one direction only.
    fn one_way_cut(&mut self, nodes: &[u64]) -> String {
        let x = nodes[self.rng.index(nodes.len())];
        let deaf = self.rng.chance(Ratio::new(1, 2));
        for &o in nodes.iter().filter(|&&o| o != x) {
            if deaf {
                self.net.cut(o, x);
            } else {
                self.net.cut(x, o);
            }
        }
        if deaf {
            format!("one-way: n{x} hears nobody but can send")
        } else {
            format!("one-way: n{x} can send to nobody but hears")
        }
    }

    fn end_faults(&mut self) -> Result<(), String> {
        trace_event!(
            self.trace,
            self.now(),
            None,
            "liveness-phase",
            "heal everything"
        );
        self.faults_on = false;
        self.net.heal_all_faults();
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.nodes[&id].disk.set_faults(DiskFaults::default());
            match self.nodes[&id].life {
                Lifecycle::Paused => self.resume(id)?,
                Lifecycle::Crashed => self.start(id)?,
                Lifecycle::Up => {}
            }
        }
        self.queue.schedule_in(LIVENESS_BOUND_NS, Ev::Deadline);
        self.queue.schedule_in(TICK_NS * 5, Ev::Probe);
        Ok(())
    }

    fn leader(&self) -> Option<u64> {
        let mut best: Option<(Term, u64)> = None;
        for (&id, n) in &self.nodes {
            let Some(node) = n.node.as_ref() else {
                continue;
            };
            if n.life != Lifecycle::Up {
                continue;
            }
            let s = node.status();
            if s.role == Role::Leader && best.is_none_or(|(t, _)| s.term > t) {
                best = Some((s.term, id));
            }
        }
        best.map(|(_, id)| id)
    }

    /// Liveness: once a probe write is committed, every node must apply up to it and
    /// every client must finish its final reads.
    fn probe(&mut self) -> Result<bool, String> {
        if let Some((_, index)) = self.probe {
            // Members as the leader knows them: a removed node that never heard of
            // its removal is not expected to follow.
            let members: Vec<u64> = self
                .leader()
                .and_then(|l| self.nodes[&l].node.as_ref())
                .map(|node| {
                    let s = node.status();
                    s.voters.into_iter().chain(s.learners).collect()
                })
                .unwrap_or_default();
            let all_applied = !members.is_empty()
                && self.nodes.iter().all(|(id, n)| {
                    !n.started
                        || n.removed
                        || !members.contains(id)
                        || n.node
                            .as_ref()
                            .is_some_and(|node| node.applied().index >= index)
                });
            let clients_done = self.clients.values().all(|c| c.done);
            // Every node that found corruption was replaced (0 = 0 in other profiles).
            let all_applied = all_applied && self.replaced == self.corrupt_detected;
            let backups_done = self.model.barriers.keys().all(|id| {
                self.store
                    .exists(&Path::new(BACKUP_DIR).join(id).join(CLUSTER_MANIFEST))
                    .unwrap_or(false)
            });
            self.unconverged = self.why_unconverged(index, &members);
            if all_applied && clients_done && backups_done {
                trace_event!(
                    self.trace,
                    self.now(),
                    None,
                    "liveness",
                    "converged at {index}"
                );
                return Ok(true);
            }
        } else if let Some(leader) = self.leader() {
            // A probe straight into the leader: committed means a commit index to
            // converge on.
            let request = self.next_request;
            self.next_request += 1;
            self.requests.insert(
                request,
                RequestInfo {
                    client: 0,
                    node: leader,
                    request: Request::Put {
                        key: b"probe".to_vec(),
                        value: b"1".to_vec(),
                    },
                },
            );
            self.queue.schedule_in(0, Ev::Arrive(leader, request));
        }
        self.queue.schedule_in(TICK_NS * 20, Ev::Probe);
        Ok(false)
    }

    /// Names what keeps the cluster from converging on the probe at `index`: lagging
    /// members, unfinished clients, cluster backups without a manifest.
    fn why_unconverged(&self, index: Index, members: &[u64]) -> String {
        let mut why = Vec::new();
        if members.is_empty() {
            why.push("no leader".to_string());
        }
        for (id, n) in &self.nodes {
            if n.started && !n.removed && members.contains(id) {
                match &n.node {
                    Some(node) if node.applied().index >= index => {}
                    Some(node) => why.push(format!(
                        "n{id} applied {} < probe {index}",
                        node.applied().index
                    )),
                    None => why.push(format!("n{id} down")),
                }
            }
        }
        let waiting: Vec<String> = self
            .clients
            .iter()
            .filter(|(_, c)| !c.done)
            .map(|(id, _)| format!("c{id}"))
            .collect();
        if !waiting.is_empty() {
            why.push(format!("clients not done: {}", waiting.join(",")));
        }
        if self.replaced != self.corrupt_detected {
            why.push(format!(
                "{} corrupt nodes detected, {} replaced",
                self.corrupt_detected, self.replaced
            ));
        }
        for id in self.model.barriers.keys() {
            let done = self
                .store
                .exists(&Path::new(BACKUP_DIR).join(id).join(CLUSTER_MANIFEST))
                .unwrap_or(false);
            if !done {
                why.push(format!("cluster backup {id} has no manifest"));
            }
        }
        why.join("; ")
    }

    // ---- clients --------------------------------------------------------------------

    fn key(&mut self) -> Vec<u8> {
        format!("k{}", self.rng.below(KEYS)).into_bytes()
    }

    fn client_next(&mut self, c: u64) -> Result<(), String> {
        let client = &self.clients[&c];
        if client.in_flight.is_some() || client.done {
            return Ok(());
        }
        let step = client.step.clone();
        let request = match step {
            Step::Final { next_key } => {
                if next_key >= KEYS {
                    self.clients.get_mut(&c).expect("client").done = true;
                    return Ok(());
                }
                Request::Get {
                    key: format!("k{next_key}").into_bytes(),
                    consistency: Consistency::Linearizable,
                }
            }
            Step::TxnReads { keys, read } => {
                if read.len() < keys.len() {
                    // Both keys from one snapshot (one ReadIndex), as a client's
                    // optimistic transaction reads them.
                    Request::GetMany {
                        keys: keys.clone(),
                        consistency: Consistency::Linearizable,
                    }
                } else {
                    let writes = keys
                        .iter()
                        .map(|k| (k.clone(), Some(self.fresh_value(c))))
                        .collect();
                    Request::Txn {
                        reads: read.clone(),
                        writes,
                    }
                }
            }
            Step::Single if !self.faults_on => {
                self.clients.get_mut(&c).expect("client").step = Step::Final { next_key: 0 };
                return self.client_next(c);
            }
            Step::Single if self.shape.counters => match self.rng.below(10) {
                0..=6 => Request::Incr {
                    key: self.key(),
                    delta: self.rng.between(1, 3) as i64,
                },
                _ => Request::Get {
                    key: self.key(),
                    consistency: Consistency::Linearizable,
                },
            },
            Step::Single => match self.rng.below(20) {
                0..=6 => Request::Get {
                    key: self.key(),
                    consistency: Consistency::Linearizable,
                },
                7..=11 => {
                    let key = self.key();
                    Request::Put {
                        key,
                        value: self.fresh_value(c),
                    }
                }
                12 => Request::Delete { key: self.key() },
                13..=16 => {
                    let key = self.key();
                    let expected = self.clients[&c].last_seen.get(&key).cloned().flatten();
                    let new = Some(self.fresh_value(c));
                    Request::Cas { key, expected, new }
                }
                _ => {
                    // Transactions span a fixed pair of keys (k0+k1, k2+k3, ...), so the
                    // history still splits into small partitions for the checker.
                    let pair = self.rng.below(KEYS / 2) * 2;
                    let a = format!("k{pair}").into_bytes();
                    let b = format!("k{}", pair + 1).into_bytes();
                    self.clients.get_mut(&c).expect("client").step = Step::TxnReads {
                        keys: vec![a, b],
                        read: Vec::new(),
                    };
                    return self.client_next(c);
                }
            },
        };
        self.issue(c, request);
        Ok(())
    }

    fn fresh_value(&mut self, c: u64) -> Vec<u8> {
        let client = self.clients.get_mut(&c).expect("client");
        client.next_value += 1;
        format!("c{c}v{}", client.next_value).into_bytes()
    }

    /// The nodes a client may send to: every node the operator has added and not
    /// removed (or replaced after it found corruption), in id order. Clients keep this
    /// list current as etcd's clients do from the member list; a client that only knew
    /// the first cluster's ids would, after membership changes, spend most of its
    /// requests on removed nodes and time out (seed 20333 of
    /// membership-change-during-backup never converged that way).
    fn endpoints(&self) -> Vec<u64> {
        let endpoints: Vec<u64> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.started && !n.removed && !n.detected)
            .map(|(&id, _)| id)
            .collect();
        assert!(!endpoints.is_empty(), "a cluster always has a member");
        endpoints
    }

    /// The endpoint after `node` in id order, wrapping around: where a client tries
    /// next when `node` did not serve it.
    fn next_endpoint(&self, node: u64) -> u64 {
        let endpoints = self.endpoints();
        endpoints
            .iter()
            .copied()
            .find(|&id| id > node)
            .unwrap_or(endpoints[0])
    }

    fn issue(&mut self, c: u64, request: Request) {
        let now = self.now();
        let misdirect = self.rng.chance(self.shape.misdirect);
        let node = if misdirect {
            let endpoints = self.endpoints();
            endpoints[self.rng.below(endpoints.len() as u64) as usize]
        } else {
            self.clients[&c].believed_leader
        };
        let id = self.next_request;
        self.next_request += 1;
        let op = self.history.call(c, now, kind_of(&request, id));
        trace_event!(
            self.trace,
            now,
            None,
            "client",
            "c{c} #{id} -> n{node}: {request:?}"
        );
        self.clients.get_mut(&c).expect("client").in_flight = Some((id, op));
        self.requests.insert(
            id,
            RequestInfo {
                client: c,
                node,
                request,
            },
        );
        let d = self.rng.between(50_000, 2_000_000);
        self.queue.schedule_in(d, Ev::Arrive(node, id));
        self.queue
            .schedule_in(self.shape.client_timeout_ns, Ev::ClientTimeout(c, id));
    }

    fn arrive(&mut self, node: u64, request: u64) -> Result<(), String> {
        let n = &self.nodes[&node];
        if n.life != Lifecycle::Up {
            return Ok(()); // lost: the client times out
        }
        self.catch_up_ticks(node);
        let req = self.requests[&request].request.clone();
        let n = self.nodes.get_mut(&node).expect("node");
        n.node.as_mut().expect("up").request(request, req);
        self.drive(node)
    }

    fn answer(&mut self, request: u64, response: Response) -> Result<(), String> {
        let Some(info) = self.requests.remove(&request) else {
            return Ok(()); // a late answer to a request already given up on
        };
        let now = self.now();
        trace_event!(
            self.trace,
            now,
            None,
            "reply",
            "#{request} from n{}: {response:?}",
            info.node
        );
        if info.client == ADMIN {
            if let (
                Request::ChangeMembership(MembershipChange::Remove(gone)),
                Response::Committed { .. },
            ) = (&info.request, &response)
            {
                // A removed member is shut down for good.
                let gone = *gone;
                self.nodes.get_mut(&gone).expect("node").removed = true;
                if self.nodes[&gone].life != Lifecycle::Crashed {
                    self.crash(gone, false, "removed from the cluster");
                }
                return Ok(());
            }
            if matches!(info.request, Request::ChangeMembership(_)) {
                self.membership_answers += 1;
                return Ok(());
            }
            self.admin_answer(response);
            return Ok(());
        }
        if info.client == 0 {
            // The liveness probe.
            if let Response::Committed { index } = response {
                self.probe.get_or_insert((request, index));
            }
            return Ok(());
        }
        let c = info.client;
        let Some((id, op)) = self.clients[&c].in_flight else {
            return Ok(());
        };
        if id != request {
            return Ok(());
        }
        let rotated = self.next_endpoint(self.clients[&c].believed_leader);
        let client = self.clients.get_mut(&c).expect("client");
        client.in_flight = None;
        let mut retry_same_step = false;
        match &response {
            Response::NotLeader { leader } => {
                if let Some(l) = leader {
                    client.believed_leader = *l;
                } else {
                    client.believed_leader = rotated;
                }
                self.history.fail(op);
                self.ops_failed += 1;
                retry_same_step = true;
            }
            Response::Unavailable { .. } => {
                client.believed_leader = rotated;
                self.history.fail(op);
                self.ops_failed += 1;
                retry_same_step = true;
            }
            Response::OutcomeUnknown { .. } => {
                // Like a timeout: the write may or may not have taken effect.
                self.history.unknown(op);
                self.ops_unknown += 1;
                client.believed_leader = rotated;
                if let Step::TxnReads { read, .. } = &mut client.step {
                    read.clear();
                }
                client.step = match &client.step {
                    Step::Final { next_key } => Step::Final {
                        next_key: *next_key,
                    },
                    _ => Step::Single,
                };
            }
            Response::Invalid { reason } => {
                return Err(format!("client {c} sent an invalid request: {reason}"));
            }
            Response::Status(_)
            | Response::Entries { .. }
            | Response::BackupDone(_)
            | Response::ClusterBackupDone(_)
            | Response::BackupFailed { .. } => {
                return Err(format!("unexpected answer {response:?}"));
            }
            Response::Incremented { value, .. } => {
                if !matches!(info.request, Request::Incr { .. }) {
                    return Err(format!("an increment's answer to {:?}", info.request));
                }
                self.history.complete(op, now, Outcome::Incremented(*value));
                self.ops_ok += 1;
                client.step = Step::Single;
            }
            Response::Values { values, .. } => {
                let keys = match &info.request {
                    Request::GetMany { keys, .. } if keys.len() == values.len() => keys.clone(),
                    other => return Err(format!("values {values:?} answer {other:?}")),
                };
                for (k, v) in keys.iter().zip(values) {
                    client.last_seen.insert(k.clone(), v.clone());
                }
                self.history
                    .complete(op, now, Outcome::ReadMany(values.clone()));
                self.ops_ok += 1;
                match &mut client.step {
                    Step::TxnReads { read, .. } => {
                        read.clear();
                        read.extend(keys.into_iter().zip(values.iter().cloned()));
                    }
                    other => return Err(format!("a multi-key read in step {other:?}")),
                }
            }
            Response::Value { value, .. } => {
                let key = match &info.request {
                    Request::Get { key, .. } => key.clone(),
                    other => return Err(format!("a value answer to {other:?}")),
                };
                client.last_seen.insert(key.clone(), value.clone());
                self.history.complete(op, now, Outcome::Read(value.clone()));
                self.ops_ok += 1;
                match &mut client.step {
                    Step::TxnReads { read, .. } => read.push((key, value.clone())),
                    Step::Final { next_key } => *next_key += 1,
                    Step::Single => {}
                }
            }
            Response::Committed { .. } => {
                self.history.complete(op, now, Outcome::Applied(true));
                self.ops_ok += 1;
                client.step = match &client.step {
                    Step::Final { next_key } => Step::Final {
                        next_key: *next_key,
                    },
                    _ => Step::Single,
                };
            }
            Response::Aborted { key, current, .. } => {
                client.last_seen.insert(key.clone(), current.clone());
                self.history.complete(op, now, Outcome::Applied(false));
                self.ops_ok += 1;
                client.step = Step::Single;
            }
        }
        if retry_same_step && matches!(client.step, Step::TxnReads { .. }) {
            // Start the transaction over: its reads may be stale by now.
            if let Step::TxnReads { read, .. } = &mut client.step {
                read.clear();
            }
        }
        let d = self.rng.between(0, self.shape.think_ns_max);
        self.queue.schedule_in(d, Ev::ClientNext(c));
        Ok(())
    }

    fn client_timeout(&mut self, c: u64, request: u64) -> Result<(), String> {
        let now = self.now();
        let rotated = self.next_endpoint(self.clients[&c].believed_leader);
        let client = self.clients.get_mut(&c).expect("client");
        if client.in_flight.map(|(id, _)| id) != Some(request) {
            return Ok(());
        }
        let (_, op) = client.in_flight.take().expect("checked");
        trace_event!(self.trace, now, None, "timeout", "c{c} #{request}");
        self.history.unknown(op);
        self.ops_unknown += 1;
        self.requests.remove(&request);
        client.believed_leader = rotated;
        if let Step::TxnReads { read, .. } = &mut client.step {
            read.clear();
            client.step = Step::Single;
        }
        self.queue.schedule_in(0, Ev::ClientNext(c));
        Ok(())
    }

    // ---- checks -----------------------------------------------------------------------

    fn check(&mut self) -> Result<(), String> {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        let rafts: Vec<(u64, &ryu_raft::RawNode<ryu_raft::DiskLog>)> = self
            .nodes
            .iter()
            .filter_map(|(&id, n)| Some((id, n.node.as_ref()?.raft())))
            .collect();
        self.raft_checker.check(&rafts)?;
        if self.restored_at.is_none() {
            // After a restore the cluster writes a new history from the barrier on.
            self.feed_model()?;
        }
        for &id in &ids {
            let Some(node) = self.nodes[&id].node.as_ref() else {
                continue;
            };
            // Replica equality at equal applied indexes.
            let applied = node.applied().index;
            let n = self.nodes.get_mut(&id).expect("node");
            if n.digest.map(|(i, _)| i) != Some(applied) {
                let digest = match state_digest(n.node.as_ref().expect("up")) {
                    Ok(d) => d,
                    Err(e) if n.corrupt => {
                        self.found_corruption(id, &e);
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                n.digest = Some((applied, digest));
                match self.digests.get(&applied) {
                    Some(&(first, d)) if d != digest => {
                        return Err(format!(
                            "replica divergence: nodes {first} and {id} both applied {applied} but their engines differ ({d:016x} vs {digest:016x})"
                        ));
                    }
                    Some(_) => {}
                    None => {
                        self.digests.insert(applied, (id, digest));
                    }
                }
            }
        }
        Ok(())
    }

    // ---- backups ----------------------------------------------------------------------

    /// The operator changes the membership: start a spare and add it as a learner,
    /// promote a learner, or remove a voter (never below three, never the leader).
    fn membership_change(&mut self) -> Result<(), String> {
        let Some(leader) = self.leader() else {
            return Ok(());
        };
        let status = self.nodes[&leader].node.as_ref().expect("up").status();
        let spare = self
            .nodes
            .iter()
            .find(|(_, n)| !n.started)
            .map(|(id, _)| *id);
        let change = if let Some(&learner) = status.learners.first() {
            MembershipChange::AddVoter(learner)
        } else if let Some(spare) = spare {
            let n = self.nodes.get_mut(&spare).expect("node");
            n.started = true;
            trace_event!(
                self.trace,
                self.now(),
                Some(spare),
                "join",
                "a new node starts empty"
            );
            self.start(spare)?;
            MembershipChange::AddLearner(spare)
        } else if status.voters.len() > 3 {
            let candidates: Vec<u64> = status
                .voters
                .iter()
                .copied()
                .filter(|&v| v != leader)
                .collect();
            MembershipChange::Remove(candidates[self.rng.index(candidates.len())])
        } else {
            return Ok(());
        };
        self.send_change(leader, change, String::new());
        Ok(())
    }

    /// The operator sends membership change `change` to `leader`; `why` goes into
    /// the trace.
    fn send_change(&mut self, leader: u64, change: MembershipChange, why: String) {
        let what = format!("{change:?}{why}");
        self.send_admin(leader, Request::ChangeMembership(change), &what);
    }

    /// The operator's request `request` to `node`, traced as `what`.
    fn send_admin(&mut self, node: u64, request: Request, what: &str) {
        let id = self.next_request;
        self.next_request += 1;
        trace_event!(
            self.trace,
            self.now(),
            None,
            "admin",
            "#{id} -> n{node}: {what}"
        );
        self.requests.insert(
            id,
            RequestInfo {
                client: ADMIN,
                node,
                request,
            },
        );
        self.queue.schedule_in(0, Ev::Arrive(node, id));
    }

    /// Bit rot at rest on a minority of voters: each one crashes, random bits of its
    /// files flip, and it restarts over them. Waits (retrying) until enough voters are
    /// up that losing them all keeps a quorum.
    fn corrupt(&mut self) {
        if !self.faults_on {
            return;
        }
        let k = self.shape.corrupt_voters;
        let f = (self.shape.voters - 1) / 2;
        let down = self
            .nodes
            .values()
            .filter(|n| n.started && !n.removed && n.life != Lifecycle::Up)
            .count() as u64;
        let mut candidates: Vec<u64> = (1..=self.shape.voters)
            .filter(|id| self.nodes[id].life == Lifecycle::Up && !self.nodes[id].removed)
            .collect();
        if down + k > f || (candidates.len() as u64) < k {
            let d = self.rng.between(20, 200) * 1_000_000;
            self.queue.schedule_in(d, Ev::Corrupt);
            return;
        }
        for _ in 0..k {
            let id = candidates.remove(self.rng.index(candidates.len()));
            let power = self.rng.chance(Ratio::new(1, 2));
            let bits = self.rng.between(1, 64);
            let what = format!("corrupt {bits} bits at rest power_loss={power}");
            if !self.fault_enabled(Some(id), &what) {
                continue;
            }
            self.crash(id, power, "its disk rots");
            let n = self.nodes.get_mut(&id).expect("node");
            let flipped = n
                .disk
                .flip_random_bits(Path::new(NODE_DIR), bits, &mut self.rng)
                .unwrap_or_default();
            n.corrupt = true;
            self.corrupt_victims += 1;
            self.corrupt_bits += flipped.len() as u64;
            let at: Vec<String> = flipped
                .iter()
                .map(|(f, at)| format!("{}@{at}", f.display()))
                .collect();
            trace_event!(
                self.trace,
                self.now(),
                Some(id),
                "fault",
                "{} bits flipped at rest: {}",
                flipped.len(),
                at.join(" ")
            );
        }
    }

    /// A node whose disk rotted found it out (it refused to open, or a Ready or a
    /// read failed with corruption): it stays down for good, and the operator
    /// replaces it.
    fn found_corruption(&mut self, id: u64, why: &str) {
        trace_event!(
            self.trace,
            self.now(),
            Some(id),
            "corruption-detected",
            "{why}"
        );
        let n = self.nodes.get_mut(&id).expect("node");
        if n.detected {
            return;
        }
        n.detected = true;
        self.corrupt_detected += 1;
        if n.life != Lifecycle::Crashed {
            self.crash(id, false, "corruption detected");
        }
        let d = self.rng.between(50, 300) * 1_000_000;
        self.queue.schedule_in(d, Ev::Replace(id));
    }

    /// The operator replaces a node that found its state corrupted, one membership
    /// change at a time, as the leader sees the membership: remove it, start a spare
    /// with a new id empty, add it as a learner, promote it. The bad id is never
    /// reused. Runs in the liveness phase too.
    fn replace(&mut self, bad: u64) -> Result<(), String> {
        let retry = self.rng.between(100, 400) * 1_000_000;
        let Some(leader) = self.leader() else {
            self.queue.schedule_in(retry, Ev::Replace(bad));
            return Ok(());
        };
        let status = self.nodes[&leader].node.as_ref().expect("up").status();
        let member = |id: u64| status.voters.contains(&id) || status.learners.contains(&id);
        let change = if member(bad) {
            MembershipChange::Remove(bad)
        } else {
            self.nodes.get_mut(&bad).expect("node").removed = true;
            let spare = match self.replacements.get(&bad) {
                Some(&spare) => spare,
                None => {
                    let Some(spare) = self
                        .nodes
                        .iter()
                        .find(|(_, n)| !n.started)
                        .map(|(id, _)| *id)
                    else {
                        return Err(format!("no spare left to replace node {bad}"));
                    };
                    self.replacements.insert(bad, spare);
                    self.nodes.get_mut(&spare).expect("node").started = true;
                    trace_event!(
                        self.trace,
                        self.now(),
                        Some(spare),
                        "join",
                        "a new node starts empty to replace n{bad}"
                    );
                    self.start(spare)?;
                    spare
                }
            };
            if status.voters.contains(&spare) {
                self.replaced += 1;
                trace_event!(
                    self.trace,
                    self.now(),
                    Some(spare),
                    "replaced",
                    "n{spare} is a voter in place of n{bad}"
                );
                return Ok(());
            } else if status.learners.contains(&spare) {
                MembershipChange::AddVoter(spare)
            } else {
                MembershipChange::AddLearner(spare)
            }
        };
        self.send_change(leader, change, format!(" (replacing n{bad})"));
        self.queue.schedule_in(retry, Ev::Replace(bad));
        Ok(())
    }

    /// The operator asks for a leader, follower or cluster backup.
    fn admin_backup(&mut self) {
        let id = format!("b{}", self.next_backup);
        self.next_backup += 1;
        let strategies = &self.shape.backup_strategies;
        let strategy = strategies[self.rng.index(strategies.len())];
        let node = match strategy {
            BackupStrategy::Follower => {
                let leader = self.leader();
                let followers: Vec<u64> = self
                    .nodes
                    .keys()
                    .copied()
                    .filter(|&n| Some(n) != leader)
                    .collect();
                Some(followers[self.rng.index(followers.len())])
            }
            _ => self.leader(),
        };
        let Some(node) = node else { return };
        let what = format!("backup {id} {strategy:?}");
        self.send_admin(node, Request::Backup { id, strategy }, &what);
        if self.shape.fail_leader_after_backup {
            let d = self.rng.between(0, 50) * 1_000_000;
            self.queue.schedule_in(d, Ev::FailLeader);
        }
    }

    fn admin_answer(&mut self, response: Response) {
        match response {
            Response::BackupDone(done) => {
                self.backups_ok += 1;
                self.backups_done.push(done);
            }
            // Cluster backups are counted and judged from their manifests at the end
            // (a leader that fails over mid-backup never answers; its successor
            // finishes the backup).
            Response::ClusterBackupDone(_) => {}
            Response::BackupFailed { reason } if reason.starts_with("aborted") => {
                self.backup_aborts += 1;
            }
            _ => self.backup_failures += 1,
        }
    }

    fn backup_step(&mut self, id: u64, incarnation: u64) -> Result<(), String> {
        let n = self.nodes.get_mut(&id).expect("node");
        if n.incarnation != incarnation || n.life == Lifecycle::Crashed {
            return Ok(());
        }
        n.backup_step_scheduled = false;
        if n.life == Lifecycle::Paused {
            // A paused process copies nothing; look again later.
            n.backup_step_scheduled = true;
            self.queue
                .schedule_in(TICK_NS, Ev::BackupStep(id, incarnation));
            return Ok(());
        }
        self.catch_up_ticks(id);
        let n = self.nodes.get_mut(&id).expect("node");
        if let Err(e) = n.node.as_mut().expect("up").step_backups(16 << 10) {
            if n.corrupt && !is_transient(&e) {
                self.found_corruption(id, &format!("backup step: {e}"));
                return Ok(());
            }
            let power = self.rng.chance(Ratio::new(1, 2));
            self.crash(id, power, &format!("node error in a backup step: {e}"));
            return Ok(());
        }
        self.drive(id)
    }

    /// Every backup reported complete restores to exactly the model's state at its
    /// index; a complete cluster backup has every required part, all equal.
    fn check_backups(&mut self) -> Result<(), String> {
        let store: DynDisk = Arc::new(self.store.clone());
        let mut scratch_n = 0;
        for done in std::mem::take(&mut self.backups_done) {
            let dest = Path::new(&done.dir).parent().expect("dest").to_path_buf();
            scratch_n += 1;
            self.check_restores(&store, &dest, &done.id, done.index, done.digest, scratch_n)
                .map_err(|e| {
                    format!(
                        "{:?} backup {} of node {}: {e}",
                        done.strategy, done.id, done.node
                    )
                })?;
        }
        for (id, &barrier) in &self.model.barriers.clone() {
            let dir = Path::new(BACKUP_DIR).join(id);
            let Some(m) = read_json::<ClusterManifest>(&store, &dir.join(CLUSTER_MANIFEST)) else {
                return Err(format!(
                    "cluster backup {id}: its barrier committed at {barrier} but no cluster manifest was written"
                ));
            };
            if m.barrier_index != barrier {
                return Err(format!(
                    "cluster backup {id}: manifest says barrier {} but it is at {barrier}",
                    m.barrier_index
                ));
            }
            if m.status != ClusterStatus::Complete {
                self.cluster_failed += 1;
                continue;
            }
            self.cluster_complete += 1;
            let ok: Vec<_> = m.nodes.iter().filter(|p| p.status == "ok").collect();
            let needed = if m.quorum_only {
                m.nodes.len() / 2 + 1
            } else {
                m.nodes.len()
            };
            if ok.len() < needed {
                return Err(format!(
                    "cluster backup {id} reported complete with {} of {} required parts: {:?}",
                    ok.len(),
                    needed,
                    m.nodes
                ));
            }
            for part in ok {
                let digest = part
                    .digest
                    .as_deref()
                    .and_then(|d| u64::from_str_radix(d, 16).ok())
                    .ok_or_else(|| {
                        format!("cluster backup {id}: node {} has no digest", part.node)
                    })?;
                let dest = dir.join(format!("node-{}", part.node));
                scratch_n += 1;
                self.check_restores(&store, &dest, id, barrier, digest, scratch_n)
                    .map_err(|e| format!("cluster backup {id}, part of node {}: {e}", part.node))?;
            }
        }
        Ok(())
    }

    fn check_restores(
        &self,
        store: &DynDisk,
        dest: &Path,
        id: &str,
        index: Index,
        digest: u64,
        scratch_n: u64,
    ) -> Result<(), String> {
        let report = ryu_backup::verify(store, dest, id, &ryu_backup::VerifyOptions { deep: true })
            .map_err(|e| format!("verify: {e}"))?;
        if !report.is_ok() {
            return Err(format!("verify: {:?}", report.problems));
        }
        let scratch: DynDisk = Arc::new(SimDisk::new(scratch_n));
        ryu_backup::restore(
            store,
            dest,
            id,
            &scratch,
            Path::new("r"),
            &Default::default(),
        )
        .map_err(|e| format!("restore: {e}"))?;
        let db = ryu_engine::Db::open(scratch, Path::new("r"), Default::default())
            .map_err(|e| format!("open restored: {e}"))?;
        let txn = db.begin_read();
        // A node that has applied nothing yet has no applied state: index 0.
        let applied = match txn.get(ryu_node::command::APPLIED_KEY) {
            Ok(None) => ryu_node::AppliedState::default(),
            Ok(Some(b)) => ryu_node::AppliedState::decode(&b).map_err(|e| e.to_string())?,
            Err(e) => return Err(format!("read restored: {e}")),
        };
        if applied.index != index {
            return Err(format!(
                "restored database is at index {}, the backup claims {index}",
                applied.index
            ));
        }
        let got: BTreeMap<Vec<u8>, Vec<u8>> = txn
            .range(Vec::new()..vec![0xff])
            .collect::<Result<_, _>>()
            .map_err(|e| format!("read restored: {e}"))?;
        let want = self.model.state_at(index);
        if got != want {
            let diff: Vec<_> = want
                .iter()
                .filter(|(k, v)| got.get(*k) != Some(v))
                .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
                .chain(
                    got.keys()
                        .filter(|k| !want.contains_key(*k))
                        .map(|k| String::from_utf8_lossy(k).into_owned()),
                )
                .collect();
            return Err(format!(
                "restored state differs from the committed state at {index} on keys {diff:?}"
            ));
        }
        let d = ryu_node::backups::state_digest(&txn).map_err(|e| e.to_string())?;
        if d != digest {
            return Err(format!(
                "digest {digest:016x} reported, restored state has {d:016x}"
            ));
        }
        Ok(())
    }

    /// Restore a whole new cluster from the newest complete cluster backup: every
    /// node from the same part, under a new cluster id, on new disks. The old cluster
    /// is gone, but some of its messages are still in flight. Returns false if no
    /// cluster backup completed (nothing to restore).
    fn restore_cluster(&mut self) -> Result<bool, String> {
        let store: DynDisk = Arc::new(self.store.clone());
        let mut newest: Option<(Index, String, u64)> = None;
        for (id, &barrier) in &self.model.barriers {
            let dir = Path::new(BACKUP_DIR).join(id);
            let Some(m) = read_json::<ClusterManifest>(&store, &dir.join(CLUSTER_MANIFEST)) else {
                continue;
            };
            let part = m.nodes.iter().find(|p| p.status == "ok");
            if m.status == ClusterStatus::Complete
                && let Some(part) = part
                && newest.as_ref().is_none_or(|(b, _, _)| barrier > *b)
            {
                newest = Some((barrier, id.clone(), part.node));
            }
        }
        let now = self.now();
        let Some((barrier, id, from)) = newest else {
            trace_event!(
                self.trace,
                now,
                None,
                "restore",
                "no complete cluster backup to restore"
            );
            return Ok(false);
        };
        let new_cluster = self.cluster_id ^ 0xc1u64.rotate_left(40);
        trace_event!(
            self.trace,
            now,
            None,
            "restore",
            "cluster backup {id} (barrier {barrier}) from node {from}'s part into cluster {new_cluster:016x}"
        );
        // Messages the old cluster still had in flight reach the new nodes.
        let mut stale = Vec::new();
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for &nid in &ids {
            if let Some(node) = self.nodes[&nid].node.as_ref() {
                let term = node.raft().hard_state().term;
                for &to in ids.iter().filter(|&&t| t != nid) {
                    stale.push(Envelope {
                        cluster: self.cluster_id,
                        from: nid,
                        to,
                        payload: ryu_node::Payload::Raft(ryu_raft::Message {
                            from: ryu_raft::NodeId(nid),
                            to: ryu_raft::NodeId(to),
                            term: term + 100,
                            body: ryu_raft::MessageBody::AppendResp {
                                index: 0,
                                reject: None,
                            },
                        }),
                    });
                }
            }
            self.crash(nid, false, "the old cluster is retired");
        }
        self.cluster_id = new_cluster;
        self.restored_at = Some(barrier);
        self.raft_checker = RaftChecker::default();
        self.applied.clear();
        self.digests.clear();
        self.probe = None;
        let part_dir = Path::new(BACKUP_DIR).join(&id).join(format!("node-{from}"));
        for &nid in &ids {
            let disk = SimDisk::new(self.rng.next_u64());
            let d: DynDisk = Arc::new(disk.clone());
            ryu_node::restore_cluster_node(
                &store,
                &part_dir,
                &id,
                &d,
                Path::new(NODE_DIR),
                new_cluster,
            )
            .map_err(|e| format!("restoring node {nid}: {e}"))?;
            let n = self.nodes.get_mut(&nid).expect("node");
            n.disk = disk;
            n.digest = None;
            self.start(nid)?;
        }
        self.stale_sent = stale.len() as u64;
        for m in stale {
            let at = self.now() + self.rng.between(1, 50) * 1_000_000;
            let (from, to) = (m.from, m.to);
            self.net.send(at, from, to, m);
        }
        self.queue.schedule_in(LIVENESS_BOUND_NS, Ev::Deadline);
        self.queue.schedule_in(TICK_NS * 5, Ev::Probe);
        Ok(true)
    }

    /// The restored cluster resumed (it committed and applied a probe everywhere):
    /// every node holds exactly the state at the barrier, plus the probe, and
    /// dropped every message of the old cluster.
    fn check_restored_cluster(&mut self, barrier: Index) -> Result<(), String> {
        let mut want = self.model.state_at(barrier);
        want.insert(b"probe".to_vec(), b"1".to_vec());
        for (&id, n) in &self.nodes {
            let node = n
                .node
                .as_ref()
                .ok_or(format!("restored node {id} is down"))?;
            if node.cluster_id() != self.cluster_id {
                return Err(format!(
                    "restored node {id} has cluster id {:016x}",
                    node.cluster_id()
                ));
            }
            let txn = node.db().begin_read();
            let got: BTreeMap<Vec<u8>, Vec<u8>> = txn
                .range(Vec::new()..vec![0xff])
                .collect::<Result<_, _>>()
                .map_err(|e| format!("node {id}: {e}"))?;
            if got != want {
                return Err(format!(
                    "restored node {id} does not hold the state at barrier {barrier} plus the probe ({} keys, {} expected)",
                    got.len(),
                    want.len()
                ));
            }
        }
        let dropped: u64 = self
            .nodes
            .values()
            .filter_map(|n| n.node.as_ref().map(Node::foreign_messages_dropped))
            .sum();
        if dropped < self.stale_sent {
            return Err(format!(
                "the restored cluster took {} of {} messages of the old cluster",
                self.stale_sent - dropped,
                self.stale_sent
            ));
        }
        trace_event!(
            self.trace,
            self.now(),
            None,
            "restored",
            "every node holds the state at {barrier} plus the probe; {dropped} old messages dropped"
        );
        Ok(())
    }

    fn final_checks(&mut self) -> Result<(), String> {
        self.check_backups()?;
        let note = crate::history::check(&self.history, &self.model.increments)?;
        let now = self.now();
        let ops = self.history.ops.len();
        match note {
            None => trace_event!(self.trace, now, None, "linearizable", "{ops} operations"),
            Some(why) => trace_event!(self.trace, now, None, "linearizability-unknown", "{why}"),
        }
        Ok(())
    }
}

/// FNV-1a over every key and value the engine holds, system keys included (the
/// applied index and membership must agree too).
fn state_digest(node: &Node) -> Result<u64, String> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: &[u8]| {
        for &x in (b.len() as u32).to_le_bytes().iter().chain(b) {
            h ^= u64::from(x);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    let txn = node.db().begin_read();
    for item in txn.range(..) {
        let (k, v) = item.map_err(|e| format!("node {} engine scan: {e}", node.id()))?;
        eat(&k);
        eat(&v);
    }
    Ok(h)
}

fn is_transient(e: &NodeError) -> bool {
    match e {
        NodeError::Io(_) => true,
        NodeError::Log(l) => matches!(l, ryu_raft::LogError::Io(_) | ryu_raft::LogError::Poisoned),
        NodeError::Engine(ryu_engine::Error::Io { .. } | ryu_engine::Error::Poisoned) => true,
        _ => false,
    }
}

fn kind_of(r: &Request, id: u64) -> OpKind {
    match r {
        Request::Incr { key, delta } => OpKind::Incr {
            key: key.clone(),
            delta: *delta,
            request: id,
        },
        Request::Get { key, .. } => OpKind::Get { key: key.clone() },
        Request::GetMany { keys, .. } => OpKind::GetMany { keys: keys.clone() },
        Request::Put { key, value } => OpKind::Put {
            key: key.clone(),
            value: Some(value.clone()),
        },
        Request::Delete { key } => OpKind::Put {
            key: key.clone(),
            value: None,
        },
        Request::Cas { key, expected, new } => OpKind::Cas {
            key: key.clone(),
            expected: expected.clone(),
            new: new.clone(),
        },
        Request::Txn { reads, writes } => OpKind::Txn {
            reads: reads.clone(),
            writes: writes.clone(),
        },
        Request::Scan { .. }
        | Request::Status
        | Request::Backup { .. }
        | Request::ChangeMembership(_) => {
            unreachable!("not issued by clients")
        }
    }
}

fn read_json<T: for<'de> serde::Deserialize<'de>>(disk: &DynDisk, path: &Path) -> Option<T> {
    let f = disk.open(path).ok()?;
    let mut b = vec![0u8; f.len().ok()? as usize];
    f.read_at(0, &mut b).ok()?;
    serde_json::from_slice(&b).ok()
}
