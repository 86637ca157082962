//! The peer transport: authenticated TCP connections between `ryu` processes.
//!
//! - Every connection starts with the handshake of [`crate::frame`] (cluster id and
//!   an HMAC challenge-response over the shared secret, both directions); then it
//!   carries [`crate::frame`] frames whose payloads are [`crate::wire`] messages, in
//!   both directions. A node dials every peer it has an address for and accepts
//!   whoever authenticates, so a node added later is reachable as soon as it dials
//!   in, even by nodes that have no address for it.
//! - Sending never blocks the node thread: each connection has a bounded queue (in
//!   frames and in bytes); a message that does not fit, or has no connection, is
//!   dropped and counted. Raft retransmits what is lost, and a slow peer cannot make
//!   this node buffer without bound.
//! - A bad handshake, an oversized or corrupt frame, an undecodable payload, or a
//!   message claiming another sender closes the connection with the reason logged;
//!   nothing a peer sends can crash the node.
//! - Dialing retries with exponential backoff (100 ms doubling to 5 s, reset after a
//!   successful handshake).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ryu_node::{Envelope, Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use super::core::{CoreHandle, Outbox};
use super::metrics::Metrics;
use crate::frame::{
    DEFAULT_MAX_FRAME_BYTES, Dialer, FrameDecoder, HANDSHAKE_MAX_FRAME_BYTES, HandshakeConfig,
    Listener, NONCE_BYTES, encode_frame,
};
use crate::wire::{self, PeerMessage};

/// Frames queued per connection before new ones are dropped.
const QUEUE_FRAMES: usize = 1024;
/// Bytes queued per connection before new frames are dropped.
const QUEUE_BYTES: usize = 64 << 20;
/// A handshake must complete within this long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// A forwarded request not answered within this long has an unknown outcome.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// The same for a forwarded backup.
const BACKUP_FORWARD_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// Connections still in their handshake; more are closed at once.
const MAX_PENDING_HANDSHAKES: usize = 64;

struct Forward {
    conn: u64,
    read_only: bool,
    reply: oneshot::Sender<Response>,
}

/// The answer to a forwarded request whose reply can no longer arrive: only a
/// read is known to have had no effect; a write, a backup or a membership change
/// may have happened.
fn lost(read_only: bool, why: String) -> Response {
    if read_only {
        Response::Unavailable { reason: why }
    } else {
        Response::OutcomeUnknown { reason: why }
    }
}

fn is_read_only(r: &Request) -> bool {
    matches!(
        r,
        Request::Get { .. } | Request::Scan { .. } | Request::Status
    )
}

/// How long to wait for a forwarded request's answer. Backups take as long as
/// copying the database takes; everything else answers within a few elections.
fn forward_timeout(r: &Request) -> Duration {
    match r {
        Request::Backup { .. } => BACKUP_FORWARD_TIMEOUT,
        _ => FORWARD_TIMEOUT,
    }
}

struct Route {
    conn: u64,
    tx: mpsc::Sender<Vec<u8>>,
    queued: Arc<AtomicUsize>,
}

/// The transport: routes to peers, pending forwards.
pub struct Transport {
    me: u64,
    handshake: OnceLock<HandshakeConfig>,
    core: OnceLock<CoreHandle>,
    routes: Mutex<BTreeMap<u64, Vec<Route>>>,
    /// Forwarded requests awaiting their reply: id -> (the connection it went out
    /// on, whether it writes, the waiter). The reply comes back on the same
    /// connection, so when that connection drops the waiters are answered at once.
    forwards: Mutex<BTreeMap<u64, Forward>>,
    next_id: AtomicU64,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

impl Transport {
    pub fn new(me: u64, metrics: Arc<Metrics>) -> Arc<Transport> {
        Arc::new(Transport {
            me,
            handshake: OnceLock::new(),
            core: OnceLock::new(),
            routes: Mutex::new(BTreeMap::new()),
            forwards: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(1),
            metrics,
        })
    }

    /// Called once the node is open (its directory decides the cluster id).
    pub fn attach(&self, core: CoreHandle, handshake: HandshakeConfig) {
        let _ = self.core.set(core);
        let _ = self.handshake.set(handshake);
    }

    /// Queue one encoded message for `to`: the connection it went out on, or
    /// `None` if it was dropped.
    fn send_to(&self, to: u64, msg: &PeerMessage) -> Option<u64> {
        let mut frame = Vec::new();
        encode_frame(&wire::encode(msg), &mut frame);
        let routes = self.routes.lock().expect("routes lock");
        // Always the newest connection: after a silent network failure the peer's
        // fresh connection works while the old one may be half open until TCP
        // gives up on it. Messages to one peer keep their order while it lasts.
        let Some(route) = routes.get(&to).and_then(|r| r.last()) else {
            self.metrics.incr(&self.metrics.peer_frames_dropped);
            return None;
        };
        let len = frame.len();
        if route.queued.load(Ordering::Relaxed) + len > QUEUE_BYTES {
            self.metrics.incr(&self.metrics.peer_frames_dropped);
            return None;
        }
        match route.tx.try_send(frame) {
            Ok(()) => {
                route.queued.fetch_add(len, Ordering::Relaxed);
                Some(route.conn)
            }
            Err(_) => {
                self.metrics.incr(&self.metrics.peer_frames_dropped);
                None
            }
        }
    }

    /// Send a client request to the process of node `to` and wait for its node's
    /// answer.
    pub async fn forward(&self, to: u64, request: Request) -> Response {
        let read_only = is_read_only(&request);
        let timeout = forward_timeout(&request);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.metrics.incr(&self.metrics.forwarded);
        {
            // Registered under the lock that also sends, so the connection it goes
            // out on is known before any reply or drop can be seen.
            let mut forwards = self.forwards.lock().expect("forwards lock");
            match self.send_to(to, &PeerMessage::Forward { id, request }) {
                Some(conn) => {
                    forwards.insert(
                        id,
                        Forward {
                            conn,
                            read_only,
                            reply: tx,
                        },
                    );
                }
                None => {
                    // Never sent: it had no effect, whatever it was.
                    return Response::Unavailable {
                        reason: format!("no connection to the leader (node {to})"),
                    };
                }
            }
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => lost(read_only, format!("the connection to node {to} dropped")),
            Err(_) => {
                self.forwards.lock().expect("forwards lock").remove(&id);
                lost(
                    read_only,
                    format!("node {to} did not answer the forwarded request"),
                )
            }
        }
    }

    /// A connection dropped: the forwards that went out on it get no reply.
    fn fail_forwards(&self, conn: u64, peer: u64) {
        let mut forwards = self.forwards.lock().expect("forwards lock");
        let gone: Vec<u64> = forwards
            .iter()
            .filter(|(_, f)| f.conn == conn)
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if let Some(f) = forwards.remove(&id) {
                let why = format!("the connection to node {peer} dropped before its answer");
                let _ = f.reply.send(lost(f.read_only, why));
            }
        }
    }

    fn register(&self, peer: u64, conn: u64, tx: mpsc::Sender<Vec<u8>>, queued: Arc<AtomicUsize>) {
        self.routes
            .lock()
            .expect("routes lock")
            .entry(peer)
            .or_default()
            .push(Route { conn, tx, queued });
    }

    fn unregister(&self, peer: u64, conn: u64) {
        let mut routes = self.routes.lock().expect("routes lock");
        if let Some(r) = routes.get_mut(&peer) {
            r.retain(|r| r.conn != conn);
            if r.is_empty() {
                routes.remove(&peer);
            }
        }
    }

    /// Peers with a live connection.
    pub fn connected(&self) -> Vec<u64> {
        self.routes
            .lock()
            .expect("routes lock")
            .keys()
            .copied()
            .collect()
    }
}

impl Outbox for Transport {
    fn send(&self, envelope: Envelope) {
        let to = envelope.to;
        if self.send_to(to, &PeerMessage::Node(envelope)).is_some() {
            self.metrics.incr(&self.metrics.peer_frames_out);
        }
    }
}

fn nonce() -> [u8; NONCE_BYTES] {
    let mut n = [0u8; NONCE_BYTES];
    getrandom::fill(&mut n).expect("the OS random source");
    n
}

/// Accept peers forever.
pub async fn listen(transport: Arc<Transport>, listener: TcpListener) {
    let pending = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES));
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "peer accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            transport
                .metrics
                .incr(&transport.metrics.peer_connections_rejected);
            tracing::warn!(%addr, "too many peer handshakes in progress; connection refused");
            continue;
        };
        let t = transport.clone();
        tokio::spawn(async move {
            let handshake =
                tokio::time::timeout(HANDSHAKE_TIMEOUT, accept_handshake(&t, stream)).await;
            drop(permit);
            match handshake {
                Ok(Ok((peer, stream, decoder))) => {
                    run_connection(t, peer, stream, decoder, addr).await
                }
                Ok(Err(why)) => {
                    t.metrics.incr(&t.metrics.peer_connections_rejected);
                    tracing::warn!(%addr, reason = %why, "peer connection refused");
                }
                Err(_) => {
                    t.metrics.incr(&t.metrics.peer_connections_rejected);
                    tracing::warn!(%addr, "peer handshake timed out");
                }
            }
        });
    }
}

/// Keep a connection to `peer` at `addr` open forever, redialing with backoff.
pub async fn dial(transport: Arc<Transport>, peer: u64, addr: SocketAddr) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let attempt = async {
            let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
            dial_handshake(&transport, peer, stream).await
        };
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, attempt).await {
            Ok(Ok((stream, decoder))) => {
                backoff = Duration::from_millis(100);
                tracing::info!(peer, %addr, "connected to peer");
                run_connection(transport.clone(), peer, stream, decoder, addr).await;
            }
            Ok(Err(why)) => tracing::debug!(peer, %addr, reason = %why, "dialing peer failed"),
            Err(_) => tracing::debug!(peer, %addr, "dialing peer timed out"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn read_frame(stream: &mut TcpStream, decoder: &mut FrameDecoder) -> Result<Vec<u8>, String> {
    let mut buf = [0u8; 4096];
    loop {
        if let Some(f) = decoder.next_frame().map_err(|e| e.to_string())? {
            return Ok(f);
        }
        let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed during the handshake".into());
        }
        decoder.push(&buf[..n]);
    }
}

async fn write_frame(stream: &mut TcpStream, payload: &[u8]) -> Result<(), String> {
    let mut out = Vec::new();
    encode_frame(payload, &mut out);
    stream.write_all(&out).await.map_err(|e| e.to_string())
}

fn handshake_config(t: &Transport) -> Result<&HandshakeConfig, String> {
    let cfg = t.handshake.get().ok_or("the node is not open yet")?;
    if cfg.secret.is_empty() {
        return Err("no cluster secret is configured: this node takes no peers".into());
    }
    Ok(cfg)
}

async fn accept_handshake(
    t: &Transport,
    mut stream: TcpStream,
) -> Result<(u64, TcpStream, FrameDecoder), String> {
    let cfg = handshake_config(t)?;
    let mut decoder = FrameDecoder::new(HANDSHAKE_MAX_FRAME_BYTES);
    let hello = read_frame(&mut stream, &mut decoder).await?;
    let (awaiting, challenge) = Listener::new(cfg, nonce())
        .on_hello(&hello)
        .map_err(|e| e.to_string())?;
    write_frame(&mut stream, &challenge).await?;
    let proof = read_frame(&mut stream, &mut decoder).await?;
    let peer = awaiting.on_proof(&proof).map_err(|e| e.to_string())?;
    decoder.set_max_payload(DEFAULT_MAX_FRAME_BYTES);
    Ok((peer.node_id, stream, decoder))
}

async fn dial_handshake(
    t: &Transport,
    peer: u64,
    mut stream: TcpStream,
) -> Result<(TcpStream, FrameDecoder), String> {
    let cfg = handshake_config(t)?;
    let mut decoder = FrameDecoder::new(HANDSHAKE_MAX_FRAME_BYTES);
    let (dialer, hello) = Dialer::new(cfg, peer, nonce());
    write_frame(&mut stream, &hello).await?;
    let challenge = read_frame(&mut stream, &mut decoder).await?;
    let (proof, _) = dialer.on_challenge(&challenge).map_err(|e| e.to_string())?;
    write_frame(&mut stream, &proof).await?;
    decoder.set_max_payload(DEFAULT_MAX_FRAME_BYTES);
    Ok((stream, decoder))
}

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// Carry frames both ways until either side fails.
async fn run_connection(
    t: Arc<Transport>,
    peer: u64,
    stream: TcpStream,
    mut decoder: FrameDecoder,
    addr: SocketAddr,
) {
    let conn = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
    let _ = stream.set_nodelay(true);
    let (mut rd, wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(QUEUE_FRAMES);
    let queued = Arc::new(AtomicUsize::new(0));
    t.register(peer, conn, tx.clone(), queued.clone());
    let writer_queued = queued.clone();
    let writer = tokio::spawn(async move {
        let mut w = BufWriter::with_capacity(256 << 10, wr);
        while let Some(frame) = rx.recv().await {
            writer_queued.fetch_sub(frame.len(), Ordering::Relaxed);
            if w.write_all(&frame).await.is_err() {
                return;
            }
            // Coalesce whatever else is queued into the same write.
            while let Ok(frame) = rx.try_recv() {
                writer_queued.fetch_sub(frame.len(), Ordering::Relaxed);
                if w.write_all(&frame).await.is_err() {
                    return;
                }
            }
            if w.flush().await.is_err() {
                return;
            }
        }
    });
    let reason = read_loop(&t, peer, &mut rd, &mut decoder, &tx, &queued).await;
    t.unregister(peer, conn);
    t.fail_forwards(conn, peer);
    writer.abort();
    if reason.starts_with("closed") {
        tracing::info!(peer, %addr, "peer connection closed");
    } else {
        t.metrics.incr(&t.metrics.peer_connections_rejected);
        tracing::warn!(peer, %addr, %reason, "peer connection dropped");
    }
}

async fn read_loop(
    t: &Arc<Transport>,
    peer: u64,
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    decoder: &mut FrameDecoder,
    tx: &mpsc::Sender<Vec<u8>>,
    queued: &Arc<AtomicUsize>,
) -> String {
    let core = t.core.get().expect("attached before connections").clone();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        loop {
            let payload = match decoder.next_frame() {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => return format!("bad frame: {e}"),
            };
            t.metrics.incr(&t.metrics.peer_frames_in);
            let msg = match wire::decode(&payload) {
                Ok(m) => m,
                Err(e) => return e.to_string(),
            };
            match msg {
                PeerMessage::Node(env) => {
                    if env.from != peer {
                        return format!(
                            "message claims sender {} on node {peer}'s connection",
                            env.from
                        );
                    }
                    if !core.deliver(env) {
                        t.metrics.incr(&t.metrics.peer_frames_dropped);
                    }
                }
                PeerMessage::Forward { id, request } => {
                    let core = core.clone();
                    let tx = tx.clone();
                    let queued = queued.clone();
                    tokio::spawn(async move {
                        let response = core.call(request).await;
                        let mut frame = Vec::new();
                        encode_frame(
                            &wire::encode(&PeerMessage::ForwardReply { id, response }),
                            &mut frame,
                        );
                        queued.fetch_add(frame.len(), Ordering::Relaxed);
                        // Replies wait for room rather than being dropped: the
                        // client on the other side is waiting for exactly this.
                        let _ = tx.send(frame).await;
                    });
                }
                PeerMessage::ForwardReply { id, response } => {
                    if let Some(f) = t.forwards.lock().expect("forwards lock").remove(&id) {
                        let _ = f.reply.send(response);
                    }
                }
            }
        }
        match rd.read(&mut buf).await {
            Ok(0) => return "closed by peer".into(),
            Ok(n) => decoder.push(&buf[..n]),
            Err(e) => return format!("read failed: {e}"),
        }
    }
}
