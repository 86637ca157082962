//! `ryu-scenarios`: run, replay, sweep and check seeds.
//!
//! ```text
//! ryu-scenarios list
//! ryu-scenarios run --seed N [--scenario S] [--bug B]... [--trace] [--skip-faults 1,4,7]
//! ryu-scenarios sweep --seeds A..B [--scenario S] [--bug B]... [--threads T] [--one-per-seed]
//! ryu-scenarios check-determinism --seed N [--scenario S]
//! ryu-scenarios timeline --scenario S --seed N [--bug B] [--skip-faults ..] --out FILE.html
//! ryu-scenarios shrink --scenario S --seed N [--bug B] [--skip-faults ..]
//! ```
//! Exit codes: 0 all passed, 1 a seed failed (its replay line is printed), 2 bad usage.
//! `timeline` exits 0 once the page is written, whatever the run did; `shrink` exits 1
//! with the shrunk run's replay line, or 2 if the seed does not fail.

use clap::{Parser, Subcommand};
use ryu_scenarios::faults::{format_ordinals, parse_ordinals};
use ryu_scenarios::{RunOptions, SCENARIOS, check_determinism, run, shrink, timeline};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
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
        /// Fault ordinals not to apply, as printed by `shrink` (e.g. 1,4,7).
        #[arg(long, value_parser = parse_ordinals)]
        skip_faults: Option<BTreeSet<u64>>,
    },
    /// Draw one run as a self-contained HTML page (roles, faults, operations, failure).
    Timeline {
        #[arg(long)]
        scenario: String,
        #[arg(long)]
        seed: u64,
        #[arg(long = "bug")]
        bugs: Vec<String>,
        /// Fault ordinals not to apply (e.g. a skip set printed by `shrink`).
        #[arg(long, value_parser = parse_ordinals)]
        skip_faults: Option<BTreeSet<u64>>,
        /// Where to write the page.
        #[arg(long)]
        out: PathBuf,
    },
    /// Shrink a failing seed's fault schedule to a few faults that still make it fail.
    Shrink {
        #[arg(long)]
        scenario: String,
        #[arg(long)]
        seed: u64,
        #[arg(long = "bug")]
        bugs: Vec<String>,
        /// Faults to leave out from the start.
        #[arg(long, value_parser = parse_ordinals)]
        skip_faults: Option<BTreeSet<u64>>,
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
        /// Run one scenario per seed instead of every selected one: seed `s` runs
        /// the `(s mod n)`-th of the `n` selected scenarios (in `list` order), so a
        /// range of seeds is spread evenly over the catalogue.
        #[arg(long)]
        one_per_seed: bool,
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

fn one_scenario(name: &str) -> Result<&'static str, String> {
    match scenario_names(name)?.as_slice() {
        [one] => Ok(one),
        _ => Err("name one scenario with --scenario".into()),
    }
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
            skip_faults,
        } => {
            let mut all_ok = true;
            for name in scenario_names(&scenario)? {
                let mut opts = options(seed, &bugs, trace, inject_nondeterminism);
                opts.skip_faults = skip_faults.clone().unwrap_or_default();
                let report = run(name, &opts)?;
                print!("{}", report.render());
                if report.result.is_err() {
                    println!("{}", report.replay(&opts));
                    all_ok = false;
                }
            }
            Ok(all_ok)
        }
        Command::Timeline {
            scenario,
            seed,
            bugs,
            skip_faults,
            out,
        } => {
            let name = one_scenario(&scenario)?;
            let skip = skip_faults.unwrap_or_default();
            write_timeline(name, seed, &bugs, &skip, &out)?;
            Ok(true)
        }
        Command::Shrink {
            scenario,
            seed,
            bugs,
            skip_faults,
        } => {
            let name = one_scenario(&scenario)?;
            let mut opts = options(seed, &bugs, false, false);
            opts.skip_faults = skip_faults.unwrap_or_default();
            print_shrink(name, &opts)?;
            Ok(false)
        }
        Command::Sweep {
            seeds,
            scenario,
            bugs,
            threads,
            fail_fast,
            one_per_seed,
        } => {
            let range = parse_range(&seeds)?;
            let names = scenario_names(&scenario)?;
            for bug in &bugs {
                run(
                    names[0],
                    &options(range.start, std::slice::from_ref(bug), false, false),
                )?;
            }
            let plan = SweepPlan {
                threads,
                fail_fast,
                one_per_seed,
            };
            sweep(range, &names, &bugs, plan)
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

/// How a sweep runs its seeds.
struct SweepPlan {
    threads: Option<usize>,
    fail_fast: bool,
    one_per_seed: bool,
}

/// Run seeds on worker threads. Each seed's run is single-threaded and deterministic;
/// threads only share the seed counter, the totals and the failure list, and results
/// are printed sorted by seed, so the output does not depend on scheduling (only the
/// wall-clock time in the summary does).
#[allow(clippy::disallowed_methods, clippy::disallowed_types)] // the CLI is a driver: it owns threads and the clock, the runs do not
fn sweep(
    range: std::ops::Range<u64>,
    names: &[&'static str],
    bugs: &[String],
    plan: SweepPlan,
) -> Result<bool, String> {
    let threads = plan
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let started = std::time::Instant::now();
    let next = AtomicU64::new(range.start);
    let done = AtomicU64::new(0);
    let runs = AtomicU64::new(0);
    let sim_ns = AtomicU64::new(0);
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
                    let chosen: &[&'static str] = if plan.one_per_seed {
                        let i = (seed % names.len() as u64) as usize;
                        &names[i..=i]
                    } else {
                        names
                    };
                    for name in chosen {
                        let opts = options(seed, bugs, false, false);
                        let report = run(name, &opts).expect("scenario names were checked");
                        runs.fetch_add(1, Ordering::SeqCst);
                        sim_ns.fetch_add(report.sim_ns, Ordering::SeqCst);
                        if report.result.is_err() {
                            let text = format!("{}{}\n", report.render(), report.replay(&opts));
                            failures
                                .lock()
                                .expect("no panics while held")
                                .push((seed, text));
                            if plan.fail_fast {
                                stop.store(true, Ordering::SeqCst);
                            }
                        }
                    }
                    let n = done.fetch_add(1, Ordering::SeqCst) + 1;
                    if n.is_multiple_of(1000) {
                        eprintln!(
                            "swept {n}/{total} seeds in {:.0} s",
                            started.elapsed().as_secs_f64()
                        );
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
    let wall = started.elapsed().as_secs_f64();
    let sim = sim_ns.load(Ordering::SeqCst) as f64 / 1e9;
    println!(
        "sweep {}..{} scenarios={}{} : {} seeds run ({} runs), {} failed; wall {:.0} s on {} threads, simulated {:.0} s ({:.1}x wall)",
        range.start,
        range.end,
        names.join(","),
        if plan.one_per_seed {
            " (one per seed)"
        } else {
            ""
        },
        done.load(Ordering::SeqCst),
        runs.load(Ordering::SeqCst),
        failures.len(),
        wall,
        threads,
        sim,
        sim / wall.max(1e-9)
    );
    Ok(failures.is_empty())
}

/// Run the seed in a child process of this binary with `--trace` (so no scenario has
/// to change to be drawn), then render its stderr (the trace) and stdout (the report).
fn write_timeline(
    name: &str,
    seed: u64,
    bugs: &[String],
    skip: &BTreeSet<u64>,
    out: &Path,
) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let mut child = std::process::Command::new(exe);
    // A panic's message is in the report; its backtrace would only clutter the trace.
    child.env("RUST_BACKTRACE", "0");
    child.args([
        "run",
        "--scenario",
        name,
        "--seed",
        &seed.to_string(),
        "--trace",
    ]);
    for bug in bugs {
        child.args(["--bug", bug]);
    }
    if !skip.is_empty() {
        child.args(["--skip-faults", &format_ordinals(skip)]);
    }
    let output = child
        .output()
        .map_err(|e| format!("cannot run the scenario: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !matches!(output.status.code(), Some(0 | 1)) {
        let last = stderr
            .lines()
            .last()
            .unwrap_or("")
            .trim_start_matches("error: ");
        return Err(format!(
            "the run did not complete ({}): {last}",
            output.status
        ));
    }
    let lines = timeline::split_trace(&stderr);
    let html = timeline::render_html(&lines, &stdout);
    write_file(out, &html)?;
    if let Some(banner) = stdout.lines().find(|l| l.starts_with("SEED=")) {
        println!("{banner}");
    }
    println!(
        "wrote {} ({} KiB, {} trace events)",
        out.display(),
        html.len().div_ceil(1024),
        lines.len()
    );
    Ok(())
}

/// The CLI writes the page it was asked for; the runs themselves never touch files.
#[allow(clippy::disallowed_methods)] // std::fs::write: this is the CLI's output file
fn write_file(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn print_shrink(name: &str, opts: &RunOptions) -> Result<(), String> {
    // A candidate run that panics is a failure like any other, its message is in its
    // report: without this, every such run would print a backtrace.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = shrink::shrink_with_progress(name, opts, &mut |line| println!("{line}"));
    std::panic::set_hook(hook);
    let result = result?;
    println!(
        "shrunk in {} runs{}: {} of {} faults remain; skip set: {}",
        result.runs,
        if result.budget_exhausted {
            " (run budget exhausted: not minimal)"
        } else {
            ""
        },
        result.faults_after,
        result.faults_before,
        if result.opts.skip_faults.is_empty() {
            "(none)".to_string()
        } else {
            format_ordinals(&result.opts.skip_faults)
        }
    );
    print!("{}", result.shrunk.render());
    if result.violation_changed() {
        println!(
            "  note: the violation changed; the original was: {}",
            result.original_violation()
        );
    }
    if result.shrunk.events == 0 {
        println!("  (a run that panics keeps no trace: replay it with --trace to see it)");
    } else {
        println!(
            "  crash/pause/partition lines of the shrunk run ({}):",
            result.fault_lines.len()
        );
        for line in &result.fault_lines {
            println!("    {}", line.trim_start());
        }
    }
    println!("{}", result.shrunk.replay(&result.opts));
    Ok(())
}
