//! Model-based test of snapshot isolation: random interleavings of concurrent
//! transactions, checkpoints and close/reopen against a reference model of versioned
//! keys. Every read and scan must equal the model's state at the transaction's start
//! overlaid with its own writes (no dirty reads, repeatable reads, consistent scans);
//! every commit must succeed or conflict exactly as first-committer-wins says (no lost
//! updates); timestamps must match.

use crate::common::{DIR, read_all};
use proptest::prelude::*;
use ryu_engine::{Db, Error, Options, ReadTxn, Ts, WriteTxn};
use ryu_sim::SimDisk;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

const SLOTS: usize = 4;
const KEYS: u8 = 48;

#[derive(Debug, Clone)]
enum Op {
    BeginWrite(usize),
    BeginRead(usize),
    Get(usize, u8),
    Put(usize, u8, u16, u16),
    Delete(usize, u8),
    Scan(usize, u8, u8),
    Prefix(usize, u8),
    Commit(usize),
    Rollback(usize),
    Checkpoint,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let slot = 0..SLOTS;
    let key = 0..KEYS;
    prop_oneof![
        3 => slot.clone().prop_map(Op::BeginWrite),
        1 => slot.clone().prop_map(Op::BeginRead),
        4 => (slot.clone(), key.clone()).prop_map(|(s, k)| Op::Get(s, k)),
        6 => (slot.clone(), key.clone(), any::<u16>(), 0..900u16).prop_map(|(s, k, v, l)| Op::Put(s, k, v, l)),
        2 => (slot.clone(), key.clone()).prop_map(|(s, k)| Op::Delete(s, k)),
        2 => (slot.clone(), key.clone(), key.clone()).prop_map(|(s, a, b)| Op::Scan(s, a, b)),
        1 => (slot.clone(), 0..5u8).prop_map(|(s, p)| Op::Prefix(s, p)),
        3 => slot.clone().prop_map(Op::Commit),
        1 => slot.prop_map(Op::Rollback),
        1 => Just(Op::Checkpoint),
        1 => Just(Op::Reopen),
    ]
}

fn key(k: u8) -> Vec<u8> {
    format!("{}/{k:03}", k % 5).into_bytes()
}

fn value(v: u16, len: u16) -> Vec<u8> {
    let mut out = v.to_le_bytes().to_vec();
    out.resize(usize::from(len) + 2, (v % 251) as u8);
    out
}

/// A committed version: its timestamp and value (`None` for a delete).
type Version = (Ts, Option<Vec<u8>>);

/// The reference: every committed version of every key.
#[derive(Debug, Default)]
struct Model {
    versions: BTreeMap<Vec<u8>, Vec<Version>>,
    last_ts: Ts,
}

impl Model {
    fn state_at(&self, ts: Ts) -> BTreeMap<Vec<u8>, Vec<u8>> {
        self.versions
            .iter()
            .filter_map(|(k, vs)| {
                let (_, v) = vs.iter().rev().find(|(t, _)| *t <= ts)?;
                Some((k.clone(), v.clone()?))
            })
            .collect()
    }
}

enum Txn {
    Read(ReadTxn),
    Write(WriteTxn, BTreeMap<Vec<u8>, Option<Vec<u8>>>),
}

struct ModelTxn {
    txn: Txn,
    start: Ts,
}

impl ModelTxn {
    fn expected(&self, model: &Model) -> BTreeMap<Vec<u8>, Vec<u8>> {
        let mut s = model.state_at(self.start);
        if let Txn::Write(_, writes) = &self.txn {
            for (k, v) in writes {
                match v {
                    Some(v) => s.insert(k.clone(), v.clone()),
                    None => s.remove(k),
                };
            }
        }
        s
    }

    fn get(&self, k: &[u8]) -> Option<Vec<u8>> {
        match &self.txn {
            Txn::Read(r) => r.get(k).unwrap(),
            Txn::Write(w, _) => w.get(k).unwrap(),
        }
    }

    /// A scan taking `batch` entries per refill from each source (the tree, newer
    /// versions, the transaction's writes), so each source's cut lands among the others.
    fn scan(
        &self,
        lo: Bound<Vec<u8>>,
        hi: Bound<Vec<u8>>,
        batch: usize,
    ) -> Vec<(Vec<u8>, Vec<u8>)> {
        match &self.txn {
            Txn::Read(r) => r
                .range((lo, hi))
                .batch_size(batch)
                .map(Result::unwrap)
                .collect(),
            Txn::Write(w, _) => w
                .range((lo, hi))
                .batch_size(batch)
                .map(Result::unwrap)
                .collect(),
        }
    }
}

fn options() -> Options {
    Options {
        cache_pages: 16,
        wal_segment_bytes: 32 << 10,
        checkpoint_after_bytes: 0,
        sync_commits: true,
    }
}

fn run(ops: Vec<Op>) {
    let disk = SimDisk::new(0);
    let open = || Db::open(Arc::new(disk.clone()), Path::new(DIR), options()).unwrap();
    let mut db = open();
    let mut model = Model::default();
    let mut slots: Vec<Option<ModelTxn>> = (0..SLOTS).map(|_| None).collect();
    for op in ops {
        match op {
            Op::BeginWrite(s) | Op::BeginRead(s) => {
                let start = db.last_committed_ts();
                assert_eq!(start, model.last_ts);
                let txn = match op {
                    Op::BeginWrite(_) => Txn::Write(db.begin_write(), BTreeMap::new()),
                    _ => Txn::Read(db.begin_read()),
                };
                slots[s] = Some(ModelTxn { txn, start });
            }
            Op::Get(s, k) => {
                if let Some(t) = &slots[s] {
                    let k = key(k);
                    assert_eq!(
                        t.get(&k),
                        t.expected(&model).get(&k).cloned(),
                        "read of {k:?}"
                    );
                }
            }
            Op::Put(s, k, v, l) => {
                if let Some(ModelTxn {
                    txn: Txn::Write(w, writes),
                    ..
                }) = &mut slots[s]
                {
                    w.put(&key(k), &value(v, l)).unwrap();
                    writes.insert(key(k), Some(value(v, l)));
                }
            }
            Op::Delete(s, k) => {
                if let Some(ModelTxn {
                    txn: Txn::Write(w, writes),
                    ..
                }) = &mut slots[s]
                {
                    w.delete(&key(k)).unwrap();
                    writes.insert(key(k), None);
                }
            }
            Op::Scan(s, a, b) => {
                if let Some(t) = &slots[s] {
                    let (lo, hi) = (key(a).min(key(b)), key(a).max(key(b)));
                    let want: Vec<_> = t
                        .expected(&model)
                        .range(lo.clone()..=hi.clone())
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    let batch = 1 + usize::from((a ^ b) % 4);
                    assert_eq!(
                        t.scan(Bound::Included(lo), Bound::Included(hi), batch),
                        want
                    );
                }
            }
            Op::Prefix(s, p) => {
                if let Some(t) = &slots[s] {
                    let prefix = format!("{p}/").into_bytes();
                    let got: Vec<_> = match &t.txn {
                        Txn::Read(r) => r.prefix(&prefix).map(Result::unwrap).collect(),
                        Txn::Write(w, _) => w.prefix(&prefix).map(Result::unwrap).collect(),
                    };
                    let want: Vec<_> = t
                        .expected(&model)
                        .into_iter()
                        .filter(|(k, _)| k.starts_with(&prefix))
                        .collect();
                    assert_eq!(got, want);
                }
            }
            Op::Commit(s) => match slots[s].take() {
                Some(ModelTxn {
                    txn: Txn::Write(w, writes),
                    start,
                }) => {
                    let conflict = writes.keys().find(|k| {
                        model
                            .versions
                            .get(*k)
                            .is_some_and(|vs| vs.last().is_some_and(|(t, _)| *t > start))
                    });
                    let got = w.commit();
                    match (conflict, writes.is_empty()) {
                        (_, true) => assert_eq!(got, Ok(start)),
                        (Some(k), false) => {
                            assert!(
                                matches!(got, Err(Error::Conflict { .. })),
                                "expected conflict on {k:?}: {got:?}"
                            )
                        }
                        (None, false) => {
                            let ts = model.last_ts + 1;
                            assert_eq!(got, Ok(ts), "lost update or spurious conflict");
                            for (k, v) in writes {
                                model.versions.entry(k).or_default().push((ts, v));
                            }
                            model.last_ts = ts;
                        }
                    }
                }
                other => drop(other),
            },
            Op::Rollback(s) => {
                if let Some(ModelTxn {
                    txn: Txn::Write(w, _),
                    ..
                }) = slots[s].take()
                {
                    w.rollback();
                }
            }
            Op::Checkpoint => {
                let info = db.checkpoint().unwrap();
                assert_eq!(info.checkpoint_ts, model.last_ts);
            }
            Op::Reopen => {
                slots.iter_mut().for_each(|s| *s = None);
                drop(db);
                db = open();
                assert_eq!(db.last_committed_ts(), model.last_ts);
                assert_eq!(read_all(&db).unwrap(), model.state_at(model.last_ts));
            }
        }
    }
    slots.iter_mut().for_each(|s| *s = None);
    assert_eq!(read_all(&db).unwrap(), model.state_at(model.last_ts));
    assert_eq!(db.stats().live_snapshots, 0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn snapshot_isolation_matches_the_model(ops in proptest::collection::vec(op(), 1..300)) {
        run(ops);
    }
}

/// One batch of a tree workload: `(key index, value length or None to delete)`.
type Batch = Vec<(u16, Option<u16>)>;

/// The copy-on-write tree against a `BTreeMap`: batches large enough to split and merge
/// pages on several levels, a checkpoint after each, readers pinned at every generation
/// (their view must never change, however many checkpoints reuse freed pages), and a
/// reopen at the end.
fn run_tree(batches: Vec<Batch>) {
    let disk = SimDisk::new(1);
    let options = Options {
        cache_pages: 8,
        wal_segment_bytes: 1 << 20,
        checkpoint_after_bytes: 0,
        sync_commits: true,
    };
    let db = Db::open(Arc::new(disk.clone()), Path::new(DIR), options.clone()).unwrap();
    let mut model: crate::common::State = BTreeMap::new();
    let mut readers: Vec<(ReadTxn, crate::common::State)> = Vec::new();
    for (round, batch) in batches.into_iter().enumerate() {
        let mut w = db.begin_write();
        for (k, v) in batch {
            let k = format!("{k:05}").into_bytes();
            match v {
                Some(len) => {
                    let v = vec![(round % 251) as u8; usize::from(len)];
                    w.put(&k, &v).unwrap();
                    model.insert(k, v);
                }
                None => {
                    w.delete(&k).unwrap();
                    model.remove(&k);
                }
            }
        }
        w.commit().unwrap();
        db.checkpoint().unwrap();
        readers.push((db.begin_read(), model.clone()));
        if readers.len() > 3 {
            // Release an old reader now and then, so freed pages get reused.
            readers.remove(round % 3);
        }
        for (r, want) in &readers {
            let got: BTreeMap<_, _> = r
                .range::<std::ops::RangeFull>(..)
                .map(Result::unwrap)
                .collect();
            assert_eq!(&got, want, "a pinned snapshot changed");
        }
        // Point reads and ranges that start inside the tree descend through branch
        // separators, which a full scan never searches: every key present and its
        // successor absent, and ranges from each present key.
        let (newest, want) = readers.last().expect("pushed above");
        for (k, v) in want {
            assert_eq!(newest.get(k).unwrap().as_ref(), Some(v), "get {k:?}");
            let mut after = k.clone();
            after.push(b'~');
            assert_eq!(newest.get(&after).unwrap(), None, "get {after:?}");
        }
        for (k, _) in want.iter().step_by(97) {
            let got: Vec<Vec<u8>> = newest
                .range(k.clone()..)
                .take(5)
                .map(|e| e.unwrap().0)
                .collect();
            let expect: Vec<Vec<u8>> = want
                .range(k.clone()..)
                .take(5)
                .map(|(k, _)| k.clone())
                .collect();
            assert_eq!(got, expect, "range from {k:?}");
            let got: Vec<Vec<u8>> = newest
                .range((
                    std::ops::Bound::Excluded(k.clone()),
                    std::ops::Bound::Unbounded,
                ))
                .take(3)
                .map(|e| e.unwrap().0)
                .collect();
            let expect: Vec<Vec<u8>> = want
                .range((
                    std::ops::Bound::Excluded(k.clone()),
                    std::ops::Bound::Unbounded,
                ))
                .take(3)
                .map(|(k, _)| k.clone())
                .collect();
            assert_eq!(got, expect, "range after {k:?}");
        }
    }
    drop(readers);
    drop(db);
    let db = Db::open(Arc::new(disk), Path::new(DIR), options).unwrap();
    assert_eq!(read_all(&db).unwrap(), model);
}

fn batch() -> impl Strategy<Value = Batch> {
    proptest::collection::vec(
        (0..3000u16, proptest::option::weighted(0.7, 0..700u16)),
        0..400,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn copy_on_write_tree_matches_a_btreemap(batches in proptest::collection::vec(batch(), 1..12)) {
        run_tree(batches);
    }
}
