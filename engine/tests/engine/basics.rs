//! API behaviour on a perfect disk.

use crate::common::{DIR, PowerCut, open, read_all, small_options};
use ryu_engine::{Db, Error, Options};
use ryu_sim::SimDisk;
use std::path::Path;
use std::sync::Arc;

fn key(i: u32) -> Vec<u8> {
    format!("key{i:06}").into_bytes()
}

fn value(i: u32, round: u32) -> Vec<u8> {
    let mut v = format!("value-{i}-{round}-").into_bytes();
    v.resize(20 + (i as usize * 7) % 300, b'x');
    v
}

#[test]
fn put_get_delete_scan_survive_checkpoint_and_reopen() {
    let disk = SimDisk::new(1);
    let db = open(&disk, &small_options()).unwrap();
    for round in 0..3u32 {
        let mut w = db.begin_write();
        for i in 0..2000u32 {
            if (i + round) % 5 == 0 {
                w.delete(&key(i)).unwrap();
            } else {
                w.put(&key(i), &value(i, round)).unwrap();
            }
            if i % 100 == 99 {
                w.commit().unwrap();
                w = db.begin_write();
            }
        }
        w.commit().unwrap();
        if round != 1 {
            db.checkpoint().unwrap();
        }
    }
    let expect: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = (0..2000u32)
        .filter(|i| (i + 2) % 5 != 0)
        .map(|i| (key(i), value(i, 2)))
        .collect();
    assert_eq!(read_all(&db).unwrap(), expect);
    let stats = db.stats();
    assert!(stats.page_count > 100, "{stats:?}");
    drop(db);
    let db = open(&disk, &small_options()).unwrap();
    assert_eq!(read_all(&db).unwrap(), expect);
    let r = db.begin_read();
    let some: Vec<_> = r.range(key(10)..key(20)).map(|e| e.unwrap().0).collect();
    let want: Vec<_> = (10..20u32).filter(|i| (i + 2) % 5 != 0).map(key).collect();
    assert_eq!(some, want);
    let pre: Vec<_> = r.prefix(b"key00001").map(|e| e.unwrap().0).collect();
    let want: Vec<_> = (10..20u32).filter(|i| (i + 2) % 5 != 0).map(key).collect();
    assert_eq!(pre, want);
    // Delete everything: the tree shrinks back to nothing.
    drop(r);
    let mut w = db.begin_write();
    for i in 0..2000u32 {
        w.delete(&key(i)).unwrap();
    }
    w.commit().unwrap();
    db.checkpoint().unwrap();
    db.checkpoint().unwrap();
    assert!(read_all(&db).unwrap().is_empty());
    drop(db);
    assert!(
        read_all(&open(&disk, &small_options()).unwrap())
            .unwrap()
            .is_empty()
    );
}

#[test]
fn first_committer_wins_and_snapshots_repeat() {
    let disk = SimDisk::new(2);
    let db = open(&disk, &small_options()).unwrap();
    let mut w = db.begin_write();
    w.put(b"a", b"1").unwrap();
    w.commit().unwrap();
    let snap = db.begin_read();
    let mut t1 = db.begin_write();
    let mut t2 = db.begin_write();
    t1.put(b"a", b"2").unwrap();
    t2.put(b"a", b"3").unwrap();
    t2.put(b"b", b"3").unwrap();
    let ts1 = t1.commit().unwrap();
    assert_eq!(t2.commit(), Err(Error::Conflict { key: b"a".to_vec() }));
    db.checkpoint().unwrap();
    assert_eq!(snap.get(b"a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(snap.get(b"b").unwrap(), None);
    assert_eq!(db.last_committed_ts(), ts1);
    // Disjoint writers both commit.
    let mut t3 = db.begin_write();
    let mut t4 = db.begin_write();
    t3.put(b"x", b"3").unwrap();
    t4.put(b"y", b"4").unwrap();
    t3.commit().unwrap();
    t4.commit().unwrap();
    assert_eq!(db.begin_read().get(b"y").unwrap(), Some(b"4".to_vec()));
}

#[test]
fn apply_at_requires_rising_timestamps() {
    let disk = SimDisk::new(3);
    let db = open(&disk, &small_options()).unwrap();
    db.apply_at(5, vec![(b"k".to_vec(), Some(b"v".to_vec()))])
        .unwrap();
    assert_eq!(
        db.apply_at(5, vec![]),
        Err(Error::TimestampNotIncreasing { ts: 5, last: 5 })
    );
    db.apply_at(9, vec![(b"k".to_vec(), None)]).unwrap();
    assert_eq!(db.last_committed_ts(), 9);
    let mut w = db.begin_write();
    w.put(b"z", b"1").unwrap();
    assert_eq!(w.commit().unwrap(), 10);
    drop(db);
    let db = open(&disk, &small_options()).unwrap();
    assert_eq!(db.last_committed_ts(), 10);
    assert_eq!(db.begin_read().get(b"k").unwrap(), None);
}

#[test]
fn group_commit_shares_one_sync_across_threads() {
    let dir = tempfile::tempdir().unwrap();
    let counted = PowerCut::new(Arc::new(ryu_io::StdDisk::new(dir.path())), i64::MAX);
    let db = Db::open(
        Arc::new(counted.clone()),
        Path::new(DIR),
        Options::default(),
    )
    .unwrap();
    let syncs_before = counted.file_syncs();
    std::thread::scope(|s| {
        for t in 0..8u32 {
            let db = db.clone();
            s.spawn(move || {
                for i in 0..50u32 {
                    let mut w = db.begin_write();
                    w.put(format!("t{t}-{i}").as_bytes(), b"v").unwrap();
                    w.commit().unwrap();
                }
            });
        }
    });
    assert_eq!(read_all(&db).unwrap().len(), 400);
    assert_eq!(db.last_committed_ts(), 400);
    let syncs = counted.file_syncs() - syncs_before;
    assert!(
        syncs < 400,
        "400 commits took {syncs} syncs: no group commit"
    );
}

#[test]
fn split_commit_api_batches_records_into_one_flush() {
    let disk = SimDisk::new(4);
    let db = open(&disk, &small_options()).unwrap();
    let tickets: Vec<_> = (0..10u8)
        .map(|i| {
            let mut w = db.begin_write();
            w.put(&[i], &[i]).unwrap();
            w.commit_begin().unwrap()
        })
        .collect();
    assert!(tickets.iter().all(|t| !db.is_durable(t)));
    assert_eq!(db.last_committed_ts(), 0, "not durable, not visible");
    db.flush().unwrap();
    assert!(tickets.iter().all(|t| db.is_durable(t)));
    assert_eq!(db.last_committed_ts(), 10);
}

#[test]
fn pinned_generation_pages_are_never_overwritten() {
    let disk = SimDisk::new(5);
    let db = open(&disk, &small_options()).unwrap();
    let fill = |round: u32| {
        for chunk in 0..6u32 {
            let mut w = db.begin_write();
            for i in chunk * 100..chunk * 100 + 100 {
                w.put(&key(i), &value(i, round)).unwrap();
            }
            w.commit().unwrap();
        }
        db.checkpoint().unwrap();
    };
    fill(0);
    let pin = db.pin_generation();
    let pages = pin.tree_pages().unwrap();
    let f = ryu_io::Disk::open(&disk, &Path::new(DIR).join("data")).unwrap();
    let snapshot_bytes = |ranges: &[ryu_engine::PageRange]| -> Vec<u8> {
        let mut out = Vec::new();
        for r in ranges {
            let mut b = vec![0u8; r.len_bytes() as usize];
            f.read_at(r.offset_bytes(), &mut b).unwrap();
            out.extend(b);
        }
        out
    };
    let before = snapshot_bytes(&pages);
    for round in 1..6 {
        fill(round);
    }
    assert_eq!(
        snapshot_bytes(&pages),
        before,
        "a pinned generation's pages changed"
    );
    let since = pin.generation();
    let newest = db.pin_generation();
    let changed = newest.pages_written_since(since).unwrap();
    assert!(!changed.is_empty());
    assert!(
        newest
            .files()
            .unwrap()
            .iter()
            .any(|f| f.path == Path::new("data"))
    );
    drop(pin);
    let grown = db.stats().page_count;
    for round in 6..12 {
        fill(round);
    }
    // Once the old pin is gone, freed pages are reused rather than the file growing
    // without bound.
    assert!(
        db.stats().page_count < grown * 3,
        "{} vs {grown}",
        db.stats().page_count
    );
}

#[test]
fn delta_memory_stays_bounded_under_a_long_write_load() {
    let disk = SimDisk::new(6);
    let options = Options {
        checkpoint_after_bytes: 256 << 10,
        ..small_options()
    };
    let db = open(&disk, &options).unwrap();
    let mut peak = 0;
    for round in 0..200u32 {
        let mut w = db.begin_write();
        for i in 0..50u32 {
            w.put(&key((round * 50 + i) % 3000), &value(i, round))
                .unwrap();
        }
        w.commit().unwrap();
        peak = peak.max(db.stats().delta_bytes);
    }
    assert!(peak < 400 << 10, "delta grew to {peak}");
    assert!(db.stats().generation > 5);
    let _ = DIR;
}

/// Threads move money between accounts with read-modify-write transactions (conflicts
/// retried) while others check in snapshots that the total never changes and a thread
/// checkpoints: snapshot isolation, first-committer-wins, online checkpoints and GC
/// under real concurrency.
#[test]
fn concurrent_transfers_keep_the_total() {
    const ACCOUNTS: u64 = 20;
    const START: u64 = 1000;
    let disk = SimDisk::new(7);
    let options = Options {
        cache_pages: 4,
        checkpoint_after_bytes: 8 << 10,
        ..small_options()
    };
    let db = open(&disk, &options).unwrap();
    let acct = |i: u64| format!("acct{i:03}").into_bytes();
    let mut w = db.begin_write();
    for i in 0..ACCOUNTS {
        w.put(&acct(i), &START.to_le_bytes()).unwrap();
    }
    w.commit().unwrap();
    let balance = |v: Option<Vec<u8>>| u64::from_le_bytes(v.unwrap().try_into().unwrap());
    let total = ACCOUNTS * START;
    let committed = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (db, committed) = (&db, &committed);
            s.spawn(move || {
                let mut x = t + 1;
                for _ in 0..150 {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let (a, b) = ((x >> 33) % ACCOUNTS, (x >> 17) % ACCOUNTS);
                    if a == b {
                        continue;
                    }
                    let mut w = db.begin_write();
                    let (va, vb) = (
                        balance(w.get(&acct(a)).unwrap()),
                        balance(w.get(&acct(b)).unwrap()),
                    );
                    let amount = (x >> 40) % 50;
                    if va < amount {
                        continue;
                    }
                    w.put(&acct(a), &(va - amount).to_le_bytes()).unwrap();
                    w.put(&acct(b), &(vb + amount).to_le_bytes()).unwrap();
                    match w.commit() {
                        Ok(_) => {
                            committed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        Err(Error::Conflict { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
            });
        }
        for _ in 0..2 {
            let db = &db;
            s.spawn(move || {
                for _ in 0..100 {
                    let r = db.begin_read();
                    let sum: u64 = r
                        .prefix(b"acct")
                        .map(|e| u64::from_le_bytes(e.unwrap().1.try_into().unwrap()))
                        .sum();
                    assert_eq!(sum, total, "a snapshot saw a half-done transfer");
                }
            });
        }
        let db = &db;
        s.spawn(move || {
            for _ in 0..20 {
                db.checkpoint().unwrap();
            }
        });
    });
    assert!(committed.load(std::sync::atomic::Ordering::SeqCst) > 100);
    drop(db);
    let db = open(&disk, &options).unwrap();
    let r = db.begin_read();
    let sum: u64 = r
        .prefix(b"acct")
        .map(|e| u64::from_le_bytes(e.unwrap().1.try_into().unwrap()))
        .sum();
    assert_eq!(sum, total);
}

/// Deleting most keys compacts the leaves they were spread over, instead of leaving
/// one nearly empty page per old leaf.
#[test]
fn deletions_compact_neighbouring_leaves() {
    let disk = SimDisk::new(8);
    let db = open(&disk, &small_options()).unwrap();
    let tree_pages = |db: &Db| -> u64 {
        let pin = db.pin_generation();
        pin.tree_pages().unwrap().iter().map(|r| r.page_count).sum()
    };
    for chunk in 0..30u32 {
        let mut w = db.begin_write();
        for i in chunk * 100..chunk * 100 + 100 {
            w.put(&key(i), &[5u8; 100]).unwrap();
        }
        w.commit().unwrap();
    }
    db.checkpoint().unwrap();
    let full = tree_pages(&db);
    for chunk in 0..30u32 {
        let mut w = db.begin_write();
        for i in (chunk * 100..chunk * 100 + 100).filter(|i| i % 10 != 0) {
            w.delete(&key(i)).unwrap();
        }
        w.commit().unwrap();
    }
    db.checkpoint().unwrap();
    let sparse = tree_pages(&db);
    assert!(
        sparse * 4 < full,
        "{full} pages before, {sparse} after deleting 90%"
    );
    assert_eq!(read_all(&db).unwrap().len(), 300);
}
