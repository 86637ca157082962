//! Round trips: full and incremental backups taken while commits go on, restore at the
//! snapshot and at earlier timestamps, progress, rate limits, the lock, restore targets.

use crate::common::*;
use ryu_backup::{
    BackupJob, BackupKind, Error, Progress, RestoreOptions, Step, VerifyOptions, break_lock,
    restore, verify,
};
use ryu_engine::Db;
use ryu_io::DynDisk;
use std::path::Path;
use std::sync::{Arc, Mutex};

fn restore_state(src: &DynDisk, id: &str, target: &str, as_of: Option<u64>) -> (Db, State) {
    restore(
        src,
        Path::new(DEST),
        id,
        src,
        Path::new(target),
        &RestoreOptions { as_of_ts: as_of },
    )
    .expect("restore");
    let db = open(src, target);
    let s = read_all(&db);
    (db, s)
}

#[test]
fn full_backup_taken_during_commits_restores_its_snapshot_exactly() {
    let d = disk(1);
    let db = open(&d, DB);
    let mut model = Model::default();
    commit_some(&db, &mut model, 0, 120);
    db.checkpoint().unwrap();
    commit_some(&db, &mut model, 1, 40);
    let mut job = BackupJob::start(
        &db,
        d.clone(),
        Path::new(DEST),
        clock(),
        options("b1", None),
    )
    .unwrap();
    let snap = job.snapshot_ts();
    let mut round = 2;
    let summary = loop {
        // Commits and checkpoints between steps: the pinned pages must survive them.
        commit_some(&db, &mut model, round, 5);
        if round % 3 == 0 {
            db.checkpoint().unwrap();
        }
        round += 1;
        if let Step::Done(s) = job.step(4096).unwrap() {
            break s;
        }
    };
    assert_eq!(summary.manifest.snapshot_ts, snap);
    assert_eq!(summary.manifest.kind, BackupKind::Full);
    let report = verify(&d, Path::new(DEST), "b1", &VerifyOptions { deep: true }).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    let (restored, state) = restore_state(&d, "b1", "r1", None);
    assert_eq!(state, model.state_at(snap));
    assert_eq!(restored.last_committed_ts(), snap);
    // The restored database takes new commits.
    let mut w = restored.begin_write();
    w.put(b"after", b"restore").unwrap();
    assert!(w.commit().unwrap() > snap);
}

#[test]
fn point_in_time_restore_reaches_every_covered_timestamp() {
    let d = disk(2);
    let db = open(&d, DB);
    let mut model = Model::default();
    commit_some(&db, &mut model, 0, 30);
    let ckpt = db.checkpoint().unwrap().checkpoint_ts;
    let snap = commit_some(&db, &mut model, 1, 60);
    let s = backup(&db, &d, "pit", None);
    assert_eq!(
        (s.manifest.checkpoint_ts, s.manifest.snapshot_ts),
        (ckpt, snap)
    );
    for (i, ts) in [ckpt, ckpt + 1, (ckpt + snap) / 2, snap - 1, snap]
        .into_iter()
        .enumerate()
    {
        let (restored, state) = restore_state(&d, "pit", &format!("pit{i}"), Some(ts));
        assert_eq!(state, model.state_at(ts), "as of {ts}");
        assert_eq!(
            restored.last_committed_ts(),
            model.last_at_or_below(ts).max(ckpt)
        );
    }
    for ts in [ckpt - 1, snap + 1] {
        let e = restore(
            &d,
            Path::new(DEST),
            "pit",
            &d,
            Path::new("pit-out"),
            &RestoreOptions { as_of_ts: Some(ts) },
        )
        .unwrap_err();
        assert!(matches!(e, Error::NotCovered { .. }), "{e}");
        assert!(!d.exists(Path::new("pit-out")).unwrap(), "nothing written");
    }
}

#[test]
fn incremental_chain_restores_and_copies_fewer_pages() {
    let d = disk(3);
    let db = open(&d, DB);
    let mut model = Model::default();
    commit_some(&db, &mut model, 0, 300);
    db.checkpoint().unwrap();
    let full = backup(&db, &d, "full", None);
    commit_some(&db, &mut model, 1, 10);
    db.checkpoint().unwrap();
    let snap1 = commit_some(&db, &mut model, 2, 10);
    let inc1 = backup(&db, &d, "inc1", Some("full"));
    commit_some(&db, &mut model, 3, 10);
    db.checkpoint().unwrap();
    let snap2 = commit_some(&db, &mut model, 4, 10);
    let inc2 = backup(&db, &d, "inc2", Some("inc1"));
    let size = |s: &ryu_backup::BackupSummary| {
        s.manifest
            .files
            .iter()
            .filter(|f| f.path.starts_with("pages/"))
            .map(|f| f.size_bytes)
            .sum::<u64>()
    };
    assert!(
        size(&inc1) < size(&full),
        "{} vs {}",
        size(&inc1),
        size(&full)
    );
    assert_eq!(inc2.manifest.chain_root_id, "full");
    assert_eq!(inc2.manifest.parent_id.as_deref(), Some("inc1"));
    for (id, snap) in [("inc1", snap1), ("inc2", snap2)] {
        let r = verify(&d, Path::new(DEST), id, &VerifyOptions { deep: true }).unwrap();
        assert!(r.is_ok(), "{id}: {:?}", r.problems);
        let (_, state) = restore_state(&d, id, &format!("r-{id}"), None);
        assert_eq!(state, model.state_at(snap), "{id}");
    }
    let s = restore(
        &d,
        Path::new(DEST),
        "inc2",
        &d,
        Path::new("r-chain"),
        &RestoreOptions::default(),
    )
    .unwrap();
    assert_eq!(s.chain, vec!["full", "inc1", "inc2"]);
}

#[test]
fn progress_is_reported_and_reaches_the_total() {
    let d = disk(4);
    let db = open(&d, DB);
    let mut model = Model::default();
    commit_some(&db, &mut model, 0, 100);
    db.checkpoint().unwrap();
    commit_some(&db, &mut model, 1, 30);
    let seen: Arc<Mutex<Vec<Progress>>> = Arc::default();
    let mut job =
        BackupJob::start(&db, d.clone(), Path::new(DEST), clock(), options("p", None)).unwrap();
    let sink = seen.clone();
    job.on_progress(Box::new(move |p| sink.lock().unwrap().push(p)));
    let total = job.progress().bytes_total;
    assert!(total > 0);
    let mut steps = 0;
    while !matches!(job.step(4096).unwrap(), Step::Done(_)) {
        steps += 1;
    }
    let seen = seen.lock().unwrap();
    assert!(
        seen.len() >= 3 && steps >= 3,
        "{} reports in {steps} steps",
        seen.len()
    );
    assert!(seen.windows(2).all(|w| w[0].bytes_done <= w[1].bytes_done));
    assert!(
        seen.iter()
            .all(|p| p.bytes_total == total && p.bytes_done <= total)
    );
    assert_eq!(job.progress().bytes_done, total);
}

#[test]
fn rate_limits_cap_bytes_per_step_and_per_second() {
    let d = disk(5);
    let db = open(&d, DB);
    let mut model = Model::default();
    commit_some(&db, &mut model, 0, 200);
    db.checkpoint().unwrap();
    // Per step: a huge budget still moves at most the cap.
    let mut o = options("capped", None);
    o.max_bytes_per_step = Some(8192);
    let mut job = BackupJob::start(&db, d.clone(), Path::new(DEST), clock(), o).unwrap();
    let Step::Progress(p) = job.step(u64::MAX).unwrap() else {
        panic!("one capped step cannot finish")
    };
    // Needed pages only: a read may also span free pages between them.
    assert!(p.bytes_done > 0 && p.bytes_done <= 8192, "{p:?}");
    job.abort().unwrap();
    // Per second on the job's clock: no time, no bytes; one second, one second's worth.
    let c = clock();
    let mut o = options("paced", None);
    o.max_bytes_per_sec = Some(16384);
    let mut job = BackupJob::start(&db, d.clone(), Path::new(DEST), c.clone(), o).unwrap();
    assert!(matches!(job.step(u64::MAX).unwrap(), Step::Throttled(p) if p.bytes_done == 0));
    c.advance(1_000_000_000);
    let Step::Progress(p) = job.step(u64::MAX).unwrap() else {
        panic!("progress after a second")
    };
    assert!(p.bytes_done > 0 && p.bytes_done <= 16384, "{p:?}");
    assert!(matches!(job.step(u64::MAX).unwrap(), Step::Throttled(_)));
    let total = job.progress().bytes_total;
    // Less than one burst (the default 8 MiB window) in all: a pause long enough for
    // all of it lets the job finish without the clock moving again.
    assert!(2 * total < 8 << 20, "{total}");
    c.advance(total / 16384 * 1_000_000_000 + 2_000_000_000);
    let mut steps = 0;
    while !matches!(job.step(u64::MAX).unwrap(), Step::Done(_)) {
        steps += 1;
        assert!(steps < 10_000, "the job stopped short of its allowance");
    }
    // A rate of zero is refused before the job takes the lock or a pin: such a job
    // would hold both and never move.
    let mut o = options("zero", None);
    o.max_bytes_per_sec = Some(0);
    let e = BackupJob::start(&db, d.clone(), Path::new(DEST), clock(), o).unwrap_err();
    assert!(matches!(e, Error::Invalid { .. }), "{e}");
    assert!(e.to_string().contains("max_bytes_per_sec is 0"), "{e}");
    backup(&db, &d, "after-zero", None);
    // A step cap (or a caller's budget) below a page under a rate still moves a page
    // per step: counted as the rate's shortfall, it throttled the job forever.
    let c = clock();
    let mut o = options("tiny-steps", None);
    o.max_bytes_per_step = Some(1000);
    o.max_bytes_per_sec = Some(1 << 20);
    let mut job = BackupJob::start(&db, d.clone(), Path::new(DEST), c.clone(), o).unwrap();
    let mut steps = 0;
    loop {
        c.advance(10_000_000);
        steps += 1;
        assert!(steps < 100_000, "1000-byte steps under a rate never finish");
        if let Step::Done(_) = job.step(1).unwrap() {
            break;
        }
    }
}

/// Commit about 600 KB of values (500 of 1000 bytes, in 50 transactions): enough
/// pages for a rate-limited job to take many windows.
fn commit_600_kb(db: &Db) {
    for t in 0..50u32 {
        let mut w = db.begin_write();
        for i in 0..10u32 {
            w.put(format!("big{t:02}-{i}").as_bytes(), &[i as u8; 1000])
                .unwrap();
        }
        w.commit().unwrap();
    }
}

#[test]
fn a_rate_limited_job_stepped_after_a_pause_reads_at_most_one_burst() {
    let d = disk(16);
    let db = open(&d, DB);
    commit_600_kb(&db);
    db.checkpoint().unwrap();
    // 16 KiB/s in 32 KiB windows: the burst is one window (a tenth of a second at
    // the rate is less).
    const RATE: u64 = 16384;
    const BURST: u64 = 32 << 10;
    let c = clock();
    let mut o = options("paused", None);
    o.max_bytes_per_sec = Some(RATE);
    o.write_behind_bytes = Some(BURST);
    let mut job = BackupJob::start(&db, d.clone(), Path::new(DEST), c.clone(), o).unwrap();
    let total = job.progress().bytes_total;
    assert!(total > 8 * BURST, "too small to show a burst: {total}");
    // A driver that does not step the job for long enough to copy everything twice
    // over (a busy thread, a stalled machine): the allowance it did not use stops at
    // one burst, so the next step reads no more than that, and the one after waits.
    // Without the cap that step read the whole pause's worth at once.
    c.advance(2 * total / RATE * 1_000_000_000);
    let Step::Progress(p) = job.step(u64::MAX).unwrap() else {
        panic!("one burst cannot finish")
    };
    assert!(
        p.bytes_done > 0 && p.bytes_done <= BURST,
        "{p:?} of {total}"
    );
    assert!(matches!(job.step(u64::MAX).unwrap(), Step::Throttled(_)));
    assert!(job.next_step_in_ns() > 0);
    // Stepped as it asks, the job still finishes at the rate.
    let (mut waited, mut steps) = (0u64, 0u64);
    loop {
        let wait = job.next_step_in_ns();
        c.advance(wait);
        waited += wait;
        steps += 1;
        assert!(steps < 10_000, "a paced job never finishes");
        if let Step::Done(_) = job.step(u64::MAX).unwrap() {
            break;
        }
    }
    // The copy and its read-back at 16 KiB/s, after the burst.
    assert!(
        waited >= total / RATE * 1_000_000_000,
        "{waited} ns for {total} bytes"
    );
}

#[test]
fn a_driver_that_waits_as_a_rate_limited_job_says_is_never_throttled() {
    let d = disk(15);
    let db = open(&d, DB);
    // Some dozens of 32 KiB windows.
    commit_600_kb(&db);
    db.checkpoint().unwrap();
    let mut model = Model::default();
    commit_some(&db, &mut model, 1, 50);
    // Without a limit there is nothing to wait for.
    let job = BackupJob::start(
        &db,
        d.clone(),
        Path::new(DEST),
        clock(),
        options("free", None),
    )
    .unwrap();
    assert_eq!(job.next_step_in_ns(), 0);
    job.abort().unwrap();
    // 16 KiB/s in 32 KiB windows: the first may go after two seconds. Smaller windows
    // still wait for 32 KiB (a driver must not wake for every page); with no
    // write-behind, for the default window's 8 MiB.
    const RATE: u64 = 16384;
    for (window, first) in [(4096, 2), (0, 512)] {
        let mut o = options("small", None);
        o.max_bytes_per_sec = Some(RATE);
        o.write_behind_bytes = Some(window);
        let job = BackupJob::start(&db, d.clone(), Path::new(DEST), clock(), o).unwrap();
        assert_eq!(
            job.next_step_in_ns(),
            first * 1_000_000_000,
            "window {window}"
        );
        job.abort().unwrap();
    }
    let c = clock();
    let mut o = options("paced", None);
    o.max_bytes_per_sec = Some(RATE);
    o.write_behind_bytes = Some(32 << 10);
    let mut job = BackupJob::start(&db, d.clone(), Path::new(DEST), c.clone(), o).unwrap();
    assert_eq!(job.next_step_in_ns(), 2_000_000_000);
    let (mut waited, mut steps) = (0u64, 0u64);
    let summary = loop {
        let wait = job.next_step_in_ns();
        c.advance(wait);
        waited += wait;
        steps += 1;
        match job.step(u64::MAX).unwrap() {
            Step::Throttled(p) => panic!("throttled after waiting {wait} ns as told, at {p:?}"),
            Step::Progress(_) => {}
            Step::Done(s) => break s,
        }
    };
    // It waited for its reads at the rate and no longer: at least the pages and WAL it
    // copied; at most those, the pages it read back, the free pages a read spans and
    // the one window it waits for before it starts.
    let total = job.progress().bytes_total;
    let (least, most) = (total / RATE, (3 * total + (64 << 10)) / RATE + 1);
    assert!(
        (least * 1_000_000_000..=most * 1_000_000_000).contains(&waited),
        "waited {waited} ns in {steps} steps for {total} bytes at {RATE} B/s"
    );
    // A window per step, give or take: not one burst, not a page at a time.
    assert!(
        steps >= total / (32 << 10) && steps <= 4 * total / (32 << 10) + 10,
        "{steps} steps"
    );
    assert_eq!(job.next_step_in_ns(), 0);
    assert_eq!(summary.id, "paced");
    let e = job.step(1).unwrap_err();
    assert!(matches!(e, Error::JobFinished), "{e}");
}

#[test]
fn the_lock_keeps_two_jobs_apart_and_a_stale_lock_can_be_broken() {
    let d = disk(6);
    let db = open(&d, DB);
    let mut model = Model::default();
    commit_some(&db, &mut model, 0, 20);
    let job =
        BackupJob::start(&db, d.clone(), Path::new(DEST), clock(), options("a", None)).unwrap();
    let e =
        BackupJob::start(&db, d.clone(), Path::new(DEST), clock(), options("b", None)).unwrap_err();
    assert!(matches!(e, Error::Locked { .. }), "{e}");
    assert!(e.to_string().contains("break the lock"), "{e}");
    // The holder "crashes": the job vanishes without cleaning up.
    drop(job);
    let e =
        BackupJob::start(&db, d.clone(), Path::new(DEST), clock(), options("b", None)).unwrap_err();
    assert!(matches!(e, Error::Locked { .. }));
    let holder = break_lock(&d, Path::new(DEST)).unwrap().unwrap();
    assert!(holder.contains("backup job a"), "{holder}");
    backup(&db, &d, "b", None);
    // The crashed job's leftover is incomplete, and prune removes it.
    let listed = ryu_backup::list(&d, Path::new(DEST)).unwrap();
    assert!(
        listed
            .iter()
            .any(|e| e.id == "a" && e.status == ryu_backup::BackupStatus::Incomplete)
    );
    let r = verify(&d, Path::new(DEST), "a", &VerifyOptions::default()).unwrap();
    assert_eq!(r.problems, vec![ryu_backup::Problem::Incomplete]);
    let pr = ryu_backup::prune(&d, Path::new(DEST), &Default::default()).unwrap();
    assert_eq!(pr.removed_incomplete, vec![".tmp-a".to_string()]);
    assert_eq!(pr.kept, vec!["b".to_string()]);
}

#[test]
fn restore_refuses_a_non_empty_target_and_fills_an_empty_one() {
    let d = disk(7);
    let db = open(&d, DB);
    let mut model = Model::default();
    let snap = commit_some(&db, &mut model, 0, 20);
    backup(&db, &d, "b", None);
    d.create_dir_all(Path::new("busy")).unwrap();
    d.create(Path::new("busy/file")).unwrap();
    let e = restore(
        &d,
        Path::new(DEST),
        "b",
        &d,
        Path::new("busy"),
        &RestoreOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::TargetNotEmpty { .. }), "{e}");
    assert_eq!(d.list(Path::new("busy")).unwrap(), vec!["file".to_string()]);
    // The live database's own directory is non-empty too.
    let e = restore(
        &d,
        Path::new(DEST),
        "b",
        &d,
        Path::new(DB),
        &RestoreOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::TargetNotEmpty { .. }), "{e}");
    d.create_dir_all(Path::new("empty")).unwrap();
    let (_, state) = restore_state(&d, "b", "empty", None);
    assert_eq!(state, model.state_at(snap));
}

#[test]
fn a_backup_of_a_database_without_checkpoints_or_commits_restores() {
    let d = disk(8);
    let db = open(&d, DB);
    backup(&db, &d, "empty", None);
    let (r, state) = restore_state(&d, "empty", "r-empty", None);
    assert!(state.is_empty());
    assert_eq!(r.last_committed_ts(), 0);
    let mut model = Model::default();
    let snap = commit_some(&db, &mut model, 0, 5);
    backup(&db, &d, "wal-only", None);
    let (_, state) = restore_state(&d, "wal-only", "r-wal", None);
    assert_eq!(state, model.state_at(snap));
}

/// A source read error fails the backup with a clear error, and harms nothing: no
/// lock, no leftover, and the database goes on.
#[test]
fn a_source_read_error_fails_the_backup_cleanly() {
    use ryu_sim::{DiskFaults, Ratio, SimDisk};
    let sim = SimDisk::new(9);
    let d: DynDisk = Arc::new(sim.clone());
    let db = open(&d, DB);
    let mut model = Model::default();
    commit_some(&db, &mut model, 0, 100);
    db.checkpoint().unwrap();
    sim.set_faults(DiskFaults {
        read_error: Ratio::ONE,
        ..Default::default()
    });
    // The backup goes to another disk; only the source fails its reads.
    let dst = disk(10);
    let e = match BackupJob::start(
        &db,
        dst.clone(),
        Path::new(DEST),
        clock(),
        options("x", None),
    ) {
        Err(e) => e,
        Ok(mut job) => loop {
            match job.step(1 << 20) {
                Err(e) => break e,
                Ok(Step::Done(_)) => panic!("a backup succeeded without reading its source"),
                Ok(_) => {}
            }
        },
    };
    assert!(matches!(e, Error::Engine(_)), "{e}");
    assert!(e.to_string().starts_with("source database:"), "{e}");
    sim.set_faults(DiskFaults::default());
    assert!(
        dst.list(Path::new(DEST)).unwrap().is_empty(),
        "no lock, no leftover"
    );
    let snap = commit_some(&db, &mut model, 1, 10);
    assert_eq!(read_all(&db), model.state_at(snap));
    backup(&db, &dst, "y", None);
    let (_, state) = {
        restore(
            &dst,
            Path::new(DEST),
            "y",
            &dst,
            Path::new("r"),
            &RestoreOptions::default(),
        )
        .unwrap();
        let r = open(&dst, "r");
        let s = read_all(&r);
        (r, s)
    };
    assert_eq!(state, model.state_at(snap));
}

/// Restore's commit point is the rename of `data.restore` to `data`: a power cut at
/// any operation leaves a target the engine refuses, an empty one, or (once the
/// rename is durable) exactly the backup's state. Never a wrong database.
#[test]
fn a_crash_mid_restore_never_leaves_a_database_that_opens_wrong() {
    use ryu_sim::SimDisk;
    let d = disk(11);
    let db = open(&d, DB);
    let mut model = Model::default();
    commit_some(&db, &mut model, 0, 150);
    db.checkpoint().unwrap();
    commit_some(&db, &mut model, 1, 60);
    backup(&db, &d, "full", None);
    commit_some(&db, &mut model, 2, 20);
    db.checkpoint().unwrap();
    let snap = commit_some(&db, &mut model, 3, 60);
    backup(&db, &d, "inc", Some("full"));
    let (mut refused, mut empty, mut exact) = (0, 0, 0);
    for budget in 1.. {
        let sim = SimDisk::new(budget as u64);
        let cut: DynDisk = Arc::new(PowerCut::new(Arc::new(sim.clone()), budget));
        let outcome = restore(
            &d,
            Path::new(DEST),
            "inc",
            &cut,
            Path::new("t"),
            &RestoreOptions::default(),
        );
        sim.crash();
        let plain: DynDisk = Arc::new(sim.clone());
        let target_empty = !plain.exists(Path::new("t")).unwrap()
            || plain.list(Path::new("t")).unwrap().is_empty();
        match Db::open(plain, Path::new("t"), small_options()) {
            Ok(r) if target_empty => {
                assert!(outcome.is_err());
                assert!(read_all(&r).is_empty());
                empty += 1;
            }
            Ok(r) => {
                assert_eq!(read_all(&r), model.state_at(snap), "budget {budget}");
                assert_eq!(r.last_committed_ts(), snap);
                exact += 1;
            }
            Err(e) => {
                assert!(outcome.is_err(), "a finished restore does not open: {e}");
                refused += 1;
            }
        }
        if outcome.is_ok() {
            break;
        }
    }
    assert!(
        refused > 10 && empty > 0 && exact >= 1,
        "{refused} {empty} {exact}"
    );
}

/// Regression: a restore into a new `deep/er/t` synced only `deep/er` (which holds
/// `t`), so a power cut after it reported success could drop `deep`, and the restored
/// database with it. Every directory made is now synced into its parent.
#[test]
fn regression_a_restore_into_new_nested_directories_survives_a_power_cut() {
    use ryu_sim::SimDisk;
    let d = disk(13);
    let db = open(&d, DB);
    let mut model = Model::default();
    commit_some(&db, &mut model, 0, 50);
    db.checkpoint().unwrap();
    let snap = commit_some(&db, &mut model, 1, 20);
    backup(&db, &d, "full", None);
    let target = Path::new("deep/er/t");
    for seed in 0..16 {
        let sim = SimDisk::new(seed);
        let plain: DynDisk = Arc::new(sim.clone());
        restore(
            &d,
            Path::new(DEST),
            "full",
            &plain,
            target,
            &RestoreOptions::default(),
        )
        .unwrap();
        sim.crash();
        let r = Db::open(Arc::new(sim.clone()), target, small_options()).unwrap();
        assert_eq!(read_all(&r), model.state_at(snap), "seed {seed}");
    }
}

/// The replicated case's fields travel in the manifest, and the manifest is JSON a
/// human can read.
#[test]
fn cluster_fields_are_recorded_in_readable_json() {
    let d = disk(12);
    let db = open(&d, DB);
    let mut model = Model::default();
    commit_some(&db, &mut model, 0, 10);
    let mut o = options("c1", None);
    o.cluster = Some(ryu_backup::ClusterInfo {
        cluster_id: "prod-eu".into(),
        raft_index: 42,
        raft_term: 7,
    });
    let mut job = BackupJob::start(&db, d.clone(), Path::new(DEST), clock(), o).unwrap();
    let s = loop {
        if let Step::Done(s) = job.step(1 << 20).unwrap() {
            break s;
        }
    };
    let f = d.open(Path::new("backups/c1/manifest.json")).unwrap();
    let mut text = vec![0u8; f.len().unwrap() as usize];
    f.read_at(0, &mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    for needle in [
        "\"cluster_id\": \"prod-eu\"",
        "\"raft_index\": 42",
        "\"kind\": \"full\"",
        "\"tool\": \"ryu-backup ",
        "\"manifest_crc32\": \"",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
    assert_eq!(s.manifest.cluster.as_ref().unwrap().raft_term, 7);
    assert_eq!(s.manifest.created_unix_ns, 1_700_000_000_000_000_000);
}
