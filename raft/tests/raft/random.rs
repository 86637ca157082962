//! Seeded random networks. Each seed draws its own options (pre-vote, CheckQuorum,
//! lease reads, flow-control caps: "swarm" testing) and then a schedule of events:
//! message delivery in random order (reordering), loss, duplication, delays,
//! partitions, ticks, proposals, reads, membership changes, leadership transfers,
//! compaction, clean restarts and crashes in the middle of handling a `Ready` (after
//! the immediate messages left, before anything was persisted).
//!
//! After every step the checkers assert, over what nodes report and hold durably:
//! - election safety: at most one leader per term (§5.2);
//! - leader completeness: a new leader holds every entry applied anywhere (§5.4);
//! - state machine safety: every node applies the same entry at each index, and
//!   its state equals the committed prefix (§5.4.3);
//! - log matching: two durable logs that agree on an entry's term agree on every
//!   entry up to it (§5.3);
//! - linearizable reads: a read is served at an index at least the highest commit
//!   index any node knew when the read was requested (thesis §6.4).
//!
//! A liveness phase follows: the network heals and must elect a leader and commit a
//! fresh proposal on a majority within a bounded number of steps.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ryu_raft::{
    ConfChange, ConfChangeKind, ConfChangeSingle, ConfChangeTransition, ConfState, Config, Entry,
    EntryKind, Index, LeaseRead, Message, NodeId, Role, Storage, Term,
};

use crate::cluster::{Cluster, Node};

const VOTERS: [u64; 3] = [1, 2, 3];
const LEARNERS: [u64; 2] = [4, 5];

/// Options drawn from the seed.
#[derive(Clone, Debug)]
pub struct Options {
    pub steps: usize,
    pub pre_vote: bool,
    pub check_quorum: bool,
    pub lease: bool,
    pub drop_per_mille: u32,
    pub dup_per_mille: u32,
    pub max_delay_steps: u64,
    pub max_inflight_msgs: usize,
    pub max_msg_bytes: u64,
    pub heartbeat_tick: u64,
}

impl Options {
    pub fn draw(rng: &mut ChaCha8Rng, steps: usize) -> Options {
        let check_quorum = rng.random_bool(0.7);
        Options {
            steps,
            pre_vote: rng.random_bool(0.7),
            check_quorum,
            lease: check_quorum && rng.random_bool(0.4),
            drop_per_mille: rng.random_range(0..100),
            dup_per_mille: rng.random_range(0..50),
            max_delay_steps: rng.random_range(1..20),
            max_inflight_msgs: rng.random_range(1..8),
            // Often one entry per append, so old-term entries travel without the
            // new leader's no-op (the Figure 8 interleaving needs that).
            max_msg_bytes: if rng.random_bool(0.4) {
                1
            } else {
                rng.random_range(1..200)
            },
            heartbeat_tick: rng.random_range(1..4),
        }
    }
}

/// One violation, with what the seed needs to reproduce it.
pub type Violation = String;

struct Sim {
    cluster: Cluster,
    rng: ChaCha8Rng,
    opts: Options,
    now: u64,
    /// (due step, message), unordered: delivery picks any due message.
    in_flight: Vec<(u64, Message)>,
    partitioned: bool,
    leaders: BTreeMap<Term, u64>,
    /// Every entry applied anywhere, by index.
    applied: BTreeMap<Index, Entry>,
    /// Read context -> the highest commit index known when it was requested.
    reads_required: BTreeMap<Vec<u8>, Index>,
    reads_served: usize,
    snapshots_installed: usize,
    next_value: u64,
}

#[derive(Debug, Default)]
pub struct Stats {
    pub applied: usize,
    pub leaders: usize,
    pub reads_served: usize,
    pub snapshots_installed: usize,
    pub conf_changes: usize,
}

pub fn run_seed(seed: u64, steps: usize, tweak: impl Fn(&mut Config)) -> Result<Stats, Violation> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let opts = Options::draw(&mut rng, steps);
    let mut cluster = Cluster::new();
    let mut cs = ConfState::with_voters(VOTERS);
    cs.learners = LEARNERS.iter().copied().map(NodeId).collect();
    for id in VOTERS.iter().chain(LEARNERS.iter()) {
        let mut cfg = Config::new(*id);
        cfg.election_tick = 10;
        cfg.heartbeat_tick = opts.heartbeat_tick;
        cfg.pre_vote = opts.pre_vote;
        cfg.check_quorum = opts.check_quorum;
        cfg.lease_read = opts.lease.then_some(LeaseRead {
            max_clock_drift_ticks: 1,
        });
        cfg.max_inflight_msgs = opts.max_inflight_msgs;
        cfg.max_size_per_msg_bytes = opts.max_msg_bytes;
        cfg.max_snapshot_chunk_bytes = 16;
        tweak(&mut cfg);
        cluster.add_node(cfg, cs.clone());
    }
    let mut sim = Sim {
        cluster,
        rng,
        opts,
        now: 0,
        in_flight: Vec::new(),
        partitioned: false,
        leaders: BTreeMap::new(),
        applied: BTreeMap::new(),
        reads_required: BTreeMap::new(),
        reads_served: 0,
        snapshots_installed: 0,
        next_value: 0,
    };
    for _ in 0..sim.opts.steps {
        sim.step()
            .map_err(|e| format!("seed {seed} step {} {:?}: {e}", sim.now, sim.opts))?;
    }
    sim.check_logs()
        .map_err(|e| format!("seed {seed} end: {e}"))?;
    sim.liveness()
        .map_err(|e| format!("seed {seed} liveness: {e}"))?;
    let conf_changes = sim
        .applied
        .values()
        .filter(|e| e.kind == EntryKind::ConfChange)
        .count();
    Ok(Stats {
        applied: sim.applied.len(),
        leaders: sim.leaders.len(),
        reads_served: sim.reads_served,
        snapshots_installed: sim.snapshots_installed,
        conf_changes,
    })
}

impl Sim {
    fn ids(&self) -> Vec<u64> {
        self.cluster.ids()
    }

    fn random_node(&mut self) -> u64 {
        let ids = self.ids();
        ids[self.rng.random_range(0..ids.len())]
    }

    fn step(&mut self) -> Result<(), Violation> {
        self.now += 1;
        let roll = self.rng.random_range(0..100);
        match roll {
            0..50 => self.deliver_one(),
            50..60 => self.tick_all(),
            60..70 => {
                if self.opts.lease {
                    self.tick_all(); // Lease reads assume bounded drift: no skew.
                } else {
                    let id = self.random_node();
                    self.cluster.node_mut(id).raw.tick();
                }
            }
            70..80 => self.propose(),
            80..84 => self.read()?,
            84..86 => self.conf_change(),
            86..87 => self.transfer(),
            87..88 => self.partition(),
            88..91 => self.cluster.heal(),
            91..92 => {
                let id = self.random_node();
                self.cluster.restart(id);
            }
            92..94 => self.crash_mid_ready()?,
            94..97 => self.compact(),
            _ => self.deliver_one(),
        }
        self.process_all()?;
        if self.now.is_multiple_of(25) {
            self.check_logs()?;
        }
        Ok(())
    }

    fn deliver_one(&mut self) {
        let due: Vec<usize> = (0..self.in_flight.len())
            .filter(|i| self.in_flight[*i].0 <= self.now)
            .collect();
        if due.is_empty() {
            return;
        }
        let pick = due[self.rng.random_range(0..due.len())];
        let (_, m) = self.in_flight.swap_remove(pick);
        if self.cluster.cut.contains(&(m.from.0, m.to.0)) {
            return;
        }
        self.cluster.node_mut(m.to.0).raw.step(m);
    }

    fn tick_all(&mut self) {
        for id in self.ids() {
            self.cluster.node_mut(id).raw.tick();
        }
    }

    fn propose(&mut self) {
        let id = self.cluster.leader().unwrap_or_else(|| self.random_node());
        self.next_value += 1;
        let value = format!("v{}", self.next_value).into_bytes();
        let _ = self.cluster.node_mut(id).raw.propose(value);
    }

    fn read(&mut self) -> Result<(), Violation> {
        let id = self.random_node();
        let required = self
            .ids()
            .iter()
            .map(|i| self.cluster.node(*i).raw.hard_state().commit)
            .max()
            .unwrap_or(0);
        self.next_value += 1;
        let ctx = format!("r{}", self.next_value).into_bytes();
        if self
            .cluster
            .node_mut(id)
            .raw
            .read_index(ctx.clone())
            .is_ok()
        {
            self.reads_required.insert(ctx, required);
        }
        Ok(())
    }

    /// Toggles learners 4 and 5 between voter and learner: one at a time, or both
    /// at once through joint consensus (left automatically, or explicitly by a
    /// later call here).
    fn conf_change(&mut self) {
        let Some(leader) = self.cluster.leader() else {
            return;
        };
        let cs = self.cluster.node(leader).raw.storage().conf_state().clone();
        let toggle = |id: u64| {
            let kind = if cs.voters.contains(&NodeId(id)) {
                ConfChangeKind::AddLearner
            } else {
                ConfChangeKind::AddVoter
            };
            ConfChangeSingle {
                kind,
                node: NodeId(id),
            }
        };
        let cc = if cs.is_joint() {
            ConfChange::leave_joint()
        } else if self.rng.random_bool(0.5) {
            let target = LEARNERS[self.rng.random_range(0..LEARNERS.len())];
            ConfChange {
                transition: ConfChangeTransition::Auto,
                changes: vec![toggle(target)],
            }
        } else {
            let transition = if self.rng.random_bool(0.5) {
                ConfChangeTransition::JointImplicit
            } else {
                ConfChangeTransition::JointExplicit
            };
            ConfChange {
                transition,
                changes: LEARNERS.iter().map(|id| toggle(*id)).collect(),
            }
        };
        let _ = self.cluster.node_mut(leader).raw.propose_conf_change(&cc);
    }

    fn transfer(&mut self) {
        let Some(leader) = self.cluster.leader() else {
            return;
        };
        let target = VOTERS[self.rng.random_range(0..VOTERS.len())];
        let _ = self
            .cluster
            .node_mut(leader)
            .raw
            .transfer_leader(NodeId(target));
    }

    /// Either isolates the current leader (forcing a change of leadership while
    /// it may hold uncommitted entries) or splits the nodes at random.
    fn partition(&mut self) {
        self.cluster.heal();
        if let Some(leader) = self.cluster.leader()
            && self.rng.random_bool(0.5)
        {
            self.cluster.isolate(leader);
            self.partitioned = true;
            return;
        }
        let ids = self.ids();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for id in ids {
            if self.rng.random_bool(0.5) {
                a.push(id)
            } else {
                b.push(id)
            }
        }
        self.cluster.partition(&a, &b);
        self.partitioned = true;
    }

    fn compact(&mut self) {
        let id = self.random_node();
        let node = self.cluster.node_mut(id);
        let first = node.raw.storage().first_index().unwrap();
        if node.applied_index >= first {
            let upto = midpoint(first, node.applied_index);
            node.compact(upto);
        }
    }

    /// A node handles one event (a due message for it, or a tick), takes its
    /// Ready, sends the messages that may leave at once, and crashes before
    /// persisting anything.
    fn crash_mid_ready(&mut self) -> Result<(), Violation> {
        let id = self.random_node();
        let due = (0..self.in_flight.len())
            .find(|i| self.in_flight[*i].0 <= self.now && self.in_flight[*i].1.to.0 == id);
        match due {
            Some(i) => {
                let (_, m) = self.in_flight.swap_remove(i);
                if !self.cluster.cut.contains(&(m.from.0, m.to.0)) {
                    self.cluster.node_mut(id).raw.step(m);
                }
            }
            // With lease reads every clock ticks together (bounded drift).
            None if !self.opts.lease => self.cluster.node_mut(id).raw.tick(),
            None => {}
        }
        let node = self.cluster.node_mut(id);
        if node.raw.has_ready() {
            let rd = node.raw.ready();
            for m in rd.messages {
                self.send(m);
            }
        }
        self.cluster.restart(id);
        Ok(())
    }

    fn send(&mut self, m: Message) {
        if self.rng.random_range(0..1000) < self.opts.drop_per_mille {
            return;
        }
        let copies = if self.rng.random_range(0..1000) < self.opts.dup_per_mille {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let due = self.now + self.rng.random_range(0..self.opts.max_delay_steps);
            self.in_flight.push((due, m.clone()));
        }
    }

    fn process_all(&mut self) -> Result<(), Violation> {
        let ids = self.ids();
        let readies = self.cluster.process_ready(&ids);
        for m in std::mem::take(&mut self.cluster.queue) {
            self.send(m);
        }
        for (id, rd) in readies {
            self.snapshots_installed += usize::from(rd.snapshot.is_some());
            if let Some(ss) = rd.soft_state
                && ss.role == Role::Leader
            {
                self.on_new_leader(id)?;
            }
            for e in &rd.committed_entries {
                self.on_applied(id, e)?;
            }
            for rs in &rd.read_states {
                let required = self.reads_required.get(&rs.context).copied().unwrap_or(0);
                if rs.index < required {
                    return Err(format!(
                        "stale read on {id}: served at {} but {} was committed before it started",
                        rs.index, required
                    ));
                }
                self.reads_served += 1;
            }
            self.cluster.node_mut(id).read_states.clear();
        }
        Ok(())
    }

    fn on_new_leader(&mut self, id: u64) -> Result<(), Violation> {
        let term = self.cluster.node(id).raw.hard_state().term;
        let prev = *self.leaders.entry(term).or_insert(id);
        if prev != id {
            return Err(format!(
                "election safety: {prev} and {id} both lead term {term}"
            ));
        }
        // Leader completeness: every applied entry is in the new leader's log.
        let storage = self.cluster.node(id).raw.storage();
        let raft = self.cluster.node(id).raw.raft();
        let first = storage.first_index().unwrap();
        for (index, e) in self.applied.range(first..) {
            let term_here = raft.log.term(*index).ok();
            if term_here != Some(e.term) {
                return Err(format!(
                    "leader completeness: leader {id} of term {term} has {term_here:?} at {index}, committed {:?}",
                    e
                ));
            }
        }
        Ok(())
    }

    fn on_applied(&mut self, id: u64, e: &Entry) -> Result<(), Violation> {
        match self.applied.get(&e.index) {
            Some(prev) if prev != e => Err(format!(
                "state machine safety: {id} applied {e:?} at {} where {prev:?} was applied",
                e.index
            )),
            Some(_) => Ok(()),
            None => {
                self.applied.insert(e.index, e.clone());
                Ok(())
            }
        }
    }

    /// Log matching over durable logs, and every state machine against the
    /// committed prefix.
    fn check_logs(&self) -> Result<(), Violation> {
        let ids = self.ids();
        for (i, a) in ids.iter().enumerate() {
            for b in &ids[i + 1..] {
                log_matching(self.cluster.node(*a), self.cluster.node(*b))
                    .map_err(|e| format!("log matching between {a} and {b}: {e}"))?;
            }
            let node = self.cluster.node(*a);
            let want: Vec<Vec<u8>> = self
                .applied
                .range(..=node.applied_index)
                .filter(|(_, e)| e.kind == EntryKind::Normal)
                .map(|(_, e)| e.data.clone())
                .collect();
            if node.state != want {
                return Err(format!(
                    "state machine of {a} at {} differs from the committed prefix",
                    node.applied_index
                ));
            }
        }
        Ok(())
    }

    /// Heal everything; a leader must emerge and commit a new entry on a majority.
    fn liveness(&mut self) -> Result<(), Violation> {
        self.cluster.heal();
        self.opts.drop_per_mille = 0;
        self.opts.dup_per_mille = 0;
        let value = b"liveness".to_vec();
        let mut proposed = false;
        for round in 0..4000u32 {
            self.now += 1;
            // Bounded: a buggy node may ping-pong forever.
            for _ in 0..200 {
                if self.in_flight.is_empty() {
                    break;
                }
                let (_, m) = self.in_flight.remove(0);
                self.cluster.node_mut(m.to.0).raw.step(m);
                self.process_all()?;
            }
            if round.is_multiple_of(3) {
                self.tick_all();
            }
            self.process_all()?;
            if let Some(leader) = self.cluster.leader()
                && (!proposed || round.is_multiple_of(200))
            {
                proposed |= self
                    .cluster
                    .node_mut(leader)
                    .raw
                    .propose(value.clone())
                    .is_ok();
            }
            let done = VOTERS
                .iter()
                .filter(|id| self.cluster.node(**id).state.contains(&value))
                .count();
            if done >= 2 {
                return self.check_logs();
            }
        }
        Err("no progress after healing".into())
    }
}

fn midpoint(lo: Index, hi: Index) -> Index {
    lo + (hi - lo) / 2
}

fn log_matching(a: &Node, b: &Node) -> Result<(), String> {
    let (sa, sb) = (a.raw.storage(), b.raw.storage());
    let lo = sa.first_index().unwrap().max(sb.first_index().unwrap());
    let hi = sa.last_index().unwrap().min(sb.last_index().unwrap());
    if lo > hi {
        return Ok(());
    }
    let ea = sa.entries(lo, hi + 1, u64::MAX).unwrap();
    let eb = sb.entries(lo, hi + 1, u64::MAX).unwrap();
    // The highest index where the terms agree: everything up to it must match.
    let Some(top) = (0..ea.len()).rev().find(|i| ea[*i].term == eb[*i].term) else {
        return Ok(());
    };
    for i in 0..=top {
        if ea[i] != eb[i] {
            return Err(format!(
                "agree on {:?} but differ at {:?} vs {:?}",
                ea[top], ea[i], eb[i]
            ));
        }
    }
    Ok(())
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Many seeds with faults and no violation (RAFT_SEEDS and RAFT_STEPS override
/// the default 1000 seeds of 1500 steps).
#[test]
fn random_clusters_are_safe() {
    let seeds = env_or("RAFT_SEEDS", 1000);
    let steps = env_or("RAFT_STEPS", 1500) as usize;
    let mut total = Stats::default();
    for seed in 0..seeds {
        match run_seed(seed, steps, |_| {}) {
            Ok(s) => {
                total.applied += s.applied;
                total.leaders += s.leaders;
                total.reads_served += s.reads_served;
                total.snapshots_installed += s.snapshots_installed;
                total.conf_changes += s.conf_changes;
            }
            Err(v) => panic!(
                "{v}\nreplay: RAFT_SEED={seed} RAFT_STEPS={steps} cargo test -p ryu-raft --test raft random::replay"
            ),
        }
    }
    // The schedule must actually exercise the protocol, not idle.
    eprintln!("{seeds} seeds: {total:?}");
    let n = seeds as usize;
    assert!(total.applied > n * 20, "too few entries applied: {total:?}");
    assert!(total.leaders > n, "too few elections: {total:?}");
    assert!(total.reads_served > n, "too few reads served: {total:?}");
    assert!(
        total.snapshots_installed > n / 4,
        "too few snapshots installed: {total:?}"
    );
    assert!(
        total.conf_changes > n / 2,
        "too few membership changes: {total:?}"
    );
}

/// Replays one seed (RAFT_SEED=n, with RAFT_BUG=name under the `planted-bugs`
/// feature); a no-op without it.
#[test]
fn replay() {
    let Some(seed) = std::env::var("RAFT_SEED").ok().and_then(|s| s.parse().ok()) else {
        return;
    };
    let steps = env_or("RAFT_STEPS", 1500) as usize;
    if let Err(v) = run_seed(seed, steps, planted_from_env) {
        panic!("{v}");
    }
}

#[cfg(feature = "planted-bugs")]
fn planted_from_env(cfg: &mut Config) {
    if let Ok(name) = std::env::var("RAFT_BUG") {
        let bug = ryu_raft::PlantedBug::ALL
            .into_iter()
            .find(|b| format!("{b:?}") == name);
        cfg.planted_bug = Some(bug.expect("RAFT_BUG names a planted bug"));
    }
}

#[cfg(not(feature = "planted-bugs"))]
fn planted_from_env(_: &mut Config) {}

/// The checkers catch every planted bug (a negative test): each must produce a
/// violation, or trip an assertion of the core or of the harness (a committed
/// membership change that does not apply), within `RAFT_BUG_SEEDS` seeds (1000
/// by default). Prints, per bug, the first seed that caught it; `RAFT_BUG=name`
/// hunts one bug. Deterministic tests pin the two rarest schedules as well:
/// `paper::figure8_planted_bug_commits_by_counting` and
/// `features::planted_conf_change_before_noop`.
#[cfg(feature = "planted-bugs")]
#[test]
fn planted_bugs_are_caught() {
    use ryu_raft::PlantedBug;
    let max_seeds = env_or("RAFT_BUG_SEEDS", 1000);
    let hunted: Vec<PlantedBug> = match std::env::var("RAFT_BUG") {
        Ok(name) => PlantedBug::ALL
            .into_iter()
            .filter(|b| format!("{b:?}") == name)
            .collect(),
        Err(_) => PlantedBug::ALL.to_vec(),
    };
    let mut missed = Vec::new();
    for bug in hunted {
        let caught = (0..max_seeds).find(|seed| {
            let hook = std::panic::take_hook();
            std::panic::set_hook(Box::new(|_| {}));
            let outcome =
                std::panic::catch_unwind(|| run_seed(*seed, 1500, |c| c.planted_bug = Some(bug)));
            std::panic::set_hook(hook);
            !matches!(outcome, Ok(Ok(_)))
        });
        eprintln!(
            "{bug:?}: {}",
            caught.map_or("not caught".to_string(), |s| format!("caught by seed {s}"))
        );
        if caught.is_none() {
            missed.push(bug);
        }
    }
    assert!(missed.is_empty(), "planted bugs not caught: {missed:?}");
}
