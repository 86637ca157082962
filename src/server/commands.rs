//! Redis commands mapped onto the node's requests.
//!
//! # Semantics
//!
//! - `GET`, `MGET`, `EXISTS`, `SCAN`, `KEYS`, `DBSIZE` are linearizable reads
//!   (ReadIndex) on whichever node the client is connected to, followers included.
//!   `MGET` and `EXISTS` read all their keys from one snapshot; `SCAN`, `KEYS` and
//!   `DBSIZE` read a page at a time. After `READONLY` they are served from what the
//!   node has applied, without the leader (possibly stale, never torn); `READWRITE`
//!   makes them linearizable again.
//! - A plain `SET` is one replicated put. `INCR`, `INCRBY`, `DECR`, `DECRBY` outside a
//!   block are one replicated increment, applied by the node against the value at its
//!   index, so they never conflict however many clients increment one key. Every
//!   other write (`SET NX|XX|GET`, `DEL`, `MSET`, and increments inside a block) and
//!   every `MULTI`/`EXEC` block runs as one optimistic
//!   transaction: the shell reads the keys the commands need (and the watched
//!   ones) from one snapshot, computes the replies and the write set, and proposes
//!   `Txn { reads, writes }`; the node applies it only if every read value is still
//!   current when the entry is applied (identically on every replica), so the whole
//!   block is atomic and serializable at its Raft index. If a read went stale the
//!   shell recomputes and retries; if a `WATCH`ed key changed, `EXEC` answers a null
//!   array, as Redis does. A block that writes nothing is answered from the snapshot
//!   (linearizable at its index) without a log entry.
//! - Writes sent to a follower are forwarded to the leader over the peer connection.
//!
//! # Errors
//!
//! Besides Redis's own (`ERR`, `WRONGTYPE` never happens, `EXECABORT`, `NOAUTH`,
//! `WRONGPASS`), a reply can be:
//! - `-UNAVAILABLE <reason>`: the request definitely had no effect (no leader,
//!   leadership changed, a read timed out); retrying is safe.
//! - `-UNKNOWN <reason>`: a write whose outcome is unknown (the leader was lost after
//!   proposing it, or a forward timed out): read before retrying.
//! - `-BACKUPFAILED <reason>`: a backup did not complete.

use std::collections::BTreeMap;

use ryu_node::{
    BackupStrategy, Consistency, MembershipChange, Request, Response, increment, parse_integer,
};
use ryu_raft::Role;

use super::Shared;
use crate::resp::Value;

/// Attempts of an optimistic transaction whose reads went stale before it is
/// reported `UNAVAILABLE`.
const TXN_ATTEMPTS: usize = 32;
/// The largest `COUNT` a `SCAN` honours, and the page size of `KEYS`/`DBSIZE`.
const SCAN_PAGE: usize = 1000;
/// `KEYS` refuses to return more than this many keys.
const KEYS_LIMIT: usize = 100_000;
/// Commands one `MULTI` block may queue (its writes must fit one Raft entry anyway).
const MAX_QUEUED: usize = 10_000;

/// Per-connection state.
#[derive(Debug, Default)]
pub struct Session {
    pub authenticated: bool,
    /// Commands queued after `MULTI`.
    multi: Option<Vec<Op>>,
    /// A command queued after `MULTI` was refused: `EXEC` must fail.
    multi_failed: bool,
    /// `WATCH`ed keys and the value each had when watched.
    watches: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Set by `QUIT`: close after replying.
    pub quit: bool,
    /// Set by `READONLY`: plain reads (GET, MGET, EXISTS, SCAN, KEYS, DBSIZE) are
    /// served from what this node has applied, without asking the leader: a read
    /// replica's reads, possibly stale, never torn. Writes, MULTI blocks and WATCH
    /// stay linearizable. `READWRITE` clears it.
    stale_reads: bool,
}

/// A data command, parsed. These are what `MULTI` can queue.
#[derive(Debug, Clone)]
enum Op {
    Ping(Option<Vec<u8>>),
    Get(Vec<u8>),
    Set {
        key: Vec<u8>,
        value: Vec<u8>,
        nx: bool,
        xx: bool,
        get: bool,
    },
    Del(Vec<Vec<u8>>),
    Exists(Vec<Vec<u8>>),
    MGet(Vec<Vec<u8>>),
    MSet(Vec<(Vec<u8>, Vec<u8>)>),
    IncrBy(Vec<u8>, i64),
    /// `APPEND key value`: the new length.
    Append(Vec<u8>, Vec<u8>),
    /// `STRLEN key`: 0 for a missing key.
    Strlen(Vec<u8>),
    /// `GETDEL key`: the value, and the key deleted.
    GetDel(Vec<u8>),
}

impl Op {
    /// The keys whose current values computing this command needs.
    fn reads(&self) -> Vec<&[u8]> {
        match self {
            Op::Ping(_) | Op::MSet(_) => Vec::new(),
            Op::Set {
                key, nx, xx, get, ..
            } => {
                if *nx || *xx || *get {
                    vec![key]
                } else {
                    Vec::new()
                }
            }
            Op::Get(k) | Op::IncrBy(k, _) | Op::Append(k, _) | Op::Strlen(k) | Op::GetDel(k) => {
                vec![k]
            }
            Op::Del(ks) | Op::Exists(ks) | Op::MGet(ks) => ks.iter().map(|k| &k[..]).collect(),
        }
    }

    /// Compute the reply over `view` (the values read, updated by earlier commands of
    /// the same block), recording writes into `view` and `writes`.
    fn apply(
        &self,
        view: &mut BTreeMap<Vec<u8>, Option<Vec<u8>>>,
        writes: &mut BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    ) -> Value {
        let mut put = |k: &[u8], v: Option<Vec<u8>>, view: &mut BTreeMap<_, _>| {
            view.insert(k.to_vec(), v.clone());
            writes.insert(k.to_vec(), v);
        };
        let get = |view: &BTreeMap<Vec<u8>, Option<Vec<u8>>>, k: &[u8]| -> Option<Vec<u8>> {
            view.get(k).cloned().flatten()
        };
        match self {
            Op::Ping(None) => Value::Simple("PONG".into()),
            Op::Ping(Some(m)) => Value::Bulk(m.clone()),
            Op::Get(k) => bulk_or_nil(get(view, k)),
            Op::Set {
                key,
                value,
                nx,
                xx,
                get: want_old,
            } => {
                let old = get(view, key);
                let skip = (*nx && old.is_some()) || (*xx && old.is_none());
                if !skip {
                    put(key, Some(value.clone()), view);
                }
                match (*want_old, skip) {
                    (true, _) => bulk_or_nil(old),
                    (false, true) => Value::Nil,
                    (false, false) => Value::ok(),
                }
            }
            Op::Del(keys) => {
                let mut n = 0;
                for k in keys {
                    if get(view, k).is_some() {
                        n += 1;
                        put(k, None, view);
                    }
                }
                Value::Integer(n)
            }
            Op::Exists(keys) => {
                Value::Integer(keys.iter().filter(|k| get(view, k).is_some()).count() as i64)
            }
            Op::MGet(keys) => {
                Value::Array(keys.iter().map(|k| bulk_or_nil(get(view, k))).collect())
            }
            Op::MSet(pairs) => {
                for (k, v) in pairs {
                    put(k, Some(v.clone()), view);
                }
                Value::ok()
            }
            Op::Append(k, suffix) => {
                let mut v = get(view, k).unwrap_or_default();
                v.extend_from_slice(suffix);
                let n = v.len() as i64;
                put(k, Some(v), view);
                Value::Integer(n)
            }
            Op::Strlen(k) => Value::Integer(get(view, k).map_or(0, |v| v.len() as i64)),
            Op::GetDel(k) => {
                let old = get(view, k);
                if old.is_some() {
                    put(k, None, view);
                }
                bulk_or_nil(old)
            }
            // The node's own rules, so INCR in a MULTI block and alone agree.
            Op::IncrBy(k, delta) => match increment(get(view, k).as_deref(), *delta) {
                Ok(n) => {
                    put(k, Some(n.to_string().into_bytes()), view);
                    Value::Integer(n)
                }
                Err(reason) => err(format!("ERR {reason}")),
            },
        }
    }
}

/// Redis settings a client may ask for (redis-benchmark does at start), answered with
/// what holds for ryu: every write is durable before its reply, as with
/// `appendonly yes` and `appendfsync always`; there are no RDB snapshots, one
/// database and no memory limit (data lives on disk).
const CONFIG: &[(&str, &str)] = &[
    ("appendfsync", "always"),
    ("appendonly", "yes"),
    ("databases", "1"),
    ("maxmemory", "0"),
    ("save", ""),
];

/// `CONFIG GET pattern...`: the matching settings as name/value pairs (Redis 7's
/// reply shape), each setting once, in name order.
fn config_get(patterns: &[Vec<u8>]) -> Value {
    let mut out = Vec::new();
    for (name, value) in CONFIG {
        let lower = name.as_bytes();
        if patterns
            .iter()
            .any(|p| glob_match(&p.to_ascii_lowercase(), lower))
        {
            out.push(Value::Bulk(name.as_bytes().to_vec()));
            out.push(Value::Bulk(value.as_bytes().to_vec()));
        }
    }
    Value::Array(out)
}

/// An error reply, its code included (`ERR ...`, `UNAVAILABLE ...`).
fn err(text: impl Into<String>) -> Value {
    Value::Error(text.into())
}

fn bulk_or_nil(v: Option<Vec<u8>>) -> Value {
    match v {
        Some(b) => Value::Bulk(b),
        None => Value::Nil,
    }
}

/// Redis's integer syntax: optional '-', decimal digits, no spaces, no '+', no
/// leading zeros except "0" itself.
fn arity_error(name: &str) -> Value {
    err(format!(
        "ERR wrong number of arguments for '{}' command",
        name.to_ascii_lowercase()
    ))
}

fn upper(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_ascii_uppercase()
}

/// Parse a data command; `Ok(None)`: not a data command.
fn parse_op(name: &str, args: &[Vec<u8>]) -> Result<Option<Op>, Value> {
    let a = &args[1..];
    let op = match name {
        "PING" => match a {
            [] => Op::Ping(None),
            [m] => Op::Ping(Some(m.clone())),
            _ => return Err(arity_error(name)),
        },
        "GET" => match a {
            [k] => Op::Get(k.clone()),
            _ => return Err(arity_error(name)),
        },
        "SET" => {
            let [key, value, opts @ ..] = a else {
                return Err(arity_error(name));
            };
            let (mut nx, mut xx, mut get) = (false, false, false);
            for o in opts {
                match upper(o).as_str() {
                    "NX" if !xx => nx = true,
                    "XX" if !nx => xx = true,
                    "GET" => get = true,
                    "EX" | "PX" | "EXAT" | "PXAT" | "KEEPTTL" => {
                        return Err(err("ERR key expiry is not supported by ryu"));
                    }
                    _ => return Err(err("ERR syntax error")),
                }
            }
            Op::Set {
                key: key.clone(),
                value: value.clone(),
                nx,
                xx,
                get,
            }
        }
        "SETNX" => match a {
            [k, v] => Op::Set {
                key: k.clone(),
                value: v.clone(),
                nx: true,
                xx: false,
                get: false,
            },
            _ => return Err(arity_error(name)),
        },
        "GETSET" => match a {
            [k, v] => Op::Set {
                key: k.clone(),
                value: v.clone(),
                nx: false,
                xx: false,
                get: true,
            },
            _ => return Err(arity_error(name)),
        },
        "APPEND" => match a {
            [k, v] => Op::Append(k.clone(), v.clone()),
            _ => return Err(arity_error(name)),
        },
        "STRLEN" => match a {
            [k] => Op::Strlen(k.clone()),
            _ => return Err(arity_error(name)),
        },
        "GETDEL" => match a {
            [k] => Op::GetDel(k.clone()),
            _ => return Err(arity_error(name)),
        },
        "DEL" | "UNLINK" if !a.is_empty() => Op::Del(a.to_vec()),
        "EXISTS" if !a.is_empty() => Op::Exists(a.to_vec()),
        "MGET" if !a.is_empty() => Op::MGet(a.to_vec()),
        "MSET" if !a.is_empty() && a.len().is_multiple_of(2) => {
            Op::MSet(a.chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect())
        }
        "INCR" | "DECR" => match a {
            [k] => Op::IncrBy(k.clone(), if name == "INCR" { 1 } else { -1 }),
            _ => return Err(arity_error(name)),
        },
        "INCRBY" | "DECRBY" => match a {
            [k, d] => {
                let Some(d) = parse_integer(d) else {
                    return Err(err("ERR value is not an integer or out of range"));
                };
                let d = if name == "DECRBY" {
                    d.checked_neg()
                        .ok_or_else(|| err("ERR decrement would overflow"))?
                } else {
                    d
                };
                Op::IncrBy(k.clone(), d)
            }
            _ => return Err(arity_error(name)),
        },
        "DEL" | "UNLINK" | "EXISTS" | "MGET" | "MSET" => return Err(arity_error(name)),
        _ => return Ok(None),
    };
    Ok(Some(op))
}

/// Map a node answer that is not the expected success to a RESP error.
fn failure(r: Response) -> Value {
    match r {
        Response::Unavailable { reason } => err(format!("UNAVAILABLE {reason}")),
        Response::OutcomeUnknown { reason } => err(format!("UNKNOWN {reason}")),
        Response::NotLeader { leader: Some(l) } => {
            err(format!("UNAVAILABLE not the leader; node {l} leads"))
        }
        Response::NotLeader { leader: None } => err("UNAVAILABLE no leader is known"),
        Response::Invalid { reason } => err(format!("ERR {reason}")),
        Response::BackupFailed { reason } => err(format!("BACKUPFAILED {reason}")),
        other => err(format!("ERR unexpected answer from the node: {other:?}")),
    }
}

impl Session {
    /// A new connection's state; `authenticated` unless a password is configured.
    pub fn new(authenticated: bool) -> Session {
        Session {
            authenticated,
            ..Session::default()
        }
    }

    /// How this connection's plain reads are served.
    fn consistency(&self) -> Consistency {
        if self.stale_reads {
            Consistency::Stale
        } else {
            Consistency::Linearizable
        }
    }

    /// Execute one command; the caller writes the reply.
    pub async fn execute(&mut self, shared: &Shared, args: Vec<Vec<u8>>) -> Value {
        let Some(first) = args.first() else {
            return err("ERR empty command");
        };
        let name = upper(first);
        if !self.authenticated && !matches!(name.as_str(), "AUTH" | "HELLO" | "QUIT") {
            return err("NOAUTH Authentication required.");
        }
        if self.multi.is_some()
            && !matches!(
                name.as_str(),
                "EXEC" | "DISCARD" | "MULTI" | "WATCH" | "QUIT"
            )
        {
            return match parse_op(&name, &args) {
                Ok(Some(op)) => {
                    let Some(queue) = self.multi.as_mut() else {
                        return err("ERR not in MULTI");
                    };
                    if queue.len() >= MAX_QUEUED {
                        self.multi_failed = true;
                        return err(format!(
                            "ERR a MULTI block holds at most {MAX_QUEUED} commands"
                        ));
                    }
                    queue.push(op);
                    Value::Simple("QUEUED".into())
                }
                Ok(None) => {
                    self.multi_failed = true;
                    err(format!(
                        "ERR command '{}' cannot be used inside MULTI on ryu",
                        name.to_ascii_lowercase()
                    ))
                }
                Err(e) => {
                    self.multi_failed = true;
                    e
                }
            };
        }
        match parse_op(&name, &args) {
            Err(e) => return e,
            Ok(Some(op)) => return self.data(shared, op).await,
            Ok(None) => {}
        }
        let a = &args[1..];
        match name.as_str() {
            "AUTH" => self.auth(shared, a),
            "HELLO" => self.hello(shared, a),
            "QUIT" => {
                self.quit = true;
                Value::ok()
            }
            "ECHO" => match a {
                [m] => Value::Bulk(m.clone()),
                _ => arity_error(&name),
            },
            "SELECT" => match a {
                [db] if db == b"0" => Value::ok(),
                [_] => err("ERR DB index is out of range"),
                _ => arity_error(&name),
            },
            "CLIENT" => match a.first().map(|s| upper(s)).as_deref() {
                Some("ID") => Value::Integer(0),
                Some("GETNAME") => Value::Nil,
                Some(_) => Value::ok(),
                None => arity_error(&name),
            },
            "COMMAND" => Value::Array(Vec::new()),
            "READONLY" | "READWRITE" if a.is_empty() => {
                self.stale_reads = name == "READONLY";
                Value::ok()
            }
            "CONFIG" => match (a.first().map(|s| upper(s)).as_deref(), &a[1.min(a.len())..]) {
                (Some("GET"), patterns) if !patterns.is_empty() => config_get(patterns),
                (Some("SET" | "RESETSTAT" | "REWRITE"), _) => {
                    err("ERR ryu is configured by flags or its config file, not CONFIG")
                }
                _ => arity_error(&name),
            },
            "MULTI" => {
                if self.multi.is_some() {
                    return err("ERR MULTI calls can not be nested");
                }
                self.multi = Some(Vec::new());
                self.multi_failed = false;
                Value::ok()
            }
            "DISCARD" => {
                if self.multi.take().is_none() {
                    return err("ERR DISCARD without MULTI");
                }
                self.watches.clear();
                Value::ok()
            }
            "EXEC" => {
                let Some(ops) = self.multi.take() else {
                    return err("ERR EXEC without MULTI");
                };
                let watches = std::mem::take(&mut self.watches);
                if std::mem::take(&mut self.multi_failed) {
                    return err("EXECABORT Transaction discarded because of previous errors.");
                }
                match transaction(shared, &ops, &watches).await {
                    Ok(Some(replies)) => Value::Array(replies),
                    Ok(None) => Value::NilArray,
                    Err(e) => e,
                }
            }
            "WATCH" => {
                if self.multi.is_some() {
                    return err("ERR WATCH inside MULTI is not allowed");
                }
                if a.is_empty() {
                    return arity_error(&name);
                }
                for k in a {
                    if self.watches.contains_key(k) {
                        continue;
                    }
                    // Watched values are conditions of a write: always current.
                    match read(shared, k, Consistency::Linearizable).await {
                        Ok(v) => {
                            self.watches.insert(k.clone(), v);
                        }
                        Err(e) => return e,
                    }
                }
                Value::ok()
            }
            "UNWATCH" => {
                self.watches.clear();
                Value::ok()
            }
            "SCAN" => scan_command(shared, a, self.consistency()).await,
            "KEYS" => match a {
                [pattern] => keys(shared, pattern, self.consistency()).await,
                _ => arity_error(&name),
            },
            "DBSIZE" => match count_keys(shared, self.consistency()).await {
                Ok(n) => Value::Integer(n as i64),
                Err(e) => e,
            },
            "INFO" => Value::Bulk(info(shared).into_bytes()),
            "ROLE" => role(shared),
            "CLUSTER" => cluster(shared, a).await,
            "BACKUP" => backup(shared, a).await,
            _ => err(format!(
                "ERR unknown command '{}', with args beginning with: {}",
                String::from_utf8_lossy(first),
                a.iter()
                    .take(3)
                    .map(|x| format!("'{}' ", String::from_utf8_lossy(x)))
                    .collect::<String>()
            )),
        }
    }

    fn auth(&mut self, shared: &Shared, a: &[Vec<u8>]) -> Value {
        let Some(password) = &shared.config.password else {
            return err(
                "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
            );
        };
        let given = match a {
            [p] => p,
            [user, p] if user == b"default" => p,
            [_, _] => {
                return err("WRONGPASS invalid username-password pair or user is disabled.");
            }
            _ => return arity_error("auth"),
        };
        if constant_time_eq(given, password.as_bytes()) {
            self.authenticated = true;
            Value::ok()
        } else {
            err("WRONGPASS invalid username-password pair or user is disabled.")
        }
    }

    fn hello(&mut self, shared: &Shared, a: &[Vec<u8>]) -> Value {
        let mut rest = a;
        if let [version, tail @ ..] = a {
            if version != b"2" {
                return err("NOPROTO unsupported protocol version");
            }
            rest = tail;
        }
        if let [auth, user, pass, ..] = rest
            && upper(auth) == "AUTH"
        {
            let r = self.auth(shared, &[user.clone(), pass.clone()]);
            if matches!(r, Value::Error(_)) {
                return r;
            }
        }
        if !self.authenticated {
            return err(
                "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
            );
        }
        let role = match shared.metrics.status().map(|s| s.role) {
            Some(Role::Leader) => "master",
            _ => "replica",
        };
        let field = |s: &str| Value::Bulk(s.as_bytes().to_vec());
        Value::Array(vec![
            field("server"),
            field("ryu"),
            field("version"),
            field(env!("CARGO_PKG_VERSION")),
            field("proto"),
            Value::Integer(2),
            field("id"),
            Value::Integer(0),
            field("mode"),
            field("cluster"),
            field("role"),
            field(role),
            field("modules"),
            Value::Array(Vec::new()),
        ])
    }

    async fn data(&mut self, shared: &Shared, op: Op) -> Value {
        match &op {
            Op::Ping(_) => op.apply(&mut BTreeMap::new(), &mut BTreeMap::new()),
            Op::Get(k) => match read(shared, k, self.consistency()).await {
                Ok(v) => bulk_or_nil(v),
                Err(e) => e,
            },
            Op::MGet(keys) | Op::Exists(keys) => {
                match read_many(shared, keys.iter(), self.consistency()).await {
                    Ok(mut view) => op.apply(&mut view, &mut BTreeMap::new()),
                    Err(e) => e,
                }
            }
            Op::Set {
                key,
                value,
                nx: false,
                xx: false,
                get: false,
            } => match shared
                .call(Request::Put {
                    key: key.clone(),
                    value: value.clone(),
                })
                .await
            {
                Response::Committed { .. } => Value::ok(),
                r => failure(r),
            },
            // Applied on the node against the value at its index: never conflicts,
            // however many clients increment the key.
            Op::IncrBy(key, delta) => match shared
                .call(Request::Incr {
                    key: key.clone(),
                    delta: *delta,
                })
                .await
            {
                Response::Incremented { value, .. } => Value::Integer(value),
                r => failure(r),
            },
            _ => match transaction(shared, std::slice::from_ref(&op), &BTreeMap::new()).await {
                Ok(Some(mut replies)) => replies.pop().unwrap_or(Value::ok()),
                Ok(None) => Value::NilArray,
                Err(e) => e,
            },
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A read of one key (linearizable unless `consistency` says stale).
async fn read(
    shared: &Shared,
    key: &[u8],
    consistency: Consistency,
) -> Result<Option<Vec<u8>>, Value> {
    match shared
        .call(Request::Get {
            key: key.to_vec(),
            consistency,
        })
        .await
    {
        Response::Value { value, .. } => Ok(value),
        r => Err(failure(r)),
    }
}

/// Linearizable reads of several keys from one snapshot (one ReadIndex, one engine
/// read on the node): the values held together at one index.
async fn read_many<'a>(
    shared: &Shared,
    keys: impl Iterator<Item = &'a Vec<u8>>,
    consistency: Consistency,
) -> Result<BTreeMap<Vec<u8>, Option<Vec<u8>>>, Value> {
    let keys: Vec<Vec<u8>> = keys
        .cloned()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if keys.is_empty() {
        return Ok(BTreeMap::new());
    }
    if keys.len() > ryu_node::MAX_GET_MANY {
        return Err(err(format!(
            "ERR at most {} distinct keys per command",
            ryu_node::MAX_GET_MANY
        )));
    }
    match shared
        .call(Request::GetMany {
            keys: keys.clone(),
            consistency,
        })
        .await
    {
        Response::Values { values, .. } if values.len() == keys.len() => {
            Ok(keys.into_iter().zip(values).collect())
        }
        r => Err(failure(r)),
    }
}

/// Run `ops` as one optimistic transaction (see the module doc). `Ok(None)`: a
/// watched key changed (EXEC's null reply).
///
/// Every key the block reads, and every watched key, is read from one snapshot.
/// A block that writes nothing is then answered from that snapshot: it is
/// linearizable at the snapshot's index, where every watched key still had its
/// watched value. A block that writes is proposed with its reads as conditions, so
/// it commits only if they still hold when it is applied.
async fn transaction(
    shared: &Shared,
    ops: &[Op],
    watches: &BTreeMap<Vec<u8>, Option<Vec<u8>>>,
) -> Result<Option<Vec<Value>>, Value> {
    for _ in 0..TXN_ATTEMPTS {
        let wanted = ops.iter().flat_map(|op| op.reads()).map(<[u8]>::to_vec);
        let wanted: Vec<Vec<u8>> = wanted.chain(watches.keys().cloned()).collect();
        let snapshot = read_many(shared, wanted.iter(), Consistency::Linearizable).await?;
        if watches.iter().any(|(k, v)| snapshot.get(k) != Some(v)) {
            return Ok(None);
        }
        let mut view = snapshot.clone();
        let mut writes = BTreeMap::new();
        let replies: Vec<Value> = ops
            .iter()
            .map(|op| op.apply(&mut view, &mut writes))
            .collect();
        if writes.is_empty() {
            return Ok(Some(replies));
        }
        match shared
            .call(Request::Txn {
                reads: snapshot.into_iter().collect(),
                writes: writes.into_iter().collect(),
            })
            .await
        {
            Response::Committed { .. } => return Ok(Some(replies)),
            Response::Aborted { key, .. } if watches.contains_key(&key) => return Ok(None),
            Response::Aborted { .. } => continue, // a read went stale: recompute
            r => return Err(failure(r)),
        }
    }
    Err(err(
        "UNAVAILABLE the transaction kept conflicting with concurrent writes; nothing was written",
    ))
}

/// Redis glob matching (`*`, `?`, `[abc]`, `[^a-z]`, `\\x`), as `stringmatchlen`,
/// in O(pattern x subject) time: a `*` remembers where it was, and a later mismatch
/// resumes one byte further from there (later stars supersede earlier ones, which
/// is sound because a star can absorb anything an earlier one could).
pub fn glob_match(pattern: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None; // (pattern after '*', subject pos)
    while i < s.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    while p < pattern.len() && pattern[p] == b'*' {
                        p += 1;
                    }
                    if p == pattern.len() {
                        return true;
                    }
                    star = Some((p, i));
                    continue;
                }
                b'?' => {
                    p += 1;
                    i += 1;
                    continue;
                }
                b'[' => {
                    if let Some(next) = class_match(pattern, p, s[i]) {
                        p = next;
                        i += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pattern.len() => {
                    if pattern[p + 1] == s[i] {
                        p += 2;
                        i += 1;
                        continue;
                    }
                }
                c => {
                    if c == s[i] {
                        p += 1;
                        i += 1;
                        continue;
                    }
                }
            }
        }
        // Mismatch: let the last star absorb one more byte, or fail.
        match star {
            Some((sp, si)) => {
                p = sp;
                i = si + 1;
                star = Some((sp, si + 1));
            }
            None => return false,
        }
    }
    while p < pattern.len() && pattern[p] == b'*' {
        p += 1;
    }
    p == pattern.len()
}

/// Whether byte `ch` matches the class starting at `pattern[at] == b'['`: the
/// position after the class if it does.
fn class_match(pattern: &[u8], at: usize, ch: u8) -> Option<usize> {
    let mut q = at + 1;
    let negate = pattern.get(q) == Some(&b'^');
    if negate {
        q += 1;
    }
    let mut matched = false;
    while q < pattern.len() && pattern[q] != b']' {
        if pattern[q] == b'\\' && q + 1 < pattern.len() {
            matched |= pattern[q + 1] == ch;
            q += 2;
        } else if q + 2 < pattern.len() && pattern[q + 1] == b'-' && pattern[q + 2] != b']' {
            let (lo, hi) = if pattern[q] <= pattern[q + 2] {
                (pattern[q], pattern[q + 2])
            } else {
                (pattern[q + 2], pattern[q])
            };
            matched |= lo <= ch && ch <= hi;
            q += 3;
        } else {
            matched |= pattern[q] == ch;
            q += 1;
        }
    }
    if matched == negate {
        return None;
    }
    Some((q + 1).min(pattern.len()))
}

/// One page of keys from `start` on.
async fn scan_page(
    shared: &Shared,
    start: Vec<u8>,
    limit: usize,
    consistency: Consistency,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>, Value> {
    match shared
        .call(Request::Scan {
            start,
            end: None,
            limit,
            consistency,
        })
        .await
    {
        Response::Entries { entries, .. } => Ok(entries),
        r => Err(failure(r)),
    }
}

async fn all_keys(
    shared: &Shared,
    pattern: Option<&[u8]>,
    max: usize,
    consistency: Consistency,
) -> Result<Vec<Vec<u8>>, Value> {
    let mut out = Vec::new();
    let mut start = Vec::new();
    loop {
        let page = scan_page(shared, start.clone(), SCAN_PAGE, consistency).await?;
        let full = page.len() == SCAN_PAGE;
        for (k, _) in page {
            start = k.clone();
            if pattern.is_none_or(|p| glob_match(p, &k)) {
                out.push(k);
                if out.len() > max {
                    return Err(err(format!("ERR more than {max} keys match; use SCAN")));
                }
            }
        }
        if !full {
            return Ok(out);
        }
        start.push(0); // the smallest key after the last one returned
    }
}

/// The number of keys, a page at a time (nothing is collected).
async fn count_keys(shared: &Shared, consistency: Consistency) -> Result<u64, Value> {
    let mut n = 0u64;
    let mut start = Vec::new();
    loop {
        let page = scan_page(shared, start, SCAN_PAGE, consistency).await?;
        n += page.len() as u64;
        match page.last() {
            Some((k, _)) if page.len() == SCAN_PAGE => {
                start = k.clone();
                start.push(0);
            }
            _ => return Ok(n),
        }
    }
}

async fn keys(shared: &Shared, pattern: &[u8], consistency: Consistency) -> Value {
    match all_keys(shared, Some(pattern), KEYS_LIMIT, consistency).await {
        Ok(keys) => Value::Array(keys.into_iter().map(Value::Bulk).collect()),
        Err(e) => e,
    }
}

/// `SCAN cursor [MATCH pattern] [COUNT n] [TYPE string]`. Cursors are numbers (as
/// clients expect) naming a resume key held by this process; `0` starts and ends an
/// iteration. Every key present for the whole iteration is returned exactly once.
async fn scan_command(shared: &Shared, a: &[Vec<u8>], consistency: Consistency) -> Value {
    let Some(cursor) = a.first() else {
        return arity_error("scan");
    };
    let Some(cursor) = std::str::from_utf8(cursor)
        .ok()
        .and_then(|c| c.parse::<u64>().ok())
    else {
        return err("ERR invalid cursor");
    };
    let mut pattern = None;
    let mut count = 10usize;
    let mut opts = a[1..].iter();
    while let Some(o) = opts.next() {
        match (upper(o).as_str(), opts.next()) {
            ("MATCH", Some(p)) => pattern = Some(p.clone()),
            ("COUNT", Some(n)) => match parse_integer(n) {
                Some(n) if n >= 1 => count = (n as usize).min(SCAN_PAGE),
                _ => return err("ERR value is not an integer or out of range"),
            },
            ("TYPE", Some(t)) => {
                if upper(t) != "STRING" {
                    return Value::Array(vec![
                        Value::Bulk(b"0".to_vec()),
                        Value::Array(Vec::new()),
                    ]);
                }
            }
            _ => return err("ERR syntax error"),
        }
    }
    let start = if cursor == 0 {
        Vec::new()
    } else {
        match shared.cursors.lock().expect("cursor lock").get(&cursor) {
            Some(k) => k.clone(),
            None => return err("ERR invalid cursor (expired or from another node)"),
        }
    };
    let page = match scan_page(shared, start, count, consistency).await {
        Ok(p) => p,
        Err(e) => return e,
    };
    let next = if page.len() < count {
        0
    } else {
        let mut resume = page.last().map(|(k, _)| k.clone()).unwrap_or_default();
        resume.push(0);
        shared.cursors.lock().expect("cursor lock").insert(resume)
    };
    let keys = page
        .into_iter()
        .filter(|(k, _)| pattern.as_deref().is_none_or(|p| glob_match(p, k)))
        .map(|(k, _)| Value::Bulk(k))
        .collect();
    Value::Array(vec![
        Value::Bulk(next.to_string().into_bytes()),
        Value::Array(keys),
    ])
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::PreCandidate => "pre-candidate",
        Role::Candidate => "candidate",
    }
}

/// `INFO`: Redis's `# Section` / `field:value` text.
fn info(shared: &Shared) -> String {
    let mut s = String::new();
    s.push_str("# Server\r\n");
    s.push_str(&format!("ryu_version:{}\r\n", env!("CARGO_PKG_VERSION")));
    s.push_str(&format!("process_id:{}\r\n", std::process::id()));
    s.push_str(&format!(
        "tcp_port:{}\r\n",
        shared.config.client_addr.port()
    ));
    s.push_str("# Replication\r\n");
    if let Some(st) = shared.metrics.status() {
        let redis_role = if st.role == Role::Leader {
            "master"
        } else {
            "slave"
        };
        s.push_str(&format!("role:{redis_role}\r\n"));
        s.push_str(&format!("ryu_role:{}\r\n", role_name(st.role)));
        s.push_str(&format!("ryu_node_id:{}\r\n", st.id));
        s.push_str(&format!("ryu_cluster_id:{:016x}\r\n", st.cluster_id));
        s.push_str(&format!("ryu_leader_id:{}\r\n", st.leader.unwrap_or(0)));
        s.push_str(&format!("ryu_term:{}\r\n", st.term));
        s.push_str(&format!("ryu_commit_index:{}\r\n", st.commit));
        s.push_str(&format!("ryu_applied_index:{}\r\n", st.applied));
        s.push_str(&format!("ryu_voters:{}\r\n", join(&st.voters)));
        s.push_str(&format!("ryu_learners:{}\r\n", join(&st.learners)));
    }
    s
}

fn join(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

/// `ROLE`: `[role, term, leader id (0: none), commit index, applied index]`. The
/// first element is Ryu's Raft role (`leader`, `follower`, `candidate`,
/// `pre-candidate`), not Redis's `master`/`slave`.
fn role(shared: &Shared) -> Value {
    match shared.metrics.status() {
        Some(st) => Value::Array(vec![
            Value::Bulk(role_name(st.role).as_bytes().to_vec()),
            Value::Integer(st.term as i64),
            Value::Integer(st.leader.unwrap_or(0) as i64),
            Value::Integer(st.commit as i64),
            Value::Integer(st.applied as i64),
        ]),
        None => err("UNAVAILABLE the node is starting"),
    }
}

/// `CLUSTER NODES | INFO | ADD <id> | ADDLEARNER <id> | REMOVE <id>`.
async fn cluster(shared: &Shared, a: &[Vec<u8>]) -> Value {
    let sub = a.first().map(|s| upper(s)).unwrap_or_default();
    let id = || -> Result<u64, Value> {
        match a
            .get(1)
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.parse().ok())
        {
            Some(id) if id > 0 && a.len() == 2 => Ok(id),
            _ => Err(err("ERR usage: CLUSTER ADD|ADDLEARNER|REMOVE <node id>")),
        }
    };
    let change = match sub.as_str() {
        "NODES" | "INFO" => {
            let Some(st) = shared.metrics.status() else {
                return err("UNAVAILABLE the node is starting");
            };
            let mut s = String::new();
            if sub == "INFO" {
                s.push_str(&format!(
                    "cluster_state:{}\r\ncluster_id:{:016x}\r\ncluster_size:{}\r\ncluster_leader:{}\r\ncurrent_term:{}\r\n",
                    if st.leader.is_some() { "ok" } else { "fail" },
                    st.cluster_id,
                    st.voters.len(),
                    st.leader.unwrap_or(0),
                    st.term
                ));
                return Value::Bulk(s.into_bytes());
            }
            let mut members: Vec<(u64, &str)> = st.voters.iter().map(|&v| (v, "voter")).collect();
            members.extend(st.learners.iter().map(|&l| (l, "learner")));
            members.sort_unstable();
            for (m, kind) in members {
                let addr = shared
                    .config
                    .peer_address(m)
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "-".into());
                let mut flags = vec![kind];
                if st.leader == Some(m) {
                    flags.push("leader");
                }
                if m == st.id {
                    flags.push("myself");
                }
                s.push_str(&format!("{m} {addr} {}\n", flags.join(",")));
            }
            return Value::Bulk(s.into_bytes());
        }
        "ADD" => id().map(MembershipChange::AddVoter),
        "ADDLEARNER" => id().map(MembershipChange::AddLearner),
        "REMOVE" => id().map(MembershipChange::Remove),
        _ => Err(err("ERR usage: CLUSTER NODES|INFO|ADD|ADDLEARNER|REMOVE")),
    };
    if shared.config.secret.is_empty() && !matches!(change, Ok(MembershipChange::Remove(_))) {
        // Without a secret this node takes no peer connections: a new member could
        // never catch up, and the cluster would wait for it forever.
        return err(
            "ERR this node runs without a cluster secret, so it cannot talk to new members; restart it with --secret",
        );
    }
    match change {
        Err(e) => e,
        Ok(c) => match shared.call(Request::ChangeMembership(c)).await {
            Response::Committed { .. } => Value::ok(),
            r => failure(r),
        },
    }
}

/// `BACKUP LEADER|FOLLOWER <id>`, `BACKUP CLUSTER <id> [QUORUM]`: run a backup and
/// answer its result as JSON (`BACKUP STATUS`: see [`backup_status`]). `LEADER` and `CLUSTER` are carried out by the leader
/// (forwarded there); `FOLLOWER` by the node the client is connected to.
async fn backup(shared: &Shared, a: &[Vec<u8>]) -> Value {
    let usage = || {
        err(
            "ERR usage: BACKUP LEADER <id> | BACKUP FOLLOWER <id> | BACKUP CLUSTER <id> [QUORUM] | BACKUP STATUS",
        )
    };
    if a.len() == 1 && upper(&a[0]) == "STATUS" {
        return backup_status(shared);
    }
    let (Some(kind), Some(id)) = (a.first(), a.get(1)) else {
        return usage();
    };
    let strategy = match (
        upper(kind).as_str(),
        a.get(2).map(|q| upper(q)).as_deref(),
        a.len(),
    ) {
        ("LEADER", None, 2) => BackupStrategy::Leader,
        ("FOLLOWER", None, 2) => BackupStrategy::Follower,
        ("CLUSTER", None, 2) => BackupStrategy::Cluster { quorum_only: false },
        ("CLUSTER", Some("QUORUM"), 3) => BackupStrategy::Cluster { quorum_only: true },
        _ => return usage(),
    };
    let id = String::from_utf8_lossy(id).into_owned();
    let request = Request::Backup {
        id: id.clone(),
        strategy,
    };
    let response = if strategy == BackupStrategy::Follower {
        shared.core.call(request).await
    } else {
        shared.call(request).await
    };
    let (reply, summary) = match response {
        Response::BackupDone(r) => {
            let json = serde_json::json!({
                "id": r.id,
                "strategy": format!("{:?}", r.strategy).to_lowercase(),
                "node": r.node,
                "index": r.index,
                "term": r.term,
                "digest": format!("{:016x}", r.digest),
                "dir": r.dir,
                "status": "complete",
            });
            (Value::Bulk(json.to_string().into_bytes()), json)
        }
        Response::ClusterBackupDone(m) => {
            let json = serde_json::to_value(&*m).unwrap_or_default();
            if m.status == ryu_node::ClusterStatus::Complete {
                (Value::Bulk(json.to_string().into_bytes()), json)
            } else {
                (err(format!("BACKUPFAILED {json}")), json)
            }
        }
        r => {
            let reply = failure(r);
            let why = match &reply {
                Value::Error(e) => e.clone(),
                _ => String::new(),
            };
            (
                reply,
                serde_json::json!({"id": id, "status": "failed", "error": why}),
            )
        }
    };
    *shared.last_backup.lock().expect("backup status lock") = Some(summary);
    reply
}

/// `BACKUP STATUS`: the jobs copying on this node now (backups and Raft snapshots,
/// bytes done and to do) and the last backup requested through this node, as JSON.
fn backup_status(shared: &Shared) -> Value {
    let (jobs, done, total) = shared.metrics.backup_snapshot();
    let last = shared
        .last_backup
        .lock()
        .expect("backup status lock")
        .clone();
    let json = serde_json::json!({
        "running_jobs": jobs,
        "bytes_done": done,
        "bytes_total": total,
        "last": last,
    });
    Value::Bulk(json.to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_like_redis() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "", true),
            ("*", "abc", true),
            ("a*c", "abbbc", true),
            ("a*c", "abbbd", false),
            ("h?llo", "hello", true),
            ("h?llo", "hllo", false),
            ("h[ae]llo", "hallo", true),
            ("h[ae]llo", "hillo", false),
            ("h[^e]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-b]llo", "hbllo", true),
            ("h[a-b]llo", "hcllo", false),
            ("h\\*llo", "h*llo", true),
            ("h\\*llo", "hello", false),
            ("user:*:name", "user:42:name", true),
            ("*a*b", "xaxxb", true),
            ("a*b*c", "abbbc", true),
            ("a*b*c", "acb", false),
            ("*?", "", false),
            ("**", "", true),
            ("[abc", "b", true),
            ("h[\\]]llo", "h]llo", true),
        ];
        for (p, s, want) in cases {
            assert_eq!(glob_match(p.as_bytes(), s.as_bytes()), *want, "{p} vs {s}");
        }
        // Exponential for a backtracking matcher; linear-ish here.
        let subject = "a".repeat(5000);
        assert!(!glob_match(
            b"*a*a*a*a*a*a*a*a*a*a*a*a*b",
            subject.as_bytes()
        ));
    }

    /// The obvious backtracking matcher: exponential, but clearly right.
    fn reference_match(p: &[u8], s: &[u8]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some(b'*') => (0..=s.len()).any(|i| reference_match(&p[1..], &s[i..])),
            Some(b'?') => !s.is_empty() && reference_match(&p[1..], &s[1..]),
            Some(b'[') => match s.first() {
                Some(&ch) => match class_match(p, 0, ch) {
                    Some(next) => reference_match(&p[next..], &s[1..]),
                    None => false,
                },
                None => false,
            },
            Some(b'\\') if p.len() >= 2 => {
                s.first() == Some(&p[1]) && reference_match(&p[2..], &s[1..])
            }
            Some(&c) => s.first() == Some(&c) && reference_match(&p[1..], &s[1..]),
        }
    }

    proptest::proptest! {
        #[test]
        fn glob_agrees_with_the_backtracking_matcher(
            p in proptest::collection::vec(proptest::sample::select(b"ab*?[]^-\\".to_vec()), 0..9),
            s in proptest::collection::vec(proptest::sample::select(b"ab]-".to_vec()), 0..9),
        ) {
            proptest::prop_assert_eq!(glob_match(&p, &s), reference_match(&p, &s));
        }
    }

    #[test]
    fn integers_parse_as_redis_does() {
        assert_eq!(parse_integer(b"0"), Some(0));
        assert_eq!(parse_integer(b"-12"), Some(-12));
        assert_eq!(parse_integer(b"9223372036854775807"), Some(i64::MAX));
        for bad in [
            &b""[..],
            b"+1",
            b" 1",
            b"01",
            b"-0",
            b"1.5",
            b"9223372036854775808",
            b"-",
        ] {
            assert_eq!(
                parse_integer(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn blocks_compute_replies_and_writes_in_order() {
        let ops = [
            Op::IncrBy(b"n".to_vec(), 5),
            Op::Set {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                nx: true,
                xx: false,
                get: false,
            },
            Op::Get(b"n".to_vec()),
            Op::Del(vec![b"k".to_vec(), b"absent".to_vec()]),
            Op::IncrBy(b"s".to_vec(), 1),
        ];
        let mut view = BTreeMap::from([
            (b"n".to_vec(), Some(b"10".to_vec())),
            (b"k".to_vec(), None),
            (b"absent".to_vec(), None),
            (b"s".to_vec(), Some(b"abc".to_vec())),
        ]);
        let mut writes = BTreeMap::new();
        let replies: Vec<Value> = ops
            .iter()
            .map(|o| o.apply(&mut view, &mut writes))
            .collect();
        assert_eq!(
            replies,
            vec![
                Value::Integer(15),
                Value::ok(),
                Value::Bulk(b"15".to_vec()),
                Value::Integer(1),
                err("ERR value is not an integer or out of range"),
            ]
        );
        assert_eq!(
            writes,
            BTreeMap::from([(b"n".to_vec(), Some(b"15".to_vec())), (b"k".to_vec(), None)])
        );
    }
}
