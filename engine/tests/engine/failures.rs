//! Failure behaviour: poisoning, running out of space, foreign directories, newer
//! formats, torn WAL tails versus damage before the tail, corrupt pages, read errors.

use crate::common::{DIR, open, read_all, small_options};
use ryu_engine::{Db, Error, Options};
use ryu_io::{Disk, DynFile};
use ryu_sim::{DiskFaults, Ratio, SimDisk};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn put(db: &Db, k: &str, v: &[u8]) -> ryu_engine::Result<u64> {
    let mut w = db.begin_write();
    w.put(k.as_bytes(), v)?;
    w.commit()
}

fn file(disk: &SimDisk, path: &str) -> DynFile {
    disk.open(&Path::new(DIR).join(path)).unwrap()
}

/// crc32 (IEEE), bit by bit: enough to forge a version stamp in a test.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Write format version `version` and its stamp into the header at `offset` of `f`.
fn stamp_version(f: &DynFile, offset: u64, version: u32) {
    let mut head = [0u8; 12];
    f.read_at(offset, &mut head).unwrap();
    head[8..12].copy_from_slice(&version.to_le_bytes());
    f.write_at(offset, &head).unwrap();
    f.write_at(offset + 12, &crc32(&head).to_le_bytes())
        .unwrap();
    f.sync_data().unwrap();
}

fn segment(n: u64) -> String {
    format!("wal/{n:012}.log")
}

fn flip(f: &DynFile, offset: u64) {
    let mut b = [0u8; 1];
    f.read_at(offset, &mut b).unwrap();
    b[0] ^= 0x10;
    f.write_at(offset, &b).unwrap();
    f.sync_data().unwrap();
}

/// Offset just past the last non-zero byte of a preallocated segment.
fn data_end(f: &DynFile) -> u64 {
    let mut b = vec![0u8; f.len().unwrap() as usize];
    f.read_at(0, &mut b).unwrap();
    b.iter().rposition(|&x| x != 0).map_or(0, |p| p as u64 + 1)
}

#[test]
fn failed_sync_poisons_until_reopen() {
    let disk = SimDisk::new(11);
    let db = open(&disk, &small_options()).unwrap();
    put(&db, "kept", b"1").unwrap();
    disk.set_faults(DiskFaults {
        sync_error: Ratio::ONE,
        ..DiskFaults::default()
    });
    assert!(matches!(put(&db, "doubt", b"2"), Err(Error::Io { .. })));
    disk.set_faults(DiskFaults::default());
    assert!(db.is_poisoned());
    assert_eq!(put(&db, "refused", b"3"), Err(Error::Poisoned));
    assert_eq!(db.checkpoint(), Err(Error::Poisoned));
    assert_eq!(
        db.apply_at(100, vec![(b"x".to_vec(), None)]),
        Err(Error::Poisoned)
    );
    // Reads still work, and never show the commit whose sync failed.
    assert_eq!(db.begin_read().get(b"kept").unwrap(), Some(b"1".to_vec()));
    assert_eq!(db.begin_read().get(b"doubt").unwrap(), None);
    drop(db);
    let db = open(&disk, &small_options()).unwrap();
    assert_eq!(db.begin_read().get(b"kept").unwrap(), Some(b"1".to_vec()));
    assert_eq!(db.begin_read().get(b"refused").unwrap(), None);
    put(&db, "after", b"4").unwrap();
}

/// Regression (found by the `cluster` scenario, seed 7): after a failed WAL sync the
/// record stays readable in the page cache but is not durable, and Linux will not
/// write it back on a later fsync. Recovery replayed it, the engine went on writing
/// into a new segment and synced that, and a power loss then left a gap between the
/// segments ("WAL segment starts at LSN 14 but 13 is next"): an unopenable database.
/// Recovery now ends with a checkpoint (as PostgreSQL's end-of-recovery checkpoint),
/// which rewrites what it replayed, so nothing it builds on can vanish later.
#[test]
fn regression_replayed_wal_from_a_failed_sync_is_made_durable_on_open() {
    let disk = SimDisk::new(12);
    let db = open(&disk, &small_options()).unwrap();
    put(&db, "kept", b"1").unwrap();
    disk.set_faults(DiskFaults {
        sync_error: Ratio::ONE,
        ..DiskFaults::default()
    });
    assert!(matches!(put(&db, "doubt", b"2"), Err(Error::Io { .. })));
    disk.set_faults(DiskFaults::default());
    drop(db); // the process dies; the page cache (with "doubt") survives
    let db = open(&disk, &small_options()).unwrap();
    let doubt = db.begin_read().get(b"doubt").unwrap();
    put(&db, "after", b"3").unwrap();
    drop(db);
    disk.crash(); // power loss
    let db = open(&disk, &small_options()).unwrap();
    let r = db.begin_read();
    assert_eq!(r.get(b"kept").unwrap(), Some(b"1".to_vec()));
    assert_eq!(r.get(b"after").unwrap(), Some(b"3".to_vec()));
    assert_eq!(r.get(b"doubt").unwrap(), doubt);
}

/// Regression: opening a database in a new `a/b/db` synced only `a/b` (which holds
/// `db`), so a power cut could drop `a` from the root, and with it every commit made
/// since. Every directory made is now synced into its parent first.
#[test]
fn regression_a_database_in_new_nested_directories_survives_a_power_cut() {
    let dir = Path::new("a/b/db");
    for seed in 0..16 {
        let disk = SimDisk::new(seed);
        let db = Db::open(Arc::new(disk.clone()), dir, small_options()).unwrap();
        put(&db, "k", b"v").unwrap();
        drop(db);
        disk.crash();
        let db = Db::open(Arc::new(disk.clone()), dir, small_options()).unwrap();
        let got = db.begin_read().get(b"k").unwrap();
        assert_eq!(got, Some(b"v".to_vec()), "seed {seed}: the commit was lost");
    }
}

#[test]
fn failed_checkpoint_sync_poisons() {
    let disk = SimDisk::new(12);
    let db = open(&disk, &small_options()).unwrap();
    put(&db, "a", b"1").unwrap();
    disk.set_faults(DiskFaults {
        sync_error: Ratio::ONE,
        ..DiskFaults::default()
    });
    assert!(matches!(db.checkpoint(), Err(Error::Io { .. })));
    disk.set_faults(DiskFaults::default());
    assert_eq!(put(&db, "b", b"2"), Err(Error::Poisoned));
}

#[test]
fn no_space_fails_the_commit_and_writes_resume_once_space_is_freed() {
    let disk = SimDisk::new(13);
    let options = small_options();
    let db = open(&disk, &options).unwrap();
    put(&db, "first", b"1").unwrap();
    let quota = disk.used_bytes() + 100_000;
    disk.set_faults(DiskFaults {
        quota_bytes: Some(quota),
        ..DiskFaults::default()
    });
    let value = vec![7u8; 2000];
    let mut acked = Vec::new();
    let mut failed = None;
    for i in 0..500 {
        let k = format!("k{i:04}");
        match put(&db, &k, &value) {
            Ok(_) => acked.push(k),
            Err(e) => {
                failed = Some((k, e));
                break;
            }
        }
    }
    let (failed_key, err) = failed.expect("the quota must run out");
    assert_eq!(err, Error::NoSpace);
    assert!(err.to_string().contains("no space"), "{err}");
    assert!(
        !db.is_poisoned(),
        "running out of space is not a sync failure"
    );
    // A checkpoint may also run out of space; it must not harm anything either.
    let _ = db.checkpoint();
    let r = db.begin_read();
    assert_eq!(r.get(b"first").unwrap(), Some(b"1".to_vec()));
    for k in &acked {
        assert_eq!(r.get(k.as_bytes()).unwrap().as_deref(), Some(&value[..]));
    }
    assert_eq!(r.get(failed_key.as_bytes()).unwrap(), None);
    drop(r);
    // Free space: writes work again, without a reopen.
    disk.set_faults(DiskFaults::default());
    put(&db, "later", b"2").unwrap();
    db.checkpoint().unwrap();
    drop(db);
    let db = open(&disk, &options).unwrap();
    let all = read_all(&db).unwrap();
    assert_eq!(all.len(), acked.len() + 2);
    assert!(!all.contains_key(failed_key.as_bytes()));
}

#[test]
fn foreign_directory_and_foreign_file_are_not_a_database() {
    let disk = SimDisk::new(14);
    disk.create_dir_all(Path::new(DIR)).unwrap();
    disk.create(&Path::new(DIR).join("notes.txt")).unwrap();
    let err = open(&disk, &small_options()).unwrap_err();
    assert!(matches!(err, Error::NotADatabase { .. }), "{err}");

    let disk = SimDisk::new(15);
    disk.create_dir_all(&Path::new(DIR).join("wal")).unwrap();
    let f = disk.create(&Path::new(DIR).join("data")).unwrap();
    f.write_at(0, &[b'x'; 9000]).unwrap();
    let err = open(&disk, &small_options()).unwrap_err();
    assert!(matches!(err, Error::NotADatabase { .. }), "{err}");
    assert!(err.to_string().contains("not a Ryu database"), "{err}");
}

#[test]
fn lost_data_file_beside_a_wal_is_corruption_not_a_fresh_database() {
    let disk = SimDisk::new(25);
    let db = open(&disk, &small_options()).unwrap();
    put(&db, "a", b"1").unwrap();
    drop(db);
    disk.remove(&Path::new(DIR).join("data")).unwrap();
    let err = open(&disk, &small_options()).unwrap_err();
    assert!(err.is_corrupted(), "{err}");
    assert!(
        !disk.list(&Path::new(DIR).join("wal")).unwrap().is_empty(),
        "the WAL is kept"
    );
}

#[test]
fn newer_format_versions_are_refused() {
    let disk = SimDisk::new(16);
    let db = open(&disk, &small_options()).unwrap();
    put(&db, "a", b"1").unwrap();
    db.checkpoint().unwrap();
    drop(db);
    // Superblock format version: offset 8 of each slot, stamped at offset 12.
    let data = file(&disk, "data");
    stamp_version(&data, 0, 7);
    let err = open(&disk, &small_options()).unwrap_err();
    assert_eq!(
        err,
        Error::UnsupportedVersion {
            file: PathBuf::from("db/data"),
            found: 7,
            supported: 1
        }
    );

    // WAL segment format version: offset 8 of the segment header.
    let disk = SimDisk::new(17);
    let db = open(&disk, &small_options()).unwrap();
    put(&db, "a", b"1").unwrap();
    drop(db);
    let seg = file(&disk, &segment(1));
    stamp_version(&seg, 0, 9);
    let err = open(&disk, &small_options()).unwrap_err();
    assert!(
        matches!(err, Error::UnsupportedVersion { found: 9, .. }),
        "{err}"
    );
}

/// Three acknowledged commits with values long enough that each record spans sectors.
fn three_commits(seed: u64) -> (SimDisk, Options) {
    let disk = SimDisk::new(seed);
    let options = small_options();
    let db = open(&disk, &options).unwrap();
    for k in ["a", "b", "c"] {
        put(&db, k, &[k.as_bytes()[0]; 1500]).unwrap();
    }
    drop(db);
    (disk, options)
}

#[test]
fn torn_wal_tail_is_truncated() {
    let (disk, options) = three_commits(18);
    let seg = file(&disk, &segment(1));
    let end = data_end(&seg);
    // As a crash before the sync would: the record's last sector never reached the media.
    let sector_start = (end - 1) / 512 * 512;
    seg.write_at(sector_start, &vec![0u8; (end - sector_start) as usize])
        .unwrap();
    seg.sync_data().unwrap();
    let db = open(&disk, &options).unwrap();
    let state = read_all(&db).unwrap();
    assert_eq!(
        state.keys().cloned().collect::<Vec<_>>(),
        vec![b"a".to_vec(), b"b".to_vec()]
    );
    assert_eq!(db.last_committed_ts(), 2);
    put(&db, "d", b"4").unwrap();
    drop(db);
    // The cut tail stays cut; the new commit is in the next segment.
    let db = open(&disk, &options).unwrap();
    assert_eq!(read_all(&db).unwrap().len(), 3);
    assert_eq!(db.last_committed_ts(), 3);
}

#[test]
fn bit_flip_in_the_last_acknowledged_record_is_corruption_not_a_torn_tail() {
    let (disk, options) = three_commits(19);
    let seg = file(&disk, &segment(1));
    let end = data_end(&seg);
    flip(&seg, end - 700);
    let err = open(&disk, &options).unwrap_err();
    assert!(
        matches!(&err, Error::Corrupted { file, .. } if file.ends_with(segment(1))),
        "{err}"
    );
}

#[test]
fn damage_before_the_tail_is_corruption_with_file_and_offset() {
    let (disk, options) = three_commits(20);
    let seg = file(&disk, &segment(1));
    flip(&seg, 64 + 200); // inside the first record, which starts right after the header
    let err = open(&disk, &options).unwrap_err();
    let want = PathBuf::from("db").join(segment(1));
    assert!(
        matches!(&err, Error::Corrupted { file, offset: 64, .. } if *file == want),
        "{err}"
    );
}

#[test]
fn damage_in_a_segment_followed_by_others_is_corruption() {
    let disk = SimDisk::new(21);
    let options = small_options();
    let db = open(&disk, &options).unwrap();
    for i in 0..120 {
        put(&db, &format!("k{i}"), &[1u8; 1500]).unwrap();
    }
    drop(db);
    let names = disk.list(&Path::new(DIR).join("wal")).unwrap();
    assert!(names.len() >= 3, "{names:?}");
    let first = file(&disk, &format!("wal/{}", names[0]));
    let end = data_end(&first);
    // Damage the last record of a full segment: not a tail, because segments follow.
    flip(&first, end - 100);
    let err = open(&disk, &options).unwrap_err();
    assert!(err.is_corrupted(), "{err}");
}

#[test]
fn corrupt_page_is_reported_never_returned() {
    let disk = SimDisk::new(22);
    let options = Options {
        cache_pages: 2,
        ..small_options()
    };
    let db = open(&disk, &options).unwrap();
    for chunk in 0..10 {
        let mut w = db.begin_write();
        for i in 0..40 {
            w.put(format!("k{chunk:02}{i:03}").as_bytes(), &[9u8; 200])
                .unwrap();
        }
        w.commit().unwrap();
    }
    db.checkpoint().unwrap();
    let pages = db.pin_generation().tree_pages().unwrap();
    drop(db);
    let total: u64 = pages.iter().map(|r| r.page_count).sum();
    assert!(total > 5);
    let data = file(&disk, "data");
    for r in &pages {
        for p in r.first_page..r.first_page + r.page_count {
            flip(&data, p * 4096 + 1000);
        }
    }
    // Every tree page is damaged; the WAL below the checkpoint is gone, so nothing can
    // repair it: opening or reading must say so.
    match open(&disk, &options) {
        Err(e) => assert!(e.is_corrupted(), "{e}"),
        Ok(db) => {
            let err = read_all(&db).unwrap_err();
            assert!(err.is_corrupted(), "{err}");
            assert!(db.begin_read().get(b"k00000").unwrap_err().is_corrupted());
        }
    }
}

#[test]
fn damaged_newest_superblock_falls_back_and_the_wal_repairs() {
    let disk = SimDisk::new(23);
    let options = small_options();
    let db = open(&disk, &options).unwrap();
    put(&db, "a", b"1").unwrap();
    db.checkpoint().unwrap();
    put(&db, "b", b"2").unwrap();
    let info = db.checkpoint().unwrap();
    put(&db, "c", b"3").unwrap();
    drop(db);
    let data = file(&disk, "data");
    flip(&data, (info.generation % 2) * 4096 + 20);
    let db = open(&disk, &options).unwrap();
    assert_eq!(read_all(&db).unwrap().len(), 3);
    // Recovery fell back to generation - 1 and replayed "b" and "c" from the WAL;
    // its end-of-recovery checkpoint then wrote the next generation into the damaged
    // slot.
    assert_eq!(db.stats().generation, info.generation);
    drop(db);
    let db = open(&disk, &options).unwrap();
    assert_eq!(read_all(&db).unwrap().len(), 3);
}

/// Without `sync_commits` too: the WAL a checkpoint rotated away from is synced
/// before its superblock, so the fallback to the previous generation still finds
/// every commit the damaged checkpoint held.
#[test]
fn damaged_newest_superblock_falls_back_without_commit_syncs() {
    // A crash keeps, drops or tears each unsynced write at random: try many.
    for seed in 0..32 {
        let disk = SimDisk::new(100 + seed);
        let options = Options {
            sync_commits: false,
            ..small_options()
        };
        let db = open(&disk, &options).unwrap();
        put(&db, "a", b"1").unwrap();
        db.checkpoint().unwrap();
        put(&db, "b", b"2").unwrap();
        let info = db.checkpoint().unwrap();
        put(&db, "c", b"3").unwrap();
        drop(db);
        disk.crash(); // "c" was never synced: the crash may keep or drop it
        let data = file(&disk, "data");
        flip(&data, (info.generation % 2) * 4096 + 20);
        let db = open(&disk, &options).unwrap();
        let got = read_all(&db).unwrap();
        for k in ["a", "b"] {
            assert!(
                got.contains_key(k.as_bytes()),
                "seed {seed}: the fallback lost {k:?}, which the damaged checkpoint held: {got:?}"
            );
        }
    }
}

#[test]
fn read_errors_are_errors() {
    let disk = SimDisk::new(24);
    let options = Options {
        cache_pages: 1,
        ..small_options()
    };
    let db = open(&disk, &options).unwrap();
    for i in 0..300 {
        put(&db, &format!("k{i:03}"), &[3u8; 100]).unwrap();
    }
    db.checkpoint().unwrap();
    disk.set_faults(DiskFaults {
        read_error: Ratio::ONE,
        ..DiskFaults::default()
    });
    let r = db.begin_read();
    let err = r.get(b"k000").unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    let err = read_all(&db).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    disk.set_faults(DiskFaults::default());
    assert_eq!(r.get(b"k000").unwrap(), Some(vec![3u8; 100]));
    let _ = Arc::new(0);
}

/// A tree whose every page and pointer checks out, but two leaves hold each other's
/// keys (what a bug in the merge, or a page copied whole to the wrong place, would
/// leave): reads must report it, not miss keys or return them out of order.
#[test]
fn leaves_outside_their_parents_range_are_corruption() {
    use ryu_engine::page::{Node, NodeRef, PAGE_SIZE, SuperSlot, Superblock, page_checksum};
    let disk = SimDisk::new(24);
    let options = small_options();
    let db = open(&disk, &options).unwrap();
    let mut w = db.begin_write();
    for i in 0..60 {
        w.put(format!("k{i:03}").as_bytes(), &[7u8; 150]).unwrap();
    }
    w.commit().unwrap();
    db.checkpoint().unwrap();
    assert_eq!(db.begin_read().get(b"k059").unwrap(), Some(vec![7u8; 150]));
    drop(db);

    let data = file(&disk, "data");
    let read_page = |page: u64| {
        let mut b = vec![0u8; PAGE_SIZE];
        data.read_at(page * PAGE_SIZE as u64, &mut b).unwrap();
        b
    };
    let sb = [0, 1]
        .into_iter()
        .filter_map(|slot| match Superblock::decode(&read_page(slot)) {
            SuperSlot::Valid(sb) => Some(sb),
            _ => None,
        })
        .max_by_key(|sb| sb.generation)
        .unwrap();
    let root = sb.root.unwrap();
    let Node::Branch {
        level,
        keys,
        mut children,
    } = Node::decode(&read_page(root.page), root, Path::new("data")).unwrap()
    else {
        panic!("60 entries of 150 bytes make a branch root over leaves");
    };
    assert_eq!(level, 1);
    let (a, b) = (children[0], children[1]);
    let leaf_a = Node::decode(&read_page(a.page), a, Path::new("data")).unwrap();
    let leaf_b = Node::decode(&read_page(b.page), b, Path::new("data")).unwrap();
    // Swap the leaves' contents in place, then re-point the branch and the superblock
    // at the rewritten pages, checksums and all.
    let rewrite = |at: NodeRef, node: &Node| {
        let bytes = node.encode(at.page, at.generation);
        data.write_at(at.page * PAGE_SIZE as u64, &bytes).unwrap();
        NodeRef {
            checksum: page_checksum(&bytes),
            ..at
        }
    };
    children[0] = rewrite(a, &leaf_b);
    children[1] = rewrite(b, &leaf_a);
    let root = rewrite(
        root,
        &Node::Branch {
            level,
            keys,
            children,
        },
    );
    let sb = Superblock {
        root: Some(root),
        ..sb
    };
    data.write_at(sb.slot() * PAGE_SIZE as u64, &sb.encode())
        .unwrap();
    data.sync_data().unwrap();

    let db = open(&disk, &options).unwrap();
    let r = db.begin_read();
    let err = r.get(b"k000").unwrap_err();
    assert!(err.is_corrupted(), "{err}");
    let err = read_all(&db).unwrap_err();
    assert!(err.is_corrupted(), "{err}");
}
