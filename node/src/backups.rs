//! Raft-aware backups: the three strategies of the seed study, on top of the backup
//! crate's online, step-driven [`BackupJob`].
//!
//! - **Leader**: the leader backs up its own applied state. Whatever happens to its
//!   leadership later, the backup is of a committed prefix of the log.
//! - **Follower**: a chosen follower backs up, keeping the load off the leader. If its
//!   role or term changes before the copy is final, the job is aborted (the partial
//!   copy never looks complete) and the answer says what happened.
//! - **Cluster**: the leader appends a `BackupBarrier` entry. Every node, when it
//!   applies the barrier, backs up exactly the state at the barrier's index (the
//!   engine is flushed up to it, the job pinned there), computes a digest of that
//!   state, and reports to whoever leads. The leader writes the cluster manifest once
//!   every voter (or, if asked, a majority) reported equal digests, or a failed one
//!   once success is impossible or the wait times out. A leader that takes over learns
//!   the barrier from the log (it is a durable engine record on every node) and the
//!   reports from the nodes, which resend them until a leader acknowledges a finished
//!   cluster backup. An existing cluster manifest is never overwritten.
//!
//! # Backup store layout
//!
//! ```text
//! <store>/node-<n>/<id>/            a leader or follower backup of node n
//! <store>/<id>/node-<n>/<id>/       node n's part of cluster backup <id>
//! <store>/<id>/node-<n>/report.json node n's report (digest), written when its part is final
//! <store>/<id>/cluster.json         the cluster manifest (ClusterManifest, JSON)
//! ```
//!
//! # State digest
//!
//! FNV-1a (64-bit) over every key and value of the engine snapshot in key order, each
//! as a little-endian u32 length and then its bytes; node-owned keys (applied index,
//! membership, barriers) included. Equal digests at one index mean equal replicas.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ryu_backup::{BackupId, BackupJob, BackupOptions, ClusterInfo, Step};
use ryu_engine::ReadTxn;
use ryu_io::{Clock, DynDisk};
use ryu_raft::{Index, Role, Term};
use serde::{Deserialize, Serialize};

use crate::api::{BackupResult, BackupStrategy, Envelope, Payload, Response};
use crate::command::BARRIER_PREFIX;
use crate::node::{Node, write_file_atomic};

/// Where a node's backups go, and the clock their jobs use (rate limits, manifest
/// creation time).
#[derive(Clone, Debug)]
pub struct BackupTarget {
    pub disk: DynDisk,
    pub dir: PathBuf,
    pub clock: Arc<dyn Clock>,
}

/// What one node reports about its part of a cluster backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub backup_id: String,
    pub node: u64,
    pub index: Index,
    pub term: Term,
    /// `Ok(digest)` of the state at `index`, or why the part failed.
    pub result: Result<u64, String>,
}

/// The outcome of a cluster backup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterStatus {
    Complete,
    Failed,
}

/// One node's line in the cluster manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePart {
    pub node: u64,
    /// "ok", "failed" or "missing" (no report arrived).
    pub status: String,
    /// The state digest, 16 hex digits, for "ok".
    pub digest: Option<String>,
    /// The node's backup, relative to the cluster backup's directory, for "ok".
    pub backup_dir: Option<String>,
    pub error: Option<String>,
}

/// `<store>/<id>/cluster.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterManifest {
    pub format: String,
    pub version: u32,
    pub backup_id: String,
    pub cluster_id: String,
    pub barrier_index: Index,
    pub barrier_term: Term,
    pub quorum_only: bool,
    pub status: ClusterStatus,
    pub reason: Option<String>,
    pub coordinator: u64,
    pub coordinator_term: Term,
    pub nodes: Vec<NodePart>,
}

pub const CLUSTER_MANIFEST: &str = "cluster.json";
const REPORT_FILE: &str = "report.json";
const MANIFEST_FORMAT: &str = "ryu-cluster-backup";

/// A barrier as every node records it (durably, in the engine, under
/// [`BARRIER_PREFIX`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BarrierRecord {
    pub id: String,
    pub index: Index,
    pub term: Term,
    pub quorum_only: bool,
    pub voters: Vec<u64>,
}

impl BarrierRecord {
    pub(crate) fn key(id: &str) -> Vec<u8> {
        let mut k = BARRIER_PREFIX.to_vec();
        k.extend_from_slice(id.as_bytes());
        k
    }

    /// `u64 index | u64 term | u8 quorum_only | u32 count | count x u64 voter`, LE.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.index.to_le_bytes());
        out.extend_from_slice(&self.term.to_le_bytes());
        out.push(u8::from(self.quorum_only));
        out.extend_from_slice(&(self.voters.len() as u32).to_le_bytes());
        for v in &self.voters {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    pub(crate) fn decode(id: &str, b: &[u8]) -> Option<BarrierRecord> {
        let u64_at = |at: usize| Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?));
        let count = u32::from_le_bytes(b.get(17..21)?.try_into().ok()?) as usize;
        if b.len() != 21 + 8 * count {
            return None;
        }
        Some(BarrierRecord {
            id: id.to_string(),
            index: u64_at(0)?,
            term: u64_at(8)?,
            quorum_only: *b.get(16)? == 1,
            voters: (0..count)
                .map(|i| u64_at(21 + 8 * i))
                .collect::<Option<_>>()?,
        })
    }
}

/// A barrier this node knows about and has not seen finished.
#[derive(Debug)]
pub(crate) struct Barrier {
    pub record: BarrierRecord,
    /// This node's own report, once its part is final (or failed).
    pub mine: Option<Report>,
    /// Reports received while leading.
    pub reports: BTreeMap<u64, Report>,
    /// The tick this node started coordinating (as leader), for the timeout.
    pub coordinating_since: Option<u64>,
    /// A leader acknowledged a finished cluster backup: stop resending.
    pub acked: bool,
    pub finished: bool,
}

/// Why a job runs.
#[derive(Debug)]
pub(crate) enum Purpose {
    Single {
        request: u64,
        strategy: BackupStrategy,
        /// Role and term when it started: a follower backup aborts if they change.
        role: Role,
        term: Term,
    },
    Barrier {
        id: String,
    },
    /// A Raft snapshot of this node's own state (see [`crate::snapshots`]).
    Snapshot,
}

/// A running local backup job, plus the digest scan of the same snapshot.
pub(crate) struct Running {
    pub purpose: Purpose,
    pub id: String,
    pub index: Index,
    pub term: Term,
    /// The applied state the job copies (membership included, for snapshots).
    pub state: crate::command::AppliedState,
    pub job: BackupJob,
    pub dir: PathBuf,
    txn: ReadTxn,
    scan_after: Option<Vec<u8>>,
    scan_done: bool,
    digest: u64,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("id", &self.id)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Fold one key or value into a state digest (see the module doc).
pub fn digest_bytes(mut h: u64, b: &[u8]) -> u64 {
    for &x in (b.len() as u32).to_le_bytes().iter().chain(b) {
        h ^= u64::from(x);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// The digest of everything `txn` sees, in one go (tests and checkers).
pub fn state_digest(txn: &ReadTxn) -> ryu_engine::Result<u64> {
    let mut h = FNV_OFFSET;
    for item in txn.range(..) {
        let (k, v) = item?;
        h = digest_bytes(h, &k);
        h = digest_bytes(h, &v);
    }
    Ok(h)
}

/// Keys scanned per step of a digest scan.
const SCAN_KEYS_PER_STEP: usize = 256;

/// A job's identity, without the job itself.
pub(crate) struct JobInfo {
    purpose: Purpose,
    id: String,
    index: Index,
    term: Term,
    dir: PathBuf,
    state: crate::command::AppliedState,
}

impl Running {
    fn split(self) -> (BackupJob, JobInfo) {
        let info = JobInfo {
            purpose: self.purpose,
            id: self.id,
            index: self.index,
            term: self.term,
            dir: self.dir,
            state: self.state,
        };
        (self.job, info)
    }

    /// A job copying the state `state` (the applied state when it started), reading
    /// its digest through `txn` if `digest`.
    pub(crate) fn new(
        purpose: Purpose,
        id: String,
        state: &crate::command::AppliedState,
        job: BackupJob,
        dir: PathBuf,
        txn: ReadTxn,
        digest: bool,
    ) -> Running {
        // The job and the digest read one snapshot: the state at the applied index.
        assert_eq!(
            job.snapshot_ts(),
            state.index,
            "backup snapshot is not the applied index"
        );
        assert_eq!(txn.start_ts(), state.index);
        Running {
            purpose,
            id,
            index: state.index,
            term: state.term,
            state: state.clone(),
            job,
            dir,
            txn,
            scan_after: None,
            scan_done: !digest,
            digest: FNV_OFFSET,
        }
    }

    /// Advance the digest scan by one batch. True once complete.
    fn scan_step(&mut self) -> ryu_engine::Result<bool> {
        if self.scan_done {
            return Ok(true);
        }
        let lower = match &self.scan_after {
            None => Bound::Unbounded,
            Some(k) => Bound::Excluded(k.clone()),
        };
        let mut n = 0;
        let mut last = None;
        for item in self.txn.range((lower, Bound::Unbounded)) {
            let (k, v) = item?;
            self.digest = digest_bytes(self.digest, &k);
            self.digest = digest_bytes(self.digest, &v);
            last = Some(k);
            n += 1;
            if n == SCAN_KEYS_PER_STEP {
                break;
            }
        }
        if n < SCAN_KEYS_PER_STEP {
            self.scan_done = true;
        }
        if last.is_some() {
            self.scan_after = last;
        }
        Ok(self.scan_done)
    }

    /// Copy up to `budget_bytes` and advance the digest scan; the outcome (the
    /// digest, or why the job failed) once the job has finished.
    fn advance(&mut self, budget_bytes: u64) -> Option<Result<u64, String>> {
        match self.scan_step() {
            Err(e) => Some(Err(format!("digest scan: {e}"))),
            Ok(_) => match self.job.step(budget_bytes) {
                Err(e) => Some(Err(e.to_string())),
                Ok(Step::Done(_)) => {
                    // The copy is final; finish the digest in one go.
                    let r = loop {
                        match self.scan_step() {
                            Ok(true) => break Ok(self.digest),
                            Ok(false) => {}
                            Err(e) => break Err(format!("digest scan: {e}")),
                        }
                    };
                    Some(r)
                }
                Ok(_) => None,
            },
        }
    }
}

/// A follower backup is valid only while its node stays a follower of the same term
/// (a follower cannot change role within a term without campaigning): why it must
/// abort, if it must.
fn follower_abort(purpose: &Purpose, node: u64, role_now: Role, term_now: Term) -> Option<String> {
    match *purpose {
        Purpose::Single {
            strategy: BackupStrategy::Follower,
            role,
            term,
            ..
        } if role_now != role || term_now != term => Some(format!(
            "aborted: node {node} changed from {role:?} of term {term} to {role_now:?} of term {term_now} during the backup"
        )),
        _ => None,
    }
}

/// A backup job handed to a driver thread (production): the copying and the digest
/// scan run off the node thread, which only starts and finishes jobs. Obtained from
/// [`Node::take_backup_work`], stepped with [`BackupWork::step`] until it yields an
/// outcome, and returned with [`Node::finish_backup_work`]. The simulator keeps
/// jobs on the node and calls [`Node::step_backups`] instead; both run the same
/// steps.
pub struct BackupWork {
    seq: u64,
    run: Running,
}

impl std::fmt::Debug for BackupWork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupWork")
            .field("seq", &self.seq)
            .field("id", &self.run.id)
            .field("index", &self.run.index)
            .finish_non_exhaustive()
    }
}

impl BackupWork {
    /// Copy up to `budget_bytes`; `Some(outcome)` once the job has finished (the
    /// state digest, or why it failed).
    pub fn step(&mut self, budget_bytes: u64) -> Option<Result<u64, String>> {
        self.run.advance(budget_bytes)
    }

    /// The backup's id.
    pub fn id(&self) -> &str {
        &self.run.id
    }

    /// How long to wait before the next step: [`ryu_backup::BackupJob::next_step_in_ns`].
    pub fn next_step_in_ns(&self) -> u64 {
        self.run.job.next_step_in_ns()
    }

    /// Give up on a job whose node is gone (a driver reopening a node after a
    /// fault): its temporary files are removed, nothing is reported.
    pub fn abort(self) {
        let _ = self.run.job.abort();
    }

    /// Bytes copied so far and the total to copy.
    pub fn progress(&self) -> (u64, u64) {
        let p = self.run.job.progress();
        (p.bytes_done, p.bytes_total)
    }
}

/// What the node remembers of a job a driver thread holds: enough to answer for it
/// if the job must be abandoned before it comes back.
#[derive(Debug)]
pub(crate) struct OutJob {
    request: Option<u64>,
    barrier: Option<String>,
    snapshot: bool,
    index: Index,
    term: Term,
}

impl OutJob {
    pub(crate) fn is_snapshot(&self) -> bool {
        self.snapshot
    }
}

fn hex(d: u64) -> String {
    format!("{d:016x}")
}

fn store_error(e: impl std::fmt::Display) -> String {
    format!("backup store: {e}")
}

impl Node {
    /// Start a backup for a client request.
    pub(crate) fn request_backup(&mut self, request: u64, id: String, strategy: BackupStrategy) {
        if self.options.backup.is_none() {
            self.reply(
                request,
                Response::Invalid {
                    reason: "this node has no backup store configured".into(),
                },
            );
            return;
        }
        if let Err(e) = BackupId::new(&id) {
            self.reply(
                request,
                Response::Invalid {
                    reason: e.to_string(),
                },
            );
            return;
        }
        if id
            .strip_prefix("node-")
            .is_some_and(|n| n.parse::<u64>().is_ok())
        {
            // `<store>/node-<n>` holds node n's single backups: a cluster backup
            // of that name would land inside it.
            self.reply(
                request,
                Response::Invalid {
                    reason: format!("backup id {id:?} is reserved for a node's directory"),
                },
            );
            return;
        }
        let soft = self.raw.soft_state();
        let term = self.raw.hard_state().term;
        match strategy {
            BackupStrategy::Leader | BackupStrategy::Cluster { .. }
                if soft.role != Role::Leader =>
            {
                let leader = soft.leader.map(|l| l.0).filter(|&l| l != self.id);
                self.reply(request, Response::NotLeader { leader });
            }
            BackupStrategy::Follower if soft.role != Role::Follower => {
                self.reply(
                    request,
                    Response::Invalid {
                        reason: format!("node {} is not a follower ({:?})", self.id, soft.role),
                    },
                );
            }
            BackupStrategy::Leader | BackupStrategy::Follower => {
                let target = self.options.backup.clone().expect("checked");
                let dest = target.dir.join(format!("node-{}", self.id));
                let purpose = Purpose::Single {
                    request,
                    strategy,
                    role: soft.role,
                    term,
                };
                if let Err(reason) = self.start_job(purpose, id, dest) {
                    self.reply(request, Response::BackupFailed { reason });
                }
            }
            BackupStrategy::Cluster { quorum_only } => {
                if self.barriers.contains_key(&id) || self.cluster_waiters.contains_key(&id) {
                    self.reply(
                        request,
                        Response::Invalid {
                            reason: format!("cluster backup {id:?} already exists"),
                        },
                    );
                    return;
                }
                let cmd = crate::Command::BackupBarrier {
                    origin: self.id,
                    backup_id: id.clone(),
                    quorum_only,
                };
                match self.raw.propose(cmd.encode()) {
                    Ok(_) => {
                        self.cluster_waiters.insert(id, request);
                    }
                    Err(e) => self.reply(
                        request,
                        Response::Unavailable {
                            reason: e.to_string(),
                        },
                    ),
                }
            }
        }
    }

    /// Pin the engine's state as of now (the applied index) and start copying it.
    fn start_job(&mut self, purpose: Purpose, id: String, dest: PathBuf) -> Result<(), String> {
        let target = self.options.backup.clone().expect("a backup store");
        ryu_io::create_dir_all_synced(&*target.disk, &dest).map_err(store_error)?;
        let (index, term) = (self.applied.index, self.applied.term);
        let options = BackupOptions {
            id: BackupId::new(&id).map_err(|e| e.to_string())?,
            cluster: Some(ClusterInfo {
                cluster_id: hex(self.cluster_id),
                raft_index: index,
                raft_term: term,
            }),
            max_bytes_per_sec: self.options.backup_max_bytes_per_sec,
            write_behind_bytes: self.options.backup_write_behind_bytes,
            ..Default::default()
        };
        let txn = self.db.begin_read();
        let job = BackupJob::start(&self.db, target.disk.clone(), &dest, target.clock, options)
            .map_err(|e| e.to_string())?;
        let state = self.applied.clone();
        self.jobs
            .push(Running::new(purpose, id, &state, job, dest, txn, true));
        Ok(())
    }

    /// Whether any backup job is waiting to be stepped (the driver calls
    /// [`Node::step_backups`], or takes them with [`Node::take_backup_work`]).
    pub fn has_backup_work(&self) -> bool {
        !self.jobs.is_empty()
    }

    /// Advance every running backup job by up to `budget_bytes` of copying. An error
    /// means the node must be reopened (a snapshot could not be made durable).
    pub fn step_backups(&mut self, budget_bytes: u64) -> Result<(), crate::NodeError> {
        let soft = self.raw.soft_state();
        let term = self.raw.hard_state().term;
        let mut i = 0;
        while i < self.jobs.len() {
            let run = &mut self.jobs[i];
            // A follower backup is valid only while the node stays a follower of the
            // same term: abort cleanly, and say why.
            if let Some(reason) = follower_abort(&run.purpose, self.id, soft.role, term) {
                let run = self.jobs.remove(i);
                let (job, info) = run.split();
                let _ = job.abort();
                self.finish_job(info, Err(reason))?;
                continue;
            }
            match run.advance(budget_bytes) {
                None => i += 1,
                Some(result) => {
                    let (_, info) = self.jobs.remove(i).split();
                    self.finish_job(info, result)?;
                }
            }
        }
        Ok(())
    }

    /// Hand every running job to the caller, to be stepped off the node thread (see
    /// [`BackupWork`]). The node answers for them if it must abandon them meanwhile.
    pub fn take_backup_work(&mut self) -> Vec<BackupWork> {
        let mut out = Vec::new();
        for run in std::mem::take(&mut self.jobs) {
            self.next_job_seq += 1;
            let seq = self.next_job_seq;
            let (request, barrier, snapshot) = match &run.purpose {
                Purpose::Single { request, .. } => (Some(*request), None, false),
                Purpose::Barrier { id } => (None, Some(id.clone()), false),
                Purpose::Snapshot => (None, None, true),
            };
            self.jobs_out.insert(
                seq,
                OutJob {
                    request,
                    barrier,
                    snapshot,
                    index: run.index,
                    term: run.term,
                },
            );
            out.push(BackupWork { seq, run });
        }
        out
    }

    /// A job taken with [`Node::take_backup_work`] finished with `outcome`: report
    /// it as [`Node::step_backups`] would have. A follower backup whose node changed
    /// role or term meanwhile is failed instead. An error means the node must be
    /// reopened (a snapshot could not be made durable).
    pub fn finish_backup_work(
        &mut self,
        work: BackupWork,
        outcome: Result<u64, String>,
    ) -> Result<(), crate::NodeError> {
        let BackupWork { seq, run } = work;
        if self.jobs_out.remove(&seq).is_none() {
            // Abandoned while it ran (the engine was replaced): already answered as
            // failed, so nothing may remain that looks like a complete backup.
            self.discard_job(run, outcome.is_ok());
            return Ok(());
        }
        let soft = self.raw.soft_state();
        let term = self.raw.hard_state().term;
        let outcome = match follower_abort(&run.purpose, self.id, soft.role, term) {
            Some(reason) => Err(reason),
            None => outcome,
        };
        let (_, info) = run.split();
        self.finish_job(info, outcome)
    }

    /// Throw away a job that will not be reported: abort it, and if it already
    /// finished, delete the backup it made.
    fn discard_job(&self, run: Running, finished: bool) {
        let disk = match (&run.purpose, &self.options.backup) {
            (Purpose::Snapshot, _) => self.disk.clone(),
            (_, Some(t)) => t.disk.clone(),
            (_, None) => return,
        };
        let dir = run.dir.join(&run.id);
        let _ = run.job.abort();
        if finished {
            let _ = ryu_backup::remove_tree(&disk, &dir);
        }
    }

    /// End every running job (the engine under them is being replaced).
    pub(crate) fn abort_jobs(&mut self, why: &str) {
        // Jobs a driver thread holds are abandoned: answered now, their results
        // dropped when they come back.
        for (_, out) in std::mem::take(&mut self.jobs_out) {
            let reason = format!("aborted: {why}");
            if let Some(request) = out.request {
                self.reply(request, Response::BackupFailed { reason });
            } else if let Some(id) = out.barrier {
                self.set_own_report(Report {
                    backup_id: id,
                    node: self.id,
                    index: out.index,
                    term: out.term,
                    result: Err(reason),
                });
            }
        }
        for run in std::mem::take(&mut self.jobs) {
            let _ = run.job.abort();
            let reason = format!("aborted: {why}");
            match run.purpose {
                Purpose::Snapshot => {}
                Purpose::Single { request, .. } => {
                    self.reply(request, Response::BackupFailed { reason })
                }
                Purpose::Barrier { id } => self.set_own_report(Report {
                    backup_id: id,
                    node: self.id,
                    index: run.index,
                    term: run.term,
                    result: Err(reason),
                }),
            }
        }
    }

    fn finish_job(
        &mut self,
        info: JobInfo,
        result: Result<u64, String>,
    ) -> Result<(), crate::NodeError> {
        let JobInfo {
            purpose,
            id,
            index,
            term,
            dir,
            state,
        } = info;
        match purpose {
            Purpose::Snapshot => match result {
                Ok(_) => self.finish_snapshot(state)?,
                Err(e) => self.last_snapshot_error = Some(e),
            },
            Purpose::Single {
                request, strategy, ..
            } => {
                let r = match result {
                    Ok(digest) => Response::BackupDone(BackupResult {
                        id: id.clone(),
                        strategy,
                        node: self.id,
                        index,
                        term,
                        digest,
                        dir: dir.join(&id).to_string_lossy().into_owned(),
                    }),
                    Err(reason) => Response::BackupFailed { reason },
                };
                self.reply(request, r);
            }
            Purpose::Barrier { id } => {
                let report = Report {
                    backup_id: id.clone(),
                    node: self.id,
                    index,
                    term,
                    result,
                };
                if let Some(target) = self.options.backup.clone() {
                    let json = serde_json::to_vec_pretty(&report).expect("serializable");
                    if let Err(e) = write_file_atomic(&target.disk, &dir, REPORT_FILE, &json) {
                        // Without its report file the part cannot be trusted after a
                        // restart; report the failure now.
                        let failed = Report {
                            result: Err(store_error(e)),
                            ..report
                        };
                        self.set_own_report(failed);
                        return Ok(());
                    }
                }
                self.set_own_report(report);
            }
        }
        Ok(())
    }

    fn set_own_report(&mut self, report: Report) {
        let id = report.backup_id.clone();
        if let Some(b) = self.barriers.get_mut(&id) {
            b.mine = Some(report.clone());
        }
        self.receive_report(report);
        self.send_reports();
    }

    /// A barrier entry was applied at `index` (the engine is flushed up to it).
    pub(crate) fn on_barrier_applied(&mut self, record: BarrierRecord) {
        let id = record.id.clone();
        let dest = self
            .options
            .backup
            .as_ref()
            .map(|t| t.dir.join(&id).join(format!("node-{}", self.id)));
        self.barriers.insert(
            id.clone(),
            Barrier {
                record: record.clone(),
                mine: None,
                reports: BTreeMap::new(),
                coordinating_since: None,
                acked: false,
                finished: false,
            },
        );
        let started = match dest {
            None => Err("this node has no backup store configured".to_string()),
            Some(dest) => self.start_job(Purpose::Barrier { id: id.clone() }, id.clone(), dest),
        };
        if started.is_ok() && self.planted_backup_at_applied_index() {
            // The planted bug believes it backed up the barrier: its report says so.
            let run = self.jobs.last_mut().expect("just started");
            run.index = record.index;
            run.term = record.term;
        }
        if let Err(reason) = started {
            self.set_own_report(Report {
                backup_id: id,
                node: self.id,
                index: record.index,
                term: record.term,
                result: Err(reason),
            });
        }
    }

    /// At open, and after installing a snapshot: the barriers this node's state holds
    /// and it does not track yet, with its own part of each as far as it got (a part
    /// it never started, because a restart or a snapshot skipped the moment, failed).
    pub(crate) fn load_barriers(&mut self) -> Result<(), crate::NodeError> {
        let txn = self.db.begin_read();
        let mut end = BARRIER_PREFIX.to_vec();
        end.push(0xff);
        let mut records = Vec::new();
        for item in txn.range(BARRIER_PREFIX.to_vec()..end) {
            let (k, v) = item?;
            let id = String::from_utf8_lossy(&k[BARRIER_PREFIX.len()..]).into_owned();
            let record = BarrierRecord::decode(&id, &v).ok_or_else(|| {
                crate::NodeError::Corrupted(format!("barrier record {id:?} does not decode"))
            })?;
            records.push(record);
        }
        drop(txn);
        for record in records {
            let Some(target) = self.options.backup.clone() else {
                continue;
            };
            if self.barriers.contains_key(&record.id) {
                continue;
            }
            let dir = target.dir.join(&record.id);
            if target
                .disk
                .exists(&dir.join(CLUSTER_MANIFEST))
                .unwrap_or(false)
            {
                continue; // finished
            }
            let part = dir.join(format!("node-{}", self.id));
            let mine = match read_json::<Report>(&target.disk, &part.join(REPORT_FILE)) {
                Some(r) => r,
                None => {
                    // The job died with the process: its partial copy is abandoned
                    // (a `.tmp-` leftover), and the state at the barrier is gone.
                    let _ = ryu_backup::break_lock(&target.disk, &part);
                    Report {
                        backup_id: record.id.clone(),
                        node: self.id,
                        index: record.index,
                        term: record.term,
                        result: Err("the node restarted, or installed a snapshot, before its part was final".into()),
                    }
                }
            };
            self.barriers.insert(
                record.id.clone(),
                Barrier {
                    record,
                    mine: Some(mine),
                    reports: BTreeMap::new(),
                    coordinating_since: None,
                    acked: false,
                    finished: false,
                },
            );
        }
        Ok(())
    }

    /// Send this node's finished reports to the leader (every few ticks, until a
    /// leader acknowledges a finished cluster backup).
    pub(crate) fn send_reports(&mut self) {
        let soft = self.raw.soft_state();
        let Some(leader) = soft.leader.map(|l| l.0) else {
            return;
        };
        if leader == self.id {
            return;
        }
        let reports: Vec<Report> = self
            .barriers
            .values()
            .filter(|b| !b.acked)
            .filter_map(|b| b.mine.clone())
            .collect();
        for r in reports {
            self.out.messages.push(Envelope {
                cluster: self.cluster_id,
                from: self.id,
                to: leader,
                payload: Payload::BackupReport(r),
            });
        }
    }

    /// A report arrived (or this node's own finished).
    pub(crate) fn receive_report(&mut self, report: Report) {
        let id = report.backup_id.clone();
        let from = report.node;
        // A barrier this node does not know yet is not finished: no acknowledgement.
        let finished = self.barriers.get(&id).is_some_and(|b| b.finished);
        if let Some(b) = self.barriers.get_mut(&id)
            && b.record.index == report.index
            && b.record.term == report.term
        {
            b.reports.insert(report.node, report);
        }
        if finished && from != self.id && self.raw.soft_state().role == Role::Leader {
            self.out.messages.push(Envelope {
                cluster: self.cluster_id,
                from: self.id,
                to: from,
                payload: Payload::BackupAck { backup_id: id },
            });
        }
        self.coordinate();
    }

    pub(crate) fn receive_ack(&mut self, backup_id: &str) {
        if let Some(b) = self.barriers.get_mut(backup_id) {
            b.acked = true;
        }
    }

    /// As leader: finish every cluster backup whose outcome is decided.
    pub(crate) fn coordinate(&mut self) {
        if self.raw.soft_state().role != Role::Leader {
            for b in self.barriers.values_mut() {
                b.coordinating_since = None;
            }
            return;
        }
        let now = self.ticks;
        let timeout = self.options.backup_timeout_ticks;
        let ids: Vec<String> = self
            .barriers
            .iter()
            .filter(|(_, b)| !b.finished)
            .map(|(id, _)| id.clone())
            .collect();
        let early = self.planted_early_success();
        for id in ids {
            let b = self.barriers.get_mut(&id).expect("present");
            let since = *b.coordinating_since.get_or_insert(now);
            if let Some(mine) = b.mine.clone() {
                b.reports.insert(self.id, mine);
            }
            let decision = decide(b, now - since >= timeout, early);
            if let Some((status, reason)) = decision {
                self.write_cluster_manifest(&id, status, reason);
            }
        }
    }

    #[cfg(feature = "planted-bugs")]
    fn planted_early_success(&self) -> bool {
        self.options.planted_bug
            == Some(crate::node::PlantedBug::ClusterBackupSuccessBeforeAllDigests)
    }

    #[cfg(not(feature = "planted-bugs"))]
    fn planted_early_success(&self) -> bool {
        false
    }

    #[cfg(feature = "planted-bugs")]
    fn planted_backup_at_applied_index(&self) -> bool {
        self.options.planted_bug == Some(crate::node::PlantedBug::BackupAtAppliedIndex)
    }

    #[cfg(not(feature = "planted-bugs"))]
    fn planted_backup_at_applied_index(&self) -> bool {
        false
    }

    fn write_cluster_manifest(&mut self, id: &str, status: ClusterStatus, reason: Option<String>) {
        let Some(target) = self.options.backup.clone() else {
            return;
        };
        let b = self.barriers.get_mut(id).expect("present");
        let dir = target.dir.join(id);
        let path = dir.join(CLUSTER_MANIFEST);
        // Another leader may have finished it first: its verdict stands.
        let existing = read_json::<ClusterManifest>(&target.disk, &path);
        let manifest = match existing {
            Some(m) => m,
            None => {
                let nodes = b
                    .record
                    .voters
                    .iter()
                    .map(|&n| match b.reports.get(&n) {
                        None => NodePart {
                            node: n,
                            status: "missing".into(),
                            digest: None,
                            backup_dir: None,
                            error: None,
                        },
                        Some(Report { result: Ok(d), .. }) => NodePart {
                            node: n,
                            status: "ok".into(),
                            digest: Some(hex(*d)),
                            backup_dir: Some(format!("node-{n}/{id}")),
                            error: None,
                        },
                        Some(Report { result: Err(e), .. }) => NodePart {
                            node: n,
                            status: "failed".into(),
                            digest: None,
                            backup_dir: None,
                            error: Some(e.clone()),
                        },
                    })
                    .collect();
                let m = ClusterManifest {
                    format: MANIFEST_FORMAT.into(),
                    version: 1,
                    backup_id: id.to_string(),
                    cluster_id: hex(self.cluster_id),
                    barrier_index: b.record.index,
                    barrier_term: b.record.term,
                    quorum_only: b.record.quorum_only,
                    status,
                    reason,
                    coordinator: self.id,
                    coordinator_term: self.raw.hard_state().term,
                    nodes,
                };
                let json = serde_json::to_vec_pretty(&m).expect("serializable");
                let written = match write_file_atomic(&target.disk, &dir, CLUSTER_MANIFEST, &json) {
                    // No node started its part (each restarted or installed a snapshot
                    // past the barrier first), so nothing made the backup's directory:
                    // make it, durably, for the failed verdict.
                    Err(e) if e.is_not_found() => {
                        ryu_io::create_dir_all_synced(&*target.disk, &dir).and_then(|_| {
                            write_file_atomic(&target.disk, &dir, CLUSTER_MANIFEST, &json)
                        })
                    }
                    other => other,
                };
                if written.is_err() {
                    return; // retried on the next tick
                }
                m
            }
        };
        b.finished = true;
        b.acked = true;
        if let Some(request) = self.cluster_waiters.remove(id) {
            self.reply(request, Response::ClusterBackupDone(Box::new(manifest)));
        }
    }

    /// Leadership moved: a cluster backup requested here is finished by the new
    /// leader, and the client learns so (it may read the cluster manifest later).
    pub(crate) fn release_cluster_waiters(&mut self) {
        for (id, request) in std::mem::take(&mut self.cluster_waiters) {
            // Not `Unavailable`: the barrier may have committed.
            self.reply(request, Response::OutcomeUnknown {
                reason: format!(
                    "leadership changed; cluster backup {id} is finished by the new leader if its barrier committed (see {id}/{CLUSTER_MANIFEST})"
                ),
            });
        }
    }
}

/// The coordinator's rule. `None`: keep waiting.
fn decide(
    b: &Barrier,
    timed_out: bool,
    early_success: bool,
) -> Option<(ClusterStatus, Option<String>)> {
    let voters = &b.record.voters;
    let ok: BTreeMap<u64, u64> = voters
        .iter()
        .filter_map(|n| match b.reports.get(n) {
            Some(Report { result: Ok(d), .. }) => Some((*n, *d)),
            _ => None,
        })
        .collect();
    let failed: Vec<u64> = voters
        .iter()
        .copied()
        .filter(|n| matches!(b.reports.get(n), Some(Report { result: Err(_), .. })))
        .collect();
    let mut digests: Vec<u64> = ok.values().copied().collect();
    digests.sort_unstable();
    digests.dedup();
    if digests.len() > 1 {
        return Some((
            ClusterStatus::Failed,
            Some(format!(
                "replicas disagree at index {}: digests {ok:x?}",
                b.record.index
            )),
        ));
    }
    let majority = voters.len() / 2 + 1;
    let needed = if b.record.quorum_only {
        majority
    } else {
        voters.len()
    };
    if ok.len() >= needed || (early_success && !ok.is_empty()) {
        return Some((ClusterStatus::Complete, None));
    }
    if voters.len() - failed.len() < needed {
        return Some((
            ClusterStatus::Failed,
            Some(format!(
                "nodes {failed:?} failed; {needed} of {} needed",
                voters.len()
            )),
        ));
    }
    if timed_out {
        let missing: Vec<u64> = voters
            .iter()
            .copied()
            .filter(|n| !b.reports.contains_key(n))
            .collect();
        return Some((
            ClusterStatus::Failed,
            Some(format!("timed out waiting for nodes {missing:?}")),
        ));
    }
    None
}

fn read_json<T: for<'de> Deserialize<'de>>(disk: &DynDisk, path: &Path) -> Option<T> {
    let f = disk.open(path).ok()?;
    let mut b = vec![0u8; f.len().ok()? as usize];
    f.read_at(0, &mut b).ok()?;
    serde_json::from_slice(&b).ok()
}
