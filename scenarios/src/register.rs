//! Scenario `register`: an atomic (linearizable) read/write register replicated over
//! a majority quorum (the ABD algorithm of Attiya, Bar-Noy and Dolev), with every
//! replica persisting its state on a `SimDisk` and every message crossing a
//! `SimNetwork`. It exists to exercise the simulator end to end before the engine and
//! Raft do: crashes with torn writes, failed syncs, latent sectors and bit flips,
//! pauses, partitions of every shape, loss, duplication and reordering, all drawn from
//! the seed.
//!
//! Protocol. A tag is `(ts, client)`, totally ordered. A write queries a majority for
//! their tags, picks `(max.ts + 1, me)`, and stores `(tag, value)` at a majority. A read
//! queries a majority, takes the highest `(tag, value)`, writes it back to a majority
//! (so no later read can return something older), and returns it. A replica adopts a
//! stored value only if its tag is higher, and acknowledges only once the value is
//! durable on its disk.
//!
//! Replica storage: one 32-byte record in the file `register`, inside one sector (so a
//! torn write leaves the old or the new record, never a mix):
//!
//! ```text
//! offset size field
//!      0    4 magic "RYUR"
//!      4    8 tag.ts      (u64 little-endian)
//!     12    8 tag.client  (u64 little-endian)
//!     20    8 value       (u64 little-endian)
//!     28    4 crc32 of bytes 0..28
//! ```
//!
//! Fault policy of a replica: a failed write or sync poisons it, and it restarts from
//! what is durable (fsync errors are not retryable). A record that fails its checksum,
//! or a sector that cannot be read, means the replica has lost its state: it stops for
//! good (fail-stop) rather than rejoin with an older value. Silent corruption is
//! enabled on at most `f` replicas' disks, and the fault schedule never takes more than
//! `f` replicas down at once, so a majority always survives. Misdirected writes are not
//! drawn here: this tiny format cannot detect a lost write (the engine's can).
//!
//! Checker (atomicity for registers with unique write tags, as in Lynch, *Distributed
//! Algorithms*, lemma 13.16), over the history of completed operations:
//! 1. every read returns the value written under the tag it returns (or the initial 0);
//! 2. if A completes before B is invoked, tag(B) >= tag(A), strictly if B is a write;
//! 3. a read never returns a write that was invoked after the read completed.
//!
//! Liveness: after the fault phase the network heals, faults stop, crashed replicas
//! restart and paused ones resume; every client must then finish its operations within
//! a bounded simulated time.
//!
//! Scheduled crashes, pauses and partitions are numbered, so `--skip-faults` can switch
//! some off (see [`crate::faults`]).

use crate::faults::{FaultCounter, draw_partition};
use crate::{Failure, RunOptions, RunReport};
use ryu_io::{Disk, DynFile, IoError};
use ryu_sim::{
    DiskFaults, EventQueue, Lifecycle, NetConfig, Next, NodeId, Ratio, SimDisk, SimNetwork, SimRng,
    Trace, next_happening, trace_event,
};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Planted bugs this scenario knows (switched on by `--bug`).
pub const BUGS: &[(&str, &str)] = &[
    (
        "ack-before-sync",
        "a replica acknowledges a store before it is durable",
    ),
    (
        "skip-read-writeback",
        "a read returns without writing its value back to a majority",
    ),
];

const CLIENT_BASE: NodeId = 100;
const RETRY_NS: u64 = 20_000_000;
const LIVENESS_BOUND_NS: u64 = 20_000_000_000;
const RECORD_LEN: usize = 32;
const MAGIC: &[u8; 4] = b"RYUR";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Tag {
    ts: u64,
    client: u64,
}

const INITIAL: Tag = Tag { ts: 0, client: 0 };

#[derive(Debug, Clone)]
enum Msg {
    Query { op: u64 },
    QueryReply { op: u64, tag: Tag, value: u64 },
    Store { op: u64, tag: Tag, value: u64 },
    StoreAck { op: u64 },
}

fn encode(tag: Tag, value: u64) -> [u8; RECORD_LEN] {
    let mut rec = [0u8; RECORD_LEN];
    rec[0..4].copy_from_slice(MAGIC);
    rec[4..12].copy_from_slice(&tag.ts.to_le_bytes());
    rec[12..20].copy_from_slice(&tag.client.to_le_bytes());
    rec[20..28].copy_from_slice(&value.to_le_bytes());
    let crc = crc32fast::hash(&rec[0..28]);
    rec[28..32].copy_from_slice(&crc.to_le_bytes());
    rec
}

fn decode(rec: &[u8; RECORD_LEN]) -> Option<(Tag, u64)> {
    let crc = u32::from_le_bytes(rec[28..32].try_into().expect("4 bytes"));
    if &rec[0..4] != MAGIC || crc != crc32fast::hash(&rec[0..28]) {
        return None;
    }
    let word = |at: usize| u64::from_le_bytes(rec[at..at + 8].try_into().expect("8 bytes"));
    Some((
        Tag {
            ts: word(4),
            client: word(12),
        },
        word(20),
    ))
}

/// Why a replica could not come up.
#[derive(Debug)]
enum OpenError {
    /// Retry later (a transient I/O error).
    Transient(IoError),
    /// The durable state is gone: stop for good.
    Lost(String),
}

#[derive(Debug)]
struct Replica {
    file: DynFile,
    tag: Tag,
    value: u64,
}

impl Replica {
    /// Recover from the disk. A file shorter than one record means initialisation never
    /// completed (nothing was ever acknowledged), so starting fresh is safe.
    fn open(disk: &SimDisk) -> Result<Replica, OpenError> {
        let path = Path::new("register");
        let file = match disk.open(path) {
            Ok(f) => f,
            Err(e) if e.is_not_found() => disk.create(path).map_err(OpenError::Transient)?,
            Err(e) => return Err(OpenError::Transient(e)),
        };
        let len = file.len().map_err(OpenError::Transient)?;
        if (len as usize) < RECORD_LEN {
            file.write_at(0, &encode(INITIAL, 0))
                .map_err(OpenError::Transient)?;
            file.sync_data().map_err(OpenError::Transient)?;
            disk.sync_dir(Path::new("")).map_err(OpenError::Transient)?;
            return Ok(Replica {
                file,
                tag: INITIAL,
                value: 0,
            });
        }
        // A read error may be transient; one that persists over several attempts is a
        // bad sector, and the state behind it is lost.
        let mut rec = [0u8; RECORD_LEN];
        let mut attempts = 0;
        while let Err(e) = file.read_at(0, &mut rec) {
            attempts += 1;
            if attempts == 4 {
                return Err(OpenError::Lost(format!("record unreadable: {e}")));
            }
        }
        let (tag, value) =
            decode(&rec).ok_or_else(|| OpenError::Lost("record fails its checksum".into()))?;
        Ok(Replica { file, tag, value })
    }

    /// Handle one message; an `Err` means the replica is poisoned and must restart.
    fn handle(&mut self, msg: Msg, bugs: &BTreeSet<String>) -> Result<Option<Msg>, IoError> {
        match msg {
            Msg::Query { op } => Ok(Some(Msg::QueryReply {
                op,
                tag: self.tag,
                value: self.value,
            })),
            Msg::Store { op, tag, value } => {
                if tag > self.tag {
                    self.file.write_at(0, &encode(tag, value))?;
                    if !bugs.contains("ack-before-sync") {
                        self.file.sync_data()?;
                    }
                    self.tag = tag;
                    self.value = value;
                }
                Ok(Some(Msg::StoreAck { op }))
            }
            Msg::QueryReply { .. } | Msg::StoreAck { .. } => Ok(None),
        }
    }
}

#[derive(Debug)]
struct ReplicaSlot {
    disk: SimDisk,
    life: Lifecycle,
    replica: Option<Replica>,
    /// Messages that arrived while paused, delivered on resume.
    held: Vec<(NodeId, Msg)>,
    /// Lost its durable state: down for good.
    failed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write(u64),
}

#[derive(Debug, Clone)]
enum Phase {
    Query {
        replies: BTreeMap<NodeId, (Tag, u64)>,
    },
    Store {
        tag: Tag,
        value: u64,
        acks: BTreeSet<NodeId>,
    },
}

#[derive(Debug, Clone)]
struct PendingOp {
    id: u64,
    kind: Kind,
    phase: Phase,
    history: usize,
}

#[derive(Debug)]
struct Client {
    node: NodeId,
    ops_left: u32,
    seq: u64,
    current: Option<PendingOp>,
}

/// One operation in the history.
#[derive(Debug, Clone)]
struct OpRecord {
    client: NodeId,
    kind: Kind,
    invoke_ns: u64,
    /// `(complete time, tag, value)` once it completed.
    done: Option<(u64, Tag, u64)>,
}

#[derive(Debug, Clone, Copy)]
enum Ev {
    ClientNext(usize),
    ClientRetry(usize, u64),
    Fault,
    Heal,
    Restart(usize),
    Resume(usize),
    EndFaults,
    Deadline,
}

/// The knobs of one run, all drawn from the seed (swarm testing).
#[derive(Debug, Clone)]
struct Shape {
    replicas: usize,
    clients: usize,
    ops_per_client: u32,
    fault_interval_ns: u64,
    think_max_ns: u64,
    idle: Ratio,
    fault_phase_ns: u64,
    crashes: bool,
    pauses: bool,
    partitions: bool,
    net: NetConfig,
    disk_faults: DiskFaults,
    /// How many replicas get the silent-corruption faults (at most f).
    corrupting_disks: usize,
}

impl Shape {
    fn draw(rng: &mut SimRng) -> Shape {
        let replicas = if rng.chance(Ratio::new(1, 2)) { 3 } else { 5 };
        let f = (replicas - 1) / 2;
        let mut disk_faults = DiskFaults::draw(rng);
        disk_faults.misdirected_write = Ratio::ZERO;
        Shape {
            replicas,
            clients: rng.between(1, 3) as usize,
            ops_per_client: rng.between(1, 10) as u32,
            fault_interval_ns: rng.between(1, 200) * 1_000_000,
            think_max_ns: rng.between(0, 50) * 1_000_000,
            idle: rng.swarm_ratio(Ratio::new(1, 3), 3, 10),
            fault_phase_ns: rng.between(200, 3000) * 1_000_000,
            crashes: rng.chance(Ratio::new(3, 4)),
            pauses: rng.chance(Ratio::new(1, 2)),
            partitions: rng.chance(Ratio::new(3, 4)),
            net: NetConfig::draw(rng),
            disk_faults,
            corrupting_disks: rng.below(f as u64 + 1) as usize,
        }
    }
}

struct World {
    opts: RunOptions,
    shape: Shape,
    rng: SimRng,
    queue: EventQueue<Ev>,
    net: SimNetwork<Msg>,
    trace: Trace,
    replicas: Vec<ReplicaSlot>,
    clients: Vec<Client>,
    history: Vec<OpRecord>,
    faults_on: bool,
    /// Numbers the faults `inject_fault` decides on (see `crate::faults`).
    faults: FaultCounter,
    next_value: u64,
}

fn replica_node(i: usize) -> NodeId {
    i as NodeId + 1
}

/// Run the scenario for one seed.
pub fn run(opts: &RunOptions) -> RunReport {
    let mut rng = SimRng::new(opts.seed);
    let shape = Shape::draw(&mut rng);
    let mut world = World::new(opts.clone(), shape, rng);
    let result = world.run();
    let counts = world.fault_summary();
    RunReport {
        scenario: "register",
        seed: opts.seed,
        fingerprint: world.trace.fingerprint(),
        events: world.trace.events(),
        sim_ns: world.now(),
        faults: world.faults.scheduled(),
        summary: format!("{}; {counts}", world.shape_summary()),
        result: result.map_err(|message| Failure {
            message,
            trace_tail: world.trace.tail().map(String::from).collect(),
        }),
    }
}

impl World {
    fn new(opts: RunOptions, shape: Shape, mut rng: SimRng) -> World {
        let mut nodes: Vec<NodeId> = (0..shape.replicas).map(replica_node).collect();
        nodes.extend((0..shape.clients).map(|c| CLIENT_BASE + c as NodeId));
        let net = SimNetwork::new(rng.fork("net"), shape.net, &nodes);
        let replicas = (0..shape.replicas)
            .map(|i| {
                let mut faults = shape.disk_faults;
                if i >= shape.corrupting_disks {
                    faults.bit_flip = Ratio::ZERO;
                    faults.latent_sector_error = Ratio::ZERO;
                }
                let disk = SimDisk::with_faults(rng.fork("disk").next_u64(), faults);
                ReplicaSlot {
                    disk,
                    life: Lifecycle::Crashed,
                    replica: None,
                    held: Vec::new(),
                    failed: false,
                }
            })
            .collect();
        let clients = (0..shape.clients)
            .map(|c| Client {
                node: CLIENT_BASE + c as NodeId,
                ops_left: shape.ops_per_client,
                seq: 0,
                current: None,
            })
            .collect();
        let mut trace = Trace::new(opts.trace_tail_lines);
        trace.set_echo(opts.echo_trace);
        World {
            opts,
            shape,
            rng,
            queue: EventQueue::new(),
            net,
            trace,
            replicas,
            clients,
            history: Vec::new(),
            faults_on: true,
            faults: FaultCounter::default(),
            next_value: 1,
        }
    }

    fn shape_summary(&self) -> String {
        let s = &self.shape;
        format!(
            "replicas={} clients={} ops={} crashes={} pauses={} partitions={} loss={} dup={} reorder={} corrupting_disks={}",
            s.replicas,
            s.clients,
            s.ops_per_client,
            s.crashes,
            s.pauses,
            s.partitions,
            s.net.loss,
            s.net.duplicate,
            s.net.reorder,
            s.corrupting_disks
        )
    }

    fn fault_summary(&self) -> String {
        let mut total = ryu_sim::FaultCounts::default();
        for r in &self.replicas {
            let c = r.disk.fault_counts();
            total.crashes += c.crashes;
            total.sync_errors += c.sync_errors;
            total.write_errors += c.write_errors;
            total.read_errors += c.read_errors;
            total.bit_flips += c.bit_flips;
            total.latent_sector_errors += c.latent_sector_errors;
        }
        let n = self.net.counts();
        format!(
            "disk: crashes={} write_err={} sync_err={} read_err={} bit_flips={} latent={}; net: sent={} lost={} dup={} reordered={} cut={}",
            total.crashes,
            total.write_errors,
            total.sync_errors,
            total.read_errors,
            total.bit_flips,
            total.latent_sector_errors,
            n.sent,
            n.lost,
            n.duplicated,
            n.reordered,
            n.cut_at_send + n.cut_in_flight
        )
    }

    fn now(&self) -> u64 {
        self.queue.now_ns()
    }

    fn run(&mut self) -> Result<(), String> {
        for i in 0..self.replicas.len() {
            self.restart(i);
        }
        for c in 0..self.clients.len() {
            let start = self.rng.between(0, 50_000_000);
            self.queue.schedule_in(start, Ev::ClientNext(c));
        }
        self.queue
            .schedule_in(self.shape.fault_interval_ns, Ev::Fault);
        self.queue
            .schedule_in(self.shape.fault_phase_ns, Ev::EndFaults);
        loop {
            match next_happening(&mut self.queue, &mut self.net) {
                None => return Err("the world stopped: no event left".into()),
                Some(Next::Deliver(d)) => self.deliver(d.from, d.to, d.msg),
                Some(Next::Dropped(_)) => {}
                Some(Next::Event(_, ev)) => {
                    if self.handle(ev)? {
                        break;
                    }
                }
            }
        }
        check_history(&self.history)
    }

    /// Returns true when the run is over.
    fn handle(&mut self, ev: Ev) -> Result<bool, String> {
        match ev {
            Ev::ClientNext(c) => self.client_next(c),
            Ev::ClientRetry(c, op) => self.client_retry(c, op),
            Ev::Fault => {
                if self.faults_on {
                    self.inject_fault();
                    self.queue
                        .schedule_in(self.shape.fault_interval_ns, Ev::Fault);
                }
            }
            Ev::Heal => {
                trace_event!(self.trace, self.now(), None, "heal", "");
                self.net.heal();
            }
            Ev::Restart(i) => self.restart(i),
            Ev::Resume(i) => self.resume(i),
            Ev::EndFaults => self.end_faults(),
            Ev::Deadline => {
                let unfinished: Vec<NodeId> = self
                    .clients
                    .iter()
                    .filter(|c| c.ops_left > 0 || c.current.is_some())
                    .map(|c| c.node)
                    .collect();
                if !unfinished.is_empty() {
                    return Err(format!(
                        "liveness: clients {unfinished:?} still unfinished {} s after faults healed",
                        LIVENESS_BOUND_NS / 1_000_000_000
                    ));
                }
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn end_faults(&mut self) {
        trace_event!(
            self.trace,
            self.now(),
            None,
            "liveness-phase",
            "heal everything"
        );
        self.faults_on = false;
        self.net.heal_all_faults();
        for i in 0..self.replicas.len() {
            self.replicas[i].disk.set_faults(DiskFaults::default());
            match self.replicas[i].life {
                Lifecycle::Paused => self.resume(i),
                Lifecycle::Crashed if !self.replicas[i].failed => self.restart(i),
                _ => {}
            }
        }
        for c in 0..self.clients.len() {
            self.queue.schedule_in(0, Ev::ClientNext(c));
        }
        self.queue.schedule_in(LIVENESS_BOUND_NS, Ev::Deadline);
    }

    fn down_count(&self) -> usize {
        self.replicas
            .iter()
            .filter(|r| r.life != Lifecycle::Up || r.failed)
            .count()
    }

    fn inject_fault(&mut self) {
        let f = (self.shape.replicas - 1) / 2;
        let choice = self.rng.below(3);
        let now = self.now();
        match choice {
            0 if self.shape.crashes && self.down_count() < f => {
                let up: Vec<usize> = (0..self.replicas.len())
                    .filter(|&i| self.replicas[i].life.is_up())
                    .collect();
                if !up.is_empty() {
                    let i = up[self.rng.index(up.len())];
                    if self.fault_enabled(Some(replica_node(i)), "crash scheduled crash") {
                        self.crash(i, "scheduled crash");
                    } else {
                        self.draw_restart_delay_ns(i);
                    }
                }
            }
            1 if self.shape.pauses && self.down_count() < f => {
                let up: Vec<usize> = (0..self.replicas.len())
                    .filter(|&i| self.replicas[i].life.is_up())
                    .collect();
                if !up.is_empty() {
                    let i = up[self.rng.index(up.len())];
                    let enabled = self.fault_enabled(Some(replica_node(i)), "pause");
                    // Drawn for a skipped pause too, to keep the random stream.
                    let d = self.rng.between(10, 300) * 1_000_000;
                    if enabled {
                        trace_event!(self.trace, now, Some(replica_node(i)), "pause", "");
                        self.replicas[i].life = Lifecycle::Paused;
                        self.queue.schedule_in(d, Ev::Resume(i));
                    }
                }
            }
            2 if self.shape.partitions => self.partition(),
            _ => {}
        }
    }

    fn partition(&mut self) {
        let now = self.now();
        let mut nodes: Vec<NodeId> = (0..self.replicas.len()).map(replica_node).collect();
        nodes.extend(self.clients.iter().map(|c| c.node));
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
        let d = self.rng.between(20, 800) * 1_000_000;
        self.queue.schedule_in(d, Ev::Heal);
    }

    fn crash(&mut self, i: usize, why: &str) {
        let now = self.now();
        let node = replica_node(i);
        trace_event!(self.trace, now, Some(node), "crash", "{why}");
        let slot = &mut self.replicas[i];
        slot.disk.crash();
        slot.replica = None;
        slot.held.clear();
        slot.life = Lifecycle::Crashed;
        self.net.drop_node_traffic(node);
        if let Some(d) = self.draw_restart_delay_ns(i) {
            self.queue.schedule_in(d, Ev::Restart(i));
        }
    }

    /// How long a crashed replica stays down (`None`: a failed one stays down). A
    /// skipped crash makes this draw too.
    fn draw_restart_delay_ns(&mut self, i: usize) -> Option<u64> {
        (!self.replicas[i].failed).then(|| self.rng.between(10, 500) * 1_000_000)
    }

    /// Number the fault just decided on. `false`: the run skips it (traced as such);
    /// the caller still makes the fault's remaining draws.
    fn fault_enabled(&mut self, node: Option<NodeId>, what: &str) -> bool {
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

    fn restart(&mut self, i: usize) {
        let now = self.now();
        let node = replica_node(i);
        if self.replicas[i].life != Lifecycle::Crashed || self.replicas[i].failed {
            return;
        }
        match Replica::open(&self.replicas[i].disk) {
            Ok(r) => {
                trace_event!(
                    self.trace,
                    now,
                    Some(node),
                    "restart",
                    "tag={:?} value={}",
                    r.tag,
                    r.value
                );
                self.replicas[i].replica = Some(r);
                self.replicas[i].life = Lifecycle::Up;
            }
            Err(OpenError::Transient(e)) => {
                trace_event!(self.trace, now, Some(node), "restart-failed", "{e}");
                // A half-done initialisation may be on disk: crash semantics apply.
                self.replicas[i].disk.crash();
                self.queue.schedule_in(50_000_000, Ev::Restart(i));
            }
            Err(OpenError::Lost(why)) => {
                trace_event!(self.trace, now, Some(node), "fail-stop", "{why}");
                self.replicas[i].failed = true;
            }
        }
    }

    fn resume(&mut self, i: usize) {
        if self.replicas[i].life != Lifecycle::Paused {
            return;
        }
        trace_event!(self.trace, self.now(), Some(replica_node(i)), "resume", "");
        self.replicas[i].life = Lifecycle::Up;
        for (from, msg) in std::mem::take(&mut self.replicas[i].held) {
            self.deliver(from, replica_node(i), msg);
        }
    }

    fn send(&mut self, from: NodeId, to: NodeId, msg: Msg) {
        trace_event!(self.trace, self.now(), Some(from), "send", "->{to} {msg:?}");
        self.net.send(self.now(), from, to, msg);
    }

    fn deliver(&mut self, from: NodeId, to: NodeId, msg: Msg) {
        let now = self.now();
        if to >= CLIENT_BASE {
            trace_event!(self.trace, now, Some(to), "recv", "<-{from} {msg:?}");
            self.client_receive((to - CLIENT_BASE) as usize, from, msg);
            return;
        }
        let i = (to - 1) as usize;
        match self.replicas[i].life {
            Lifecycle::Crashed => return,
            Lifecycle::Paused => {
                self.replicas[i].held.push((from, msg));
                return;
            }
            Lifecycle::Up => {}
        }
        trace_event!(self.trace, now, Some(to), "recv", "<-{from} {msg:?}");
        let replica = self.replicas[i]
            .replica
            .as_mut()
            .expect("an up replica has state");
        match replica.handle(msg, &self.opts.bugs) {
            Ok(Some(reply)) => self.send(to, from, reply),
            Ok(None) => {}
            Err(e) => self.crash(i, &format!("poisoned by {e}")),
        }
    }

    fn replica_order(&self) -> Vec<NodeId> {
        let ids: Vec<NodeId> = (0..self.replicas.len()).map(replica_node).collect();
        if self.opts.inject_nondeterminism {
            return hash_order(&ids);
        }
        ids
    }

    fn broadcast(&mut self, c: usize) {
        let Some(op) = self.clients[c].current.clone() else {
            return;
        };
        let from = self.clients[c].node;
        for to in self.replica_order() {
            let msg = match &op.phase {
                Phase::Query { replies } if !replies.contains_key(&to) => Msg::Query { op: op.id },
                Phase::Store { tag, value, acks } if !acks.contains(&to) => Msg::Store {
                    op: op.id,
                    tag: *tag,
                    value: *value,
                },
                _ => continue,
            };
            self.send(from, to, msg);
        }
    }

    fn client_next(&mut self, c: usize) {
        let faults_on = self.faults_on;
        let client = &mut self.clients[c];
        // During the fault phase clients work without pause; afterwards each finishes
        // `ops_per_client` more operations, which liveness requires.
        if client.current.is_some() || (!faults_on && client.ops_left == 0) {
            return;
        }
        if !faults_on {
            client.ops_left -= 1;
        }
        client.seq += 1;
        let id = client.node * 1_000_000 + client.seq;
        let kind = if self.rng.chance(Ratio::new(1, 2)) {
            let v = self.next_value;
            self.next_value += 1;
            Kind::Write(v)
        } else {
            Kind::Read
        };
        let now = self.now();
        let node = self.clients[c].node;
        trace_event!(self.trace, now, Some(node), "invoke", "op={id} {kind:?}");
        self.history.push(OpRecord {
            client: node,
            kind,
            invoke_ns: now,
            done: None,
        });
        self.clients[c].current = Some(PendingOp {
            id,
            kind,
            phase: Phase::Query {
                replies: BTreeMap::new(),
            },
            history: self.history.len() - 1,
        });
        self.broadcast(c);
        self.queue.schedule_in(RETRY_NS, Ev::ClientRetry(c, id));
    }

    fn client_retry(&mut self, c: usize, op: u64) {
        if self.clients[c].current.as_ref().is_some_and(|p| p.id == op) {
            self.broadcast(c);
            self.queue.schedule_in(RETRY_NS, Ev::ClientRetry(c, op));
        }
    }

    fn client_receive(&mut self, c: usize, from: NodeId, msg: Msg) {
        let majority = self.shape.replicas / 2 + 1;
        let node = self.clients[c].node;
        let Some(op) = self.clients[c].current.as_mut() else {
            return;
        };
        match (&mut op.phase, msg) {
            (Phase::Query { replies }, Msg::QueryReply { op: id, tag, value }) if id == op.id => {
                replies.insert(from, (tag, value));
                if replies.len() < majority {
                    return;
                }
                let (max_tag, max_value) = *replies.values().max().expect("a majority replied");
                let (tag, value) = match op.kind {
                    Kind::Write(v) => (
                        Tag {
                            ts: max_tag.ts + 1,
                            client: node,
                        },
                        v,
                    ),
                    Kind::Read => (max_tag, max_value),
                };
                if op.kind == Kind::Read && self.opts.bugs.contains("skip-read-writeback") {
                    self.complete(c, tag, value);
                    return;
                }
                op.phase = Phase::Store {
                    tag,
                    value,
                    acks: BTreeSet::new(),
                };
                self.broadcast(c);
            }
            (Phase::Store { tag, value, acks }, Msg::StoreAck { op: id }) if id == op.id => {
                acks.insert(from);
                if acks.len() >= majority {
                    let (tag, value) = (*tag, *value);
                    self.complete(c, tag, value);
                }
            }
            _ => {}
        }
    }

    fn complete(&mut self, c: usize, tag: Tag, value: u64) {
        let now = self.now();
        let op = self.clients[c]
            .current
            .take()
            .expect("completing an op in flight");
        trace_event!(
            self.trace,
            now,
            Some(self.clients[c].node),
            "complete",
            "op={} tag={tag:?} value={value}",
            op.id
        );
        self.history[op.history].done = Some((now, tag, value));
        // Mostly busy, sometimes idle for a while: quiet periods let faults pile up
        // with no newer write to paper over what they broke.
        let think = if self.rng.chance(self.shape.idle) {
            self.rng.between(100, 1000) * 1_000_000
        } else {
            self.rng.between(0, self.shape.think_max_ns)
        };
        self.queue.schedule_in(think, Ev::ClientNext(c));
    }
}

/// The deliberately nondeterministic component used to prove the determinism check has
/// teeth: it orders replicas by iterating a `HashMap`, whose order is seeded by the OS
/// per map. Never used unless `inject_nondeterminism` is set.
#[allow(clippy::disallowed_types)]
fn hash_order(ids: &[NodeId]) -> Vec<NodeId> {
    let map: std::collections::HashMap<NodeId, ()> = ids.iter().map(|&i| (i, ())).collect();
    map.into_keys().collect()
}

/// Check the history for atomicity (see the module doc).
fn check_history(history: &[OpRecord]) -> Result<(), String> {
    let mut writes: BTreeMap<Tag, &OpRecord> = BTreeMap::new();
    for op in history {
        if let (Kind::Write(_), Some((_, tag, _))) = (op.kind, op.done)
            && writes.insert(tag, op).is_some()
        {
            return Err(format!("two writes completed with tag {tag:?}"));
        }
    }
    // Writes that were invoked but may not have completed also define tags; find the
    // write behind a read by value (values are unique per write).
    let write_by_value: BTreeMap<u64, &OpRecord> = history
        .iter()
        .filter_map(|op| match op.kind {
            Kind::Write(v) => Some((v, op)),
            Kind::Read => None,
        })
        .collect();
    let done: Vec<(&OpRecord, u64, Tag, u64)> = history
        .iter()
        .filter_map(|op| op.done.map(|(t, tag, v)| (op, t, tag, v)))
        .collect();
    for &(op, complete_ns, tag, value) in &done {
        if op.kind == Kind::Read {
            if tag == INITIAL {
                if value != 0 {
                    return Err(format!("read returned value {value} under the initial tag"));
                }
                continue;
            }
            let Some(w) = write_by_value.get(&value) else {
                return Err(format!(
                    "read by {} returned value {value} that nobody wrote",
                    op.client
                ));
            };
            if let Some((_, wtag, _)) = w.done
                && wtag != tag
            {
                return Err(format!(
                    "read returned value {value} under tag {tag:?}, written under {wtag:?}"
                ));
            }
            if w.invoke_ns > complete_ns {
                return Err(format!(
                    "read completing at {complete_ns} returned a write invoked at {}",
                    w.invoke_ns
                ));
            }
        }
    }
    for &(a, a_done, a_tag, _) in &done {
        for &(b, _, b_tag, _) in &done {
            if a_done >= b.invoke_ns {
                continue;
            }
            let ok = match b.kind {
                Kind::Write(_) => b_tag > a_tag,
                Kind::Read => b_tag >= a_tag,
            };
            if !ok {
                return Err(format!(
                    "stale result: {:?} by {} completed at {a_done} with tag {a_tag:?}, then {:?} by {} invoked at {} got tag {b_tag:?}",
                    a.kind, a.client, b.kind, b.client, b.invoke_ns
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(kind: Kind, invoke_ns: u64, done: Option<(u64, Tag, u64)>) -> OpRecord {
        OpRecord {
            client: 100,
            kind,
            invoke_ns,
            done,
        }
    }

    #[test]
    fn checker_accepts_a_linearizable_history() {
        let t1 = Tag { ts: 1, client: 100 };
        let h = vec![
            op(Kind::Write(5), 0, Some((10, t1, 5))),
            op(Kind::Read, 11, Some((20, t1, 5))),
            op(Kind::Read, 5, Some((8, INITIAL, 0))), // concurrent with the write
        ];
        assert_eq!(check_history(&h), Ok(()));
    }

    #[test]
    fn checker_rejects_a_stale_read() {
        let t1 = Tag { ts: 1, client: 100 };
        let h = vec![
            op(Kind::Write(5), 0, Some((10, t1, 5))),
            op(Kind::Read, 11, Some((20, INITIAL, 0))),
        ];
        assert!(check_history(&h).unwrap_err().contains("stale result"));
    }

    #[test]
    fn checker_rejects_a_read_from_the_future_and_an_invented_value() {
        let t1 = Tag { ts: 1, client: 100 };
        let h = vec![
            op(Kind::Read, 0, Some((5, t1, 9))),
            op(Kind::Write(9), 6, Some((10, t1, 9))),
        ];
        assert!(check_history(&h).unwrap_err().contains("invoked at"));
        let h = vec![op(Kind::Read, 0, Some((5, t1, 42)))];
        assert!(check_history(&h).unwrap_err().contains("nobody wrote"));
    }

    #[test]
    fn record_round_trips_and_detects_a_flipped_bit() {
        let rec = encode(Tag { ts: 3, client: 101 }, 77);
        assert_eq!(decode(&rec), Some((Tag { ts: 3, client: 101 }, 77)));
        for bit in 0..RECORD_LEN * 8 {
            let mut bad = rec;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(decode(&bad), None, "bit {bit}");
        }
    }
}
