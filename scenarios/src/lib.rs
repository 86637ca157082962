//! `ryu-scenarios`: the seed as user interface.
//!
//! Every scenario is a function from a `u64` seed (plus optional planted bugs) to a
//! [`RunReport`]: a fingerprint of the run's trace, a summary, and either success or a
//! [`Failure`] with the tail of the trace. The seed decides everything (the shape of
//! the cluster, the workload, the fault schedule, every latency), so a failure replays
//! exactly from the command [`replay_command`] prints.
//!
//! The catalogue ([`SCENARIOS`]) grows with the project; today it holds:
//! - `register`: a quorum-replicated atomic register on `SimDisk` and `SimNetwork`,
//!   checked for linearizability and liveness (see [`register`]);
//! - `raft`: 3 to 7 Raft nodes on the durable `DiskLog`, with crashes, partitions,
//!   membership changes, snapshots and reads, checked for every Raft safety property
//!   after every event, then for liveness (see [`raft`]).
//! - `raft-targeted`: the same nodes and checkers under a schedule aimed at the
//!   classic Raft bugs (Figure 8, power loss after votes and acknowledgements,
//!   learners, membership changes right after elections; see [`raft::Profile`]);
//! - the cluster catalogue (`cluster`, `steady-load`, ... `disk-corruption-on-a-minority`:
//!   replicated Ryu nodes, see [`cluster`]);
//! - `engine-crash` and its variants: the storage engine alone, power cut anywhere,
//!   checked against its history of acknowledged commits (see [`engine_crash`]).
//!
//! Over runs: [`shrink`] cuts a failing seed's fault schedule down to the faults that
//! still make it fail (scenarios number their faults, see [`faults`], and
//! [`RunOptions::skip_faults`] switches some off), and [`timeline`] draws a run as an
//! HTML page (`ryu-scenarios timeline`).
//!
//! ```
//! use ryu_scenarios::{RunOptions, run};
//!
//! let report = run("register", &RunOptions::new(7)).unwrap();
//! assert!(report.result.is_ok(), "{}", report.render());
//! // Same seed, same run, byte for byte.
//! assert_eq!(report.fingerprint, run("register", &RunOptions::new(7)).unwrap().fingerprint);
//! ```

pub mod cluster;
pub mod engine_crash;
pub mod faults;
pub mod history;
pub mod kv_model;
pub mod linearizability;
pub mod raft;
pub mod raft_checks;
pub mod register;
pub mod shrink;
pub mod timeline;

use std::collections::BTreeSet;
use std::fmt::Write as _;

/// Options of one run. Everything else is drawn from `seed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOptions {
    pub seed: u64,
    /// Planted bugs to switch on (names from the scenario's bug list).
    pub bugs: BTreeSet<String>,
    /// Print every trace line to stderr as it happens.
    pub echo_trace: bool,
    /// How many trailing trace lines a failure report shows.
    pub trace_tail_lines: usize,
    /// Make one component deliberately nondeterministic (hash-order iteration), to
    /// prove that the determinism check catches it. Never set in normal runs.
    pub inject_nondeterminism: bool,
    /// Ordinals of scheduled faults not to apply (see [`faults`]): the scenario still
    /// draws them, so the rest of its random stream is unchanged, but skips their
    /// effect. Set by `shrink` and by `run --skip-faults`.
    pub skip_faults: BTreeSet<u64>,
}

impl RunOptions {
    /// Defaults for `seed`.
    pub fn new(seed: u64) -> RunOptions {
        RunOptions {
            seed,
            bugs: BTreeSet::new(),
            echo_trace: false,
            trace_tail_lines: 40,
            inject_nondeterminism: false,
            skip_faults: BTreeSet::new(),
        }
    }

    /// Whether the scenario applies the fault it numbered `ordinal` (0 is the first
    /// fault it scheduled).
    pub fn fault_enabled(&self, ordinal: u64) -> bool {
        !self.skip_faults.contains(&ordinal)
    }

    /// The same options with a planted bug switched on.
    pub fn with_bug(mut self, bug: &str) -> RunOptions {
        self.bugs.insert(bug.to_string());
        self
    }
}

/// A failed run: what was violated, and what happened just before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub message: String,
    pub trace_tail: Vec<String>,
}

/// What one run produced.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub scenario: &'static str,
    pub seed: u64,
    pub fingerprint: u64,
    pub events: u64,
    /// Simulated time the run covered, in nanoseconds (0 if it panicked).
    pub sim_ns: u64,
    /// How many faults the run scheduled (numbered `0..faults`), skipped ones included.
    pub faults: u64,
    pub summary: String,
    pub result: Result<(), Failure>,
}

/// A scenario in the catalogue.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    /// Planted bugs it understands: (name, what it breaks).
    pub bugs: &'static [(&'static str, &'static str)],
    pub run: fn(&RunOptions) -> RunReport,
}

/// The catalogue.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "register",
        about: "quorum-replicated atomic register on SimDisk/SimNetwork: linearizability + liveness",
        bugs: register::BUGS,
        run: register::run,
    },
    Scenario {
        name: "cluster",
        about: "3 or 5 replicated Ryu nodes (Raft + engine) with clients and every fault: linearizability, replica equality, liveness",
        bugs: cluster::BUGS,
        run: cluster::run,
    },
    Scenario {
        name: "steady-load",
        about: "cluster catalogue: no faults, clients and every backup strategy",
        bugs: cluster::BUGS,
        run: |o| cluster::run_profile(cluster::Profile::SteadyLoad, o),
    },
    Scenario {
        name: "leader-churn",
        about: "cluster catalogue: the leader is crashed or paused again and again under load",
        bugs: cluster::BUGS,
        run: |o| cluster::run_profile(cluster::Profile::LeaderChurn, o),
    },
    Scenario {
        name: "flapping-partitions",
        about: "cluster catalogue: partitions every few tens of ms, healing quickly",
        bugs: cluster::BUGS,
        run: |o| cluster::run_profile(cluster::Profile::FlappingPartitions, o),
    },
    Scenario {
        name: "asymmetric-partition",
        about: "cluster catalogue: one-way cuts (a node can send but not hear, or the reverse)",
        bugs: cluster::BUGS,
        run: |o| cluster::run_profile(cluster::Profile::AsymmetricPartition, o),
    },
    Scenario {
        name: "backup-under-leader-failover",
        about: "cluster catalogue: leader and cluster backups, each followed by a leader failure",
        bugs: cluster::BUGS,
        run: |o| cluster::run_profile(cluster::Profile::BackupUnderLeaderFailover, o),
    },
    Scenario {
        name: "follower-backup-with-promotion",
        about: "cluster catalogue: follower backups while the leader fails (complete or cleanly aborted)",
        bugs: cluster::BUGS,
        run: |o| cluster::run_profile(cluster::Profile::FollowerBackupWithPromotion, o),
    },
    Scenario {
        name: "coordinated-backup-under-partition",
        about: "cluster catalogue: cluster backups (all nodes or a quorum) under partitions",
        bugs: cluster::BUGS,
        run: |o| cluster::run_profile(cluster::Profile::CoordinatedBackupUnderPartition, o),
    },
    Scenario {
        name: "snapshot-install-under-load",
        about: "cluster catalogue: logs compacted every few entries; nodes left behind catch up from snapshots made of backups",
        bugs: cluster::BUGS,
        run: |o| cluster::run_profile(cluster::Profile::SnapshotInstallUnderLoad, o),
    },
    Scenario {
        name: "restore-cluster-and-resume",
        about: "cluster catalogue: cluster backups under faults, then a new cluster restored from the newest one resumes",
        bugs: cluster::BUGS,
        run: |o| cluster::run_profile(cluster::Profile::RestoreClusterAndResume, o),
    },
    Scenario {
        name: "membership-change-during-backup",
        about: "cluster catalogue: nodes join (by snapshot), are promoted and removed while every kind of backup runs",
        bugs: cluster::BUGS,
        run: |o| cluster::run_profile(cluster::Profile::MembershipChangeDuringBackup, o),
    },
    Scenario {
        name: "disk-corruption-on-a-minority",
        about: "cluster catalogue: bits rot at rest on a minority of voters; a node that finds corruption is removed and replaced by a spare with a new id",
        bugs: cluster::BUGS,
        run: |o| cluster::run_profile(cluster::Profile::DiskCorruptionOnAMinority, o),
    },
    Scenario {
        name: "counters",
        about: "cluster catalogue: clients only increment counters (applied by the node at their index) and read them, under every fault, compaction and backup",
        bugs: cluster::BUGS,
        run: |o| cluster::run_profile(cluster::Profile::Counters, o),
    },
    Scenario {
        name: "raft",
        about: "3-7 Raft nodes on DiskLog/SimDisk with every fault: Raft safety after each event + liveness",
        bugs: raft::BUGS,
        run: raft::run,
    },
    Scenario {
        name: "raft-targeted",
        about: "the raft scenario's nodes and checkers under a schedule aimed at classic Raft bugs: Figure 8, power loss after votes and acks, learners, conf changes after elections",
        bugs: raft::BUGS,
        run: |o| raft::run_profile(raft::Profile::Targeted, o),
    },
    Scenario {
        name: "engine-crash",
        about: "the storage engine alone, power cut at random points (inside commits, checkpoints, recovery) with disk faults: every acknowledged commit survives, nothing else but an in-doubt prefix",
        bugs: &[],
        run: |o| engine_crash::run(engine_crash::Variant::Standard, o),
    },
    Scenario {
        name: "engine-crash-tiny-cache",
        about: "engine-crash with a 3-page cache and automatic checkpoints: the data outgrows the cache many times",
        bugs: &[],
        run: |o| engine_crash::run(engine_crash::Variant::TinyCache, o),
    },
    Scenario {
        name: "engine-crash-without-commit-syncs",
        about: "engine-crash with sync_commits off (as a node runs it): what Db::sync or a checkpoint made durable survives; recovery returns a prefix of the history",
        bugs: &[],
        run: |o| engine_crash::run(engine_crash::Variant::WithoutCommitSyncs, o),
    },
];

/// Look a scenario up by name.
pub fn scenario(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

/// Run one scenario for one seed. Panics inside the run (broken invariants) are caught
/// and reported as failures, so every failure carries its seed and replay command.
pub fn run(name: &str, opts: &RunOptions) -> Result<RunReport, String> {
    let s = scenario(name).ok_or_else(|| format!("unknown scenario {name:?}; try `list`"))?;
    if opts.bugs.len() > 1 {
        return Err("planted bugs are switched on one at a time".into());
    }
    for bug in &opts.bugs {
        if !s.bugs.iter().any(|(b, _)| b == bug) {
            let hint = if s.bugs.is_empty() {
                " (Raft bugs need --features planted-bugs)"
            } else {
                ""
            };
            return Err(format!(
                "scenario {name} has no planted bug {bug:?}{hint}; try `list`"
            ));
        }
    }
    faults::reset_thread_count();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (s.run)(opts)));
    Ok(caught.unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic with a non-string payload".into());
        RunReport {
            scenario: s.name,
            seed: opts.seed,
            fingerprint: 0,
            events: 0,
            sim_ns: 0,
            faults: faults::thread_count(),
            summary: String::new(),
            result: Err(Failure {
                message: format!("panicked: {message}"),
                trace_tail: Vec::new(),
            }),
        }
    }))
}

/// The one command that replays a run.
pub fn replay_command(scenario: &str, opts: &RunOptions) -> String {
    // The Raft scenario's planted bugs exist only in a build with the feature.
    let features = if opts.bugs.is_empty() || scenario == "register" {
        ""
    } else {
        " --features planted-bugs"
    };
    let mut cmd = format!(
        "cargo run --release -p ryu-scenarios{features} -- run --scenario {scenario} --seed {}",
        opts.seed
    );
    for bug in &opts.bugs {
        write!(cmd, " --bug {bug}").expect("writing to a String cannot fail");
    }
    if !opts.skip_faults.is_empty() {
        let skip = faults::format_ordinals(&opts.skip_faults);
        write!(cmd, " --skip-faults {skip}").expect("writing to a String cannot fail");
    }
    cmd
}

impl RunReport {
    /// A human-readable report; for failures, with the trace tail and the replay line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let status = if self.result.is_ok() { "ok" } else { "FAILED" };
        writeln!(
            out,
            "SEED={} scenario={} {status} fingerprint={:016x} events={}",
            self.seed, self.scenario, self.fingerprint, self.events
        )
        .expect("string write");
        if !self.summary.is_empty() {
            writeln!(out, "  {}", self.summary).expect("string write");
        }
        if let Err(f) = &self.result {
            writeln!(out, "  violation: {}", f.message).expect("string write");
            if !f.trace_tail.is_empty() {
                writeln!(out, "  last {} trace lines:", f.trace_tail.len()).expect("string write");
                for line in &f.trace_tail {
                    writeln!(out, "    {line}").expect("string write");
                }
            }
        }
        out
    }

    /// The replay line for this report's run (bugs as given in `opts`).
    pub fn replay(&self, opts: &RunOptions) -> String {
        format!("replay: {}", replay_command(self.scenario, opts))
    }
}

/// Run a seed twice and compare fingerprints. `Err((first, second))` on a mismatch.
pub fn check_determinism(name: &str, opts: &RunOptions) -> Result<Result<u64, (u64, u64)>, String> {
    let a = run(name, opts)?;
    let b = run(name, opts)?;
    Ok(if a.fingerprint == b.fingerprint {
        Ok(a.fingerprint)
    } else {
        Err((a.fingerprint, b.fingerprint))
    })
}

/// Test helper: run `seeds` of a scenario and panic, with every failing seed's report
/// and replay line, if any fails.
pub fn assert_seeds(name: &str, seeds: std::ops::Range<u64>, bugs: &[&str]) {
    let mut failures = String::new();
    for seed in seeds {
        let mut opts = RunOptions::new(seed);
        for bug in bugs {
            opts = opts.with_bug(bug);
        }
        let report = run(name, &opts).expect("scenario exists");
        if report.result.is_err() {
            failures.push_str(&report.render());
            failures.push_str(&report.replay(&opts));
            failures.push('\n');
        }
    }
    assert!(failures.is_empty(), "\n{failures}");
}
