//! The timeline page: a small hand-written trace must come out with its lanes, roles,
//! crash, partition and failure; long traces must stay small; the CLI must write a
//! page for a real failing run.

use ryu_scenarios::timeline::{render_html, split_trace};
use ryu_scenarios::{RunOptions, run};

const MS: u64 = 1_000_000;

fn line(at_ns: u64, who: &str, kind: &str, detail: &str) -> String {
    format!("{at_ns:>14} {who} {kind} {detail}")
}

fn start(at_ns: u64, node: u64, term: u64) -> String {
    line(
        at_ns,
        &format!("n{node}"),
        "start",
        &format!("applied=0 hs=HardState {{ term: {term}, vote: None, commit: 0 }}"),
    )
}

fn send(at_ns: u64, from: u64, to: u64, kind: &str, term: u64) -> String {
    line(
        at_ns,
        &format!("n{from}"),
        "send",
        &format!("{from}->{to} {kind} term={term} commit=0"),
    )
}

/// Three nodes: n1 campaigns (pre-vote, vote) and leads term 1 with heartbeats; n3
/// crashes at 200 ms and restarts at 500 ms; the network splits n1 off at 400 ms and
/// heals at 700 ms; the run fails at 900 ms.
fn small_trace() -> Vec<String> {
    let mut t = vec![start(0, 1, 0), start(0, 2, 0), start(0, 3, 0)];
    t.push(send(100 * MS, 1, 2, "PreVote", 1));
    t.push(send(102 * MS, 1, 2, "Vote", 1));
    t.push(send(103 * MS, 2, 1, "VoteResp", 1));
    for i in 0..40 {
        let at = 105 * MS + i * 20 * MS;
        t.push(send(at, 1, 2, "Heartbeat", 1));
        t.push(send(at + MS, 2, 1, "HeartbeatResp", 1));
    }
    t.push(line(200 * MS, "n3", "crash", "scheduled power_loss=true"));
    t.push(line(300 * MS, "n1", "propose", "v1 -> Ok(())"));
    t.push(line(350 * MS, "n2", "propose", "v2 -> Err(NotLeader)"));
    t.push(line(400 * MS, "--", "fault", "partition [1] | [2, 3]"));
    t.push(start(500 * MS, 3, 1));
    t.push(line(700 * MS, "--", "heal", ""));
    t.push(line(900 * MS, "--", "liveness-phase", "heal everything"));
    t
}

const FAILED_REPORT: &str = "SEED=7 scenario=raft FAILED fingerprint=0123456789abcdef events=90
  voters=3 spares=0
  violation: election safety: two leaders in term 1
replay: cargo run --release -p ryu-scenarios -- run --scenario raft --seed 7
";

/// The titles of the elements of a class that have one (legend swatches have none).
fn titled(html: &str, class: &str) -> Vec<String> {
    let marker = format!("class=\"{class}\"");
    html.match_indices(&marker)
        .filter_map(|(at, _)| {
            let rest = &html[at..];
            let tag_end = rest.find('>')?;
            let content = rest[tag_end + 1..].strip_prefix("<title>")?;
            Some(content[..content.find("</title>")?].to_string())
        })
        .collect()
}

#[test]
fn small_trace_shows_lanes_roles_crash_partition_and_failure() {
    let html = render_html(&small_trace(), FAILED_REPORT);
    for lane in ["n1", "n2", "n3"] {
        assert!(
            html.contains(&format!(">{lane}</text>")),
            "no lane for {lane}"
        );
    }
    // Three node lanes and the operations lane.
    assert_eq!(html.matches("class=\"lane-bg\"").count(), 4);
    let leaders = titled(&html, "leader");
    assert!(
        leaders
            .iter()
            .any(|t| t.starts_with("n1: leader, term 1 (105.0 ms – 900.0 ms)")),
        "no leader band for n1: {leaders:?}"
    );
    assert!(
        titled(&html, "candidate")
            .iter()
            .any(|t| t.starts_with("n1: candidate, term 1")),
        "n1 campaigned"
    );
    assert!(
        titled(&html, "precandidate")
            .iter()
            .any(|t| t.starts_with("n1: pre-candidate, term 0")),
        "a pre-vote carries term + 1"
    );
    assert!(
        titled(&html, "follower")
            .iter()
            .any(|t| t.starts_with("n2: follower, term 1")),
        "n2 follows n1"
    );
    let down = titled(&html, "down");
    assert!(
        down.iter()
            .any(|t| t.starts_with("n3: crashed (200.0 ms – 500.0 ms)")),
        "no crash span for n3: {down:?}"
    );
    let partitions = titled(&html, "net-span");
    assert_eq!(
        partitions,
        vec!["partition [1] | [2, 3] (400.0 ms – 700.0 ms)".to_string()]
    );
    assert!(html.contains("class=\"mk-fault\""), "partition marker");
    assert!(html.contains("class=\"mk-heal\""), "heal marker");
    let failure = titled(&html, "failure");
    assert_eq!(
        failure,
        vec!["failure at 900.0 ms: election safety: two leaders in term 1".to_string()]
    );
    assert!(html.contains("violation: election safety: two leaders in term 1"));
    assert!(html.contains("--seed 7"), "the replay line is on the page");
    // One success at n1, one failure at n2.
    assert!(
        titled(&html, "op-ok")
            .iter()
            .any(|t| t.starts_with("n1: 1 operation(s) succeeded"))
    );
    assert!(
        titled(&html, "op-fail")
            .iter()
            .any(|t| t.starts_with("n2: 1 operation(s) failed"))
    );
}

#[test]
fn the_page_is_self_contained() {
    let html = render_html(&small_trace(), FAILED_REPORT);
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.trim_end().ends_with("</html>"));
    for banned in ["<script", "<link", "<img", "src=", "href=", "@import"] {
        assert!(!html.contains(banned), "the page refers to {banned}");
    }
    // The only URL is the SVG namespace.
    assert_eq!(html.matches("http").count(), 1);
}

#[test]
fn a_passing_run_has_no_failure_line() {
    let report = "SEED=7 scenario=raft ok fingerprint=0123456789abcdef events=90\n  voters=3\n";
    let html = render_html(&small_trace(), report);
    assert!(titled(&html, "failure").is_empty());
    assert!(html.contains("run passed"));
}

/// A violation that names times gets them marked.
#[test]
fn times_cited_by_the_violation_are_marked() {
    let report = "SEED=1 scenario=register FAILED fingerprint=0 events=1\n  violation: stale result: Write(5) completed at 300000000, then Read invoked at 600000000 got 4\n";
    let html = render_html(&small_trace(), report);
    let cited = titled(&html, "cited");
    assert_eq!(
        cited,
        vec![
            "cited by the violation: 300.0 ms".to_string(),
            "cited by the violation: 600.0 ms".to_string()
        ]
    );
}

/// Regression: a pre-candidate moment narrower than a pixel, followed by seconds as
/// a follower, was merged with the follower span into one "pre-candidate" band that
/// hid the follower (the merged band shows the most severe state).
#[test]
fn a_narrow_state_does_not_swallow_the_wide_one_after_it() {
    let mut t = vec![start(0, 1, 1), start(0, 2, 1)];
    t.push(send(1_000 * MS, 1, 2, "PreVote", 3));
    t.push(send(1_000 * MS + 100_000, 1, 2, "AppendResp", 3));
    t.push(line(10_000 * MS, "--", "liveness-phase", "heal everything"));
    let html = render_html(&t, "");
    let followers = titled(&html, "follower");
    assert!(
        followers
            .iter()
            .any(|f| f.starts_with("n1: follower, term 3 (1.000 s – 10.000 s)")),
        "{followers:?}"
    );
}

/// A leader that stops sending leader messages is not shown as leader forever.
#[test]
fn a_silent_leader_is_not_shown_leading_forever() {
    let mut t = vec![start(0, 1, 0)];
    t.push(send(100 * MS, 1, 2, "Heartbeat", 4));
    t.push(send(2_000 * MS, 1, 2, "Vote", 5));
    t.push(send(2_100 * MS, 1, 2, "Heartbeat", 5));
    t.push(line(5_000 * MS, "--", "heal", ""));
    let html = render_html(&t, "");
    let leaders = titled(&html, "leader");
    assert_eq!(leaders.len(), 2, "{leaders:?}");
    assert!(leaders[0].starts_with("n1: leader, term 4 (100.0 ms – 400.0 ms)"));
    assert!(leaders[1].starts_with("n1: leader, term 5 (2.100 s – 2.400 s)"));
    let unknown = titled(&html, "up");
    assert!(
        unknown[0].starts_with("n1: up (role unknown), term 4 (400.0 ms – 2.000 s)"),
        "{unknown:?}"
    );
    assert!(unknown[1].starts_with("n1: up (role unknown), term 5 (2.400 s – 5.000 s)"));
}

#[test]
fn split_trace_glues_payload_newlines_to_their_event() {
    let text = "noise before\n   5 n1 send 1->2 Heartbeat term=1 ctx=ab\ncd)\n   6 -- heal \n";
    let lines = split_trace(text);
    assert_eq!(
        lines,
        vec![
            "   5 n1 send 1->2 Heartbeat term=1 ctx=ab\ncd)".to_string(),
            "   6 -- heal ".to_string()
        ]
    );
}

/// Thousands of role changes, operations and partitions still make a page far below
/// 2 MB: everything is merged down to pixels.
#[test]
fn a_long_busy_run_stays_small() {
    let mut t = Vec::new();
    for n in 1..=7 {
        t.push(start(0, n, 0));
    }
    let mut at = 0;
    for i in 0..60_000u64 {
        at += 997_000 + (i % 7) * 1_000;
        let node = 1 + i % 7;
        let term = 1 + i / 7;
        t.push(send(at, node, 1 + (node % 7), "Vote", term));
        t.push(send(at + 10, node, 1 + (node % 7), "Append", term));
        t.push(line(at + 20, &format!("n{node}"), "propose", "v -> Ok(())"));
        if i % 50 == 0 {
            t.push(line(at + 30, "--", "fault", "isolate 3"));
            t.push(line(at + 40, &format!("n{node}"), "crash", "scheduled"));
            t.push(start(at + 50, node, term));
        }
        if i % 50 == 25 {
            t.push(line(at + 30, "--", "heal", ""));
        }
    }
    assert!(t.len() > 180_000);
    let html = render_html(&t, FAILED_REPORT);
    assert!(
        html.len() < 2_000_000,
        "{} bytes for {} events",
        html.len(),
        t.len()
    );
}

/// The CLI runs a real failing seed in a child process and writes the page.
#[test]
fn cli_writes_a_timeline_of_a_failing_run() {
    let (opts, report) = (0..1000)
        .map(|seed| RunOptions::new(seed).with_bug("ack-before-sync"))
        .map(|opts| {
            let report = run("register", &opts).unwrap();
            (opts, report)
        })
        .find(|(_, report)| report.result.is_err())
        .expect("the simulator catches ack-before-sync within 1000 seeds");
    let path = std::env::temp_dir().join(format!("ryu-timeline-{}.html", std::process::id()));
    let out = super::binary()
        .args(["timeline", "--scenario", "register", "--seed"])
        .arg(opts.seed.to_string())
        .args(["--bug", "ack-before-sync", "--out"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let html = read_and_remove(&path);
    let violation = &report.result.as_ref().unwrap_err().message;
    assert!(html.contains("class=\"failure\""));
    assert!(html.contains(&format!("fingerprint={:016x}", report.fingerprint)));
    // The violation is on the page (HTML-escaped).
    let escaped = violation
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    assert!(html.contains(&escaped), "{violation}");
    assert!(html.contains("class=\"mk-fault\"") || html.contains("class=\"down\""));
}

#[allow(clippy::disallowed_methods)] // the test reads back the file the CLI wrote
fn read_and_remove(path: &std::path::Path) -> String {
    let html = std::fs::read_to_string(path).unwrap();
    std::fs::remove_file(path).unwrap();
    html
}
