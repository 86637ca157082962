//! Negative tests, in FoundationDB's sense: the simulator must catch each classic Raft
//! bug planted in the core (one at a time, behind the `planted-bugs` feature), within
//! 1,000 seeds. The test prints, per bug, the first seed that caught it.
//!
//! Run with `cargo test -p ryu-scenarios --features planted-bugs planted`.

#[cfg(feature = "planted-bugs")]
#[test]
fn every_planted_raft_bug_is_caught() {
    use ryu_scenarios::{RunOptions, raft::BUGS, run};
    let mut table =
        String::from("\nplanted bug                           caught at seed  violation\n");
    let mut missed = Vec::new();
    for (bug, _) in BUGS {
        let found = (0..1000u64).find_map(|seed| {
            let report = run("raft", &RunOptions::new(seed).with_bug(bug)).unwrap();
            report.result.err().map(|f| (seed, f.message))
        });
        match found {
            Some((seed, message)) => {
                let what: String = message.chars().take(60).collect();
                table.push_str(&format!("{bug:<38}{seed:>14}  {what}\n"));
            }
            None => {
                table.push_str(&format!("{bug:<38}{:>14}\n", "NOT CAUGHT"));
                missed.push(*bug);
            }
        }
    }
    println!("{table}");
    assert!(
        missed.is_empty(),
        "planted bugs the simulator missed in 1000 seeds: {missed:?}{table}"
    );
}

/// The node-level planted bugs, caught by the `cluster` scenario within 200 seeds.
#[cfg(feature = "planted-bugs")]
#[test]
fn every_planted_node_bug_is_caught() {
    use ryu_scenarios::{RunOptions, cluster::BUGS, run};
    assert!(!BUGS.is_empty());
    for (bug, _) in BUGS {
        let found = (0..200u64).find_map(|seed| {
            let report = run("cluster", &RunOptions::new(seed).with_bug(bug)).unwrap();
            report.result.err().map(|f| (seed, f.message))
        });
        let (seed, message) = found.unwrap_or_else(|| panic!("{bug} not caught in 200 seeds"));
        println!(
            "{bug}: caught at seed {seed}: {}",
            message.lines().next().unwrap_or("")
        );
    }
}

/// Without the feature, asking for a Raft bug is a clear error, not a silent no-op.
#[cfg(not(feature = "planted-bugs"))]
#[test]
fn raft_bugs_need_the_feature() {
    use ryu_scenarios::{RunOptions, run};
    let err = run(
        "raft",
        &RunOptions::new(1).with_bug("grant-vote-to-stale-log"),
    )
    .unwrap_err();
    assert!(err.contains("planted-bugs"), "{err}");
}
