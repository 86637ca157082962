//! The node's own tests: a small cluster wired by hand (no network faults; the
//! `cluster` scenario in `ryu-scenarios` does faults), on `SimDisk`.

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use ryu_io::{Disk, DynDisk, DynFile, IoError, IoResult};
use ryu_node::{Consistency, Envelope, Node, NodeOptions, Request, Response};
use ryu_raft::Role;
use ryu_sim::SimDisk;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::SeqCst;

struct Cluster {
    disks: BTreeMap<u64, SimDisk>,
    /// The shared backup store.
    store: SimDisk,
    nodes: BTreeMap<u64, Node>,
    replies: BTreeMap<u64, Response>,
    voters: Vec<u64>,
    /// Messages to these nodes are dropped.
    down: Vec<u64>,
    boots: u64,
    /// `NodeOptions::compact_after_entries` for nodes opened from now on.
    compact: u64,
    /// Nodes opened on a [`DirSyncFaults`] disk instead of their plain `SimDisk`.
    faulty: BTreeMap<u64, Arc<DirSyncFaults>>,
    /// Nodes whose errors in `settle` are kept here (the node is dropped, as a process
    /// that crashed without a power loss) instead of failing the test.
    failed: BTreeMap<u64, ryu_node::NodeError>,
}

/// A node's disk whose directory syncs of `n` (the node directory) fail on demand:
/// the one right after `n/ENGINE` is renamed into place, or the next one.
#[derive(Debug)]
struct DirSyncFaults {
    inner: SimDisk,
    after_engine_rename: AtomicBool,
    next: AtomicBool,
    /// Set by a rename onto `n/ENGINE` while `after_engine_rename` is armed.
    engine_renamed: AtomicBool,
}

impl Disk for DirSyncFaults {
    fn create(&self, path: &Path) -> IoResult<DynFile> {
        self.inner.create(path)
    }
    fn open(&self, path: &Path) -> IoResult<DynFile> {
        self.inner.open(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> IoResult<()> {
        self.inner.rename(from, to)?;
        if to == Path::new("n/ENGINE") && self.after_engine_rename.swap(false, SeqCst) {
            self.engine_renamed.store(true, SeqCst);
        }
        Ok(())
    }
    fn remove(&self, path: &Path) -> IoResult<()> {
        self.inner.remove(path)
    }
    fn list(&self, dir: &Path) -> IoResult<Vec<String>> {
        self.inner.list(dir)
    }
    fn create_dir_all(&self, path: &Path) -> IoResult<()> {
        self.inner.create_dir_all(path)
    }
    fn sync_dir(&self, dir: &Path) -> IoResult<()> {
        if dir == Path::new("n")
            && (self.engine_renamed.swap(false, SeqCst) || self.next.swap(false, SeqCst))
        {
            return Err(IoError::io("sync_dir", "injected sync error"));
        }
        self.inner.sync_dir(dir)
    }
    fn is_dir(&self, path: &Path) -> IoResult<bool> {
        self.inner.is_dir(path)
    }
}

impl Cluster {
    fn new(n: u64) -> Cluster {
        let voters: Vec<u64> = (1..=n).collect();
        let mut c = Cluster {
            disks: BTreeMap::new(),
            store: SimDisk::new(999),
            nodes: BTreeMap::new(),
            replies: BTreeMap::new(),
            voters: voters.clone(),
            down: Vec::new(),
            boots: 0,
            compact: 0,
            faulty: BTreeMap::new(),
            failed: BTreeMap::new(),
        };
        for id in voters {
            c.disks.insert(id, SimDisk::new(id));
            c.open(id);
        }
        c
    }

    fn open(&mut self, id: u64) {
        self.try_open(id).expect("open");
    }

    /// [`Cluster::open`], returning the error of `Node::open`.
    fn try_open(&mut self, id: u64) -> Result<(), ryu_node::NodeError> {
        self.boots += 1;
        let disk: DynDisk = match self.faulty.get(&id) {
            Some(f) => f.clone(),
            None => Arc::new(self.disks[&id].clone()),
        };
        let mut o = NodeOptions::new(id, self.voters.clone());
        o.cluster_id = 42;
        o.backup = Some(ryu_node::BackupTarget {
            disk: Arc::new(self.store.clone()),
            dir: "backups".into(),
            clock: Arc::new(ryu_io::ManualClock::new(1_700_000_000_000_000_000)),
        });
        o.backup_timeout_ticks = 40;
        o.compact_after_entries = self.compact;
        let rng = ChaCha8Rng::seed_from_u64(id * 1000 + self.boots);
        let node = Node::open(disk, Path::new("n"), o, rng)?;
        self.nodes.insert(id, node);
        Ok(())
    }

    /// Run every node's Ready cycle and deliver messages until quiet.
    fn settle(&mut self) {
        for _ in 0..1000 {
            let mut msgs: Vec<Envelope> = Vec::new();
            let mut busy = false;
            for (id, node) in self.nodes.iter_mut() {
                if self.down.contains(id) {
                    continue;
                }
                if let Err(e) = node.run_ready() {
                    assert!(self.faulty.contains_key(id), "node {id}: {e}");
                    self.failed.insert(*id, e);
                    continue;
                }
                if node.has_backup_work() {
                    node.step_backups(4096).expect("backup step");
                    busy = true;
                }
                let out = node.take_output();
                msgs.extend(out.messages);
                for (id, r) in out.replies {
                    assert!(
                        self.replies.insert(id, r).is_none(),
                        "request {id} answered twice"
                    );
                }
            }
            for id in self.failed.keys() {
                self.nodes.remove(id);
            }
            if msgs.is_empty() && !busy {
                return;
            }
            for m in msgs {
                if self.down.contains(&m.to) || self.down.contains(&m.from) {
                    continue;
                }
                if let Some(n) = self.nodes.get_mut(&m.to) {
                    n.step(m);
                }
            }
        }
        panic!("cluster did not settle");
    }

    fn tick_until_leader(&mut self) -> u64 {
        for _ in 0..200 {
            for (id, n) in self.nodes.iter_mut() {
                if !self.down.contains(id) {
                    n.tick();
                }
            }
            self.settle();
            let leaders: Vec<u64> = self
                .nodes
                .iter()
                .filter(|(id, n)| !self.down.contains(id) && n.status().role == Role::Leader)
                .map(|(id, _)| *id)
                .collect();
            if leaders.len() == 1 {
                return leaders[0];
            }
        }
        panic!("no leader");
    }

    fn call(&mut self, node: u64, id: u64, req: Request) -> Response {
        self.nodes.get_mut(&node).unwrap().request(id, req);
        self.settle();
        for _ in 0..200 {
            if let Some(r) = self.replies.remove(&id) {
                return r;
            }
            for (nid, n) in self.nodes.iter_mut() {
                if !self.down.contains(nid) {
                    n.tick();
                }
            }
            self.settle();
        }
        panic!("request {id} never answered");
    }
}

fn put(k: &str, v: &str) -> Request {
    Request::Put {
        key: k.as_bytes().to_vec(),
        value: v.as_bytes().to_vec(),
    }
}

fn get(k: &str) -> Request {
    Request::Get {
        key: k.as_bytes().to_vec(),
        consistency: Consistency::Linearizable,
    }
}

fn value(r: &Response) -> Option<&[u8]> {
    match r {
        Response::Value { value, .. } => value.as_deref(),
        other => panic!("expected a value, got {other:?}"),
    }
}

#[test]
fn writes_replicate_and_reads_are_served_by_every_member() {
    let mut c = Cluster::new(3);
    let leader = c.tick_until_leader();
    let r = c.call(leader, 1, put("a", "1"));
    let Response::Committed { index } = r else {
        panic!("{r:?}")
    };
    for id in 1..=3 {
        let r = c.call(id, 100 + id, get("a"));
        assert_eq!(value(&r), Some(&b"1"[..]), "node {id}");
        let Response::Value { index: at, .. } = r else {
            unreachable!()
        };
        assert!(
            at >= index,
            "node {id} read at {at} before the write at {index}"
        );
    }
}

#[test]
fn a_follower_redirects_writes_to_the_leader() {
    let mut c = Cluster::new(3);
    let leader = c.tick_until_leader();
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    let r = c.call(follower, 1, put("a", "1"));
    assert_eq!(
        r,
        Response::NotLeader {
            leader: Some(leader)
        }
    );
}

#[test]
fn cas_and_transactions_validate_when_applied() {
    let mut c = Cluster::new(3);
    let l = c.tick_until_leader();
    assert!(matches!(
        c.call(l, 1, put("a", "1")),
        Response::Committed { .. }
    ));
    let cas = |expected: Option<&str>, new: &str| Request::Cas {
        key: b"a".to_vec(),
        expected: expected.map(|e| e.as_bytes().to_vec()),
        new: Some(new.as_bytes().to_vec()),
    };
    assert!(matches!(
        c.call(l, 2, cas(Some("1"), "2")),
        Response::Committed { .. }
    ));
    match c.call(l, 3, cas(Some("1"), "3")) {
        Response::Aborted { key, current, .. } => {
            assert_eq!(key, b"a");
            assert_eq!(current.as_deref(), Some(&b"2"[..]));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        c.call(l, 4, cas(None, "x")),
        Response::Aborted { .. }
    ));
    // A transaction that read a=2 and b absent commits; one that read a stale a aborts
    // and writes nothing (not even its other key).
    let txn = |a: &str, w: &str| Request::Txn {
        reads: vec![
            (b"a".to_vec(), Some(a.as_bytes().to_vec())),
            (b"b".to_vec(), None),
        ],
        writes: vec![
            (b"a".to_vec(), Some(w.as_bytes().to_vec())),
            (b"c".to_vec(), Some(w.as_bytes().to_vec())),
        ],
    };
    assert!(matches!(
        c.call(l, 5, txn("2", "t1")),
        Response::Committed { .. }
    ));
    assert!(matches!(
        c.call(l, 6, txn("2", "t2")),
        Response::Aborted { .. }
    ));
    assert_eq!(value(&c.call(l, 7, get("c"))), Some(&b"t1"[..]));
    assert_eq!(value(&c.call(l, 8, get("a"))), Some(&b"t1"[..]));
    // A read-only transaction checks that its reads were current at one index.
    let check = |a: &str| Request::Txn {
        reads: vec![
            (b"a".to_vec(), Some(a.as_bytes().to_vec())),
            (b"c".to_vec(), Some(b"t1".to_vec())),
        ],
        writes: vec![],
    };
    assert!(matches!(
        c.call(l, 9, check("t1")),
        Response::Committed { .. }
    ));
    match c.call(l, 10, check("2")) {
        Response::Aborted { key, current, .. } => {
            assert_eq!(key, b"a");
            assert_eq!(current.as_deref(), Some(&b"t1"[..]));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        c.call(
            l,
            11,
            Request::Txn {
                reads: vec![],
                writes: vec![]
            }
        ),
        Response::Invalid { .. }
    ));
}

#[test]
fn checks_in_one_batch_see_earlier_entries_of_the_batch() {
    // Two CAS proposed back to back land in one Ready: the second must see the first.
    let mut c = Cluster::new(1);
    let l = c.tick_until_leader();
    let n = c.nodes.get_mut(&l).unwrap();
    n.request(1, put("a", "0"));
    n.request(
        2,
        Request::Cas {
            key: b"a".to_vec(),
            expected: Some(b"0".to_vec()),
            new: Some(b"1".to_vec()),
        },
    );
    n.request(
        3,
        Request::Cas {
            key: b"a".to_vec(),
            expected: Some(b"0".to_vec()),
            new: Some(b"2".to_vec()),
        },
    );
    c.settle();
    assert!(matches!(c.replies[&2], Response::Committed { .. }));
    assert!(
        matches!(c.replies[&3], Response::Aborted { .. }),
        "{:?}",
        c.replies[&3]
    );
}

/// Increments apply against the value at their own index: many in one batch (as
/// concurrent clients' would be) all take effect, in log order, on every replica; a
/// value that is not an integer, or an overflow, writes nothing.
#[test]
fn increments_apply_in_log_order_and_never_conflict() {
    let incr = |k: &str, delta: i64| Request::Incr {
        key: k.as_bytes().to_vec(),
        delta,
    };
    let mut c = Cluster::new(3);
    let l = c.tick_until_leader();
    let n = c.nodes.get_mut(&l).unwrap();
    for id in 1..=20 {
        n.request(id, incr("hits", 1));
    }
    c.settle();
    let mut values: Vec<i64> = (1..=20)
        .map(|id| match &c.replies[&id] {
            Response::Incremented { value, .. } => *value,
            other => panic!("{other:?}"),
        })
        .collect();
    values.sort_unstable();
    assert_eq!(values, (1..=20).collect::<Vec<i64>>());
    match c.call(l, 21, incr("hits", -25)) {
        Response::Incremented { value, .. } => assert_eq!(value, -5),
        other => panic!("{other:?}"),
    }
    let ids: Vec<u64> = c.nodes.keys().copied().collect();
    for id in ids {
        let r = c.call(
            id,
            100 + id,
            Request::Get {
                key: b"hits".to_vec(),
                consistency: Consistency::Linearizable,
            },
        );
        assert_eq!(value(&r), Some(&b"-5"[..]), "node {id}");
    }
    assert!(matches!(
        c.call(l, 30, put("text", "abc")),
        Response::Committed { .. }
    ));
    match c.call(l, 31, incr("text", 1)) {
        Response::Invalid { reason } => assert!(reason.contains("not an integer"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        c.call(l, 32, put("big", &i64::MAX.to_string())),
        Response::Committed { .. }
    ));
    match c.call(l, 33, incr("big", 1)) {
        Response::Invalid { reason } => assert!(reason.contains("overflow"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(value(&c.call(l, 34, get("text"))), Some(&b"abc"[..]));
    assert_eq!(
        value(&c.call(l, 35, get("big"))),
        Some(i64::MAX.to_string().as_bytes())
    );
    // Followers send increments to the leader, like every write.
    let f = *c.nodes.keys().find(|&&id| id != l).unwrap();
    assert_eq!(
        c.call(f, 36, incr("hits", 1)),
        Response::NotLeader { leader: Some(l) }
    );
}

#[test]
fn a_restarted_node_recovers_its_data_and_applied_index() {
    let mut c = Cluster::new(3);
    let l = c.tick_until_leader();
    for i in 0..20 {
        let r = c.call(l, i, put(&format!("k{i}"), &format!("v{i}")));
        assert!(matches!(r, Response::Committed { .. }));
    }
    let victim = (1..=3).find(|&i| i != l).unwrap();
    let applied = c.nodes[&victim].applied().clone();
    c.nodes.remove(&victim);
    c.disks[&victim].crash(); // power loss: only what was synced survives
    c.open(victim);
    let recovered = c.nodes[&victim].applied().clone();
    assert!(recovered.index <= applied.index);
    assert_eq!(recovered.conf, applied.conf);
    c.settle();
    c.tick_until_leader();
    let r = c.call(
        victim,
        999,
        Request::Get {
            key: b"k19".to_vec(),
            consistency: Consistency::Stale,
        },
    );
    assert_eq!(value(&r), Some(&b"v19"[..]));
    assert!(c.nodes[&victim].applied().index >= applied.index);
}

#[test]
fn bad_requests_get_clear_errors_and_change_nothing() {
    let mut c = Cluster::new(1);
    let l = c.tick_until_leader();
    let reserved = Request::Put {
        key: vec![0xff, 1],
        value: b"x".to_vec(),
    };
    assert!(matches!(c.call(l, 1, reserved), Response::Invalid { .. }));
    let huge = Request::Put {
        key: b"k".to_vec(),
        value: vec![0; ryu_engine::MAX_VALUE_BYTES + 1],
    };
    assert!(matches!(c.call(l, 2, huge), Response::Invalid { .. }));
    // A transaction bigger than any replica's WAL may hold is refused up front
    // (committed, it would stop every replica that cannot apply it).
    let big = Request::Txn {
        reads: vec![],
        writes: (0..6)
            .map(|i| (format!("k{i}").into_bytes(), Some(vec![7; 3000])))
            .collect(),
    };
    match c.call(l, 5, big) {
        Response::Invalid { reason } => assert!(reason.contains("exceeds"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let empty_txn = Request::Txn {
        reads: vec![],
        writes: vec![],
    };
    assert!(matches!(c.call(l, 3, empty_txn), Response::Invalid { .. }));
    // The reserved key space is invisible to scans.
    let scan = Request::Scan {
        start: vec![],
        end: None,
        limit: 100,
        consistency: Consistency::Linearizable,
    };
    assert_eq!(
        c.call(l, 4, scan),
        Response::Entries {
            entries: vec![],
            index: c.nodes[&l].applied().index
        }
    );
}

#[test]
fn messages_from_another_cluster_are_dropped() {
    let mut c = Cluster::new(3);
    let l = c.tick_until_leader();
    let term = c.nodes[&l].status().term;
    let follower = (1..=3).find(|&i| i != l).unwrap();
    // A vote request with a huge term from a foreign cluster would depose the
    // leader if it were accepted.
    let message = |cluster: u64| Envelope {
        cluster,
        from: follower,
        to: l,
        payload: ryu_node::Payload::Raft(ryu_raft::Message {
            from: ryu_raft::NodeId(follower),
            to: ryu_raft::NodeId(l),
            term: term + 100,
            body: ryu_raft::MessageBody::AppendResp {
                index: 0,
                reject: None,
            },
        }),
    };
    c.nodes.get_mut(&l).unwrap().step(message(7));
    assert_eq!(c.nodes[&l].status().term, term);
    assert_eq!(c.nodes[&l].status().role, Role::Leader);
    // The same message from our own cluster does depose it (the test has teeth).
    c.nodes.get_mut(&l).unwrap().step(message(42));
    assert_eq!(c.nodes[&l].status().term, term + 100);
    assert_ne!(c.nodes[&l].status().role, Role::Leader);
}

/// Restore the backup `id` in `dest` of the store and read back every client key
/// and the applied index it holds.
type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

fn restored(c: &Cluster, dest: &str, id: &str) -> (u64, Pairs) {
    let store: DynDisk = Arc::new(c.store.clone());
    let report = ryu_backup::verify(
        &store,
        Path::new(dest),
        id,
        &ryu_backup::VerifyOptions { deep: true },
    )
    .unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    let scratch: DynDisk = Arc::new(SimDisk::new(5));
    ryu_backup::restore(
        &store,
        Path::new(dest),
        id,
        &scratch,
        Path::new("r"),
        &Default::default(),
    )
    .unwrap();
    let db = ryu_engine::Db::open(scratch, Path::new("r"), Default::default()).unwrap();
    let txn = db.begin_read();
    let applied =
        ryu_node::AppliedState::decode(&txn.get(ryu_node::command::APPLIED_KEY).unwrap().unwrap())
            .unwrap();
    let keys = txn
        .range(Vec::new()..vec![0xff])
        .map(|e| e.unwrap())
        .collect();
    (applied.index, keys)
}

/// Ask `node` for a cluster backup and return its manifest (complete or failed).
fn cluster_backup(
    c: &mut Cluster,
    node: u64,
    request: u64,
    id: &str,
    quorum_only: bool,
) -> Box<ryu_node::ClusterManifest> {
    let strategy = ryu_node::BackupStrategy::Cluster { quorum_only };
    match c.call(node, request, backup(id, strategy)) {
        Response::ClusterBackupDone(m) => m,
        other => panic!("{other:?}"),
    }
}

fn backup(id: &str, strategy: ryu_node::BackupStrategy) -> Request {
    Request::Backup {
        id: id.to_string(),
        strategy,
    }
}

#[test]
fn leader_and_follower_backups_hold_exactly_the_state_at_their_index() {
    use ryu_node::BackupStrategy;
    let mut c = Cluster::new(3);
    let l = c.tick_until_leader();
    for i in 0..30 {
        assert!(matches!(
            c.call(l, i, put(&format!("k{i:02}"), "v")),
            Response::Committed { .. }
        ));
    }
    let f = (1..=3).find(|&i| i != l).unwrap();
    for (node, strategy, id) in [
        (l, BackupStrategy::Leader, "lead"),
        (f, BackupStrategy::Follower, "fol"),
    ] {
        let r = c.call(node, 100, backup(id, strategy));
        let Response::BackupDone(done) = r else {
            panic!("{r:?}")
        };
        assert_eq!(done.node, node);
        let (index, keys) = restored(&c, &format!("backups/node-{node}"), id);
        assert_eq!(index, done.index);
        assert_eq!(keys.len(), 30);
    }
    // The wrong node for the strategy gets a clear answer.
    assert_eq!(
        c.call(f, 101, backup("x", BackupStrategy::Leader)),
        Response::NotLeader { leader: Some(l) }
    );
    assert!(matches!(
        c.call(l, 102, backup("y", BackupStrategy::Follower)),
        Response::Invalid { .. }
    ));
    assert!(matches!(
        c.call(l, 103, backup("../evil", BackupStrategy::Leader)),
        Response::Invalid { .. }
    ));
}

/// Step a job taken off the node to its end on another thread (as the production
/// driver does), while `during` runs on this one.
#[allow(clippy::disallowed_methods)] // the production driver's thread, in miniature
fn run_off_thread(
    mut work: ryu_node::BackupWork,
    during: impl FnOnce(),
) -> (ryu_node::BackupWork, Result<u64, String>) {
    let t = std::thread::spawn(move || {
        loop {
            if let Some(outcome) = work.step(4096) {
                return (work, outcome);
            }
        }
    });
    during();
    t.join().expect("backup thread")
}

#[test]
fn backups_stepped_off_the_node_thread_finish_like_stepped_ones() {
    use ryu_node::BackupStrategy;
    let mut c = Cluster::new(3);
    let l = c.tick_until_leader();
    for i in 0..30 {
        c.call(l, i, put(&format!("k{i:02}"), &"x".repeat(500)));
    }
    let node = c.nodes.get_mut(&l).unwrap();
    node.request(100, backup("off", BackupStrategy::Leader));
    node.run_ready().unwrap();
    let mut work = node.take_backup_work();
    assert_eq!(work.len(), 1);
    assert!(
        !node.has_backup_work(),
        "taken jobs are no longer stepped here"
    );
    // Writes go on while the job copies on its own thread.
    let (work, outcome) = run_off_thread(work.pop().unwrap(), || {
        for i in 30..60 {
            assert!(matches!(
                c.call(l, i, put(&format!("k{i:02}"), "later")),
                Response::Committed { .. }
            ));
        }
    });
    assert!(outcome.is_ok(), "{outcome:?}");
    let node = c.nodes.get_mut(&l).unwrap();
    node.finish_backup_work(work, outcome).unwrap();
    let replies = node.take_output().replies;
    let Some((_, Response::BackupDone(done))) = replies.iter().find(|(id, _)| *id == 100) else {
        panic!("{replies:?}")
    };
    let (index, keys) = restored(&c, &format!("backups/node-{l}"), "off");
    assert_eq!(index, done.index);
    assert_eq!(keys.len(), 30, "exactly the state when the backup started");

    // A follower backup whose node changes role while the job is away fails.
    let f = (1..=3).find(|&i| i != l).unwrap();
    let node = c.nodes.get_mut(&f).unwrap();
    node.request(101, backup("fol-off", BackupStrategy::Follower));
    node.run_ready().unwrap();
    let work = node.take_backup_work().pop().expect("a follower job");
    c.down.push(f);
    let node = c.nodes.get_mut(&f).unwrap();
    let (work, outcome) = run_off_thread(work, || {});
    assert!(outcome.is_ok(), "the copy itself succeeds: {outcome:?}");
    for _ in 0..100 {
        node.tick();
        node.run_ready().unwrap();
        if node.status().role != Role::Follower {
            break;
        }
    }
    node.finish_backup_work(work, outcome).unwrap();
    let replies = node.take_output().replies;
    match replies.iter().find(|(id, _)| *id == 101) {
        Some((_, Response::BackupFailed { reason })) => {
            assert!(reason.contains("aborted"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_follower_backup_aborts_cleanly_when_the_follower_changes_role() {
    use ryu_node::BackupStrategy;
    let mut c = Cluster::new(3);
    let l = c.tick_until_leader();
    for i in 0..20 {
        c.call(l, i, put(&format!("k{i:02}"), &"x".repeat(3000)));
    }
    let f = (1..=3).find(|&i| i != l).unwrap();
    c.nodes
        .get_mut(&f)
        .unwrap()
        .request(100, backup("fb", BackupStrategy::Follower));
    // Cut the follower off before any step: it times out and campaigns.
    c.down.push(f);
    let node = c.nodes.get_mut(&f).unwrap();
    for _ in 0..100 {
        node.tick();
        node.run_ready().unwrap();
        if node.status().role != Role::Follower {
            break;
        }
    }
    assert_ne!(node.status().role, Role::Follower);
    node.step_backups(4096).unwrap();
    let replies = node.take_output().replies;
    let (_, r) = replies.iter().find(|(id, _)| *id == 100).expect("answered");
    match r {
        Response::BackupFailed { reason } => assert!(reason.contains("aborted"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // Nothing in the store looks like a complete backup.
    let store: DynDisk = Arc::new(c.store.clone());
    let listed = ryu_backup::list(&store, Path::new(&format!("backups/node-{f}"))).unwrap();
    assert!(
        listed
            .iter()
            .all(|e| e.status != ryu_backup::BackupStatus::Complete),
        "{listed:?}"
    );
}

#[test]
fn a_cluster_backup_backs_every_node_up_at_the_barrier_with_equal_digests() {
    use ryu_node::ClusterStatus;
    let mut c = Cluster::new(3);
    let l = c.tick_until_leader();
    for i in 0..25 {
        c.call(l, i, put(&format!("k{i:02}"), "v"));
    }
    let m = cluster_backup(&mut c, l, 100, "cb", false);
    assert_eq!(m.status, ClusterStatus::Complete, "{m:?}");
    assert_eq!(m.nodes.len(), 3);
    let digests: Vec<_> = m.nodes.iter().map(|n| n.digest.clone().unwrap()).collect();
    assert!(digests.iter().all(|d| *d == digests[0]));
    for n in &m.nodes {
        assert_eq!(n.status, "ok");
        let (index, keys) = restored(&c, &format!("backups/cb/node-{}", n.node), "cb");
        assert_eq!(index, m.barrier_index);
        assert_eq!(keys.len(), 25);
    }
    // The manifest on the store says the same.
    let store: DynDisk = Arc::new(c.store.clone());
    let f = store.open(Path::new("backups/cb/cluster.json")).unwrap();
    let mut b = vec![0; f.len().unwrap() as usize];
    f.read_at(0, &mut b).unwrap();
    let on_disk: ryu_node::ClusterManifest = serde_json::from_slice(&b).unwrap();
    assert_eq!(&on_disk, m.as_ref());
}

#[test]
fn a_cluster_backup_with_a_node_down_fails_unless_a_quorum_suffices() {
    use ryu_node::{BackupStrategy, ClusterStatus};
    let mut c = Cluster::new(3);
    let l = c.tick_until_leader();
    c.call(l, 1, put("a", "1"));
    let f = (1..=3).find(|&i| i != l).unwrap();
    c.down.push(f);
    let r = c.call(
        l,
        2,
        backup("all", BackupStrategy::Cluster { quorum_only: false }),
    );
    let Response::ClusterBackupDone(m) = r else {
        panic!("{r:?}")
    };
    assert_eq!(m.status, ClusterStatus::Failed);
    assert!(m.reason.as_deref().unwrap().contains("timed out"), "{m:?}");
    assert!(m.nodes.iter().any(|n| n.node == f && n.status == "missing"));
    let r = c.call(
        l,
        3,
        backup("quorum", BackupStrategy::Cluster { quorum_only: true }),
    );
    let Response::ClusterBackupDone(m) = r else {
        panic!("{r:?}")
    };
    assert_eq!(m.status, ClusterStatus::Complete, "{m:?}");
    assert_eq!(m.nodes.iter().filter(|n| n.status == "ok").count(), 2);
}

/// The engine does not sync each applied entry (the Raft log already holds it): a
/// power loss takes the engine back, and the node replays the rest from its log.
#[test]
fn a_power_loss_loses_no_applied_entry_the_log_holds() {
    let mut c = Cluster::new(1);
    let l = c.tick_until_leader();
    for i in 0..30 {
        let r = c.call(l, i, put(&format!("k{i:02}"), &format!("v{i}")));
        assert!(matches!(r, Response::Committed { .. }), "{r:?}");
    }
    let applied = c.nodes[&l].applied().index;
    c.nodes.remove(&l);
    c.disks[&l].crash();
    c.open(l);
    let reopened = c.nodes[&l].applied().index;
    assert!(
        reopened < applied,
        "the engine kept every apply ({reopened} of {applied}): nothing was replayed"
    );
    let l = c.tick_until_leader();
    for i in 0..30 {
        let r = c.call(l, 100 + i, get(&format!("k{i:02}")));
        assert_eq!(value(&r), Some(format!("v{i}").as_bytes()), "k{i:02}");
    }
    assert!(c.nodes[&l].applied().index >= applied);
}

/// Three nodes compacting every 10 entries, a leader, and a follower that is down.
fn compacting_cluster_with_a_lagging_follower() -> (Cluster, u64, u64) {
    let mut c = Cluster::new(3);
    c.compact = 10;
    for id in 1..=3 {
        c.nodes.remove(&id);
        c.open(id);
    }
    let l = c.tick_until_leader();
    let lagging = (1..=3).find(|&i| i != l).unwrap();
    c.down.push(lagging);
    (c, l, lagging)
}

/// Bring the lagging follower back and run until it applied what the leader did (or
/// failed, if it runs on a [`DirSyncFaults`] disk).
fn catch_up(c: &mut Cluster, l: u64, lagging: u64) {
    c.down.clear();
    for _ in 0..100 {
        for n in c.nodes.values_mut() {
            n.tick();
        }
        c.settle();
        let Some(n) = c.nodes.get(&lagging) else {
            break;
        };
        if n.applied().index == c.nodes[&l].applied().index {
            break;
        }
    }
}

#[test]
fn a_lagging_follower_catches_up_from_a_snapshot_made_of_a_backup() {
    let (mut c, l, lagging) = compacting_cluster_with_a_lagging_follower();
    for i in 0..60 {
        let r = c.call(l, i, put(&format!("k{i:02}"), &format!("v{i}")));
        assert!(matches!(r, Response::Committed { .. }), "{r:?}");
    }
    let (made, _) = c.nodes[&l].snapshot_counts();
    assert!(made >= 2, "the leader made {made} snapshots");
    assert!(
        c.nodes[&l].raft().raft().log.first_index() > 10,
        "the log was compacted"
    );
    catch_up(&mut c, l, lagging);
    let (_, installed) = c.nodes[&lagging].snapshot_counts();
    assert!(installed >= 1, "the follower installed no snapshot");
    assert_eq!(
        c.nodes[&lagging].applied().index,
        c.nodes[&l].applied().index
    );
    let digest = |n: &Node| ryu_node::backups::state_digest(&n.db().begin_read()).unwrap();
    assert_eq!(digest(&c.nodes[&lagging]), digest(&c.nodes[&l]));
    // It survives a restart on its new engine, and keeps applying.
    c.nodes.remove(&lagging);
    c.disks[&lagging].crash();
    c.open(lagging);
    let r = c.call(l, 1000, put("after", "x"));
    assert!(matches!(r, Response::Committed { .. }));
    c.settle();
    // Its engine may have come back below 60 (applies are not synced one by one);
    // the log replayed the rest.
    assert!(c.nodes[&lagging].applied().index >= 60);
    let r = c.call(lagging, 1001, get("after"));
    assert_eq!(value(&r), Some(&b"x"[..]));
    assert_eq!(value(&c.call(lagging, 1002, get("k07"))), Some(&b"v7"[..]));
}

/// Regression (scenario disk-corruption-on-a-minority, seed 4128): a leader whose
/// log was compacted to an index with no snapshot archive on disk offered an empty
/// snapshot forever and the follower never caught up. It now makes a new archive.
#[test]
fn regression_a_missing_snapshot_archive_is_made_again() {
    let (mut c, l, lagging) = compacting_cluster_with_a_lagging_follower();
    // Write until the leader has just compacted, so that no new snapshot is due by
    // the size threshold: only a missing archive can make one.
    let mut i = 0;
    loop {
        let r = c.call(l, i, put(&format!("k{i:03}"), "v"));
        assert!(matches!(r, Response::Committed { .. }), "{r:?}");
        i += 1;
        let n = &c.nodes[&l];
        let first = n.raft().raft().log.first_index();
        if first > 10 && n.applied().index + 1 < first + 10 {
            break;
        }
        assert!(i < 200, "the leader never compacted");
    }
    let (made_before, _) = c.nodes[&l].snapshot_counts();
    let snap_dir = Path::new("n").join(ryu_node::snapshots::SNAP_DIR);
    let disk = c.disks[&l].clone();
    let mut removed = 0;
    for name in disk.list(&snap_dir).unwrap() {
        if name.ends_with(".snap") {
            disk.remove(&snap_dir.join(&name)).unwrap();
            removed += 1;
        }
    }
    assert!(removed >= 1, "no archive to remove");
    catch_up(&mut c, l, lagging);
    let (made_after, _) = c.nodes[&l].snapshot_counts();
    assert!(made_after > made_before, "the leader made no new archive");
    assert_eq!(
        c.nodes[&lagging].applied().index,
        c.nodes[&l].applied().index,
        "the follower did not catch up"
    );
    let (_, installed) = c.nodes[&lagging].snapshot_counts();
    assert!(installed >= 1, "the follower installed no snapshot");
}

#[test]
fn a_whole_cluster_restores_from_a_cluster_backup_under_a_new_cluster_id() {
    use ryu_node::ClusterStatus;
    let mut c = Cluster::new(3);
    let l = c.tick_until_leader();
    for i in 0..10 {
        c.call(l, i, put(&format!("k{i}"), "before"));
    }
    let m = cluster_backup(&mut c, l, 100, "cb", false);
    assert_eq!(m.status, ClusterStatus::Complete);
    for i in 0..10 {
        c.call(l, 200 + i, put(&format!("k{i}"), "after"));
    }
    // Every member of the new cluster starts from node 2's part.
    let store: DynDisk = Arc::new(c.store.clone());
    let mut restored = Cluster {
        disks: BTreeMap::new(),
        store: c.store.clone(),
        nodes: BTreeMap::new(),
        replies: BTreeMap::new(),
        voters: vec![1, 2, 3],
        down: Vec::new(),
        boots: 100,
        compact: 0,
        faulty: BTreeMap::new(),
        failed: BTreeMap::new(),
    };
    for id in 1..=3 {
        let disk = SimDisk::new(500 + id);
        let d: DynDisk = Arc::new(disk.clone());
        let state = ryu_node::restore_cluster_node(
            &store,
            Path::new("backups/cb/node-2"),
            "cb",
            &d,
            Path::new("n"),
            43,
        )
        .unwrap();
        assert_eq!(state.index, m.barrier_index);
        restored.disks.insert(id, disk);
    }
    for id in 1..=3 {
        let disk: DynDisk = Arc::new(restored.disks[&id].clone());
        let mut o = NodeOptions::new(id, vec![1, 2, 3]);
        o.cluster_id = 999; // ignored: the directory has its cluster id
        let node = Node::open(disk, Path::new("n"), o, ChaCha8Rng::seed_from_u64(id)).unwrap();
        assert_eq!(node.cluster_id(), 43);
        restored.nodes.insert(id, node);
    }
    let nl = restored.tick_until_leader();
    assert_eq!(
        value(&restored.call(nl, 1, get("k3"))),
        Some(&b"before"[..])
    );
    assert!(matches!(
        restored.call(nl, 2, put("new", "1")),
        Response::Committed { .. }
    ));
    // The old cluster's messages never reach the new one.
    let old_msg = Envelope {
        cluster: 42,
        from: 1,
        to: nl,
        payload: ryu_node::Payload::Raft(ryu_raft::Message {
            from: ryu_raft::NodeId(1),
            to: ryu_raft::NodeId(nl),
            term: 1000,
            body: ryu_raft::MessageBody::AppendResp {
                index: 0,
                reject: None,
            },
        }),
    };
    restored.nodes.get_mut(&nl).unwrap().step(old_msg);
    assert_eq!(restored.nodes[&nl].foreign_messages_dropped(), 1);
    assert_eq!(restored.nodes[&nl].status().role, Role::Leader);
    // Restoring into a directory in use is refused.
    let d: DynDisk = Arc::new(restored.disks[&1].clone());
    assert!(
        ryu_node::restore_cluster_node(
            &store,
            Path::new("backups/cb/node-2"),
            "cb",
            &d,
            Path::new("n"),
            44
        )
        .is_err()
    );
}

#[test]
fn a_new_member_joins_by_snapshot_and_a_member_is_removed() {
    use ryu_node::MembershipChange;
    let mut c = Cluster::new(3);
    c.compact = 10;
    for id in 1..=3 {
        c.nodes.remove(&id);
        c.open(id);
    }
    let l = c.tick_until_leader();
    for i in 0..40 {
        c.call(l, i, put(&format!("k{i:02}"), "v"));
    }
    // Node 4 starts empty, knowing only the bootstrap membership.
    c.disks.insert(4, SimDisk::new(4));
    c.open(4);
    assert_eq!(c.nodes[&4].status().voters, vec![1, 2, 3]);
    let r = c.call(
        l,
        100,
        Request::ChangeMembership(MembershipChange::AddLearner(4)),
    );
    assert!(matches!(r, Response::Committed { .. }), "{r:?}");
    let r = c.call(
        l,
        101,
        Request::ChangeMembership(MembershipChange::AddVoter(4)),
    );
    assert!(matches!(r, Response::Committed { .. }), "{r:?}");
    for _ in 0..50 {
        for n in c.nodes.values_mut() {
            n.tick();
        }
        c.settle();
    }
    assert!(
        c.nodes[&4].snapshot_counts().1 >= 1,
        "node 4 joined without a snapshot"
    );
    assert_eq!(c.nodes[&4].status().voters, vec![1, 2, 3, 4]);
    assert_eq!(value(&c.call(4, 102, get("k39"))), Some(&b"v"[..]));
    let victim = (1..=3).find(|&i| i != l).unwrap();
    let r = c.call(
        l,
        103,
        Request::ChangeMembership(MembershipChange::Remove(victim)),
    );
    assert!(matches!(r, Response::Committed { .. }), "{r:?}");
    c.settle();
    let voters = c.nodes[&l].status().voters;
    assert!(!voters.contains(&victim) && voters.len() == 3, "{voters:?}");
    // A follower is told where the leader is.
    let r = c.call(
        4,
        104,
        Request::ChangeMembership(MembershipChange::Remove(l)),
    );
    assert_eq!(r, Response::NotLeader { leader: Some(l) });
}

#[test]
fn a_cluster_file_without_checksum_is_upgraded_and_a_damaged_one_refused() {
    let disk = SimDisk::new(5);
    let dyn_disk: DynDisk = Arc::new(disk.clone());
    dyn_disk.create_dir_all(Path::new("n")).unwrap();
    let f = dyn_disk.create(Path::new("n/CLUSTER")).unwrap();
    f.write_at(0, b"000000000000002a\n").unwrap();
    f.sync_data().unwrap();
    let rng = ChaCha8Rng::seed_from_u64(5);
    let node = Node::open(
        dyn_disk.clone(),
        Path::new("n"),
        NodeOptions::new(1, vec![1]),
        rng,
    )
    .expect("an old directory opens");
    assert_eq!(node.cluster_id(), 0x2a);
    drop(node);
    let f = dyn_disk.open(Path::new("n/CLUSTER")).unwrap();
    assert_eq!(f.len().unwrap(), 26, "rewritten with its checksum");
    // One flipped bit in the checksummed file: the node refuses to open.
    let mut b = [0u8; 1];
    f.read_at(3, &mut b).unwrap();
    f.write_at(3, &[b[0] ^ 0x01]).unwrap();
    f.sync_data().unwrap();
    let rng = ChaCha8Rng::seed_from_u64(6);
    match Node::open(dyn_disk, Path::new("n"), NodeOptions::new(1, vec![1]), rng) {
        Err(ryu_node::NodeError::Corrupted(why)) => assert!(why.contains("CLUSTER"), "{why}"),
        other => panic!("a damaged CLUSTER file must be refused: {other:?}"),
    }
}

/// Regression (counters seed 2745): a follower installing a snapshot renamed `ENGINE`
/// to the new engine and then failed to sync its directory. It crashed without a power
/// loss, so the new pointer was still visible when it reopened; the open recorded the
/// snapshot in the log durably, failed at a later directory sync, and a power loss
/// took the rename back: the log was compacted past an engine at its old entry. With
/// the open syncing the directory before anything depends on the pointer, every
/// reopen after the power loss succeeds and the follower catches up. Several rounds,
/// because a power loss keeps each unsynced rename or not at random.
#[test]
fn regression_an_engine_pointer_read_before_it_is_durable_is_synced_first() {
    for round in 0..6u64 {
        let (mut c, l, lagging) = compacting_cluster_with_a_lagging_follower();
        let faults = Arc::new(DirSyncFaults {
            inner: c.disks[&lagging].clone(),
            after_engine_rename: AtomicBool::new(false),
            next: AtomicBool::new(false),
            engine_renamed: AtomicBool::new(false),
        });
        c.faulty.insert(lagging, faults.clone());
        c.nodes.remove(&lagging);
        c.open(lagging);
        for i in 0..40 + 7 * round {
            let r = c.call(l, i, put(&format!("k{i:02}"), &format!("v{i}")));
            assert!(matches!(r, Response::Committed { .. }), "{r:?}");
        }
        // The install fails at the directory sync right after the rename.
        faults.after_engine_rename.store(true, SeqCst);
        catch_up(&mut c, l, lagging);
        let e = c.failed.remove(&lagging).expect("the install did not fail");
        assert!(e.to_string().contains("injected sync error"), "{e}");
        // Reopened (no power loss: the rename is visible), failing at the next sync.
        faults.next.store(true, SeqCst);
        c.nodes.remove(&lagging);
        assert!(
            c.try_open(lagging).is_err(),
            "round {round}: the open synced nothing"
        );
        c.disks[&lagging].crash();
        c.try_open(lagging)
            .unwrap_or_else(|e| panic!("round {round}: reopen after the power loss: {e}"));
        catch_up(&mut c, l, lagging);
        assert_eq!(
            c.nodes[&lagging].applied().index,
            c.nodes[&l].applied().index,
            "round {round}"
        );
    }
}
