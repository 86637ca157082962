//! Seeded randomness and integer probabilities.
//!
//! Probabilities are integer ratios, never floats, so that a seed means the same run on
//! every machine and every compiler.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::fmt;

/// A probability `num / den` (with `num <= den`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ratio {
    pub num: u32,
    pub den: u32,
}

impl Default for Ratio {
    fn default() -> Self {
        Ratio::ZERO
    }
}

impl Ratio {
    /// Never.
    pub const ZERO: Ratio = Ratio { num: 0, den: 1 };
    /// Always.
    pub const ONE: Ratio = Ratio { num: 1, den: 1 };

    /// `num / den`; panics on a malformed ratio (a bug in the caller's options).
    pub const fn new(num: u32, den: u32) -> Ratio {
        assert!(den > 0, "ratio with zero denominator");
        assert!(num <= den, "ratio above one");
        Ratio { num, den }
    }

    /// True when the ratio is zero.
    pub const fn is_zero(self) -> bool {
        self.num == 0
    }
}

impl fmt::Debug for Ratio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.num, self.den)
    }
}

impl fmt::Display for Ratio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.num, self.den)
    }
}

/// The simulator's random stream: ChaCha8 seeded from a `u64`, with the few draws the
/// simulator needs. Components get their own stream via [`SimRng::fork`] so that a
/// change in one component's draws does not shift another's.
#[derive(Debug, Clone)]
pub struct SimRng {
    inner: ChaCha8Rng,
}

impl SimRng {
    /// A stream determined entirely by `seed`.
    pub fn new(seed: u64) -> SimRng {
        SimRng {
            inner: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// An independent child stream, determined by this stream's seed position and `label`.
    pub fn fork(&mut self, label: &str) -> SimRng {
        let base: u64 = self.inner.random();
        SimRng::new(ryu_io::rng::derive_seed(base, label))
    }

    /// True with probability `ratio`.
    pub fn chance(&mut self, ratio: Ratio) -> bool {
        if ratio.num == 0 {
            return false;
        }
        self.inner.random_range(0..ratio.den) < ratio.num
    }

    /// Uniform in `[0, n)`; `n` must be positive.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        self.inner.random_range(0..n)
    }

    /// Uniform in `[lo, hi]` inclusive.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(lo <= hi, "between({lo}, {hi})");
        self.inner.random_range(lo..=hi)
    }

    /// A uniformly random element index for a slice of length `len` (> 0).
    pub fn index(&mut self, len: usize) -> usize {
        assert!(len > 0, "index into empty slice");
        self.inner.random_range(0..len)
    }

    /// A random `u64`.
    pub fn next_u64(&mut self) -> u64 {
        self.inner.random()
    }

    /// A ratio drawn for swarm testing: zero with probability `off`, otherwise
    /// `1..=max_num` out of `den`.
    pub fn swarm_ratio(&mut self, off: Ratio, max_num: u32, den: u32) -> Ratio {
        if self.chance(off) {
            Ratio::ZERO
        } else {
            Ratio::new(self.inner.random_range(1..=max_num), den)
        }
    }

    /// The underlying ChaCha RNG, for handing to components that take `rand::Rng`.
    pub fn as_rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.inner
    }

    /// A fresh ChaCha RNG for a component that owns its randomness (e.g. a Raft node).
    pub fn child_chacha(&mut self, label: &str) -> ChaCha8Rng {
        let seed = ryu_io::rng::derive_seed(self.inner.random(), label);
        ChaCha8Rng::seed_from_u64(seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_forks_are_independent() {
        let (mut a, mut b) = (SimRng::new(7), SimRng::new(7));
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        let mut fa = a.fork("disk");
        let mut fb = b.fork("net");
        assert_ne!(fa.next_u64(), fb.next_u64());
    }

    #[test]
    fn chance_tracks_the_ratio() {
        let mut rng = SimRng::new(1);
        let hits = (0..100_000)
            .filter(|_| rng.chance(Ratio::new(1, 4)))
            .count();
        assert!((23_000..27_000).contains(&hits), "{hits}");
        assert!(!(0..1000).any(|_| rng.chance(Ratio::ZERO)));
        assert!((0..1000).all(|_| rng.chance(Ratio::ONE)));
    }
}
