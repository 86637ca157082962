//! A 3-node cluster under concurrent clients loses its leader to SIGKILL; the client
//! history, recorded with real call and return times, must stay linearizable.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use ryu_scenarios::linearizability::{Budget, Input, Op, Outcome, Output, Verdict, check};

use crate::harness::{Clock, Cluster, Proc, StopFlag, StopOnDrop, connect};

/// Keys the clients share: few, so operations on one key overlap often.
const KEYS: u64 = 5;
const CLIENTS: u64 = 4;
/// A request not answered within this long has an unknown outcome.
const OP_TIMEOUT: Duration = Duration::from_secs(1);
/// The client id of the final reads.
const FINAL_READER: u64 = 100;

/// What one client thread hands back.
#[derive(Debug, Default)]
struct ClientRun {
    ops: Vec<Op>,
    /// Error replies that are neither `UNAVAILABLE` nor `UNKNOWN` (recorded as
    /// unknown outcomes, and reported).
    odd_errors: Vec<String>,
}

fn command(input: &Input) -> redis::Cmd {
    match input {
        Input::Get { key } => redis::cmd("GET").arg(key).clone(),
        Input::Put { key, value } => redis::cmd("SET").arg(key).arg(value).clone(),
        Input::Delete { key } => redis::cmd("DEL").arg(key).clone(),
        other => unreachable!("the clients send no {other:?}"),
    }
}

/// The checker's output for a reply; panics on a reply type the command cannot have.
fn output(input: &Input, reply: redis::Value) -> Output {
    match (input, reply) {
        (Input::Get { .. }, redis::Value::Nil) => Output::Value(None),
        (Input::Get { .. }, redis::Value::BulkString(v)) => Output::Value(Some(v)),
        (Input::Put { .. }, redis::Value::Okay) => Output::Ok,
        (Input::Delete { .. }, redis::Value::Int(n)) if n == 0 || n == 1 => Output::Ok,
        (input, reply) => panic!("{input:?} answered {reply:?}"),
    }
}

/// A closed-loop client: random gets, puts of unique values and deletes over
/// [`KEYS`] keys, against one node until a connection fails, then the next.
fn client(id: u64, seed: u64, clock: Clock, addrs: Vec<SocketAddr>, stop: StopFlag) -> ClientRun {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ id.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut run = ClientRun::default();
    let mut node = id as usize % addrs.len();
    let mut con: Option<redis::Connection> = None;
    let mut seq = 0u64;
    while !stop.is_set() {
        let c = match con.as_mut() {
            Some(c) => c,
            None => match connect(addrs[node], OP_TIMEOUT) {
                Ok(c) => con.insert(c),
                Err(_) => {
                    node = (node + 1) % addrs.len();
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            },
        };
        let key = format!("k{}", rng.random_range(0..KEYS));
        let input = match rng.random_range(0..10) {
            0..4 => {
                seq += 1;
                Input::put(&key, format!("c{id}-{seq}"))
            }
            4..8 => Input::get(&key),
            _ => Input::delete(&key),
        };
        let call_ns = clock.now_ns();
        let reply = command(&input).query::<redis::Value>(c);
        let return_ns = clock.now_ns();
        let op = Op::new(id, call_ns, input.clone());
        match reply {
            Ok(v) => {
                let out = output(&input, v);
                run.ops.push(op.returned(return_ns, out));
            }
            // Definitely no effect: the checker ignores it.
            Err(e) if e.code() == Some("UNAVAILABLE") => {
                run.ops.push(op.returned(return_ns, Output::Aborted));
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => {
                // Outcome unknown: never returned.
                run.ops.push(op);
                let server_error = e.code().is_some() && !e.is_io_error();
                if server_error && e.code() != Some("UNKNOWN") {
                    run.odd_errors.push(e.to_string());
                }
                if !server_error {
                    // I/O error or timeout: the connection's state is unknown.
                    con = None;
                    node = (node + 1) % addrs.len();
                }
            }
        }
    }
    run
}

/// Poll the survivors until one says it leads and accepts a write; returns its index.
fn failover(cluster: &mut Cluster, killed: usize, timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        for i in (0..cluster.procs.len()).filter(|&i| i != killed) {
            let addr = cluster.procs[i].spec.client;
            if crate::harness::role(&cluster.procs[i].spec).is_some_and(|r| r.role == "leader")
                && let Ok(mut c) = connect(addr, Duration::from_secs(2))
                && redis::cmd("SET")
                    .arg("probe")
                    .arg("after-failover")
                    .query::<String>(&mut c)
                    .is_ok()
            {
                return i;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no survivor became leader and served a write within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value of every key, read from `addr` as completed gets at the end of history.
fn final_reads(addr: SocketAddr, clock: &Clock) -> Vec<Op> {
    let mut c = connect(addr, Duration::from_secs(5)).expect("connect to the new leader");
    (0..KEYS)
        .map(|k| {
            let input = Input::get(format!("k{k}"));
            for _ in 0..50 {
                let call_ns = clock.now_ns();
                match command(&input).query::<redis::Value>(&mut c) {
                    Ok(v) => {
                        let out = output(&input, v);
                        return Op::new(FINAL_READER, call_ns, input).returned(clock.now_ns(), out);
                    }
                    Err(e) if e.code() == Some("UNAVAILABLE") => {
                        std::thread::sleep(Duration::from_millis(100))
                    }
                    Err(e) => panic!("final read of k{k}: {e}"),
                }
            }
            panic!("final read of k{k} stayed UNAVAILABLE for 5 s");
        })
        .collect()
}

/// Reads of `finals`' keys on `addr` answer what they answered.
fn assert_reads(addr: SocketAddr, finals: &[Op]) {
    let mut c = connect(addr, Duration::from_secs(10)).expect("connect to the restarted node");
    let deadline = Instant::now() + Duration::from_secs(10);
    for op in finals {
        let (Input::Get { key }, Outcome::Returned { output: want, .. }) = (&op.input, &op.outcome)
        else {
            unreachable!("final reads are completed gets");
        };
        loop {
            match command(&op.input).query::<redis::Value>(&mut c) {
                Ok(v) => {
                    assert_eq!(&output(&op.input, v), want, "restarted node, key {key:?}");
                    break;
                }
                Err(e) if Instant::now() < deadline && !e.is_io_error() => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(e) => panic!("the restarted node does not serve reads: {e}"),
            }
        }
    }
}

/// What a history holds, so a test cannot pass on an empty one.
#[derive(Debug)]
struct Counts {
    ops: usize,
    acked_before_kill: usize,
    acked_after_kill: usize,
    unknown: usize,
    unavailable: usize,
}

impl Counts {
    fn of(history: &[Op], kill_ns: u64) -> Counts {
        let count = |f: &dyn Fn(&Op) -> bool| history.iter().filter(|op| f(op)).count();
        Counts {
            ops: history.len(),
            acked_before_kill: count(&|op| {
                acked_write(op) && op.return_ns().is_some_and(|r| r < kill_ns)
            }),
            acked_after_kill: count(&|op| acked_write(op) && op.call_ns > kill_ns),
            unknown: count(&|op| op.outcome == Outcome::Unknown),
            unavailable: count(&|op| {
                matches!(
                    op.outcome,
                    Outcome::Returned {
                        output: Output::Aborted,
                        ..
                    }
                )
            }),
        }
    }
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "history: {} ops; writes acknowledged: {} before the kill, {} called after it; \
             {} unknown outcomes, {} UNAVAILABLE",
            self.ops, self.acked_before_kill, self.acked_after_kill, self.unknown, self.unavailable
        )
    }
}

fn acked_write(op: &Op) -> bool {
    matches!(op.input, Input::Put { .. } | Input::Delete { .. })
        && matches!(
            op.outcome,
            Outcome::Returned {
                output: Output::Ok,
                ..
            }
        )
}

#[test]
fn three_nodes_survive_leader_sigkill_and_stay_linearizable() {
    let seed = 0x5eed_0001;
    eprintln!("SEED={seed:#x}");
    let mut cluster = Cluster::new("failover", 3);
    cluster.start();
    cluster.wait_leader(Duration::from_secs(15));

    let clock = Clock::new();
    let stop = StopOnDrop(StopFlag::default());
    let clients: Vec<_> = (1..=CLIENTS)
        .map(|id| {
            let (addrs, stop) = (cluster.client_addrs(), stop.0.clone());
            std::thread::spawn(move || client(id, seed, clock, addrs, stop))
        })
        .collect();

    std::thread::sleep(Duration::from_secs(1));
    let (old, old_term) = cluster.wait_leader(Duration::from_secs(5));
    let kill_ns = clock.now_ns();
    cluster.procs[old].kill();
    let new = failover(&mut cluster, old, Duration::from_secs(10));
    let failover_ns = clock.now_ns();
    eprintln!(
        "killed leader node {} (term {old_term}) at {} ms; node {} leads and wrote {} ms later",
        cluster.procs[old].spec.id,
        kill_ns / 1_000_000,
        cluster.procs[new].spec.id,
        (failover_ns - kill_ns) / 1_000_000
    );
    // Load for ~3 s in all, and at least 1.5 s under the new leader.
    let end_ns = (3_000_000_000u64).max(failover_ns + 1_500_000_000);
    std::thread::sleep(Duration::from_nanos(end_ns.saturating_sub(clock.now_ns())));
    stop.0.set();

    let mut history = Vec::new();
    let mut odd_errors = Vec::new();
    for c in clients {
        let run = c.join().expect("a client thread panicked");
        history.extend(run.ops);
        odd_errors.extend(run.odd_errors);
    }
    let (new, _) = cluster.wait_leader(Duration::from_secs(10));
    let finals = final_reads(cluster.procs[new].spec.client, &clock);
    history.extend(finals.iter().cloned());

    let counts = Counts::of(&history, kill_ns);
    eprintln!("{counts}");
    assert!(
        odd_errors.is_empty(),
        "error replies other than UNAVAILABLE/UNKNOWN: {odd_errors:?}"
    );
    assert!(
        counts.acked_before_kill >= 20 && counts.acked_after_kill >= 20,
        "too few writes acknowledged to mean anything: {counts}"
    );

    let started = Instant::now();
    let verdict = check(&history, Budget::default());
    eprintln!("checked in {:?}", started.elapsed());
    match verdict {
        Verdict::Linearizable => {}
        Verdict::NotLinearizable(v) => panic!("not linearizable:\n{v}"),
        Verdict::Unknown { reason } => panic!("the checker gave up: {reason}"),
    }

    // The killed node restarts from what it had made durable, rejoins, and serves
    // (linearizable) reads of the final values.
    cluster.procs[old] = Proc::start(cluster.procs[old].spec.clone());
    cluster.wait_ready(old);
    assert_reads(cluster.procs[old].spec.client, &finals);
}
