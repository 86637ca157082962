//! The operator's commands besides `serve`: talking to a running node over RESP, and
//! working offline on data directories and backup stores.
//!
//! Exit codes (scripts may rely on them): 0 success; 1 the operation ran and failed
//! (a backup failed, verify found problems, a restore was refused; nothing changed);
//! 2 bad usage; 3 the node could not be reached; 4 the outcome is unknown (the node
//! answered `UNKNOWN`: a membership change or backup may or may not have happened).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use ryu_backup::{
    BackupId, BackupJob, BackupOptions, BackupStatus, Retention, Step, VerifyOptions,
};
use ryu_io::{DynDisk, SystemClock};
use ryu_node::{ClusterManifest, ClusterStatus};

use crate::resp::{self, Limits, Value};
use crate::server::disk_for;

/// A failed command: its message and exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    pub fn failed(message: impl Into<String>) -> Failure {
        Failure {
            code: 1,
            message: message.into(),
        }
    }
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: 2,
            message: message.into(),
        }
    }
    pub fn unreachable(message: impl Into<String>) -> Failure {
        Failure {
            code: 3,
            message: message.into(),
        }
    }
}

pub type CliResult = Result<(), Failure>;

/// A store's contents: `(node, node-<n> directory)` and `(name, cluster manifest)`.
type StoreEntries = (Vec<(u64, PathBuf)>, Vec<(String, ClusterManifest)>);
/// A backup's parts: its cluster manifest (for a cluster backup) and `(part
/// directory, node)` pairs.
type Located = (Option<ClusterManifest>, Vec<(PathBuf, u64)>);

// ---- online: a minimal synchronous RESP client ---------------------------------------

/// One connection to a node's client port.
#[allow(clippy::disallowed_types)] // the shell owns real sockets
pub struct Client {
    stream: std::net::TcpStream,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    /// Connect, and `AUTH` when a password is given.
    #[allow(clippy::disallowed_methods, clippy::disallowed_types)] // the shell owns real sockets
    pub fn connect(addr: &str, password: Option<&str>) -> Result<Client, Failure> {
        let stream = std::net::TcpStream::connect(addr)
            .map_err(|e| Failure::unreachable(format!("cannot reach a ryu node at {addr}: {e}")))?;
        let _ = stream.set_nodelay(true);
        let mut c = Client {
            stream,
            buf: Vec::new(),
        };
        if let Some(p) = password
            && let Value::Error(e) = c.call(&["AUTH", p])?
        {
            return Err(Failure::failed(e));
        }
        Ok(c)
    }

    /// Send one command, read its reply.
    pub fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Value, Failure> {
        let mut out = Vec::new();
        resp::encode_command(args, &mut out);
        let lost = |e: std::io::Error| Failure::unreachable(format!("connection lost: {e}"));
        self.stream.write_all(&out).map_err(lost)?;
        let limits = Limits {
            max_bulk_bytes: 256 << 20,
            ..Limits::default()
        };
        let mut chunk = [0u8; 64 << 10];
        loop {
            match resp::parse_value(&self.buf, &limits) {
                Ok(Some((v, used))) => {
                    self.buf.drain(..used);
                    return Ok(v);
                }
                Ok(None) => {}
                Err(e) => return Err(Failure::unreachable(format!("bad reply: {e}"))),
            }
            let n = self.stream.read(&mut chunk).map_err(lost)?;
            if n == 0 {
                return Err(Failure::unreachable("the node closed the connection"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::Simple(s) | Value::Error(s) => s.clone(),
        Value::Integer(i) => i.to_string(),
        Value::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
        Value::Nil | Value::NilArray => "(nil)".into(),
        Value::Array(a) => a.iter().map(text).collect::<Vec<_>>().join("\n"),
    }
}

/// A reply's text, or the failure it reports: `UNKNOWN` (the command may have
/// taken effect) exits 4, every other error 1.
fn expect_ok(v: Value) -> Result<String, Failure> {
    match v {
        Value::Error(e) if e.starts_with("UNKNOWN") => Err(Failure {
            code: 4,
            message: e,
        }),
        Value::Error(e) => Err(Failure::failed(e)),
        v => Ok(text(&v)),
    }
}

/// `ryu status`: the node's role, term, indexes and membership.
pub fn status(addr: &str, password: Option<&str>) -> CliResult {
    let mut c = Client::connect(addr, password)?;
    let info = expect_ok(c.call(&["INFO"])?)?;
    for line in info
        .lines()
        .filter(|l| l.starts_with("ryu_") || l.starts_with("role"))
    {
        println!("{line}");
    }
    Ok(())
}

/// `ryu cluster status|add|add-learner|remove`.
pub fn cluster(addr: &str, password: Option<&str>, args: &[&str]) -> CliResult {
    let mut c = Client::connect(addr, password)?;
    let out = expect_ok(c.call(args)?)?;
    println!("{}", out.trim_end());
    Ok(())
}

/// `ryu backup create` against a running node.
pub fn backup_online(
    addr: &str,
    password: Option<&str>,
    id: &str,
    strategy: &str,
    quorum: bool,
) -> CliResult {
    let mut args = vec!["BACKUP", strategy, id];
    if quorum {
        args.push("QUORUM");
    }
    let mut c = Client::connect(addr, password)?;
    let spinner = ProgressBar::new_spinner().with_message(format!("{strategy} backup {id}"));
    spinner.enable_steady_tick(Duration::from_millis(120));
    let reply = c.call(&args);
    spinner.finish_and_clear();
    let out = expect_ok(reply?)?;
    println!("{out}");
    Ok(())
}

// ---- offline ---------------------------------------------------------------------

fn fail<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> Failure + '_ {
    move |e| Failure::failed(format!("{what}: {e}"))
}

fn bar(total: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} ({eta})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// The node's engine directory (`ENGINE` names it after a snapshot install).
#[allow(clippy::disallowed_methods)] // the shell owns real files
fn engine_dir(data_dir: &Path) -> PathBuf {
    match std::fs::read_to_string(data_dir.join(ryu_node::snapshots::ENGINE_FILE)) {
        Ok(name) => data_dir.join(name.trim()),
        Err(_) => data_dir.join(ryu_node::DB_DIR),
    }
}

/// `ryu backup create --data-dir D`: back up a stopped node's engine into
/// `<store>/node-<n>/<id>` (the layout of online leader and follower backups).
pub fn backup_offline(data_dir: &Path, store: &Path, node: u64, id: Option<&str>) -> CliResult {
    // Refuse anything that is not a node's directory before touching it (opening
    // an engine in a mistyped path would create an empty one and back that up).
    if !data_dir.join(ryu_node::CLUSTER_FILE).is_file() {
        return Err(Failure::failed(format!(
            "{} is not a ryu data directory (no {} file)",
            data_dir.display(),
            ryu_node::CLUSTER_FILE
        )));
    }
    let _lock = crate::server::lock_data_dir(data_dir).map_err(Failure::failed)?;
    let clock = Arc::new(SystemClock::new());
    let id = match id {
        Some(i) => BackupId::new(i).map_err(fail("backup id"))?,
        None => {
            let mut r = [0u8; 8];
            getrandom::fill(&mut r).map_err(fail("OS random source"))?;
            use ryu_io::Clock as _;
            BackupId::generate(clock.wall_unix_ns(), u64::from_le_bytes(r))
        }
    };
    let (disk, dir) = disk_for(&engine_dir(data_dir));
    // A node's engine WAL is written without a sync per apply (its Raft log holds
    // every entry): open it the way the node does, or a torn unsynced tail after a
    // power loss would read as damage. The backup then holds the engine's state as
    // of its last durable applied entry (a clean stop syncs everything).
    let options = ryu_engine::Options {
        sync_commits: false,
        ..ryu_engine::Options::default()
    };
    let db = ryu_engine::Db::open(disk, &dir, options).map_err(fail(
        "cannot open the engine (is this a stopped ryu data directory?)",
    ))?;
    let (store_disk, store_dir) = disk_for(store);
    let dest = store_dir.join(format!("node-{node}"));
    let mut job = BackupJob::start(
        &db,
        store_disk,
        &dest,
        clock,
        BackupOptions {
            id,
            ..BackupOptions::default()
        },
    )
    .map_err(fail("backup"))?;
    let pb = bar(job.progress().bytes_total, "backup");
    loop {
        match job.step(4 << 20).map_err(fail("backup"))? {
            Step::Progress(p) | Step::Throttled(p) => {
                pb.set_length(p.bytes_total);
                pb.set_position(p.bytes_done);
            }
            Step::Done(summary) => {
                pb.finish_and_clear();
                println!(
                    "backup {} complete in {}/node-{node}/{} (snapshot ts {})",
                    summary.id,
                    store.display(),
                    summary.id,
                    job_ts(&summary)
                );
                return Ok(());
            }
        }
    }
}

fn job_ts(s: &ryu_backup::BackupSummary) -> u64 {
    s.manifest.snapshot_ts
}

/// The store's layout: `node-<n>/` directories of single-node backups, and
/// `<id>/cluster.json` cluster backups.
#[allow(clippy::disallowed_methods)] // the shell owns real files
fn store_entries(store: &Path) -> Result<StoreEntries, Failure> {
    let mut nodes = Vec::new();
    let mut clusters = Vec::new();
    let rd = match std::fs::read_dir(store) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((nodes, clusters)),
        Err(e) => {
            return Err(Failure::failed(format!(
                "cannot read {}: {e}",
                store.display()
            )));
        }
    };
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        if let Some(n) = name.strip_prefix("node-").and_then(|n| n.parse().ok()) {
            nodes.push((n, store.join(&name)));
        } else if let Ok(bytes) =
            std::fs::read(store.join(&name).join(ryu_node::backups::CLUSTER_MANIFEST))
        {
            match serde_json::from_slice::<ClusterManifest>(&bytes) {
                Ok(m) => clusters.push((name, m)),
                Err(e) => println!("{name}\tcorrupt cluster manifest: {e}"),
            }
        }
    }
    clusters.sort_by_key(|(_, m)| m.barrier_index);
    Ok((nodes, clusters))
}

/// `ryu backup list`.
pub fn backup_list(store: &Path) -> CliResult {
    let (nodes, clusters) = store_entries(store)?;
    println!("ID\tKIND\tSTATUS\tINDEX\tDETAIL");
    for (name, m) in &clusters {
        let status = match m.status {
            ClusterStatus::Complete => "complete",
            ClusterStatus::Failed => "failed",
        };
        let parts: Vec<String> = m
            .nodes
            .iter()
            .map(|p| format!("{}:{}", p.node, p.status))
            .collect();
        println!(
            "{name}\tcluster\t{status}\t{}\tterm {} nodes {}",
            m.barrier_index,
            m.barrier_term,
            parts.join(",")
        );
    }
    for (n, dir) in &nodes {
        let (disk, d) = disk_for(dir);
        for e in ryu_backup::list(&disk, &d).map_err(fail("list"))? {
            let (status, detail) = match &e.status {
                BackupStatus::Complete => ("complete", String::new()),
                BackupStatus::Incomplete => ("incomplete", "prune removes it".to_string()),
                BackupStatus::Corrupt { detail } => ("corrupt", detail.clone()),
                BackupStatus::Unsupported { detail } => ("unsupported", detail.clone()),
            };
            let index = e
                .manifest
                .as_ref()
                .and_then(|m| m.cluster.as_ref().map(|c| c.raft_index.to_string()))
                .unwrap_or_else(|| "-".into());
            println!("{}\tnode-{n}\t{status}\t{index}\t{detail}", e.id);
        }
    }
    Ok(())
}

/// Where backup `id`'s parts are: `(part directory, node)` pairs.
fn locate(store: &Path, id: &str) -> Result<Located, Failure> {
    let (nodes, clusters) = store_entries(store)?;
    if let Some((_, m)) = clusters.iter().find(|(name, _)| name == id) {
        let parts = m
            .nodes
            .iter()
            .filter(|p| p.status == "ok")
            .map(|p| (store.join(id).join(format!("node-{}", p.node)), p.node))
            .collect();
        return Ok((Some(m.clone()), parts));
    }
    let parts: Vec<(PathBuf, u64)> = nodes
        .into_iter()
        .filter(|(_, dir)| dir.join(id).is_dir())
        .map(|(n, dir)| (dir, n))
        .collect();
    if parts.is_empty() {
        return Err(Failure::failed(format!(
            "no backup {id:?} in {}",
            store.display()
        )));
    }
    Ok((None, parts))
}

/// `ryu backup verify`: every part of the backup, as pg_verifybackup does.
pub fn backup_verify(store: &Path, id: &str, deep: bool) -> CliResult {
    let (cluster, parts) = locate(store, id)?;
    let mut bad = 0;
    if let Some(m) = &cluster
        && m.status != ClusterStatus::Complete
    {
        println!(
            "cluster backup {id}: FAILED ({})",
            m.reason.clone().unwrap_or_default()
        );
        bad += 1;
    }
    for (dir, node) in parts {
        let (disk, d): (DynDisk, PathBuf) = disk_for(&dir);
        let report =
            ryu_backup::verify(&disk, &d, id, &VerifyOptions { deep }).map_err(fail("verify"))?;
        if report.is_ok() {
            println!("node {node}: ok");
        } else {
            bad += 1;
            println!("node {node}: {} problem(s)", report.problems.len());
            for p in &report.problems {
                println!("  {p:?}");
            }
        }
    }
    if bad > 0 {
        return Err(Failure::failed(format!("backup {id} does not verify")));
    }
    Ok(())
}

/// `ryu backup restore`: bootstrap a new node directory from a backup, as the seed
/// of a new cluster (etcd's `snapshot restore`). Every node of the new cluster is
/// restored from the same backup part with the same new cluster id.
pub fn backup_restore(
    store: &Path,
    id: &str,
    from_node: Option<u64>,
    data_dir: &Path,
    cluster_id: Option<u64>,
) -> CliResult {
    let (cluster, parts) = locate(store, id)?;
    let (part, node) = match from_node {
        Some(n) => parts.into_iter().find(|(_, p)| *p == n).ok_or_else(|| {
            Failure::failed(format!("backup {id} has no complete part of node {n}"))
        })?,
        None => parts
            .into_iter()
            .next()
            .ok_or_else(|| Failure::failed(format!("backup {id} has no complete part")))?,
    };
    if let Some(m) = &cluster
        && m.status != ClusterStatus::Complete
    {
        return Err(Failure::failed(format!(
            "cluster backup {id} did not complete; refusing to restore it"
        )));
    }
    // Every node restored from this backup must get the same new id: derive it from
    // the backup unless the operator chose one.
    // The source's cluster id and index go in too, so a cluster restored from a
    // backup of a restored cluster never gets its parent's id.
    let source = match &cluster {
        Some(m) => format!("{}:{}", m.cluster_id, m.barrier_index),
        None => part.display().to_string(),
    };
    let new_id = cluster_id.unwrap_or_else(|| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in format!("restored:{id}:{source}").bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h.max(1)
    });
    let (store_disk, part_dir) = disk_for(&part);
    let (disk, dir) = disk_for(data_dir);
    let pb = ProgressBar::new_spinner().with_message(format!("restoring {id} from node {node}"));
    pb.enable_steady_tick(Duration::from_millis(120));
    let applied = ryu_node::restore_cluster_node(&store_disk, &part_dir, id, &disk, &dir, new_id);
    pb.finish_and_clear();
    let applied = applied.map_err(fail("restore"))?;
    println!(
        "restored {} from backup {id} (node {node}) at index {} term {}; new cluster id {new_id:016x}",
        data_dir.display(),
        applied.index,
        applied.term
    );
    Ok(())
}

/// `ryu backup prune --keep-last N`: per node store, and cluster backups by barrier
/// index. Incomplete leftovers are removed too.
pub fn backup_prune(store: &Path, keep_last: usize) -> CliResult {
    let (nodes, clusters) = store_entries(store)?;
    for (n, dir) in &nodes {
        let (disk, d) = disk_for(dir);
        let report = ryu_backup::prune(
            &disk,
            &d,
            &Retention {
                keep_last: Some(keep_last),
                keep_newer_than_unix_ns: None,
            },
        )
        .map_err(fail("prune"))?;
        for id in &report.deleted {
            println!("deleted node-{n}/{id}");
        }
        for name in &report.unsupported {
            println!("left node-{n}/{name}: made by a build with another format version");
        }
    }
    // Only complete cluster backups count towards the ones kept (a failed newest
    // one must not push out the last good one); failed ones older than the oldest
    // kept go too.
    let complete: Vec<&(String, ClusterManifest)> = clusters
        .iter()
        .filter(|(_, m)| m.status == ClusterStatus::Complete)
        .collect();
    let kept: Vec<&str> = complete
        .iter()
        .rev()
        .take(keep_last)
        .map(|(n, _)| n.as_str())
        .collect();
    let oldest_kept = complete
        .iter()
        .rev()
        .take(keep_last)
        .map(|(_, m)| m.barrier_index)
        .min()
        .unwrap_or(u64::MAX);
    let doomed = clusters.iter().filter(|(name, m)| {
        !kept.contains(&name.as_str())
            && (m.status == ClusterStatus::Complete || m.barrier_index < oldest_kept)
    });
    for (name, _) in doomed {
        let (disk, d) = disk_for(&store.join(name));
        ryu_backup::remove_tree(&disk, &d).map_err(fail("prune"))?;
        println!("deleted cluster backup {name}");
    }
    Ok(())
}
