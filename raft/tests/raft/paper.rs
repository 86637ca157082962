//! Scenarios from the Raft paper ("In Search of an Understandable Consensus
//! Algorithm", extended version), each citing the section it checks.

use ryu_raft::{ConfState, Config, Entry, EntryKind, MessageBody, Role};

use crate::cluster::{Cluster, node_with_log};

fn config(id: u64) -> Config {
    let mut c = Config::new(id);
    c.pre_vote = false;
    c.check_quorum = false;
    c
}

fn durable_log(c: &Cluster, id: u64) -> Vec<Entry> {
    c.node(id).raw.storage().all_entries().to_vec()
}

fn terms(c: &Cluster, id: u64) -> Vec<u64> {
    durable_log(c, id).iter().map(|e| e.term).collect()
}

/// §5.3, Figure 7: whatever a follower's log looks like when a leader comes to
/// power (missing entries (a, b), extra uncommitted entries (c, d), or both (e,
/// f)), the consistency check and backtracking bring it to the leader's log.
#[test]
fn figure7_leader_repairs_every_follower_log() {
    let leader_log = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
    let followers: [(&str, &[u64]); 6] = [
        ("a", &[1, 1, 1, 4, 4, 5, 5, 6, 6]),
        ("b", &[1, 1, 1, 4]),
        ("c", &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6]),
        ("d", &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7]),
        ("e", &[1, 1, 1, 4, 4, 4, 4]),
        ("f", &[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3]),
    ];
    for (case, log) in followers {
        let cs = ConfState::with_voters([1, 2, 3]);
        let mut c = Cluster::new();
        // Node 3 shares the leader's log and votes for it; node 2 is the case.
        c.nodes
            .insert(1, node_with_log(config(1), cs.clone(), &leader_log, 7));
        c.nodes
            .insert(2, node_with_log(config(2), cs.clone(), log, 7));
        c.nodes
            .insert(3, node_with_log(config(3), cs, &leader_log, 7));
        c.node_mut(1).raw.campaign();
        c.stabilize();
        assert_eq!(c.leader(), Some(1), "case {case}: node 1 leads term 8");
        assert_eq!(c.node(1).raw.hard_state().term, 8);
        let mut want: Vec<u64> = leader_log.to_vec();
        want.push(8); // The no-op of term 8.
        assert_eq!(terms(&c, 2), want, "case {case}: follower log repaired");
        assert_eq!(
            durable_log(&c, 2),
            durable_log(&c, 1),
            "case {case}: identical entries"
        );
        assert_eq!(
            c.node(2).raw.hard_state().commit,
            11,
            "case {case}: all committed"
        );
    }
}

/// Builds Figure 8 (c): S1 leads term 4 with log [1, 2, 4(no-op)]; S1 replicates
/// entry 2 (term 2) to S2 and S3, a majority, but not yet its no-op, while S5
/// holds a conflicting entry of term 3.
fn figure8_c(tweak: impl Fn(&mut Config)) -> Cluster {
    let cs = ConfState::with_voters(1..=5);
    let logs: [&[u64]; 5] = [&[1, 2], &[1], &[1], &[1], &[1, 3]];
    let mut c = Cluster::new();
    for (i, log) in logs.iter().enumerate() {
        let id = i as u64 + 1;
        let mut cfg = config(id);
        // One entry per append, so entry 2 can travel without the no-op.
        cfg.max_size_per_msg_bytes = 1;
        tweak(&mut cfg);
        c.nodes.insert(id, node_with_log(cfg, cs.clone(), log, 3));
    }
    c.isolate(5);
    c.node_mut(1).raw.campaign();
    // Elect S1 (S2, S3, S4 vote); no append is delivered yet.
    c.stabilize_where(|m| !matches!(m.body, MessageBody::Append { .. }));
    assert_eq!(c.leader(), Some(1));
    assert_eq!(c.node(1).raw.hard_state().term, 4);
    // Only S1, S2 and S3 talk: a heartbeat round restarts probing, S2 and S3
    // reject the probe at index 2, receive entry 2 alone, and the no-op after it
    // is lost.
    c.node_mut(1).raw.tick();
    for _ in 0..20 {
        c.process_ready(&[1, 2, 3]);
        let has_2 = [
            false,
            false,
            terms(&c, 2).len() >= 2,
            terms(&c, 3).len() >= 2,
        ];
        c.drop_where(|m| {
            let between = matches!((m.from.0, m.to.0), (1, 2) | (2, 1) | (1, 3) | (3, 1));
            let noop = matches!(&m.body, MessageBody::Append { entries, .. }
                if entries.iter().any(|e| e.kind == EntryKind::Noop));
            !between || (noop && has_2[m.to.0 as usize])
        });
        c.deliver_where(|_| true);
    }
    assert_eq!(terms(&c, 2), vec![1, 2], "S2 holds entry 2 of term 2");
    assert_eq!(terms(&c, 3), vec![1, 2], "S3 holds entry 2 of term 2");
    c
}

/// Figure 8 (d): S1 crashes (S2 too, so it cannot vote), and S5 is elected in
/// term 5 with the votes of S3 and S4, overwriting entry 2 on them.
fn figure8_d(c: &mut Cluster) {
    c.heal();
    c.isolate(1);
    c.isolate(2);
    // S5's first campaign is for term 4, where S3 and S4 already voted for S1;
    // its second, for term 5, wins.
    c.node_mut(5).raw.campaign();
    c.stabilize();
    c.node_mut(5).raw.campaign();
    c.stabilize();
    assert_eq!(c.leader(), Some(5));
    assert_eq!(c.node(5).raw.hard_state().term, 5);
}

/// §5.4.2, Figure 8 (c)-(d): an entry of an earlier term stored on a majority is
/// not committed by counting replicas. If S1 committed entry 2 here, S5 could
/// still win term 5 (votes of S3, S4) and overwrite it, as (d) shows.
#[test]
fn figure8_previous_term_entry_is_not_committed_by_counting() {
    let mut c = figure8_c(|_| {});
    // S1, S2 and S3 hold entry 2 durably and S1 knows it: a majority of five.
    let matched =
        |id: u64| c.node(1).raw.raft().tracker.progress[&ryu_raft::NodeId(id)].match_index;
    assert_eq!((matched(1), matched(2), matched(3)), (3, 2, 2));
    assert!(
        c.node(1).raw.hard_state().commit < 2,
        "entry 2 must not be committed"
    );
    assert!(c.node(1).applied.iter().all(|e| e.index < 2));

    figure8_d(&mut c);
    assert_eq!(
        terms(&c, 3),
        vec![1, 3, 5],
        "entry 2 of term 2 replaced on S3"
    );

    // Once S1 commits an entry of its own term, entry 2 is committed with it and
    // is then safe: the fate Figure 8 (e) describes. Here S5 won instead, which is
    // allowed precisely because nothing beyond index 1 was committed.
    assert_eq!(c.node(5).raw.hard_state().commit, 3);
}

/// The planted bug CommitPreviousTermByCounting commits entry 2 in Figure 8 (c),
/// and (d) then overwrites a committed entry: the violation the rule prevents.
#[cfg(feature = "planted-bugs")]
#[test]
fn figure8_planted_bug_commits_by_counting() {
    let bug = ryu_raft::PlantedBug::CommitPreviousTermByCounting;
    let mut c = figure8_c(|cfg| cfg.planted_bug = Some(bug));
    assert_eq!(
        c.node(1).raw.hard_state().commit,
        2,
        "the bug commits entry 2 of term 2"
    );
    let s1_applied = c
        .node(1)
        .applied
        .iter()
        .find(|e| e.index == 2)
        .cloned()
        .expect("S1 applied 2");
    assert_eq!(s1_applied.term, 2);
    figure8_d(&mut c);
    let s5_applied = c
        .node(5)
        .applied
        .iter()
        .find(|e| e.index == 2)
        .cloned()
        .expect("S5 applied 2");
    assert_eq!(
        s5_applied.term, 3,
        "state machine safety violated: two entries applied at index 2"
    );
}

/// §5.4.1: a voter denies its vote to a candidate whose log is less up-to-date:
/// a lower last term, or the same last term and a shorter log.
#[test]
fn election_restriction_denies_stale_candidates() {
    let cases: [(&[u64], &[u64], bool); 5] = [
        (&[1, 1], &[1, 1, 1], false), // shorter, same last term
        (&[1, 1, 1], &[1, 2], false), // longer, but lower last term
        (&[1, 2], &[1, 1, 1], true),  // higher last term wins despite length
        (&[1, 1], &[1, 1], true),     // equal logs
        (&[], &[], true),             // empty logs
    ];
    for (candidate, voter, granted) in cases {
        let cs = ConfState::with_voters([1, 2]);
        let mut c = Cluster::new();
        c.nodes
            .insert(1, node_with_log(config(1), cs.clone(), candidate, 2));
        c.nodes.insert(2, node_with_log(config(2), cs, voter, 2));
        c.node_mut(1).raw.campaign();
        c.stabilize();
        let won = c.node(1).raw.soft_state().role == Role::Leader;
        assert_eq!(won, granted, "candidate {candidate:?} vs voter {voter:?}");
    }
}

/// §5.2: each server votes for at most one candidate in a term, and the vote
/// survives a restart (Figure 2: votedFor is persistent state).
#[test]
fn one_vote_per_term_survives_restart() {
    let mut c = Cluster::with_voters(3, |cfg| {
        cfg.pre_vote = false;
        cfg.check_quorum = false;
    });
    c.isolate(3);
    c.node_mut(1).raw.campaign();
    c.stabilize();
    assert_eq!(c.leader(), Some(1));
    c.restart(2);
    assert_eq!(c.node(2).raw.hard_state().vote, Some(ryu_raft::NodeId(1)));
    // Node 3 campaigns in the same term 1 and must not get node 2's vote.
    c.heal();
    c.isolate(1);
    c.node_mut(3).raw.campaign();
    c.process_ready(&[3]);
    let vote_term = c.node(3).raw.hard_state().term;
    assert_eq!(vote_term, 1, "node 3 campaigns in term 1 too");
    c.deliver_where(|m| m.to.0 == 2);
    c.process_ready(&[2]);
    let granted = c
        .queue
        .iter()
        .any(|m| m.to.0 == 3 && m.body == MessageBody::VoteResp { reject: false });
    assert!(!granted, "node 2 already voted in term 1");
}

/// §5.1: a message from an older term is ignored (here a stale leader's append),
/// and the stale leader learns the newer term and steps down.
#[test]
fn stale_leader_steps_down_on_newer_term() {
    let mut c = Cluster::with_voters(3, |cfg| {
        cfg.pre_vote = false;
        cfg.check_quorum = false;
    });
    c.elect(1);
    c.isolate(1);
    c.node_mut(2).raw.campaign();
    c.stabilize();
    assert_eq!(c.leader(), Some(2));
    c.heal();
    c.node_mut(1)
        .raw
        .propose(b"stale".to_vec())
        .expect("still believes it leads");
    c.stabilize();
    assert_eq!(
        c.node(1).raw.soft_state().role,
        Role::Leader,
        "ignored, not yet told"
    );
    c.node_mut(2).raw.tick();
    c.stabilize();
    assert_eq!(c.node(1).raw.soft_state().role, Role::Follower);
    assert_eq!(c.node(1).raw.hard_state().term, 2);
    assert_eq!(
        durable_log(&c, 1),
        durable_log(&c, 2),
        "stale entry replaced"
    );
    assert!(
        !c.node(1).state.contains(&b"stale".to_vec()),
        "stale proposal never applied"
    );
}

/// §5.3 and Figure 2, AppendEntries receiver step 2: a follower rejects an append
/// whose previous entry it lacks, and hints where to retry.
#[test]
fn follower_rejects_append_without_matching_prev() {
    let cs = ConfState::with_voters([1, 2]);
    let mut c = Cluster::new();
    c.nodes
        .insert(1, node_with_log(config(1), cs.clone(), &[1, 1, 2, 2, 2], 2));
    c.nodes
        .insert(2, node_with_log(config(2), cs, &[1, 1, 1, 1], 2));
    c.node_mut(1).raw.campaign();
    c.process_ready(&[1]);
    c.deliver_where(|m| m.to.0 == 2);
    c.process_ready(&[2]);
    c.deliver_where(|m| m.to.0 == 1);
    c.process_ready(&[1]);
    c.deliver_where(|m| m.to.0 == 2);
    c.process_ready(&[2]);
    let hint = c.queue.iter().find_map(|m| match &m.body {
        MessageBody::AppendResp {
            index,
            reject: Some(h),
        } => Some((*index, *h)),
        _ => None,
    });
    let (rejected, hint) = hint.expect("a rejection");
    assert_eq!(
        rejected, 5,
        "the probe at the leader's last index is rejected"
    );
    assert_eq!(
        (hint.index, hint.term),
        (4, 1),
        "hint: last entry 4 of term 1 may match"
    );
    c.stabilize();
    assert_eq!(terms(&c, 2), vec![1, 1, 2, 2, 2, 3]);
}
