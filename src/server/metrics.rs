//! What `/metrics` and `/health` report, updated by the node thread and the network
//! tasks, rendered in the Prometheus text exposition format (version 0.0.4).

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use ryu_node::{Node, Status};
use ryu_raft::Role;

/// Shared counters and the node's latest status.
#[derive(Debug)]
pub struct Metrics {
    status: Mutex<Option<Status>>,
    /// Client-observed commit latency of writes applied on this node, microseconds.
    commit_latency_us: Mutex<Histogram<u64>>,
    /// How long each busy turn of the node thread took (inputs, Ready cycle with its
    /// syncs, applying), microseconds: the node thread's own latency.
    turn_us: Mutex<Histogram<u64>>,
    healthy: AtomicBool,
    backup_running: AtomicU64,
    backup_bytes_done: AtomicU64,
    backup_bytes_total: AtomicU64,
    snapshots_made: AtomicU64,
    snapshots_installed: AtomicU64,
    foreign_dropped: AtomicU64,
    pub node_faults: AtomicU64,
    pub peer_frames_in: AtomicU64,
    pub peer_frames_out: AtomicU64,
    pub peer_frames_dropped: AtomicU64,
    pub peer_connections_rejected: AtomicU64,
    pub client_connections: AtomicU64,
    pub client_commands: AtomicU64,
    pub client_protocol_errors: AtomicU64,
    pub forwarded: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            status: Mutex::new(None),
            commit_latency_us: Mutex::new(
                Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
            ),
            turn_us: Mutex::new(
                Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
            ),
            healthy: AtomicBool::new(true),
            backup_running: AtomicU64::new(0),
            backup_bytes_done: AtomicU64::new(0),
            backup_bytes_total: AtomicU64::new(0),
            snapshots_made: AtomicU64::new(0),
            snapshots_installed: AtomicU64::new(0),
            foreign_dropped: AtomicU64::new(0),
            node_faults: AtomicU64::new(0),
            peer_frames_in: AtomicU64::new(0),
            peer_frames_out: AtomicU64::new(0),
            peer_frames_dropped: AtomicU64::new(0),
            peer_connections_rejected: AtomicU64::new(0),
            client_connections: AtomicU64::new(0),
            client_commands: AtomicU64::new(0),
            client_protocol_errors: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
        }
    }
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    /// Called by the node thread after every turn.
    pub fn observe(&self, node: &Node) {
        *self.status.lock().expect("metrics lock") = Some(node.status());
        let (made, installed) = node.snapshot_counts();
        self.snapshots_made.store(made, Ordering::Relaxed);
        self.snapshots_installed.store(installed, Ordering::Relaxed);
        self.foreign_dropped
            .store(node.foreign_messages_dropped(), Ordering::Relaxed);
    }

    /// Called by the backup thread: jobs running, bytes copied and to copy.
    pub fn backup_progress(&self, jobs: u64, done: u64, total: u64) {
        self.backup_running.store(jobs, Ordering::Relaxed);
        self.backup_bytes_done.store(done, Ordering::Relaxed);
        self.backup_bytes_total.store(total, Ordering::Relaxed);
    }

    /// (jobs running, bytes copied, bytes to copy) of the backup thread.
    pub fn backup_snapshot(&self) -> (u64, u64, u64) {
        (
            self.backup_running.load(Ordering::Relaxed),
            self.backup_bytes_done.load(Ordering::Relaxed),
            self.backup_bytes_total.load(Ordering::Relaxed),
        )
    }

    pub fn status(&self) -> Option<Status> {
        self.status.lock().expect("metrics lock").clone()
    }

    pub fn commit_latency(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
        let _ = self
            .commit_latency_us
            .lock()
            .expect("metrics lock")
            .record(us.min(60_000_000));
    }

    /// One busy turn of the node thread took `d`.
    pub fn node_turn(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
        let _ = self
            .turn_us
            .lock()
            .expect("metrics lock")
            .record(us.min(60_000_000));
    }

    pub fn node_fault(&self) {
        inc(&self.node_faults);
    }

    pub fn set_healthy(&self, ok: bool) {
        self.healthy.store(ok, Ordering::Relaxed);
    }

    pub fn incr(&self, c: &AtomicU64) {
        inc(c);
    }

    /// Healthy: the node is open and knows a leader (or is one).
    pub fn health(&self) -> (bool, String) {
        if !self.healthy.load(Ordering::Relaxed) {
            return (false, "node is recovering from a fault".into());
        }
        match self.status() {
            Some(s) if s.leader.is_some() => {
                (true, format!("ok: leader {}", s.leader.unwrap_or(0)))
            }
            Some(_) => (false, "no leader known".into()),
            None => (false, "starting".into()),
        }
    }

    /// The Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut gauge = |name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        };
        if let Some(s) = self.status() {
            gauge("ryu_node_id", "This node's Raft id.", s.id);
            gauge(
                "ryu_is_leader",
                "1 if this node is the Raft leader.",
                u64::from(s.role == Role::Leader),
            );
            gauge(
                "ryu_role",
                "Raft role: 0 follower, 1 pre-candidate, 2 candidate, 3 leader.",
                match s.role {
                    Role::Follower => 0,
                    Role::PreCandidate => 1,
                    Role::Candidate => 2,
                    Role::Leader => 3,
                },
            );
            gauge(
                "ryu_leader_id",
                "The leader this node knows (0: none).",
                s.leader.unwrap_or(0),
            );
            gauge("ryu_term", "Current Raft term.", s.term);
            gauge(
                "ryu_commit_index",
                "Highest log index known committed.",
                s.commit,
            );
            gauge(
                "ryu_applied_index",
                "Highest log index applied to the engine.",
                s.applied,
            );
            gauge(
                "ryu_voters",
                "Voters in the current configuration.",
                s.voters.len() as u64,
            );
            gauge(
                "ryu_learners",
                "Learners in the current configuration.",
                s.learners.len() as u64,
            );
        }
        gauge(
            "ryu_healthy",
            "1 unless the node is recovering from a fault.",
            u64::from(self.healthy.load(Ordering::Relaxed)),
        );
        gauge(
            "ryu_backup_jobs_running",
            "Backup jobs (backups and Raft snapshots) copying on this node.",
            self.backup_running.load(Ordering::Relaxed),
        );
        gauge(
            "ryu_backup_bytes_done",
            "Bytes the running backup jobs have copied.",
            self.backup_bytes_done.load(Ordering::Relaxed),
        );
        gauge(
            "ryu_backup_bytes_total",
            "Bytes the running backup jobs copy in all.",
            self.backup_bytes_total.load(Ordering::Relaxed),
        );
        let mut counter = |name: &str, help: &str, c: &AtomicU64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                c.load(Ordering::Relaxed)
            );
        };
        counter(
            "ryu_snapshots_made_total",
            "Raft snapshots (backups) made by this node.",
            &self.snapshots_made,
        );
        counter(
            "ryu_snapshots_installed_total",
            "Raft snapshots installed from a leader.",
            &self.snapshots_installed,
        );
        counter(
            "ryu_foreign_messages_dropped_total",
            "Peer messages from another cluster, dropped.",
            &self.foreign_dropped,
        );
        counter(
            "ryu_disk_faults_total",
            "Node faults (failed sync, I/O error, corruption) that made the node reopen.",
            &self.node_faults,
        );
        counter(
            "ryu_peer_frames_received_total",
            "Peer frames received.",
            &self.peer_frames_in,
        );
        counter(
            "ryu_peer_frames_sent_total",
            "Peer frames sent.",
            &self.peer_frames_out,
        );
        counter(
            "ryu_peer_frames_dropped_total",
            "Peer messages dropped (queue full or no route).",
            &self.peer_frames_dropped,
        );
        counter(
            "ryu_peer_connections_rejected_total",
            "Peer connections closed for a bad handshake or frame.",
            &self.peer_connections_rejected,
        );
        counter(
            "ryu_client_connections_total",
            "Client connections accepted.",
            &self.client_connections,
        );
        counter(
            "ryu_client_commands_total",
            "Client commands executed.",
            &self.client_commands,
        );
        counter(
            "ryu_client_protocol_errors_total",
            "Client connections closed for a protocol error.",
            &self.client_protocol_errors,
        );
        counter(
            "ryu_forwarded_requests_total",
            "Client writes forwarded to the leader.",
            &self.forwarded,
        );
        summary(
            &mut out,
            "ryu_node_turn_seconds",
            "Duration of the node thread's busy turns (inputs, Raft persistence and syncs, applying).",
            &self.turn_us.lock().expect("metrics lock"),
        );
        summary(
            &mut out,
            "ryu_commit_latency_seconds",
            "Client-observed write commit latency on this node.",
            &self.commit_latency_us.lock().expect("metrics lock"),
        );
        out
    }
}

/// A Prometheus summary of a microsecond histogram, in seconds.
fn summary(out: &mut String, name: &str, help: &str, h: &Histogram<u64>) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} summary");
    for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
        let _ = writeln!(
            out,
            "{name}{{quantile=\"{q}\"}} {:.6}",
            h.value_at_quantile(q) as f64 / 1e6
        );
    }
    let sum: f64 = h
        .iter_recorded()
        .map(|v| v.value_iterated_to() as f64 * v.count_at_value() as f64)
        .sum::<f64>()
        / 1e6;
    let _ = writeln!(out, "{name}_sum {sum:.6}\n{name}_count {}", h.len());
}
