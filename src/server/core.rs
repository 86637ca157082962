//! The node thread: the one place the deterministic [`Node`] state machine runs in
//! production.
//!
//! The node is single-threaded by design (the simulator drives it the same way), so
//! one dedicated OS thread owns it. Everything else talks to it through a bounded
//! channel of [`Input`]s. One turn of the loop:
//!
//! 1. wait for an input, at most until the next tick is due;
//! 2. take every input already queued (this is where group commit comes from: all
//!    the writes that arrived while the previous batch was being synced go into the
//!    next batch, and share its one `fsync`);
//! 3. catch up ticks (the Raft clock: elections, heartbeats, timeouts);
//! 4. hand newly started backup jobs to the backup thread, which runs their
//!    cooperative steps (the same steps the simulator interleaves with everything
//!    else) and hands each job back when it is done, so copying never stalls the
//!    node thread; the node only starts and finishes jobs;
//! 5. run the Ready cycle: messages that may leave before the batch is durable go
//!    out first (a leader replicates while it syncs), then the batch is made
//!    durable, then what had to wait for durability goes out and clients are
//!    answered.
//!
//! A `NodeError` means the node's log or engine may be poisoned (fsync errors are not
//! retryable on Linux): the node is dropped and its directory reopened, waiting
//! clients hear that the outcome of their request is unknown, and the fault is
//! counted in `/metrics`.

use std::collections::BTreeMap;
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

/// What the node thread is asked to do.
#[derive(Debug)]
pub enum Input {
    /// A message from another node (already authenticated and decoded).
    Peer(Envelope),
    /// A client request; the answer goes to `reply`.
    Client {
        request: Request,
        reply: oneshot::Sender<Response>,
    },
    /// A backup job the worker thread finished.
    BackupDone {
        work: Box<BackupWork>,
        outcome: Result<u64, String>,
        incarnation: u64,
    },
    /// Finish the current turn and stop (SIGTERM). Everything acknowledged is
    /// already durable; waiting clients get no answer.
    Shutdown,
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
}

impl CoreHandle {
    /// Submit a request and wait for its answer. If the node thread drops the
    /// request (the node was reopened after a disk fault, or the process is shutting
    /// down), a write's outcome is unknown and a read simply did not happen.
    pub async fn call(&self, request: Request) -> Response {
        let write = request.is_write();
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
        self.tx.try_send(Input::Peer(envelope)).is_ok()
    }
}

/// How the node thread runs.
#[derive(Debug, Clone)]
pub struct CoreOptions {
    pub disk: DynDisk,
    pub dir: PathBuf,
    pub node: NodeOptions,
    pub tick: Duration,
    /// Bytes of backup copying per loop turn.
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
    let (work_tx, work_rx) = std::sync::mpsc::channel();
    let done_tx = tx.clone();
    let worker_metrics = metrics.clone();
    let step_bytes = opts.backup_step_bytes;
    #[allow(clippy::disallowed_methods)] // the production shell owns its threads
    std::thread::Builder::new()
        .name("ryu-backup".into())
        .spawn(move || backup_worker(work_rx, done_tx, step_bytes, worker_metrics))
        .map_err(|e| NodeError::Config(format!("cannot start the backup thread: {e}")))?;
    #[allow(clippy::disallowed_methods)] // the production shell owns its threads
    let join = std::thread::Builder::new()
        .name("ryu-node".into())
        .spawn(move || run(node, opts, rx, work_tx, outbox, metrics))
        .map_err(|e| NodeError::Config(format!("cannot start the node thread: {e}")))?;
    Ok((CoreHandle { tx }, join, cluster_id))
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

/// The backup thread: steps every job it holds, round robin, and hands each back
/// to the node thread when it is done. Ends when the node thread is gone.
fn backup_worker(
    jobs: std::sync::mpsc::Receiver<(BackupWork, u64)>,
    done: mpsc::Sender<Input>,
    step_bytes: u64,
    metrics: Arc<Metrics>,
) {
    let mut active: Vec<(BackupWork, u64)> = Vec::new();
    loop {
        // Wait for work when idle; otherwise pick up new jobs between steps.
        if active.is_empty() {
            match jobs.recv() {
                Ok(j) => active.push(j),
                Err(_) => return,
            }
        }
        while let Ok(j) = jobs.try_recv() {
            active.push(j);
        }
        let before: u64 = active.iter().map(|(w, _)| w.progress().0).sum();
        let mut i = 0;
        while i < active.len() {
            match active[i].0.step(step_bytes) {
                None => i += 1,
                Some(outcome) => {
                    let (work, incarnation) = active.swap_remove(i);
                    if outcome.is_err() {
                        tracing::warn!(id = work.id(), error = ?outcome, "backup job failed");
                    }
                    let input = Input::BackupDone {
                        work: Box::new(work),
                        outcome,
                        incarnation,
                    };
                    if done.blocking_send(input).is_err() {
                        return;
                    }
                }
            }
        }
        let (mut bytes_done, mut bytes_total) = (0, 0);
        for (w, _) in &active {
            let (d, t) = w.progress();
            bytes_done += d;
            bytes_total += t;
        }
        metrics.backup_progress(active.len() as u64, bytes_done, bytes_total);
        if !active.is_empty() && bytes_done == before {
            // Every job is held back by its rate limit: wait instead of spinning.
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

fn run(
    node: Node,
    opts: CoreOptions,
    mut rx: mpsc::Receiver<Input>,
    backups: std::sync::mpsc::Sender<(BackupWork, u64)>,
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
                // Reopen after a fault, once per tick interval until it works.
                tokio::time::sleep(opts.tick.max(Duration::from_millis(200))).await;
                incarnation += 1;
                match open(&opts, incarnation) {
                    Ok(n) => {
                        tracing::warn!(incarnation, "node reopened after a fault");
                        metrics.set_healthy(true);
                        node = Some(n);
                    }
                    Err(e) => tracing::error!(error = %e, "reopening the node failed; retrying"),
                }
                // Drain whatever queued meanwhile: clients hear no answer is coming.
                while let Ok(input) = rx.try_recv() {
                    match input {
                        // Never handed to a node: it had no effect.
                        Input::Client { reply, .. } => {
                            let _ = reply.send(Response::Unavailable {
                                reason: "the node is recovering from a disk fault".into(),
                            });
                        }
                        Input::Shutdown => return,
                        Input::Peer(_) | Input::BackupDone { .. } => {}
                    }
                }
                continue;
            };
            let first = match tokio::time::timeout_at(next_tick, rx.recv()).await {
                Ok(Some(i)) => Some(i),
                Ok(None) => break, // every handle dropped: shut down
                Err(_) => None,
            };
            let mut inputs: Vec<Input> = first.into_iter().collect();
            while inputs.len() < 4096 {
                match rx.try_recv() {
                    Ok(i) => inputs.push(i),
                    Err(_) => break,
                }
            }
            let mut stop = false;
            let mut result = Ok(());
            for input in inputs {
                match input {
                    Input::Shutdown => stop = true,
                    Input::BackupDone {
                        work,
                        outcome,
                        incarnation: inc,
                    } => {
                        // A job of an earlier incarnation is dropped: the node that
                        // started it is gone, and so is everyone waiting for it.
                        if inc == incarnation && result.is_ok() {
                            result = n.finish_backup_work(*work, outcome);
                        }
                    }
                    Input::Peer(env) => n.step(env),
                    Input::Client { request, reply } => {
                        let id = next_request;
                        next_request += 1;
                        waiters.insert(
                            id,
                            Waiter {
                                reply,
                                started: Instant::now(),
                                write: request.is_write(),
                            },
                        );
                        n.request(id, request);
                    }
                }
            }
            let now = Instant::now();
            while next_tick <= now {
                n.tick();
                next_tick += opts.tick;
            }
            if result.is_ok() {
                result = ready(n, &*outbox, &mut waiters, &metrics);
            }
            for work in n.take_backup_work() {
                let _ = backups.send((work, incarnation));
            }
            metrics.observe(n);
            if stop && result.is_ok() {
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
