//! `ryu-scenarios`: run, replay, sweep and check seeds.
//!
//! ```text
//! ryu-scenarios list
//! ryu-scenarios run --seed N [--scenario S] [--bug B]... [--trace]
//! ryu-scenarios sweep --seeds A..B [--scenario S] [--bug B]... [--threads T]
//! ryu-scenarios check-determinism --seed N [--scenario S]
//! ```
//! Exit codes: 0 all passed, 1 a seed failed (its replay line is printed), 2 bad usage.

use clap::{Parser, Subcommand};
use ryu_scenarios::{RunOptions, SCENARIOS, check_determinism, run};
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Parser, Debug)]
#[command(name = "ryu-scenarios", about = "Ryu's seeded simulation scenarios")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List scenarios and their planted bugs.
    List,
    /// Run one seed (of one scenario, or of all).
    Run {
        #[arg(long)]
        seed: u64,
        #[arg(long, default_value = "all")]
        scenario: String,
        /// Switch on a planted bug (repeatable).
        #[arg(long = "bug")]
        bugs: Vec<String>,
        /// Print every trace line to stderr.
        #[arg(long)]
        trace: bool,
        /// Deliberately nondeterministic run (demonstrates the determinism check).
        #[arg(long, hide = true)]
        inject_nondeterminism: bool,
    },
    /// Run a range of seeds in parallel over the cores.
    Sweep {
        /// Seeds as A..B (B exclusive).
        #[arg(long)]
        seeds: String,
        #[arg(long, default_value = "all")]
        scenario: String,
        #[arg(long = "bug")]
        bugs: Vec<String>,
        /// Worker threads (default: available cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Stop at the first failing seed.
        #[arg(long)]
        fail_fast: bool,
    },
    /// Run a seed twice in this process and compare trace fingerprints.
    CheckDeterminism {
        #[arg(long)]
        seed: u64,
        #[arg(long, default_value = "all")]
        scenario: String,
        #[arg(long, hide = true)]
        inject_nondeterminism: bool,
    },
}

fn scenario_names(name: &str) -> Result<Vec<&'static str>, String> {
    if name == "all" {
        return Ok(SCENARIOS.iter().map(|s| s.name).collect());
    }
    ryu_scenarios::scenario(name)
        .map(|s| vec![s.name])
        .ok_or_else(|| format!("unknown scenario {name:?}; try `list`"))
}

fn parse_range(s: &str) -> Result<std::ops::Range<u64>, String> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| format!("--seeds wants A..B, got {s:?}"))?;
    let a: u64 = a.parse().map_err(|e| format!("bad seed {a:?}: {e}"))?;
    let b: u64 = b.parse().map_err(|e| format!("bad seed {b:?}: {e}"))?;
    if a >= b {
        return Err(format!("empty seed range {s}"));
    }
    Ok(a..b)
}

fn options(seed: u64, bugs: &[String], trace: bool, nondet: bool) -> RunOptions {
    let mut opts = RunOptions::new(seed);
    opts.bugs = bugs.iter().cloned().collect();
    opts.echo_trace = trace;
    opts.inject_nondeterminism = nondet;
    opts
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match execute(cli.command) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
    }
}

/// Ok(true) when everything passed.
fn execute(command: Command) -> Result<bool, String> {
    match command {
        Command::List => {
            for s in SCENARIOS {
                println!("{:<12} {}", s.name, s.about);
                for (bug, what) in s.bugs {
                    println!("    --bug {bug:<22} {what}");
                }
            }
            Ok(true)
        }
        Command::Run {
            seed,
            scenario,
            bugs,
            trace,
            inject_nondeterminism,
        } => {
            let mut all_ok = true;
            for name in scenario_names(&scenario)? {
                let opts = options(seed, &bugs, trace, inject_nondeterminism);
                let report = run(name, &opts)?;
                print!("{}", report.render());
                if report.result.is_err() {
                    println!("{}", report.replay(&opts));
                    all_ok = false;
                }
            }
            Ok(all_ok)
        }
        Command::Sweep {
            seeds,
            scenario,
            bugs,
            threads,
            fail_fast,
        } => {
            let range = parse_range(&seeds)?;
            let names = scenario_names(&scenario)?;
            for bug in &bugs {
                run(
                    names[0],
                    &options(range.start, std::slice::from_ref(bug), false, false),
                )?;
            }
            sweep(range, &names, &bugs, threads, fail_fast)
        }
        Command::CheckDeterminism {
            seed,
            scenario,
            inject_nondeterminism,
        } => {
            let mut all_ok = true;
            for name in scenario_names(&scenario)? {
                let opts = options(seed, &[], false, inject_nondeterminism);
                match check_determinism(name, &opts)? {
                    Ok(fp) => {
                        println!("SEED={seed} scenario={name} deterministic fingerprint={fp:016x}")
                    }
                    Err((a, b)) => {
                        println!(
                            "SEED={seed} scenario={name} NONDETERMINISTIC: {a:016x} != {b:016x}"
                        );
                        println!(
                            "replay: cargo run --release -p ryu-scenarios -- check-determinism --scenario {name} --seed {seed}"
                        );
                        all_ok = false;
                    }
                }
            }
            Ok(all_ok)
        }
    }
}

/// Run seeds on worker threads. Each seed's run is single-threaded and deterministic;
/// threads only share the seed counter and the failure list, and results are printed
/// sorted by seed, so the output does not depend on scheduling.
#[allow(clippy::disallowed_methods)] // the CLI is a driver: it owns threads, the runs do not
fn sweep(
    range: std::ops::Range<u64>,
    names: &[&'static str],
    bugs: &[String],
    threads: Option<usize>,
    fail_fast: bool,
) -> Result<bool, String> {
    let threads = threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let next = AtomicU64::new(range.start);
    let done = AtomicU64::new(0);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let failures: Mutex<Vec<(u64, String)>> = Mutex::new(Vec::new());
    let total = range.end - range.start;
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::SeqCst);
                    if seed >= range.end || stop.load(Ordering::SeqCst) {
                        break;
                    }
                    for name in names {
                        let opts = options(seed, bugs, false, false);
                        let report = run(name, &opts).expect("scenario names were checked");
                        if report.result.is_err() {
                            let text = format!("{}{}\n", report.render(), report.replay(&opts));
                            failures
                                .lock()
                                .expect("no panics while held")
                                .push((seed, text));
                            if fail_fast {
                                stop.store(true, Ordering::SeqCst);
                            }
                        }
                    }
                    let n = done.fetch_add(1, Ordering::SeqCst) + 1;
                    if n.is_multiple_of(1000) {
                        eprintln!("swept {n}/{total} seeds");
                    }
                }
            });
        }
    });
    let mut failures = failures.into_inner().expect("threads joined");
    failures.sort();
    for (_, text) in &failures {
        print!("{text}");
    }
    let swept = done.load(Ordering::SeqCst);
    println!(
        "sweep {}..{} scenarios={} : {} seeds run, {} failed",
        range.start,
        range.end,
        names.join(","),
        swept,
        failures.len()
    );
    Ok(failures.is_empty())
}
