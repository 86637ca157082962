//! The trace of a run and its fingerprint.
//!
//! Every event the simulator executes is recorded as one line `time node kind detail`.
//! The fingerprint is FNV-1a 64 over those lines (with a newline after each): stable
//! across processes, machines and compiler versions, unlike `std`'s hashers. Two runs of
//! one seed must produce the same fingerprint; the determinism check compares them.
//! Only the last `keep_lines` lines are kept in memory, for failure reports.

use std::collections::VecDeque;
use std::fmt::{self, Write as _};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// A running trace.
#[derive(Debug, Clone)]
pub struct Trace {
    hash: u64,
    events: u64,
    tail: VecDeque<String>,
    keep_lines: usize,
    echo: bool,
    line: String,
}

impl Trace {
    /// A trace that keeps the last `keep_lines` lines for reports.
    pub fn new(keep_lines: usize) -> Trace {
        Trace {
            hash: FNV_OFFSET,
            events: 0,
            tail: VecDeque::new(),
            keep_lines,
            echo: false,
            line: String::new(),
        }
    }

    /// Also print every line to stderr as it is recorded (for `run --trace`).
    pub fn set_echo(&mut self, echo: bool) {
        self.echo = echo;
    }

    /// Record one event. `node` is `None` for world events (faults, partitions).
    pub fn record(
        &mut self,
        now_ns: u64,
        node: Option<u64>,
        kind: &str,
        detail: fmt::Arguments<'_>,
    ) {
        self.line.clear();
        match node {
            Some(n) => write!(self.line, "{now_ns:>14} n{n} {kind} {detail}"),
            None => write!(self.line, "{now_ns:>14} -- {kind} {detail}"),
        }
        .expect("writing to a String cannot fail");
        for b in self.line.bytes().chain(std::iter::once(b'\n')) {
            self.hash ^= u64::from(b);
            self.hash = self.hash.wrapping_mul(FNV_PRIME);
        }
        self.events += 1;
        if self.echo {
            eprintln!("{}", self.line);
        }
        if self.keep_lines > 0 {
            if self.tail.len() == self.keep_lines {
                self.tail.pop_front();
            }
            self.tail.push_back(self.line.clone());
        }
    }

    /// The fingerprint of everything recorded so far.
    pub fn fingerprint(&self) -> u64 {
        self.hash
    }

    /// How many events were recorded.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// The last lines recorded, oldest first.
    pub fn tail(&self) -> impl Iterator<Item = &str> {
        self.tail.iter().map(String::as_str)
    }
}

/// Record an event: `trace!(trace, now, Some(node), "kind", "fmt {}", args)`.
#[macro_export]
macro_rules! trace_event {
    ($trace:expr, $now:expr, $node:expr, $kind:expr, $($arg:tt)*) => {
        $trace.record($now, $node, $kind, format_args!($($arg)*))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_depends_on_every_byte_and_on_order() {
        let mut a = Trace::new(4);
        let mut b = Trace::new(0);
        trace_event!(a, 1, Some(0), "send", "x={}", 1);
        trace_event!(a, 2, None, "heal", "");
        trace_event!(b, 2, None, "heal", "");
        trace_event!(b, 1, Some(0), "send", "x={}", 1);
        assert_ne!(a.fingerprint(), b.fingerprint());
        let mut c = Trace::new(0);
        trace_event!(c, 1, Some(0), "send", "x={}", 1);
        trace_event!(c, 2, None, "heal", "");
        assert_eq!(a.fingerprint(), c.fingerprint());
        assert_eq!(a.tail().count(), 2);
        // Pinned value: the fingerprint must mean the same on every machine.
        assert_eq!(Trace::new(0).fingerprint(), FNV_OFFSET);
    }
}
