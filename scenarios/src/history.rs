//! A client history as the cluster scenario records it: every operation's call, and
//! its outcome when the client learned one. Converted to the linearizability
//! checker's input at the end of a run.

use crate::linearizability as lin;
use std::collections::BTreeMap;

/// What an operation asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpKind {
    Get {
        key: Vec<u8>,
    },
    /// A put (`value: Some`) or a delete (`None`).
    Put {
        key: Vec<u8>,
        value: Option<Vec<u8>>,
    },
    Cas {
        key: Vec<u8>,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    },
    /// Several keys read from one snapshot.
    GetMany {
        keys: Vec<Vec<u8>>,
    },
    /// Commit writes only if every read still holds.
    Txn {
        reads: Vec<(Vec<u8>, Option<Vec<u8>>)>,
        writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    },
    /// Add `delta` (> 0) to a counter key that only increments touch; `request` is the
    /// request id the node logs with the increment.
    Incr {
        key: Vec<u8>,
        delta: i64,
        request: u64,
    },
}

/// What the client learned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A read's value.
    Read(Option<Vec<u8>>),
    /// A multi-key read's values, in key order.
    ReadMany(Vec<Option<Vec<u8>>>),
    /// A write: `true` applied, `false` a failed check (no effect).
    Applied(bool),
    /// An increment's new value.
    Incremented(i64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// No answer yet.
    Pending,
    /// Answered.
    Done { return_ns: u64, outcome: Outcome },
    /// Definitely had no effect (NotLeader, Unavailable): left out of the check.
    Failed,
    /// The client gave up: may or may not have taken effect.
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub client: u64,
    pub call_ns: u64,
    pub kind: OpKind,
    pub status: Status,
}

/// The history of one run.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub ops: Vec<Recorded>,
}

impl History {
    /// Record a call; returns the operation's index.
    pub fn call(&mut self, client: u64, call_ns: u64, kind: OpKind) -> usize {
        self.ops.push(Recorded {
            client,
            call_ns,
            kind,
            status: Status::Pending,
        });
        self.ops.len() - 1
    }

    pub fn complete(&mut self, op: usize, return_ns: u64, outcome: Outcome) {
        self.set(op, Status::Done { return_ns, outcome });
    }

    pub fn fail(&mut self, op: usize) {
        self.set(op, Status::Failed);
    }

    pub fn unknown(&mut self, op: usize) {
        self.set(op, Status::Unknown);
    }

    fn set(&mut self, op: usize, status: Status) {
        let r = &mut self.ops[op];
        assert_eq!(r.status, Status::Pending, "operation {op} finished twice");
        r.status = status;
    }
}

/// Increments found in the committed log: request id -> (the value before, the
/// value after), from the reference model (see [`to_checker`]).
pub type AppliedIncrements = BTreeMap<u64, (Option<Vec<u8>>, Vec<u8>)>;

/// The history as the linearizability checker takes it: definite failures left
/// out (they had no effect), pending operations unknown.
///
/// Increments (on keys nothing else writes, by positive deltas, so a counter is
/// absent until its first increment and never returns to 0):
/// - one whose new value `v` its client saw read `v - delta` (absent if that is 0)
///   and wrote `v`, at one instant: a committed transaction;
/// - one whose client gave up either was applied, and then the committed log holds
///   it (`applied`, by request id) with the values it read and wrote, which may take
///   effect at any point after its call (a compare-and-set of unknown outcome); or it
///   was not, and no read can have seen it, so it is left out.
pub fn to_checker(history: &History, applied: &AppliedIncrements) -> Vec<lin::Op> {
    let mut out = Vec::with_capacity(history.ops.len());
    for r in &history.ops {
        if let OpKind::Incr {
            key,
            delta,
            request,
        } = &r.kind
        {
            if let Some(op) = increment_op(r, key, *delta, *request, applied) {
                out.push(op);
            }
            continue;
        }
        let input = match &r.kind {
            OpKind::Get { key } => lin::Input::Get { key: key.clone() },
            OpKind::Put {
                key,
                value: Some(value),
            } => lin::Input::Put {
                key: key.clone(),
                value: value.clone(),
            },
            OpKind::Put { key, value: None } => lin::Input::Delete { key: key.clone() },
            OpKind::Cas { key, expected, new } => lin::Input::Cas {
                key: key.clone(),
                expected: expected.clone(),
                new: new.clone(),
            },
            OpKind::GetMany { keys } => lin::Input::Txn {
                reads: keys.clone(),
                writes: Vec::new(),
            },
            OpKind::Txn { reads, writes } => lin::Input::CondTxn {
                conditions: reads.clone(),
                writes: writes.clone(),
            },
            OpKind::Incr { .. } => unreachable!("handled above"),
        };
        let op = lin::Op::new(r.client, r.call_ns, input);
        let op = match &r.status {
            Status::Failed => continue,
            Status::Pending | Status::Unknown => op,
            Status::Done { return_ns, outcome } => {
                let output = match (&r.kind, outcome) {
                    (OpKind::Get { .. }, Outcome::Read(v)) => lin::Output::Value(v.clone()),
                    (OpKind::GetMany { .. }, Outcome::ReadMany(vs)) => {
                        lin::Output::Committed { reads: vs.clone() }
                    }
                    (OpKind::Put { .. }, Outcome::Applied(true)) => lin::Output::Ok,
                    (OpKind::Cas { .. } | OpKind::Txn { .. }, Outcome::Applied(applied)) => {
                        lin::Output::Cas { applied: *applied }
                    }
                    (kind, outcome) => panic!("{outcome:?} does not answer {kind:?}"),
                };
                op.returned(*return_ns, output)
            }
        };
        out.push(op);
    }
    out
}

/// An increment as the checker sees it (see [`to_checker`]); `None`: it had no effect.
fn increment_op(
    r: &Recorded,
    key: &[u8],
    delta: i64,
    request: u64,
    applied: &AppliedIncrements,
) -> Option<lin::Op> {
    assert!(delta > 0, "counters only grow");
    match &r.status {
        Status::Failed => None,
        Status::Done {
            return_ns,
            outcome: Outcome::Incremented(v),
        } => {
            let before = v - delta;
            let read = (before != 0).then(|| before.to_string().into_bytes());
            let input = lin::Input::Txn {
                reads: vec![key.to_vec()],
                writes: vec![(key.to_vec(), Some(v.to_string().into_bytes()))],
            };
            let op = lin::Op::new(r.client, r.call_ns, input);
            Some(op.returned(*return_ns, lin::Output::Committed { reads: vec![read] }))
        }
        Status::Done { outcome, .. } => panic!("{outcome:?} does not answer {:?}", r.kind),
        Status::Pending | Status::Unknown => {
            let (before, after) = applied.get(&request)?;
            let input = lin::Input::CondTxn {
                conditions: vec![(key.to_vec(), before.clone())],
                writes: vec![(key.to_vec(), Some(after.clone()))],
            };
            Some(lin::Op::new(r.client, r.call_ns, input))
        }
    }
}

/// Check the history for linearizability. A search that runs out of budget is not a
/// failure, but says so in the returned note.
pub fn check(history: &History, applied: &AppliedIncrements) -> Result<Option<String>, String> {
    match lin::check(&to_checker(history, applied), lin::Budget::default()) {
        lin::Verdict::Linearizable => Ok(None),
        lin::Verdict::NotLinearizable(v) => Err(format!("linearizability: {v}")),
        lin::Verdict::Unknown { reason } => Ok(Some(reason)),
    }
}
