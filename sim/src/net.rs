//! `SimNetwork`: messages between simulated nodes, with seeded latency and faults.
//!
//! The network holds messages in flight, each with a delivery time. The harness calls
//! [`SimNetwork::send`] when a node emits a message and [`SimNetwork::pop_due`] (or
//! [`SimNetwork::next_delivery_ns`] to schedule a wake-up) to deliver them.
//!
//! Faults, all drawn from the seed:
//! - **latency**: each directed link gets a base latency in `[latency_min_ns,
//!   latency_max_ns]` at construction; each message adds up to `jitter_ns` on top;
//! - **loss**: a message is dropped with probability `loss`;
//! - **duplication**: a message is delivered twice (second copy with its own latency)
//!   with probability `duplicate`;
//! - **reordering**: a message is held back an extra `reorder_delay_ns` with
//!   probability `reorder`, so later messages on its link overtake it;
//! - **partitions**: any set of directed links can be cut ([`SimNetwork::cut`]),
//!   including asymmetric ones; [`SimNetwork::partition`] cuts between groups,
//!   [`SimNetwork::isolate`] cuts one node off, [`SimNetwork::heal`] restores all.
//!   A cut link delivers nothing: messages sent over it are dropped, and messages
//!   already in flight on it are dropped when they arrive.

use crate::rng::{Ratio, SimRng};
use std::collections::{BTreeMap, BTreeSet};

/// Node identifier on the simulated network.
pub type NodeId = u64;

/// Network fault and latency options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetConfig {
    pub latency_min_ns: u64,
    pub latency_max_ns: u64,
    pub jitter_ns: u64,
    pub loss: Ratio,
    pub duplicate: Ratio,
    pub reorder: Ratio,
    pub reorder_delay_ns: u64,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            latency_min_ns: 100_000,
            latency_max_ns: 1_000_000,
            jitter_ns: 100_000,
            loss: Ratio::ZERO,
            duplicate: Ratio::ZERO,
            reorder: Ratio::ZERO,
            reorder_delay_ns: 5_000_000,
        }
    }
}

impl NetConfig {
    /// Swarm testing: each fault off in about half the seeds, otherwise drawn.
    pub fn draw(rng: &mut SimRng) -> NetConfig {
        let off = Ratio::new(1, 2);
        let latency_min_ns = rng.between(10_000, 500_000);
        NetConfig {
            latency_min_ns,
            latency_max_ns: latency_min_ns + rng.between(0, 5_000_000),
            jitter_ns: rng.between(0, 1_000_000),
            loss: rng.swarm_ratio(off, 20, 100),
            duplicate: rng.swarm_ratio(off, 10, 100),
            reorder: rng.swarm_ratio(off, 20, 100),
            reorder_delay_ns: rng.between(1_000_000, 20_000_000),
        }
    }
}

/// What the network did, for tests and run summaries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetCounts {
    pub sent: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub cut_at_send: u64,
    pub cut_in_flight: u64,
}

/// A message delivered by the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery<M> {
    pub at_ns: u64,
    pub from: NodeId,
    pub to: NodeId,
    pub msg: M,
}

/// The simulated network, generic over the message type.
#[derive(Debug)]
pub struct SimNetwork<M> {
    rng: SimRng,
    config: NetConfig,
    nodes: Vec<NodeId>,
    base_latency_ns: BTreeMap<(NodeId, NodeId), u64>,
    cut: BTreeSet<(NodeId, NodeId)>,
    in_flight: BTreeMap<(u64, u64), (NodeId, NodeId, M)>,
    next_seq: u64,
    counts: NetCounts,
}

impl<M: Clone> SimNetwork<M> {
    /// A network among `nodes`, with per-link latencies drawn from `rng`.
    pub fn new(mut rng: SimRng, config: NetConfig, nodes: &[NodeId]) -> SimNetwork<M> {
        assert!(
            config.latency_min_ns <= config.latency_max_ns,
            "latency range inverted"
        );
        let mut base_latency_ns = BTreeMap::new();
        for &a in nodes {
            for &b in nodes {
                let lat = rng.between(config.latency_min_ns, config.latency_max_ns);
                base_latency_ns.insert((a, b), lat);
            }
        }
        SimNetwork {
            rng,
            config,
            nodes: nodes.to_vec(),
            base_latency_ns,
            cut: BTreeSet::new(),
            in_flight: BTreeMap::new(),
            next_seq: 0,
            counts: NetCounts::default(),
        }
    }

    /// Add a node (e.g. a new cluster member) with fresh link latencies.
    pub fn add_node(&mut self, id: NodeId) {
        if self.nodes.contains(&id) {
            return;
        }
        self.nodes.push(id);
        for a in self.nodes.clone() {
            for (x, y) in [(a, id), (id, a)] {
                let lat = self
                    .rng
                    .between(self.config.latency_min_ns, self.config.latency_max_ns);
                self.base_latency_ns.insert((x, y), lat);
            }
        }
    }

    /// Change the fault options (e.g. switch faults off for the liveness phase).
    pub fn set_config(&mut self, config: NetConfig) {
        self.config = config;
    }

    /// The current options.
    pub fn config(&self) -> NetConfig {
        self.config
    }

    /// What has happened so far.
    pub fn counts(&self) -> NetCounts {
        self.counts
    }

    /// Send `msg` from `from` to `to` at time `now_ns`.
    pub fn send(&mut self, now_ns: u64, from: NodeId, to: NodeId, msg: M) {
        self.counts.sent += 1;
        if self.cut.contains(&(from, to)) {
            self.counts.cut_at_send += 1;
            return;
        }
        if self.rng.chance(self.config.loss) {
            self.counts.lost += 1;
            return;
        }
        if self.rng.chance(self.config.duplicate) {
            self.counts.duplicated += 1;
            self.enqueue(now_ns, from, to, msg.clone());
        }
        self.enqueue(now_ns, from, to, msg);
    }

    fn enqueue(&mut self, now_ns: u64, from: NodeId, to: NodeId, msg: M) {
        let base = self
            .base_latency_ns
            .get(&(from, to))
            .copied()
            .unwrap_or(self.config.latency_max_ns);
        let mut at = now_ns + base + self.rng.between(0, self.config.jitter_ns);
        if self.rng.chance(self.config.reorder) {
            self.counts.reordered += 1;
            at += self.config.reorder_delay_ns;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.in_flight.insert((at, seq), (from, to, msg));
    }

    /// When the next message arrives, if any is in flight.
    pub fn next_delivery_ns(&self) -> Option<u64> {
        self.in_flight.keys().next().map(|&(t, _)| t)
    }

    /// Remove and return the earliest message due at or before `now_ns`, skipping
    /// (and counting) messages whose link has been cut since they were sent.
    pub fn pop_due(&mut self, now_ns: u64) -> Option<Delivery<M>> {
        loop {
            let (&(at, seq), _) = self.in_flight.iter().next()?;
            if at > now_ns {
                return None;
            }
            let (from, to, msg) = self.in_flight.remove(&(at, seq)).expect("key just seen");
            if self.cut.contains(&(from, to)) {
                self.counts.cut_in_flight += 1;
                continue;
            }
            self.counts.delivered += 1;
            return Some(Delivery {
                at_ns: at,
                from,
                to,
                msg,
            });
        }
    }

    /// Number of messages in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Drop every message in flight to or from `node` (its process died: TCP
    /// connections reset, buffers gone).
    pub fn drop_node_traffic(&mut self, node: NodeId) {
        self.in_flight
            .retain(|_, (from, to, _)| *from != node && *to != node);
    }

    /// Cut the directed link `from -> to` (asymmetric partitions are made of these).
    pub fn cut(&mut self, from: NodeId, to: NodeId) {
        self.cut.insert((from, to));
    }

    /// Restore the directed link `from -> to`.
    pub fn restore(&mut self, from: NodeId, to: NodeId) {
        self.cut.remove(&(from, to));
    }

    /// Whether `from -> to` is currently cut.
    pub fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.cut.contains(&(from, to))
    }

    /// Cut every link between different groups (both directions). Nodes in no group
    /// are cut off from everyone.
    pub fn partition(&mut self, groups: &[Vec<NodeId>]) {
        let group_of = |n: NodeId| groups.iter().position(|g| g.contains(&n));
        for &a in &self.nodes {
            for &b in &self.nodes {
                if a != b && (group_of(a).is_none() || group_of(a) != group_of(b)) {
                    self.cut.insert((a, b));
                }
            }
        }
    }

    /// Cut `node` off from every other node, both directions.
    pub fn isolate(&mut self, node: NodeId) {
        for &other in &self.nodes {
            if other != node {
                self.cut.insert((node, other));
                self.cut.insert((other, node));
            }
        }
    }

    /// Cut links in a random shape drawn from `rng` (a two-sided split of `nodes`,
    /// one node isolated, or one to four directed links, so asymmetric cuts too) and
    /// describe what was cut, for the trace.
    pub fn random_partition(&mut self, rng: &mut SimRng, nodes: &[NodeId]) -> String {
        assert!(!nodes.is_empty(), "partitioning an empty network");
        match rng.below(3) {
            0 => {
                let (mut a, mut b) = (Vec::new(), Vec::new());
                for &n in nodes {
                    if rng.chance(Ratio::new(1, 2)) {
                        a.push(n)
                    } else {
                        b.push(n)
                    }
                }
                let what = format!("partition {a:?} | {b:?}");
                self.partition(&[a, b]);
                what
            }
            1 => {
                let n = nodes[rng.index(nodes.len())];
                self.isolate(n);
                format!("isolate {n}")
            }
            _ => {
                let mut cuts = Vec::new();
                for _ in 0..rng.between(1, 4) {
                    let (a, b) = (nodes[rng.index(nodes.len())], nodes[rng.index(nodes.len())]);
                    if a != b {
                        self.cut(a, b);
                        cuts.push(format!("{a}->{b}"));
                    }
                }
                format!("cut {}", cuts.join(" "))
            }
        }
    }

    /// The liveness phase's network: every link restored and no more loss,
    /// duplication or reordering; latencies stay as drawn.
    pub fn heal_all_faults(&mut self) {
        self.heal();
        self.config.loss = Ratio::ZERO;
        self.config.duplicate = Ratio::ZERO;
        self.config.reorder = Ratio::ZERO;
    }

    /// Restore every link.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// The cut links, for traces.
    pub fn cut_links(&self) -> impl Iterator<Item = (NodeId, NodeId)> + '_ {
        self.cut.iter().copied()
    }
}
