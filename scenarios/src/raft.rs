//! Scenario `raft`: a cluster of 3 to 7 Raft nodes, each over its own `SimDisk` (the
//! durable `DiskLog` plus a snapshot file) and all over one `SimNetwork`, driven through
//! crashes (with and without power loss), restarts, pauses, partitions of every shape
//! (asymmetric too), loss, duplication, reordering, clock drift, membership changes,
//! log compaction with streamed snapshots, client proposals and ReadIndex reads.
//!
//! Persistence takes simulated time: between a node's `ready()` and the moment its
//! writes are durable, the node may crash, and then nothing of that `Ready` was
//! written. This is what lets the simulator catch a node that speaks before its words
//! are durable.
//!
//! After every event the checker asserts, over every node's log and state machine:
//! - **election safety**: at most one leader per term;
//! - **leader append-only**: a leader never changes or drops an entry of its log
//!   during its term (compaction aside);
//! - **log matching**: two logs with an entry of the same index and term agree on all
//!   entries before it;
//! - **leader completeness**: a new leader's log holds every entry any node applied;
//! - **state machine safety**: no two nodes apply different entries at one index, and
//!   a snapshot's state digest equals the digest of the replicas that applied up to
//!   its index;
//! - **durability**: a node restarted from its disk has every entry and the term and
//!   vote it had made durable (and acknowledged);
//! - **read safety**: a ReadIndex read returns an index no lower than every commit
//!   index known anywhere when the read was issued.
//!
//! Then a liveness phase: faults stop, the network heals, every node restarts or
//! resumes; within a bounded simulated time a leader must be elected and a new
//! proposal applied by a majority of the voters.
//!
//! Scheduled crashes, pauses, partitions and power losses during a persist are
//! numbered, so `--skip-faults` can switch some off (see [`crate::faults`]).
//!
//! Silent disk corruption (bit flips, misdirected writes, latent sectors) is not drawn
//! here: a Raft node that loses acknowledged state to corruption needs protocol-aware
//! recovery, which is future work; the durable log's own tests cover detection.

use crate::faults::{FaultCounter, draw_partition};
use crate::raft_checks::RaftChecker;
use crate::{Failure, RunOptions, RunReport};
use ryu_io::{Clock, Disk, DynDisk, IoError};
use ryu_raft::{
    ConfChange, ConfChangeKind, ConfState, Config, DiskLog, DiskLogOptions, Entry, EntryKind,
    HardState, Index, LeaseRead, LogError, Message, NodeId, RawNode, Ready, Role, SnapshotChunk,
    SnapshotMeta, Storage, Term,
};
use ryu_sim::{
    DiskFaults, EventQueue, Lifecycle, NetConfig, Next, Ratio, SimClock, SimDisk, SimNetwork,
    SimRng, Trace, WorldTime, next_happening, trace_event,
};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

/// Planted Raft bugs this scenario can switch on (needs the `planted-bugs` feature).
#[cfg(feature = "planted-bugs")]
pub const BUGS: &[(&str, &str)] = &[
    (
        "commit-previous-term-by-counting",
        "Figure 8: a leader commits an earlier term's entry by counting replicas",
    ),
    (
        "reply-before-hard-state-durable",
        "votes leave before term and vote are durable",
    ),
    (
        "ack-append-before-durable",
        "append acknowledgements leave before the entries are durable",
    ),
    (
        "truncate-on-non-conflicting-append",
        "a follower truncates its log on an append that does not conflict",
    ),
    (
        "grant-vote-to-stale-log",
        "votes are granted to a candidate with a less up-to-date log",
    ),
    (
        "read-index-before-commit-in-term",
        "ReadIndex is served before the leader committed in its term",
    ),
    (
        "count-learners-in-quorum",
        "learners are counted in the commit quorum",
    ),
    (
        "conf-change-before-noop-committed",
        "a new leader proposes a membership change before its no-op commits",
    ),
];

/// Without the `planted-bugs` feature there is nothing to switch on.
#[cfg(not(feature = "planted-bugs"))]
pub const BUGS: &[(&str, &str)] = &[];

#[cfg(feature = "planted-bugs")]
fn planted_bug(opts: &RunOptions) -> Option<ryu_raft::PlantedBug> {
    use ryu_raft::PlantedBug as B;
    let name = opts.bugs.iter().next()?;
    let index = BUGS.iter().position(|(n, _)| n == name)?;
    let all = [
        B::CommitPreviousTermByCounting,
        B::ReplyBeforeHardStateDurable,
        B::AckAppendBeforeDurable,
        B::TruncateOnNonConflictingAppend,
        B::GrantVoteToStaleLog,
        B::ReadIndexBeforeCommitInTerm,
        B::CountLearnersInQuorum,
        B::ConfChangeBeforeNoopCommitted,
    ];
    Some(all[index])
}

const TICK_NS: u64 = 10_000_000;
const LIVENESS_BOUND_NS: u64 = 30_000_000_000;
const SNAP_FILE: &str = "snap";
const RECV_FILE: &str = "snap.recv";
const LOG_DIR: &str = "raft";

#[derive(Debug, Clone)]
struct Shape {
    initial_voters: u64,
    spare_nodes: u64,
    fault_phase_ns: u64,
    fault_interval_ns: u64,
    propose_interval_ns: u64,
    read_interval_ns: u64,
    crashes: bool,
    power_loss: Ratio,
    pauses: bool,
    partitions: bool,
    membership: bool,
    compact_every: u64,
    net: NetConfig,
    disk: DiskFaults,
    drift_ppm_max: i64,
    lease: bool,
    pre_vote: bool,
    persist_ns_max: u64,
    /// Per persisted Ready: power fails before its writes are durable. Aims crashes
    /// at the window in which a node must not yet have spoken.
    crash_in_persist: Ratio,
    /// The `raft-targeted` profile (see [`Profile::Targeted`]). Every field below is
    /// a constant in the `raft` profile, drawn from no random stream, so `raft` seeds
    /// run exactly as before the profile existed.
    targeted: bool,
    max_msg_bytes: u64,
    max_inflight_msgs: usize,
    /// Per proposal: also propose a membership change.
    conf_change_chance: Ratio,
    /// Per new leader seen (targeted only): propose a membership change at once.
    conf_change_on_election: Ratio,
    /// Per new leader seen (targeted only): cut it off at once, before its no-op
    /// leaves (Figure 8: a leader whose entries reached no one).
    isolate_on_election: Ratio,
    /// Targeted: per persisted Ready that changes the term or the vote, power fails
    /// before it is durable (`crash_in_persist` then applies to entries only).
    crash_in_persist_vote: Ratio,
    /// How long a crashed node stays down, in ms.
    restart_ms: (u64, u64),
}

impl Shape {
    fn draw(rng: &mut SimRng) -> Shape {
        let initial_voters = [3, 3, 4, 5, 5, 7][rng.index(6)];
        let mut disk = DiskFaults::default();
        if rng.chance(Ratio::new(1, 2)) {
            disk.write_error = Ratio::new(rng.between(1, 3) as u32, 1000);
            disk.sync_error = Ratio::new(rng.between(1, 3) as u32, 1000);
        }
        let mut net = NetConfig::draw(rng);
        net.latency_max_ns = net.latency_max_ns.min(20_000_000);
        Shape {
            initial_voters,
            spare_nodes: rng.between(0, 2),
            fault_phase_ns: rng.between(2_000, 10_000) * 1_000_000,
            fault_interval_ns: rng.between(20, 500) * 1_000_000,
            propose_interval_ns: rng.between(2, 50) * 1_000_000,
            read_interval_ns: rng.between(5, 100) * 1_000_000,
            crashes: rng.chance(Ratio::new(3, 4)),
            power_loss: Ratio::new(rng.between(0, 4) as u32, 4),
            pauses: rng.chance(Ratio::new(1, 2)),
            partitions: rng.chance(Ratio::new(3, 4)),
            membership: rng.chance(Ratio::new(1, 2)),
            compact_every: [0, 10, 50, 200][rng.index(4)],
            net,
            disk,
            drift_ppm_max: [0, 100, 10_000][rng.index(3)] as i64,
            lease: rng.chance(Ratio::new(1, 4)),
            pre_vote: rng.chance(Ratio::new(3, 4)),
            persist_ns_max: rng.between(100_000, 5_000_000),
            crash_in_persist: rng.swarm_ratio(Ratio::new(1, 2), 3, 100),
            targeted: false,
            max_msg_bytes: 4096,
            max_inflight_msgs: 16,
            conf_change_chance: Ratio::new(1, 20),
            conf_change_on_election: Ratio::ZERO,
            isolate_on_election: Ratio::ZERO,
            crash_in_persist_vote: Ratio::ZERO,
            restart_ms: (10, 1000),
        }
    }

    /// The `raft-targeted` shape: every knob turned towards the windows the classic
    /// Raft bugs need (see [`Profile::Targeted`]).
    fn draw_targeted(rng: &mut SimRng) -> Shape {
        let initial_voters = [3, 3, 5, 5, 5][rng.index(5)];
        let mut net = NetConfig::draw(rng);
        net.latency_max_ns = net.latency_max_ns.min(20_000_000);
        let mut disk = DiskFaults::default();
        if rng.chance(Ratio::new(1, 4)) {
            disk.write_error = Ratio::new(1, 1000);
            disk.sync_error = Ratio::new(1, 1000);
        }
        Shape {
            initial_voters,
            // Learners are the point of spare nodes here: two (enough to outvote
            // the voters a leader lost, were learners counted) or one.
            spare_nodes: [1, 2, 2][rng.index(3)],
            fault_phase_ns: rng.between(2_000, 6_000) * 1_000_000,
            fault_interval_ns: rng.between(30, 250) * 1_000_000,
            propose_interval_ns: rng.between(2, 20) * 1_000_000,
            read_interval_ns: rng.between(5, 50) * 1_000_000,
            crashes: true,
            power_loss: Ratio::new(rng.between(2, 4) as u32, 4),
            // Drawn, but the targeted faults pause no one (this draw only keeps the
            // stream as measured).
            pauses: rng.chance(Ratio::new(1, 4)),
            partitions: true,
            membership: true,
            compact_every: [0, 0, 0, 50][rng.index(4)],
            net,
            disk,
            drift_ppm_max: 0,
            // ReadIndex, not leases: the read path the planted read bug lives on.
            lease: false,
            pre_vote: rng.chance(Ratio::new(1, 3)),
            // A long persist window: more time in which a reply may have left early.
            persist_ns_max: rng.between(1_000_000, 8_000_000),
            crash_in_persist: Ratio::new(rng.between(2, 8) as u32, 100),
            targeted: true,
            // Often one entry per append, so old-term entries travel without the new
            // leader's no-op (the Figure 8 interleaving needs that).
            max_msg_bytes: if rng.chance(Ratio::new(1, 2)) {
                1
            } else {
                rng.between(1, 200)
            },
            max_inflight_msgs: rng.between(1, 8) as usize,
            conf_change_chance: Ratio::new(rng.between(1, 4) as u32, 20),
            conf_change_on_election: Ratio::new(rng.between(2, 4) as u32, 4),
            isolate_on_election: Ratio::new(rng.between(1, 4) as u32, 8),
            crash_in_persist_vote: Ratio::new(rng.between(10, 50) as u32, 100),
            restart_ms: (1, rng.between(5, 60)),
        }
    }
}

/// The replicated state machine of this scenario: a counter and a digest chain over
/// every applied entry, plus the last value written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct StateMachine {
    applied: Index,
    applied_term: Term,
    digest: u64,
    count: u64,
    conf: ConfState,
}

fn mix(digest: u64, index: Index, term: Term, data: &[u8]) -> u64 {
    let mut h = digest ^ 0x9e37_79b9_7f4a_7c15;
    for b in index
        .to_le_bytes()
        .iter()
        .chain(term.to_le_bytes().iter())
        .chain(data)
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl StateMachine {
    /// Snapshot payload: applied u64, term u64, digest u64, count u64, crc32 u32.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(36);
        for v in [self.applied, self.applied_term, self.digest, self.count] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8], conf: ConfState) -> Option<StateMachine> {
        if bytes.len() != 36 || crc32fast::hash(&bytes[..32]).to_le_bytes() != bytes[32..36] {
            return None;
        }
        let w = |i: usize| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        Some(StateMachine {
            applied: w(0),
            applied_term: w(1),
            digest: w(2),
            count: w(3),
            conf,
        })
    }
}

/// The snapshot file: meta index u64, term u64, conf state (as the log's meta encodes
/// it is not reused here: voters and learners only, count u32 + ids), payload length
/// u32, payload, crc32 of everything before.
fn encode_snap_file(meta: &SnapshotMeta, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&meta.index.to_le_bytes());
    out.extend_from_slice(&meta.term.to_le_bytes());
    for set in [&meta.conf_state.voters, &meta.conf_state.learners] {
        out.extend_from_slice(&(set.len() as u32).to_le_bytes());
        for id in set {
            out.extend_from_slice(&id.0.to_le_bytes());
        }
    }
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn decode_snap_file(bytes: &[u8]) -> Option<(SnapshotMeta, Vec<u8>)> {
    if bytes.len() < 4
        || crc32fast::hash(&bytes[..bytes.len() - 4]).to_le_bytes() != bytes[bytes.len() - 4..]
    {
        return None;
    }
    let mut at = 0usize;
    let mut take = |n: usize| -> Option<&[u8]> {
        let s = bytes.get(at..at + n)?;
        at += n;
        Some(s)
    };
    let u64_ = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8"));
    let u32_ = |b: &[u8]| u32::from_le_bytes(b.try_into().expect("4"));
    let index = u64_(take(8)?);
    let term = u64_(take(8)?);
    let mut sets = Vec::new();
    for _ in 0..2 {
        let n = u32_(take(4)?);
        let mut set = BTreeSet::new();
        for _ in 0..n {
            set.insert(NodeId(u64_(take(8)?)));
        }
        sets.push(set);
    }
    let len = u32_(take(4)?) as usize;
    let payload = take(len)?.to_vec();
    let learners = sets.pop().expect("two sets");
    let voters = sets.pop().expect("two sets");
    let conf_state = ConfState {
        voters,
        learners,
        ..ConfState::default()
    };
    Some((
        SnapshotMeta {
            index,
            term,
            conf_state,
        },
        payload,
    ))
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct DurableView {
    hard_state: HardState,
    first_index: Index,
    /// Term of the snapshot's last entry (index `first_index - 1`).
    snap_term: Term,
    terms: Vec<Term>,
}

impl DurableView {
    fn of(log: &DiskLog) -> DurableView {
        DurableView {
            hard_state: log.hard_state(),
            first_index: log.first_index().expect("in memory"),
            snap_term: log.snapshot_meta().expect("in memory").term,
            terms: log.all_entries().iter().map(|e| e.term).collect(),
        }
    }

    /// The term this view holds at `index` (the snapshot's, or an entry's).
    fn term(&self, index: Index) -> Option<Term> {
        if index + 1 == self.first_index {
            return Some(self.snap_term);
        }
        let at = index.checked_sub(self.first_index)?;
        self.terms.get(at as usize).copied()
    }

    fn describe(&self) -> String {
        let last = self.first_index + self.terms.len() as u64 - 1;
        format!(
            "hs={:?} log=[{}..={}] last_term={:?}",
            self.hard_state,
            self.first_index,
            last,
            self.terms.last()
        )
    }

    /// Does `recovered` keep the hard state this view promised (term never lower;
    /// in the same term, the same vote and no lower commit)?
    fn hard_state_kept_by(&self, recovered: &DurableView) -> bool {
        let hs = (self.hard_state, recovered.hard_state);
        if hs.1.term < hs.0.term
            || (hs.1.term == hs.0.term && hs.1.vote != hs.0.vote && hs.0.vote.is_some())
        {
            return false;
        }
        !(hs.1.term == hs.0.term && hs.1.commit < hs.0.commit)
    }

    /// Does `recovered` hold every entry this view held?
    fn log_kept_by(&self, recovered: &DurableView) -> bool {
        // An installed snapshot replaces the whole log when the log disagrees with it
        // at the snapshot's index (§7: the follower's entries after it conflict with
        // the leader's log, so none of them can be committed). Only a snapshot that
        // agrees with the log must keep the entries after it.
        let snap = recovered.first_index - 1;
        if snap > 0 && self.term(snap).is_some_and(|t| t != recovered.snap_term) {
            return true;
        }
        // Every entry the view held above the recovered snapshot must still be there,
        // unless the recovered log moved past it with a snapshot.
        for (k, term) in self.terms.iter().enumerate() {
            let index = self.first_index + k as u64;
            if index < recovered.first_index {
                continue;
            }
            let at = (index - recovered.first_index) as usize;
            if recovered.terms.get(at) != Some(term) {
                return false;
            }
        }
        true
    }
}

struct Node {
    id: u64,
    disk: SimDisk,
    clock: SimClock,
    life: Lifecycle,
    incarnation: u64,
    raw: Option<RawNode<DiskLog>>,
    pending: Option<Ready>,
    sm: StateMachine,
    held: Vec<Message>,
    /// Ticks handed to Raft so far, counted on this node's clock.
    ticks: u64,
    /// Member of the cluster (initial voter, or added by a conf change).
    started: bool,
    removed: bool,
    /// What this node has made durable and acknowledged.
    acked: Option<DurableView>,
    /// What a failed persist was trying to reach (it may or may not have landed).
    attempted: Option<DurableView>,
    rng: SimRng,
}

#[derive(Debug, Clone, Copy)]
enum Ev {
    Tick(u64),
    PersistDone(u64, u64),
    Propose,
    Read,
    Fault,
    Heal,
    Restart(u64),
    Resume(u64),
    EndFaults,
    Probe,
    Deadline,
}

#[derive(Debug)]
struct PendingRead {
    node: u64,
    min_index: Index,
    invoked_ns: u64,
}

/// Which schedule a seed draws. Both run the same nodes, disks, network and checkers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// `raft`: a broad swarm of every fault.
    Standard,
    /// `raft-targeted`: a schedule aimed at the windows the classic Raft bugs need,
    /// from its own draws (so `raft` seeds are untouched):
    /// - Figure 8: the leader is cut off together with a minority of the voters (and
    ///   some learners) while clients keep proposing to it, then crashed or healed;
    ///   appends often carry one entry, so old-term entries travel without the new
    ///   leader's no-op;
    /// - power loss right after a vote or an append acknowledgement: a persist that
    ///   writes a hard state or entries fails often, and crashed nodes come back
    ///   within milliseconds, while the other candidates' requests are still in
    ///   flight;
    /// - a candidate one vote short: a voter is left able to reach exactly a quorum
    ///   minus two other voters;
    /// - learners always present (spare nodes join as learners early and are
    ///   promoted and demoted), and membership changes proposed the moment a new
    ///   leader is seen, before its no-op commits;
    /// - ReadIndex reads (no leases) issued all through leader changes.
    Targeted,
}

impl Profile {
    /// The scenario's name in the catalogue.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Standard => "raft",
            Profile::Targeted => "raft-targeted",
        }
    }
}

/// Run the `raft` scenario for one seed.
pub fn run(opts: &RunOptions) -> RunReport {
    run_profile(Profile::Standard, opts)
}

/// Run one profile of the scenario for one seed.
pub fn run_profile(profile: Profile, opts: &RunOptions) -> RunReport {
    let mut world = World::new(profile, opts.clone());
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
    opts: RunOptions,
    shape: Shape,
    rng: SimRng,
    time: WorldTime,
    queue: EventQueue<Ev>,
    net: SimNetwork<Message>,
    trace: Trace,
    nodes: BTreeMap<u64, Node>,
    faults_on: bool,
    /// Numbers the faults `fault` and `persist_done` decide on (see `crate::faults`).
    faults: FaultCounter,
    next_value: u64,
    raft_checker: RaftChecker,
    /// index -> (term, data digest, state digest after applying): what was applied.
    applied: BTreeMap<Index, (Term, u64, u64)>,
    /// Proposal values applied, to catch an entry applied twice.
    applied_values: BTreeSet<Vec<u8>>,
    reads: BTreeMap<Vec<u8>, PendingRead>,
    next_read: u64,
    reads_done: u64,
    proposals_applied: u64,
    probe_value: Option<Vec<u8>>,
    /// Nodes that applied the current probe.
    probe_applied_by: BTreeSet<u64>,
    conf_changes: u64,
    /// Targeted profile: the last (term, leader) seen, to act right after elections.
    seen_leader: Option<(Term, u64)>,
}

impl World {
    fn new(profile: Profile, opts: RunOptions) -> World {
        let mut rng = SimRng::new(opts.seed);
        let shape = match profile {
            Profile::Standard => Shape::draw(&mut rng),
            Profile::Targeted => Shape::draw_targeted(&mut rng),
        };
        let ids: Vec<u64> = (1..=shape.initial_voters + shape.spare_nodes).collect();
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
                Node {
                    id,
                    disk,
                    clock: SimClock::new(time.clone(), drift, 0),
                    life: Lifecycle::Crashed,
                    incarnation: 0,
                    raw: None,
                    pending: None,
                    sm: StateMachine::default(),
                    held: Vec::new(),
                    ticks: 0,
                    started: id <= shape.initial_voters,
                    removed: false,
                    acked: None,
                    attempted: None,
                    rng: rng.fork("node"),
                },
            );
        }
        let mut trace = Trace::new(opts.trace_tail_lines.max(60));
        trace.set_echo(opts.echo_trace);
        World {
            opts,
            shape,
            rng,
            time,
            queue: EventQueue::new(),
            net,
            trace,
            nodes,
            faults_on: true,
            faults: FaultCounter::default(),
            next_value: 1,
            raft_checker: RaftChecker::default(),
            applied: BTreeMap::new(),
            applied_values: BTreeSet::new(),
            reads: BTreeMap::new(),
            next_read: 0,
            reads_done: 0,
            proposals_applied: 0,
            probe_value: None,
            probe_applied_by: BTreeSet::new(),
            conf_changes: 0,
            seen_leader: None,
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
        format!(
            "voters={} spares={} lease={} prevote={} drift<={}ppm compact={} membership={} loss={} dup={} reorder={}; \
             applied={} reads={} conf_changes={} leaders={} crashes={} net: sent={} lost={} cut={}",
            s.initial_voters,
            s.spare_nodes,
            s.lease,
            s.pre_vote,
            s.drift_ppm_max,
            s.compact_every,
            s.membership,
            s.net.loss,
            s.net.duplicate,
            s.net.reorder,
            self.proposals_applied,
            self.reads_done,
            self.conf_changes,
            self.raft_checker.leader_count(),
            crashes,
            n.sent,
            n.lost,
            n.cut_at_send + n.cut_in_flight
        )
    }

    fn now(&self) -> u64 {
        self.queue.now_ns()
    }

    fn config(&self, id: u64, applied: Index) -> Config {
        let mut c = Config::new(id);
        c.election_tick = 10;
        c.heartbeat_tick = 2;
        c.pre_vote = self.shape.pre_vote;
        c.check_quorum = true;
        c.max_size_per_msg_bytes = self.shape.max_msg_bytes;
        c.max_inflight_msgs = self.shape.max_inflight_msgs;
        c.max_snapshot_chunk_bytes = 16;
        c.applied = applied;
        if self.shape.lease {
            // Drift is at most drift_ppm_max; over an election timeout that is far
            // below one tick, so a bound of 2 ticks is safe.
            c.lease_read = Some(LeaseRead {
                max_clock_drift_ticks: 2,
            });
        }
        #[cfg(feature = "planted-bugs")]
        {
            c.planted_bug = planted_bug(&self.opts);
        }
        c
    }

    fn run(&mut self) -> Result<(), String> {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            if self.nodes[&id].started {
                self.start(id)?;
            }
        }
        self.queue
            .schedule_in(self.shape.propose_interval_ns, Ev::Propose);
        self.queue
            .schedule_in(self.shape.read_interval_ns, Ev::Read);
        self.queue
            .schedule_in(self.shape.fault_interval_ns, Ev::Fault);
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
                        return Ok(());
                    }
                }
            }
            if self.shape.targeted {
                self.after_election()?;
            }
            self.check()?;
        }
    }

    fn handle(&mut self, ev: Ev) -> Result<bool, String> {
        match ev {
            Ev::Tick(id) => self.tick(id)?,
            Ev::PersistDone(id, inc) => self.persist_done(id, inc)?,
            Ev::Propose => {
                self.propose()?;
                if self.faults_on {
                    self.queue
                        .schedule_in(self.shape.propose_interval_ns, Ev::Propose);
                }
            }
            Ev::Read => {
                self.read()?;
                if self.faults_on {
                    self.queue
                        .schedule_in(self.shape.read_interval_ns, Ev::Read);
                }
            }
            Ev::Fault => {
                if self.faults_on {
                    self.fault()?;
                    let d = self.rng.between(1, 2 * self.shape.fault_interval_ns);
                    self.queue.schedule_in(d, Ev::Fault);
                }
            }
            Ev::Heal => {
                trace_event!(self.trace, self.now(), None, "heal", "");
                self.net.heal();
            }
            Ev::Restart(id) => self.start(id)?,
            Ev::Resume(id) => self.resume(id)?,
            Ev::EndFaults => self.end_faults()?,
            Ev::Probe => return self.probe(),
            Ev::Deadline => {
                return Err(format!(
                    "liveness: no leader committed a new proposal within {} s after faults healed",
                    LIVENESS_BOUND_NS / 1_000_000_000
                ));
            }
        }
        Ok(false)
    }

    // ---- node lifecycle -----------------------------------------------------------

    fn start(&mut self, id: u64) -> Result<(), String> {
        let now = self.now();
        let config = self.config(id, 0);
        let node = self.nodes.get_mut(&id).expect("node exists");
        if node.life != Lifecycle::Crashed || node.removed {
            return Ok(());
        }
        // Every node, joining ones too, starts knowing the bootstrap membership (as
        // etcd's --initial-cluster): the log replays conf changes on top of it.
        let initial = ConfState::with_voters(1..=self.shape.initial_voters);
        let disk: DynDisk = Arc::new(node.disk.clone());
        let opened = open_node(&disk, initial);
        let (log, sm) = match opened {
            Ok(x) => x,
            Err(OpenFailure::Retry(e)) => {
                trace_event!(self.trace, now, Some(id), "start-failed", "{e}");
                node.disk.crash();
                self.queue.schedule_in(50_000_000, Ev::Restart(id));
                return Ok(());
            }
            Err(OpenFailure::Fatal(e)) => {
                return Err(format!("node {id} cannot recover its disk: {e}"));
            }
        };
        let recovered = DurableView::of(&log);
        if let Some(acked) = &node.acked {
            // A failed persist may have made some of its writes durable (its entries
            // but not its hard state, say): the log may match either view.
            let ok = acked.hard_state_kept_by(&recovered)
                && (acked.log_kept_by(&recovered)
                    || node
                        .attempted
                        .as_ref()
                        .is_some_and(|a| a.log_kept_by(&recovered)));
            if !ok {
                return Err(format!(
                    "durability: node {id} recovered {} but had made durable {} (attempted {:?})",
                    recovered.describe(),
                    acked.describe(),
                    node.attempted.as_ref().map(DurableView::describe)
                ));
            }
        }
        node.acked = Some(recovered);
        node.attempted = None;
        let config = Config {
            applied: sm.applied,
            ..config
        };
        let raw = RawNode::new(&config, log, node.rng.child_chacha("raft"))
            .map_err(|e| format!("node {id} failed to start raft: {e}"))?;
        trace_event!(
            self.trace,
            now,
            Some(id),
            "start",
            "applied={} hs={:?}",
            sm.applied,
            raw.hard_state()
        );
        node.sm = sm;
        node.raw = Some(raw);
        node.ticks = node.clock.monotonic_ns() / TICK_NS;
        node.pending = None;
        node.life = Lifecycle::Up;
        node.incarnation += 1;
        self.schedule_tick(id);
        self.drive(id)
    }

    fn schedule_tick(&mut self, id: u64) {
        let node = &self.nodes[&id];
        // A node ticks every TICK_NS of its own clock; a fast clock ticks more often.
        let drift = node.clock.drift_ppm();
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
        let node = self.nodes.get_mut(&id).expect("node exists");
        node.raw = None;
        node.pending = None;
        node.held.clear();
        node.life = Lifecycle::Crashed;
        if power_loss {
            node.disk.crash();
        }
        self.net.drop_node_traffic(id);
        self.reads.retain(|_, r| r.node != id);
        if let Some(d) = self.draw_restart_delay_ns(id) {
            self.queue.schedule_in(d, Ev::Restart(id));
        }
    }

    /// How long a crashed node stays down (`None`: removed nodes stay down). A
    /// skipped crash makes this draw too.
    fn draw_restart_delay_ns(&mut self, id: u64) -> Option<u64> {
        let (lo, hi) = self.shape.restart_ms;
        (!self.nodes[&id].removed).then(|| self.rng.between(lo, hi) * 1_000_000)
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
        self.nodes.get_mut(&id).expect("node").life = Lifecycle::Up;
        for m in std::mem::take(&mut self.nodes.get_mut(&id).expect("node").held) {
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

    /// Hand Raft every tick its clock says is due, before it sees any other input.
    /// Time-based decisions (leases above all) are only as good as this: a process
    /// that was paused must learn that time passed before it answers anything, or it
    /// serves reads from a lease that expired while it slept.
    fn catch_up_ticks(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).expect("node");
        let Some(raw) = node.raw.as_mut() else { return };
        let due = node.clock.monotonic_ns() / TICK_NS;
        while node.ticks < due {
            raw.tick();
            node.ticks += 1;
        }
    }

    fn deliver(&mut self, to: u64, msg: Message) -> Result<(), String> {
        let Some(node) = self.nodes.get_mut(&to) else {
            return Ok(());
        };
        match node.life {
            Lifecycle::Crashed => return Ok(()),
            Lifecycle::Paused => {
                node.held.push(msg);
                return Ok(());
            }
            Lifecycle::Up => {}
        }
        trace_event!(self.trace, self.queue.now_ns(), Some(to), "recv", "{msg:?}");
        self.catch_up_ticks(to);
        let node = self.nodes.get_mut(&to).expect("node");
        node.raw.as_mut().expect("up").step(msg);
        self.drive(to)
    }

    fn send_all(&mut self, from: u64, msgs: Vec<Message>, delay_ns: u64) {
        let at = self.now() + delay_ns;
        for m in msgs {
            trace_event!(self.trace, self.now(), Some(from), "send", "{m:?}");
            let to = m.to.0;
            self.net.send(at, from, to, m);
        }
    }

    // ---- the Ready loop -------------------------------------------------------------

    /// Take a `Ready` if the node has one and is not already waiting on its disk.
    fn drive(&mut self, id: u64) -> Result<(), String> {
        let node = self.nodes.get_mut(&id).expect("node");
        if node.life != Lifecycle::Up || node.pending.is_some() {
            return Ok(());
        }
        let raw = node.raw.as_mut().expect("up");
        if let Some(why) = raw.durability_fault() {
            // The disks here never rot: a node losing what it acknowledged is a bug.
            return Err(format!("durability: node {id}: {why}"));
        }
        if !raw.has_ready() {
            return Ok(());
        }
        let mut rd = raw.ready();
        let msgs = std::mem::take(&mut rd.messages);
        let requests = std::mem::take(&mut rd.snapshot_requests);
        self.send_all(id, msgs, 0);
        for req in requests {
            self.serve_snapshot_request(id, req);
        }
        let delay = self.rng.between(10_000, self.shape.persist_ns_max);
        let node = self.nodes.get_mut(&id).expect("node");
        node.pending = Some(rd);
        let inc = node.incarnation;
        self.queue.schedule_in(delay, Ev::PersistDone(id, inc));
        Ok(())
    }

    fn serve_snapshot_request(&mut self, id: u64, req: ryu_raft::SnapshotRequest) {
        let node = self.nodes.get_mut(&id).expect("node");
        let raw = node.raw.as_mut().expect("up");
        let file = read_file(&node.disk, SNAP_FILE);
        let chunk = file.as_ref().and_then(|bytes| {
            let (meta, _) = decode_snap_file(bytes)?;
            (meta.index == req.meta.index && meta.term == req.meta.term).then(|| {
                let start = (req.offset as usize).min(bytes.len());
                let end = (start + req.max_bytes as usize).min(bytes.len());
                SnapshotChunk {
                    meta: req.meta.clone(),
                    offset: req.offset,
                    data: bytes[start..end].to_vec(),
                    done: end == bytes.len(),
                }
            })
        });
        match chunk {
            Some(c) => {
                let _ = raw.send_snapshot_chunk(req.to, c);
            }
            None => raw.abort_snapshot(req.to),
        }
    }

    fn persist_done(&mut self, id: u64, incarnation: u64) -> Result<(), String> {
        let node = self.nodes.get_mut(&id).expect("node");
        if node.incarnation != incarnation || node.life == Lifecycle::Crashed {
            return Ok(());
        }
        if node.life == Lifecycle::Paused {
            // The process is stopped: its disk work finishes when it resumes.
            self.queue
                .schedule_in(TICK_NS, Ev::PersistDone(id, incarnation));
            return Ok(());
        }
        let f = (self.shape.initial_voters - 1) / 2;
        let down = self.nodes_down();
        // Targeted: power fails only while a hard state or entries are being written,
        // the window in which a vote or an acknowledgement must not have left yet.
        let crash_chance = if self.shape.targeted {
            let node = &self.nodes[&id];
            let durable = node.acked.as_ref().map(|a| a.hard_state);
            let rd = node.pending.as_ref();
            let votes = rd
                .and_then(|rd| rd.hard_state)
                .is_some_and(|hs| durable.is_none_or(|d| d.term != hs.term || d.vote != hs.vote));
            if votes {
                self.shape.crash_in_persist_vote
            } else if rd.is_some_and(|rd| !rd.entries.is_empty()) {
                self.shape.crash_in_persist
            } else {
                Ratio::ZERO
            }
        } else {
            self.shape.crash_in_persist
        };
        if self.faults_on && down < f && self.rng.chance(crash_chance) {
            if self.fault_enabled(Some(id), "crash power loss during persist power_loss=true") {
                self.crash(id, true, "power loss during persist");
                return Ok(());
            }
            // Skipped: make the crash's draw, then persist as if no power was lost.
            self.draw_restart_delay_ns(id);
        }
        self.catch_up_ticks(id);
        let node = self.nodes.get_mut(&id).expect("node");
        let mut rd = node.pending.take().expect("a ready was pending");
        if let Err(e) = self.write_ready(id, &mut rd) {
            let power = self.rng.chance(Ratio::new(1, 2));
            self.crash(id, power, &format!("poisoned: {e}"));
            return Ok(());
        }
        let persisted = std::mem::take(&mut rd.persisted_messages);
        self.send_all(id, persisted, 0);
        let committed = std::mem::take(&mut rd.committed_entries);
        for entry in committed {
            if !self.apply(id, &entry)? {
                return Ok(()); // the node crashed
            }
        }
        for rs in std::mem::take(&mut rd.read_states) {
            if let Some(pending) = self.reads.remove(&rs.context) {
                if rs.index < pending.min_index {
                    return Err(format!(
                        "stale read: node {} served read {:?} at index {} but index {} was committed before it was issued (at {} ns)",
                        pending.node,
                        String::from_utf8_lossy(&rs.context),
                        rs.index,
                        pending.min_index,
                        pending.invoked_ns
                    ));
                }
                self.reads_done += 1;
            }
        }
        let node = self.nodes.get_mut(&id).expect("node");
        node.raw.as_mut().expect("up").advance();
        self.maybe_compact(id)?;
        self.drive(id)
    }

    /// Steps 2-3 of a Ready: staged snapshot chunks, an installed snapshot, entries
    /// and hard state. Every write is durable when this returns Ok.
    fn write_ready(&mut self, id: u64, rd: &mut Ready) -> Result<(), String> {
        let node = self.nodes.get_mut(&id).expect("node");
        for rc in std::mem::take(&mut rd.received_chunks) {
            stage_chunk(&node.disk, &rc.chunk).map_err(|e| e.to_string())?;
        }
        if let Some(meta) = rd.snapshot.clone() {
            let staged = read_file(&node.disk, RECV_FILE).ok_or("no staged snapshot")?;
            let (file_meta, payload) =
                decode_snap_file(&staged).ok_or("staged snapshot does not decode")?;
            if file_meta.index != meta.index || file_meta.term != meta.term {
                return Err(format!(
                    "staged snapshot {} is not {}",
                    file_meta.index, meta.index
                ));
            }
            let sm = StateMachine::decode(&payload, meta.conf_state.clone())
                .ok_or("snapshot payload does not decode")?;
            write_file_atomic(&node.disk, SNAP_FILE, &staged).map_err(|e| e.to_string())?;
            let raw = node.raw.as_mut().expect("up");
            let before = DurableView::of(raw.storage());
            raw.storage_mut()
                .install_snapshot(meta.clone())
                .map_err(|e| {
                    node.attempted = Some(before);
                    e.to_string()
                })?;
            node.sm = sm;
            let digest_known = self.applied.get(&meta.index).map(|a| a.2);
            if let Some(d) = digest_known
                && d != node.sm.digest
            {
                return Err(format!(
                    "state machine safety: snapshot at {} has digest {:x}, replicas applied {d:x}",
                    meta.index, node.sm.digest
                ));
            }
            trace_event!(
                self.trace,
                self.queue.now_ns(),
                Some(id),
                "install-snapshot",
                "index={} term={}",
                meta.index,
                meta.term
            );
        }
        let node = self.nodes.get_mut(&id).expect("node");
        let raw = node.raw.as_mut().expect("up");
        let intended = intended_view(raw.storage(), rd.hard_state, &rd.entries);
        match raw.storage_mut().persist(rd.hard_state, &rd.entries) {
            Ok(()) => {
                node.acked = Some(DurableView::of(raw.storage()));
                Ok(())
            }
            Err(e) => {
                node.attempted = Some(intended);
                Err(e.to_string())
            }
        }
    }

    /// Apply one committed entry. `Ok(false)`: the node crashed (its disk failed).
    fn apply(&mut self, id: u64, entry: &Entry) -> Result<bool, String> {
        let now = self.now();
        let node = self.nodes.get_mut(&id).expect("node");
        if entry.index <= node.sm.applied {
            return Ok(true);
        }
        if entry.index != node.sm.applied + 1 {
            return Err(format!(
                "node {id} applies {} after {}",
                entry.index, node.sm.applied
            ));
        }
        if entry.kind == EntryKind::ConfChange {
            let cc = ConfChange::decode(&entry.data)
                .map_err(|e| format!("conf change does not decode: {e}"))?;
            let raw = node.raw.as_mut().expect("up");
            match raw.apply_conf_change(&cc) {
                Ok(cs) => {
                    node.sm.conf = cs.clone();
                    if let Err(e) = raw.storage_mut().set_conf_state(cs.clone()) {
                        self.crash(id, false, &format!("poisoned: {e}"));
                        return Ok(false);
                    }
                    trace_event!(
                        self.trace,
                        now,
                        Some(id),
                        "conf",
                        "{cc} -> voters={:?} learners={:?}",
                        cs.voters,
                        cs.learners
                    );
                }
                Err(e) => {
                    return Err(format!(
                        "node {id} cannot apply committed conf change {cc}: {e}"
                    ));
                }
            }
        }
        node.sm.digest = mix(node.sm.digest, entry.index, entry.term, &entry.data);
        node.sm.applied = entry.index;
        node.sm.applied_term = entry.term;
        if entry.kind == EntryKind::Normal && !entry.data.is_empty() {
            node.sm.count += 1;
        }
        if self.probe_value.as_deref() == Some(&entry.data[..]) {
            self.probe_applied_by.insert(id);
        }
        let data_digest = mix(0, 0, 0, &entry.data);
        let digest = node.sm.digest;
        match self.applied.get(&entry.index) {
            Some(&(term, dd, sd)) => {
                if term != entry.term || dd != data_digest || sd != digest {
                    return Err(format!(
                        "state machine safety: node {id} applied {}/{} but another node applied {term}/{} at that index",
                        entry.term, entry.index, entry.index
                    ));
                }
            }
            None => {
                self.applied
                    .insert(entry.index, (entry.term, data_digest, digest));
                let max_term = self.max_term();
                self.raft_checker
                    .first_applied(entry.index, entry.term, max_term);
                if entry.kind == EntryKind::Normal && !entry.data.is_empty() {
                    self.proposals_applied += 1;
                    if !self.applied_values.insert(entry.data.clone()) {
                        return Err(format!(
                            "value {:?} applied at two indexes",
                            String::from_utf8_lossy(&entry.data)
                        ));
                    }
                }
            }
        }
        Ok(true)
    }

    fn maybe_compact(&mut self, id: u64) -> Result<(), String> {
        let every = self.shape.compact_every;
        let node = self.nodes.get_mut(&id).expect("node");
        let Some(raw) = node.raw.as_mut() else {
            return Ok(());
        };
        let log = raw.storage();
        let commit = log.hard_state().commit;
        let first = log.first_index().expect("in memory");
        // Only entries that are durably committed may be folded into a snapshot:
        // after a restart the applied index must not exceed the durable commit.
        if every == 0 || node.sm.applied < first + every || node.sm.applied > commit {
            return Ok(());
        }
        let meta = SnapshotMeta {
            index: node.sm.applied,
            term: node.sm.applied_term,
            conf_state: node.sm.conf.clone(),
        };
        let bytes = encode_snap_file(&meta, &node.sm.encode());
        if let Err(e) = write_file_atomic(&node.disk, SNAP_FILE, &bytes) {
            self.crash(id, false, &format!("snapshot write failed: {e}"));
            return Ok(());
        }
        if let Err(e) = raw.storage_mut().compact(meta) {
            self.crash(id, false, &format!("compaction failed: {e}"));
        }
        Ok(())
    }

    /// The highest term any node has reached (in memory or durably).
    fn max_term(&self) -> Term {
        self.nodes
            .values()
            .map(|n| {
                let live = n.raw.as_ref().map_or(0, |r| r.hard_state().term);
                let durable = n.acked.as_ref().map_or(0, |a| a.hard_state.term);
                live.max(durable)
            })
            .max()
            .unwrap_or(0)
    }

    // ---- clients ------------------------------------------------------------------

    fn leader(&self) -> Option<u64> {
        self.nodes
            .values()
            .filter(|n| n.life == Lifecycle::Up)
            .filter_map(|n| {
                n.raw.as_ref().map(|r| {
                    (
                        r.hard_state().term,
                        r.soft_state().role == Role::Leader,
                        n.id,
                    )
                })
            })
            .filter(|(_, leader, _)| *leader)
            .max()
            .map(|(_, _, id)| id)
    }

    fn propose(&mut self) -> Result<(), String> {
        let target = match self.leader() {
            Some(l) if self.rng.chance(Ratio::new(9, 10)) => l,
            _ => self.random_up_node().unwrap_or(1),
        };
        let value = format!("v{}", self.next_value).into_bytes();
        self.next_value += 1;
        self.propose_value(target, value)?;
        if self.faults_on && self.shape.membership && self.rng.chance(self.shape.conf_change_chance)
        {
            self.conf_change()?;
        }
        Ok(())
    }

    fn propose_value(&mut self, target: u64, value: Vec<u8>) -> Result<(), String> {
        if self.nodes[&target].life != Lifecycle::Up {
            return Ok(());
        }
        self.catch_up_ticks(target);
        let node = self.nodes.get_mut(&target).expect("node");
        let r = node.raw.as_mut().expect("up").propose(value.clone());
        trace_event!(
            self.trace,
            self.queue.now_ns(),
            Some(target),
            "propose",
            "{} -> {r:?}",
            String::from_utf8_lossy(&value)
        );
        self.drive(target)
    }

    fn random_up_node(&mut self) -> Option<u64> {
        let up: Vec<u64> = self
            .nodes
            .values()
            .filter(|n| n.life == Lifecycle::Up)
            .map(|n| n.id)
            .collect();
        (!up.is_empty()).then(|| up[self.rng.index(up.len())])
    }

    fn read(&mut self) -> Result<(), String> {
        let Some(target) = self.random_up_node() else {
            return Ok(());
        };
        // Everything any node knows to be committed now must be visible to the read.
        let min_index = self
            .nodes
            .values()
            .filter_map(|n| n.raw.as_ref())
            .map(|r| r.raft().log.committed)
            .max()
            .unwrap_or(0);
        let context = format!("r{}", self.next_read).into_bytes();
        self.next_read += 1;
        self.catch_up_ticks(target);
        let node = self.nodes.get_mut(&target).expect("node");
        let r = node.raw.as_mut().expect("up").read_index(context.clone());
        trace_event!(
            self.trace,
            self.queue.now_ns(),
            Some(target),
            "read-index",
            "{} min={min_index} -> {r:?}",
            String::from_utf8_lossy(&context)
        );
        if r.is_ok() {
            self.reads.insert(
                context,
                PendingRead {
                    node: target,
                    min_index,
                    invoked_ns: self.queue.now_ns(),
                },
            );
        }
        self.drive(target)
    }

    fn conf_change(&mut self) -> Result<(), String> {
        let Some(leader) = self.leader() else {
            return Ok(());
        };
        let raw = self.nodes[&leader].raw.as_ref().expect("up");
        let voters: BTreeSet<u64> = raw
            .raft()
            .tracker
            .config
            .voters
            .incoming
            .iter()
            .map(|n| n.0)
            .collect();
        let learners: BTreeSet<u64> = raw
            .raft()
            .tracker
            .config
            .learners
            .iter()
            .map(|n| n.0)
            .collect();
        let all: Vec<u64> = self.nodes.keys().copied().collect();
        let spare: Vec<u64> = all
            .iter()
            .copied()
            .filter(|id| !voters.contains(id) && !learners.contains(id) && !self.nodes[id].removed)
            .collect();
        // Targeted: spare nodes join as learners first, so learners are present.
        let pick = if self.shape.targeted && !spare.is_empty() && self.rng.chance(Ratio::new(1, 2))
        {
            0
        } else {
            self.rng.below(3)
        };
        let cc = match pick {
            0 if !spare.is_empty() => ConfChange::single(
                ConfChangeKind::AddLearner,
                spare[self.rng.index(spare.len())],
            ),
            1 if !learners.is_empty() => {
                let l: Vec<u64> = learners.into_iter().collect();
                ConfChange::single(ConfChangeKind::AddVoter, l[self.rng.index(l.len())])
            }
            // Targeted: voters are demoted down to three, so promotions and
            // demotions keep overlapping with elections.
            2 if voters.len() as u64 > self.shape.initial_voters
                || (self.shape.targeted && voters.len() > 3) =>
            {
                let v: Vec<u64> = voters.into_iter().filter(|&v| v != leader).collect();
                ConfChange::single(ConfChangeKind::AddLearner, v[self.rng.index(v.len())])
            }
            _ => return Ok(()),
        };
        self.catch_up_ticks(leader);
        let node = self.nodes.get_mut(&leader).expect("node");
        let r = node.raw.as_mut().expect("up").propose_conf_change(&cc);
        trace_event!(
            self.trace,
            self.queue.now_ns(),
            Some(leader),
            "propose-conf",
            "{cc} -> {r:?}"
        );
        if r.is_ok() {
            self.conf_changes += 1;
            // A node being added must be running to catch up.
            for c in &cc.changes {
                let n = self.nodes.get_mut(&c.node.0).expect("node");
                if !n.started {
                    n.started = true;
                    let id = n.id;
                    self.start(id)?;
                }
            }
        }
        self.drive(leader)
    }

    // ---- faults -------------------------------------------------------------------

    fn fault(&mut self) -> Result<(), String> {
        if self.shape.targeted {
            return self.targeted_fault();
        }
        let f = (self.shape.initial_voters - 1) / 2;
        let down = self.nodes_down();
        match self.rng.below(3) {
            0 if self.shape.crashes && down < f => {
                if let Some(id) = self.random_up_node() {
                    let power = self.rng.chance(self.shape.power_loss);
                    let what = format!("crash scheduled power_loss={power}");
                    if self.fault_enabled(Some(id), &what) {
                        self.crash(id, power, "scheduled");
                    } else {
                        self.draw_restart_delay_ns(id);
                    }
                }
            }
            1 if self.shape.pauses && down < f => {
                if let Some(id) = self.random_up_node() {
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
            2 if self.shape.partitions => self.partition(),
            _ => {}
        }
        Ok(())
    }

    /// The voters in `id`'s current configuration.
    fn voters_of(&self, id: u64) -> Vec<u64> {
        self.nodes[&id].raw.as_ref().map_or_else(Vec::new, |raw| {
            let config = &raw.raft().tracker.config;
            config.voters.incoming.iter().map(|n| n.0).collect()
        })
    }

    /// Targeted profile: right after a new leader is seen, maybe propose a
    /// membership change at once (before its no-op commits), and maybe cut the
    /// leader off at once (before its no-op reaches anyone: Figure 8's leader whose
    /// entries stay its own).
    fn after_election(&mut self) -> Result<(), String> {
        let Some(leader) = self.leader() else {
            return Ok(());
        };
        let term = self.nodes[&leader]
            .raw
            .as_ref()
            .expect("up")
            .hard_state()
            .term;
        if self.seen_leader == Some((term, leader)) {
            return Ok(());
        }
        self.seen_leader = Some((term, leader));
        if !self.faults_on {
            return Ok(());
        }
        if self.rng.chance(self.shape.conf_change_on_election) {
            self.conf_change()?;
        }
        if self.rng.chance(self.shape.isolate_on_election) {
            let heal_ms = self.rng.between(30, 600);
            let what = format!("isolate new leader {leader} of term {term}");
            if self.fault_enabled(Some(leader), &what) {
                trace_event!(self.trace, self.now(), Some(leader), "fault", "{what}");
                self.net.isolate(leader);
            }
            self.queue.schedule_in(heal_ms * 1_000_000, Ev::Heal);
        }
        Ok(())
    }

    /// Started nodes that are not up (crashed or paused).
    fn nodes_down(&self) -> u64 {
        self.nodes
            .values()
            .filter(|n| n.started && n.life != Lifecycle::Up)
            .count() as u64
    }

    /// The targeted profile's faults (see [`Profile::Targeted`]). Every fault is
    /// fully drawn before it is numbered, so a skipped one draws the same.
    fn targeted_fault(&mut self) -> Result<(), String> {
        let f = (self.shape.initial_voters - 1) / 2;
        let down = self.nodes_down();
        let leader = self.leader();
        let all: Vec<u64> = self.nodes.keys().copied().collect();
        match (self.rng.below(6), leader) {
            // Figure 8: the leader keeps a minority of the voters (possibly none) and
            // some learners; clients go on proposing to it until a new leader shows.
            (0 | 1, Some(leader)) => {
                let voters = self.voters_of(leader);
                let quorum = voters.len() / 2 + 1;
                let mut others: Vec<u64> =
                    voters.iter().copied().filter(|&v| v != leader).collect();
                let keep = self.rng.below(quorum as u64) as usize;
                let mut side = vec![leader];
                for _ in 0..keep.min(quorum.saturating_sub(2)) {
                    if others.is_empty() {
                        break;
                    }
                    side.push(others.swap_remove(self.rng.index(others.len())));
                }
                // Learners go with the leader as a block, most of the time.
                if self.rng.chance(Ratio::new(3, 4)) {
                    side.extend(all.iter().filter(|&&n| !voters.contains(&n) && n != leader));
                }
                let rest: Vec<u64> = all.iter().copied().filter(|n| !side.contains(n)).collect();
                let heal_ms = self.rng.between(50, 1500);
                let what = format!("isolate leader {leader} with {side:?} | {rest:?}");
                if self.fault_enabled(Some(leader), &what) {
                    trace_event!(self.trace, self.now(), Some(leader), "fault", "{what}");
                    self.net.partition(&[side, rest]);
                }
                self.queue.schedule_in(heal_ms * 1_000_000, Ev::Heal);
            }
            // The leader loses power (or crashes) mid-term.
            (2, Some(leader)) if down < f => {
                let power = self.rng.chance(self.shape.power_loss);
                if self.fault_enabled(Some(leader), &format!("crash leader power_loss={power}")) {
                    self.crash(leader, power, "scheduled leader crash");
                } else {
                    self.draw_restart_delay_ns(leader);
                }
            }
            // A candidate one vote short: a voter reaches exactly quorum - 2 others.
            (3, _) => {
                let Some(c) = self.random_up_node() else {
                    return Ok(());
                };
                let voters = self.voters_of(c);
                if voters.is_empty() {
                    return Ok(());
                }
                let quorum = voters.len() / 2 + 1;
                let mut others: Vec<u64> = voters.iter().copied().filter(|&v| v != c).collect();
                let mut reach = Vec::new();
                for _ in 0..quorum.saturating_sub(2) {
                    if others.is_empty() {
                        break;
                    }
                    reach.push(others.swap_remove(self.rng.index(others.len())));
                }
                let heal_ms = self.rng.between(50, 1000);
                let what = format!("voter {c} reaches only {reach:?}");
                if self.fault_enabled(Some(c), &what) {
                    trace_event!(self.trace, self.now(), Some(c), "fault", "{what}");
                    for &n in &all {
                        if n != c && !reach.contains(&n) {
                            self.net.cut(c, n);
                            self.net.cut(n, c);
                        }
                    }
                }
                self.queue.schedule_in(heal_ms * 1_000_000, Ev::Heal);
            }
            (4, _) if down < f => {
                if let Some(id) = self.random_up_node() {
                    let power = self.rng.chance(self.shape.power_loss);
                    if self.fault_enabled(Some(id), &format!("crash power_loss={power}")) {
                        self.crash(id, power, "scheduled");
                    } else {
                        self.draw_restart_delay_ns(id);
                    }
                }
            }
            (5, _) => self.partition(),
            _ => {}
        }
        Ok(())
    }

    fn partition(&mut self) {
        let now = self.now();
        let nodes: Vec<u64> = self.nodes.keys().copied().collect();
        let fault = self.faults.next(&self.opts);
        let what = draw_partition(&mut self.net, &mut self.rng, &nodes, fault.enabled);
        if fault.enabled {
            trace_event!(self.trace, now, None, "fault", "{what}");
        } else {
            trace_event!(
                self.trace,
                now,
                None,
                "fault-skipped",
                "#{} fault {what}",
                fault.ordinal
            );
        }
        // Scheduled even for a skipped partition: a heal restores every link, and
        // the original run healed here too.
        let d = self.rng.between(50, 3000) * 1_000_000;
        self.queue.schedule_in(d, Ev::Heal);
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
                Lifecycle::Crashed if self.nodes[&id].started => self.start(id)?,
                _ => {}
            }
        }
        self.queue.schedule_in(LIVENESS_BOUND_NS, Ev::Deadline);
        self.queue.schedule_in(TICK_NS * 5, Ev::Probe);
        Ok(())
    }

    /// Liveness: propose a probe at the leader until a majority of the leader's
    /// voters applied it.
    fn probe(&mut self) -> Result<bool, String> {
        if let Some(leader) = self.leader() {
            let voters = &self.nodes[&leader]
                .raw
                .as_ref()
                .expect("up")
                .raft()
                .tracker
                .config
                .voters
                .incoming;
            let applied_by = voters
                .iter()
                .filter(|v| self.probe_applied_by.contains(&v.0))
                .count();
            if self.probe_value.is_some() && applied_by > voters.len() / 2 {
                trace_event!(
                    self.trace,
                    self.now(),
                    None,
                    "liveness",
                    "probe applied by {applied_by} of {} voters",
                    voters.len()
                );
                return Ok(true);
            }
            if self.probe_value.is_none() || self.rng.chance(Ratio::new(1, 10)) {
                let value = format!("probe{}", self.next_value).into_bytes();
                self.next_value += 1;
                self.probe_value = Some(value.clone());
                self.probe_applied_by.clear();
                self.propose_value(leader, value)?;
            }
        }
        self.queue.schedule_in(TICK_NS * 20, Ev::Probe);
        Ok(false)
    }

    // ---- the checker ----------------------------------------------------------------

    fn check(&mut self) -> Result<(), String> {
        let nodes: Vec<(u64, &RawNode<DiskLog>)> = self
            .nodes
            .iter()
            .filter_map(|(&id, n)| Some((id, n.raw.as_ref()?)))
            .collect();
        self.raft_checker.check(&nodes)
    }
}

// ---- files ----------------------------------------------------------------------

enum OpenFailure {
    Retry(String),
    Fatal(String),
}

/// Open a node's durable state: the log, then the snapshot file; finish a snapshot
/// installation or compaction that a crash interrupted.
fn open_node(disk: &DynDisk, initial: ConfState) -> Result<(DiskLog, StateMachine), OpenFailure> {
    let mut log = match DiskLog::open(
        disk.clone(),
        Path::new(LOG_DIR),
        initial.clone(),
        DiskLogOptions {
            segment_size_bytes: 16 << 10,
        },
    ) {
        Ok(log) => log,
        Err(LogError::Io(e)) => return Err(OpenFailure::Retry(e.to_string())),
        Err(LogError::Poisoned) => return Err(OpenFailure::Retry("poisoned".into())),
        Err(e) => return Err(OpenFailure::Fatal(e.to_string())),
    };
    // A rename whose directory sync failed is visible but not durable; make it
    // durable before acting on what we read (we may compact the log to match it).
    disk.sync_dir(Path::new(""))
        .map_err(|e| OpenFailure::Retry(e.to_string()))?;
    let snap = match disk.open(Path::new(SNAP_FILE)) {
        Ok(f) => {
            let mut bytes =
                vec![0u8; f.len().map_err(|e| OpenFailure::Retry(e.to_string()))? as usize];
            f.read_at(0, &mut bytes)
                .map_err(|e| OpenFailure::Retry(e.to_string()))?;
            Some(
                decode_snap_file(&bytes)
                    .ok_or_else(|| OpenFailure::Fatal("snapshot file does not decode".into()))?,
            )
        }
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(OpenFailure::Retry(e.to_string())),
    };
    let log_snap = log.snapshot_meta().expect("in memory");
    let sm = match snap {
        None => {
            if log_snap.index != 0 {
                return Err(OpenFailure::Fatal(format!(
                    "log snapshot at {} but no snapshot file",
                    log_snap.index
                )));
            }
            StateMachine {
                conf: initial,
                ..StateMachine::default()
            }
        }
        Some((meta, payload)) => {
            let sm = StateMachine::decode(&payload, meta.conf_state.clone())
                .ok_or_else(|| OpenFailure::Fatal("snapshot payload".into()))?;
            if meta.index > log_snap.index {
                // A compaction or installation was interrupted after the snapshot file
                // became durable: finish it. Keep the log if it holds the snapshot's
                // entry (compaction), else replace it (installation).
                let r = if log.term(meta.index).ok() == Some(meta.term) {
                    log.compact(meta.clone())
                } else {
                    log.install_snapshot(meta.clone())
                };
                r.map_err(|e| OpenFailure::Retry(e.to_string()))?;
            } else if meta.index < log_snap.index {
                return Err(OpenFailure::Fatal(format!(
                    "snapshot file at {} behind log snapshot {}",
                    meta.index, log_snap.index
                )));
            }
            sm
        }
    };
    // Raft replays committed entries after `applied`, conf changes included, so the
    // membership it restarts from must be the one as of `applied` (the snapshot's),
    // not the latest one applied before the crash.
    if log.initial_state().expect("in memory").conf_state != sm.conf {
        log.set_conf_state(sm.conf.clone())
            .map_err(|e| OpenFailure::Retry(e.to_string()))?;
    }
    if sm.applied > log.hard_state().commit {
        return Err(OpenFailure::Fatal(format!(
            "applied {} beyond durable commit {}",
            sm.applied,
            log.hard_state().commit
        )));
    }
    Ok((log, sm))
}

fn intended_view(log: &DiskLog, hs: Option<HardState>, entries: &[Entry]) -> DurableView {
    let mut v = DurableView::of(log);
    if let Some(first) = entries.first() {
        v.terms.truncate((first.index - v.first_index) as usize);
        v.terms.extend(entries.iter().map(|e| e.term));
    }
    if let Some(hs) = hs {
        v.hard_state = hs;
    }
    v
}

fn read_file(disk: &SimDisk, name: &str) -> Option<Vec<u8>> {
    let f = disk.open(Path::new(name)).ok()?;
    let mut bytes = vec![0u8; f.len().ok()? as usize];
    f.read_at(0, &mut bytes).ok()?;
    Some(bytes)
}

/// Write a whole file atomically: temp file, sync, rename, sync the directory.
fn write_file_atomic(disk: &SimDisk, name: &str, bytes: &[u8]) -> Result<(), IoError> {
    let tmp = format!("{name}.tmp");
    match disk.remove(Path::new(&tmp)) {
        Ok(()) => {}
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e),
    }
    let f = disk.create(Path::new(&tmp))?;
    f.write_at(0, bytes)?;
    f.sync_data()?;
    disk.rename(Path::new(&tmp), Path::new(name))?;
    disk.sync_dir(Path::new(""))
}

/// Append a received chunk to the staging file (offset 0 restarts it), durably.
fn stage_chunk(disk: &SimDisk, chunk: &SnapshotChunk) -> Result<(), IoError> {
    let path = Path::new(RECV_FILE);
    let f = match disk.open(path) {
        Ok(f) => f,
        Err(e) if e.is_not_found() => {
            let f = disk.create(path)?;
            disk.sync_dir(Path::new(""))?;
            f
        }
        Err(e) => return Err(e),
    };
    if chunk.offset == 0 {
        f.set_len(0)?;
    }
    f.write_at(chunk.offset, &chunk.data)?;
    f.set_len(chunk.offset + chunk.data.len() as u64)?;
    f.sync_data()
}
