//! The durable log (`DiskLog`) over `SimDisk`: round trips, conflicts, compaction,
//! snapshot installation, corruption reporting, and a crash sweep against a model.

use ryu_io::{Disk, DynDisk};
use ryu_raft::{ConfState, Entry, EntryKind, HardState, NodeId, SnapshotMeta, Storage};
use ryu_raft::{DiskLog, DiskLogOptions, LogError};
use ryu_sim::{DiskFaults, Ratio, SimDisk, SimRng};
use std::path::Path;
use std::sync::Arc;

fn e(index: u64, term: u64, data: &str) -> Entry {
    Entry {
        term,
        index,
        kind: EntryKind::Normal,
        data: data.as_bytes().to_vec(),
    }
}

fn conf() -> ConfState {
    ConfState::with_voters([1, 2, 3])
}

fn small() -> DiskLogOptions {
    DiskLogOptions {
        segment_size_bytes: 2048,
    }
}

fn open(disk: &SimDisk) -> Result<DiskLog, LogError> {
    let d: DynDisk = Arc::new(disk.clone());
    DiskLog::open(d, Path::new("raft"), conf(), small())
}

fn all(log: &DiskLog) -> Vec<(u64, u64, Vec<u8>)> {
    log.all_entries()
        .iter()
        .map(|e| (e.index, e.term, e.data.clone()))
        .collect()
}

#[test]
fn entries_hard_state_and_conflicts_survive_reopen_and_crash() {
    let disk = SimDisk::new(1);
    let mut log = open(&disk).unwrap();
    assert_eq!(log.initial_state().unwrap().conf_state, conf());
    log.append(&[e(1, 1, "a"), e(2, 1, "b"), e(3, 1, "c")])
        .unwrap();
    log.set_hard_state(HardState {
        term: 2,
        vote: Some(NodeId(2)),
        commit: 1,
    })
    .unwrap();
    // A conflicting suffix from index 2 is replaced.
    log.append(&[e(2, 2, "B"), e(3, 2, "C"), e(4, 2, "D")])
        .unwrap();
    disk.crash();
    let log = open(&disk).unwrap();
    assert_eq!(
        log.hard_state(),
        HardState {
            term: 2,
            vote: Some(NodeId(2)),
            commit: 1
        }
    );
    assert_eq!(log.last_index().unwrap(), 4);
    assert_eq!(log.term(2).unwrap(), 2);
    assert_eq!(
        log.entries(2, 5, u64::MAX).unwrap(),
        vec![e(2, 2, "B"), e(3, 2, "C"), e(4, 2, "D")]
    );
}

#[test]
fn compaction_deletes_whole_segments_and_survives_reopen() {
    let disk = SimDisk::new(2);
    let mut log = open(&disk).unwrap();
    let big = "x".repeat(700);
    for i in 1..=20 {
        log.append(&[e(i, 1, &big)]).unwrap();
    }
    let before = log.segment_count();
    assert!(before >= 5, "{before}");
    log.compact(SnapshotMeta {
        index: 15,
        term: 1,
        conf_state: conf(),
    })
    .unwrap();
    assert!(log.segment_count() < before);
    assert_eq!(log.first_index().unwrap(), 16);
    disk.crash();
    let log = open(&disk).unwrap();
    assert_eq!(log.first_index().unwrap(), 16);
    assert_eq!(log.last_index().unwrap(), 20);
    assert!(matches!(
        log.entries(15, 16, u64::MAX),
        Err(ryu_raft::StorageError::Compacted)
    ));
    assert_eq!(log.term(15).unwrap(), 1);
}

#[test]
fn installed_snapshot_discards_the_old_log_even_if_its_files_survive() {
    let disk = SimDisk::new(3);
    let mut log = open(&disk).unwrap();
    log.append(&[e(1, 1, "a"), e(2, 1, "b"), e(3, 1, "stale")])
        .unwrap();
    // Keep a copy of the old segment to put back, as if its deletion was lost.
    let seg = disk
        .list(Path::new("raft"))
        .unwrap()
        .into_iter()
        .find(|n| n.starts_with("log-"))
        .unwrap();
    let f = disk.open(&Path::new("raft").join(&seg)).unwrap();
    let mut image = vec![0; f.len().unwrap() as usize];
    f.read_at(0, &mut image).unwrap();
    log.install_snapshot(SnapshotMeta {
        index: 10,
        term: 3,
        conf_state: conf(),
    })
    .unwrap();
    drop(log);
    let revived = disk.create(&Path::new("raft").join(&seg)).unwrap();
    revived.write_at(0, &image).unwrap();
    let mut log = open(&disk).unwrap();
    assert_eq!(
        (log.first_index().unwrap(), log.last_index().unwrap()),
        (11, 10)
    );
    assert_eq!(log.hard_state().commit, 10);
    assert!(
        !disk.exists(&Path::new("raft").join(&seg)).unwrap(),
        "stale segment removed"
    );
    log.append(&[e(11, 3, "new")]).unwrap();
    drop(log);
    let log = open(&disk).unwrap();
    assert_eq!(all(&log), vec![(11, 3, b"new".to_vec())]);
}

/// Damage to a batch followed by valid batches is corruption, never skipped.
#[test]
fn damage_before_the_tail_is_reported() {
    let disk = SimDisk::new(4);
    let mut log = open(&disk).unwrap();
    for i in 1..=3 {
        log.append(&[e(i, 1, "entry")]).unwrap();
    }
    drop(log);
    let seg = disk
        .list(Path::new("raft"))
        .unwrap()
        .into_iter()
        .find(|n| n.starts_with("log-"))
        .unwrap();
    let f = disk.open(&Path::new("raft").join(&seg)).unwrap();
    f.write_at(512 + 40, b"\xff").unwrap(); // inside the first batch's payload
    match open(&disk) {
        Err(LogError::Corrupted { offset, .. }) => assert_eq!(offset, 512),
        other => panic!("expected corruption, got {other:?}"),
    }
}

fn flip_meta_byte(disk: &SimDisk, offset: u64) {
    let f = disk.open(&Path::new("raft").join("meta")).unwrap();
    let mut b = [0u8; 1];
    f.read_at(offset, &mut b).unwrap();
    f.write_at(offset, &[b[0] ^ 0x10]).unwrap();
    f.sync_data().unwrap();
}

/// Regression (scenario disk-corruption-on-a-minority, seeds 3118 and 3992): bit rot
/// in the newer meta slot made `open` fall back to the older slot, rolling term,
/// vote and commit back; the node then discarded entries it had acknowledged. Term
/// and vote are now in both slots; rot in either loses at most the newest commit.
#[test]
fn regression_meta_rot_in_one_slot_never_rolls_term_or_vote_back() {
    for slot in 0..2u64 {
        let disk = SimDisk::new(40 + slot);
        let mut log = open(&disk).unwrap();
        log.append(&[e(1, 1, "a"), e(2, 3, "b")]).unwrap();
        for (term, vote) in [(2, 2), (3, 3)] {
            log.set_hard_state(HardState {
                term,
                vote: Some(NodeId(vote)),
                commit: 0,
            })
            .unwrap();
        }
        drop(log);
        flip_meta_byte(&disk, slot * 4096 + 30); // inside the slot's payload
        let mut log = open(&disk).unwrap();
        let hs = log.hard_state();
        assert_eq!(
            (hs.term, hs.vote),
            (3, Some(NodeId(3))),
            "slot {slot}: {hs:?}"
        );
        assert_eq!(all(&log).len(), 2, "slot {slot}: entries lost");
        // A commit-only update goes to one slot; rot in either loses at most it.
        log.set_hard_state(HardState {
            term: 3,
            vote: Some(NodeId(3)),
            commit: 2,
        })
        .unwrap();
        drop(log);
        flip_meta_byte(&disk, (1 - slot) * 4096 + 30);
        let hs = open(&disk).unwrap().hard_state();
        assert_eq!((hs.term, hs.vote), (3, Some(NodeId(3))), "slot {slot}");
        assert!(hs.commit <= 2, "slot {slot}: {hs:?}");
    }
}

/// Both meta slots damaged: reported, never guessed around.
#[test]
fn both_meta_slots_damaged_is_reported() {
    let disk = SimDisk::new(45);
    let mut log = open(&disk).unwrap();
    log.append(&[e(1, 1, "a")]).unwrap();
    drop(log);
    flip_meta_byte(&disk, 30);
    flip_meta_byte(&disk, 4096 + 30);
    match open(&disk) {
        Err(LogError::Corrupted { .. }) => {}
        other => panic!("expected corruption, got {other:?}"),
    }
}

/// A damaged final batch is a torn tail (cut off) unless the commit index covers it.
#[test]
fn torn_tail_is_cut_but_not_below_the_commit_index() {
    for commit in [2, 3] {
        let disk = SimDisk::new(5);
        let mut log = open(&disk).unwrap();
        for i in 1..=3 {
            log.append(&[e(i, 1, "entry")]).unwrap();
        }
        log.set_hard_state(HardState {
            term: 1,
            vote: None,
            commit,
        })
        .unwrap();
        drop(log);
        let seg = disk
            .list(Path::new("raft"))
            .unwrap()
            .into_iter()
            .find(|n| n.starts_with("log-"))
            .unwrap();
        let f = disk.open(&Path::new("raft").join(&seg)).unwrap();
        f.write_at(512 * 3 + 40, b"\xff").unwrap(); // the third batch
        match (commit, open(&disk)) {
            (2, Ok(log)) => assert_eq!(log.last_index().unwrap(), 2),
            (3, Err(LogError::Corrupted { .. })) => {}
            (c, other) => panic!("commit {c}: {other:?}"),
        }
    }
}

/// The model check: random appends (with conflicting overwrites), hard-state changes,
/// compactions, with injected write/sync errors, process restarts (page cache kept)
/// and power losses. After recovery the log is exactly the state after the last
/// operation that returned Ok, or, if the last operation failed, possibly the state it
/// was trying to reach.
#[test]
fn crash_sweep_recovers_exactly_what_was_acknowledged() {
    let seeds: u64 = std::env::var("RYU_DISKLOG_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let only: Option<u64> = std::env::var("RYU_DISKLOG_SEED")
        .ok()
        .and_then(|s| s.parse().ok());
    for seed in only.map_or(0..seeds, |s| s..s + 1) {
        if let Err(msg) = crash_run(seed) {
            panic!(
                "seed {seed}: {msg}\nreplay: RYU_DISKLOG_SEED={seed} cargo test -p ryu-raft --test raft disk_log::crash_sweep"
            );
        }
    }
}

type State = (Vec<(u64, u64, Vec<u8>)>, HardState, u64);

fn snapshot_of(log: &DiskLog) -> State {
    (all(log), log.hard_state(), log.first_index().unwrap())
}

fn model_append(s: &State, batch: &[Entry]) -> State {
    let mut out = s.clone();
    let from = batch[0].index;
    out.0.retain(|(i, _, _)| *i < from);
    out.0
        .extend(batch.iter().map(|e| (e.index, e.term, e.data.clone())));
    out
}

fn crash_run(seed: u64) -> Result<(), String> {
    let mut rng = SimRng::new(seed);
    let faults = DiskFaults {
        write_error: Ratio::new(rng.below(20) as u32, 1000),
        sync_error: Ratio::new(rng.below(20) as u32, 1000),
        ..DiskFaults::default()
    };
    let disk = SimDisk::with_faults(rng.next_u64(), faults);
    let mut log = loop {
        match open(&disk) {
            Ok(log) => break log,
            Err(_) => disk.crash(),
        }
    };
    let mut acked: State = snapshot_of(&log);
    let mut term = 1;
    for step in 0..200 {
        let last = log.last_index().unwrap();
        let first = log.first_index().unwrap();
        let commit = log.hard_state().commit;
        let (result, intended) = match rng.below(10) {
            0..=5 => {
                // Overwrite from somewhere above the commit index, or append.
                let from = if rng.chance(Ratio::new(1, 4)) && last > commit {
                    rng.between(commit + 1, last)
                } else {
                    last + 1
                };
                if rng.chance(Ratio::new(1, 3)) {
                    term += 1;
                }
                let n = rng.between(1, 5);
                let batch: Vec<Entry> = (0..n)
                    .map(|k| {
                        e(
                            from + k,
                            term,
                            &format!("s{step}k{k}").repeat(rng.between(1, 60) as usize),
                        )
                    })
                    .collect();
                (log.append(&batch), model_append(&acked, &batch))
            }
            6 | 7 => {
                let commit = if last > commit {
                    rng.between(commit, last)
                } else {
                    commit
                };
                let hs = HardState {
                    term,
                    vote: Some(NodeId(rng.between(1, 3))),
                    commit,
                };
                let mut intended = acked.clone();
                intended.1 = hs;
                (log.set_hard_state(hs), intended)
            }
            8 if commit >= first => {
                let at = rng.between(first, commit);
                let mut intended = acked.clone();
                intended.0.retain(|(i, _, _)| *i > at);
                intended.2 = at + 1;
                (
                    log.compact(SnapshotMeta {
                        index: at,
                        term: log.term(at).unwrap(),
                        conf_state: conf(),
                    }),
                    intended,
                )
            }
            9 if rng.chance(Ratio::new(1, 4)) => {
                // A snapshot from the leader replaces the whole log.
                let index = last + rng.between(1, 10);
                term += 1;
                let snap = SnapshotMeta {
                    index,
                    term,
                    conf_state: conf(),
                };
                let mut intended = acked.clone();
                intended.0.clear();
                intended.1.commit = intended.1.commit.max(index);
                intended.2 = index + 1;
                (log.install_snapshot(snap), intended)
            }
            _ => (Ok(()), acked.clone()),
        };
        if std::env::var("RYU_DEBUG").is_ok() {
            eprintln!(
                "step {step}: {:?} -> {} counts={:?}",
                result,
                summary(&intended),
                disk.fault_counts()
            );
        }
        match result {
            Ok(()) => {
                acked = snapshot_of(&log);
                if acked != intended {
                    return Err(format!(
                        "step {step}: log {} but model {}",
                        summary(&acked),
                        summary(&intended)
                    ));
                }
            }
            Err(_) => {
                // The failed operation may or may not have taken effect; the process
                // stops, as after any failed sync, and comes back with or without
                // power loss.
                drop(log);
                if rng.chance(Ratio::new(1, 2)) {
                    disk.crash();
                }
                log = reopen(&disk, &acked, Some(&intended))?;
                acked = snapshot_of(&log);
                continue;
            }
        }
        if rng.chance(Ratio::new(1, 20)) {
            drop(log);
            disk.crash();
            log = reopen(&disk, &acked, None)?;
        }
    }
    Ok(())
}

fn reopen(disk: &SimDisk, acked: &State, maybe: Option<&State>) -> Result<DiskLog, String> {
    let log = loop {
        match open(disk) {
            Ok(log) => break log,
            Err(LogError::Io(e)) => {
                if std::env::var("RYU_DEBUG").is_ok() {
                    eprintln!("reopen failed: {e}");
                }
                disk.crash()
            }
            Err(LogError::Poisoned) => disk.crash(),
            Err(other) => return Err(format!("recovery failed: {other}")),
        }
    };
    let got = snapshot_of(&log);
    if got != *acked && maybe != Some(&got) {
        return Err(format!(
            "recovered {}\n acked {}\n maybe {:?}",
            summary(&got),
            summary(acked),
            maybe.map(summary)
        ));
    }
    Ok(log)
}

fn summary(s: &State) -> String {
    let idx: Vec<String> = s.0.iter().map(|(i, t, _)| format!("{i}/{t}")).collect();
    format!("first={} hs={:?} [{}]", s.2, s.1, idx.join(" "))
}
