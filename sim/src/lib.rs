//! `ryu-sim`: the simulated world in which whole Ryu clusters run, single-threaded and
//! replayable from one `u64` seed.
//!
//! The pieces, each usable alone:
//! - [`SimRng`] and [`Ratio`]: the seeded random stream and integer probabilities from
//!   which every choice is drawn (workload, faults, latencies, timeouts);
//! - [`EventQueue`]: events ordered by (virtual time, sequence number);
//! - [`SimDisk`]: an in-memory `ryu_io::Disk` with page-cache-versus-media crash
//!   semantics and injected faults (see the [`disk`] module doc for the model);
//! - [`SimNetwork`]: latency, loss, duplication, reordering, partitions of any shape;
//! - [`SimClock`] and [`Lifecycle`]: per-node drifting clocks, crash, pause, restart;
//! - [`Trace`]: every event as a line, and the run's 64-bit fingerprint.
//!
//! The crate knows nothing of the engine or Raft: the `scenarios` crate assembles these
//! pieces into clusters, workloads and checkers.
//!
//! ```
//! use ryu_io::{Disk, File};
//! use ryu_sim::{SimDisk, SimRng, SimNetwork, NetConfig};
//! use std::path::Path;
//!
//! // A disk: an unsynced write may or may not survive a crash, a synced one always does.
//! let disk = SimDisk::new(42);
//! let f = disk.create(Path::new("wal")).unwrap();
//! disk.sync_dir(Path::new("")).unwrap();
//! f.write_at(0, b"synced").unwrap();
//! f.sync_data().unwrap();
//! f.write_at(6, b" maybe").unwrap();
//! disk.crash();
//! let f = disk.open(Path::new("wal")).unwrap();
//! let mut head = [0u8; 6];
//! f.read_at(0, &mut head).unwrap();
//! assert_eq!(&head, b"synced");
//!
//! // A network: a cut link delivers nothing.
//! let mut net = SimNetwork::new(SimRng::new(7), NetConfig::default(), &[1, 2]);
//! net.cut(1, 2);
//! net.send(0, 1, 2, "hello");
//! net.send(0, 2, 1, "back");
//! let d = net.pop_due(u64::MAX).unwrap();
//! assert_eq!((d.from, d.msg), (2, "back"));
//! assert!(net.pop_due(u64::MAX).is_none());
//! ```

pub mod disk;
pub mod net;
pub mod node;
pub mod power_cut;
pub mod queue;
pub mod rng;
pub mod trace;

pub use disk::{DiskFaults, FaultCounts, SECTOR_SIZE, SimDisk};
pub use net::{Delivery, NetConfig, NetCounts, NodeId, SimNetwork};
pub use node::{Lifecycle, SimClock, WorldTime};
pub use power_cut::PowerCut;
pub use queue::EventQueue;
pub use rng::{Ratio, SimRng};
pub use trace::Trace;

/// What happens next in a world made of an event queue and a network.
#[derive(Debug)]
pub enum Next<E, M> {
    /// A message arrives (time is the delivery's `at_ns`).
    Deliver(Delivery<M>),
    /// A message was due at this time but its link had been cut: nothing arrives.
    Dropped(u64),
    /// A timed event fires.
    Event(u64, E),
}

/// Advance a world to whatever happens next: the earlier of the next network delivery
/// and the next queued event (ties go to the network, an arbitrary but fixed rule), or
/// `None` when nothing is left to happen. The queue's clock follows the network's.
pub fn next_happening<E, M: Clone>(
    queue: &mut EventQueue<E>,
    net: &mut SimNetwork<M>,
) -> Option<Next<E, M>> {
    let net_first = match (net.next_delivery_ns(), queue.peek_time()) {
        (None, None) => return None,
        (Some(n), Some(e)) => n <= e,
        (Some(_), None) => true,
        (None, Some(_)) => false,
    };
    if net_first {
        let at = net.next_delivery_ns().expect("checked above");
        queue.advance_to(at);
        Some(net.pop_due(at).map_or(Next::Dropped(at), Next::Deliver))
    } else {
        let (at, event) = queue.pop().expect("peeked above");
        Some(Next::Event(at, event))
    }
}
