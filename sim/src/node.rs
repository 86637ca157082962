//! Per-node clocks and lifecycle.
//!
//! Each simulated node sees time through its own [`SimClock`]: the world's virtual time
//! scaled by a drift (parts per million, positive or negative) plus an offset. Drift is
//! bounded by the scenario, so protocols whose safety assumes a drift bound (lease
//! reads) can be tested right at that bound.
//!
//! A node's [`Lifecycle`] is `Up`, `Paused` (alive, but deaf and mute until resumed:
//! a long GC pause or a stopped VM) or `Crashed` (volatile state gone; its disk keeps
//! only what was durable). The harness owns the node objects; it drops them on a crash
//! and builds new ones over the same `SimDisk` on restart.

use ryu_io::Clock;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The world's virtual time, shared by every node's clock. Only the harness advances it.
#[derive(Debug, Clone, Default)]
pub struct WorldTime {
    now_ns: Arc<AtomicU64>,
}

impl WorldTime {
    /// Time zero.
    pub fn new() -> WorldTime {
        WorldTime::default()
    }

    /// Current virtual time.
    pub fn now_ns(&self) -> u64 {
        self.now_ns.load(Ordering::SeqCst)
    }

    /// Advance to `now_ns`; time never goes backwards.
    pub fn set(&self, now_ns: u64) {
        let before = self.now_ns.swap(now_ns, Ordering::SeqCst);
        assert!(
            before <= now_ns,
            "world time moved backwards: {before} -> {now_ns}"
        );
    }
}

/// A node's view of time.
#[derive(Debug, Clone)]
pub struct SimClock {
    world: WorldTime,
    drift_ppm: i64,
    offset_ns: u64,
    wall_epoch_ns: u64,
}

/// 2026-01-01T00:00:00Z, the simulated wall clock's origin.
pub const SIM_WALL_EPOCH_NS: u64 = 1_767_225_600_000_000_000;

impl SimClock {
    /// A clock over `world` running `drift_ppm` parts per million fast (or slow, if
    /// negative), starting at `offset_ns`.
    pub fn new(world: WorldTime, drift_ppm: i64, offset_ns: u64) -> SimClock {
        assert!(
            drift_ppm.abs() < 1_000_000,
            "drift of {drift_ppm} ppm would stop or reverse time"
        );
        SimClock {
            world,
            drift_ppm,
            offset_ns,
            wall_epoch_ns: SIM_WALL_EPOCH_NS,
        }
    }

    /// The configured drift.
    pub fn drift_ppm(&self) -> i64 {
        self.drift_ppm
    }
}

impl Clock for SimClock {
    fn monotonic_ns(&self) -> u64 {
        let t = i128::from(self.world.now_ns());
        let skewed = t + t * i128::from(self.drift_ppm) / 1_000_000;
        self.offset_ns + u64::try_from(skewed).expect("drift below 100% keeps time positive")
    }

    fn wall_unix_ns(&self) -> u64 {
        self.wall_epoch_ns + self.monotonic_ns()
    }
}

/// Where a node is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Up,
    Paused,
    Crashed,
}

impl Lifecycle {
    /// Whether the node processes events.
    pub fn is_up(self) -> bool {
        self == Lifecycle::Up
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_scales_time_both_ways() {
        let world = WorldTime::new();
        let fast = SimClock::new(world.clone(), 1000, 0);
        let slow = SimClock::new(world.clone(), -1000, 5);
        world.set(1_000_000_000);
        assert_eq!(fast.monotonic_ns(), 1_001_000_000);
        assert_eq!(slow.monotonic_ns(), 999_000_005);
        assert_eq!(fast.wall_unix_ns(), SIM_WALL_EPOCH_NS + 1_001_000_000);
    }
}
