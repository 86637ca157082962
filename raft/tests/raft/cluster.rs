//! An in-process cluster for tests: nodes over `MemStorage`, a message queue the
//! test delivers explicitly, link cuts for partitions, and a tiny state machine
//! (the list of applied payloads) whose snapshots are streamed in chunks.

use std::collections::{BTreeMap, BTreeSet};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use ryu_raft::{
    ConfChange, ConfState, Config, Entry, EntryKind, Index, MemStorage, Message, NodeId, RawNode,
    ReadState, Ready, SnapshotChunk, SnapshotMeta, Storage,
};

/// A snapshot payload being received: sender, snapshot, bytes so far.
#[derive(Debug, Clone)]
pub struct Staged {
    pub from: NodeId,
    pub meta: SnapshotMeta,
    pub data: Vec<u8>,
}

/// One node and the application around it.
#[derive(Debug)]
pub struct Node {
    pub raw: RawNode<MemStorage>,
    pub config: Config,
    /// Applied payloads of normal entries, in order: the state machine.
    pub state: Vec<Vec<u8>>,
    /// (index, entry) of every entry applied since start or the last snapshot.
    pub applied: Vec<Entry>,
    pub applied_index: Index,
    /// Snapshot payload being received (durable in this model).
    pub staged: Option<Staged>,
    pub read_states: Vec<ReadState>,
}

/// Encodes the state machine as a snapshot payload: length-prefixed items.
pub fn encode_state(state: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for item in state {
        out.extend_from_slice(&(item.len() as u32).to_le_bytes());
        out.extend_from_slice(item);
    }
    out
}

pub fn decode_state(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let len = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
        out.push(bytes[4..4 + len].to_vec());
        bytes = &bytes[4 + len..];
    }
    out
}

impl Node {
    pub fn new(config: Config, mut storage: MemStorage) -> Node {
        let rng = ChaCha8Rng::seed_from_u64(config.id.0 ^ 0x5eed);
        let snapshot = storage.snapshot_meta().unwrap();
        let snapshot_index = snapshot.index;
        // The state machine is volatile: it restarts from the snapshot, so the
        // membership handed to Raft must be the snapshot's too (the storage
        // contract: membership as of the applied index). Entries after it are
        // applied again, configuration changes included.
        storage.set_conf_state(snapshot.conf_state);
        let state = decode_state(storage.snapshot_data());
        let mut config = config;
        config.applied = config.applied.max(snapshot_index);
        let raw = RawNode::new(&config, storage, rng).expect("open node");
        Node {
            raw,
            config,
            state,
            applied: Vec::new(),
            applied_index: snapshot_index,
            staged: None,
            read_states: Vec::new(),
        }
    }

    /// Handles one `Ready` in the documented order; returns it (messages taken
    /// out into `outbox`, in order: immediate first, then persisted).
    pub fn handle_ready(&mut self, outbox: &mut Vec<Message>) -> Ready {
        let rd = self.raw.ready();
        outbox.extend(rd.messages.iter().cloned());
        for rc in &rd.received_chunks {
            self.stage_chunk(rc.from, &rc.chunk);
        }
        if let Some(meta) = &rd.snapshot {
            self.install_snapshot(meta);
        }
        self.raw.storage_mut().append(&rd.entries);
        if let Some(hs) = rd.hard_state {
            self.raw.storage_mut().set_hard_state(hs);
        }
        outbox.extend(rd.persisted_messages.iter().cloned());
        for e in &rd.committed_entries {
            self.apply(e);
        }
        self.read_states.extend(rd.read_states.iter().cloned());
        for req in &rd.snapshot_requests {
            self.serve_snapshot_request(&req.meta, req.to, req.offset, req.max_bytes);
        }
        self.raw.advance();
        rd
    }

    fn stage_chunk(&mut self, from: NodeId, chunk: &SnapshotChunk) {
        let same = |s: &Staged| s.from == from && s.meta == chunk.meta;
        if chunk.offset == 0 || !self.staged.as_ref().is_some_and(same) {
            assert_eq!(chunk.offset, 0, "resumed chunk without staged data");
            self.staged = Some(Staged {
                from,
                meta: chunk.meta.clone(),
                data: Vec::new(),
            });
        }
        let buf = &mut self.staged.as_mut().unwrap().data;
        assert_eq!(buf.len() as u64, chunk.offset, "chunk out of order");
        buf.extend_from_slice(&chunk.data);
    }

    fn install_snapshot(&mut self, meta: &SnapshotMeta) {
        let staged = self.staged.take().expect("snapshot without staged payload");
        assert_eq!(&staged.meta, meta, "installing the wrong payload");
        self.state = decode_state(&staged.data);
        self.applied.clear();
        self.applied_index = meta.index;
        self.raw
            .storage_mut()
            .apply_snapshot(meta.clone(), staged.data);
    }

    fn apply(&mut self, e: &Entry) {
        assert_eq!(e.index, self.applied_index + 1, "applying out of order");
        self.applied_index = e.index;
        match e.kind {
            EntryKind::Normal => self.state.push(e.data.clone()),
            EntryKind::Noop => {}
            EntryKind::ConfChange => {
                let cc = ConfChange::decode(&e.data).expect("conf change decodes");
                let cs = self
                    .raw
                    .apply_conf_change(&cc)
                    .expect("committed change applies");
                self.raw.storage_mut().set_conf_state(cs);
            }
        }
        self.applied.push(e.clone());
    }

    fn serve_snapshot_request(&mut self, meta: &SnapshotMeta, to: NodeId, offset: u64, max: u64) {
        let stored = self.raw.storage().snapshot_meta().unwrap();
        if stored != *meta {
            self.raw.abort_snapshot(to);
            return;
        }
        let payload = self.raw.storage().snapshot_data();
        let start = (offset as usize).min(payload.len());
        let end = (start + max as usize).min(payload.len());
        let chunk = SnapshotChunk {
            meta: meta.clone(),
            offset,
            data: payload[start..end].to_vec(),
            done: end == payload.len(),
        };
        // A request can go stale before it is served (the leader re-offered or
        // moved on); the core then refuses the chunk, which is harmless.
        let _ = self.raw.send_snapshot_chunk(to, chunk);
    }

    /// Snapshots the state machine at the applied index and compacts up to `index`.
    pub fn compact(&mut self, index: Index) {
        assert!(index <= self.applied_index, "compact beyond applied");
        let cs = self.raw.storage().conf_state().clone();
        let data = encode_state(&self.state);
        let applied = self.applied_index;
        self.raw.storage_mut().create_snapshot(applied, cs, data);
        self.raw.storage_mut().compact(index);
    }
}

/// Nodes plus the network between them.
#[derive(Debug, Default)]
pub struct Cluster {
    pub nodes: BTreeMap<u64, Node>,
    /// Messages sent and not yet delivered, in send order.
    pub queue: Vec<Message>,
    /// Directed links that drop everything.
    pub cut: BTreeSet<(u64, u64)>,
}

impl Cluster {
    pub fn new() -> Cluster {
        Cluster::default()
    }

    /// Adds a node with a fresh log and initial membership `cs`.
    pub fn add_node(&mut self, config: Config, cs: ConfState) {
        let id = config.id.0;
        let node = Node::new(config, MemStorage::new(cs));
        assert!(self.nodes.insert(id, node).is_none(), "node {id} exists");
    }

    /// A cluster of `n` voters with `config` applied to each id.
    pub fn with_voters(n: u64, mut tweak: impl FnMut(&mut Config)) -> Cluster {
        let mut c = Cluster::new();
        let cs = ConfState::with_voters(1..=n);
        for id in 1..=n {
            let mut cfg = Config::new(id);
            tweak(&mut cfg);
            c.add_node(cfg, cs.clone());
        }
        c
    }

    pub fn node(&self, id: u64) -> &Node {
        &self.nodes[&id]
    }

    pub fn node_mut(&mut self, id: u64) -> &mut Node {
        self.nodes.get_mut(&id).expect("node exists")
    }

    /// Processes the Ready of every node in `ids` that has one.
    pub fn process_ready(&mut self, ids: &[u64]) -> Vec<(u64, Ready)> {
        let mut out = Vec::new();
        for id in ids {
            let node = self.nodes.get_mut(id).expect("node exists");
            if node.raw.has_ready() {
                let rd = node.handle_ready(&mut self.queue);
                out.push((*id, rd));
            }
        }
        out
    }

    /// Delivers queued messages addressed to `ids`; returns those delivered and
    /// those dropped by cut links.
    pub fn deliver(&mut self, ids: &[u64]) -> (Vec<Message>, Vec<Message>) {
        let (mine, rest): (Vec<Message>, Vec<Message>) = std::mem::take(&mut self.queue)
            .into_iter()
            .partition(|m| ids.contains(&m.to.0));
        self.queue = rest;
        let (mut delivered, mut dropped) = (Vec::new(), Vec::new());
        for m in mine {
            if self.cut.contains(&(m.from.0, m.to.0)) || !self.nodes.contains_key(&m.to.0) {
                dropped.push(m);
                continue;
            }
            self.nodes.get_mut(&m.to.0).unwrap().raw.step(m.clone());
            delivered.push(m);
        }
        (delivered, dropped)
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// Runs Ready handling and delivery until nothing moves.
    pub fn stabilize(&mut self) {
        let ids = self.ids();
        for _ in 0..10_000 {
            let readies = self.process_ready(&ids);
            if readies.is_empty() && self.queue.is_empty() {
                return;
            }
            self.deliver(&ids);
        }
        panic!("cluster did not stabilize");
    }

    /// Cuts every link between the two groups, both ways.
    pub fn partition(&mut self, a: &[u64], b: &[u64]) {
        for x in a {
            for y in b {
                self.cut.insert((*x, *y));
                self.cut.insert((*y, *x));
            }
        }
    }

    pub fn isolate(&mut self, id: u64) {
        let others: Vec<u64> = self.ids().into_iter().filter(|x| *x != id).collect();
        self.partition(&[id], &others);
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Crashes and restarts `id` from its storage: volatile state and undelivered
    /// messages to it are lost.
    pub fn restart(&mut self, id: u64) {
        let old = self.nodes.remove(&id).expect("node exists");
        let storage = old.raw.storage().clone();
        let mut node = Node::new(old.config, storage);
        // The state machine is volatile here: Node::new rebuilt it from the
        // snapshot and Raft hands out the committed entries after it again. Staged
        // snapshot bytes were written durably: resume the transfer from them.
        if let Some(staged) = old.staged {
            let received = staged.data.len() as u64;
            node.raw
                .resume_snapshot_receive(staged.from, staged.meta.clone(), received);
            node.staged = Some(staged);
        }
        self.nodes.insert(id, node);
        self.queue.retain(|m| m.to.0 != id);
    }

    /// The node that believes it leads the highest term, if any.
    pub fn leader(&self) -> Option<u64> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.raw.soft_state().role == ryu_raft::Role::Leader)
            .max_by_key(|(_, n)| n.raw.hard_state().term)
            .map(|(id, _)| *id)
    }

    /// Ticks `id` until it campaigns and the cluster elects someone.
    pub fn elect(&mut self, id: u64) {
        self.node_mut(id).raw.campaign();
        self.stabilize();
        assert_eq!(self.leader(), Some(id), "node {id} failed to win");
    }
}

impl Cluster {
    /// Delivers the queued messages matching `pred` (dropping those on cut links),
    /// leaving the rest queued.
    pub fn deliver_where(&mut self, pred: impl Fn(&Message) -> bool) -> usize {
        let (mine, rest): (Vec<Message>, Vec<Message>) = std::mem::take(&mut self.queue)
            .into_iter()
            .partition(|m| pred(m));
        self.queue = rest;
        let mut n = 0;
        for m in mine {
            if self.cut.contains(&(m.from.0, m.to.0)) {
                continue;
            }
            self.nodes
                .get_mut(&m.to.0)
                .expect("node exists")
                .raw
                .step(m);
            n += 1;
        }
        n
    }

    /// Drops the queued messages matching `pred`.
    pub fn drop_where(&mut self, pred: impl Fn(&Message) -> bool) {
        self.queue.retain(|m| !pred(m));
    }

    /// Process-ready and delivery restricted to messages matching `pred`, until
    /// quiet; other messages are dropped.
    pub fn stabilize_where(&mut self, pred: impl Fn(&Message) -> bool) {
        let ids = self.ids();
        for _ in 0..10_000 {
            let readies = self.process_ready(&ids);
            self.drop_where(|m| !pred(m));
            if readies.is_empty() && self.queue.is_empty() {
                return;
            }
            self.deliver_where(|_| true);
        }
        panic!("cluster did not stabilize");
    }
}

/// A node whose durable log holds entries of `terms` (index 1 upward) and whose
/// hard state is at `term`.
pub fn node_with_log(config: Config, cs: ConfState, terms: &[u64], term: u64) -> Node {
    let mut storage = MemStorage::new(cs);
    let entries: Vec<Entry> = terms
        .iter()
        .enumerate()
        .map(|(i, t)| Entry {
            term: *t,
            index: i as u64 + 1,
            kind: EntryKind::Normal,
            data: format!("t{t}i{}", i + 1).into_bytes(),
        })
        .collect();
    storage.append(&entries);
    storage.set_hard_state(ryu_raft::HardState {
        term,
        vote: None,
        commit: 0,
    });
    Node::new(config, storage)
}
