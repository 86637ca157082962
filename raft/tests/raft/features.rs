//! Feature tests beyond the paper's figures: restart, flow control, snapshots,
//! learners, reads and planted-bug switches.

use ryu_raft::{ConfChange, ConfChangeKind, Config, Error, NodeId, Role, Storage};

use crate::cluster::Cluster;

/// Figure 2 persistence: a node restarted from its storage keeps term, vote, log
/// and commit, re-applies committed entries after its snapshot, and rejoins.
#[test]
fn restart_recovers_durable_state() {
    let mut c = Cluster::with_voters(3, |_| {});
    c.elect(1);
    for v in ["a", "b", "c"] {
        c.node_mut(1).raw.propose(v.as_bytes().to_vec()).unwrap();
    }
    c.stabilize();
    c.node_mut(2).compact(2);
    let before = c.node(2).raw.hard_state();
    c.restart(2);
    assert_eq!(c.node(2).raw.hard_state(), before);
    c.stabilize();
    let want: Vec<Vec<u8>> = ["a", "b", "c"]
        .iter()
        .map(|v| v.as_bytes().to_vec())
        .collect();
    assert_eq!(
        c.node(2).state,
        want,
        "state rebuilt from snapshot plus re-applied entries"
    );
    c.node_mut(1).raw.propose(b"d".to_vec()).unwrap();
    c.stabilize();
    assert_eq!(c.node(2).state.len(), 4);
}

/// A single-voter cluster commits on its own, but only once its entry is durable.
#[test]
fn single_node_commits_after_persisting() {
    let mut c = Cluster::with_voters(1, |_| {});
    c.elect(1);
    let index = c.node_mut(1).raw.propose(b"solo".to_vec()).unwrap();
    let rd = c.process_ready(&[1]);
    assert_eq!(rd[0].1.entries.len(), 1);
    assert!(
        rd[0].1.committed_entries.is_empty(),
        "not committed before it is durable"
    );
    c.stabilize();
    assert_eq!(c.node(1).raw.hard_state().commit, index);
    assert_eq!(c.node(1).state, vec![b"solo".to_vec()]);
}

/// Thesis §4.2.1: learners receive the log but are never counted. With voters 1,
/// 2, 3 and learners 4, 5, an entry acknowledged by the leader and both learners
/// is not committed.
#[test]
fn learners_do_not_count_toward_commit() {
    let mut c = learner_cluster(|_| {});
    c.elect(1);
    c.partition(&[1, 4, 5], &[2, 3]);
    c.node_mut(1).raw.propose(b"x".to_vec()).unwrap();
    c.stabilize();
    let learner_has = c.node(4).raw.storage().last_index().unwrap();
    assert_eq!(learner_has, c.node(1).raw.storage().last_index().unwrap());
    assert_eq!(
        c.node(1).raw.hard_state().commit,
        1,
        "only the no-op is committed"
    );
    // Learners never campaign.
    for _ in 0..50 {
        c.node_mut(4).raw.tick();
    }
    c.stabilize();
    assert_eq!(c.node(4).raw.soft_state().role, Role::Follower);
}

fn learner_cluster(tweak: impl Fn(&mut Config)) -> Cluster {
    let mut cs = ryu_raft::ConfState::with_voters([1, 2, 3]);
    cs.learners = [4, 5].into_iter().map(NodeId).collect();
    let mut c = Cluster::new();
    for id in 1..=5 {
        let mut cfg = Config::new(id);
        tweak(&mut cfg);
        c.add_node(cfg, cs.clone());
    }
    c
}

/// The planted bug CountLearnersInQuorum commits the entry of the previous test.
#[cfg(feature = "planted-bugs")]
#[test]
fn planted_count_learners_in_quorum() {
    let mut c =
        learner_cluster(|cfg| cfg.planted_bug = Some(ryu_raft::PlantedBug::CountLearnersInQuorum));
    c.elect(1);
    c.partition(&[1, 4, 5], &[2, 3]);
    c.node_mut(1).raw.propose(b"x".to_vec()).unwrap();
    c.stabilize();
    assert_eq!(
        c.node(1).raw.hard_state().commit,
        2,
        "committed without a voter majority"
    );
}

/// Thesis §4.1: a new leader refuses a membership change until its no-op is
/// applied; the planted bug ConfChangeBeforeNoopCommitted accepts it at once.
#[test]
fn conf_change_waits_for_noop() {
    let mut c = Cluster::with_voters(3, |_| {});
    c.node_mut(1).raw.campaign();
    // Run the election but keep the no-op from being acknowledged.
    c.stabilize_where(|m| !matches!(m.body, ryu_raft::MessageBody::Append { .. }));
    assert_eq!(c.leader(), Some(1));
    let cc = ConfChange::single(ConfChangeKind::Remove, 3);
    assert!(matches!(
        c.node_mut(1).raw.propose_conf_change(&cc),
        Err(Error::ConfChangePending { .. })
    ));
    c.node_mut(1).raw.tick();
    c.stabilize();
    assert!(c.node_mut(1).raw.propose_conf_change(&cc).is_ok());
}

#[cfg(feature = "planted-bugs")]
#[test]
fn planted_conf_change_before_noop() {
    let bug = ryu_raft::PlantedBug::ConfChangeBeforeNoopCommitted;
    let mut c = Cluster::with_voters(3, |cfg| cfg.planted_bug = Some(bug));
    c.node_mut(1).raw.campaign();
    c.stabilize_where(|m| !matches!(m.body, ryu_raft::MessageBody::Append { .. }));
    let cc = ConfChange::single(ConfChangeKind::Remove, 3);
    assert!(
        c.node_mut(1).raw.propose_conf_change(&cc).is_ok(),
        "the bug skips the no-op rule"
    );
}

/// Thesis §6.4: a ReadIndex on a new leader waits for its first commit; the
/// planted bug ReadIndexBeforeCommitInTerm answers at once with a stale index.
#[test]
fn read_index_waits_for_commit_in_term() {
    let mut c = Cluster::with_voters(3, |cfg| cfg.pre_vote = false);
    c.node_mut(1).raw.campaign();
    c.stabilize_where(|m| !matches!(m.body, ryu_raft::MessageBody::Append { .. }));
    c.node_mut(1).raw.read_index(b"r".to_vec()).unwrap();
    c.stabilize_where(|m| !matches!(m.body, ryu_raft::MessageBody::Append { .. }));
    assert!(
        c.node(1).read_states.is_empty(),
        "no read before the no-op commits"
    );
    c.node_mut(1).raw.tick();
    c.stabilize();
    let rs = &c.node(1).read_states;
    assert_eq!(rs.len(), 1);
    assert_eq!(rs[0].index, 1, "served at the no-op's index");
}

/// Flow control (thesis §10.2.1 pipelining): with `max_inflight_msgs = 1`, the
/// leader sends one append and waits; a lost append is retried after a heartbeat.
#[test]
fn inflight_cap_pauses_and_heartbeat_resumes() {
    let mut c = Cluster::with_voters(2, |cfg| cfg.max_inflight_msgs = 1);
    c.elect(1);
    c.node_mut(1).raw.propose(b"a".to_vec()).unwrap();
    c.node_mut(1).raw.propose(b"b".to_vec()).unwrap();
    c.process_ready(&[1]);
    let appends = c
        .queue
        .iter()
        .filter(|m| matches!(m.body, ryu_raft::MessageBody::Append { .. }))
        .count();
    assert_eq!(appends, 1, "one append in flight");
    c.queue.clear(); // Lost.
    c.node_mut(1).raw.tick();
    c.stabilize();
    assert_eq!(c.node(2).state.len(), 2, "recovered after the heartbeat");
}

/// Thesis §3.10: a transfer to a lagging target first catches it up, then sends
/// TimeoutNow; the target wins even though followers are within their lease.
#[test]
fn transfer_catches_up_lagging_target() {
    let mut c = Cluster::with_voters(3, |_| {});
    c.elect(1);
    c.isolate(3);
    for v in ["a", "b"] {
        c.node_mut(1).raw.propose(v.as_bytes().to_vec()).unwrap();
    }
    c.stabilize();
    c.heal();
    c.node_mut(1).raw.transfer_leader(NodeId(3)).unwrap();
    c.stabilize();
    assert_eq!(c.leader(), Some(3));
    assert_eq!(c.node(3).state.len(), 2);
}

/// Learners catch up from a snapshot when the leader compacted what they need,
/// and can then be promoted.
#[test]
fn learner_joins_from_snapshot_and_is_promoted() {
    let mut c = Cluster::with_voters(3, |cfg| cfg.max_snapshot_chunk_bytes = 5);
    c.elect(1);
    for v in ["a", "b", "c", "d"] {
        c.node_mut(1).raw.propose(v.as_bytes().to_vec()).unwrap();
    }
    c.stabilize();
    c.node_mut(1).compact(5);
    let mut cfg = Config::new(4);
    cfg.max_snapshot_chunk_bytes = 5;
    c.add_node(cfg, ryu_raft::ConfState::default());
    let cc = ConfChange::single(ConfChangeKind::AddLearner, 4);
    c.node_mut(1).raw.propose_conf_change(&cc).unwrap();
    c.stabilize();
    assert_eq!(c.node(4).state.len(), 4, "state machine from the snapshot");
    assert!(
        c.node(4)
            .raw
            .storage()
            .conf_state()
            .learners
            .contains(&NodeId(4))
    );
    let cc = ConfChange::single(ConfChangeKind::AddVoter, 4);
    c.node_mut(1).raw.propose_conf_change(&cc).unwrap();
    c.stabilize();
    assert!(
        c.node(4)
            .raw
            .storage()
            .conf_state()
            .voters
            .contains(&NodeId(4))
    );
    assert!(c.node(1).raw.raft().tracker.is_voter(NodeId(4)));
}

/// Every invalid configuration is rejected by `Config::validate`.
#[test]
fn config_validation() {
    let storage = || ryu_raft::MemStorage::new(ryu_raft::ConfState::with_voters([1]));
    let rng = || <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
    let mut bad = Config::new(1);
    bad.election_tick = 1;
    assert!(matches!(
        ryu_raft::RawNode::new(&bad, storage(), rng()),
        Err(Error::InvalidConfig(_))
    ));
    let mut bad = Config::new(1);
    bad.check_quorum = false;
    bad.lease_read = Some(ryu_raft::LeaseRead {
        max_clock_drift_ticks: 1,
    });
    assert!(matches!(
        ryu_raft::RawNode::new(&bad, storage(), rng()),
        Err(Error::InvalidConfig(_))
    ));
    assert!(ryu_raft::RawNode::new(&Config::new(1), storage(), rng()).is_ok());
}

/// Thesis §5.3 (chunked InstallSnapshot): a follower that restarts in the middle
/// of a transfer tells the core what it staged durably, and the leader resumes
/// from that offset rather than from zero.
#[test]
fn snapshot_transfer_resumes_after_follower_restart() {
    let mut c = Cluster::with_voters(3, |cfg| cfg.max_snapshot_chunk_bytes = 4);
    c.elect(1);
    c.isolate(3);
    for v in ["aaaa", "bbbb", "cccc"] {
        c.node_mut(1).raw.propose(v.as_bytes().to_vec()).unwrap();
    }
    c.stabilize();
    c.node_mut(1).compact(4);
    c.heal();
    c.node_mut(1).raw.tick();
    // Run until node 3 staged two chunks, then crash it.
    for _ in 0..100 {
        c.process_ready(&c.ids());
        c.deliver(&c.ids());
        if c.node(3).staged.as_ref().is_some_and(|s| s.data.len() >= 8) {
            break;
        }
    }
    assert_eq!(c.node(3).staged.as_ref().map(|s| s.data.len()), Some(8));
    c.restart(3);
    c.queue.clear();
    // Three heartbeat rounds without progress: the leader offers again.
    let mut offsets = Vec::new();
    for _ in 0..3 {
        c.node_mut(1).raw.tick();
    }
    for _ in 0..100 {
        c.process_ready(&c.ids());
        for m in &c.queue {
            if let ryu_raft::MessageBody::SnapshotChunk(ch) = &m.body
                && !ch.data.is_empty()
            {
                offsets.push(ch.offset);
            }
        }
        c.deliver(&c.ids());
    }
    assert_eq!(
        offsets.first(),
        Some(&8),
        "resumed at the staged offset: {offsets:?}"
    );
    let want: Vec<Vec<u8>> = ["aaaa", "bbbb", "cccc"]
        .iter()
        .map(|v| v.as_bytes().to_vec())
        .collect();
    assert_eq!(c.node(3).state, want);
}

/// Thesis §6.4.1: a lease read relies on the followers that acknowledged a
/// heartbeat refusing other candidates for an election timeout. A follower that
/// restarts forgets it heard from the leader, so it must keep refusing votes for
/// an election timeout after starting, or a new leader could commit writes the
/// old one's lease reads miss.
#[test]
fn restarted_follower_keeps_the_lease() {
    let lease = Some(ryu_raft::LeaseRead {
        max_clock_drift_ticks: 1,
    });
    let mut c = Cluster::with_voters(3, |cfg| cfg.lease_read = lease);
    c.elect(1);
    c.node_mut(1).raw.tick();
    c.stabilize(); // A quorum acknowledged a heartbeat: the lease runs.
    c.isolate(1);
    c.restart(2);
    c.restart(3);
    c.node_mut(2).raw.campaign();
    c.stabilize();
    assert_eq!(
        c.node(2).raw.soft_state().role,
        Role::PreCandidate,
        "3 refuses: {:?}",
        c.leader()
    );
    c.node_mut(1).raw.read_index(b"lease".to_vec()).unwrap();
    c.process_ready(&[1]);
    assert_eq!(c.node(1).read_states.len(), 1, "served from the lease");
    // Once an election timeout has passed, the followers elect a new leader.
    for _ in 0..100 {
        if c.leader().is_some_and(|l| l != 1) {
            return;
        }
        c.node_mut(2).raw.tick();
        c.node_mut(3).raw.tick();
        c.stabilize();
    }
    panic!("no new leader after the guard expired");
}
