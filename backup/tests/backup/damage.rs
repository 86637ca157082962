//! Every verify check, each shown to fire: flipped bytes and truncation in each kind
//! of backup file, missing and extra files, page and WAL damage behind valid file
//! checksums, escaping paths, and broken or foreign chains. Restore must refuse every
//! damaged backup without writing into its target.

use crate::common::*;
use ryu_backup::manifest::{MANIFEST_FILE, Manifest, crc_hex};
use ryu_backup::{
    BackupId, BackupJob, BackupOptions, Error, Problem, RestoreOptions, Step, VerifyOptions,
    VerifyReport, restore, verify,
};
use ryu_engine::page::SUPER_LEN;
use ryu_io::DynDisk;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A destination with a full backup `full` and an incremental `inc` on top, each with
/// several WAL segments.
fn setup(seed: u64) -> DynDisk {
    let d = disk(seed);
    let db = open(&d, DB);
    let mut model = Model::default();
    commit_some(&db, &mut model, 0, 200);
    db.checkpoint().unwrap();
    commit_some(&db, &mut model, 1, 200);
    let full = backup(&db, &d, "full", None);
    assert!(
        full.manifest
            .files
            .iter()
            .filter(|f| f.path.starts_with("wal/"))
            .count()
            >= 2
    );
    commit_some(&db, &mut model, 2, 30);
    db.checkpoint().unwrap();
    commit_some(&db, &mut model, 3, 80);
    backup(&db, &d, "inc", Some("full"));
    d
}

fn dir(id: &str) -> PathBuf {
    Path::new(DEST).join(id)
}

fn check(d: &DynDisk, id: &str) -> VerifyReport {
    verify(d, Path::new(DEST), id, &VerifyOptions::default()).unwrap()
}

/// Restore must refuse and leave the target absent, and the new directories above it
/// too.
fn assert_restore_refused(d: &DynDisk, id: &str) {
    let target = Path::new("restored/in/target");
    let e = restore(
        d,
        Path::new(DEST),
        id,
        d,
        target,
        &RestoreOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(e, Error::VerifyFailed { .. } | Error::BrokenChain { .. }),
        "{e}"
    );
    assert!(!d.exists(target).unwrap(), "restore wrote into its target");
    assert!(
        !d.exists(Path::new("restored")).unwrap(),
        "restore left the directories it made"
    );
}

fn read(d: &DynDisk, path: &Path) -> Vec<u8> {
    let f = d.open(path).unwrap();
    let mut b = vec![0u8; f.len().unwrap() as usize];
    f.read_at(0, &mut b).unwrap();
    b
}

fn flip(d: &DynDisk, path: &Path, at: u64) {
    let f = d.open(path).unwrap();
    let mut b = [0u8];
    f.read_at(at, &mut b).unwrap();
    f.write_at(at, &[b[0] ^ 0x20]).unwrap();
}

fn manifest(d: &DynDisk, id: &str) -> Manifest {
    Manifest::decode(&read(d, &dir(id).join(MANIFEST_FILE)), Path::new("m"))
        .unwrap()
        .manifest
}

/// Rewrite a manifest (after `edit`) with fresh file sizes and checksums, so that
/// only the deeper checks can see the damage.
fn resign(d: &DynDisk, id: &str, edit: impl FnOnce(&mut Manifest)) {
    let mut m = manifest(d, id);
    for f in &mut m.files {
        if let Ok(rel) = ryu_backup::safe_relative(&f.path) {
            let path = dir(id).join(rel);
            if d.exists(&path).unwrap() {
                let b = read(d, &path);
                f.size_bytes = b.len() as u64;
                f.crc32 = crc_hex(crc32fast::hash(&b));
            }
        }
    }
    edit(&mut m);
    let path = dir(id).join(MANIFEST_FILE);
    d.remove(&path).unwrap();
    d.create(&path).unwrap().write_at(0, &m.encode().0).unwrap();
}

fn files(d: &DynDisk, id: &str) -> Vec<(String, u64)> {
    let m = manifest(d, id);
    let mut out: Vec<_> = m
        .files
        .iter()
        .map(|f| (f.path.clone(), f.size_bytes))
        .collect();
    let len = d.open(&dir(id).join(MANIFEST_FILE)).unwrap().len().unwrap();
    out.push((MANIFEST_FILE.to_string(), len));
    out
}

#[test]
fn a_flipped_byte_in_any_file_is_named_and_restore_refuses() {
    let mut cases = 0;
    for id in ["full", "inc"] {
        for (path, len) in files(&setup(10), id) {
            for at in [0, 13, len / 2, len - 1] {
                let d = setup(10);
                flip(&d, &dir(id).join(&path), at);
                let r = check(&d, id);
                assert!(!r.is_ok(), "flip in {id}/{path} at {at} not reported");
                let named = r.problems.iter().any(|p| match p {
                    Problem::FileChecksum { path: p, .. } => *p == path,
                    Problem::Manifest { .. } => path == MANIFEST_FILE,
                    _ => false,
                });
                assert!(named, "{id}/{path} at {at}: {:?}", r.problems);
                assert_restore_refused(&d, id);
                cases += 1;
            }
        }
    }
    assert!(cases >= 24, "{cases}");
}

#[test]
fn a_truncated_file_is_named_and_restore_refuses() {
    for id in ["full", "inc"] {
        for (path, len) in files(&setup(11), id) {
            let d = setup(11);
            d.open(&dir(id).join(&path))
                .unwrap()
                .set_len(len - 1)
                .unwrap();
            let r = check(&d, id);
            let named = r.problems.iter().any(|p| match p {
                Problem::WrongSize { path: p, found, .. } => *p == path && *found == len - 1,
                Problem::Manifest { .. } => path == MANIFEST_FILE,
                _ => false,
            });
            assert!(named, "{id}/{path}: {:?}", r.problems);
            assert_restore_refused(&d, id);
        }
    }
}

#[test]
fn missing_and_extra_files_are_named() {
    let d = setup(12);
    let seg = manifest(&d, "full")
        .files
        .iter()
        .find(|f| f.path.starts_with("wal/"))
        .unwrap()
        .path
        .clone();
    d.remove(&dir("full").join(&seg)).unwrap();
    let r = check(&d, "full");
    assert!(
        r.problems
            .contains(&Problem::MissingFile { path: seg.clone() }),
        "{:?}",
        r.problems
    );
    assert_restore_refused(&d, "full");

    let d = setup(12);
    d.create(&dir("inc").join("wal/stray.log")).unwrap();
    d.create(&dir("inc").join("notes.txt")).unwrap();
    let r = check(&d, "inc");
    for p in ["notes.txt", "wal/stray.log"] {
        assert!(
            r.problems.contains(&Problem::ExtraFile { path: p.into() }),
            "{:?}",
            r.problems
        );
    }
    assert_restore_refused(&d, "inc");

    let d = setup(12);
    d.remove(&dir("inc").join(MANIFEST_FILE)).unwrap();
    assert!(matches!(
        check(&d, "inc").problems[..],
        [Problem::Manifest { .. }]
    ));
    assert_restore_refused(&d, "inc");
}

/// The report names a page problem whose text holds `what`.
fn page_problem(r: &VerifyReport, what: &str) {
    assert!(
        r.problems
            .iter()
            .any(|p| matches!(p, Problem::Page { detail } if detail.contains(what))),
        "{what}: {:?}",
        r.problems
    );
}

/// Set the u32 at `offset` of the header of pages file `name` of backup `full`, with a
/// fresh header checksum, and re-sign the manifest: only the header checks can tell.
fn edit_header(d: &DynDisk, name: &str, offset: usize, value: u32) {
    let path = dir("full").join(name);
    let mut b = read(d, &path);
    b[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
    let crc = crc32fast::hash(&b[..48]);
    b[48..52].copy_from_slice(&crc.to_le_bytes());
    d.open(&path).unwrap().write_at(0, &b[..64]).unwrap();
    resign(d, "full", |_| {});
}

/// The pages files as a set: one missing, two swapped, one left out of the manifest
/// (and removed), a header of another format version. Each is named; restore refuses.
#[test]
fn missing_swapped_unlisted_or_old_pages_files_are_named() {
    let pages = |d: &DynDisk| -> Vec<String> {
        manifest(d, "full")
            .files
            .iter()
            .filter(|f| f.path.starts_with("pages/"))
            .map(|f| f.path.clone())
            .collect()
    };
    let d = setup(18);
    let names = pages(&d);
    assert!(names.len() >= 3, "{names:?}");

    d.remove(&dir("full").join(&names[1])).unwrap();
    let r = check(&d, "full");
    assert!(
        r.problems.contains(&Problem::MissingFile {
            path: names[1].clone()
        }),
        "{:?}",
        r.problems
    );
    assert_restore_refused(&d, "full");

    let d = setup(18);
    let (a, b) = (dir("full").join(&names[1]), dir("full").join(&names[2]));
    let (ba, bb) = (read(&d, &a), read(&d, &b));
    for (path, bytes) in [(&a, &bb), (&b, &ba)] {
        d.remove(path).unwrap();
        d.create(path).unwrap().write_at(0, bytes).unwrap();
    }
    resign(&d, "full", |_| {});
    page_problem(&check(&d, "full"), "expected file 1");
    assert_restore_refused(&d, "full");

    let d = setup(18);
    let last = names.last().unwrap().clone();
    d.remove(&dir("full").join(&last)).unwrap();
    resign(&d, "full", |m| m.files.retain(|f| f.path != last));
    page_problem(&check(&d, "full"), "their headers count");
    assert_restore_refused(&d, "full");

    // A header claiming 2^32 - 1 files (with a valid checksum): verify stops at the
    // first file that is not there instead of trying them all.
    let d = setup(18);
    edit_header(&d, &names[0], 44, u32::MAX);
    page_problem(&check(&d, "full"), "of 4294967295");
    assert_restore_refused(&d, "full");

    // A header of another version (the version-2 layout with a valid checksum: a
    // real version-1 backup is refused by its manifest's version, see below).
    let d = setup(18);
    edit_header(&d, &names[0], 8, 1);
    page_problem(&check(&d, "full"), "version");
    assert_restore_refused(&d, "full");
}

/// A backup made by the build before pages files (manifest version 1, its pages in one
/// `data.pages`) is named as such by verify, list and restore, refused as the parent of
/// an incremental, and never pruned.
#[test]
fn a_backup_of_manifest_version_1_is_named_refused_and_left_alone() {
    let d = setup(19);
    // The old layout: one `data.pages` in place of the pages files.
    let names: Vec<String> = manifest(&d, "full")
        .files
        .iter()
        .filter(|f| f.path.starts_with("pages/"))
        .map(|f| f.path.clone())
        .collect();
    let mut joined = Vec::new();
    for n in &names {
        joined.extend(read(&d, &dir("full").join(n)));
        d.remove(&dir("full").join(n)).unwrap();
    }
    ryu_backup::remove_tree(&d, &dir("full").join("pages")).unwrap();
    d.create(&dir("full").join("data.pages"))
        .unwrap()
        .write_at(0, &joined)
        .unwrap();
    resign(&d, "full", |m| {
        m.manifest_version = 1;
        m.files.retain(|f| !f.path.starts_with("pages/"));
        m.files.push(ryu_backup::manifest::FileEntry {
            path: "data.pages".into(),
            size_bytes: joined.len() as u64,
            crc32: crc_hex(crc32fast::hash(&joined)),
        });
    });
    let old = "has format version 1; this build reads version 2 only";
    let r = check(&d, "full");
    assert!(
        matches!(&r.problems[..], [Problem::Manifest { detail }] if detail.contains(old)),
        "{:?}",
        r.problems
    );
    assert_restore_refused(&d, "full");
    assert!(!check(&d, "inc").is_ok());
    assert_restore_refused(&d, "inc");

    let listed = ryu_backup::list(&d, Path::new(DEST)).unwrap();
    let full = listed.iter().find(|e| e.id == "full").unwrap();
    assert!(
        matches!(&full.status, ryu_backup::BackupStatus::Unsupported { detail } if detail.contains(old)),
        "{full:?}"
    );

    let db = open(&d, DB);
    let e = BackupJob::start(
        &db,
        d.clone(),
        Path::new(DEST),
        clock(),
        options("inc2", Some("full")),
    )
    .expect_err("an incremental on a version-1 parent starts");
    assert!(
        matches!(
            e,
            Error::UnsupportedVersion {
                found: 1,
                ref supported,
                ..
            } if supported == "version 2"
        ),
        "{e}"
    );

    let report = ryu_backup::prune(
        &d,
        Path::new(DEST),
        &ryu_backup::Retention {
            keep_last: Some(0),
            keep_newer_than_unix_ns: None,
        },
    )
    .unwrap();
    assert_eq!(report.unsupported, vec!["full".to_string()]);
    assert!(d.exists(&dir("full").join("data.pages")).unwrap());
}

/// The offsets of the first entries of a pages file (format 3: page number, stored
/// length, the stored bytes), and each entry's stored length.
fn entries(b: &[u8], n: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 64;
    while out.len() < n && at + 10 <= b.len() {
        let stored = u16::from_le_bytes([b[at + 8], b[at + 9]]) as usize;
        out.push((at, stored));
        at += 10 + stored;
    }
    out
}

#[test]
fn page_damage_behind_a_valid_file_checksum_is_named() {
    // The superblock, a tree page's body and its own page number, an entry's page
    // number and its stored length: each is caught by the page checks alone (the
    // manifest is re-signed over the damaged file).
    let pages = dir("full").join("pages/000000.pages");
    let e = entries(&read(&setup(13), &pages), 2);
    let [(sb, sb_len), (tree, tree_len)] = e[..] else {
        panic!("{e:?}")
    };
    assert!(
        sb_len <= SUPER_LEN,
        "a superblock entry stores the superblock only"
    );
    assert!(tree_len > 100 && tree_len < 4096, "{tree_len}");
    for at in [
        sb + 10 + 30,
        tree + 10 + 8,
        tree + 10 + 100,
        tree + 1,
        tree + 8,
    ] {
        let d = setup(13);
        flip(&d, &pages, at as u64);
        resign(&d, "full", |_| {});
        let r = check(&d, "full");
        assert!(
            matches!(r.problems[..], [Problem::Page { .. }]),
            "at {at}: {:?}",
            r.problems
        );
        assert_restore_refused(&d, "full");
    }
}

/// Entries that do not fit their file or its header, with every checksum valid: a
/// stored length longer than a page, a file cut inside an entry or after one, a header
/// that claims one entry too many or too few. Each is named; restore refuses.
/// A destination with one full backup `full` whose pages are in one pages file (the
/// default size): of a small database, or with `big` of about 1.2 MB of pages, more
/// than a scan reads at a time (`CHUNK_BYTES`, 256 whole entries: 1,050,624 bytes).
fn one_file(seed: u64, big: bool) -> DynDisk {
    one_file_with(seed, big, false)
}

/// [`one_file`], with [`BackupOptions::whole_pages`] set to `whole`.
fn one_file_with(seed: u64, big: bool, whole: bool) -> DynDisk {
    let d = disk(seed);
    let db = open(&d, DB);
    if big {
        for i in 0..100u32 {
            let mut w = db.begin_write();
            for j in 0..4u32 {
                let v: Vec<u8> = (0..3000u32)
                    .map(|k| (i * 31 + j * 7 + k) as u8 | 1)
                    .collect();
                w.put(format!("big{i:03}-{j}").as_bytes(), &v).unwrap();
            }
            w.commit().unwrap();
        }
    } else {
        commit_some(&db, &mut Model::default(), 0, 200);
    }
    db.checkpoint().unwrap();
    let options = BackupOptions {
        id: BackupId::new("full").unwrap(),
        whole_pages: whole,
        ..Default::default()
    };
    let mut job = BackupJob::start(&db, d.clone(), Path::new(DEST), clock(), options).unwrap();
    while !matches!(job.step(u64::MAX).unwrap(), Step::Done(_)) {}
    d
}

const CHUNK_BYTES: usize = 256 * 4104;

#[test]
fn entries_that_do_not_fit_their_pages_file_are_named() {
    // One pages file of many entries, so that a header can claim fewer entries than
    // the file holds and still fit its length.
    let setup = |seed| one_file(seed, false);
    let pages = dir("full").join("pages/000000.pages");
    let page_problem = |d: &DynDisk, what: &str| {
        page_problem(&check(d, "full"), what);
        assert_restore_refused(d, "full");
    };
    let b = read(&setup(14), &pages);
    let e = entries(&b, usize::MAX);
    assert!(e.len() >= 4, "{e:?}");
    let m = manifest(&setup(14), "full");
    let n_pages = m
        .files
        .iter()
        .filter(|f| f.path.starts_with("pages/"))
        .count();
    assert_eq!(n_pages, 1, "{:?}", m.files);
    let (last, last_len) = *e.last().unwrap();
    assert_eq!(last + 10 + last_len, b.len(), "entries fill the file");

    let d = setup(14);
    d.open(&pages)
        .unwrap()
        .write_at(e[1].0 as u64 + 8, &4097u16.to_le_bytes())
        .unwrap();
    resign(&d, "full", |_| {});
    page_problem(&d, "stores 4097 bytes of a 4096-byte page");

    let d = setup(14);
    d.open(&pages).unwrap().set_len(b.len() as u64 - 1).unwrap();
    resign(&d, "full", |_| {});
    page_problem(&d, "ends inside an entry");

    let d = setup(14);
    d.open(&pages).unwrap().set_len(last as u64).unwrap();
    resign(&d, "full", |_| {});
    page_problem(&d, "missing 1 of the entries its header counts");

    let n = e.len() as u32;
    let d = setup(14);
    edit_header(&d, "pages/000000.pages", 32, n + 1);
    page_problem(&d, "missing 1 of the entries its header counts");
    let d = setup(14);
    edit_header(&d, "pages/000000.pages", 32, n - 1);
    page_problem(&d, "more entries than the header claims");
}

/// Rewrite every pages file of backups `ids` (parents first) in format 2, each page
/// stored whole as builds before format 3 wrote them, and re-sign the manifests (an
/// incremental names its parent by the parent's manifest checksum). Returns the
/// files' lengths.
fn to_format_2(d: &DynDisk, ids: &[&str]) -> Vec<usize> {
    let mut lens = Vec::new();
    for id in ids {
        for f in manifest(d, id).files {
            if !f.path.starts_with("pages/") {
                continue;
            }
            let path = dir(id).join(&f.path);
            let b = read(d, &path);
            let mut out = b[..64].to_vec();
            out[8..12].copy_from_slice(&2u32.to_le_bytes());
            let crc = crc32fast::hash(&out[..48]);
            out[48..52].copy_from_slice(&crc.to_le_bytes());
            for (at, stored) in entries(&b, usize::MAX) {
                out.extend_from_slice(&b[at..at + 8]);
                out.extend_from_slice(&b[at + 10..at + 10 + stored]);
                out.resize(out.len() + 4096 - stored, 0);
            }
            assert_eq!((out.len() - 64) % 4104, 0);
            d.remove(&path).unwrap();
            d.create(&path).unwrap().write_at(0, &out).unwrap();
            lens.push(out.len());
        }
        let parent = manifest(d, "full").encode().1;
        resign(d, id, |m| {
            if m.parent_id.is_some() {
                m.parent_manifest_crc32 = Some(parent);
            }
        });
    }
    lens
}

/// A backup whose pages files are in format 2 still verifies, and restores the same
/// `data` file: a chain of small files, and one file of more than one read.
#[test]
fn pages_files_of_format_2_still_verify_and_restore() {
    let target = Path::new("restored");
    let restored = |d: &DynDisk, id: &str| {
        restore(
            d,
            Path::new(DEST),
            id,
            d,
            target,
            &RestoreOptions::default(),
        )
        .unwrap();
        read(d, &target.join("data"))
    };
    let want = restored(&setup(15), "inc");
    let d = setup(15);
    let lens = to_format_2(&d, &["full", "inc"]);
    assert!(lens.len() >= 4, "{lens:?}");
    for id in ["full", "inc"] {
        let r = check(&d, id);
        assert!(r.is_ok(), "{id}: {:?}", r.problems);
    }
    assert!(
        restored(&d, "inc") == want,
        "format 2 restored another data file"
    );

    let want = restored(&one_file(16, true), "full");
    let d = one_file(16, true);
    let lens = to_format_2(&d, &["full"]);
    assert!(lens.len() == 1 && lens[0] > CHUNK_BYTES, "{lens:?}");
    let r = check(&d, "full");
    assert!(r.is_ok(), "{:?}", r.problems);
    assert!(
        restored(&d, "full") == want,
        "format 2 restored another data file"
    );
}

/// `whole_pages` makes a job write format 2 itself, byte for byte what a format 3
/// backup rewritten in format 2 holds, and the backup verifies.
#[test]
fn whole_pages_writes_format_2() {
    let pages = dir("full").join("pages/000000.pages");
    let converted = one_file(18, true);
    to_format_2(&converted, &["full"]);
    let d = one_file_with(18, true, true);
    let b = read(&d, &pages);
    assert_eq!(b[8..12], 2u32.to_le_bytes());
    assert!(b == read(&converted, &pages), "format 2 written differs");
    let r = check(&d, "full");
    assert!(r.is_ok(), "{:?}", r.problems);
}

/// An entry that one read of the file ends inside (the rest carried over to the next
/// read) is checked whole, and damage to it is named at the entry's own offset.
#[test]
fn damage_to_an_entry_across_two_reads_is_named_at_its_offset() {
    let pages = dir("full").join("pages/000000.pages");
    let b = read(&one_file(17, true), &pages);
    assert!(b.len() > CHUNK_BYTES + 64, "{}", b.len());
    // The entry holding the first byte of the second read, and a byte of its page
    // after that one.
    let edge = 64 + CHUNK_BYTES;
    let (at, stored) = entries(&b, usize::MAX)
        .into_iter()
        .find(|&(at, stored)| at < edge && edge < at + 10 + stored - 1)
        .expect("an entry across the edge");
    let d = one_file(17, true);
    flip(&d, &pages, (at + 10 + stored - 1) as u64);
    resign(&d, "full", |_| {});
    page_problem(&check(&d, "full"), &format!("at offset {at}: page "));
    assert_restore_refused(&d, "full");
    // Undamaged, the same file verifies: the entry across the edge is parsed whole.
    assert!(check(&one_file(17, true), "full").is_ok());
}

#[test]
fn wal_damage_and_a_wrong_range_are_named() {
    // A record's byte: the segment no longer ends in whole valid records.
    let d = setup(14);
    let first = manifest(&d, "full")
        .files
        .iter()
        .find(|f| f.path.starts_with("wal/"))
        .unwrap()
        .path
        .clone();
    let seg = dir("full").join(&first);
    let len = d.open(&seg).unwrap().len().unwrap();
    flip(&d, &seg, len - 20);
    resign(&d, "full", |_| {});
    let r = check(&d, "full");
    assert!(
        matches!(r.problems[..], [Problem::Wal { .. }]),
        "{:?}",
        r.problems
    );
    assert_restore_refused(&d, "full");
    // Bytes after the last record (recovery would read them as a damaged record).
    let d = setup(14);
    let seg = dir("full").join(&first);
    let f = d.open(&seg).unwrap();
    f.write_at(f.len().unwrap(), &[0xab; 16]).unwrap();
    resign(&d, "full", |_| {});
    let r = check(&d, "full");
    assert!(
        matches!(r.problems[..], [Problem::Wal { .. }]),
        "{:?}",
        r.problems
    );
    assert_restore_refused(&d, "full");
    // An off-by-one in the claimed range, in either direction.
    for delta in [1i64, -1] {
        let d = setup(14);
        resign(&d, "full", |m| {
            m.wal.last_lsn = m.wal.last_lsn.wrapping_add_signed(delta)
        });
        let r = check(&d, "full");
        assert!(
            matches!(r.problems[..], [Problem::Wal { .. }]),
            "{delta}: {:?}",
            r.problems
        );
        assert_restore_refused(&d, "full");
    }
    // A missing middle segment, with the manifest re-signed without it.
    let d = setup(14);
    let m = manifest(&d, "full");
    let first = m
        .files
        .iter()
        .find(|f| f.path.starts_with("wal/"))
        .unwrap()
        .path
        .clone();
    d.remove(&dir("full").join(&first)).unwrap();
    resign(&d, "full", |m| m.files.retain(|f| f.path != first));
    let r = check(&d, "full");
    assert!(
        matches!(r.problems[..], [Problem::Wal { .. }]),
        "{:?}",
        r.problems
    );
}

#[test]
fn paths_that_escape_are_rejected_by_verify_and_restore() {
    for bad in ["../escape", "/etc/passwd", "wal/../../x", "a//b"] {
        let d = setup(15);
        resign(&d, "full", |m| {
            m.files.push(ryu_backup::FileEntry {
                path: bad.to_string(),
                size_bytes: 0,
                crc32: "00000000".into(),
            })
        });
        let r = check(&d, "full");
        assert!(
            r.problems
                .contains(&Problem::UnsafePath { path: bad.into() }),
            "{bad}: {:?}",
            r.problems
        );
        assert_restore_refused(&d, "full");
        assert!(!d.exists(Path::new("escape")).unwrap());
    }
}

#[test]
fn a_broken_or_foreign_chain_is_named_and_restore_refuses() {
    // Parent deleted.
    let d = setup(16);
    ryu_backup::prune(&d, Path::new(DEST), &Default::default()).unwrap();
    remove_tree(&d, &dir("full"));
    let r = check(&d, "inc");
    assert!(
        matches!(r.problems[..], [Problem::Chain { .. }]),
        "{:?}",
        r.problems
    );
    assert_restore_refused(&d, "inc");

    // Parent replaced by a backup of the same id from another database: foreign.
    let d = setup(16);
    let other = disk(99);
    let odb = open(&other, DB);
    let mut model = Model::default();
    commit_some(&odb, &mut model, 7, 50);
    odb.checkpoint().unwrap();
    backup(&odb, &other, "full", None);
    copy_tree(&other, &dir("full"), &d, Path::new("foreign-full"));
    remove_tree(&d, &dir("full"));
    d.rename(Path::new("foreign-full"), &dir("full")).unwrap();
    assert!(check(&d, "full").is_ok());
    let r = check(&d, "inc");
    assert!(
        matches!(&r.problems[..], [Problem::Chain { detail }] if detail.contains("foreign")),
        "{:?}",
        r.problems
    );
    assert_restore_refused(&d, "inc");

    // An incremental whose parent link was edited to point at itself.
    let d = setup(16);
    resign(&d, "inc", |m| m.parent_id = Some("inc".into()));
    assert!(matches!(
        check(&d, "inc").problems[..],
        [Problem::Chain { .. }]
    ));
}

fn copy_tree(from: &DynDisk, src: &Path, to: &DynDisk, dst: &Path) {
    to.create_dir_all(dst).unwrap();
    for name in from.list(src).unwrap() {
        let (s, t) = (src.join(&name), dst.join(&name));
        if from.is_dir(&s).unwrap() {
            copy_tree(from, &s, to, &t);
        } else {
            to.create(&t).unwrap().write_at(0, &read(from, &s)).unwrap();
        }
    }
}

fn remove_tree(d: &DynDisk, path: &Path) {
    if d.is_dir(path).unwrap() {
        for name in d.list(path).unwrap() {
            remove_tree(d, &path.join(name));
        }
    }
    d.remove(path).unwrap();
}

/// A superblock that is valid on its own but points at its root with a wrong
/// checksum passes every shallow check; only opening the engine sees it.
#[test]
fn deep_verify_catches_damage_only_the_engine_sees() {
    use ryu_engine::page::{SuperSlot, Superblock};
    let d = setup(17);
    let ok = verify(&d, Path::new(DEST), "inc", &VerifyOptions { deep: true }).unwrap();
    assert!(ok.is_ok(), "{:?}", ok.problems);
    let pages = dir("full").join("pages/000000.pages");
    // The first entry: the superblock, stored without the zeros after it (at most
    // SUPER_LEN bytes, fewer if its checksum ends in zeros).
    let b = read(&d, &pages);
    let stored = u16::from_le_bytes([b[72], b[73]]) as usize;
    assert!(stored <= SUPER_LEN, "{stored}");
    let mut sb_page = vec![0u8; 4096];
    sb_page[..stored].copy_from_slice(&b[74..74 + stored]);
    let SuperSlot::Valid(mut sb) = Superblock::decode(&sb_page) else {
        panic!("the first entry is the superblock")
    };
    let root = sb.root.as_mut().expect("a non-empty tree");
    root.checksum ^= 1;
    // The file again with the new superblock entry (its length may differ).
    let mut out = b[..64].to_vec();
    ryu_backup::pages::encode_entry(
        &mut out,
        u64::from_le_bytes(b[64..72].try_into().unwrap()),
        &sb.encode(),
    );
    out.extend_from_slice(&b[74 + stored..]);
    d.remove(&pages).unwrap();
    d.create(&pages).unwrap().write_at(0, &out).unwrap();
    resign(&d, "full", |_| {});
    assert!(check(&d, "full").is_ok(), "shallow checks cannot see it");
    let deep = verify(&d, Path::new(DEST), "full", &VerifyOptions { deep: true }).unwrap();
    assert!(
        matches!(deep.problems[..], [Problem::Deep { .. }]),
        "{:?}",
        deep.problems
    );
    // The scratch directory is gone afterwards.
    assert!(
        !d.list(Path::new(DEST))
            .unwrap()
            .iter()
            .any(|n| n.starts_with(".scratch-"))
    );
}

/// Hostile manifest values (re-signed, so they reach every check) give problems or
/// errors, never a panic, and restore refuses them without writing.
#[test]
fn extreme_manifest_values_never_panic() {
    type Edit = fn(&mut Manifest, u64);
    let edits: [(&str, Edit); 10] = [
        ("snapshot_ts", |m, v| m.snapshot_ts = v),
        ("checkpoint_ts", |m, v| m.checkpoint_ts = v),
        ("generation", |m, v| m.generation = v),
        ("page_count", |m, v| m.page_count = v),
        ("wal.first_segment", |m, v| m.wal.first_segment = v),
        ("wal.first_lsn", |m, v| m.wal.first_lsn = v),
        ("wal.last_lsn", |m, v| m.wal.last_lsn = v),
        ("wal.last_ts", |m, v| m.wal.last_ts = v),
        ("parent_generation", |m, v| m.parent_generation = Some(v)),
        ("file size", |m, v| m.files[0].size_bytes = v),
    ];
    for (name, edit) in edits {
        for value in [0, 1, u64::MAX - 1, u64::MAX] {
            for id in ["full", "inc"] {
                let d = setup(18);
                resign(&d, id, |m| edit(m, value));
                let r = check(&d, id);
                assert!(!r.is_ok(), "{id}: {name} = {value} passed verification");
                assert_restore_refused(&d, id);
            }
        }
    }
}

/// A restore reads each pages file of the chain once (the checks and the writes share
/// that read), and writes only bytes it checked: with one byte changed in any single
/// read of the destination (a device or cache that returns other bytes than before),
/// the restore either refuses and leaves its target as it found it (absent, or an
/// empty directory), or restores exactly what a clean restore does. A restore that
/// verified on one read and wrote from another wrote the changed bytes unchecked.
#[test]
fn restore_reads_the_backup_once_and_writes_only_bytes_it_checked() {
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};
    let d = setup(12);
    let bytes: Arc<Mutex<BTreeMap<PathBuf, u64>>> = Arc::default();
    let calls = Arc::new(AtomicU64::new(0));
    let (log, count) = (bytes.clone(), calls.clone());
    let tap: DynDisk = Arc::new(ReadTap::new(
        d.clone(),
        Arc::new(move |p: &Path, _, b: &mut [u8]| {
            if p.starts_with(DEST) {
                *log.lock().unwrap().entry(p.to_path_buf()).or_default() += b.len() as u64;
                count.fetch_add(1, Ordering::SeqCst);
            }
        }),
    ));
    let opts = RestoreOptions::default();
    restore(&tap, Path::new(DEST), "inc", &d, Path::new("clean"), &opts).unwrap();
    let want = read_all(&open(&d, "clean"));
    let bytes = bytes.lock().unwrap().clone();
    let mut pages_files = 0;
    for id in ["full", "inc"] {
        for f in manifest(&d, id).files {
            if f.path.starts_with("pages/") {
                let read = bytes.get(&dir(id).join(&f.path)).copied().unwrap_or(0);
                assert_eq!(read, f.size_bytes, "{id}/{}: bytes read", f.path);
                pages_files += 1;
            }
        }
    }
    assert!(pages_files >= 2, "{pages_files}");
    let reads = calls.load(Ordering::SeqCst);
    assert!(reads >= 10, "{reads}");
    let mut refused = 0;
    for k in 0..reads {
        let seen = Arc::new(AtomicU64::new(0));
        let tap: DynDisk = Arc::new(ReadTap::new(
            d.clone(),
            Arc::new(move |p: &Path, _, b: &mut [u8]| {
                if p.starts_with(DEST) && seen.fetch_add(1, Ordering::SeqCst) == k {
                    let mid = b.len() / 2;
                    b[mid] ^= 0x40;
                }
            }),
        ));
        let target = PathBuf::from(format!("target-{k}"));
        let empty = k % 2 == 1;
        if empty {
            d.create_dir_all(&target).unwrap();
        }
        match restore(&tap, Path::new(DEST), "inc", &d, &target, &opts) {
            Ok(_) => {
                let got = read_all(&open(&d, target.to_str().unwrap()));
                assert!(got == want, "read {k} changed: restored another state");
            }
            Err(e) => {
                assert!(
                    matches!(e, Error::VerifyFailed { .. } | Error::BrokenChain { .. }),
                    "read {k}: {e}"
                );
                if empty {
                    assert_eq!(d.list(&target).unwrap(), Vec::<String>::new(), "read {k}");
                } else {
                    assert!(!d.exists(&target).unwrap(), "read {k}: target left behind");
                }
                refused += 1;
            }
        }
    }
    assert!(refused > 0);
}

/// A view of `d` that runs `act` once, after the first read of a file under `under`.
fn on_first_read(d: &DynDisk, under: PathBuf, act: impl Fn() + Send + Sync + 'static) -> DynDisk {
    use std::sync::atomic::{AtomicBool, Ordering};
    let done = AtomicBool::new(false);
    Arc::new(ReadTap::new(
        d.clone(),
        Arc::new(move |p: &Path, _, _: &mut [u8]| {
            if p.starts_with(&under) && !done.swap(true, Ordering::SeqCst) {
                act();
            }
        }),
    ))
}

/// A backup replaced while a restore reads it is refused: the verify that completes
/// the restore must see the manifest the restore used (another one could expect other
/// pages, and verify would then check a read the restore did not write from).
#[test]
fn a_manifest_replaced_during_a_restore_is_refused() {
    let d = setup(13);
    let inner = d.clone();
    let tap = on_first_read(&d, dir("inc").join("pages"), move || {
        resign(&inner, "inc", |m| m.created_unix_ns += 1);
    });
    let target = Path::new("restore-target");
    let e = restore(
        &tap,
        Path::new(DEST),
        "inc",
        &d,
        target,
        &RestoreOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&e, Error::VerifyFailed { problems, .. } if problems.iter().any(|p| p.contains("manifest changed"))),
        "{e}"
    );
    assert!(!d.exists(target).unwrap(), "restore left its target");
}

/// A restore that could not even create `data.restore` (another restore into the same
/// target got there first) removes nothing: what is in the target is not its own.
#[test]
fn a_restore_that_loses_the_race_for_its_target_removes_nothing() {
    let d = setup(14);
    let target = Path::new("restore-target");
    let inner = d.clone();
    // The other restore creates its `data.restore` after this one found the target
    // absent, while this one checks the backup.
    let tap = on_first_read(&d, PathBuf::from(DEST), move || {
        inner.create_dir_all(target).unwrap();
        let f = inner.create(&target.join(ryu_backup::RESTORE_TMP)).unwrap();
        f.write_at(0, b"the other restore's").unwrap();
    });
    restore(
        &tap,
        Path::new(DEST),
        "inc",
        &d,
        target,
        &RestoreOptions::default(),
    )
    .unwrap_err();
    assert_eq!(
        d.list(target).unwrap(),
        vec![ryu_backup::RESTORE_TMP.to_string()],
        "the other restore's file was removed"
    );
}
