//! The node thread: the one place the deterministic [`Node`] state machine runs in
//! production.
//!
//! The node is single-threaded by design (the simulator drives it the same way), so
//! one dedicated OS thread owns it. Everything else talks to it through channels:
//! peers' messages on their own bounded channel (so a flood of clients can never
//! crowd out heartbeats and votes), clients' requests on another, finished backup
//! jobs on a third. One turn of the loop:
//!
//! 1. wait for an input, at most until the next tick is due;
//! 2. catch up ticks (the Raft clock: elections, heartbeats, timeouts), before any
//!    other input, as the node's driving contract asks;
//! 3. take every input already queued (this is where group commit comes from: all
//!    the writes that arrived while the previous batch was being synced go into the
//!    next batch, and share its one `fsync`);
//! 4. run the Ready cycle: messages that may leave before the batch is durable go
//!    out first (a leader replicates while it syncs), then the batch is made
//!    durable, then what had to wait for durability goes out and clients are
//!    answered;
//! 5. hand newly started backup jobs to the backup thread, which runs their
//!    cooperative steps (the same steps the simulator interleaves with everything
//!    else) and hands each job back when it is done, so copying never stalls the
//!    node thread; the node only starts and finishes jobs.
//!
//! A `NodeError` means the node's log or engine may be poisoned (fsync errors are not
//! retryable on Linux): the node is dropped and its directory reopened. Before the
//! reopen, the backup thread abandons every job of the old node (their pins die with
//! it, so the new node could reuse pages they still need), and waiting clients hear
//! that the outcome of their writes is unknown. The fault is counted in `/metrics`.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use ryu_io::DynDisk;
use ryu_node::{BackupWork, Envelope, Node, NodeError, NodeOptions, Request, Response};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::metrics::Metrics;

/// A node-thread turn longer than this is logged with what it did.
const SLOW_TURN: Duration = Duration::from_millis(50);

/// What clients (and the shell) ask the node thread to do.
#[derive(Debug)]
pub enum Input {
    /// A client request; the answer goes to `reply`.
    Client {
        request: Request,
        reply: oneshot::Sender<Response>,
    },
    /// Finish the current turn and stop (SIGTERM). Everything acknowledged is
    /// already durable; waiting clients get no answer.
    Shutdown,
}

/// A backup job the backup thread finished, for the node incarnation that started
/// it.
struct Finished {
    work: Box<BackupWork>,
    outcome: Result<u64, String>,
    incarnation: u64,
}

/// What the node thread tells the backup thread.
enum ToWorker {
    Job(Box<BackupWork>, u64),
    /// Abort every job of an incarnation before this one, then acknowledge.
    AbandonBefore(u64, std::sync::mpsc::Sender<()>),
}

/// Where the node thread sends what the node wants delivered to other nodes.
/// Delivery is best effort and must not block: Raft retries what is lost.
pub trait Outbox: Send + Sync + 'static {
    fn send(&self, envelope: Envelope);
}

/// A cheap, cloneable handle to the node thread.
#[derive(Clone, Debug)]
pub struct CoreHandle {
    tx: mpsc::Sender<Input>,
    peers: mpsc::Sender<Envelope>,
}

impl CoreHandle {
    /// Submit a request and wait for its answer. If the node thread drops the
    /// request (the node was reopened after a disk fault, or the process is shutting
    /// down), a write's outcome is unknown and a read simply did not happen.
    pub async fn call(&self, request: Request) -> Response {
        let write = request.is_write() || matches!(request, Request::Backup { .. });
        let (reply, rx) = oneshot::channel();
        if self
            .tx
            .send(Input::Client { request, reply })
            .await
            .is_err()
        {
            return Response::Unavailable {
                reason: "node is shutting down".into(),
            };
        }
        match rx.await {
            Ok(r) => r,
            Err(_) if write => Response::OutcomeUnknown {
                reason: "the node restarted before answering".into(),
            },
            Err(_) => Response::Unavailable {
                reason: "the node restarted before answering".into(),
            },
        }
    }

    /// Ask the node thread to stop after its current turn.
    pub async fn shutdown(&self) {
        let _ = self.tx.send(Input::Shutdown).await;
    }

    /// Hand a peer's message to the node; dropped if the node is overloaded (Raft
    /// retransmits).
    pub fn deliver(&self, envelope: Envelope) -> bool {
        self.peers.try_send(envelope).is_ok()
    }
}

/// How the node thread runs.
#[derive(Debug, Clone)]
pub struct CoreOptions {
    pub disk: DynDisk,
    pub dir: PathBuf,
    pub node: NodeOptions,
    pub tick: Duration,
    /// Bytes of backup copying per step of the backup thread.
    pub backup_step_bytes: u64,
    /// Seed for the node's RNG (election timeouts, read nonces); from the OS.
    pub seed: u64,
}

/// Open the node (errors here are reported to the operator and stop the process),
/// then start its thread; also returns the node's cluster id. The thread ends on
/// [`CoreHandle::shutdown`] or when every handle is dropped.
pub fn start(
    opts: CoreOptions,
    outbox: Arc<dyn Outbox>,
    metrics: Arc<Metrics>,
) -> Result<(CoreHandle, std::thread::JoinHandle<()>, u64), NodeError> {
    let node = open(&opts, 0)?;
    let cluster_id = node.cluster_id();
    metrics.observe(&node);
    let (tx, rx) = mpsc::channel(4096);
    let (peer_tx, peer_rx) = mpsc::channel(8192);
    // Unbounded, so the backup thread never blocks on the node thread (which may be
    // waiting for it to abandon jobs); it holds at most one entry per job.
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let (work_tx, work_rx) = std::sync::mpsc::channel();
    let worker_metrics = metrics.clone();
    let step_bytes = opts.backup_step_bytes;
    #[allow(clippy::disallowed_methods)] // the production shell owns its threads
    std::thread::Builder::new()
        .name("ryu-backup".into())
        .spawn(move || backup_worker(work_rx, done_tx, step_bytes, worker_metrics))
        .map_err(|e| NodeError::Config(format!("cannot start the backup thread: {e}")))?;
    let channels = Channels {
        clients: rx,
        peers: peer_rx,
        done: done_rx,
        worker: work_tx,
    };
    #[allow(clippy::disallowed_methods)] // the production shell owns its threads
    let join = std::thread::Builder::new()
        .name("ryu-node".into())
        .spawn(move || run(node, opts, channels, outbox, metrics))
        .map_err(|e| NodeError::Config(format!("cannot start the node thread: {e}")))?;
    Ok((CoreHandle { tx, peers: peer_tx }, join, cluster_id))
}

fn open(opts: &CoreOptions, incarnation: u64) -> Result<Node, NodeError> {
    // A fresh RNG stream per incarnation: read contexts carry a nonce drawn from it,
    // and an answer meant for the previous incarnation must not match a new read.
    let rng =
        ChaCha8Rng::seed_from_u64(opts.seed ^ incarnation.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    Node::open(opts.disk.clone(), &opts.dir, opts.node.clone(), rng)
}

struct Waiter {
    reply: oneshot::Sender<Response>,
    started: Instant,
    write: bool,
}

/// The nice value of the backup thread: backups (and the snapshots a lagging follower
/// is sent, which are backups) take the CPU the node and client threads leave idle,
/// and only about a tenth of a core they want (see `ryu_io::set_thread_nice`, and the
/// benchmark in backup/README.md). Its disk I/O keeps the default class: the idle
/// class (`ryu_io::set_thread_io_idle`) made no measurable difference there and could
/// hold a lagging follower's snapshot back behind a busy disk.
const BACKUP_THREAD_NICE: i32 = 10;

/// The longest the backup thread sleeps while every job it holds is throttled.
const BACKUP_MAX_SLEEP: Duration = Duration::from_millis(5);

/// The backup thread: steps every job it holds, round robin, and hands each back
/// to the node thread when it is done. Ends when the node thread is gone.
fn backup_worker(
    inbox: std::sync::mpsc::Receiver<ToWorker>,
    done: mpsc::UnboundedSender<Finished>,
    step_bytes: u64,
    metrics: Arc<Metrics>,
) {
    if let Err(e) = ryu_io::set_thread_nice(BACKUP_THREAD_NICE) {
        tracing::warn!(error = %e, "cannot lower the backup thread's CPU priority");
    }
    let mut active: Vec<(Box<BackupWork>, u64)> = Vec::new();
    loop {
        // Wait for work when idle; otherwise pick up messages between steps.
        let mut msgs = Vec::new();
        if active.is_empty() {
            match inbox.recv() {
                Ok(m) => msgs.push(m),
                Err(_) => return,
            }
        }
        while let Ok(m) = inbox.try_recv() {
            msgs.push(m);
        }
        for m in msgs {
            match m {
                ToWorker::Job(w, inc) => active.push((w, inc)),
                ToWorker::AbandonBefore(inc, ack) => {
                    let (stale, keep): (Vec<_>, Vec<_>) =
                        active.drain(..).partition(|(_, i)| *i < inc);
                    active = keep;
                    for (w, _) in stale {
                        tracing::warn!(id = w.id(), "backup job abandoned: its node was reopened");
                        w.abort();
                    }
                    let _ = ack.send(());
                }
            }
        }
        let before: u64 = active.iter().map(|(w, _)| w.progress().0).sum();
        let mut finished = Vec::new();
        let mut i = 0;
        while i < active.len() {
            // A panic in a job fails that job, not the thread every later backup
            // and snapshot depends on.
            let step = catch_unwind(AssertUnwindSafe(|| active[i].0.step(step_bytes)))
                .unwrap_or_else(|_| Some(Err("the backup job panicked".into())));
            match step {
                None => i += 1,
                Some(outcome) => {
                    let (work, incarnation) = active.swap_remove(i);
                    if outcome.is_err() {
                        tracing::warn!(id = work.id(), error = ?outcome, "backup job failed");
                    }
                    finished.push(Finished {
                        work,
                        outcome,
                        incarnation,
                    });
                }
            }
        }
        let (mut bytes_done, mut bytes_total) = (0, 0);
        for (w, _) in &active {
            let (d, t) = w.progress();
            bytes_done += d;
            bytes_total += t;
        }
        // The gauges first: a client told its backup is done must not then see it
        // still running.
        metrics.backup_progress(active.len() as u64, bytes_done, bytes_total);
        // A job that finished this round made progress, whatever the sum of the
        // others' bytes says (its own bytes left the sum).
        let progressed = !finished.is_empty() || bytes_done != before;
        for f in finished {
            if done.send(f).is_err() {
                return;
            }
        }
        let waits = active.iter().map(|(w, _)| w.next_step_in_ns());
        if let Some(wait) = throttled_sleep(progressed, waits) {
            std::thread::sleep(wait);
        }
    }
}

/// How long the backup thread sleeps after a round of steps: not at all when a job
/// made progress or it holds none (`waits_ns` empty); otherwise every job is held back
/// by its rate limit, and it sleeps until the first may go on (when it allows one more
/// write-behind window, `waits_ns` being each job's `next_step_in_ns`), at most
/// `BACKUP_MAX_SLEEP` so new jobs are picked up. With small windows
/// (`backup_write_behind_kib`) that is well under a millisecond: a longer sleep would
/// let the allowance pile up into a burst of writes that the commits' syncs wait
/// behind, which small windows are chosen to avoid.
fn throttled_sleep(progressed: bool, waits_ns: impl Iterator<Item = u64>) -> Option<Duration> {
    if progressed {
        return None;
    }
    let wait = Duration::from_nanos(waits_ns.min()?).min(BACKUP_MAX_SLEEP);
    (!wait.is_zero()).then_some(wait)
}

struct Channels {
    clients: mpsc::Receiver<Input>,
    peers: mpsc::Receiver<Envelope>,
    done: mpsc::UnboundedReceiver<Finished>,
    worker: std::sync::mpsc::Sender<ToWorker>,
}

/// One input of a turn.
enum Event {
    Client(Input),
    Peer(Envelope),
    Done(Finished),
}

/// Everything already queued, up to a bound per channel.
fn drain(ch: &mut Channels, events: &mut Vec<Event>) {
    for _ in 0..4096 {
        match ch.peers.try_recv() {
            Ok(e) => events.push(Event::Peer(e)),
            Err(_) => break,
        }
    }
    for _ in 0..4096 {
        match ch.clients.try_recv() {
            Ok(i) => events.push(Event::Client(i)),
            Err(_) => break,
        }
    }
    while let Ok(f) = ch.done.try_recv() {
        events.push(Event::Done(f));
    }
}

fn run(
    node: Node,
    opts: CoreOptions,
    mut ch: Channels,
    outbox: Arc<dyn Outbox>,
    metrics: Arc<Metrics>,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime with timers");
    rt.block_on(async move {
        let mut node = Some(node);
        let mut incarnation = 0u64;
        let mut waiters: BTreeMap<u64, Waiter> = BTreeMap::new();
        let mut next_request = 1u64;
        let mut next_tick = Instant::now() + opts.tick;
        loop {
            let Some(n) = node.as_mut() else {
                // Reopen after a fault. First the backup thread lets go of every job
                // of the dead node; meanwhile clients hear the node is recovering.
                incarnation += 1;
                let (ack_tx, ack_rx) = std::sync::mpsc::channel();
                let _ = ch.worker.send(ToWorker::AbandonBefore(incarnation, ack_tx));
                loop {
                    if refuse_queued(&mut ch) {
                        return; // shutdown requested
                    }
                    match ack_rx.recv_timeout(Duration::from_millis(10)) {
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                        _ => break,
                    }
                }
                tokio::time::sleep(opts.tick.max(Duration::from_millis(200))).await;
                match open(&opts, incarnation) {
                    Ok(n) => {
                        tracing::warn!(incarnation, "node reopened after a fault");
                        metrics.set_healthy(true);
                        node = Some(n);
                        next_tick = Instant::now() + opts.tick;
                    }
                    Err(e) => tracing::error!(error = %e, "reopening the node failed; retrying"),
                }
                if refuse_queued(&mut ch) {
                    return;
                }
                continue;
            };
            let mut events = Vec::new();
            tokio::select! {
                biased;
                Some(e) = ch.peers.recv() => events.push(Event::Peer(e)),
                Some(f) = ch.done.recv() => events.push(Event::Done(f)),
                i = ch.clients.recv() => match i {
                    Some(i) => events.push(Event::Client(i)),
                    None => break, // every handle dropped: shut down
                },
                _ = tokio::time::sleep_until(next_tick) => {}
            }
            let now = Instant::now();
            while next_tick <= now {
                n.tick();
                next_tick += opts.tick;
            }
            drain(&mut ch, &mut events);
            let busy = !events.is_empty();
            let mut stop = false;
            let mut result = Ok(());
            for event in events {
                match event {
                    Event::Client(Input::Shutdown) => stop = true,
                    Event::Done(f) => {
                        // A job of an earlier incarnation was abandoned already.
                        if f.incarnation == incarnation && result.is_ok() {
                            result = n.finish_backup_work(*f.work, f.outcome);
                        }
                    }
                    Event::Peer(env) => n.step(env),
                    Event::Client(Input::Client { request, reply }) => {
                        let id = next_request;
                        next_request += 1;
                        waiters.insert(
                            id,
                            Waiter {
                                reply,
                                started: Instant::now(),
                                write: request.is_write()
                                    || matches!(request, Request::Backup { .. }),
                            },
                        );
                        n.request(id, request);
                    }
                }
            }
            // What a slow turn did, for the log: a Raft snapshot packed, an engine
            // checkpoint written.
            let (snaps_before, generation_before) =
                (n.snapshot_counts().0, n.db().stats().generation);
            if result.is_ok() {
                result = ready(n, &*outbox, &mut waiters, &metrics);
            }
            if result.is_ok() {
                for work in n.take_backup_work() {
                    if let Err(std::sync::mpsc::SendError(ToWorker::Job(work, _))) =
                        ch.worker.send(ToWorker::Job(Box::new(work), incarnation))
                    {
                        let why = "the backup thread is gone".to_string();
                        result = n.finish_backup_work(*work, Err(why));
                    }
                }
            }
            metrics.observe(n);
            if busy {
                let took = now.elapsed();
                metrics.node_turn(took);
                if took > SLOW_TURN {
                    tracing::warn!(
                        ms = took.as_millis() as u64,
                        snapshot_made = n.snapshot_counts().0 != snaps_before,
                        checkpoint = n.db().stats().generation != generation_before,
                        "slow node turn"
                    );
                }
            }
            if stop {
                // The engine does not sync each apply (the Raft log holds every
                // entry); syncing it now spares the next start the replay and leaves
                // a stopped directory whose engine is current (offline backups).
                if let Err(e) = n.db().sync() {
                    tracing::warn!(error = %e, "engine sync at shutdown failed; the next start replays from the log");
                }
                tracing::info!("node thread stopped");
                break;
            }
            if let Err(e) = result {
                tracing::error!(error = %e, "node failed; dropping it and reopening its directory");
                metrics.node_fault();
                metrics.set_healthy(false);
                node = None;
                for (_, w) in std::mem::take(&mut waiters) {
                    let _ = w.reply.send(if w.write {
                        Response::OutcomeUnknown {
                            reason: format!("node fault before the answer: {e}"),
                        }
                    } else {
                        Response::Unavailable {
                            reason: format!("node fault: {e}"),
                        }
                    });
                }
            }
        }
    });
}

/// While no node is open: answer queued client requests (never handed to a node,
/// so they had no effect) and drop peer messages. True if shutdown was requested.
fn refuse_queued(ch: &mut Channels) -> bool {
    while ch.peers.try_recv().is_ok() {}
    while ch.done.try_recv().is_ok() {}
    let mut stop = false;
    while let Ok(input) = ch.clients.try_recv() {
        match input {
            Input::Client { reply, .. } => {
                let _ = reply.send(Response::Unavailable {
                    reason: "the node is recovering from a disk fault".into(),
                });
            }
            Input::Shutdown => stop = true,
        }
    }
    stop
}

/// One Ready cycle, split so early messages leave before the sync.
fn ready(
    n: &mut Node,
    outbox: &dyn Outbox,
    waiters: &mut BTreeMap<u64, Waiter>,
    metrics: &Metrics,
) -> Result<(), NodeError> {
    loop {
        let more = n.ready_begin();
        dispatch(n, outbox, waiters, metrics);
        if !more {
            return Ok(());
        }
        n.ready_finish()?;
        dispatch(n, outbox, waiters, metrics);
    }
}

fn dispatch(
    n: &mut Node,
    outbox: &dyn Outbox,
    waiters: &mut BTreeMap<u64, Waiter>,
    metrics: &Metrics,
) {
    let out = n.take_output();
    for m in out.messages {
        outbox.send(m);
    }
    for (id, response) in out.replies {
        if let Some(w) = waiters.remove(&id) {
            if w.write && matches!(response, Response::Committed { .. }) {
                metrics.commit_latency(w.started.elapsed());
            }
            let _ = w.reply.send(response);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{BACKUP_MAX_SLEEP, throttled_sleep};
    use std::time::Duration;

    /// The backup thread sleeps only when every job it holds is throttled, until the
    /// first may go on, never longer than `BACKUP_MAX_SLEEP`.
    #[test]
    fn the_backup_thread_sleeps_until_the_first_throttled_job_may_go_on() {
        let ms = |n: u64| n * 1_000_000;
        let sleep = |progressed, waits: &[u64]| throttled_sleep(progressed, waits.iter().copied());
        assert_eq!(
            sleep(false, &[ms(3), ms(1)]),
            Some(Duration::from_millis(1))
        );
        assert_eq!(sleep(false, &[650_000]), Some(Duration::from_micros(650)));
        assert_eq!(sleep(false, &[ms(160)]), Some(BACKUP_MAX_SLEEP));
        // A job that may go on now, or one that made progress: the next round at once.
        assert_eq!(sleep(false, &[0, ms(2)]), None);
        assert_eq!(sleep(true, &[ms(3)]), None);
        // No job: the thread blocks on its inbox instead.
        assert_eq!(sleep(false, &[]), None);
    }
}
