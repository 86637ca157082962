//! Time, as the core is allowed to see it.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A source of time. `monotonic_ns` orders events and measures timeouts; it never goes
/// backwards. `wall_unix_ns` is for metadata humans read (a backup's creation time) and
/// must never decide correctness.
pub trait Clock: Send + Sync + Debug {
    /// Nanoseconds since an arbitrary, fixed origin; non-decreasing.
    fn monotonic_ns(&self) -> u64;
    /// Nanoseconds since the Unix epoch, as well as the host knows it.
    fn wall_unix_ns(&self) -> u64;
}

/// The host's clocks. Only the production binary constructs one.
#[derive(Debug)]
#[allow(clippy::disallowed_types)] // this is the real world's clock
pub struct SystemClock {
    origin: std::time::Instant,
}

impl SystemClock {
    /// A clock whose monotonic origin is now.
    #[allow(clippy::disallowed_methods, clippy::disallowed_types)] // this is the real world's clock
    pub fn new() -> Self {
        SystemClock {
            origin: std::time::Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn monotonic_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    #[allow(clippy::disallowed_methods, clippy::disallowed_types)] // this is the real world's clock
    fn wall_unix_ns(&self) -> u64 {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
    }
}

/// A clock that moves only when told: for unit tests and for drivers that own time.
/// Clones share the same time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    now_ns: Arc<AtomicU64>,
    wall_offset_ns: u64,
}

impl ManualClock {
    /// A clock at monotonic time 0 whose wall time is `wall_offset_ns` plus monotonic time.
    pub fn new(wall_offset_ns: u64) -> Self {
        ManualClock {
            now_ns: Arc::new(AtomicU64::new(0)),
            wall_offset_ns,
        }
    }

    /// Move time forward by `delta_ns`.
    pub fn advance(&self, delta_ns: u64) {
        self.now_ns.fetch_add(delta_ns, Ordering::SeqCst);
    }

    /// Set time to `now_ns`; panics if that would move it backwards.
    pub fn set(&self, now_ns: u64) {
        let before = self.now_ns.swap(now_ns, Ordering::SeqCst);
        assert!(
            before <= now_ns,
            "monotonic time moved backwards: {before} -> {now_ns}"
        );
    }
}

impl Clock for ManualClock {
    fn monotonic_ns(&self) -> u64 {
        self.now_ns.load(Ordering::SeqCst)
    }

    fn wall_unix_ns(&self) -> u64 {
        self.wall_offset_ns + self.monotonic_ns()
    }
}
