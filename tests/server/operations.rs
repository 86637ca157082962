//! What an operator does with the `ryu` CLI and the admin commands, against real
//! processes: membership changes (add a voter, remove one, add a learner; refused
//! without a cluster secret), offline backups of a stopped node (create, list,
//! verify, prune, restore), online backups sent to a follower (forwarded to the
//! leader, or taken by the follower itself) and `BACKUP STATUS`, and read-only
//! `MULTI` blocks that must read one snapshot.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::harness::{Cluster, StopFlag, StopOnDrop, connect, info_field, role, ryu_timed};

const T: Duration = Duration::from_secs(15);
/// The longest any one `ryu` CLI command may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Run `ryu args`; returns (exit code, output).
fn ryu(args: &[&str]) -> (i32, String) {
    ryu_timed(args, CLI_TIMEOUT)
}

/// Run `ryu args`, which must exit 0; returns its output.
fn ryu_ok(args: &[&str]) -> String {
    let (code, out) = ryu(args);
    assert_eq!(code, 0, "`ryu {}` exited {code}:\n{out}", args.join(" "));
    out
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temp path")
}

/// `SET key value`, retried (it is idempotent) while the cluster answers
/// `UNAVAILABLE`/`UNKNOWN` or the connection fails, for at most `T`.
fn set(addr: SocketAddr, key: &str, value: &str) {
    let deadline = Instant::now() + T;
    loop {
        let r = connect(addr, Duration::from_secs(5)).and_then(|mut c| {
            redis::cmd("SET")
                .arg(key)
                .arg(value)
                .query::<String>(&mut c)
        });
        match r {
            Ok(_) => return,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "SET {key} {value} on {addr} kept failing for {T:?}: {e}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// A linearizable `GET`, retried only while the node answers `UNAVAILABLE` (the
/// read had no effect: e.g. a node just started knows no leader yet), for at most `T`.
#[track_caller]
fn get(addr: SocketAddr, key: &str) -> Option<String> {
    let deadline = Instant::now() + T;
    let mut c = connect(addr, Duration::from_secs(5)).expect("connect");
    loop {
        match redis::cmd("GET").arg(key).query(&mut c) {
            Ok(v) => return v,
            Err(e) if e.code() == Some("UNAVAILABLE") && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("GET {key} on {addr}: {e}"),
        }
    }
}

/// `CLUSTER NODES` text as `id -> flags` (`voter`/`learner`, `leader`, `myself`).
fn parse_nodes(text: &str) -> BTreeMap<u64, Vec<String>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 3, "not a CLUSTER NODES line: {l:?} in\n{text}");
            let id = f[0]
                .parse()
                .unwrap_or_else(|_| panic!("no node id in {l:?}"));
            (id, f[2].split(',').map(str::to_string).collect())
        })
        .collect()
}

/// A node's `CLUSTER NODES`, through the RESP port.
fn cluster_nodes(addr: SocketAddr) -> BTreeMap<u64, Vec<String>> {
    let mut c = connect(addr, Duration::from_secs(5)).expect("connect");
    let text: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query(&mut c)
        .expect("CLUSTER NODES");
    parse_nodes(&text)
}

fn has_flag(nodes: &BTreeMap<u64, Vec<String>>, id: u64, flag: &str) -> bool {
    nodes.get(&id).is_some_and(|f| f.iter().any(|x| x == flag))
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

// ---- 1. membership --------------------------------------------------------------

#[test]
fn membership_changes_through_the_cli() {
    let started = Instant::now();
    let mut c = Cluster::new("members", 3);
    c.start();
    let (leader, _) = c.wait_leader(T);
    let n1 = c.specs[0].client;
    let follower = c.specs[(leader + 1) % 3].client;
    let follower_s = follower.to_string();
    set(n1, "before-4", "yes");

    // Node 4 starts as an empty non-member with the same --initial-cluster.
    let i4 = c.start_extra(4);
    let n4 = c.specs[i4].client;
    assert!(
        !cluster_nodes(n1).contains_key(&4),
        "node 4 is a member before it was added"
    );
    let out = ryu_ok(&["cluster", "add", "4", "--addr", &follower_s]);
    eprintln!("cluster add 4 via {follower_s}: {}", out.trim());
    set(n1, "after-4", "yes");
    let (li, _) = c.wait_leader(T);
    let target = role(&c.specs[li]).expect("the leader's ROLE").commit;
    wait_until("node 4 applies the latest writes", T, || {
        role(&c.specs[i4]).is_some_and(|r| r.applied >= target && r.role == "follower")
    });
    let mut con4 = connect(n4, Duration::from_secs(5)).expect("connect to node 4");
    let voters = info_field(&mut con4, "ryu_voters");
    assert_eq!(voters, "1,2,3,4", "node 4's INFO ryu_voters");
    assert_eq!(info_field(&mut con4, "ryu_role"), "follower");
    let status = ryu_ok(&["cluster", "status", "--addr", &n1.to_string()]);
    let nodes = parse_nodes(&status);
    for id in 1..=4 {
        assert!(
            has_flag(&nodes, id, "voter"),
            "`ryu cluster status` does not list {id} as a voter:\n{status}"
        );
    }
    assert!(
        has_flag(&parse_nodes(&status), 1, "myself"),
        "`ryu cluster status` is node 1's view:\n{status}"
    );
    assert_eq!(get(n4, "before-4").as_deref(), Some("yes"));
    // A write through node 4 (a follower: forwarded to the leader), read on node 1.
    set(n4, "via-4", "four");
    assert_eq!(get(n1, "via-4").as_deref(), Some("four"));

    // Remove node 3 (whichever role it has), through node 1.
    let was_leader = li == 2;
    let out = ryu_ok(&["cluster", "remove", "3", "--addr", &n1.to_string()]);
    eprintln!(
        "cluster remove 3 (node 3 was {}): {}",
        if was_leader {
            "the leader"
        } else {
            "a follower"
        },
        out.trim()
    );
    for i in [0, 1, i4] {
        wait_until(
            &format!("node {}'s CLUSTER NODES drops node 3", c.specs[i].id),
            T,
            || {
                let nodes = cluster_nodes(c.specs[i].client);
                !nodes.contains_key(&3) && [1, 2, 4].iter().all(|id| has_flag(&nodes, *id, "voter"))
            },
        );
    }
    set(n1, "after-remove", "yes");
    assert_eq!(get(n4, "after-remove").as_deref(), Some("yes"));
    // The quorum really is 2 of {1, 2, 4} now: with 3 and 4 both down, a write
    // through node 1 still commits (in {1, 2, 3, 4} it would need 3 nodes).
    c.procs[2].kill();
    c.procs[i4].sigterm();
    let status4 = c.procs[i4].wait_exit(Duration::from_secs(20));
    assert!(
        status4.success(),
        "node 4 exited with {status4} after SIGTERM"
    );
    set(n1, "with-two-of-three", "yes");
    assert_eq!(
        get(c.specs[1].client, "with-two-of-three").as_deref(),
        Some("yes")
    );
    c.restart(i4);
    assert_eq!(get(n4, "with-two-of-three").as_deref(), Some("yes"));

    // A learner: listed as one, not a voter; serves linearizable reads; forwards
    // writes.
    let i5 = c.start_extra(5);
    let n5 = c.specs[i5].client;
    ryu_ok(&[
        "cluster",
        "add-learner",
        "5",
        "--addr",
        &c.specs[1].client.to_string(),
    ]);
    let status = ryu_ok(&["cluster", "status", "--addr", &n1.to_string()]);
    let nodes = parse_nodes(&status);
    assert!(has_flag(&nodes, 5, "learner"), "5 is no learner:\n{status}");
    assert!(!has_flag(&nodes, 5, "voter"), "5 is a voter:\n{status}");
    assert_eq!(
        nodes.keys().copied().collect::<Vec<_>>(),
        [1, 2, 4, 5],
        "{status}"
    );
    // Node 5 itself learns it once it has caught up.
    let mut con5 = connect(n5, Duration::from_secs(5)).expect("connect to node 5");
    wait_until("node 5 sees itself as a learner", T, || {
        info_field(&mut con5, "ryu_learners") == "5"
    });
    assert_eq!(info_field(&mut con5, "ryu_voters"), "1,2,4");
    for i in 0..10 {
        let writer = [n1, n4][i % 2];
        set(writer, "lin", &i.to_string());
        // Acknowledged just now: a linearizable read anywhere must see it.
        assert_eq!(
            get(n5, "lin").as_deref(),
            Some(i.to_string().as_str()),
            "learner 5 served a stale read"
        );
    }
    assert_eq!(get(n5, "via-4").as_deref(), Some("four"));
    set(n5, "via-5", "five");
    assert_eq!(get(n1, "via-5").as_deref(), Some("five"));
    drop(c);

    // Without a secret a node takes no peer connections: adding a member is refused.
    let mut single = Cluster::new("no-secret", 1);
    single.start();
    single.wait_leader(T);
    let addr = single.specs[0].client;
    let (code, out) = ryu(&["cluster", "add", "2", "--addr", &addr.to_string()]);
    assert_eq!(code, 1, "cluster add without a secret must exit 1:\n{out}");
    assert!(
        out.contains("secret"),
        "the refusal must mention the secret:\n{out}"
    );
    assert!(
        !cluster_nodes(addr).contains_key(&2),
        "node 2 was added anyway"
    );
    set(addr, "still", "serving");
    assert_eq!(get(addr, "still").as_deref(), Some("serving"));
    eprintln!(
        "membership_changes_through_the_cli: {:?}",
        started.elapsed()
    );
}

// ---- 2. offline backups ---------------------------------------------------------

/// Write `model`'s changes (values; `None` deletes) to the node at `addr`.
fn apply(
    addr: SocketAddr,
    changes: &[(String, Option<String>)],
    model: &mut BTreeMap<String, String>,
) {
    let mut c = connect(addr, Duration::from_secs(5)).expect("connect");
    for (k, v) in changes {
        match v {
            Some(v) => {
                redis::cmd("SET")
                    .arg(k)
                    .arg(v)
                    .query::<()>(&mut c)
                    .expect("SET");
                model.insert(k.clone(), v.clone());
            }
            None => {
                redis::cmd("DEL").arg(k).query::<i64>(&mut c).expect("DEL");
                model.remove(k);
            }
        }
    }
}

/// SIGTERM the only node of `c`; it must exit 0.
fn stop(c: &mut Cluster) {
    c.procs[0].sigterm();
    let status = c.procs[0].wait_exit(Duration::from_secs(20));
    assert!(
        status.success(),
        "the node exited with {status} after SIGTERM"
    );
}

/// `ryu backup list` as `id -> (kind, status)`.
fn list(store: &Path) -> BTreeMap<String, (String, String)> {
    let out = ryu_ok(&["backup", "list", "--dir", path_str(store)]);
    out.lines()
        .skip_while(|l| !l.starts_with("ID\t"))
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert!(f.len() >= 3, "not a `backup list` line: {l:?}\n{out}");
            (f[0].to_string(), (f[1].to_string(), f[2].to_string()))
        })
        .collect()
}

/// The largest file of a backup directory other than its manifest: its data.
fn data_file(backup: &Path) -> PathBuf {
    let mut files = Vec::new();
    let mut todo = vec![backup.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read the backup directory") {
            let p = e.expect("a directory entry").path();
            if p.is_dir() {
                todo.push(p);
            } else if p.file_name().is_some_and(|n| n != "manifest.json") {
                let len = p.metadata().expect("stat").len();
                files.push((len, p));
            }
        }
    }
    files.sort();
    files
        .pop()
        .unwrap_or_else(|| panic!("no data file in {}", backup.display()))
        .1
}

#[test]
fn offline_backup_list_verify_prune_and_restore() {
    let started = Instant::now();
    let mut c = Cluster::new("offline", 1);
    c.start();
    c.wait_leader(T);
    let addr = c.specs[0].client;
    let data = c.specs[0].data_dir.clone();
    let store = c.dir.path().join("offline-store");
    let (data_s, store_s) = (path_str(&data).to_string(), path_str(&store).to_string());
    let mut model = BTreeMap::new();
    let first: Vec<(String, Option<String>)> = (0..100)
        .map(|i| (format!("k{i:03}"), Some(format!("v{i}"))))
        .collect();
    apply(addr, &first, &mut model);
    assert_eq!(contents(addr), model);
    stop(&mut c);

    let backup = |id: &str| {
        let out = ryu_ok(&[
            "backup",
            "create",
            "--data-dir",
            &data_s,
            "--dir",
            &store_s,
            "--node",
            "1",
            "--id",
            id,
        ]);
        assert!(out.contains(&format!("backup {id} complete")), "{out}");
    };
    backup("off1");

    // A mistyped data directory: refused, and nothing is created.
    let missing = c.dir.path().join("no-such-node");
    let store2 = c.dir.path().join("other-store");
    let (code, out) = ryu(&[
        "backup",
        "create",
        "--data-dir",
        path_str(&missing),
        "--dir",
        path_str(&store2),
        "--node",
        "1",
        "--id",
        "x1",
    ]);
    assert_eq!(
        code, 1,
        "backup create of a missing data dir must exit 1:\n{out}"
    );
    assert!(!missing.exists(), "{} was created", missing.display());
    assert!(!store2.exists(), "{} was created", store2.display());

    let listed = list(&store);
    assert_eq!(
        listed.get("off1"),
        Some(&("node-1".to_string(), "complete".to_string())),
        "{listed:?}"
    );
    let out = ryu_ok(&["backup", "verify", "off1", "--dir", &store_s]);
    assert!(out.contains("node 1: ok"), "{out}");
    ryu_ok(&["backup", "verify", "off1", "--dir", &store_s, "--deep"]);

    // One flipped byte in a data file: verify (plain and deep) finds it.
    let victim = data_file(&store.join("node-1").join("off1"));
    let mut bytes = std::fs::read(&victim).expect("read the data file");
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    std::fs::write(&victim, &bytes).expect("corrupt the data file");
    eprintln!("flipped byte {at} of {}", victim.display());
    for deep in [false, true] {
        let mut args = vec!["backup", "verify", "off1", "--dir", &store_s];
        if deep {
            args.push("--deep");
        }
        let (code, out) = ryu(&args);
        assert_eq!(
            code, 1,
            "verify (deep: {deep}) of a corrupt backup must exit 1:\n{out}"
        );
        assert!(out.contains("problem"), "{out}");
    }

    // Three more backups, each after a restart and some writes.
    let mut at_off4 = BTreeMap::new();
    for n in 2..=4 {
        c.restart(0);
        c.wait_leader(T);
        assert_eq!(contents(addr), model, "the data after restart {n}");
        let mut changes: Vec<(String, Option<String>)> = (0..10)
            .map(|i| (format!("k{:03}", 10 * n + i), Some(format!("v{i}@{n}"))))
            .collect();
        changes.extend((0..5).map(|i| (format!("k{:03}", 50 + 5 * n + i), None)));
        changes.push((format!("phase{n}"), Some(n.to_string())));
        apply(addr, &changes, &mut model);
        stop(&mut c);
        backup(&format!("off{n}"));
        if n == 4 {
            at_off4 = model.clone();
        }
    }
    // Writes after the last backup, which a restore of it must not hold.
    c.restart(0);
    c.wait_leader(T);
    apply(
        addr,
        &[
            ("k000".to_string(), Some("after".to_string())),
            ("k001".to_string(), None),
            ("late".to_string(), Some("after".to_string())),
        ],
        &mut model,
    );
    stop(&mut c);

    let out = ryu_ok(&["backup", "prune", "--keep-last", "2", "--dir", &store_s]);
    eprintln!("prune: {}", out.trim());
    let listed = list(&store);
    let ids: Vec<&String> = listed.keys().collect();
    assert_eq!(
        ids,
        ["off3", "off4"],
        "after prune --keep-last 2: {listed:?}"
    );
    assert!(
        listed
            .values()
            .all(|(k, s)| k == "node-1" && s == "complete"),
        "{listed:?}"
    );
    assert!(!store.join("node-1").join("off1").exists());
    assert!(!store.join("node-1").join("off2").exists());

    let mut restored = Cluster::new("offline-restored", 1);
    let target = restored.specs[0].data_dir.clone();
    let restore = [
        "backup",
        "restore",
        "off4",
        "--dir",
        &store_s,
        "--data-dir",
        path_str(&target),
    ];
    let out = ryu_ok(&restore);
    eprintln!("restore: {}", out.trim());
    let (code, out) = ryu(&restore);
    assert_eq!(
        code,
        1,
        "a restore into the non-empty {} must exit 1:\n{out}",
        target.display()
    );
    restored.start();
    restored.wait_leader(T);
    let raddr = restored.specs[0].client;
    let got = contents(raddr);
    assert_ne!(at_off4, model, "the writes after off4 changed nothing");
    let diff: Vec<(&String, Option<&String>, Option<&String>)> = got
        .keys()
        .chain(at_off4.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|k| got.get(*k) != at_off4.get(*k))
        .map(|k| (k, got.get(k), at_off4.get(k)))
        .collect();
    assert!(
        diff.is_empty(),
        "the restore of off4 does not hold exactly the data of off4: (key, restored, \
         at off4) {diff:?}"
    );
    // ...and it is a working node.
    set(raddr, "after-restore", "yes");
    assert_eq!(get(raddr, "after-restore").as_deref(), Some("yes"));
    eprintln!(
        "offline_backup_list_verify_prune_and_restore: {:?}",
        started.elapsed()
    );
}

// ---- 3. online backups through a follower ---------------------------------------

fn json(reply: &str) -> serde_json::Value {
    serde_json::from_str(reply).unwrap_or_else(|e| panic!("not JSON ({e}): {reply}"))
}

fn backup_status(con: &mut redis::Connection) -> serde_json::Value {
    let reply: String = redis::cmd("BACKUP")
        .arg("STATUS")
        .query(con)
        .expect("BACKUP STATUS");
    json(&reply)
}

#[test]
fn backups_forwarded_from_a_follower_and_backup_status() {
    let started = Instant::now();
    let mut c = Cluster::new("online-backups", 3);
    c.start();
    let (leader, _) = c.wait_leader(T);
    let fi = (leader + 1) % 3;
    let (leader_id, follower_id) = (c.specs[leader].id, c.specs[fi].id);
    let follower = c.specs[fi].client;
    let store = c.specs[0].backup_dir.clone();
    set(follower, "k", "v");
    let mut con = connect(follower, Duration::from_secs(60)).expect("connect to a follower");
    assert_eq!(info_field(&mut con, "ryu_role"), "follower");

    // LEADER, sent to a follower: carried out by the leader.
    let reply: String = redis::cmd("BACKUP")
        .arg("LEADER")
        .arg("b1")
        .query(&mut con)
        .expect("BACKUP LEADER b1 via a follower");
    let b1 = json(&reply);
    assert_eq!(b1["id"], "b1", "{reply}");
    assert_eq!(b1["status"], "complete", "{reply}");
    assert_eq!(b1["strategy"], "leader", "{reply}");
    assert_eq!(
        b1["node"], leader_id,
        "BACKUP LEADER must name the leader: {reply}"
    );
    assert!(store.join(format!("node-{leader_id}")).join("b1").is_dir());
    assert_eq!(backup_status(&mut con)["last"]["id"], "b1");

    // FOLLOWER: carried out by the follower the client is connected to.
    let reply: String = redis::cmd("BACKUP")
        .arg("FOLLOWER")
        .arg("f1")
        .query(&mut con)
        .expect("BACKUP FOLLOWER f1");
    let f1 = json(&reply);
    assert_eq!(f1["id"], "f1", "{reply}");
    assert_eq!(f1["status"], "complete", "{reply}");
    assert_eq!(
        f1["node"], follower_id,
        "BACKUP FOLLOWER must name the follower: {reply}"
    );
    assert!(
        store
            .join(format!("node-{follower_id}"))
            .join("f1")
            .is_dir()
    );
    let status = backup_status(&mut con);
    assert_eq!(status["last"]["id"], "f1", "{status}");
    assert_eq!(status["last"]["node"], follower_id, "{status}");
    assert_eq!(status["last"]["status"], "complete", "{status}");
    // The job is gone from the running ones. (Not necessarily at once: the backup
    // thread hands the finished job to the node thread, which replies, before it
    // updates the gauges BACKUP STATUS reads; src/server/core.rs, backup_worker.)
    if status["running_jobs"] != 0 {
        eprintln!(
            "BACKUP STATUS right after BACKUP FOLLOWER's reply still counts the job: {status}"
        );
    }
    wait_until(
        "BACKUP STATUS shows no running job",
        Duration::from_secs(5),
        || {
            let s = backup_status(&mut con);
            s["running_jobs"] == 0 && s["last"]["id"] == "f1"
        },
    );
    // The status is per node: the leader's last backup is none of these.
    let mut lcon = connect(c.specs[leader].client, Duration::from_secs(5)).expect("connect");
    assert!(backup_status(&mut lcon)["last"].is_null());

    // A cluster backup may not take a node directory's name.
    let r = redis::cmd("BACKUP")
        .arg("CLUSTER")
        .arg("node-1")
        .query::<String>(&mut con);
    let e = r.expect_err("BACKUP CLUSTER node-1 must fail");
    assert!(e.to_string().contains("reserved"), "{e}");
    assert!(!store.join("node-1").join("cluster.json").exists());

    // A cluster backup through the CLI, at a follower.
    let out = ryu_ok(&[
        "backup",
        "create",
        "--id",
        "c1",
        "--strategy",
        "cluster",
        "--addr",
        &follower.to_string(),
    ]);
    let start = out
        .find('{')
        .unwrap_or_else(|| panic!("no JSON in:\n{out}"));
    let c1 = json(out[start..].trim());
    assert_eq!(c1["backup_id"], "c1", "{out}");
    assert_eq!(c1["status"], "complete", "{out}");
    let listed = list(&store);
    assert_eq!(
        listed.get("c1").map(|(k, s)| (k.as_str(), s.as_str())),
        Some(("cluster", "complete")),
        "{listed:?}"
    );
    assert_eq!(
        listed.get("b1").map(|(k, s)| (k.as_str(), s.as_str())),
        Some((format!("node-{leader_id}").as_str(), "complete")),
        "{listed:?}"
    );
    assert_eq!(
        listed.get("f1").map(|(k, s)| (k.as_str(), s.as_str())),
        Some((format!("node-{follower_id}").as_str(), "complete")),
        "{listed:?}"
    );
    let out = ryu_ok(&["backup", "verify", "c1", "--dir", path_str(&store)]);
    assert_eq!(out.matches(": ok").count(), 3, "{out}");
    eprintln!(
        "backups_forwarded_from_a_follower_and_backup_status: {:?}",
        started.elapsed()
    );
}

// ---- 4. read-only MULTI blocks --------------------------------------------------

/// `MULTI; GET a; GET b; EXEC`, by hand (so an error reply of `EXEC` is reported as
/// it is): the two values, or `EXEC`'s error.
fn read_a_and_b(con: &mut redis::Connection) -> Result<(String, String), String> {
    use redis::Value;
    let mut call = |args: &[&str]| -> redis::RedisResult<Value> {
        let mut c = redis::cmd(args[0]);
        for a in &args[1..] {
            c.arg(*a);
        }
        c.query(con)
    };
    assert_eq!(call(&["MULTI"]).expect("MULTI"), Value::Okay);
    for k in ["a", "b"] {
        assert_eq!(
            call(&["GET", k]).expect("GET"),
            Value::SimpleString("QUEUED".into())
        );
    }
    let str_of = |v: &Value| match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        other => panic!("EXEC replied {other:?} for a GET"),
    };
    match call(&["EXEC"]) {
        Ok(Value::Array(replies)) if replies.len() == 2 => {
            Ok((str_of(&replies[0]), str_of(&replies[1])))
        }
        Ok(other) => panic!("EXEC replied {other:?}"),
        Err(e) => Err(e.to_string()),
    }
}

/// What [`snapshot_reads`] saw.
#[derive(Debug)]
struct SnapshotStats {
    /// Blocks that answered.
    blocks: u64,
    /// Blocks that gave up (`UNAVAILABLE ... kept conflicting`).
    conflicts: u64,
    /// How often a block saw another state than the one before it.
    distinct: u64,
    /// MSETs acknowledged.
    writes: u64,
}

/// For `run`: one connection to `writer_addr` runs `MSET a X b X` with X = 1, 2, ...
/// (pausing `pause` after each); one to `reader_addr` runs `MULTI; GET a; GET b;
/// EXEC` back to back, and every answer must hold a == b (one snapshot) and never an
/// older X than the block before it (each block is linearizable).
fn snapshot_reads(
    writer_addr: SocketAddr,
    reader_addr: SocketAddr,
    pause: Duration,
    run: Duration,
) -> SnapshotStats {
    set(writer_addr, "a", "0");
    set(writer_addr, "b", "0");
    let stop = StopOnDrop(StopFlag::default());
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, written) = (stop.0.clone(), written.clone());
        std::thread::spawn(move || -> Result<(), String> {
            let mut con =
                connect(writer_addr, Duration::from_secs(10)).map_err(|e| e.to_string())?;
            let mut x = 1u64;
            while !stop.is_set() {
                let v = x.to_string();
                let r = redis::cmd("MSET")
                    .arg("a")
                    .arg(&v)
                    .arg("b")
                    .arg(&v)
                    .query::<()>(&mut con);
                if let Err(e) = r {
                    return Err(format!("MSET a {x} b {x}: {e}"));
                }
                written.store(x, Ordering::SeqCst);
                x += 1;
                if !pause.is_zero() {
                    std::thread::sleep(pause);
                }
            }
            Ok(())
        })
    };

    let mut con = connect(reader_addr, Duration::from_secs(10)).expect("connect");
    let (mut blocks, mut conflicts, mut distinct, mut last) = (0u64, 0u64, 0u64, 0u64);
    let until = Instant::now() + run;
    while Instant::now() < until {
        let (a, b) = match read_a_and_b(&mut con) {
            Ok(ab) => ab,
            Err(e) if e.contains("kept conflicting") => {
                conflicts += 1;
                continue;
            }
            Err(e) => panic!("MULTI; GET a; GET b; EXEC: {e}"),
        };
        assert_eq!(
            a, b,
            "one MULTI block read a and b from two different states (block {blocks})"
        );
        let x: u64 = a.parse().expect("a number");
        assert!(
            x >= last,
            "a later block read an older state: {x} after {last}"
        );
        if x != last {
            distinct += 1;
        }
        last = x;
        blocks += 1;
    }
    stop.0.set();
    writer
        .join()
        .expect("the writer panicked")
        .expect("the writer's MSETs");
    let stats = SnapshotStats {
        blocks,
        conflicts,
        distinct,
        writes: written.load(Ordering::SeqCst),
    };
    eprintln!("writer pausing {pause:?} after each MSET: {stats:?}");
    stats
}

#[test]
fn read_only_multi_blocks_are_one_snapshot() {
    let started = Instant::now();
    let mut c = Cluster::new("snapshot-reads", 3);
    c.start();
    let (leader, _) = c.wait_leader(T);
    // Writes on the leader; the blocks on a follower (one multi-key ReadIndex read
    // there each).
    let (writer_addr, reader_addr) = (c.specs[leader].client, c.specs[(leader + 1) % 3].client);
    // The writer pauses 5 ms after each MSET, so the reader sees many distinct
    // states; back to back is `read_only_multi_blocks_never_give_up_under_a_busy_writer`.
    let stats = snapshot_reads(
        writer_addr,
        reader_addr,
        Duration::from_millis(5),
        Duration::from_secs(2),
    );
    assert!(stats.writes >= 20, "only {} MSETs in 2 s", stats.writes);
    assert!(
        stats.blocks >= 20,
        "only {} read-only blocks in 2 s ({} gave up on conflicts)",
        stats.blocks,
        stats.conflicts
    );
    assert!(
        stats.distinct >= 10,
        "the blocks saw only {} states: the writer and reader hardly overlapped",
        stats.distinct
    );
    let mut con = connect(reader_addr, Duration::from_secs(10)).expect("connect");

    // WATCH + a read-only block: an array when the watched key is unchanged (or
    // rewritten with the same value, as README says), nil when another connection
    // changed it in between.
    let mut other = connect(writer_addr, Duration::from_secs(10)).expect("connect");
    set(writer_addr, "k", "v1");
    for (case, other_writes, changed) in [
        ("unchanged", None, false),
        ("rewritten with the same value", Some("v1"), false),
        ("changed", Some("v2"), true),
    ] {
        redis::cmd("WATCH")
            .arg("k")
            .query::<()>(&mut con)
            .expect("WATCH");
        if let Some(v) = other_writes {
            redis::cmd("SET")
                .arg("k")
                .arg(v)
                .query::<()>(&mut other)
                .expect("SET from another connection");
        }
        redis::cmd("MULTI").query::<()>(&mut con).expect("MULTI");
        let q: String = redis::cmd("GET").arg("k").query(&mut con).expect("GET");
        assert_eq!(q, "QUEUED");
        let reply: redis::Value = redis::cmd("EXEC")
            .query(&mut con)
            .unwrap_or_else(|e| panic!("EXEC (k {case}): {e}"));
        let want = if changed {
            redis::Value::Nil
        } else {
            redis::Value::Array(vec![redis::Value::BulkString(b"v1".to_vec())])
        };
        assert_eq!(reply, want, "WATCH k; MULTI; GET k; EXEC with k {case}");
    }
    eprintln!(
        "read_only_multi_blocks_are_one_snapshot: {:?}",
        started.elapsed()
    );
}

/// Regression test (read-only blocks once validated their reads through the log and
/// were overtaken by the next MSET on every one of their 32 attempts, so EXEC
/// answered `UNAVAILABLE ... kept conflicting`): a block reading keys that another
/// client rewrites back to back is answered from one snapshot and never gives up.
#[test]
fn read_only_multi_blocks_never_give_up_under_a_busy_writer() {
    let mut c = Cluster::new("snapshot-starve", 3);
    c.start();
    let (leader, _) = c.wait_leader(T);
    let (writer_addr, reader_addr) = (c.specs[leader].client, c.specs[(leader + 1) % 3].client);
    let stats = snapshot_reads(
        writer_addr,
        reader_addr,
        Duration::ZERO,
        Duration::from_secs(2),
    );
    assert_eq!(
        stats.conflicts, 0,
        "read-only blocks gave up against a back-to-back writer: {stats:?}"
    );
}

/// A read replica's reads: after `READONLY`, a follower that has lost its leader
/// and its quorum still answers plain reads from what it applied, while a
/// linearizable read (after `READWRITE`) and a write are refused as `UNAVAILABLE`.
#[test]
fn readonly_connections_read_a_replica_without_its_leader() {
    let mut c = Cluster::new("readonly", 3);
    c.start();
    let (leader, _) = c.wait_leader(T);
    let f = (leader + 1) % 3;
    let follower = c.specs[f].client;
    set(c.specs[leader].client, "replicated", "yes");
    // A linearizable read on the follower returns only once it has applied the write.
    assert_eq!(get(follower, "replicated").as_deref(), Some("yes"));
    for i in 0..3 {
        if i != f {
            c.procs[i].kill();
        }
    }
    let mut con = connect(follower, Duration::from_secs(5)).expect("connect");
    let ok: String = redis::cmd("READONLY").query(&mut con).expect("READONLY");
    assert_eq!(ok, "OK");
    let started = Instant::now();
    let v: Option<String> = redis::cmd("GET")
        .arg("replicated")
        .query(&mut con)
        .expect("a stale read on a replica without a leader");
    assert_eq!(v.as_deref(), Some("yes"));
    let n: i64 = redis::cmd("DBSIZE").query(&mut con).expect("DBSIZE");
    assert_eq!(n, 1);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let e = redis::cmd("SET")
        .arg("replicated")
        .arg("no")
        .query::<String>(&mut con)
        .expect_err("a write without a quorum");
    assert_eq!(e.code(), Some("UNAVAILABLE"), "{e}");
    let _: String = redis::cmd("READWRITE").query(&mut con).expect("READWRITE");
    let e = redis::cmd("GET")
        .arg("replicated")
        .query::<Option<String>>(&mut con)
        .expect_err("a linearizable read without a quorum");
    assert_eq!(e.code(), Some("UNAVAILABLE"), "{e}");
}
