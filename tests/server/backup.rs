//! A coordinated cluster backup taken under write load restores, on a new cluster, to
//! exactly the state at its barrier: every write acknowledged before `BACKUP` was sent
//! is in it, nothing sent after its reply is.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use crate::harness::{Cluster, StopFlag, StopOnDrop, connect, info_field, ryu};

const WRITERS: usize = 2;
const BACKUP_ID: &str = "b1";
/// Keys written before the backup and never touched again.
const PRELOADED: usize = 200;

/// One writer's progress, shared with the test thread.
#[derive(Debug)]
struct Progress {
    /// The last sequence number acknowledged (-1: none).
    acked: AtomicI64,
    /// The first sequence number first sent after the backup's reply arrived (-1: not
    /// yet).
    first_after: AtomicI64,
}

fn writer_key(t: usize, seq: i64) -> String {
    format!("w{t}:{seq}")
}

/// Write `w<t>:0`, `w<t>:1`, ... one at a time, each after the previous one's OK. A
/// failed write is retried with the same key and value (idempotent), so the keys
/// written always form a prefix of the sequence.
fn writer(
    t: usize,
    addr: SocketAddr,
    progress: Arc<Progress>,
    backup_done: Arc<AtomicBool>,
    stop: StopFlag,
) -> usize {
    let mut errors = 0;
    let mut con = None;
    let mut seq = 0i64;
    let mut first_attempt = true;
    while !stop.is_set() {
        let c = match con.as_mut() {
            Some(c) => c,
            None => match connect(addr, Duration::from_secs(5)) {
                Ok(c) => con.insert(c),
                Err(_) => {
                    errors += 1;
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            },
        };
        // Checked before the send: a write counted as "before" may in fact be sent
        // after the reply, which only loosens the bound the test asserts.
        if first_attempt
            && backup_done.load(Ordering::SeqCst)
            && progress.first_after.load(Ordering::SeqCst) < 0
        {
            progress.first_after.store(seq, Ordering::SeqCst);
        }
        let reply = redis::cmd("SET")
            .arg(writer_key(t, seq))
            .arg(format!("v{seq}"))
            .query::<String>(c);
        match reply {
            Ok(_) => {
                progress.acked.store(seq, Ordering::SeqCst);
                seq += 1;
                first_attempt = true;
            }
            Err(e) => {
                eprintln!("writer {t}: seq {seq}: {e}; retrying");
                errors += 1;
                first_attempt = false;
                if e.is_io_error() {
                    con = None;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    errors
}

/// Every key and value a node holds (a linearizable `KEYS *` then `MGET`).
fn contents(addr: SocketAddr) -> BTreeMap<String, String> {
    let mut c = connect(addr, Duration::from_secs(10)).expect("connect");
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).expect("KEYS *");
    if keys.is_empty() {
        return BTreeMap::new();
    }
    let values: Vec<String> = redis::cmd("MGET").arg(&keys).query(&mut c).expect("MGET");
    keys.into_iter().zip(values).collect()
}

/// `(key, value in a, value in b)` for every key on which two maps differ.
fn differences(
    a: &BTreeMap<String, String>,
    b: &BTreeMap<String, String>,
) -> Vec<(String, Option<String>, Option<String>)> {
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| (k.clone(), a.get(k).cloned(), b.get(k).cloned()))
        .collect()
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Restore all three nodes of `restored` from the backup part of node 1, checking
/// the exit codes and that each lands at the barrier.
fn restore_all(store: &Path, restored: &Cluster, barrier_index: u64) {
    let store = store.to_str().expect("a UTF-8 temp path");
    let (code, out) = ryu(&["backup", "verify", BACKUP_ID, "--dir", store]);
    assert_eq!(code, 0, "backup verify failed:\n{out}");
    for s in &restored.specs {
        let data = s.data_dir.to_str().expect("a UTF-8 temp path");
        let restore = [
            "backup",
            "restore",
            BACKUP_ID,
            "--dir",
            store,
            "--data-dir",
            data,
            "--from-node",
            "1",
        ];
        let (code, out) = ryu(&restore);
        assert_eq!(code, 0, "restore into {data} failed:\n{out}");
        assert!(
            out.contains(&format!("at index {barrier_index} ")),
            "restore did not land at the barrier {barrier_index}:\n{out}"
        );
        let (code, out) = ryu(&restore);
        assert_eq!(
            code, 1,
            "a second restore into the non-empty {data} must fail with 1:\n{out}"
        );
    }
}

#[test]
fn coordinated_cluster_backup_under_load_restores_to_the_barrier() {
    let mut source = Cluster::new("backup-source", 3);
    source.start();
    let (leader, _) = source.wait_leader(Duration::from_secs(15));
    let leader_addr = source.procs[leader].spec.client;
    let follower_addr = source.procs[(leader + 1) % 3].spec.client;
    let mut con = connect(leader_addr, Duration::from_secs(60)).expect("connect to the leader");
    let source_cluster_id = info_field(&mut con, "ryu_cluster_id");

    // State the backup must carry unchanged: plain keys, a counter, a deleted key.
    for chunk in (0..PRELOADED).collect::<Vec<_>>().chunks(50) {
        let mut mset = redis::cmd("MSET");
        for i in chunk {
            mset.arg(format!("pre:{i}")).arg(format!("p{i}"));
        }
        mset.query::<()>(&mut con).expect("MSET");
    }
    redis::cmd("INCRBY")
        .arg("counter")
        .arg(41)
        .query::<i64>(&mut con)
        .expect("INCRBY");
    redis::cmd("SET")
        .arg("gone")
        .arg("x")
        .query::<()>(&mut con)
        .expect("SET");
    redis::cmd("DEL")
        .arg("gone")
        .query::<i64>(&mut con)
        .expect("DEL");

    // Writers: one on the leader, one on a follower (its writes are forwarded).
    let stop = StopOnDrop(StopFlag::default());
    let backup_done = Arc::new(AtomicBool::new(false));
    let progress: Vec<Arc<Progress>> = (0..WRITERS)
        .map(|_| {
            Arc::new(Progress {
                acked: AtomicI64::new(-1),
                first_after: AtomicI64::new(-1),
            })
        })
        .collect();
    let writers: Vec<_> = (0..WRITERS)
        .map(|t| {
            let addr = [leader_addr, follower_addr][t % 2];
            let (p, d, s) = (progress[t].clone(), backup_done.clone(), stop.0.clone());
            std::thread::spawn(move || writer(t, addr, p, d, s))
        })
        .collect();
    wait_until(
        "each writer has 20 writes acknowledged",
        Duration::from_secs(20),
        || {
            progress
                .iter()
                .all(|p| p.acked.load(Ordering::SeqCst) >= 20)
        },
    );

    let acked_before: Vec<i64> = progress
        .iter()
        .map(|p| p.acked.load(Ordering::SeqCst))
        .collect();
    let started = Instant::now();
    let reply: String = redis::cmd("BACKUP")
        .arg("CLUSTER")
        .arg(BACKUP_ID)
        .query(&mut con)
        .expect("BACKUP CLUSTER");
    backup_done.store(true, Ordering::SeqCst);
    eprintln!("BACKUP CLUSTER took {:?}: {reply}", started.elapsed());
    let manifest: serde_json::Value = serde_json::from_str(&reply).expect("a JSON manifest");
    assert_eq!(manifest["status"], "complete", "{reply}");
    assert_eq!(manifest["backup_id"], BACKUP_ID, "{reply}");
    let barrier_index = manifest["barrier_index"]
        .as_u64()
        .unwrap_or_else(|| panic!("no barrier_index: {reply}"));
    assert!(barrier_index > 0, "{reply}");

    // Let every writer send a few writes after the reply, then stop.
    wait_until(
        "each writer writes after the backup",
        Duration::from_secs(20),
        || {
            progress.iter().all(|p| {
                let first = p.first_after.load(Ordering::SeqCst);
                first >= 0 && p.acked.load(Ordering::SeqCst) >= first + 5
            })
        },
    );
    stop.0.set();
    for w in writers {
        let errors = w.join().expect("a writer panicked");
        assert!(errors <= 5, "{errors} writes failed on a healthy cluster");
    }
    let first_after: Vec<i64> = progress
        .iter()
        .map(|p| p.first_after.load(Ordering::SeqCst))
        .collect();
    eprintln!(
        "barrier index {barrier_index}; acknowledged before BACKUP: {acked_before:?}; \
         first sent after its reply: {first_after:?}"
    );
    let source_state = contents(leader_addr);
    assert_eq!(source_state.get("counter").map(String::as_str), Some("41"));
    source.terminate();

    let mut restored = Cluster::new("backup-restored", 3);
    restore_all(&source.specs[0].backup_dir, &restored, barrier_index);
    restored.start();
    let (leader, _) = restored.wait_leader(Duration::from_secs(15));

    // Every node holds the same state; the writers' keys are prefixes within bounds.
    let expected_others: BTreeMap<String, String> = source_state
        .iter()
        .filter(|(k, _)| !k.starts_with('w'))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(expected_others.len(), PRELOADED + 1);
    let first_node_state = contents(restored.procs[0].spec.client);
    for (t, (&before, &after)) in acked_before.iter().zip(&first_after).enumerate() {
        let mut seqs: Vec<i64> = first_node_state
            .keys()
            .filter_map(|k| k.strip_prefix(&format!("w{t}:"))?.parse().ok())
            .collect();
        seqs.sort_unstable();
        let n = seqs.len() as i64 - 1;
        assert_eq!(
            seqs,
            (0..=n).collect::<Vec<_>>(),
            "writer {t}'s restored keys are not a prefix of its sequence"
        );
        for s in &seqs {
            assert_eq!(first_node_state[&writer_key(t, *s)], format!("v{s}"));
        }
        eprintln!("writer {t}: restored 0..={n} (acked before: {before}, first after: {after})");
        assert!(
            n >= before,
            "writer {t}: seq {before} was acknowledged before BACKUP but the restore ends at {n}"
        );
        assert!(
            n < after,
            "writer {t}: seq {after} was sent after BACKUP's reply but the restore holds 0..={n}"
        );
    }
    let others: BTreeMap<String, String> = first_node_state
        .iter()
        .filter(|(k, _)| !k.starts_with('w'))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let diff = differences(&expected_others, &others);
    assert!(
        diff.is_empty(),
        "non-writer keys differ from the source: {diff:?}"
    );
    for p in &restored.procs[1..] {
        let diff = differences(&first_node_state, &contents(p.spec.client));
        assert!(
            diff.is_empty(),
            "restored node {} holds other contents than node 1: {diff:?}",
            p.spec.id
        );
    }

    // A new cluster: its own id, and it takes writes.
    let mut con = connect(restored.procs[leader].spec.client, Duration::from_secs(10))
        .expect("connect to the restored leader");
    let restored_cluster_id = info_field(&mut con, "ryu_cluster_id");
    assert_ne!(restored_cluster_id, source_cluster_id);
    redis::cmd("SET")
        .arg("after-restore")
        .arg("yes")
        .query::<()>(&mut con)
        .expect("the restored cluster takes a write");
    let mut other = connect(
        restored.procs[(leader + 1) % 3].spec.client,
        Duration::from_secs(10),
    )
    .expect("connect to a restored follower");
    let v: Option<String> = redis::cmd("GET")
        .arg("after-restore")
        .query(&mut other)
        .expect("GET");
    assert_eq!(v.as_deref(), Some("yes"));
}
