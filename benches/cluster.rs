//! SET throughput and latency of a 3-node `ryu` cluster on loopback (fsync on), side by
//! side with a 3-node etcd cluster and a single redis-server with `appendfsync always`,
//! under the same closed-loop load; then ryu's throughput and p99 while coordinated
//! cluster backups run back to back, against the same load without them.
//!
//! ```sh
//! cargo bench -p ryu-server --bench cluster               # about 3 minutes
//! cargo bench -p ryu-server --bench cluster -- --quick    # a smoke run
//! ```
//!
//! Needs `etcd` (Debian: etcd-server) and `redis-server` on the PATH; a system that is
//! missing is skipped with a note. Every client sends `SET key value` (16-byte keys
//! drawn from 100,000, 100-byte values) and waits for the answer before the next
//! (closed loop); all connections go to the leader (ryu, etcd) so both replicate
//! the same way. Each cell runs `--secs` seconds `--reps` times; the table shows the
//! median of the runs. etcd is driven through its v3 JSON gateway (HTTP/1.1
//! keep-alive), which adds a little JSON cost on etcd's side. The backup rows
//! preload 100,000 keys and run `BACKUP CLUSTER` again and again during the whole
//! measurement, each node's job capped at `--backup-rate-mib` (default 32; 0 for
//! unlimited).

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // a benchmark drives real processes, sockets, files and clocks

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const KEYSPACE: u64 = 100_000;
const VALUE_BYTES: usize = 100;

struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn spawn(cmd: &mut Command, log: &Path) -> Child {
    let f = std::fs::File::create(log).expect("log file");
    cmd.stdout(Stdio::null())
        .stderr(f)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"))
}

// ---- clients ----------------------------------------------------------------------

/// A connection that can SET.
enum Conn {
    Resp(BufReader<TcpStream>),
    Etcd(BufReader<TcpStream>, String),
}

fn resp_command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// One RESP reply's text (simple, error, integer or bulk; arrays unsupported).
async fn resp_reply(r: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    let mut line = String::new();
    if r.read_line(&mut line).await? == 0 {
        return Err(std::io::Error::other("closed"));
    }
    if let Some(len) = line.strip_prefix('$') {
        let len: i64 = len.trim().parse().map_err(std::io::Error::other)?;
        if len < 0 {
            return Ok("(nil)".into());
        }
        let mut buf = vec![0u8; len as usize + 2];
        r.read_exact(&mut buf).await?;
        buf.truncate(len as usize);
        return Ok(String::from_utf8_lossy(&buf).into_owned());
    }
    Ok(line.trim_end().to_string())
}

fn b64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

async fn http_post(
    r: &mut BufReader<TcpStream>,
    host: &str,
    path: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    r.get_mut().write_all(req.as_bytes()).await?;
    let mut status = String::new();
    r.read_line(&mut status).await?;
    let code: u16 = status
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {status:?}")))?;
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).await? == 0 {
            return Err(std::io::Error::other("closed"));
        }
        if h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    Ok((code, String::from_utf8_lossy(&buf).into_owned()))
}

impl Conn {
    async fn open(kind: &Target) -> Conn {
        let s = TcpStream::connect(kind.addr()).await.expect("connect");
        s.set_nodelay(true).expect("nodelay");
        match kind {
            Target::Resp(_) => Conn::Resp(BufReader::new(s)),
            Target::Etcd(a) => Conn::Etcd(BufReader::new(s), a.clone()),
        }
    }

    async fn set(&mut self, key: &[u8], value: &[u8]) -> Result<(), String> {
        match self {
            Conn::Resp(r) => {
                r.get_mut()
                    .write_all(&resp_command(&[b"SET", key, value]))
                    .await
                    .map_err(|e| e.to_string())?;
                let reply = resp_reply(r).await.map_err(|e| e.to_string())?;
                if reply == "+OK" { Ok(()) } else { Err(reply) }
            }
            Conn::Etcd(r, host) => {
                let body = format!(r#"{{"key":"{}","value":"{}"}}"#, b64(key), b64(value));
                let (code, text) = http_post(r, host, "/v3/kv/put", &body)
                    .await
                    .map_err(|e| e.to_string())?;
                if code == 200 {
                    Ok(())
                } else {
                    Err(format!("{code}: {text}"))
                }
            }
        }
    }
}

#[derive(Clone)]
enum Target {
    Resp(String),
    Etcd(String),
}

impl Target {
    fn addr(&self) -> &str {
        match self {
            Target::Resp(a) | Target::Etcd(a) => a,
        }
    }
}

/// Closed-loop SETs from `conns` connections for `secs`: (ops/s, latency histogram µs).
async fn load(target: &Target, conns: usize, secs: f64, seed: u64) -> (f64, Histogram<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..conns {
        let target = target.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed * 1000 + c as u64);
            let mut conn = Conn::open(&target).await;
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("hist");
            let value = vec![b'v'; VALUE_BYTES];
            let mut errors = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("key:{:012}", rng.random_range(0..KEYSPACE));
                let t = Instant::now();
                match conn.set(key.as_bytes(), &value).await {
                    Ok(()) => {
                        let _ = h.record(t.elapsed().as_micros().max(1) as u64);
                    }
                    Err(e) => {
                        errors += 1;
                        if errors == 1 {
                            eprintln!("  a SET failed: {e}");
                        }
                        conn = Conn::open(&target).await;
                    }
                }
            }
            h
        }));
    }
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("hist");
    for t in tasks {
        total.add(t.await.expect("client task")).expect("add");
    }
    let elapsed = start.elapsed().as_secs_f64();
    (total.len() as f64 / elapsed, total)
}

#[derive(Clone, Copy, Default)]
struct Cell {
    ops: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn measure(target: &Target, conns: usize, secs: f64, reps: usize) -> Cell {
    let mut ops = Vec::new();
    let mut p50 = Vec::new();
    let mut p99 = Vec::new();
    for rep in 0..reps {
        let (o, h) = load(target, conns, secs, rep as u64).await;
        ops.push(o);
        p50.push(h.value_at_quantile(0.5) as f64 / 1000.0);
        p99.push(h.value_at_quantile(0.99) as f64 / 1000.0);
    }
    Cell {
        ops: median(ops),
        p50_ms: median(p50),
        p99_ms: median(p99),
    }
}

// ---- systems ------------------------------------------------------------------------

struct Ryu {
    _procs: Procs,
    clients: Vec<String>,
    http: Vec<String>,
}

async fn resp_call(addr: &str, args: &[&[u8]]) -> std::io::Result<String> {
    let s = TcpStream::connect(addr).await?;
    let mut r = BufReader::new(s);
    r.get_mut().write_all(&resp_command(args)).await?;
    // ROLE answers an array: read its header and the first element only.
    let mut first = String::new();
    r.read_line(&mut first).await?;
    if first.starts_with('*') {
        return resp_reply(&mut r).await;
    }
    if let Some(len) = first.strip_prefix('$') {
        let len: usize = len.trim().parse().map_err(std::io::Error::other)?;
        let mut buf = vec![0u8; len + 2];
        r.read_exact(&mut buf).await?;
        buf.truncate(len);
        return Ok(String::from_utf8_lossy(&buf).into_owned());
    }
    Ok(first.trim_end().to_string())
}

async fn start_ryu(bin: &Path, dir: &Path, backup_rate_mib: u64) -> Ryu {
    let ports: Vec<[u16; 3]> = (0..3)
        .map(|_| [free_port(), free_port(), free_port()])
        .collect();
    let cluster = (0..3)
        .map(|i| format!("{}=127.0.0.1:{}", i + 1, ports[i][1]))
        .collect::<Vec<_>>()
        .join(",");
    let mut procs = Procs(Vec::new());
    for (i, p) in ports.iter().enumerate() {
        let id = i + 1;
        procs.0.push(spawn(
            Command::new(bin)
                .arg("serve")
                .args(["--id", &id.to_string()])
                .arg("--data-dir")
                .arg(dir.join(format!("n{id}")))
                .arg("--backup-dir")
                .arg(dir.join("backups"))
                .args(["--client-addr", &format!("127.0.0.1:{}", p[0])])
                .args(["--peer-addr", &format!("127.0.0.1:{}", p[1])])
                .args(["--http-addr", &format!("127.0.0.1:{}", p[2])])
                .args(["--initial-cluster", &cluster])
                .args(["--secret", "bench-secret"])
                .args(["--backup-rate-mib", &backup_rate_mib.to_string()])
                .env("RUST_LOG", "warn"),
            &dir.join(format!("n{id}.log")),
        ));
    }
    Ryu {
        _procs: procs,
        clients: ports
            .iter()
            .map(|p| format!("127.0.0.1:{}", p[0]))
            .collect(),
        http: ports
            .iter()
            .map(|p| format!("127.0.0.1:{}", p[2]))
            .collect(),
    }
}

async fn ryu_leader(ryu: &Ryu) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        for a in &ryu.clients {
            if let Ok(role) = resp_call(a, &[b"ROLE"]).await
                && role == "leader"
            {
                return a.clone();
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no ryu leader within 30 s");
}

struct Etcd {
    _procs: Procs,
    clients: Vec<String>,
}

fn start_etcd(dir: &Path) -> Etcd {
    let ports: Vec<[u16; 2]> = (0..3).map(|_| [free_port(), free_port()]).collect();
    let cluster = (0..3)
        .map(|i| format!("e{}=http://127.0.0.1:{}", i + 1, ports[i][1]))
        .collect::<Vec<_>>()
        .join(",");
    let mut procs = Procs(Vec::new());
    for (i, p) in ports.iter().enumerate() {
        let name = format!("e{}", i + 1);
        let client = format!("http://127.0.0.1:{}", p[0]);
        let peer = format!("http://127.0.0.1:{}", p[1]);
        procs.0.push(spawn(
            Command::new("etcd")
                .args(["--name", &name])
                .arg("--data-dir")
                .arg(dir.join(&name))
                .args([
                    "--listen-client-urls",
                    &client,
                    "--advertise-client-urls",
                    &client,
                ])
                .args([
                    "--listen-peer-urls",
                    &peer,
                    "--initial-advertise-peer-urls",
                    &peer,
                ])
                .args([
                    "--initial-cluster",
                    &cluster,
                    "--initial-cluster-state",
                    "new",
                ])
                .args([
                    "--initial-cluster-token",
                    "ryu-bench",
                    "--log-level",
                    "warn",
                ]),
            &dir.join(format!("{name}.log")),
        ));
    }
    Etcd {
        _procs: procs,
        clients: ports
            .iter()
            .map(|p| format!("127.0.0.1:{}", p[0]))
            .collect(),
    }
}

async fn etcd_leader(etcd: &Etcd) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        for a in &etcd.clients {
            let Ok(s) = TcpStream::connect(a).await else {
                continue;
            };
            let mut r = BufReader::new(s);
            if let Ok((200, body)) = http_post(&mut r, a, "/v3/maintenance/status", "{}").await
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&body)
                && v["header"]["member_id"].is_string()
                && v["header"]["member_id"] == v["leader"]
            {
                return a.clone();
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no etcd leader within 30 s");
}

fn start_redis(dir: &Path) -> (Procs, String) {
    let port = free_port();
    let p = spawn(
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(dir),
        &dir.join("redis.log"),
    );
    (Procs(vec![p]), format!("127.0.0.1:{port}"))
}

async fn wait_resp(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = resp_call(addr, &[b"PING"]).await
            && r == "+PONG"
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{addr} does not answer PING");
}

/// Fill the keyspace so backups have something to copy.
async fn preload(target: &Target, keys: u64) {
    let mut tasks = Vec::new();
    for c in 0..16u64 {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&target).await;
            let value = vec![b'p'; VALUE_BYTES];
            let mut k = c;
            while k < keys {
                let key = format!("key:{k:012}");
                conn.set(key.as_bytes(), &value).await.expect("preload SET");
                k += 16;
            }
        }));
    }
    for t in tasks {
        t.await.expect("preload task");
    }
}

/// The lines of a node's `/metrics` starting with `prefix`.
async fn metrics_lines(http: &str, prefix: &str) -> Vec<String> {
    let Ok(mut s) = TcpStream::connect(http).await else {
        return Vec::new();
    };
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {http}\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return Vec::new();
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body).await;
    body.lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

fn fmt_ops(x: f64) -> String {
    format!("{x:.0}")
}

fn ratio(a: f64, b: Option<f64>) -> String {
    match b {
        Some(b) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".into(),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let get = |name: &str, default: f64| -> f64 {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let secs = get("--secs", if quick { 2.0 } else { 5.0 });
    let reps = get("--reps", if quick { 1.0 } else { 3.0 }) as usize;
    let backup_rate_mib = get("--backup-rate-mib", 32.0) as u64;
    let conns = [1usize, 16, 64];
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_ryu"));
    let root = tempfile::tempdir().expect("tempdir");
    println!(
        "cluster bench: {secs} s x {reps} reps per cell, {VALUE_BYTES}-byte values, {KEYSPACE} keys, binary {}",
        bin.display()
    );

    // ryu
    let ryu_dir = root.path().join("ryu");
    std::fs::create_dir_all(&ryu_dir).expect("dir");
    let ryu = start_ryu(&bin, &ryu_dir, backup_rate_mib).await;
    let leader = ryu_leader(&ryu).await;
    let ryu_t = Target::Resp(leader.clone());
    let mut ryu_cells = Vec::new();
    for &c in &conns {
        ryu_cells.push(measure(&ryu_t, c, secs, reps).await);
        eprintln!("ryu {c} conns done");
    }
    // The leader's own view of those runs: how long its node thread's turns took.
    let leader_http = ryu
        .clients
        .iter()
        .position(|a| *a == leader)
        .map(|i| ryu.http[i].clone());
    let node_turns = match leader_http {
        Some(h) => metrics_lines(&h, "ryu_node_turn_seconds{").await,
        None => Vec::new(),
    };
    // ryu during coordinated cluster backups, against the same load without them.
    preload(&ryu_t, if quick { 5_000 } else { KEYSPACE }).await;
    let base = measure(&ryu_t, 16, secs, reps).await;
    let stop = Arc::new(AtomicBool::new(false));
    let backups = {
        let stop = stop.clone();
        let leader = leader.clone();
        tokio::spawn(async move {
            let mut done = 0u32;
            let mut failed = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("bench-{done}-{failed}");
                match resp_call(&leader, &[b"BACKUP", b"CLUSTER", id.as_bytes()]).await {
                    Ok(r) if r.contains("\"complete\"") => done += 1,
                    Ok(r) => {
                        failed += 1;
                        eprintln!("  backup {id}: {r}");
                    }
                    Err(e) => {
                        failed += 1;
                        eprintln!("  backup {id}: {e}");
                    }
                }
            }
            (done, failed)
        })
    };
    let during = measure(&ryu_t, 16, secs, reps).await;
    stop.store(true, Ordering::Relaxed);
    let (backups_done, backups_failed) = backups.await.expect("backup task");
    if backups_failed > 0 {
        // Say what each node thought, and what it logged, while it still runs.
        for (i, addr) in ryu.clients.iter().enumerate() {
            let role = resp_call(addr, &[b"ROLE"]).await;
            eprintln!("  node {} at {addr}: ROLE {role:?}", i + 1);
            let log = ryu_dir.join(format!("n{}.log", i + 1));
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            for line in text
                .lines()
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
            {
                eprintln!("    {line}");
            }
        }
    }
    drop(ryu);

    // etcd
    let etcd_cells = if have("etcd") {
        let dir = root.path().join("etcd");
        std::fs::create_dir_all(&dir).expect("dir");
        let etcd = start_etcd(&dir);
        let t = Target::Etcd(etcd_leader(&etcd).await);
        let mut cells = Vec::new();
        for &c in &conns {
            cells.push(Some(measure(&t, c, secs, reps).await));
            eprintln!("etcd {c} conns done");
        }
        cells
    } else {
        println!("(etcd not found: install Debian's etcd-server to compare)");
        vec![None; conns.len()]
    };

    // redis
    let redis_cells = if have("redis-server") {
        let dir = root.path().join("redis");
        std::fs::create_dir_all(&dir).expect("dir");
        let (_p, addr) = start_redis(&dir);
        wait_resp(&addr).await;
        let t = Target::Resp(addr);
        let mut cells = Vec::new();
        for &c in &conns {
            cells.push(Some(measure(&t, c, secs, reps).await));
            eprintln!("redis {c} conns done");
        }
        cells
    } else {
        println!("(redis-server not found: install Debian's redis-server to compare)");
        vec![None; conns.len()]
    };

    println!();
    println!(
        "| conns | ryu SET/s | etcd PUT/s | redis SET/s | ryu/etcd | ryu/redis | ryu p50 | etcd p50 | redis p50 | ryu p99 | etcd p99 | redis p99 |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let ms = |c: Option<Cell>, f: fn(&Cell) -> f64| {
        c.map(|c| format!("{:.2} ms", f(&c))).unwrap_or("-".into())
    };
    for (i, &c) in conns.iter().enumerate() {
        let r = ryu_cells[i];
        let e = etcd_cells[i];
        let d = redis_cells[i];
        println!(
            "| {c} | {} | {} | {} | {} | {} | {:.2} ms | {} | {} | {:.2} ms | {} | {} |",
            fmt_ops(r.ops),
            e.map(|x| fmt_ops(x.ops)).unwrap_or("-".into()),
            d.map(|x| fmt_ops(x.ops)).unwrap_or("-".into()),
            ratio(r.ops, e.map(|x| x.ops)),
            ratio(r.ops, d.map(|x| x.ops)),
            r.p50_ms,
            ms(e, |c| c.p50_ms),
            ms(d, |c| c.p50_ms),
            r.p99_ms,
            ms(e, |c| c.p99_ms),
            ms(d, |c| c.p99_ms),
        );
    }
    println!();
    println!("ryu leader's node-thread turn durations over the runs above (seconds):");
    for l in &node_turns {
        println!("  {l}");
    }
    println!();
    println!("| ryu, 16 conns | SET/s | p50 | p99 |");
    println!("|---|---:|---:|---:|");
    println!(
        "| no backup | {} | {:.2} ms | {:.2} ms |",
        fmt_ops(base.ops),
        base.p50_ms,
        base.p99_ms
    );
    println!(
        "| cluster backups back to back, each job at most {backup_rate_mib} MiB/s ({backups_done} complete, {backups_failed} failed) | {} | {:.2} ms | {:.2} ms |",
        fmt_ops(during.ops),
        during.p50_ms,
        during.p99_ms
    );
    println!(
        "| during / without | {:.2}x | {:.2}x | {:.2}x |",
        during.ops / base.ops,
        during.p50_ms / base.p50_ms,
        during.p99_ms / base.p99_ms
    );
}
