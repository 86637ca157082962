//! Scripted interaction tests in the spirit of etcd-io/raft's `testdata`.
//!
//! A script in `testdata/*.txt` is a sequence of blocks:
//!
//! ```text
//! # comments are kept
//! > command arg arg
//! expected output, one or more lines, ended by a blank line
//! ```
//!
//! The driver runs each command against a `Cluster` and compares its output with
//! the expected text. `REWRITE=1 cargo test -p ryu-raft` rewrites the files with the
//! actual output instead (review the diff before committing it).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use ryu_raft::{
    ConfChange, ConfChangeKind, ConfChangeSingle, ConfChangeTransition, ConfState, Config,
    LeaseRead, Message, NodeId, Ready, Storage,
};

use crate::cluster::Cluster;

struct Block {
    comments: Vec<String>,
    command: String,
    expected: Vec<String>,
}

fn parse(text: &str) -> (Vec<Block>, Vec<String>) {
    let mut blocks = Vec::new();
    let mut comments = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(cmd) = line.strip_prefix("> ") {
            let mut expected = Vec::new();
            while let Some(next) = lines.peek() {
                if next.trim().is_empty() {
                    break;
                }
                expected.push(lines.next().unwrap().to_string());
            }
            let comments = std::mem::take(&mut comments);
            blocks.push(Block {
                comments,
                command: cmd.trim().to_string(),
                expected,
            });
        } else if !line.trim().is_empty() {
            comments.push(line.to_string());
        }
    }
    (blocks, comments)
}

fn render(blocks: &[Block], outputs: &[String], trailing: &[String]) -> String {
    let mut out = String::new();
    for (b, actual) in blocks.iter().zip(outputs) {
        for c in &b.comments {
            writeln!(out, "{c}").unwrap();
        }
        writeln!(out, "> {}", b.command).unwrap();
        writeln!(out, "{}", actual.trim_end()).unwrap();
        writeln!(out).unwrap();
    }
    for c in trailing {
        writeln!(out, "{c}").unwrap();
    }
    out
}

// The driver's only I/O: reading and rewriting its own scripts.
#[allow(clippy::disallowed_methods)]
fn run_file(path: &Path) {
    let text = std::fs::read_to_string(path).expect("read script");
    let (blocks, trailing) = parse(&text);
    let mut driver = Driver {
        cluster: Cluster::new(),
    };
    let mut outputs = Vec::new();
    let rewrite = std::env::var("REWRITE").is_ok_and(|v| v == "1");
    for b in &blocks {
        let actual = driver.run(&b.command);
        let actual = if actual.trim().is_empty() {
            "ok".to_string()
        } else {
            actual
        };
        if !rewrite {
            let want = b.expected.join("\n");
            assert_eq!(
                actual.trim_end(),
                want.trim_end(),
                "\n{}: output of `{}` differs (REWRITE=1 to accept)",
                path.display(),
                b.command
            );
        }
        outputs.push(actual);
    }
    if rewrite {
        std::fs::write(path, render(&blocks, &outputs, &trailing)).expect("rewrite script");
    }
}

#[allow(clippy::disallowed_methods)]
fn scripts() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/raft/testdata");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("testdata dir")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    files
}

/// One test per script, so a failure names its script.
macro_rules! scripts {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/raft/testdata");
                run_file(&dir.join(concat!(stringify!($name), ".txt")));
            }
        )*
        /// Every script in testdata has a test above.
        #[test]
        fn every_script_is_run() {
            let known = [$(concat!(stringify!($name), ".txt")),*];
            for f in scripts() {
                let name = f.file_name().unwrap().to_string_lossy().into_owned();
                assert!(known.contains(&name.as_str()), "script {name} has no test");
            }
        }
    };
}

scripts!(
    check_quorum,
    conflict,
    election,
    lease,
    membership,
    prevote,
    reads,
    replication,
    restart,
    snapshot,
    snapshot_resume,
    transfer,
);

struct Driver {
    cluster: Cluster,
}

fn num(s: &str) -> u64 {
    s.parse().unwrap_or_else(|_| panic!("not a number: {s}"))
}

fn ids_of(args: &[&str]) -> Vec<u64> {
    args.iter().map(|a| num(a)).collect()
}

impl Driver {
    fn run(&mut self, command: &str) -> String {
        let parts: Vec<&str> = command.split_whitespace().collect();
        let (cmd, args) = (parts[0], &parts[1..]);
        let mut out = String::new();
        if !self.run_node_command(cmd, args, &mut out)
            && !self.run_network_command(cmd, args, &mut out)
            && !self.run_inspect_command(cmd, args, &mut out)
        {
            panic!("unknown command {cmd}");
        }
        out
    }

    /// Commands that act on one node: clock, proposals, reads, transfers.
    fn run_node_command(&mut self, cmd: &str, args: &[&str], out: &mut String) -> bool {
        let id = || num(args[0]);
        let count = |i: usize| args.get(i).map_or(1, |x| num(x));
        match cmd {
            "add-nodes" => self.add_nodes(args, out),
            "campaign" => self.cluster.node_mut(id()).raw.campaign(),
            "tick" => (0..count(1)).for_each(|_| self.cluster.node_mut(id()).raw.tick()),
            "tick-all" => {
                for _ in 0..args.first().map_or(1, |x| num(x)) {
                    self.cluster
                        .ids()
                        .iter()
                        .for_each(|i| self.cluster.node_mut(*i).raw.tick());
                }
            }
            "propose" => {
                let r = self
                    .cluster
                    .node_mut(id())
                    .raw
                    .propose(args[1].as_bytes().to_vec());
                result_line(out, r.map(|i| format!("index {i}")));
            }
            "propose-conf-change" => self.propose_conf_change(args, out),
            "read-index" => {
                let r = self
                    .cluster
                    .node_mut(id())
                    .raw
                    .read_index(args[1].as_bytes().to_vec());
                result_line(out, r.map(|_| String::new()));
            }
            "transfer-leader" => {
                let r = self
                    .cluster
                    .node_mut(id())
                    .raw
                    .transfer_leader(NodeId(num(args[1])));
                result_line(out, r.map(|_| String::new()));
            }
            "restart" => self.cluster.restart(id()),
            "compact" => self.cluster.node_mut(id()).compact(num(args[1])),
            _ => return false,
        }
        true
    }

    /// Commands that move messages: Ready handling, delivery, partitions.
    fn run_network_command(&mut self, cmd: &str, args: &[&str], out: &mut String) -> bool {
        match cmd {
            "process-ready" => self.process_ready(args, out),
            "deliver-msgs" => self.deliver(args, out),
            "drop-msgs" => {
                let n = self.cluster.queue.len();
                self.cluster.queue.clear();
                writeln!(out, "dropped {n}").unwrap();
            }
            "stabilize" => self.stabilize(args, out),
            "partition" => {
                let split = args
                    .iter()
                    .position(|a| *a == "|")
                    .expect("partition a | b");
                self.cluster
                    .partition(&ids_of(&args[..split]), &ids_of(&args[split + 1..]));
            }
            "isolate" => self.cluster.isolate(num(args[0])),
            "heal" => self.cluster.heal(),
            _ => return false,
        }
        true
    }

    /// Commands that print state.
    fn run_inspect_command(&mut self, cmd: &str, args: &[&str], out: &mut String) -> bool {
        match cmd {
            "raft-state" => self.raft_state(out),
            "raft-log" => self.raft_log(num(args[0]), out),
            "status" => self.status(num(args[0]), out),
            "read-states" => {
                let node = self.cluster.node_mut(num(args[0]));
                for rs in std::mem::take(&mut node.read_states) {
                    let ctx = String::from_utf8_lossy(&rs.context);
                    writeln!(out, "index={} ctx={ctx}", rs.index).unwrap();
                }
            }
            "state-machine" => {
                let node = self.cluster.node(num(args[0]));
                let items: Vec<String> = node
                    .state
                    .iter()
                    .map(|d| String::from_utf8_lossy(d).into_owned())
                    .collect();
                writeln!(out, "applied={} [{}]", node.applied_index, items.join(" ")).unwrap();
            }
            _ => return false,
        }
        true
    }

    /// `add-nodes N [voters=1,2,3] [learners=4] [pre-vote=false] [check-quorum=false]
    /// [lease-drift=N] [max-inflight=N] [chunk-bytes=N] [max-msg-bytes=N]`
    fn add_nodes(&mut self, args: &[&str], out: &mut String) {
        let n = num(args[0]);
        let first = self.cluster.nodes.keys().last().map_or(1, |l| l + 1);
        let new_ids: Vec<u64> = (first..first + n).collect();
        let mut cs = ConfState::with_voters(new_ids.iter().copied());
        let mut tweaks: Vec<(&str, &str)> = Vec::new();
        for a in &args[1..] {
            let (k, v) = a.split_once('=').expect("key=value");
            match k {
                "voters" => cs.voters = list(v),
                "learners" => cs.learners = list(v),
                _ => tweaks.push((k, v)),
            }
        }
        for id in new_ids {
            let mut cfg = Config::new(id);
            cfg.election_tick = 10;
            cfg.heartbeat_tick = 1;
            for (k, v) in &tweaks {
                match *k {
                    "pre-vote" => cfg.pre_vote = *v == "true",
                    "check-quorum" => cfg.check_quorum = *v == "true",
                    "lease-drift" => {
                        cfg.lease_read = Some(LeaseRead {
                            max_clock_drift_ticks: num(v),
                        })
                    }
                    "max-inflight" => cfg.max_inflight_msgs = num(v) as usize,
                    "chunk-bytes" => cfg.max_snapshot_chunk_bytes = num(v),
                    "max-msg-bytes" => cfg.max_size_per_msg_bytes = num(v),
                    other => panic!("unknown option {other}"),
                }
            }
            self.cluster.add_node(cfg, cs.clone());
            writeln!(
                out,
                "{id}: added voters={:?} learners={:?}",
                ids(&cs.voters),
                ids(&cs.learners)
            )
            .unwrap();
        }
    }

    /// `propose-conf-change ID v4 l5 r2 [joint|explicit]`
    fn propose_conf_change(&mut self, args: &[&str], out: &mut String) {
        let mut cc = ConfChange::default();
        for a in &args[1..] {
            let (kind, rest) = a.split_at(1);
            let kind = match kind {
                "v" => ConfChangeKind::AddVoter,
                "l" => ConfChangeKind::AddLearner,
                "r" => ConfChangeKind::Remove,
                _ => {
                    cc.transition = match *a {
                        "joint" => ConfChangeTransition::JointImplicit,
                        "explicit" => ConfChangeTransition::JointExplicit,
                        "leave" => continue,
                        other => panic!("unknown change {other}"),
                    };
                    continue;
                }
            };
            cc.changes.push(ConfChangeSingle {
                kind,
                node: NodeId(num(rest)),
            });
        }
        let r = self
            .cluster
            .node_mut(num(args[0]))
            .raw
            .propose_conf_change(&cc);
        result_line(out, r.map(|i| format!("index {i}")));
    }

    fn target_ids(&self, args: &[&str]) -> Vec<u64> {
        if args.is_empty() {
            self.cluster.ids()
        } else {
            ids_of(args)
        }
    }

    fn process_ready(&mut self, args: &[&str], out: &mut String) {
        let ids = self.target_ids(args);
        for (id, rd) in self.cluster.process_ready(&ids) {
            describe_ready(out, id, &rd);
        }
    }

    fn deliver(&mut self, args: &[&str], out: &mut String) {
        let ids = self.target_ids(args);
        let (_, dropped) = self.cluster.deliver(&ids);
        for m in dropped {
            writeln!(out, "dropped: {m:?}").unwrap();
        }
    }

    /// Ready handling and delivery until quiet, printing every Ready.
    fn stabilize(&mut self, args: &[&str], out: &mut String) {
        let ids = self.target_ids(args);
        for _ in 0..1000 {
            let readies = self.cluster.process_ready(&ids);
            for (id, rd) in &readies {
                describe_ready(out, *id, rd);
            }
            let pending = self.cluster.queue.iter().any(|m| ids.contains(&m.to.0));
            if readies.is_empty() && !pending {
                return;
            }
            let (_, dropped) = self.cluster.deliver(&ids);
            for m in dropped {
                writeln!(out, "dropped: {m:?}").unwrap();
            }
        }
        panic!("did not stabilize");
    }

    fn raft_state(&self, out: &mut String) {
        for (id, node) in &self.cluster.nodes {
            let r = node.raw.raft();
            let cs = node.raw.storage().conf_state();
            writeln!(
                out,
                "{id}: {:?} term={} vote={} commit={} applied={} last={} voters={:?}{}{}",
                r.role,
                r.term,
                r.vote.map_or(0, |v| v.0),
                r.log.committed,
                r.log.applied,
                r.log.last_index(),
                ids(&cs.voters),
                if cs.voters_outgoing.is_empty() {
                    String::new()
                } else {
                    format!("&&{:?}", ids(&cs.voters_outgoing))
                },
                if cs.learners.is_empty() {
                    String::new()
                } else {
                    format!(" learners={:?}", ids(&cs.learners))
                },
            )
            .unwrap();
        }
    }

    fn raft_log(&self, id: u64, out: &mut String) {
        let s = self.cluster.node(id).raw.storage();
        let first = s.first_index().unwrap();
        if first > 1 {
            writeln!(out, "snapshot {}/{}", s.term(first - 1).unwrap(), first - 1).unwrap();
        }
        for e in s.all_entries() {
            writeln!(out, "{e:?}").unwrap();
        }
    }

    fn status(&self, id: u64, out: &mut String) {
        let r = self.cluster.node(id).raw.raft();
        for (pid, pr) in &r.tracker.progress {
            writeln!(
                out,
                "{pid}: {:?} match={} next={}{}{}",
                pr.state,
                pr.match_index,
                pr.next_index,
                if pr.is_learner { " learner" } else { "" },
                if pr.inflights.count() > 0 {
                    format!(" inflight={}", pr.inflights.count())
                } else {
                    String::new()
                },
            )
            .unwrap();
        }
    }
}

fn list(v: &str) -> std::collections::BTreeSet<NodeId> {
    v.split(',')
        .filter(|x| !x.is_empty())
        .map(|x| NodeId(num(x)))
        .collect()
}

fn ids(set: &std::collections::BTreeSet<NodeId>) -> Vec<u64> {
    set.iter().map(|n| n.0).collect()
}

fn result_line(out: &mut String, r: Result<String, ryu_raft::Error>) {
    match r {
        Ok(s) if s.is_empty() => {}
        Ok(s) => writeln!(out, "{s}").unwrap(),
        Err(e) => writeln!(out, "error: {e}").unwrap(),
    }
}

fn describe_ready(out: &mut String, id: u64, rd: &Ready) {
    writeln!(out, "{id} ready:").unwrap();
    if let Some(ss) = rd.soft_state {
        writeln!(
            out,
            "  {:?} leader={}",
            ss.role,
            ss.leader.map_or(0, |l| l.0)
        )
        .unwrap();
    }
    if let Some(hs) = rd.hard_state {
        writeln!(
            out,
            "  HardState term={} vote={} commit={}",
            hs.term,
            hs.vote.map_or(0, |v| v.0),
            hs.commit
        )
        .unwrap();
    }
    if !rd.entries.is_empty() {
        writeln!(out, "  Entries: {:?}", rd.entries).unwrap();
    }
    for c in &rd.received_chunks {
        writeln!(out, "  Received: {:?} from {}", c.chunk, c.from).unwrap();
    }
    if let Some(s) = &rd.snapshot {
        writeln!(
            out,
            "  Snapshot: {}/{} voters={:?}",
            s.term,
            s.index,
            ids(&s.conf_state.voters)
        )
        .unwrap();
    }
    if !rd.committed_entries.is_empty() {
        writeln!(out, "  Committed: {:?}", rd.committed_entries).unwrap();
    }
    for m in &rd.messages {
        writeln!(out, "  send {}", fmt_msg(m)).unwrap();
    }
    for m in &rd.persisted_messages {
        writeln!(out, "  send after persist {}", fmt_msg(m)).unwrap();
    }
    for rs in &rd.read_states {
        writeln!(
            out,
            "  ReadState index={} ctx={}",
            rs.index,
            String::from_utf8_lossy(&rs.context)
        )
        .unwrap();
    }
    for r in &rd.snapshot_requests {
        writeln!(
            out,
            "  SnapshotRequest to={} snap {}/{} offset={}",
            r.to, r.meta.term, r.meta.index, r.offset
        )
        .unwrap();
    }
}

fn fmt_msg(m: &Message) -> String {
    format!("{m:?}")
}
