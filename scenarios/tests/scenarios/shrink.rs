//! Skipping faults and shrinking a failing seed: the hook must not disturb runs that
//! skip nothing, a skip set must replay exactly (in this process and through the CLI),
//! and shrinking must keep the failure with no more faults than it started with.

use super::{binary, fingerprint_line};
use ryu_scenarios::faults::{draw_partition, format_ordinals, parse_ordinals};
use ryu_scenarios::shrink::{ShrinkResult, applied_faults, shrink};
use ryu_scenarios::{RunOptions, RunReport, replay_command, run};
use ryu_sim::{NetConfig, SimNetwork, SimRng};

/// Fingerprints computed before the fault hook existed. If a deliberate change to a
/// scenario moves them, re-pin them from `ryu-scenarios run` on the commit before it.
const PINNED: &[(&str, u64, u64)] = &[
    // Re-pinned when the Raft log began writing term and vote to both meta slots
    // (more writes for a power loss to tear).
    ("raft", 1, 0x84d6_6019_17e6_f977),
    ("raft", 2, 0x7dc1_7c57_be60_1518),
    ("raft", 3, 0x2aff_096f_4ea0_10bb),
    ("register", 1, 0x7a99_2afe_4a96_4bff),
    ("register", 2, 0x6b0d_4f49_e6dd_091f),
    ("register", 3, 0xb1cb_658a_b732_17d6),
];

/// The hook numbers faults and draws nothing of its own: with an empty skip set (and
/// with a skip set naming only ordinals the run never reaches) the runs are the runs
/// from before it existed.
#[test]
fn an_empty_skip_set_leaves_fingerprints_unchanged() {
    for &(name, seed, fingerprint) in PINNED {
        let report = run(name, &RunOptions::new(seed)).unwrap();
        assert!(
            report.fingerprint == fingerprint,
            "{name} seed {seed}: fingerprint {:016x}, pinned {fingerprint:016x}",
            report.fingerprint
        );
        assert!(report.faults > 0, "{name} seed {seed} scheduled no faults");
        let mut far = RunOptions::new(seed);
        far.skip_faults.insert(report.faults + 1_000);
        assert_eq!(run(name, &far).unwrap().fingerprint, fingerprint);
    }
}

/// The trace a run prints with `--trace`, one event per line.
fn traced(name: &str, seed: u64, skip: &str) -> Vec<String> {
    let mut cmd = binary();
    cmd.args(["run", "--scenario", name, "--trace", "--seed"])
        .arg(seed.to_string());
    if !skip.is_empty() {
        cmd.args(["--skip-faults", skip]);
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{name} {seed}: {out:?}");
    ryu_scenarios::timeline::split_trace(&String::from_utf8_lossy(&out.stderr))
}

/// Skipping fault k changes the run from fault k on, and only from there: the trace
/// before it is the original's, and where the original applied the fault the new
/// trace says it skipped that very fault.
#[test]
fn skipping_a_fault_changes_the_run_from_that_fault_on() {
    // Chosen to skip each kind of fault in each scenario (see the assertion at the end).
    let cases = [
        ("raft", 1, 1),
        ("raft", 3, 0),
        ("raft", 4, 0),
        ("raft", 4, 1),
        ("register", 20, 1),
        ("register", 24, 1),
        ("register", 3, 0),
        ("register", 3, 2),
    ];
    let mut kinds = std::collections::BTreeSet::new();
    for (name, seed, k) in cases {
        let original = traced(name, seed, "");
        {
            let mut skipped = traced(name, seed, &k.to_string());
            let marker = format!(" fault-skipped #{k} ");
            let at = skipped
                .iter()
                .position(|l| l.contains(&marker))
                .unwrap_or_else(|| panic!("{name} {seed}: no {marker:?} line"));
            let first_difference = original.iter().zip(&skipped).position(|(a, b)| a != b);
            assert_eq!(first_difference, Some(at), "{name} {seed} skip {k}");
            assert_eq!(
                skipped[at].replacen(&marker, " ", 1).trim_end(),
                original[at].trim_end(),
                "{name} {seed}: the skipped fault is the original's fault {k}"
            );
            assert_eq!(
                skipped
                    .iter()
                    .filter(|l| l.contains(" fault-skipped "))
                    .count(),
                1
            );
            // Was it really left out? Without the marker, the run must not be the
            // original (the fault applied after all). A partition may change nothing
            // (its links may have been cut already), but a node whose crash or pause
            // was skipped is up: its next life event cannot bring it back up.
            skipped.remove(at);
            assert!(
                skipped != original,
                "{name} {seed}: fault {k} applied anyway"
            );
            let words: Vec<&str> = original[at].split_whitespace().collect();
            let (node, kind) = (words[1], words[2]);
            if matches!(kind, "crash" | "pause") {
                let next_life = skipped[at..].iter().find_map(|l| {
                    let w: Vec<&str> = l.split_whitespace().collect();
                    let life = ["crash", "pause", "resume", "start", "restart"];
                    (w[1] == node && life.contains(&w[2])).then(|| w[2].to_string())
                });
                assert!(
                    !matches!(next_life.as_deref(), Some("resume" | "start" | "restart")),
                    "{name} {seed}: {node} was down after all when its {kind} {k} was skipped"
                );
            }
            kinds.insert(format!("{name} {kind}"));
        }
    }
    let expected = [
        "raft crash",
        "raft fault",
        "raft pause",
        "register crash",
        "register fault",
        "register pause",
    ];
    assert_eq!(
        kinds.iter().map(String::as_str).collect::<Vec<_>>(),
        expected,
        "the cases no longer skip every kind of fault: pick other seeds"
    );
}

fn failing_register_seed() -> (RunOptions, RunReport) {
    (0..1000)
        .map(|seed| RunOptions::new(seed).with_bug("ack-before-sync"))
        .map(|opts| {
            let report = run("register", &opts).unwrap();
            (opts, report)
        })
        .find(|(_, report)| report.result.is_err())
        .expect("the simulator catches ack-before-sync within 1000 seeds")
}

fn check_shrunk(result: &ShrinkResult) {
    assert!(result.shrunk.result.is_err(), "the shrunk run must fail");
    assert!(
        result.faults_after <= result.faults_before,
        "{} faults after, {} before",
        result.faults_after,
        result.faults_before
    );
    assert_eq!(
        result.faults_after,
        applied_faults(&result.shrunk, &result.opts.skip_faults).len() as u64
    );
    // Same skip set, same run, twice.
    let again = run("register", &result.opts).unwrap();
    let third = run("register", &result.opts).unwrap();
    assert_eq!(again.fingerprint, result.shrunk.fingerprint);
    assert_eq!(third.fingerprint, result.shrunk.fingerprint);
    assert!(again.result.is_err());
}

#[test]
fn shrinking_a_register_failure_keeps_it_failing_with_fewer_faults() {
    let (opts, original) = failing_register_seed();
    let result = shrink("register", &opts).unwrap();
    assert_eq!(result.original.fingerprint, original.fingerprint);
    check_shrunk(&result);
    assert!(
        result.faults_after < result.faults_before,
        "seed {}: nothing could be removed from {} faults",
        opts.seed,
        result.faults_before
    );
    assert!(!result.fault_lines.is_empty());
    assert!(result.shrunk.result.as_ref().unwrap_err().trace_tail.len() <= opts.trace_tail_lines);
    // The printed replay line, run as a process, reproduces the shrunk run.
    let replay = result.shrunk.replay(&result.opts);
    assert!(replay.contains(" --skip-faults "), "{replay}");
    let args = replay
        .strip_prefix("replay: cargo run --release -p ryu-scenarios -- ")
        .unwrap_or_else(|| panic!("unexpected replay line {replay}"));
    let out = binary().args(args.split_whitespace()).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert_eq!(
        fingerprint_line(&stdout),
        fingerprint_line(&result.shrunk.render())
    );
    assert!(
        stdout.contains(&replay),
        "the replay prints its own replay line"
    );
}

#[test]
fn shrinking_is_deterministic() {
    let (opts, _) = failing_register_seed();
    let a = shrink("register", &opts).unwrap();
    let b = shrink("register", &opts).unwrap();
    assert_eq!(a.opts.skip_faults, b.opts.skip_faults);
    assert_eq!(a.shrunk.fingerprint, b.shrunk.fingerprint);
    assert_eq!(a.runs, b.runs);
}

#[test]
fn shrinking_a_passing_seed_is_an_error() {
    let err = shrink("register", &RunOptions::new(1)).unwrap_err();
    assert!(err.contains("passes"), "{err}");
    let out = binary()
        .args(["shrink", "--scenario", "register", "--seed", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn cli_shrink_prints_the_skip_set_and_a_replay_line() {
    let (opts, _) = failing_register_seed();
    let result = shrink("register", &opts).unwrap();
    let out = binary()
        .args([
            "shrink",
            "--scenario",
            "register",
            "--bug",
            "ack-before-sync",
            "--seed",
        ])
        .arg(opts.seed.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "{} of {} faults remain",
            result.faults_after, result.faults_before
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&result.shrunk.replay(&result.opts)),
        "{stdout}"
    );
}

#[test]
fn replay_command_names_skipped_faults() {
    let mut opts = RunOptions::new(5).with_bug("ack-before-sync");
    assert!(!replay_command("register", &opts).contains("--skip-faults"));
    opts.skip_faults.extend([7, 1, 4]);
    assert!(
        replay_command("register", &opts).ends_with(" --bug ack-before-sync --skip-faults 1,4,7")
    );
    let out = binary()
        .args([
            "run",
            "--scenario",
            "register",
            "--seed",
            "1",
            "--skip-faults",
            "x",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

/// A skipped partition draws exactly what an applied one draws, and leaves the links
/// as they were (including cuts made before it).
#[test]
fn a_skipped_partition_draws_the_same_and_cuts_nothing() {
    let nodes = [1, 2, 3, 4, 5];
    for seed in 0..200 {
        let mut applied_rng = SimRng::new(seed);
        let mut skipped_rng = SimRng::new(seed);
        let mut applied: SimNetwork<()> =
            SimNetwork::new(SimRng::new(1), NetConfig::default(), &nodes);
        let mut skipped: SimNetwork<()> =
            SimNetwork::new(SimRng::new(1), NetConfig::default(), &nodes);
        skipped.cut(2, 4);
        let a = draw_partition(&mut applied, &mut applied_rng, &nodes, true);
        let b = draw_partition(&mut skipped, &mut skipped_rng, &nodes, false);
        assert_eq!(a, b, "seed {seed}");
        assert_eq!(
            applied_rng.next_u64(),
            skipped_rng.next_u64(),
            "seed {seed}"
        );
        assert_eq!(
            skipped.cut_links().collect::<Vec<_>>(),
            vec![(2, 4)],
            "seed {seed}: {b}"
        );
    }
}

#[test]
fn skip_sets_print_and_parse() {
    let set = parse_ordinals("7, 1,4,,").unwrap();
    assert_eq!(format_ordinals(&set), "1,4,7");
    assert!(parse_ordinals("").unwrap().is_empty());
    assert!(parse_ordinals("1,x").is_err());
}

/// A run that panics (a broken Raft assertion) is reported without the scenario's
/// world, yet still says how many faults it scheduled, so it can be shrunk too.
/// Run with `cargo test -p ryu-scenarios --features planted-bugs shrink`.
#[cfg(feature = "planted-bugs")]
#[test]
fn a_panicking_raft_failure_counts_its_faults_and_shrinks() {
    let bug = "ack-append-before-durable";
    let (opts, original) = (0..200)
        .map(|seed| RunOptions::new(seed).with_bug(bug))
        .map(|opts| {
            let report = run("raft", &opts).unwrap();
            (opts, report)
        })
        .find(|(_, r)| {
            r.result
                .as_ref()
                .is_err_and(|f| f.message.starts_with("panicked"))
        })
        .expect("the planted bug trips a Raft assertion within 200 seeds");
    assert!(original.faults > 0, "seed {}: no faults counted", opts.seed);
    let result = shrink("raft", &opts).unwrap();
    assert!(result.shrunk.result.is_err());
    assert!(result.faults_after <= result.faults_before);
    assert!(run("raft", &result.opts).unwrap().result.is_err());
}
