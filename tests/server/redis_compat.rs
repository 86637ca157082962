//! What redis-cli users and Redis client libraries rely on, through the `redis`
//! crate: SET's options, APPEND/STRLEN/GETDEL, INCR, MSET/MGET, DEL and EXISTS counts, SCAN, MULTI/EXEC,
//! WATCH and AUTH behave as in Redis.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::harness::{Cluster, connect};

type Con = redis::Connection;

fn cmd(con: &mut Con, args: &[&str]) -> redis::RedisResult<redis::Value> {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query(con)
}

/// The error code of a reply that must be an error.
fn error_code(r: redis::RedisResult<redis::Value>) -> (String, String) {
    match r {
        Err(e) => (e.code().unwrap_or("").to_string(), e.to_string()),
        Ok(v) => panic!("expected an error reply, got {v:?}"),
    }
}

fn bulk(s: &str) -> redis::Value {
    redis::Value::BulkString(s.as_bytes().to_vec())
}

fn set_options(con: &mut Con) {
    use redis::Value::{Int, Nil, Okay};
    assert_eq!(cmd(con, &["SET", "k", "v1", "NX"]).unwrap(), Okay);
    assert_eq!(cmd(con, &["SET", "k", "v2", "NX"]).unwrap(), Nil);
    assert_eq!(cmd(con, &["GET", "k"]).unwrap(), bulk("v1"));
    assert_eq!(cmd(con, &["SET", "k", "v3", "XX"]).unwrap(), Okay);
    assert_eq!(cmd(con, &["SET", "absent", "v", "XX"]).unwrap(), Nil);
    assert_eq!(cmd(con, &["EXISTS", "absent"]).unwrap(), Int(0));
    assert_eq!(cmd(con, &["SET", "k", "v4", "GET"]).unwrap(), bulk("v3"));
    assert_eq!(cmd(con, &["SET", "fresh", "f", "GET"]).unwrap(), Nil);
    assert_eq!(cmd(con, &["GET", "k"]).unwrap(), bulk("v4"));
    assert_eq!(cmd(con, &["GET", "fresh"]).unwrap(), bulk("f"));
    let (code, _) = error_code(cmd(con, &["SET", "k", "v", "NX", "XX"]));
    assert_eq!(code, "ERR");
}

/// Values up to the limit are stored whole; a larger value or key is refused with a
/// clear error and changes nothing.
fn size_limits(con: &mut Con) {
    use redis::Value::Okay;
    let largest = "v".repeat(ryu_engine::MAX_VALUE_BYTES);
    assert_eq!(cmd(con, &["SET", "big", &largest]).unwrap(), Okay);
    assert_eq!(cmd(con, &["GET", "big"]).unwrap(), bulk(&largest));
    let too_large = "w".repeat(ryu_engine::MAX_VALUE_BYTES + 1);
    let (code, text) = error_code(cmd(con, &["SET", "big", &too_large]));
    assert_eq!(code, "ERR");
    assert!(text.contains("exceeds"), "{text}");
    assert_eq!(cmd(con, &["GET", "big"]).unwrap(), bulk(&largest));
    let long_key = "k".repeat(ryu_engine::MAX_KEY_BYTES + 1);
    let (code, text) = error_code(cmd(con, &["SET", &long_key, "v"]));
    assert_eq!(code, "ERR");
    assert!(text.contains("exceeds"), "{text}");
}

fn strings(con: &mut Con) {
    use redis::Value::{Int, Nil};
    assert_eq!(cmd(con, &["APPEND", "s", "Hello"]).unwrap(), Int(5));
    assert_eq!(cmd(con, &["APPEND", "s", " World"]).unwrap(), Int(11));
    assert_eq!(cmd(con, &["GET", "s"]).unwrap(), bulk("Hello World"));
    assert_eq!(cmd(con, &["STRLEN", "s"]).unwrap(), Int(11));
    assert_eq!(cmd(con, &["STRLEN", "nothing"]).unwrap(), Int(0));
    assert_eq!(cmd(con, &["GETDEL", "s"]).unwrap(), bulk("Hello World"));
    assert_eq!(cmd(con, &["GETDEL", "s"]).unwrap(), Nil);
    assert_eq!(cmd(con, &["EXISTS", "s"]).unwrap(), Int(0));
    // An append past the value limit is refused and changes nothing.
    let most = "x".repeat(ryu_engine::MAX_VALUE_BYTES);
    cmd(con, &["SET", "s", &most]).unwrap();
    let (code, _) = error_code(cmd(con, &["APPEND", "s", "y"]));
    assert_eq!(code, "ERR");
    assert_eq!(cmd(con, &["STRLEN", "s"]).unwrap(), Int(most.len() as i64));
}

fn counters(con: &mut Con) {
    use redis::Value::{Int, Okay};
    assert_eq!(cmd(con, &["INCR", "n"]).unwrap(), Int(1));
    assert_eq!(cmd(con, &["INCRBY", "n", "41"]).unwrap(), Int(42));
    assert_eq!(cmd(con, &["DECRBY", "n", "50"]).unwrap(), Int(-8));
    assert_eq!(cmd(con, &["SET", "text", "abc"]).unwrap(), Okay);
    for args in [
        &["INCR", "text"][..],
        &["INCRBY", "text", "2"],
        &["INCRBY", "n", "two"],
    ] {
        let (code, text) = error_code(cmd(con, args));
        assert_eq!(code, "ERR", "{args:?}");
        assert!(text.contains("not an integer"), "{args:?}: {text}");
    }
    assert_eq!(cmd(con, &["GET", "text"]).unwrap(), bulk("abc"));
    assert_eq!(cmd(con, &["GET", "n"]).unwrap(), bulk("-8"));
}

/// Many clients incrementing one key, as redis-benchmark's INCR test does: every
/// increment succeeds (none is refused for contention) and none is lost. They were
/// optimistic transactions once, and 16 clients on one key made some give up with
/// `UNAVAILABLE the transaction kept conflicting`.
fn concurrent_increments(addr: std::net::SocketAddr) {
    const CLIENTS: i64 = 16;
    const EACH: i64 = 50;
    let threads: Vec<_> = (0..CLIENTS)
        .map(|c| {
            std::thread::spawn(move || {
                let mut con = connect(addr, Duration::from_secs(5)).expect("connect");
                let mut seen = Vec::new();
                for i in 0..EACH {
                    let args = if (c + i) % 2 == 0 {
                        vec!["INCR", "hot"]
                    } else {
                        vec!["INCRBY", "hot", "1"]
                    };
                    match cmd(&mut con, &args) {
                        Ok(redis::Value::Int(n)) => seen.push(n),
                        other => panic!("client {c}: {other:?}"),
                    }
                }
                seen
            })
        })
        .collect();
    let mut all: Vec<i64> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("client thread"))
        .collect();
    all.sort_unstable();
    // Each increment saw its own new value: exactly 1..=total, once each.
    assert_eq!(all, (1..=CLIENTS * EACH).collect::<Vec<i64>>());
    let mut con = connect(addr, Duration::from_secs(5)).expect("connect");
    assert_eq!(
        cmd(&mut con, &["GET", "hot"]).unwrap(),
        bulk(&(CLIENTS * EACH).to_string())
    );
}

/// What redis-benchmark asks at start, and a refused CONFIG SET.
fn config(con: &mut Con) {
    use redis::Value::Array;
    assert_eq!(
        cmd(con, &["CONFIG", "GET", "save"]).unwrap(),
        Array(vec![bulk("save"), bulk("")])
    );
    assert_eq!(
        cmd(con, &["CONFIG", "GET", "append*"]).unwrap(),
        Array(vec![
            bulk("appendfsync"),
            bulk("always"),
            bulk("appendonly"),
            bulk("yes")
        ])
    );
    assert_eq!(
        cmd(con, &["CONFIG", "GET", "no-such-setting"]).unwrap(),
        Array(vec![])
    );
    let (code, _) = error_code(cmd(con, &["CONFIG", "SET", "save", ""]));
    assert_eq!(code, "ERR");
    let (code, _) = error_code(cmd(con, &["CONFIG", "GET"]));
    assert_eq!(code, "ERR");
}

fn multi_key(con: &mut Con) {
    use redis::Value::{Array, Int, Nil, Okay};
    assert_eq!(
        cmd(con, &["MSET", "a", "1", "b", "2", "c", "3"]).unwrap(),
        Okay
    );
    assert_eq!(
        cmd(con, &["MGET", "a", "b", "nope", "c"]).unwrap(),
        Array(vec![bulk("1"), bulk("2"), Nil, bulk("3")])
    );
    assert_eq!(cmd(con, &["DEL", "a", "b", "nope"]).unwrap(), Int(2));
    assert_eq!(cmd(con, &["DEL", "a"]).unwrap(), Int(0));
    assert_eq!(
        cmd(con, &["EXISTS", "c", "c", "nope", "a"]).unwrap(),
        Int(2)
    );
    let (code, _) = error_code(cmd(con, &["MSET", "a", "1", "b"]));
    assert_eq!(code, "ERR");
}

/// Iterate SCAN to the end; returns every key returned (with repeats) and the number
/// of calls.
fn scan_all(con: &mut Con, options: &[&str]) -> (Vec<String>, usize) {
    let mut cursor = "0".to_string();
    let mut keys = Vec::new();
    let mut calls = 0;
    loop {
        let mut c = redis::cmd("SCAN");
        c.arg(&cursor);
        for o in options {
            c.arg(*o);
        }
        let (next, page): (String, Vec<String>) = c.query(con).expect("SCAN");
        calls += 1;
        keys.extend(page);
        assert!(calls < 1000, "SCAN does not end");
        if next == "0" {
            return (keys, calls);
        }
        cursor = next;
    }
}

fn scan(con: &mut Con) {
    let expected: Vec<String> = (0..250).map(|i| format!("scan:{i:03}")).collect();
    for chunk in expected.chunks(50) {
        let mut mset = redis::cmd("MSET");
        for k in chunk {
            mset.arg(k).arg("x");
        }
        mset.query::<()>(con).expect("MSET");
    }
    for options in [&[][..], &["COUNT", "17"], &["COUNT", "1000"]] {
        let (keys, calls) = scan_all(con, options);
        let distinct: BTreeSet<&String> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len(), "SCAN {options:?} repeated keys");
        let ours: Vec<&String> = keys.iter().filter(|k| k.starts_with("scan:")).collect();
        assert_eq!(ours.len(), 250, "SCAN {options:?} in {calls} calls");
        let ours: BTreeSet<&String> = ours.into_iter().collect();
        assert_eq!(ours, expected.iter().collect(), "SCAN {options:?}");
        if options.is_empty() {
            assert!(calls > 25, "SCAN's default COUNT 10 took {calls} calls");
        }
    }
    let (keys, calls) = scan_all(con, &["MATCH", "scan:1*", "COUNT", "30"]);
    let want: Vec<String> = (100..200).map(|i| format!("scan:{i:03}")).collect();
    let mut got = keys.clone();
    got.sort();
    assert_eq!(got, want, "SCAN MATCH scan:1* in {calls} calls");
    let (keys, _) = scan_all(con, &["MATCH", "scan:?4[5-9]"]);
    let got: BTreeSet<String> = keys.into_iter().collect();
    let want: BTreeSet<String> = [
        45, 46, 47, 48, 49, 145, 146, 147, 148, 149, 245, 246, 247, 248, 249,
    ]
    .iter()
    .map(|i| format!("scan:{i:03}"))
    .collect();
    assert_eq!(got, want);
}

fn transactions(con: &mut Con, other: &mut Con) {
    use redis::Value::{Array, Int, Nil, Okay, SimpleString};
    // MULTI/EXEC by hand: QUEUED, then every reply in order.
    assert_eq!(cmd(con, &["MULTI"]).unwrap(), Okay);
    let queued = SimpleString("QUEUED".into());
    assert_eq!(cmd(con, &["SET", "x", "1"]).unwrap(), queued);
    assert_eq!(cmd(con, &["INCR", "x"]).unwrap(), queued);
    assert_eq!(cmd(con, &["GET", "x"]).unwrap(), queued);
    assert_eq!(cmd(con, &["DEL", "x", "y"]).unwrap(), queued);
    assert_eq!(
        cmd(con, &["EXEC"]).unwrap(),
        Array(vec![Okay, Int(2), bulk("2"), Int(1)])
    );
    assert_eq!(cmd(con, &["EXISTS", "x"]).unwrap(), Int(0));

    // The redis crate's atomic pipeline is the same thing.
    let (ok, n, v): (String, i64, String) = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("y")
        .arg("10")
        .cmd("INCRBY")
        .arg("y")
        .arg("5")
        .cmd("GET")
        .arg("y")
        .query(con)
        .expect("MULTI/EXEC pipeline");
    assert_eq!((ok.as_str(), n, v.as_str()), ("OK", 15, "15"));

    // A refused command inside MULTI aborts the block.
    assert_eq!(cmd(con, &["MULTI"]).unwrap(), Okay);
    assert_eq!(cmd(con, &["SET", "y", "never"]).unwrap(), queued);
    let (code, _) = error_code(cmd(con, &["NOSUCHCOMMAND"]));
    assert_eq!(code, "ERR");
    let (code, _) = error_code(cmd(con, &["EXEC"]));
    assert_eq!(code, "EXECABORT");
    assert_eq!(cmd(con, &["GET", "y"]).unwrap(), bulk("15"));

    // WATCH: a change from another connection makes EXEC answer nil.
    assert_eq!(cmd(con, &["SET", "w", "start"]).unwrap(), Okay);
    assert_eq!(cmd(con, &["WATCH", "w"]).unwrap(), Okay);
    assert_eq!(cmd(other, &["SET", "w", "theirs"]).unwrap(), Okay);
    let r: Option<(String,)> = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("w")
        .arg("mine")
        .query(con)
        .expect("EXEC");
    assert_eq!(r, None, "EXEC after a watched key changed must answer nil");
    assert_eq!(cmd(con, &["GET", "w"]).unwrap(), bulk("theirs"));
    // Without a change the same block commits.
    assert_eq!(cmd(con, &["WATCH", "w"]).unwrap(), Okay);
    let r: Option<(String,)> = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("w")
        .arg("mine")
        .query(con)
        .expect("EXEC");
    assert_eq!(r, Some(("OK".to_string(),)));
    assert_eq!(cmd(other, &["GET", "w"]).unwrap(), bulk("mine"));
    // A watched key that was absent, then created elsewhere, fails the block too.
    assert_eq!(cmd(con, &["WATCH", "w2"]).unwrap(), Okay);
    assert_eq!(cmd(other, &["SET", "w2", "theirs"]).unwrap(), Okay);
    assert_eq!(cmd(con, &["MULTI"]).unwrap(), Okay);
    assert_eq!(cmd(con, &["SET", "w2", "mine"]).unwrap(), queued);
    assert_eq!(cmd(con, &["EXEC"]).unwrap(), Nil);
    assert_eq!(cmd(con, &["GET", "w2"]).unwrap(), bulk("theirs"));
}

fn auth() {
    let mut node = Cluster::new("auth", 1);
    node.specs[0].password = Some("pw".into());
    node.start();
    node.wait_leader(Duration::from_secs(15));
    let addr = node.procs[0].spec.client;
    let mut con = connect(addr, Duration::from_secs(5)).expect("connect");
    let (code, _) = error_code(cmd(&mut con, &["GET", "k"]));
    assert_eq!(code, "NOAUTH");
    let (code, _) = error_code(cmd(&mut con, &["SET", "k", "v"]));
    assert_eq!(code, "NOAUTH");
    let (code, _) = error_code(cmd(&mut con, &["AUTH", "wrong"]));
    assert_eq!(code, "WRONGPASS");
    let (code, _) = error_code(cmd(&mut con, &["AUTH", "default", "wrong"]));
    assert_eq!(code, "WRONGPASS");
    let (code, _) = error_code(cmd(&mut con, &["GET", "k"]));
    assert_eq!(code, "NOAUTH", "a failed AUTH must not authenticate");
    assert_eq!(cmd(&mut con, &["AUTH", "pw"]).unwrap(), redis::Value::Okay);
    assert_eq!(
        cmd(&mut con, &["SET", "k", "v"]).unwrap(),
        redis::Value::Okay
    );
    // A client library that puts the password in its URL authenticates on connect.
    let client = redis::Client::open(format!("redis://:pw@{addr}/")).expect("a URL");
    let mut con = client
        .get_connection_with_timeout(Duration::from_secs(5))
        .expect("connect with the password");
    assert_eq!(cmd(&mut con, &["GET", "k"]).unwrap(), bulk("v"));
    let bad = redis::Client::open(format!("redis://:nope@{addr}/")).expect("a URL");
    assert!(
        bad.get_connection_with_timeout(Duration::from_secs(5))
            .is_err(),
        "a wrong password in the URL must fail the connection"
    );
}

#[test]
fn redis_cli_style_commands_behave_like_redis() {
    let mut node = Cluster::new("redis", 1);
    node.start();
    node.wait_leader(Duration::from_secs(15));
    let addr = node.procs[0].spec.client;
    let mut con = connect(addr, Duration::from_secs(5)).expect("connect");
    let mut other = connect(addr, Duration::from_secs(5)).expect("connect");
    let (code, _) = error_code(cmd(&mut con, &["AUTH", "pw"]));
    assert_eq!(code, "ERR", "AUTH without a configured password");

    set_options(&mut con);
    size_limits(&mut con);
    strings(&mut con);
    counters(&mut con);
    concurrent_increments(addr);
    config(&mut con);
    multi_key(&mut con);
    scan(&mut con);
    transactions(&mut con, &mut other);
    auth();
}
