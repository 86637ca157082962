//! Listing and retention: prune keeps what the rules say and every parent a kept
//! incremental needs, and removes leftovers of crashed jobs and prunes.

use crate::common::*;
use ryu_backup::{
    BackupJob, BackupStatus, RestoreOptions, Retention, Step, list, plan_retention, prune, restore,
};
use ryu_io::DynDisk;
use std::path::Path;

/// full1 <- inc1a <- inc1b, full2, full3 <- inc3a, created in that order one second
/// apart.
fn setup() -> (DynDisk, Model) {
    let d = disk(20);
    let db = open(&d, DB);
    let mut model = Model::default();
    let c = clock();
    let plan = [
        ("full1", None),
        ("inc1a", Some("full1")),
        ("inc1b", Some("inc1a")),
        ("full2", None),
        ("full3", None),
        ("inc3a", Some("full3")),
    ];
    for (round, (id, parent)) in plan.into_iter().enumerate() {
        commit_some(&db, &mut model, round as u32, 20);
        db.checkpoint().unwrap();
        commit_some(&db, &mut model, 100 + round as u32, 5);
        c.advance(1_000_000_000);
        let mut job = BackupJob::start(
            &db,
            d.clone(),
            Path::new(DEST),
            c.clone(),
            options(id, parent),
        )
        .unwrap();
        while !matches!(job.step(1 << 20).unwrap(), Step::Done(_)) {}
    }
    (d, model)
}

fn complete(d: &DynDisk) -> Vec<String> {
    list(d, Path::new(DEST))
        .unwrap()
        .into_iter()
        .filter(|e| e.status == BackupStatus::Complete)
        .map(|e| e.id)
        .collect()
}

#[test]
fn list_orders_by_creation_and_reports_status() {
    let (d, _) = setup();
    assert_eq!(
        complete(&d),
        vec!["full1", "inc1a", "inc1b", "full2", "full3", "inc3a"]
    );
    d.create_dir_all(Path::new("backups/.tmp-crashed")).unwrap();
    d.create_dir_all(Path::new("backups/broken")).unwrap();
    let entries = list(&d, Path::new(DEST)).unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e.id == "crashed" && e.status == BackupStatus::Incomplete)
    );
    assert!(
        entries
            .iter()
            .any(|e| e.id == "broken" && matches!(e.status, BackupStatus::Corrupt { .. }))
    );
}

#[test]
fn keep_last_never_deletes_a_needed_parent() {
    let (d, model) = setup();
    // Keeping the newest two keeps inc3a, full3; keeping three adds full2; keeping four
    // adds inc1b, whose chain needs inc1a and full1.
    let r = prune(
        &d,
        Path::new(DEST),
        &Retention {
            keep_last: Some(4),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(r.deleted.is_empty(), "{r:?}");
    let r = prune(
        &d,
        Path::new(DEST),
        &Retention {
            keep_last: Some(3),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(r.deleted, vec!["full1", "inc1a", "inc1b"]);
    assert_eq!(complete(&d), vec!["full2", "full3", "inc3a"]);
    // Keep only the newest: an incremental; its full parent must stay.
    let r = prune(
        &d,
        Path::new(DEST),
        &Retention {
            keep_last: Some(1),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(r.deleted, vec!["full2"]);
    assert_eq!(complete(&d), vec!["full3", "inc3a"]);
    let s = restore(
        &d,
        Path::new(DEST),
        "inc3a",
        &d,
        Path::new("r"),
        &RestoreOptions::default(),
    )
    .unwrap();
    assert_eq!(s.chain, vec!["full3", "inc3a"]);
    let db = open(&d, "r");
    assert_eq!(read_all(&db), model.state_at(db.last_committed_ts()));
}

#[test]
fn keep_newer_than_keeps_parents_of_young_incrementals() {
    let (d, _) = setup();
    let created: Vec<u64> = list(&d, Path::new(DEST))
        .unwrap()
        .iter()
        .map(|e| e.manifest.as_ref().unwrap().created_unix_ns)
        .collect();
    // Newer than inc1b's creation: inc1b, full2, full3, inc3a, plus inc1b's parents.
    let r = prune(
        &d,
        Path::new(DEST),
        &Retention {
            keep_newer_than_unix_ns: Some(created[2]),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(r.deleted.is_empty(), "{r:?}");
    let r = prune(
        &d,
        Path::new(DEST),
        &Retention {
            keep_newer_than_unix_ns: Some(created[3]),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(r.deleted, vec!["full1", "inc1a", "inc1b"]);
}

#[test]
fn plan_retention_closes_over_parents_of_every_depth() {
    let (d, _) = setup();
    let manifests: Vec<_> = list(&d, Path::new(DEST))
        .unwrap()
        .into_iter()
        .filter_map(|e| e.manifest)
        .collect();
    // Keep nothing by count, but a rule that keeps only inc1b by age.
    let t = manifests[2].created_unix_ns;
    let mut only_old: Vec<_> = manifests[..3].to_vec();
    only_old.sort_by_key(|m| m.created_unix_ns);
    let keep = plan_retention(
        &only_old,
        &Retention {
            keep_last: Some(0),
            keep_newer_than_unix_ns: Some(t),
        },
    );
    assert_eq!(
        keep.into_iter().collect::<Vec<_>>(),
        vec!["full1", "inc1a", "inc1b"]
    );
}

#[test]
fn prune_removes_leftovers_and_respects_the_lock() {
    let (d, _) = setup();
    for leftover in [".tmp-x", ".del-y", ".scratch-z"] {
        d.create_dir_all(&Path::new(DEST).join(leftover).join("wal"))
            .unwrap();
    }
    let r = prune(&d, Path::new(DEST), &Retention::default()).unwrap();
    assert_eq!(r.removed_incomplete.len(), 3, "{r:?}");
    assert_eq!(r.kept.len(), 6);
    let db = open(&d, DB);
    let _job = BackupJob::start(
        &db,
        d.clone(),
        Path::new(DEST),
        clock(),
        options("busy", None),
    )
    .unwrap();
    assert!(matches!(
        prune(&d, Path::new(DEST), &Retention::default()),
        Err(ryu_backup::Error::Locked { .. })
    ));
}
