//! Real `ryu serve` processes for the tests: free ports, per-node temp directories and
//! logs, a kill-on-drop guard that prints the logs' tails when a test panics, and the
//! small clients (RESP through the `redis` crate, raw TCP, HTTP) the tests talk with.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The `ryu` binary under test.
pub const RYU: &str = env!("CARGO_BIN_EXE_ryu");
/// The Raft tick the tests run with: elections after 0.5 to 1 s.
pub const TICK_MS: u64 = 50;
/// The shared cluster secret of every test cluster.
pub const SECRET: &str = "integration-test-secret";

/// Nanoseconds since the clock was made: the one time axis of a recorded history.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            start: Instant::now(),
        }
    }

    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).expect("a test runs for less than 584 years")
    }
}

/// `n` distinct free ports on 127.0.0.1 for a child to listen on, from below the
/// kernel's ephemeral range. Ports picked by binding port 0 came from that range, and
/// between their release and the child's bind any outgoing connection (the tests'
/// own clients, in parallel tests) could take one as its local port: a node then
/// failed with "Address already in use" (about one run in ten of this binary). Below
/// the range only other listeners compete: a counter keeps this process's tests apart,
/// the process id spreads concurrent test processes, and each port is checked free by
/// binding it (all `n` at once, so they differ).
pub fn free_ports(n: usize) -> Vec<u16> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // The low end of the ephemeral range (Linux); a machine without the file, or
    // with a range that leaves too little below it, gets ports from the kernel.
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(0);
    const FIRST: u32 = 10_000;
    if low < FIRST + 2_000 {
        let listeners: Vec<TcpListener> = (0..n)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
            .collect();
        return listeners
            .iter()
            .map(|l| l.local_addr().expect("a bound address").port())
            .collect();
    }
    let span = low - FIRST;
    let start = std::process::id().wrapping_mul(7919) % span;
    let mut listeners = Vec::new();
    for _ in 0..span {
        if listeners.len() == n {
            break;
        }
        let k = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = FIRST + (start + k) % span;
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port as u16)) {
            listeners.push(l);
        }
    }
    assert_eq!(listeners.len(), n, "no {n} free ports below {low}");
    listeners
        .iter()
        .map(|l| l.local_addr().expect("a bound address").port())
        .collect()
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Everything `ryu serve` is started with.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub id: u64,
    pub client: SocketAddr,
    pub peer: SocketAddr,
    pub http: SocketAddr,
    pub data_dir: PathBuf,
    pub backup_dir: PathBuf,
    /// stdout and stderr of every incarnation, appended.
    pub log: PathBuf,
    /// `--initial-cluster`; empty for a single node.
    pub initial_cluster: String,
    pub secret: Option<String>,
    pub password: Option<String>,
}

impl NodeSpec {
    /// A node with fresh ports whose files live under `root/n<id>`.
    pub fn new(id: u64, root: &Path, backup_dir: &Path) -> NodeSpec {
        let p = free_ports(3);
        let dir = root.join(format!("n{id}"));
        std::fs::create_dir_all(&dir).expect("create the node's directory");
        NodeSpec {
            id,
            client: local(p[0]),
            peer: local(p[1]),
            http: local(p[2]),
            data_dir: dir.join("data"),
            backup_dir: backup_dir.to_path_buf(),
            log: dir.join("ryu.log"),
            initial_cluster: String::new(),
            secret: None,
            password: None,
        }
    }
}

/// One `ryu serve` child process, SIGKILLed on drop if still running.
#[derive(Debug)]
pub struct Proc {
    pub spec: NodeSpec,
    child: Option<Child>,
}

impl Proc {
    pub fn start(spec: NodeSpec) -> Proc {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log)
            .expect("open the node's log");
        let mut cmd = Command::new(RYU);
        cmd.arg("serve")
            .arg("--id")
            .arg(spec.id.to_string())
            .arg("--data-dir")
            .arg(&spec.data_dir)
            .arg("--backup-dir")
            .arg(&spec.backup_dir)
            .arg("--client-addr")
            .arg(spec.client.to_string())
            .arg("--peer-addr")
            .arg(spec.peer.to_string())
            .arg("--http-addr")
            .arg(spec.http.to_string())
            .arg("--tick-ms")
            .arg(TICK_MS.to_string())
            .env_remove("RYU_SECRET")
            .env_remove("RYU_PASSWORD")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log);
        if !spec.initial_cluster.is_empty() {
            cmd.arg("--initial-cluster").arg(&spec.initial_cluster);
        }
        if let Some(s) = &spec.secret {
            cmd.arg("--secret").arg(s);
        }
        if let Some(p) = &spec.password {
            cmd.arg("--password").arg(p);
        }
        let child = cmd.spawn().expect("spawn ryu serve");
        Proc {
            spec,
            child: Some(child),
        }
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM without waiting.
    pub fn sigterm(&self) {
        if let Some(c) = &self.child {
            let status = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status()
                .expect("run kill -TERM");
            assert!(status.success(), "kill -TERM {} failed", c.id());
        }
    }

    /// Wait for the process to exit by itself, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let c = self.child.as_mut().expect("a running process");
        loop {
            if let Some(status) = c.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "node {} did not exit within {timeout:?}",
                self.spec.id
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sets its flag when dropped, so worker threads stop even when the test panics.
#[derive(Debug, Clone, Default)]
pub struct StopFlag(pub Arc<AtomicBool>);

impl StopFlag {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    pub fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Owned by the test thread: dropping it (on return or panic) stops the workers.
#[derive(Debug)]
pub struct StopOnDrop(pub StopFlag);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.set();
    }
}

/// The last `lines` lines of a file (lossy UTF-8), for failure reports.
pub fn tail(path: &Path, lines: usize) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return format!("(no log at {})", path.display());
    };
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A group of nodes under one temp directory. On drop every child is killed; if the
/// thread is panicking (a failed assertion), the tail of every node's log is printed
/// first. Set `RYU_TEST_KEEP=1` to keep the directory for a post-mortem.
#[derive(Debug)]
pub struct Cluster {
    pub name: String,
    /// What each node is started with; edit before [`Cluster::start`].
    pub specs: Vec<NodeSpec>,
    /// The started processes, in the order of `specs`.
    pub procs: Vec<Proc>,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    /// `n` nodes (ids 1..=n) with fresh ports, sharing one backup store; a multi-node
    /// cluster gets the shared secret and one `--initial-cluster`. Nothing runs until
    /// [`Cluster::start`].
    pub fn new(name: &str, n: u64) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix(&format!("ryu-{name}-"))
            .tempdir()
            .expect("a temp dir");
        let backup_dir = dir.path().join("backups");
        let mut specs: Vec<NodeSpec> = (1..=n)
            .map(|id| NodeSpec::new(id, dir.path(), &backup_dir))
            .collect();
        if n > 1 {
            let initial = specs
                .iter()
                .map(|s| format!("{}={}", s.id, s.peer))
                .collect::<Vec<_>>()
                .join(",");
            for s in &mut specs {
                s.initial_cluster = initial.clone();
                s.secret = Some(SECRET.to_string());
            }
        }
        Cluster {
            name: name.to_string(),
            specs,
            procs: Vec::new(),
            dir,
        }
    }

    /// Start every node, then wait until each answers `PING`.
    pub fn start(&mut self) {
        assert!(self.procs.is_empty(), "cluster {} started twice", self.name);
        for s in &self.specs {
            self.procs.push(Proc::start(s.clone()));
        }
        for i in 0..self.procs.len() {
            self.wait_ready(i);
        }
    }

    /// The node at `i` answers `PING` within 15 s (it may still be electing).
    pub fn wait_ready(&mut self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(15);
        let addr = self.procs[i].spec.client;
        loop {
            // Any reply will do (`NOAUTH` from a node with a password too).
            if let Ok(mut c) = connect(addr, Duration::from_secs(1)) {
                match redis::cmd("PING").query::<String>(&mut c) {
                    Ok(_) => return,
                    Err(e) if !e.is_io_error() => return,
                    Err(_) => {}
                }
            }
            assert!(
                self.procs[i].is_running(),
                "node {} exited during start-up",
                self.procs[i].spec.id
            );
            assert!(
                Instant::now() < deadline,
                "node {} did not answer PING within 15 s",
                self.procs[i].spec.id
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Start one more node, `id`, with the cluster's `--initial-cluster` and secret
    /// (it is not listed there: it comes up as an empty non-member until a
    /// membership change adds it); waits until it answers `PING`. Returns its index.
    pub fn start_extra(&mut self, id: u64) -> usize {
        let backup_dir = self.specs[0].backup_dir.clone();
        let mut spec = NodeSpec::new(id, self.dir.path(), &backup_dir);
        spec.initial_cluster = self.specs[0].initial_cluster.clone();
        spec.secret = self.specs[0].secret.clone();
        self.specs.push(spec.clone());
        self.procs.push(Proc::start(spec));
        let i = self.procs.len() - 1;
        self.wait_ready(i);
        i
    }

    /// Start the node at `i` again (same spec, same data directory) after it exited;
    /// waits until it answers `PING`.
    pub fn restart(&mut self, i: usize) {
        assert!(
            !self.procs[i].is_running(),
            "node {} is still running",
            self.procs[i].spec.id
        );
        self.procs[i] = Proc::start(self.specs[i].clone());
        self.wait_ready(i);
    }

    pub fn client_addrs(&self) -> Vec<SocketAddr> {
        self.specs.iter().map(|s| s.client).collect()
    }

    /// Wait until one of the running nodes reports itself leader; returns its index
    /// and its term.
    pub fn wait_leader(&mut self, timeout: Duration) -> (usize, i64) {
        let deadline = Instant::now() + timeout;
        loop {
            for i in 0..self.procs.len() {
                if !self.procs[i].is_running() {
                    continue;
                }
                if let Some(r) = role(&self.procs[i].spec)
                    && r.role == "leader"
                {
                    return (i, r.term);
                }
            }
            assert!(
                Instant::now() < deadline,
                "cluster {} elected no leader within {timeout:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM every running node at once, then wait for each to exit cleanly.
    pub fn terminate(&mut self) {
        for p in &self.procs {
            p.sigterm();
        }
        for p in &mut self.procs {
            let status = p.wait_exit(Duration::from_secs(20));
            assert!(
                status.success(),
                "node {} exited with {status} after SIGTERM",
                p.spec.id
            );
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for p in &mut self.procs {
            p.kill();
        }
        if std::thread::panicking() {
            for s in &self.specs {
                eprintln!(
                    "\n===== cluster {} node {} log ({}), last 60 lines =====\n{}",
                    self.name,
                    s.id,
                    s.log.display(),
                    tail(&s.log, 60)
                );
            }
        }
        if std::env::var_os("RYU_TEST_KEEP").is_some() {
            let kept = std::mem::replace(
                &mut self.dir,
                tempfile::tempdir().expect("a placeholder temp dir"),
            );
            eprintln!("kept {}", kept.keep().display());
        }
    }
}

// ---- clients --------------------------------------------------------------------

/// A RESP connection with read and write timeouts.
pub fn connect(addr: SocketAddr, timeout: Duration) -> redis::RedisResult<redis::Connection> {
    connect_url(&format!("redis://{addr}/"), timeout)
}

/// A RESP connection to a node, authenticated if it has a password.
pub fn connect_node(spec: &NodeSpec, timeout: Duration) -> redis::RedisResult<redis::Connection> {
    match &spec.password {
        Some(pw) => connect_url(&format!("redis://:{pw}@{}/", spec.client), timeout),
        None => connect(spec.client, timeout),
    }
}

fn connect_url(url: &str, timeout: Duration) -> redis::RedisResult<redis::Connection> {
    let con = redis::Client::open(url)?.get_connection_with_timeout(timeout)?;
    con.set_read_timeout(Some(timeout))?;
    con.set_write_timeout(Some(timeout))?;
    Ok(con)
}

/// A node's `ROLE` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub role: String,
    pub term: i64,
    pub leader: i64,
    pub commit: i64,
    pub applied: i64,
}

/// `ROLE`, or `None` if the node cannot be reached or is starting.
pub fn role(spec: &NodeSpec) -> Option<Role> {
    let mut c = connect_node(spec, Duration::from_millis(500)).ok()?;
    let (role, term, leader, commit, applied) = redis::cmd("ROLE")
        .query::<(String, i64, i64, i64, i64)>(&mut c)
        .ok()?;
    Some(Role {
        role,
        term,
        leader,
        commit,
        applied,
    })
}

/// `field:value` from an `INFO` reply.
pub fn info_field(con: &mut redis::Connection, field: &str) -> String {
    let info: String = redis::cmd("INFO").query(con).expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("INFO has no {field}: {info}"))
        .trim()
        .to_string()
}

/// One HTTP/1.1 GET; returns (status code, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("HTTP connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set_read_timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").expect("HTTP write");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("HTTP read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    (code, body.to_string())
}

/// The value of an unlabelled Prometheus sample.
pub fn metric(body: &str, name: &str) -> u64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("/metrics has no sample {name}:\n{body}"))
}

/// Run the `ryu` binary with `args`, killing it (and failing the test) if it has not
/// exited within `timeout`; returns (exit code, stdout + stderr).
pub fn ryu_timed(args: &[&str], timeout: Duration) -> (i32, String) {
    let mut child = Command::new(RYU)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ryu");
    let mut readers = Vec::new();
    let out = child
        .stdout
        .take()
        .map(|r| Box::new(r) as Box<dyn Read + Send>);
    let err = child
        .stderr
        .take()
        .map(|r| Box::new(r) as Box<dyn Read + Send>);
    for mut r in [out, err].into_iter().flatten() {
        readers.push(std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        }));
    }
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`ryu {}` did not exit within {timeout:?}", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let text: String = readers
        .into_iter()
        .map(|h| String::from_utf8_lossy(&h.join().expect("a reader thread")).into_owned())
        .collect();
    (status.code().unwrap_or(-1), text)
}

/// Run the `ryu` binary with `args`; returns (exit code, stdout + stderr).
pub fn ryu(args: &[&str]) -> (i32, String) {
    let out = Command::new(RYU)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ryu");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}
