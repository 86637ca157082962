//! The vocabulary of the protocol: ids, log entries, durable state, membership and
//! the messages nodes exchange. Plain data; no behaviour beyond small helpers.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A Raft term (§5.1): a logical clock that only ever increases on one node.
pub type Term = u64;

/// A position in the replicated log. Index 0 is the empty prefix: the first real
/// entry has index 1.
pub type Index = u64;

/// Identifies one member of the cluster. Id 0 is reserved for "nobody".
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What an entry means to the core. The payload of `Normal` entries is opaque; the
/// payload of `ConfChange` entries is an encoded [`ConfChange`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// Application data, opaque to Raft.
    Normal,
    /// An encoded [`ConfChange`]; the application passes it back through
    /// `RawNode::apply_conf_change` when it applies the entry.
    ConfChange,
    /// The empty entry a new leader appends at the start of its term (§8: it lets
    /// the leader learn which entries are committed, and gates ReadIndex).
    Noop,
}

/// One log entry.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub term: Term,
    pub index: Index,
    pub kind: EntryKind,
    pub data: Vec<u8>,
}

/// Fixed per-entry cost used for message and in-flight byte budgets, so that empty
/// entries still count for something.
pub const ENTRY_OVERHEAD_BYTES: u64 = 24;

impl Entry {
    /// Bytes this entry counts for in size budgets.
    pub fn size_bytes(&self) -> u64 {
        ENTRY_OVERHEAD_BYTES + self.data.len() as u64
    }
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} ", self.term, self.index)?;
        match self.kind {
            EntryKind::Normal => write!(f, "{}", String::from_utf8_lossy(&self.data)),
            EntryKind::Noop => write!(f, "noop"),
            EntryKind::ConfChange => match ConfChange::decode(&self.data) {
                Ok(cc) => write!(f, "conf({cc})"),
                Err(_) => write!(f, "conf(corrupted)"),
            },
        }
    }
}

/// The state that must be durable before any message that depends on it leaves the
/// node (Figure 2, "Persistent state on all servers"; commit is persisted too so a
/// restart need not re-learn it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HardState {
    pub term: Term,
    pub vote: Option<NodeId>,
    pub commit: Index,
}

/// Cluster membership as of some log index. During joint consensus (§6 of the Raft
/// paper, thesis §4.3) `voters_outgoing` is the old configuration and a decision
/// needs a majority of both.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ConfState {
    pub voters: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
    /// Voters of the outgoing configuration; empty unless joint.
    pub voters_outgoing: BTreeSet<NodeId>,
    /// Voters of the outgoing configuration that become learners when the joint
    /// configuration is left (a node cannot be voter and learner at once).
    pub learners_next: BTreeSet<NodeId>,
    /// Leave the joint configuration automatically once it is applied.
    pub auto_leave: bool,
}

impl ConfState {
    /// A configuration of plain voters.
    pub fn with_voters(voters: impl IntoIterator<Item = u64>) -> ConfState {
        ConfState {
            voters: voters.into_iter().map(NodeId).collect(),
            ..ConfState::default()
        }
    }

    pub fn is_joint(&self) -> bool {
        !self.voters_outgoing.is_empty()
    }
}

/// Identifies a snapshot: the state machine after applying every entry up to and
/// including `index` (whose term is `term`), with membership `conf_state`.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub index: Index,
    pub term: Term,
    pub conf_state: ConfState,
}

/// One change to membership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfChangeKind {
    AddVoter,
    AddLearner,
    Remove,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfChangeSingle {
    pub kind: ConfChangeKind,
    pub node: NodeId,
}

/// How a change of several voters moves through joint consensus.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ConfChangeTransition {
    /// One voter change: applied directly (one server at a time, thesis §4.1).
    /// Several: joint consensus, left automatically.
    #[default]
    Auto,
    /// Always joint consensus, left automatically once applied.
    JointImplicit,
    /// Always joint consensus; the application proposes the leave itself.
    JointExplicit,
}

/// A membership change proposal. An empty `changes` list means "leave the joint
/// configuration".
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ConfChange {
    pub transition: ConfChangeTransition,
    pub changes: Vec<ConfChangeSingle>,
}

impl ConfChange {
    pub fn leave_joint() -> ConfChange {
        ConfChange::default()
    }

    /// A single change (one server at a time unless combined).
    pub fn single(kind: ConfChangeKind, node: u64) -> ConfChange {
        ConfChange {
            transition: ConfChangeTransition::Auto,
            changes: vec![ConfChangeSingle {
                kind,
                node: NodeId(node),
            }],
        }
    }

    pub fn is_leave_joint(&self) -> bool {
        self.changes.is_empty()
    }

    /// Whether applying this change enters a joint configuration.
    pub fn enters_joint(&self) -> bool {
        !self.changes.is_empty()
            && (self.transition != ConfChangeTransition::Auto || self.changes.len() > 1)
    }
}

impl fmt::Display for ConfChange {
    /// Compact form used in logs and scripts: `v4 l5 r2`, then `joint` or
    /// `explicit` when the transition is forced, or `leave`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.changes.is_empty() {
            return write!(f, "leave");
        }
        let mut sep = "";
        for c in &self.changes {
            let k = match c.kind {
                ConfChangeKind::AddVoter => "v",
                ConfChangeKind::AddLearner => "l",
                ConfChangeKind::Remove => "r",
            };
            write!(f, "{sep}{k}{}", c.node)?;
            sep = " ";
        }
        match self.transition {
            ConfChangeTransition::Auto => Ok(()),
            ConfChangeTransition::JointImplicit => write!(f, " joint"),
            ConfChangeTransition::JointExplicit => write!(f, " explicit"),
        }
    }
}

/// A role of a node (Figure 4, plus the pre-candidate of thesis §9.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// Volatile state worth reporting to the application when it changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    pub leader: Option<NodeId>,
    pub role: Role,
}

/// A read request that has become safe: once the application has applied up to
/// `index`, it may serve the read identified by `context` (thesis §6.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadState {
    pub index: Index,
    pub context: Vec<u8>,
}

/// One piece of a streamed snapshot payload (§7, thesis §5.3). The payload is opaque
/// bytes produced and consumed by the application. A chunk with empty `data`, offset
/// 0 and `done == false` is an offer: the receiver answers with the offset it already
/// holds, so an interrupted transfer resumes where it stopped.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotChunk {
    pub meta: SnapshotMeta,
    pub offset: u64,
    pub data: Vec<u8>,
    pub done: bool,
}

impl fmt::Debug for SnapshotChunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "snap {}/{} off={} len={}{}",
            self.meta.term,
            self.meta.index,
            self.offset,
            self.data.len(),
            if self.done { " done" } else { "" }
        )
    }
}

/// A leader's request to its application: read the payload of snapshot `meta` from
/// `offset` (at most `max_bytes`) and hand it back through
/// `RawNode::send_snapshot_chunk`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotRequest {
    pub to: NodeId,
    pub meta: SnapshotMeta,
    pub offset: u64,
    pub max_bytes: u64,
}

/// A chunk a follower received, to be written durably by the application before
/// the messages acknowledging it are sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedChunk {
    pub from: NodeId,
    pub chunk: SnapshotChunk,
}

/// Why a follower rejected an append, so the leader can skip a whole conflicting
/// term in one round trip (§5.3, "fast backtracking"): the follower's entry at
/// `index` has `term`, and is the last one that could still match.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectHint {
    pub index: Index,
    pub term: Term,
}

/// One message between nodes. `term` is the sender's term (§5.1) except for
/// pre-votes, which carry the term the sender would campaign in.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    pub term: Term,
    pub body: MessageBody,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageBody {
    /// Thesis §9.6: would you vote for me? Changes no state on the receiver.
    PreVote {
        last_index: Index,
        last_term: Term,
    },
    PreVoteResp {
        reject: bool,
    },
    /// §5.2 RequestVote. `transfer` marks an election started by TimeoutNow, which
    /// followers honour even within a leader's lease (thesis §3.10).
    Vote {
        last_index: Index,
        last_term: Term,
        transfer: bool,
    },
    VoteResp {
        reject: bool,
    },
    /// §5.3 AppendEntries.
    Append {
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: Index,
    },
    /// On success `index` is the last index known to match the leader; on
    /// rejection it is the rejected `prev_index`.
    AppendResp {
        index: Index,
        reject: Option<RejectHint>,
    },
    /// Leader liveness and commit propagation. `context` confirms leadership for the
    /// ReadIndex batch it names; `sent_tick` dates the heartbeat for leases.
    Heartbeat {
        commit: Index,
        context: Vec<u8>,
        sent_tick: u64,
    },
    HeartbeatResp {
        context: Vec<u8>,
        sent_tick: u64,
    },
    SnapshotChunk(SnapshotChunk),
    /// The receiver holds the first `next_offset` bytes of snapshot (`index`,
    /// `term`) from this leader.
    SnapshotChunkResp {
        index: Index,
        term: Term,
        next_offset: u64,
    },
    /// Thesis §3.10: start an election now, the leader is handing over.
    TimeoutNow,
    /// A follower forwards a read request to its leader.
    ReadIndex {
        context: Vec<u8>,
    },
    ReadIndexResp {
        context: Vec<u8>,
        index: Index,
    },
    /// A follower forwards a leadership-transfer request to its leader.
    TransferLeader {
        target: NodeId,
    },
}

impl MessageBody {
    /// Short name used in logs and scripted tests.
    pub fn name(&self) -> &'static str {
        match self {
            MessageBody::PreVote { .. } => "PreVote",
            MessageBody::PreVoteResp { .. } => "PreVoteResp",
            MessageBody::Vote { .. } => "Vote",
            MessageBody::VoteResp { .. } => "VoteResp",
            MessageBody::Append { .. } => "Append",
            MessageBody::AppendResp { .. } => "AppendResp",
            MessageBody::Heartbeat { .. } => "Heartbeat",
            MessageBody::HeartbeatResp { .. } => "HeartbeatResp",
            MessageBody::SnapshotChunk(_) => "SnapshotChunk",
            MessageBody::SnapshotChunkResp { .. } => "SnapshotChunkResp",
            MessageBody::TimeoutNow => "TimeoutNow",
            MessageBody::ReadIndex { .. } => "ReadIndex",
            MessageBody::ReadIndexResp { .. } => "ReadIndexResp",
            MessageBody::TransferLeader { .. } => "TransferLeader",
        }
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}->{} {} term={}",
            self.from,
            self.to,
            self.body.name(),
            self.term
        )?;
        fmt_body(f, &self.body)
    }
}

/// The fields of a message body, in the compact form of `Message`'s `Debug`.
fn fmt_body(f: &mut fmt::Formatter<'_>, body: &MessageBody) -> fmt::Result {
    match body {
        MessageBody::PreVote {
            last_index,
            last_term,
        }
        | MessageBody::Vote {
            last_index,
            last_term,
            ..
        } => {
            write!(f, " last={last_term}/{last_index}")?;
            if let MessageBody::Vote { transfer: true, .. } = body {
                write!(f, " transfer")?;
            }
            Ok(())
        }
        MessageBody::PreVoteResp { reject } | MessageBody::VoteResp { reject } => {
            write!(f, "{}", if *reject { " rejected" } else { " granted" })
        }
        MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => {
            write!(
                f,
                " prev={prev_term}/{prev_index} commit={commit} entries={entries:?}"
            )
        }
        MessageBody::AppendResp {
            index,
            reject: None,
        } => write!(f, " index={index}"),
        MessageBody::AppendResp {
            index,
            reject: Some(h),
        } => {
            write!(f, " rejected index={index} hint={}/{}", h.term, h.index)
        }
        MessageBody::Heartbeat {
            commit, context, ..
        } => {
            write!(f, " commit={commit}")?;
            fmt_context(f, context)
        }
        MessageBody::HeartbeatResp { context, .. } => fmt_context(f, context),
        MessageBody::SnapshotChunk(c) => write!(f, " {c:?}"),
        MessageBody::SnapshotChunkResp {
            index,
            term,
            next_offset,
        } => {
            write!(f, " snap {term}/{index} next_offset={next_offset}")
        }
        MessageBody::TimeoutNow => Ok(()),
        MessageBody::ReadIndex { context } => fmt_context(f, context),
        MessageBody::ReadIndexResp { context, index } => {
            write!(f, " index={index}")?;
            fmt_context(f, context)
        }
        MessageBody::TransferLeader { target } => write!(f, " target={target}"),
    }
}

fn fmt_context(f: &mut fmt::Formatter<'_>, context: &[u8]) -> fmt::Result {
    if context.is_empty() {
        return Ok(());
    }
    write!(f, " ctx={}", String::from_utf8_lossy(context))
}
