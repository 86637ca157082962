//! A linearizability checker for key-value histories: Wing and Gong's search with
//! Lowe's just-in-time linearization and memoization, as in Porcupine
//! (anishathalye/porcupine, `checker.go`), partitioned per key (P-compositionality,
//! Horn and Kroening), with a shrinker that turns a failure into a minimal,
//! human-readable sub-history.
//!
//! ```
//! use ryu_scenarios::linearizability::{Budget, Input, Op, Output, Verdict, check};
//!
//! let history = vec![
//!     // client 1 writes x = 1 during [0, 10]
//!     Op::new(1, 0, Input::put("x", "1")).returned(10, Output::Ok),
//!     // client 2 reads x during [20, 30], after the write completed: must see 1
//!     Op::new(2, 20, Input::get("x")).returned(30, Output::Value(None)),
//! ];
//! let Verdict::NotLinearizable(violation) = check(&history, Budget::default()) else {
//!     panic!("a stale read must be caught");
//! };
//! assert_eq!(violation.ops.len(), 2);
//! println!("{violation}"); // one line per operation of the minimal failing sub-history
//! ```
//!
//! # The history
//!
//! An [`Op`] is one client request: who sent it, when (`call_ns`), what ([`Input`]:
//! get, put, delete, compare-and-swap, or a transaction that reads some keys and
//! writes some keys), and its [`Outcome`]: either it returned at `return_ns` with an
//! [`Output`], or the client never learned what happened (crash, timeout), in which
//! case the operation may have taken effect at any point after its call, or never.
//! There are two kinds of transaction: [`Input::Txn`] reads some keys and writes some
//! keys (its client learns what it read), and [`Input::CondTxn`] is a multi-key
//! compare-and-swap (its client learns whether it applied).
//! Times are any consistent clock (the simulator's virtual nanoseconds); two
//! operations whose intervals touch (one returns at the very time the other is
//! called) count as concurrent, which is the permissive reading.
//!
//! The sequential specification is a map from keys to values, every key absent at the
//! start. A get returns the current value; put and delete set it; a compare-and-swap
//! applies iff the current value equals `expected` and says whether it did, and a
//! conditional transaction likewise over all its conditions at one instant; a
//! committed transaction observes the current value of each key it reads, all at one
//! instant, then applies its writes in order (it does not read its own writes).
//!
//! Operations that cannot constrain anything are dropped before the search: a get
//! whose outcome is unknown, a transaction with unknown outcome and no writes, a
//! transaction that touches no key at all, and any operation whose output is
//! [`Output::Aborted`] (it definitely had no effect). An
//! operation with unknown outcome gets return time infinity, so the search may place
//! it anywhere after its call; placing it after everything else is the same as "it
//! never happened". Its effect is deterministic once placed: a put writes, a
//! compare-and-swap (single or multi-key) applies iff its conditions hold at that
//! point, a transaction writes (its reads are unknown, so unconstrained). Operations
//! with unknown outcome whose writes nobody looks at (by the rule of "The witness"
//! below) are removed up front: that is exact, since such a write can always go
//! last, and it matters, since every unknown write otherwise stays concurrent with
//! everything after it and doubles the search.
//!
//! # The search
//!
//! Per partition (below), the calls and returns become a doubly-linked list of
//! entries sorted by time, calls before returns at equal times. Walking the list from
//! the front, a call entry is a candidate to linearize next: if the model accepts the
//! operation in the current state, the search *lifts* the operation (unlinks its call
//! and return entries), pushes (entry, old state) on a stack, and starts again from
//! the front. Reaching a return entry means that operation's deadline has passed
//! without it being linearized, so the last choice was wrong: pop it, restore the
//! state, *unlift* it (relink its entries, in reverse order, dancing-links style) and
//! try the next candidate after it. An empty list means every operation is placed:
//! linearizable. An empty stack at a return entry means no order works.
//!
//! The memo is Porcupine's: the set of linearized operations (a bitset) together with
//! the model state determines everything that can still happen, so a (bitset, state)
//! pair already reached is never explored again. That turns the factorial search into
//! one bounded by the number of distinct (subset, state) pairs, which for real
//! histories (few concurrent operations per key) is close to linear.
//!
//! One pruning beyond Porcupine: a read-only operation (a get, a failed
//! compare-and-swap, a transaction without writes) that the model accepts as the next
//! to linearize is as good there as anywhere later, so when the search backtracks
//! over it, it backtracks over the choice before it too (see `Effect::is_read_only`).
//!
//! Partitioning: linearizability is compositional, so a history is linearizable iff
//! its restriction to each independent part is. Operations touching one key are
//! grouped per key; a transaction touching several keys joins them (union-find over
//! keys), and the model state of a part is the value of each of its keys.
//!
//! # Limits
//!
//! - The search is exponential in the worst case (many concurrent operations on one
//!   part with many distinct states). A [`Budget`] caps the steps per part, and
//!   [`check`] answers [`Verdict::Unknown`] rather than hang the simulator.
//! - The model is the map above, with transactions atomic at one instant inside their
//!   interval (strict serializability); range scans are not modelled.
//! - A transaction that spans keys merges their parts, so a workload whose
//!   transactions chain all keys together is checked as one part, which is slower.
//!
//! # The witness
//!
//! On a violation the failing part is shrunk (greedy delta debugging: drop chunks of
//! halving size, then single operations, until nothing more can go) while it stays
//! non-linearizable. A drop is only tried when it is *sound*: it cannot turn a
//! linearizable history into a non-linearizable one, so the witness shows a real
//! contradiction rather than one created by removing its explanation. Dropping a
//! read-only operation is always sound. Dropping a writer is sound when no kept
//! operation observes a value it writes (on that key), and no kept operation whose
//! effect depends on the exact current value without naming it (a compare-and-swap,
//! single or multi-key, that failed or whose outcome is unknown) has a condition on a
//! key it writes: then in any linearization the writer is never the last write before
//! a kept operation that looks, and removing it changes nothing that is looked at.
//! (The initial absent value counts as a value: a kept read of "absent" keeps every
//! delete of that key.)

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A key of the store.
pub type Key = Vec<u8>;
/// A value of the store.
pub type Value = Vec<u8>;

/// What a client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Get {
        key: Key,
    },
    Put {
        key: Key,
        value: Value,
    },
    Delete {
        key: Key,
    },
    /// Set `key` to `new` (`None` deletes) iff its current value is `expected`
    /// (`None` = absent).
    Cas {
        key: Key,
        expected: Option<Value>,
        new: Option<Value>,
    },
    /// Read `reads` (at one instant), then apply `writes` in order (`None` deletes).
    /// Answered by [`Output::Committed`] (with the values read) or `Aborted`.
    Txn {
        reads: Vec<Key>,
        writes: Vec<(Key, Option<Value>)>,
    },
    /// A multi-key compare-and-swap: apply `writes` in order iff every key in
    /// `conditions` holds its value (`None` = absent), all at one instant. Answered by
    /// [`Output::Cas`].
    CondTxn {
        conditions: Vec<(Key, Option<Value>)>,
        writes: Vec<(Key, Option<Value>)>,
    },
}

impl Input {
    /// `Get` of `key`.
    pub fn get(key: impl AsRef<[u8]>) -> Input {
        Input::Get {
            key: key.as_ref().to_vec(),
        }
    }

    /// `Put` of `value` at `key`.
    pub fn put(key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Input {
        Input::Put {
            key: key.as_ref().to_vec(),
            value: value.as_ref().to_vec(),
        }
    }

    /// `Delete` of `key`.
    pub fn delete(key: impl AsRef<[u8]>) -> Input {
        Input::Delete {
            key: key.as_ref().to_vec(),
        }
    }

    /// Every key the operation touches (with repeats, in input order).
    fn keys(&self) -> Vec<&[u8]> {
        match self {
            Input::Get { key }
            | Input::Put { key, .. }
            | Input::Delete { key }
            | Input::Cas { key, .. } => vec![key],
            Input::Txn { reads, writes } => reads
                .iter()
                .map(Vec::as_slice)
                .chain(writes.iter().map(|(k, _)| k.as_slice()))
                .collect(),
            Input::CondTxn { conditions, writes } => conditions
                .iter()
                .chain(writes)
                .map(|(k, _)| k.as_slice())
                .collect(),
        }
    }
}

/// What the system answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Answer to `Get`: the value read (`None` = absent).
    Value(Option<Value>),
    /// Answer to `Put` and `Delete`.
    Ok,
    /// Answer to `Cas` and `CondTxn`: whether it applied.
    Cas { applied: bool },
    /// Answer to a committed `Txn`: the value each read observed, in the order of
    /// `Input::Txn::reads` (same length).
    Committed { reads: Vec<Option<Value>> },
    /// The operation definitely had no effect (an aborted transaction, or any request
    /// the system rejected before it could take effect). Such operations are ignored.
    Aborted,
}

/// How an operation ended, as far as its client knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Returned {
        return_ns: u64,
        output: Output,
    },
    /// The client never learned the outcome (it crashed, or timed out): the operation
    /// may take effect at any point after its call, or never.
    Unknown,
}

/// One operation of a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// Who issued it (only used to render histories).
    pub client: u64,
    pub call_ns: u64,
    pub input: Input,
    pub outcome: Outcome,
}

impl Op {
    /// An operation just called; its outcome is `Unknown` until [`Op::returned`].
    pub fn new(client: u64, call_ns: u64, input: Input) -> Op {
        Op {
            client,
            call_ns,
            input,
            outcome: Outcome::Unknown,
        }
    }

    /// The same operation, returned at `return_ns` with `output`.
    pub fn returned(mut self, return_ns: u64, output: Output) -> Op {
        self.outcome = Outcome::Returned { return_ns, output };
        self
    }

    /// When it returned, if its client knows.
    pub fn return_ns(&self) -> Option<u64> {
        match self.outcome {
            Outcome::Returned { return_ns, .. } => Some(return_ns),
            Outcome::Unknown => None,
        }
    }

    fn output(&self) -> Option<&Output> {
        match &self.outcome {
            Outcome::Returned { output, .. } => Some(output),
            Outcome::Unknown => None,
        }
    }

    /// Whether the operation can constrain the search (see the module doc).
    fn takes_part(&self) -> bool {
        match (&self.input, self.output()) {
            (_, Some(Output::Aborted)) => false,
            (Input::Get { .. }, None) => false,
            (Input::Txn { writes, .. }, None) => !writes.is_empty(),
            (Input::Txn { reads, writes }, Some(_)) => !reads.is_empty() || !writes.is_empty(),
            (Input::CondTxn { conditions, writes }, _) => {
                !conditions.is_empty() || !writes.is_empty()
            }
            _ => true,
        }
    }

    /// Panics if the output does not answer the input, or time runs backwards: a
    /// malformed history is a bug in the harness that recorded it.
    fn validate(&self, index: usize) {
        let Outcome::Returned { return_ns, output } = &self.outcome else {
            return;
        };
        assert!(
            *return_ns >= self.call_ns,
            "history op #{index} returns at {return_ns} before its call at {}",
            self.call_ns
        );
        let fits = match (&self.input, output) {
            (_, Output::Aborted) => true,
            (Input::Get { .. }, Output::Value(_)) => true,
            (Input::Put { .. } | Input::Delete { .. }, Output::Ok) => true,
            (Input::Cas { .. } | Input::CondTxn { .. }, Output::Cas { .. }) => true,
            (Input::Txn { reads: keys, .. }, Output::Committed { reads }) => {
                keys.len() == reads.len()
            }
            _ => false,
        };
        assert!(
            fits,
            "history op #{index}: output does not answer input: {self}"
        );
    }

    /// What the operation's effect depends on, for the sound-drop rule (module doc).
    fn observations<'a>(&'a self, observed: &mut Observed<'a>) {
        match (&self.input, self.output()) {
            (Input::Get { key }, Some(Output::Value(v))) => {
                observed.values.insert((key, v.as_deref()));
            }
            (Input::Cas { key, expected, .. }, Some(Output::Cas { applied: true })) => {
                observed.values.insert((key, expected.as_deref()));
            }
            // A failed or unknown compare-and-swap depends on the current value without
            // naming it: every writer of its key matters.
            (Input::Cas { key, .. }, _) => {
                observed.any_value.insert(key);
            }
            (Input::Txn { reads: keys, .. }, Some(Output::Committed { reads })) => {
                for (key, v) in keys.iter().zip(reads) {
                    observed.values.insert((key, v.as_deref()));
                }
            }
            (Input::CondTxn { conditions, .. }, Some(Output::Cas { applied: true })) => {
                for (key, v) in conditions {
                    observed.values.insert((key, v.as_deref()));
                }
            }
            (Input::CondTxn { conditions, .. }, _) => {
                for (key, _) in conditions {
                    observed.any_value.insert(key);
                }
            }
            _ => {}
        }
    }

    /// The (key, value) pairs the operation may write.
    fn possible_writes(&self) -> Vec<(&[u8], Option<&[u8]>)> {
        match (&self.input, self.output()) {
            (_, Some(Output::Aborted)) => Vec::new(),
            (Input::Put { key, value }, _) => vec![(key, Some(value))],
            (Input::Delete { key }, _) => vec![(key, None)],
            (Input::Cas { .. } | Input::CondTxn { .. }, Some(Output::Cas { applied: false })) => {
                Vec::new()
            }
            (Input::Cas { key, new, .. }, _) => vec![(key, new.as_deref())],
            (Input::Txn { writes, .. } | Input::CondTxn { writes, .. }, _) => writes
                .iter()
                .map(|(k, v)| (k.as_slice(), v.as_deref()))
                .collect(),
            (Input::Get { .. }, _) => Vec::new(),
        }
    }
}

/// How much work [`check`] may do before answering [`Verdict::Unknown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Search steps (one step = one entry visited) allowed for each partition, and
    /// again, in total, for shrinking a violation.
    pub steps_max: u64,
}

impl Budget {
    /// Plenty for simulator histories, whose partitions typically need a few steps
    /// per operation; a partition that uses it all takes about half a second in a
    /// test build on a slow machine. (A legal history with ~16 operations in flight
    /// per key at all times still fits; ~20 does not.)
    pub const DEFAULT_STEPS_MAX: u64 = 1_000_000;

    pub fn steps(steps_max: u64) -> Budget {
        Budget { steps_max }
    }
}

impl Default for Budget {
    fn default() -> Budget {
        Budget::steps(Budget::DEFAULT_STEPS_MAX)
    }
}

/// The answer of [`check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    NotLinearizable(Violation),
    /// Some partition exhausted the budget and none was found non-linearizable.
    Unknown {
        reason: String,
    },
}

impl Verdict {
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }
}

/// A non-linearizable partition and a minimal failing sub-history of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The keys of the failing partition, sorted.
    pub keys: Vec<Key>,
    /// How many operations of the history the partition held (after dropping those
    /// that cannot constrain anything, see the module doc).
    pub partition_op_count: usize,
    /// The failing sub-history: (index in the checked history, operation), ordered by
    /// call time. Non-linearizable on its own, and no operation can be soundly dropped
    /// from it without making it linearizable (if `minimal`).
    pub ops: Vec<(usize, Op)>,
    /// False if the shrinker ran out of budget first: then `ops` is smaller than the
    /// partition but perhaps not minimal.
    pub minimal: bool,
}

/// Check `history` for linearizability against the key-value map model (see the module
/// doc). Deterministic: the same history always gives the same verdict and witness.
///
/// Panics if the history is malformed (an output that does not answer its input, a
/// return before its call).
pub fn check(history: &[Op], budget: Budget) -> Verdict {
    for (index, op) in history.iter().enumerate() {
        op.validate(index);
    }
    let taking_part: Vec<usize> = (0..history.len())
        .filter(|&i| history[i].takes_part())
        .collect();
    let taking_part = without_unseen_unknowns(history, &taking_part);
    let mut unknown = None;
    for part in partition(history, &taking_part) {
        let problem = Problem::compile(history, &part.ops);
        match search(&problem, budget.steps_max).0 {
            Search::Linearizable => {}
            Search::NotLinearizable => {
                return Verdict::NotLinearizable(shrink(history, part, budget));
            }
            Search::OutOfSteps => {
                unknown.get_or_insert_with(|| {
                    format!(
                        "the search of keys {} ({} operations) exhausted its budget of {} steps",
                        render_keys(&part.keys),
                        part.ops.len(),
                        budget.steps_max
                    )
                });
            }
        }
    }
    match unknown {
        Some(reason) => Verdict::Unknown { reason },
        None => Verdict::Linearizable,
    }
}

/// A set of keys closed under "some operation touches two of them", and its operations.
#[derive(Debug)]
struct Partition {
    /// Sorted.
    keys: Vec<Key>,
    /// Indices into the history, ascending.
    ops: Vec<usize>,
}

/// Split the operations `ops` (indices into `history`) into independent partitions:
/// connected components of keys, where an operation connects all keys it touches.
/// Partitions come ordered by their smallest key.
fn partition(history: &[Op], ops: &[usize]) -> Vec<Partition> {
    let keys: BTreeSet<&[u8]> = ops.iter().flat_map(|&i| history[i].input.keys()).collect();
    let id: BTreeMap<&[u8], usize> = keys.iter().enumerate().map(|(i, &k)| (k, i)).collect();
    // Union-find whose root is always the smallest id of its component (a union points
    // the larger root at the smaller), so components sort by their smallest key.
    let mut parent: Vec<usize> = (0..keys.len()).collect();
    fn root(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    for &i in ops {
        let touched = history[i].input.keys();
        let first = id[touched[0]];
        for k in &touched[1..] {
            let (a, b) = (root(&mut parent, first), root(&mut parent, id[k]));
            parent[a.max(b)] = a.min(b);
        }
    }
    let mut parts: BTreeMap<usize, Partition> = BTreeMap::new();
    for (i, k) in keys.iter().enumerate() {
        let r = root(&mut parent, i);
        let part = parts.entry(r).or_insert_with(|| Partition {
            keys: Vec::new(),
            ops: Vec::new(),
        });
        part.keys.push(k.to_vec());
    }
    for &i in ops {
        let r = root(&mut parent, id[history[i].input.keys()[0]]);
        parts.get_mut(&r).expect("every key has a part").ops.push(i);
    }
    parts.into_values().collect()
}

/// A value, interned per partition. `ABSENT` is the key having no value.
type ValueId = u32;
const ABSENT: ValueId = 0;
/// The model state of a partition: the value of each of its keys, by slot (the key's
/// position in the partition's sorted key list).
type State = Vec<ValueId>;

/// One operation, compiled against a partition's slots and interned values.
#[derive(Debug)]
enum Effect {
    /// Each read must see its value; then the writes apply in order. (Get, put,
    /// delete, an applied compare-and-swap, a committed or unknown transaction.)
    Checked {
        reads: Vec<(usize, ValueId)>,
        writes: Vec<(usize, ValueId)>,
    },
    /// A compare-and-swap that reported it did not apply: some condition failed.
    NotAll { conditions: Vec<(usize, ValueId)> },
    /// A compare-and-swap with unknown outcome: the writes apply iff every condition
    /// holds.
    IfAll {
        conditions: Vec<(usize, ValueId)>,
        writes: Vec<(usize, ValueId)>,
    },
}

impl Effect {
    /// Never changes the state. Such an operation, once the model accepts it as the
    /// next to linearize, may as well go now: in any linearization of the rest that
    /// places it later, moving it forward to now keeps every state the same, and keeps
    /// real-time order (everything that returned before its call is linearized
    /// already, or it would not be a candidate). So if linearizing it now fails, so
    /// does every other choice at this point, and the search backtracks past it.
    fn is_read_only(&self) -> bool {
        match self {
            Effect::Checked { writes, .. } => writes.is_empty(),
            Effect::NotAll { .. } => true,
            Effect::IfAll { .. } => false,
        }
    }

    /// A (multi-key) compare-and-swap answered by `output`.
    fn compare_and_swap(
        conditions: Vec<(usize, ValueId)>,
        writes: Vec<(usize, ValueId)>,
        output: Option<&Output>,
    ) -> Effect {
        match output {
            Some(Output::Cas { applied: true }) => Effect::Checked {
                reads: conditions,
                writes,
            },
            Some(_) => Effect::NotAll { conditions },
            None => Effect::IfAll { conditions, writes },
        }
    }

    /// The state after the operation, or `None` if the model rejects the operation's
    /// output in `state`.
    fn apply(&self, state: &State) -> Option<State> {
        match self {
            Effect::Checked { reads, writes } => {
                if reads.iter().any(|&(slot, v)| state[slot] != v) {
                    return None;
                }
                let mut next = state.clone();
                for &(slot, v) in writes {
                    next[slot] = v;
                }
                Some(next)
            }
            Effect::NotAll { conditions } => {
                let all = conditions.iter().all(|&(slot, v)| state[slot] == v);
                (!all).then(|| state.clone())
            }
            Effect::IfAll { conditions, writes } => {
                let mut next = state.clone();
                if conditions.iter().all(|&(slot, v)| state[slot] == v) {
                    for &(slot, v) in writes {
                        next[slot] = v;
                    }
                }
                Some(next)
            }
        }
    }
}

/// A partition ready to search: operation `i` is called at `call_ns[i]`, returns at
/// `return_ns[i]` (`u64::MAX` if unknown) and does `effects[i]`.
#[derive(Debug)]
struct Problem {
    slot_count: usize,
    call_ns: Vec<u64>,
    return_ns: Vec<u64>,
    effects: Vec<Effect>,
}

impl Problem {
    fn compile(history: &[Op], ops: &[usize]) -> Problem {
        let keys: BTreeSet<&[u8]> = ops.iter().flat_map(|&i| history[i].input.keys()).collect();
        let mut interner = Interner {
            slots: keys.iter().enumerate().map(|(i, &k)| (k, i)).collect(),
            values: BTreeMap::new(),
        };
        let mut problem = Problem {
            slot_count: keys.len(),
            call_ns: Vec::with_capacity(ops.len()),
            return_ns: Vec::with_capacity(ops.len()),
            effects: Vec::with_capacity(ops.len()),
        };
        for &i in ops {
            let op = &history[i];
            problem.call_ns.push(op.call_ns);
            problem.return_ns.push(op.return_ns().unwrap_or(u64::MAX));
            problem.effects.push(interner.effect(op));
        }
        problem
    }
}

/// A partition's keys as slots, and its values as `ValueId`s.
#[derive(Debug)]
struct Interner<'h> {
    slots: BTreeMap<&'h [u8], usize>,
    values: BTreeMap<&'h [u8], ValueId>,
}

impl<'h> Interner<'h> {
    fn pair(&mut self, key: &'h [u8], value: Option<&'h [u8]>) -> (usize, ValueId) {
        let Some(value) = value else {
            return (self.slots[key], ABSENT);
        };
        let next = ValueId::try_from(self.values.len() + 1).expect("fewer than 2^32 values");
        (self.slots[key], *self.values.entry(value).or_insert(next))
    }

    fn pairs(&mut self, pairs: &'h [(Key, Option<Value>)]) -> Vec<(usize, ValueId)> {
        pairs
            .iter()
            .map(|(k, v)| self.pair(k, v.as_deref()))
            .collect()
    }

    /// The operation as the model sees it (see the module doc for unknown outcomes).
    fn effect(&mut self, op: &'h Op) -> Effect {
        match (&op.input, op.output()) {
            (Input::Get { key }, Some(Output::Value(v))) => Effect::Checked {
                reads: vec![self.pair(key, v.as_deref())],
                writes: Vec::new(),
            },
            (Input::Put { key, value }, _) => Effect::Checked {
                reads: Vec::new(),
                writes: vec![self.pair(key, Some(value))],
            },
            (Input::Delete { key }, _) => Effect::Checked {
                reads: Vec::new(),
                writes: vec![self.pair(key, None)],
            },
            (Input::Cas { key, expected, new }, output) => {
                let conditions = vec![self.pair(key, expected.as_deref())];
                let writes = vec![self.pair(key, new.as_deref())];
                Effect::compare_and_swap(conditions, writes, output)
            }
            (Input::CondTxn { conditions, writes }, output) => {
                let (conditions, writes) = (self.pairs(conditions), self.pairs(writes));
                Effect::compare_and_swap(conditions, writes, output)
            }
            (
                Input::Txn {
                    reads: keys,
                    writes,
                },
                output,
            ) => {
                let reads = match output {
                    Some(Output::Committed { reads }) => keys
                        .iter()
                        .zip(reads)
                        .map(|(k, v)| self.pair(k, v.as_deref()))
                        .collect(),
                    // Unknown outcome: what it read is unknown, so unconstrained.
                    _ => Vec::new(),
                };
                let writes = self.pairs(writes);
                Effect::Checked { reads, writes }
            }
            (Input::Get { .. }, _) => unreachable!("validated, and unknown gets do not take part"),
        }
    }
}

const NIL: usize = usize::MAX;

/// A call or return event in the search's doubly-linked list.
#[derive(Debug, Clone, Copy)]
struct Entry {
    op: usize,
    is_call: bool,
    prev: usize,
    next: usize,
    /// For a call entry: its return entry.
    partner: usize,
}

/// The list of entries; `nodes[0]` is the head sentinel, the rest are events sorted by
/// (time, calls before returns, operation), so every call precedes its return.
#[derive(Debug)]
struct Entries {
    nodes: Vec<Entry>,
}

impl Entries {
    fn new(call_ns: &[u64], return_ns: &[u64]) -> Entries {
        let mut events: Vec<(u64, bool, usize)> = (0..call_ns.len())
            .flat_map(|op| [(call_ns[op], false, op), (return_ns[op], true, op)])
            .collect();
        events.sort_unstable();
        let head = Entry {
            op: NIL,
            is_call: false,
            prev: NIL,
            next: NIL,
            partner: NIL,
        };
        let mut nodes = vec![head; events.len() + 1];
        let mut call_node = vec![NIL; call_ns.len()];
        for (j, &(_, is_return, op)) in events.iter().enumerate() {
            let node = j + 1;
            nodes[node] = Entry {
                op,
                is_call: !is_return,
                prev: node - 1,
                next: if node == events.len() { NIL } else { node + 1 },
                partner: NIL,
            };
            if is_return {
                nodes[call_node[op]].partner = node;
            } else {
                call_node[op] = node;
            }
        }
        nodes[0].next = if events.is_empty() { NIL } else { 1 };
        Entries { nodes }
    }

    fn first(&self) -> usize {
        self.nodes[0].next
    }

    fn unlink(&mut self, x: usize) {
        let Entry { prev, next, .. } = self.nodes[x];
        self.nodes[prev].next = next;
        if next != NIL {
            self.nodes[next].prev = prev;
        }
    }

    /// Undo `unlink(x)`; valid only in reverse order of the unlinks (dancing links).
    fn relink(&mut self, x: usize) {
        let Entry { prev, next, .. } = self.nodes[x];
        self.nodes[prev].next = x;
        if next != NIL {
            self.nodes[next].prev = x;
        }
    }

    /// Take a call entry and its return out of the list: the operation is linearized.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        self.unlink(self.nodes[call].partner);
    }

    fn unlift(&mut self, call: usize) {
        self.relink(self.nodes[call].partner);
        self.relink(call);
    }
}

/// The memo key: which operations are linearized, and the state they led to. The hash
/// comes first so that set comparisons rarely look further.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Memo {
    hash: u64,
    linearized: Box<[u64]>,
    state: Box<[ValueId]>,
}

impl Memo {
    fn new(linearized: &[u64], state: &[ValueId]) -> Memo {
        let words = linearized
            .iter()
            .copied()
            .chain(state.iter().map(|&v| u64::from(v)));
        let mut hash = 0xcbf2_9ce4_8422_2325_u64;
        for w in words {
            hash = (hash ^ w).wrapping_mul(0x0000_0100_0000_01b3);
            hash ^= hash >> 29;
        }
        Memo {
            hash,
            linearized: linearized.into(),
            state: state.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Search {
    Linearizable,
    NotLinearizable,
    OutOfSteps,
}

/// Wing and Gong's search with just-in-time linearization and memoization (see the
/// module doc). Returns the answer and the steps it took (at most `steps_max`).
fn search(problem: &Problem, steps_max: u64) -> (Search, u64) {
    let op_count = problem.effects.len();
    let mut entries = Entries::new(&problem.call_ns, &problem.return_ns);
    let mut state: State = vec![ABSENT; problem.slot_count];
    let mut linearized = vec![0u64; op_count.div_ceil(64)];
    let mut memo: BTreeSet<Memo> = BTreeSet::new();
    // The linearized operations, in order: (call entry, state before it).
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut cursor = entries.first();
    let mut steps = 0;
    while entries.first() != NIL {
        if steps == steps_max {
            return (Search::OutOfSteps, steps);
        }
        steps += 1;
        // Invariant: `cursor` is in the list. Every call in the list precedes its own
        // return, so walking forward from the front meets a return before the end.
        debug_assert_ne!(cursor, NIL);
        let entry = entries.nodes[cursor];
        let (word, bit) = (entry.op / 64, 1u64 << (entry.op % 64));
        if entry.is_call {
            debug_assert_eq!(linearized[word] & bit, 0, "a listed op is not linearized");
            let accepted = problem.effects[entry.op].apply(&state);
            let fresh = accepted.filter(|next| {
                linearized[word] |= bit;
                let fresh = memo.insert(Memo::new(&linearized, next));
                linearized[word] &= !bit;
                fresh
            });
            match fresh {
                Some(next) => {
                    linearized[word] |= bit;
                    stack.push((cursor, std::mem::replace(&mut state, next)));
                    entries.lift(cursor);
                    cursor = entries.first();
                }
                // Rejected by the model, or a (set, state) already explored: try the
                // next candidate.
                None => cursor = entry.next,
            }
        } else {
            // A return entry: its operation's deadline passed unlinearized, so the last
            // choice was wrong. Undo it and try the candidate after it; but if it was a
            // read-only operation, no other choice at that point can work either (see
            // `Effect::is_read_only`), so undo the choice before it too.
            loop {
                let Some((call, before)) = stack.pop() else {
                    return (Search::NotLinearizable, steps);
                };
                let op = entries.nodes[call].op;
                linearized[op / 64] &= !(1u64 << (op % 64));
                state = before;
                entries.unlift(call);
                cursor = entries.nodes[call].next;
                if !problem.effects[op].is_read_only() {
                    break;
                }
            }
        }
    }
    debug_assert_eq!(stack.len(), op_count);
    (Search::Linearizable, steps)
}

/// Whether the operations `ops` of `history` (in any number of partitions) are
/// non-linearizable; `None` if `steps_left` ran out before an answer.
fn violated(history: &[Op], ops: &[usize], steps_left: &mut u64) -> Option<bool> {
    let mut out_of_steps = false;
    for part in partition(history, &without_unseen_unknowns(history, ops)) {
        let (answer, steps) = search(&Problem::compile(history, &part.ops), *steps_left);
        *steps_left -= steps;
        match answer {
            Search::Linearizable => {}
            Search::NotLinearizable => return Some(true),
            Search::OutOfSteps => out_of_steps = true,
        }
    }
    (!out_of_steps).then_some(false)
}

/// What kept operations look at, for the shrinker's soundness rule (module doc).
#[derive(Debug, Default)]
struct Observed<'a> {
    values: BTreeSet<(&'a [u8], Option<&'a [u8]>)>,
    /// Keys on which any writer matters.
    any_value: BTreeSet<&'a [u8]>,
}

impl<'a> Observed<'a> {
    fn of(history: &'a [Op], ops: &[usize]) -> Observed<'a> {
        let mut observed = Observed::default();
        for &i in ops {
            history[i].observations(&mut observed);
        }
        observed
    }

    /// Whether nothing observed depends on `op`'s writes.
    fn ignores(&self, op: &Op) -> bool {
        op.possible_writes().into_iter().all(|(key, value)| {
            !self.any_value.contains(key) && !self.values.contains(&(key, value))
        })
    }
}

/// Whether dropping `removed` from a history that keeps `kept` cannot turn a
/// linearizable history into a non-linearizable one.
fn drop_is_sound(history: &[Op], removed: &[usize], kept: &[usize]) -> bool {
    let observed = Observed::of(history, kept);
    removed.iter().all(|&i| observed.ignores(&history[i]))
}

/// `ops` without the operations of unknown outcome whose writes nobody else looks at.
/// Exact: the sound-drop rule says removing them cannot make a linearizable history
/// non-linearizable, and conversely they can always be linearized after everything
/// else (their effect is unconstrained), so they cannot make one linearizable either.
/// Iterated, because an unknown compare-and-swap that goes may release others.
fn without_unseen_unknowns(history: &[Op], ops: &[usize]) -> Vec<usize> {
    let mut dropped: BTreeSet<usize> = ops
        .iter()
        .copied()
        .filter(|&i| history[i].outcome == Outcome::Unknown)
        .collect();
    loop {
        let kept: Vec<usize> = ops
            .iter()
            .copied()
            .filter(|i| !dropped.contains(i))
            .collect();
        let observed = Observed::of(history, &kept);
        let count = dropped.len();
        dropped.retain(|&i| observed.ignores(&history[i]));
        if dropped.len() == count {
            return kept;
        }
    }
}

/// Shrink a non-linearizable partition to a minimal failing sub-history (module doc).
fn shrink(history: &[Op], part: Partition, budget: Budget) -> Violation {
    let mut kept = part.ops.clone();
    let mut steps_left = budget.steps_max;
    let mut minimal = true;
    let mut chunk = (kept.len() / 2).max(1);
    'shrink: loop {
        let mut changed = false;
        // Back to front: readers usually come after the writers they observe, and a
        // writer can only go once its observers have, so one backward pass unwinds a
        // whole chain of them.
        let mut end = kept.len();
        while end > 0 {
            let start = end.saturating_sub(chunk);
            let candidate: Vec<usize> = [&kept[..start], &kept[end..]].concat();
            if drop_is_sound(history, &kept[start..end], &candidate) {
                match violated(history, &candidate, &mut steps_left) {
                    Some(true) => {
                        kept = candidate;
                        changed = true;
                    }
                    Some(false) => {}
                    None => {
                        minimal = false;
                        break 'shrink;
                    }
                }
            }
            end = start;
        }
        if chunk > 1 {
            chunk /= 2;
        } else if !changed {
            break;
        }
    }
    let mut ops: Vec<(usize, Op)> = kept.iter().map(|&i| (i, history[i].clone())).collect();
    ops.sort_by_key(|(i, op)| (op.call_ns, *i));
    Violation {
        keys: part.keys,
        partition_op_count: part.ops.len(),
        ops,
        minimal,
    }
}

/// Bytes as text if they are plain printable ASCII, else hex.
fn render_bytes(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        "\"\"".to_string()
    } else if bytes.iter().all(u8::is_ascii_graphic) {
        String::from_utf8_lossy(bytes).into_owned()
    } else {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        format!("0x{hex}")
    }
}

fn render_value(value: Option<&[u8]>) -> String {
    value.map_or_else(|| "(none)".to_string(), render_bytes)
}

fn render_keys(keys: &[Key]) -> String {
    let keys: Vec<String> = keys.iter().map(|k| render_bytes(k)).collect();
    format!("[{}]", keys.join(", "))
}

fn render_pairs(pairs: &[(Key, Option<Value>)]) -> String {
    let pairs: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{} = {}", render_bytes(k), render_value(v.as_deref())))
        .collect();
    pairs.join(", ")
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Input::Get { key } => write!(f, "get {}", render_bytes(key)),
            Input::Put { key, value } => {
                write!(f, "put {} = {}", render_bytes(key), render_bytes(value))
            }
            Input::Delete { key } => write!(f, "delete {}", render_bytes(key)),
            Input::Cas { key, expected, new } => write!(
                f,
                "cas {} {} -> {}",
                render_bytes(key),
                render_value(expected.as_deref()),
                render_value(new.as_deref())
            ),
            Input::Txn { reads, writes } => {
                write!(
                    f,
                    "txn read {} write [{}]",
                    render_keys(reads),
                    render_pairs(writes)
                )
            }
            Input::CondTxn { conditions, writes } => write!(
                f,
                "cond-txn if [{}] write [{}]",
                render_pairs(conditions),
                render_pairs(writes)
            ),
        }
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Output::Value(v) => f.write_str(&render_value(v.as_deref())),
            Output::Ok => f.write_str("ok"),
            Output::Cas { applied: true } => f.write_str("applied"),
            Output::Cas { applied: false } => f.write_str("not applied"),
            Output::Committed { reads } => {
                let reads: Vec<String> = reads.iter().map(|v| render_value(v.as_deref())).collect();
                write!(f, "committed, read [{}]", reads.join(", "))
            }
            Output::Aborted => f.write_str("aborted"),
        }
    }
}

/// One line: `client C [call, return] input -> output`; an unknown outcome shows `?`.
impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (return_ns, output) = match &self.outcome {
            Outcome::Returned { return_ns, output } => (return_ns.to_string(), output.to_string()),
            Outcome::Unknown => ("?".to_string(), "? (outcome unknown)".to_string()),
        };
        write!(
            f,
            "client {:<4} [{:>12}, {:>12}]  {} -> {}",
            self.client, self.call_ns, return_ns, self.input, output
        )
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.minimal {
            "minimal failing sub-history"
        } else {
            "failing sub-history (shrinking ran out of budget, perhaps not minimal)"
        };
        writeln!(
            f,
            "not linearizable on keys {}: {what}, {} of the partition's {} operations, by call time:",
            render_keys(&self.keys),
            self.ops.len(),
            self.partition_op_count
        )?;
        for (index, op) in &self.ops {
            writeln!(f, "  #{index:<6} {op}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Linearizable => f.write_str("linearizable"),
            Verdict::NotLinearizable(violation) => violation.fmt(f),
            Verdict::Unknown { reason } => write!(f, "unknown: {reason}"),
        }
    }
}
