//! Property tests pinning `SimDisk`'s crash semantics against an independent oracle:
//!
//! - synced data always survives;
//! - unsynced data survives whole, vanishes, or is torn at sector boundaries;
//! - unsynced directory operations may vanish, synced ones never do;
//! - nothing else changes: every byte after a crash is a durable byte, a byte some
//!   unsynced write put there, or a zero where the file had grown or been truncated.
//!
//! The oracle does not look inside `SimDisk`: it records what the test did and checks
//! the disk's state after the crash against what the rules allow. (It uses
//! `SimDisk::file_id`, the equivalent of an inode number, to follow files.)

use proptest::prelude::*;
use ryu_io::{Disk, DynFile};
use ryu_sim::{SECTOR_SIZE, SimDisk};
use std::collections::BTreeMap;
use std::path::Path;

const PATHS: [&str; 4] = ["a", "b", "d/a", "d/b"];
const DIRS: [&str; 2] = ["", "d"];

#[derive(Debug, Clone)]
enum Op {
    Create(usize),
    Write {
        path: usize,
        offset: u64,
        len: usize,
        byte: u8,
    },
    SetLen {
        path: usize,
        len: u64,
    },
    Sync(usize),
    Rename(usize, usize),
    Remove(usize),
    SyncDir(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let p = 0..PATHS.len();
    prop_oneof![
        2 => p.clone().prop_map(Op::Create),
        6 => (p.clone(), 0..3000u64, 1..1300usize, 1..=255u8)
            .prop_map(|(path, offset, len, byte)| Op::Write { path, offset, len, byte }),
        1 => (p.clone(), 0..3000u64).prop_map(|(path, len)| Op::SetLen { path, len }),
        3 => p.clone().prop_map(Op::Sync),
        1 => (p.clone(), p.clone()).prop_map(|(a, b)| Op::Rename(a, b)),
        1 => p.clone().prop_map(Op::Remove),
        2 => (0..DIRS.len()).prop_map(Op::SyncDir),
    ]
}

#[derive(Debug, Clone)]
enum Pending {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

/// What the oracle knows of one file (by id).
#[derive(Debug, Default)]
struct FileRecord {
    durable: Vec<u8>,
    pending: Vec<Pending>,
}

/// What the oracle knows of one path.
#[derive(Debug, Default, Clone)]
struct PathRecord {
    /// The id at this path as of the last sync of its directory after its last change
    /// (`None` if absent then). Meaningful only while `stable`.
    durable: Option<u64>,
    /// Every id bound here since the path was last stable (possible crash outcomes).
    since_stable: Vec<u64>,
    /// No namespace change to this path since its directory was last synced.
    stable: bool,
    /// The live id.
    live: Option<u64>,
}

fn dir_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(d, _)| d)
}

struct Oracle {
    files: BTreeMap<u64, FileRecord>,
    paths: BTreeMap<&'static str, PathRecord>,
    handles: BTreeMap<u64, DynFile>,
}

impl Oracle {
    fn new() -> Oracle {
        let stable = PathRecord {
            stable: true,
            ..Default::default()
        };
        Oracle {
            files: BTreeMap::new(),
            paths: PATHS.iter().map(|&p| (p, stable.clone())).collect(),
            handles: BTreeMap::new(),
        }
    }

    fn bind(&mut self, path: &'static str, id: Option<u64>) {
        let rec = self.paths.get_mut(path).unwrap();
        rec.live = id;
        rec.stable = false;
        rec.since_stable.extend(id);
    }

    fn apply(&mut self, disk: &SimDisk, op: &Op) {
        match *op {
            Op::Create(i) => {
                let path = PATHS[i];
                if disk.create(Path::new(path)).is_ok() {
                    let id = disk.file_id(Path::new(path)).unwrap();
                    self.handles.insert(id, disk.open(Path::new(path)).unwrap());
                    self.files.insert(id, FileRecord::default());
                    self.bind(path, Some(id));
                }
            }
            Op::Write {
                path,
                offset,
                len,
                byte,
            } => {
                let Some(id) = self.paths[PATHS[path]].live else {
                    return;
                };
                let data = vec![byte; len];
                self.handles[&id].write_at(offset, &data).unwrap();
                self.files
                    .get_mut(&id)
                    .unwrap()
                    .pending
                    .push(Pending::Write { offset, data });
            }
            Op::SetLen { path, len } => {
                let Some(id) = self.paths[PATHS[path]].live else {
                    return;
                };
                self.handles[&id].set_len(len).unwrap();
                self.files
                    .get_mut(&id)
                    .unwrap()
                    .pending
                    .push(Pending::SetLen(len));
            }
            Op::Sync(path) => {
                let Some(id) = self.paths[PATHS[path]].live else {
                    return;
                };
                self.handles[&id].sync_data().unwrap();
                let rec = self.files.get_mut(&id).unwrap();
                for p in std::mem::take(&mut rec.pending) {
                    match p {
                        Pending::Write { offset, data } => {
                            let end = offset as usize + data.len();
                            if rec.durable.len() < end {
                                rec.durable.resize(end, 0);
                            }
                            rec.durable[offset as usize..end].copy_from_slice(&data);
                        }
                        Pending::SetLen(len) => rec.durable.resize(len as usize, 0),
                    }
                }
            }
            Op::Rename(a, b) => {
                let (from, to) = (PATHS[a], PATHS[b]);
                let Some(id) = self.paths[from].live else {
                    return;
                };
                if from == to {
                    return;
                }
                disk.rename(Path::new(from), Path::new(to)).unwrap();
                self.bind(from, None);
                self.bind(to, Some(id));
            }
            Op::Remove(i) => {
                if self.paths[PATHS[i]].live.is_none() {
                    return;
                }
                disk.remove(Path::new(PATHS[i])).unwrap();
                self.bind(PATHS[i], None);
            }
            Op::SyncDir(d) => {
                disk.sync_dir(Path::new(DIRS[d])).unwrap();
                for (path, rec) in self.paths.iter_mut() {
                    if dir_of(path) == DIRS[d] {
                        *rec = PathRecord {
                            durable: rec.live,
                            since_stable: vec![],
                            stable: true,
                            live: rec.live,
                        };
                    }
                }
            }
        }
    }

    /// Check the disk after a crash against everything the rules allow.
    fn check_after_crash(&self, disk: &SimDisk) -> Result<(), TestCaseError> {
        for (&path, rec) in &self.paths {
            let found = disk.file_id(Path::new(path)).ok();
            if rec.stable {
                prop_assert_eq!(
                    found,
                    rec.durable,
                    "synced namespace entry {} changed",
                    path
                );
            } else if let Some(id) = found {
                let allowed = rec.durable == Some(id) || rec.since_stable.contains(&id);
                prop_assert!(allowed, "{} holds id {} that was never there", path, id);
            }
            if let Some(id) = found {
                let file = disk.open(Path::new(path)).unwrap();
                let mut image = vec![0u8; file.len().unwrap() as usize];
                file.read_at(0, &mut image).unwrap();
                self.check_file(path, &self.files[&id], &image)?;
            }
        }
        Ok(())
    }

    fn check_file(&self, path: &str, rec: &FileRecord, image: &[u8]) -> Result<(), TestCaseError> {
        if rec.pending.is_empty() {
            prop_assert_eq!(image, &rec.durable[..], "synced file {} changed", path);
            return Ok(());
        }
        let max_len = rec
            .pending
            .iter()
            .fold(rec.durable.len() as u64, |m, p| match p {
                Pending::Write { offset, data } => m.max(offset + data.len() as u64),
                Pending::SetLen(len) => m.max(*len),
            });
        prop_assert!(
            image.len() as u64 <= max_len,
            "{} grew beyond anything written",
            path
        );
        let min_truncate = rec.pending.iter().filter_map(|p| match p {
            Pending::SetLen(len) => Some(*len),
            Pending::Write { .. } => None,
        });
        let zero_from = min_truncate.fold(rec.durable.len() as u64, u64::min);
        for (pos, &byte) in image.iter().enumerate() {
            let pos64 = pos as u64;
            let durable = rec.durable.get(pos) == Some(&byte);
            let zero = byte == 0 && pos64 >= zero_from;
            let written = rec.pending.iter().any(|p| match p {
                Pending::Write { offset, data } => {
                    pos64 >= *offset && pos64 < offset + data.len() as u64 && data[0] == byte
                }
                Pending::SetLen(_) => false,
            });
            prop_assert!(
                durable || zero || written,
                "{} byte {} = {} was never written",
                path,
                pos,
                byte
            );
        }
        self.check_sector_atomicity(path, rec, image)
    }

    /// A pending write alone in a sector is all there or not there at all.
    fn check_sector_atomicity(
        &self,
        path: &str,
        rec: &FileRecord,
        image: &[u8],
    ) -> Result<(), TestCaseError> {
        let touches = |p: &Pending, sector: u64| match p {
            Pending::Write { offset, data } => {
                *offset < (sector + 1) * SECTOR_SIZE
                    && offset + data.len() as u64 > sector * SECTOR_SIZE
            }
            Pending::SetLen(_) => true,
        };
        for w in &rec.pending {
            let Pending::Write { offset, data } = w else {
                continue;
            };
            let end = offset + data.len() as u64;
            for sector in offset / SECTOR_SIZE..=(end - 1) / SECTOR_SIZE {
                if rec.pending.iter().filter(|p| touches(p, sector)).count() != 1 {
                    continue;
                }
                let lo = (*offset).max(sector * SECTOR_SIZE);
                let hi = end.min((sector + 1) * SECTOR_SIZE);
                let new = (lo..hi).all(|p| image.get(p as usize) == Some(&data[0]));
                let old = (lo..hi).all(|p| {
                    let before = rec.durable.get(p as usize).copied();
                    image.get(p as usize).copied() == before
                        || (before.is_none() && image.get(p as usize).is_none_or(|b| *b == 0))
                });
                prop_assert!(
                    new || old,
                    "{} sector {} holds part of a write",
                    path,
                    sector
                );
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn crash_keeps_exactly_what_the_rules_allow(seed in any::<u64>(), ops in prop::collection::vec(op(), 1..40)) {
        let disk = SimDisk::new(seed);
        disk.create_dir_all(Path::new("d")).unwrap();
        disk.sync_dir(Path::new("")).unwrap();
        let mut oracle = Oracle::new();
        for op in &ops {
            oracle.apply(&disk, op);
        }
        disk.crash();
        oracle.check_after_crash(&disk)?;
    }
}

/// The oracle has teeth: a "disk" that flips one durable byte after a crash, or
/// forgets a synced file, is caught.
#[test]
fn oracle_catches_a_lying_disk() {
    let disk = SimDisk::new(1);
    disk.create_dir_all(Path::new("d")).unwrap();
    disk.sync_dir(Path::new("")).unwrap();
    let mut oracle = Oracle::new();
    for op in [
        Op::Create(2),
        Op::Write {
            path: 2,
            offset: 0,
            len: 100,
            byte: 7,
        },
        Op::Sync(2),
        Op::SyncDir(1),
    ] {
        oracle.apply(&disk, &op);
    }
    disk.crash();
    assert!(oracle.check_after_crash(&disk).is_ok());
    // Rewrite one synced byte behind the oracle's back: the check must fail.
    let f = disk.open(Path::new("d/a")).unwrap();
    f.write_at(50, &[8]).unwrap();
    assert!(oracle.check_after_crash(&disk).is_err());
    // Remove the synced file behind the oracle's back: the check must fail.
    disk.remove(Path::new("d/a")).unwrap();
    assert!(oracle.check_after_crash(&disk).is_err());
}

/// Every outcome the rules allow actually happens: over many seeds an unsynced write
/// is sometimes kept, sometimes dropped, sometimes torn.
#[test]
fn unsynced_writes_are_kept_dropped_and_torn() {
    let (mut kept, mut dropped, mut torn) = (0, 0, 0);
    for seed in 0..300 {
        let disk = SimDisk::new(seed);
        let f = disk.create(Path::new("f")).unwrap();
        f.write_at(0, &[1u8; 2048]).unwrap();
        f.sync_data().unwrap();
        disk.sync_dir(Path::new("")).unwrap();
        f.write_at(0, &[2u8; 2048]).unwrap();
        disk.crash();
        let f = disk.open(Path::new("f")).unwrap();
        let mut image = vec![0u8; 2048];
        f.read_at(0, &mut image).unwrap();
        let new_sectors = image
            .chunks(512)
            .filter(|s| s.iter().all(|&b| b == 2))
            .count();
        let old_sectors = image
            .chunks(512)
            .filter(|s| s.iter().all(|&b| b == 1))
            .count();
        assert_eq!(
            new_sectors + old_sectors,
            4,
            "sectors are atomic: {image:?}"
        );
        match new_sectors {
            4 => kept += 1,
            0 => dropped += 1,
            _ => torn += 1,
        }
    }
    assert!(
        kept > 50 && dropped > 50 && torn > 50,
        "kept {kept} dropped {dropped} torn {torn}"
    );
}

/// `ryu_io::create_dir_all_synced` leaves every directory on its path durable: the ones
/// it makes, and ones already there that nobody synced (an earlier attempt that failed
/// before its sync). Syncing only what it made lost `a/b/c` with `a` in about half of
/// the crashes below.
#[test]
fn create_dir_all_synced_makes_the_whole_path_durable() {
    for seed in 0..16 {
        let disk = SimDisk::new(seed);
        disk.create_dir_all(Path::new("a/b")).unwrap(); // volatile
        let made = ryu_io::create_dir_all_synced(&disk, Path::new("a/b/c")).unwrap();
        assert_eq!(made, vec![Path::new("a/b/c").to_path_buf()]);
        assert!(
            ryu_io::create_dir_all_synced(&disk, Path::new("a/b/c"))
                .unwrap()
                .is_empty()
        );
        let made = ryu_io::create_dir_all_synced(&disk, Path::new("x/y")).unwrap();
        assert_eq!(
            made,
            vec![Path::new("x").to_path_buf(), Path::new("x/y").to_path_buf()]
        );
        disk.crash();
        for dir in ["a/b/c", "x/y"] {
            assert!(
                disk.is_dir(Path::new(dir)).unwrap_or(false),
                "seed {seed}: {dir} lost"
            );
        }
    }
}
