//! The linearizability checker (`ryu_scenarios::linearizability`) on hand-written
//! histories, legal and illegal, on a 5,000-operation synthetic history, and under
//! proptest. Timelines in the docs read left to right; `[a, b]` is an operation's
//! call and return time, `?` an unknown outcome.

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ryu_scenarios::linearizability::{
    Budget, Input, Op, Outcome, Output, Verdict, Violation, check,
};
use std::collections::{BTreeMap, BTreeSet};

fn bytes(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn opt(v: Option<&str>) -> Option<Vec<u8>> {
    v.map(bytes)
}

fn get(client: u64, call: u64, ret: u64, key: &str, value: Option<&str>) -> Op {
    Op::new(client, call, Input::get(key)).returned(ret, Output::Value(opt(value)))
}

fn put(client: u64, call: u64, ret: u64, key: &str, value: &str) -> Op {
    Op::new(client, call, Input::put(key, value)).returned(ret, Output::Ok)
}

fn put_unknown(client: u64, call: u64, key: &str, value: &str) -> Op {
    Op::new(client, call, Input::put(key, value))
}

fn delete(client: u64, call: u64, ret: u64, key: &str) -> Op {
    Op::new(client, call, Input::delete(key)).returned(ret, Output::Ok)
}

fn cas_input(key: &str, expected: Option<&str>, new: Option<&str>) -> Input {
    Input::Cas {
        key: bytes(key),
        expected: opt(expected),
        new: opt(new),
    }
}

fn cas(
    client: u64,
    call: u64,
    ret: u64,
    key: &str,
    expected: Option<&str>,
    new: Option<&str>,
    applied: bool,
) -> Op {
    Op::new(client, call, cas_input(key, expected, new)).returned(ret, Output::Cas { applied })
}

type Pairs<'a> = &'a [(&'a str, Option<&'a str>)];

fn pairs(pairs: Pairs) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    pairs.iter().map(|&(k, v)| (bytes(k), opt(v))).collect()
}

/// A committed transaction: `reads` are (key, value observed), `writes` (key, value).
fn txn(client: u64, call: u64, ret: u64, reads: Pairs, writes: Pairs) -> Op {
    let input = Input::Txn {
        reads: reads.iter().map(|&(k, _)| bytes(k)).collect(),
        writes: pairs(writes),
    };
    let observed = reads.iter().map(|&(_, v)| opt(v)).collect();
    Op::new(client, call, input).returned(ret, Output::Committed { reads: observed })
}

fn assert_linearizable(history: &[Op]) {
    let verdict = check(history, Budget::default());
    assert!(verdict.is_linearizable(), "{verdict}");
}

fn assert_violation(history: &[Op]) -> Violation {
    match check(history, Budget::default()) {
        Verdict::NotLinearizable(violation) => {
            assert!(violation.minimal, "{violation}");
            violation
        }
        other => panic!("expected a violation, got: {other}"),
    }
}

fn indices(violation: &Violation) -> BTreeSet<usize> {
    violation.ops.iter().map(|(i, _)| *i).collect()
}

// ---- legal histories ------------------------------------------------------------

/// One client, one operation at a time: put, get, put, get, delete, get.
#[test]
fn sequential_history_is_linearizable() {
    assert_linearizable(&[
        get(1, 0, 1, "x", None),
        put(1, 2, 3, "x", "a"),
        get(1, 4, 5, "x", Some("a")),
        put(1, 6, 7, "x", "b"),
        get(1, 8, 9, "x", Some("b")),
        delete(1, 10, 11, "x"),
        get(1, 12, 13, "x", None),
    ]);
    assert_linearizable(&[]);
}

/// Two overlapping puts, then a read after both completed: either order is legal, so
/// the read may see either value (and a second read must agree with the first).
/// ```text
/// c1  [put x=1 ........]
/// c2      [put x=2 ........]
/// c3                          [get x -> 1 or 2]  [get x -> same]
/// ```
#[test]
fn concurrent_puts_let_later_reads_see_either_value() {
    for seen in ["1", "2"] {
        assert_linearizable(&[
            put(1, 0, 10, "x", "1"),
            put(2, 5, 15, "x", "2"),
            get(3, 20, 30, "x", Some(seen)),
            get(3, 31, 40, "x", Some(seen)),
        ]);
    }
    let other = assert_violation(&[
        put(1, 0, 10, "x", "1"),
        put(2, 5, 15, "x", "2"),
        get(3, 20, 30, "x", Some("1")),
        get(3, 31, 40, "x", Some("2")),
    ]);
    assert_eq!(other.ops.len(), 4, "{other}");
}

/// A read overlapping a write may see the old or the new value.
/// ```text
/// c1  [put x=1]  [put x=2 .............]
/// c2                 [get x -> 1 or 2]
/// ```
#[test]
fn read_concurrent_with_a_write_sees_old_or_new() {
    for seen in ["1", "2"] {
        assert_linearizable(&[
            put(1, 0, 5, "x", "1"),
            put(1, 10, 30, "x", "2"),
            get(2, 15, 20, "x", Some(seen)),
        ]);
    }
}

/// A put whose client crashed may have taken effect (late, even long after its
/// call): a later read seeing it is legal, and so is every later read not seeing it.
/// ```text
/// c1  [put x=1]  [put x=2 ?
/// c2                          [get x -> 2]        (took effect)
/// c2                          [get x -> 1] [get x -> 1]   (never did)
/// ```
#[test]
fn pending_write_may_take_effect_or_not() {
    assert_linearizable(&[
        put(1, 0, 5, "x", "1"),
        put_unknown(1, 10, "x", "2"),
        get(2, 20, 30, "x", Some("2")),
    ]);
    assert_linearizable(&[
        put(1, 0, 5, "x", "1"),
        put_unknown(1, 10, "x", "2"),
        get(2, 20, 30, "x", Some("1")),
        get(2, 40, 50, "x", Some("1")),
    ]);
    // It may take effect between two reads, too: 1, then 2.
    assert_linearizable(&[
        put(1, 0, 5, "x", "1"),
        put_unknown(1, 10, "x", "2"),
        get(2, 20, 30, "x", Some("1")),
        get(2, 40, 50, "x", Some("2")),
    ]);
}

/// But a pending put takes effect at most once, and never before its call: seeing it,
/// then not seeing it (with nothing else writing) is illegal, and so is seeing it
/// before it was called.
#[test]
fn pending_write_takes_effect_at_most_once_and_not_before_its_call() {
    assert_violation(&[
        put(1, 0, 5, "x", "1"),
        put_unknown(1, 10, "x", "2"),
        get(2, 20, 30, "x", Some("2")),
        get(2, 40, 50, "x", Some("1")),
    ]);
    assert_violation(&[get(2, 0, 5, "x", Some("2")), put_unknown(1, 10, "x", "2")]);
}

/// A read whose client never learned the answer constrains nothing (it is dropped);
/// so does anything that definitely had no effect (`Aborted`): here an aborted put
/// whose value nobody can see and an aborted transaction with impossible reads.
#[test]
fn unknown_reads_and_aborted_operations_are_ignored() {
    let aborted_put = Op::new(3, 0, Input::put("x", "never")).returned(100, Output::Aborted);
    let aborted_txn = Op::new(
        3,
        0,
        Input::Txn {
            reads: vec![bytes("x")],
            writes: pairs(&[("x", Some("never"))]),
        },
    )
    .returned(100, Output::Aborted);
    assert_linearizable(&[
        put(1, 0, 5, "x", "1"),
        Op::new(2, 6, Input::get("x")),
        aborted_put.clone(),
        aborted_txn,
        get(2, 10, 20, "x", Some("1")),
    ]);
    // Seeing the aborted put's value is an invented read.
    assert_violation(&[aborted_put, get(2, 10, 20, "x", Some("never"))]);
}

/// Compare-and-swap: success when the expected value holds, failure when it does not,
/// creation from absent, and deletion through `new: None`.
/// ```text
/// c1  [put x=1] [cas x 1->2 ok] [cas x 1->3 fails] [cas y none->a ok] [cas x 2->none ok] [get x -> none]
/// ```
#[test]
fn cas_success_and_failure_are_linearizable() {
    assert_linearizable(&[
        put(1, 0, 1, "x", "1"),
        cas(1, 2, 3, "x", Some("1"), Some("2"), true),
        cas(1, 4, 5, "x", Some("1"), Some("3"), false),
        cas(1, 6, 7, "y", None, Some("a"), true),
        cas(1, 8, 9, "x", Some("2"), None, true),
        get(1, 10, 11, "x", None),
        get(1, 12, 13, "y", Some("a")),
    ]);
    // Two concurrent CAS from the same value: exactly one may win.
    assert_linearizable(&[
        put(1, 0, 1, "x", "0"),
        cas(2, 10, 20, "x", Some("0"), Some("a"), true),
        cas(3, 10, 20, "x", Some("0"), Some("b"), false),
        get(1, 30, 31, "x", Some("a")),
    ]);
}

/// A CAS whose client timed out applies iff its expected value holds where it is
/// placed: a later read may see its value or not, but only if it could have applied.
#[test]
fn cas_with_unknown_outcome_applies_only_if_it_could() {
    let pending = |expected| Op::new(2, 10, cas_input("x", Some(expected), Some("2")));
    for seen in ["1", "2"] {
        assert_linearizable(&[
            put(1, 0, 5, "x", "1"),
            pending("1"),
            get(3, 20, 30, "x", Some(seen)),
        ]);
    }
    // Expected "9" never held, so the CAS could not have written 2.
    assert_violation(&[
        put(1, 0, 5, "x", "1"),
        pending("9"),
        get(3, 20, 30, "x", Some("2")),
    ]);
}

/// A transaction reads x and y atomically while another transaction writes both:
/// it sees both old or both new values.
/// ```text
/// c1  [txn write x=0,y=0]  [txn write x=1,y=1 .................]
/// c2                            [txn read x,y -> (0,0) or (1,1)]
/// ```
#[test]
fn txn_reading_two_keys_sees_them_atomically() {
    for v in ["0", "1"] {
        assert_linearizable(&[
            txn(1, 0, 5, &[], &[("x", Some("0")), ("y", Some("0"))]),
            txn(1, 10, 40, &[], &[("x", Some("1")), ("y", Some("1"))]),
            txn(2, 15, 30, &[("x", Some(v)), ("y", Some(v))], &[]),
        ]);
    }
}

/// A conditional transaction (multi-key compare-and-swap) applies iff all its
/// conditions hold, and says so.
#[test]
fn conditional_txn_is_a_multi_key_compare_and_swap() {
    let cond = |ret, x: &str, applied| {
        Op::new(
            2,
            10,
            Input::CondTxn {
                conditions: pairs(&[("x", Some(x)), ("y", None)]),
                writes: pairs(&[("y", Some("set"))]),
            },
        )
        .returned(ret, Output::Cas { applied })
    };
    assert_linearizable(&[
        put(1, 0, 5, "x", "1"),
        cond(20, "1", true),
        get(1, 30, 40, "y", Some("set")),
    ]);
    assert_linearizable(&[
        put(1, 0, 5, "x", "1"),
        cond(20, "7", false),
        get(1, 30, 40, "y", None),
    ]);
    // Reporting failure while every condition held is a violation.
    let v = assert_violation(&[put(1, 0, 5, "x", "1"), cond(20, "1", false)]);
    assert_eq!(v.keys, vec![bytes("x"), bytes("y")], "{v}");
}

// ---- illegal histories ----------------------------------------------------------

/// A read that starts after a write completed returns the value from before it.
/// ```text
/// c1  [put x=1]
/// c2             [get x -> none]
/// ```
#[test]
fn stale_read_after_a_completed_write_is_not_linearizable() {
    let v = assert_violation(&[put(1, 0, 10, "x", "1"), get(2, 20, 30, "x", None)]);
    assert_eq!(v.keys, vec![bytes("x")]);
    assert_eq!(indices(&v), BTreeSet::from([0, 1]));
}

/// A read returns a value nobody ever wrote.
#[test]
fn read_of_a_value_never_written_is_not_linearizable() {
    let v = assert_violation(&[
        put(1, 0, 10, "x", "1"),
        put(1, 20, 30, "x", "2"),
        get(2, 5, 25, "x", Some("3")),
    ]);
    // The read alone is the witness: no write can explain it.
    assert_eq!(indices(&v), BTreeSet::from([2]), "{v}");
}

/// Read inversion: a write is in flight; client 2 sees the new value and completes,
/// then client 3 (starting later) sees the old one.
/// ```text
/// c1  [put x=1]  [put x=2 ..............................]
/// c2                [get x -> 2]
/// c3                              [get x -> 1]
/// ```
#[test]
fn read_inversion_across_clients_is_not_linearizable() {
    let v = assert_violation(&[
        put(1, 0, 5, "x", "1"),
        put(1, 10, 100, "x", "2"),
        get(2, 20, 30, "x", Some("2")),
        get(3, 40, 50, "x", Some("1")),
    ]);
    assert_eq!(v.ops.len(), 4, "{v}");
}

/// A CAS reports success although the current value was not its expected value.
#[test]
fn cas_applied_against_the_wrong_expected_value_is_not_linearizable() {
    assert_violation(&[
        put(1, 0, 5, "x", "1"),
        cas(2, 10, 20, "x", Some("0"), Some("2"), true),
    ]);
    // And one that reports failure although the expected value held.
    assert_violation(&[
        put(1, 0, 5, "x", "1"),
        cas(2, 10, 20, "x", Some("1"), Some("2"), false),
    ]);
}

/// Lost update: two concurrent increments by CAS from the same value both succeed.
/// ```text
/// c1  [put x=0]
/// c2            [cas x 0->a ok]
/// c3            [cas x 0->b ok]
/// ```
#[test]
fn lost_update_two_cas_from_the_same_value_both_succeeding() {
    let v = assert_violation(&[
        put(1, 0, 5, "x", "0"),
        cas(2, 10, 20, "x", Some("0"), Some("a"), true),
        cas(3, 12, 22, "x", Some("0"), Some("b"), true),
    ]);
    assert_eq!(v.ops.len(), 3, "{v}");
}

/// Fractured read: a transaction reads x and y while one transaction writes both,
/// and sees the new x with the old y.
/// ```text
/// c1  [txn write x=0,y=0]  [txn write x=1,y=1 ......]
/// c2                           [txn read x,y -> (1,0)]
/// ```
#[test]
fn fractured_read_by_a_txn_is_not_linearizable() {
    let v = assert_violation(&[
        txn(1, 0, 5, &[], &[("x", Some("0")), ("y", Some("0"))]),
        txn(1, 10, 40, &[], &[("x", Some("1")), ("y", Some("1"))]),
        txn(2, 15, 30, &[("x", Some("1")), ("y", Some("0"))], &[]),
    ]);
    assert_eq!(v.keys, vec![bytes("x"), bytes("y")]);
    assert_eq!(v.ops.len(), 3, "{v}");
}

/// A single-key violation is reported with its key only, however many other keys
/// (and multi-key partitions) the history has.
#[test]
fn violation_names_only_its_partition() {
    let v = assert_violation(&[
        txn(1, 0, 5, &[], &[("a", Some("0")), ("b", Some("0"))]),
        put(1, 0, 5, "x", "1"),
        get(2, 6, 7, "a", Some("0")),
        get(2, 10, 20, "x", None),
        put(3, 0, 5, "z", "1"),
    ]);
    assert_eq!(v.keys, vec![bytes("x")], "{v}");
    assert_eq!(v.partition_op_count, 2);
}

/// The witness for a stale read is exactly the three operations that matter (the
/// write the read saw, the write it missed, the read), out of a noisy history: other
/// keys, reads that were fine, a read that saw the newer value.
/// ```text
/// c1  [put x=1]       [put x=2]
/// c2          [get x -> 1]   [get x -> 2]    [get x -> 1]   (stale)
/// c3      [get x -> 1/none]        [put y=..] [get y]
/// ```
#[test]
fn minimal_witness_of_a_stale_read_is_the_ops_that_matter() {
    let history = [
        put(1, 0, 10, "x", "1"),        // 0: the value the stale read sees
        get(3, 5, 15, "x", Some("1")),  // 1
        get(2, 12, 18, "x", Some("1")), // 2
        put(3, 16, 25, "y", "a"),       // 3
        put(1, 20, 30, "x", "2"),       // 4: the write it missed
        get(2, 22, 28, "x", Some("1")), // 5: concurrent with it: fine
        get(2, 32, 38, "x", Some("2")), // 6
        get(3, 33, 39, "y", Some("a")), // 7
        get(2, 40, 50, "x", Some("1")), // 8: stale
        delete(3, 41, 45, "y"),         // 9
        get(3, 46, 49, "y", None),      // 10
    ];
    let v = assert_violation(&history);
    assert_eq!(v.keys, vec![bytes("x")]);
    assert_eq!(v.partition_op_count, 7);
    assert_eq!(indices(&v), BTreeSet::from([0, 4, 8]), "{v}");
    let text = v.to_string();
    println!("{text}");
    assert!(
        text.starts_with("not linearizable on keys [x]: minimal"),
        "{text}"
    );
    assert_eq!(
        text.lines().count(),
        4,
        "a header and one line per op:\n{text}"
    );
    assert!(text.contains("#8"), "{text}");
    assert!(text.contains("get x -> 1"), "{text}");
    assert!(text.contains("put x = 2 -> ok"), "{text}");
}

/// A hard history: 12 concurrent puts of distinct values and a read, overlapping them
/// all, of a value none of them wrote. Refuting it means trying every subset of puts
/// before the read (with the memo, still thousands of states): a tiny budget gives
/// `Unknown`, never a wrong answer, and the default budget finds the violation.
#[test]
fn tiny_budget_on_a_hard_history_gives_unknown() {
    let mut history: Vec<Op> = (0..12)
        .map(|c| put(c, c, 1_000, "x", &format!("v{c}")))
        .collect();
    history.push(get(99, 500, 600, "x", Some("nobody")));
    match check(&history, Budget::steps(100)) {
        Verdict::Unknown { reason } => assert!(reason.contains("100 steps"), "{reason}"),
        other => panic!("expected Unknown, got {other}"),
    }
    let v = assert_violation(&history);
    assert_eq!(indices(&v), BTreeSet::from([12]), "{v}");
}

// ---- scale ----------------------------------------------------------------------

/// A legal history by construction: operations run one at a time against a map (the
/// linearization point of operation `i` is `i * 100` ns), then each gets a call time
/// up to 20 µs before and a return time up to 20 µs after its point, so about 400
/// operations overlap at any time, 8 or so on each pair of keys. Some operations never
/// return (half of those took effect); transactions join keys in pairs.
fn synthetic_history(seed: u64, op_count: u64, key_count: u64) -> Vec<Op> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut written: Vec<Vec<u8>> = vec![bytes("v-initial")];
    let mut history = Vec::new();
    for i in 0..op_count {
        let point = 20_000 + i * 100;
        let call_ns = point - rng.random_range(0..=20_000);
        let return_ns = point + rng.random_range(0..=20_000);
        let k = rng.random_range(0..key_count);
        let key = format!("k{k}").into_bytes();
        let fresh = format!("v{i}").into_bytes();
        let unknown = rng.random_range(0..100) < 3;
        let took_effect = !unknown || rng.random_range(0..2) == 0;
        let (input, output) = match rng.random_range(0..100) {
            0..40 => (
                Input::Get { key: key.clone() },
                Output::Value(model.get(&key).cloned()),
            ),
            40..65 => {
                if took_effect {
                    model.insert(key.clone(), fresh.clone());
                }
                (Input::put(&key, &fresh), Output::Ok)
            }
            65..70 => {
                if took_effect {
                    model.remove(&key);
                }
                (Input::delete(&key), Output::Ok)
            }
            70..85 => {
                let expected = if rng.random_range(0..2) == 0 {
                    model.get(&key).cloned()
                } else {
                    Some(written[rng.random_range(0..written.len())].clone())
                };
                let applied = took_effect && model.get(&key) == expected.as_ref();
                if applied {
                    model.insert(key.clone(), fresh.clone());
                }
                let input = Input::Cas {
                    key: key.clone(),
                    expected,
                    new: Some(fresh.clone()),
                };
                (input, Output::Cas { applied })
            }
            _ => {
                let pair = format!("k{}", k ^ 1).into_bytes();
                let reads = vec![key.clone(), pair.clone()];
                let observed = reads.iter().map(|r| model.get(r).cloned()).collect();
                if took_effect {
                    model.insert(pair.clone(), fresh.clone());
                }
                let writes = vec![(pair, Some(fresh.clone()))];
                (
                    Input::Txn { reads, writes },
                    Output::Committed { reads: observed },
                )
            }
        };
        written.push(fresh);
        let op = Op::new(i % 16, call_ns, input);
        history.push(if unknown {
            op
        } else {
            op.returned(return_ns, output)
        });
    }
    history
}

/// 5,000 operations over 100 keys (about 50 per key, 100 per pair of keys joined by
/// transactions), heavily overlapping: linearizable within the default budget. The
/// same history with one read changed to an invented value is caught.
#[test]
fn legal_5000_op_jittered_history_is_linearizable() {
    let mut history = synthetic_history(7, 5_000, 100);
    assert_linearizable(&history);
    let read = history
        .iter()
        .rposition(|op| matches!(op.input, Input::Get { .. }) && op.return_ns().is_some())
        .expect("the history has reads");
    let op = &mut history[read];
    *op = op.clone().returned(
        op.return_ns().unwrap(),
        Output::Value(Some(bytes("invented"))),
    );
    let v = assert_violation(&history);
    assert_eq!(indices(&v), BTreeSet::from([read]), "{v}");
}

// ---- properties -----------------------------------------------------------------

/// One step of a random sequential workload: (kind, key, value choice).
fn sequential_history(steps: &[(u8, u8, u8)]) -> Vec<Op> {
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut history = Vec::new();
    for (i, &(kind, key, choice)) in steps.iter().enumerate() {
        let (t, key) = (i as u64 * 10, format!("k{key}").into_bytes());
        let value = format!("v{choice}").into_bytes();
        let (input, output) = match kind % 5 {
            0 | 1 => (
                Input::Get { key: key.clone() },
                Output::Value(model.get(&key).cloned()),
            ),
            2 => {
                model.insert(key.clone(), value.clone());
                (Input::put(&key, &value), Output::Ok)
            }
            3 => {
                let expected = Some(format!("v{}", choice % 4).into_bytes());
                let applied = model.get(&key) == expected.as_ref();
                if applied {
                    model.insert(key.clone(), value.clone());
                }
                let input = Input::Cas {
                    key: key.clone(),
                    expected,
                    new: Some(value),
                };
                (input, Output::Cas { applied })
            }
            _ => {
                let other = format!("k{}", (choice % 3)).into_bytes();
                let reads = vec![key.clone(), other.clone()];
                let observed = reads.iter().map(|k| model.get(k).cloned()).collect();
                if other == key {
                    model.remove(&key);
                } else {
                    model.insert(other.clone(), value.clone());
                }
                let writes = vec![(other.clone(), (other != key).then_some(value))];
                (
                    Input::Txn { reads, writes },
                    Output::Committed { reads: observed },
                )
            }
        };
        history.push(Op::new(i as u64 % 3, t, input).returned(t + 5, output));
    }
    history
}

proptest! {
    /// Any sequential history executed against a `BTreeMap` is linearizable; changing
    /// one read to a value never written makes it not linearizable, with that read in
    /// the witness.
    #[test]
    fn sequential_histories_are_linearizable_and_an_invented_read_is_caught(
        steps in prop::collection::vec((0u8..5, 0u8..3, 0u8..8), 1..60),
        pick in any::<prop::sample::Index>(),
    ) {
        let mut history = sequential_history(&steps);
        let verdict = check(&history, Budget::default());
        prop_assert!(verdict.is_linearizable(), "{}", verdict);
        let reads: Vec<usize> = (0..history.len())
            .filter(|&i| matches!(history[i].input, Input::Get { .. }))
            .collect();
        prop_assume!(!reads.is_empty());
        let read = reads[pick.index(reads.len())];
        let op = history[read].clone();
        history[read] = op.clone().returned(op.return_ns().unwrap(), Output::Value(Some(bytes("never"))));
        match check(&history, Budget::default()) {
            Verdict::NotLinearizable(v) => prop_assert!(
                v.ops.iter().any(|(i, _)| *i == read), "{}", v
            ),
            other => prop_assert!(false, "expected a violation, got {}", other),
        }
    }
}

/// An independent oracle for tiny histories: try every order that respects real time
/// (an operation may go next if no unplaced operation returned before its call),
/// against a `BTreeMap`; operations of unknown outcome may also never happen. As
/// documented, transactions that touch no key are ignored.
fn brute_force_linearizable(history: &[Op]) -> bool {
    fn apply(op: &Op, state: &BTreeMap<Vec<u8>, Vec<u8>>) -> Option<BTreeMap<Vec<u8>, Vec<u8>>> {
        let holds = |pairs: &[(Vec<u8>, Option<Vec<u8>>)]| {
            pairs.iter().all(|(k, v)| state.get(k) == v.as_ref())
        };
        let write = |pairs: &[(Vec<u8>, Option<Vec<u8>>)]| {
            let mut next = state.clone();
            for (k, v) in pairs {
                match v {
                    Some(v) => next.insert(k.clone(), v.clone()),
                    None => next.remove(k),
                };
            }
            next
        };
        let output = match &op.outcome {
            Outcome::Returned { output, .. } => Some(output),
            Outcome::Unknown => None,
        };
        match (&op.input, output) {
            (Input::Get { key }, Some(Output::Value(v))) => {
                (state.get(key) == v.as_ref()).then(|| state.clone())
            }
            (Input::Get { .. }, _) => Some(state.clone()),
            (Input::Put { key, value }, _) => Some(write(&[(key.clone(), Some(value.clone()))])),
            (Input::Delete { key }, _) => Some(write(&[(key.clone(), None)])),
            (Input::Cas { key, expected, new }, output) => {
                let conditions = [(key.clone(), expected.clone())];
                let writes = [(key.clone(), new.clone())];
                match output {
                    Some(Output::Cas { applied: true }) => {
                        holds(&conditions).then(|| write(&writes))
                    }
                    Some(_) => (!holds(&conditions)).then(|| state.clone()),
                    None if holds(&conditions) => Some(write(&writes)),
                    None => Some(state.clone()),
                }
            }
            (Input::CondTxn { conditions, writes }, output) => match output {
                Some(Output::Cas { applied: true }) => holds(conditions).then(|| write(writes)),
                Some(_) => (!holds(conditions)).then(|| state.clone()),
                None if holds(conditions) => Some(write(writes)),
                None => Some(state.clone()),
            },
            (
                Input::Txn {
                    reads: keys,
                    writes,
                },
                Some(Output::Committed { reads }),
            ) => {
                let seen: Vec<(Vec<u8>, Option<Vec<u8>>)> =
                    keys.iter().cloned().zip(reads.iter().cloned()).collect();
                holds(&seen).then(|| write(writes))
            }
            (Input::Txn { writes, .. }, _) => Some(write(writes)),
        }
    }
    fn search(ops: &[&Op], placed: &mut [bool], state: &BTreeMap<Vec<u8>, Vec<u8>>) -> bool {
        let done = |i: usize| placed[i] || ops[i].return_ns().is_none();
        if (0..ops.len()).all(done) {
            return true;
        }
        for i in 0..ops.len() {
            let blocked = (0..ops.len())
                .any(|j| !placed[j] && ops[j].return_ns().is_some_and(|r| r < ops[i].call_ns));
            if placed[i] || blocked {
                continue;
            }
            if let Some(next) = apply(ops[i], state) {
                placed[i] = true;
                if search(ops, placed, &next) {
                    return true;
                }
                placed[i] = false;
            }
        }
        false
    }
    let ops: Vec<&Op> = history
        .iter()
        .filter(|op| op.outcome != Outcome::Unknown || !matches!(op.input, Input::Get { .. }))
        .filter(|op| {
            !matches!(
                &op.outcome,
                Outcome::Returned {
                    output: Output::Aborted,
                    ..
                }
            )
        })
        .filter(|op| match &op.input {
            Input::Txn { reads, writes } => !reads.is_empty() || !writes.is_empty(),
            Input::CondTxn { conditions, writes } => !conditions.is_empty() || !writes.is_empty(),
            _ => true,
        })
        .collect();
    search(&ops, &mut vec![false; ops.len()], &BTreeMap::new())
}

/// A random operation on keys a and b, values 1..3 or absent, with a random output
/// (so histories come out legal or not): `kind` picks the input, `r` supplies the
/// choices, `outcome` 0 means unknown and 1 aborted.
fn random_op(client: u64, (kind, r, call_ns, duration_ns, outcome): (u8, u64, u64, u64, u8)) -> Op {
    let bits = |n: u32| (r >> (2 * n)) & 3;
    let value = |n: u32| (bits(n) != 0).then(|| bits(n).to_string().into_bytes());
    let key = |n: u32| {
        if bits(n) % 2 == 0 {
            bytes("a")
        } else {
            bytes("b")
        }
    };
    let keyed = |mask: u32, first: u32| -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        [(0, "a"), (1, "b")]
            .into_iter()
            .filter(|(i, _)| bits(mask) & (1 << i) != 0)
            .map(|(i, k)| (bytes(k), value(first + i)))
            .collect()
    };
    let (input, output) = match kind % 6 {
        0 => (Input::Get { key: key(0) }, Output::Value(value(1))),
        1 => (Input::put(key(0), bits(1).to_string()), Output::Ok),
        2 => (Input::Delete { key: key(0) }, Output::Ok),
        3 => {
            let input = Input::Cas {
                key: key(0),
                expected: value(1),
                new: value(2),
            };
            (
                input,
                Output::Cas {
                    applied: bits(3) % 2 == 0,
                },
            )
        }
        4 => {
            let reads = keyed(0, 1);
            let observed = reads.iter().map(|(_, v)| v.clone()).collect();
            let input = Input::Txn {
                reads: reads.into_iter().map(|(k, _)| k).collect(),
                writes: keyed(3, 4),
            };
            (input, Output::Committed { reads: observed })
        }
        _ => {
            let input = Input::CondTxn {
                conditions: keyed(0, 1),
                writes: keyed(3, 4),
            };
            (
                input,
                Output::Cas {
                    applied: bits(6) % 2 == 0,
                },
            )
        }
    };
    let op = Op::new(client, call_ns, input);
    match outcome {
        0 => op,
        1 => op.returned(call_ns + duration_ns, Output::Aborted),
        _ => op.returned(call_ns + duration_ns, output),
    }
}

proptest! {
    // Each case is cheap; many cases reach the rarer interleavings.
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// On random tiny concurrent histories of every kind of operation, the checker
    /// agrees with brute force, and its witness is itself not linearizable.
    #[test]
    fn checker_agrees_with_brute_force_on_tiny_histories(
        specs in prop::collection::vec((0u8..6, any::<u64>(), 0u64..20, 0u64..10, 0u8..8), 1..8),
    ) {
        let history: Vec<Op> = specs
            .into_iter()
            .enumerate()
            .map(|(i, spec)| random_op(i as u64, spec))
            .collect();
        let expected = brute_force_linearizable(&history);
        match check(&history, Budget::default()) {
            Verdict::Linearizable => prop_assert!(expected, "checker says linearizable"),
            Verdict::NotLinearizable(v) => {
                prop_assert!(!expected, "checker says not linearizable:\n{}", v);
                let witness: Vec<Op> = v.ops.iter().map(|(_, op)| op.clone()).collect();
                prop_assert!(!brute_force_linearizable(&witness), "witness is linearizable:\n{}", v);
                prop_assert!(v.ops.iter().all(|(i, op)| history[*i] == *op));
            }
            Verdict::Unknown { reason } => prop_assert!(false, "{}", reason),
        }
    }
}
