//! Per-node configuration.

use crate::error::Error;
use crate::types::{Index, NodeId};

/// Lease-based reads (thesis §6.4.1): the leader answers reads without a round of
/// heartbeats while a quorum acknowledged a heartbeat sent less than
/// `election_tick - max_clock_drift_ticks` ticks ago. Followers that acknowledged it
/// refuse to vote for anyone else for `election_tick` of their own ticks (leader
/// stickiness), so no other leader can exist in that window as long as clocks drift
/// apart by at most `max_clock_drift_ticks` over it. Requires `check_quorum`, and
/// every node of the cluster must enable it: a follower with lease reads on also
/// refuses votes for an election timeout after it restarts, since it may have
/// acknowledged a heartbeat just before crashing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseRead {
    pub max_clock_drift_ticks: u64,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub id: NodeId,
    /// A follower that hears nothing for a randomized timeout in
    /// `[election_tick, 2 * election_tick)` ticks campaigns (§5.2).
    pub election_tick: u64,
    /// A leader sends heartbeats every `heartbeat_tick` ticks.
    pub heartbeat_tick: u64,
    /// Campaign with a pre-vote round first (thesis §9.6).
    pub pre_vote: bool,
    /// A leader steps down when it has not heard from a quorum for an election
    /// timeout, and followers that heard from a leader recently ignore votes
    /// (thesis §6.2 and §4.2.3).
    pub check_quorum: bool,
    /// Upper bound on the entry bytes of one append message (at least one entry is
    /// always sent).
    pub max_size_per_msg_bytes: u64,
    /// Caps on appends in flight to one follower in the replicate state.
    pub max_inflight_msgs: usize,
    pub max_inflight_bytes: u64,
    /// Upper bound on the bytes of committed entries in one `Ready`.
    pub max_committed_bytes_per_ready: u64,
    /// Bytes the application is asked to read per snapshot chunk.
    pub max_snapshot_chunk_bytes: u64,
    pub lease_read: Option<LeaseRead>,
    /// The application's applied index on restart (entries up to it are not
    /// handed out again). The storage's `InitialState::conf_state` must be the
    /// membership as of this index: configuration changes after it are handed
    /// out, and applied, again.
    pub applied: Index,
    #[cfg(feature = "planted-bugs")]
    pub planted_bug: Option<crate::bugs::PlantedBug>,
}

impl Config {
    /// Defaults suited to a tick of ~100 ms: election after 10-20 ticks.
    pub fn new(id: u64) -> Config {
        Config {
            id: NodeId(id),
            election_tick: 10,
            heartbeat_tick: 1,
            pre_vote: true,
            check_quorum: true,
            max_size_per_msg_bytes: 1 << 20,
            max_inflight_msgs: 256,
            max_inflight_bytes: 16 << 20,
            max_committed_bytes_per_ready: 16 << 20,
            max_snapshot_chunk_bytes: 1 << 20,
            lease_read: None,
            applied: 0,
            #[cfg(feature = "planted-bugs")]
            planted_bug: None,
        }
    }

    pub fn validate(&self) -> Result<(), Error> {
        if self.id.0 == 0 {
            return Err(Error::InvalidConfig("id 0 is reserved"));
        }
        if self.heartbeat_tick == 0 {
            return Err(Error::InvalidConfig("heartbeat_tick must be positive"));
        }
        if self.election_tick <= self.heartbeat_tick {
            return Err(Error::InvalidConfig(
                "election_tick must exceed heartbeat_tick",
            ));
        }
        if self.max_inflight_msgs == 0 || self.max_inflight_bytes == 0 {
            return Err(Error::InvalidConfig("in-flight caps must be positive"));
        }
        if self.max_snapshot_chunk_bytes == 0 {
            return Err(Error::InvalidConfig(
                "max_snapshot_chunk_bytes must be positive",
            ));
        }
        if let Some(lease) = self.lease_read {
            if !self.check_quorum {
                return Err(Error::InvalidConfig("lease_read requires check_quorum"));
            }
            if lease.max_clock_drift_ticks >= self.election_tick {
                return Err(Error::InvalidConfig("clock drift bound leaves no lease"));
            }
        }
        Ok(())
    }
}
