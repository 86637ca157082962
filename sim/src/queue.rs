//! The event queue: events ordered by (virtual time, sequence number).
//!
//! The sequence number breaks ties in insertion order, so two events scheduled for the
//! same nanosecond always run in the same order: no hash, no pointer, no thread decides.

use std::collections::BTreeMap;

/// A time-ordered queue of events of type `E`.
#[derive(Debug)]
pub struct EventQueue<E> {
    events: BTreeMap<(u64, u64), E>,
    next_seq: u64,
    now_ns: u64,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        EventQueue {
            events: BTreeMap::new(),
            next_seq: 0,
            now_ns: 0,
        }
    }
}

impl<E> EventQueue<E> {
    /// An empty queue at time zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current virtual time: the time of the last event popped.
    pub fn now_ns(&self) -> u64 {
        self.now_ns
    }

    /// Schedule `event` at absolute time `at_ns` (not before now).
    pub fn schedule_at(&mut self, at_ns: u64, event: E) {
        assert!(
            at_ns >= self.now_ns,
            "event scheduled in the past: {at_ns} < {}",
            self.now_ns
        );
        let seq = self.next_seq;
        self.next_seq += 1;
        let previous = self.events.insert((at_ns, seq), event);
        assert!(previous.is_none(), "sequence numbers are unique");
    }

    /// Schedule `event` `delay_ns` after now.
    pub fn schedule_in(&mut self, delay_ns: u64, event: E) {
        self.schedule_at(self.now_ns.saturating_add(delay_ns), event);
    }

    /// Pop the earliest event, advancing time to it.
    pub fn pop(&mut self) -> Option<(u64, E)> {
        let ((at_ns, _seq), event) = self.events.pop_first()?;
        assert!(at_ns >= self.now_ns, "time never moves backwards");
        self.now_ns = at_ns;
        Some((at_ns, event))
    }

    /// Advance time to `now_ns` without popping (the driver handled something that
    /// lives outside this queue, such as a network delivery). No pending event may be
    /// earlier.
    pub fn advance_to(&mut self, now_ns: u64) {
        assert!(now_ns >= self.now_ns, "time never moves backwards");
        assert!(
            self.peek_time().is_none_or(|t| t >= now_ns),
            "advance_to skips a pending event"
        );
        self.now_ns = now_ns;
    }

    /// Time of the earliest pending event.
    pub fn peek_time(&self) -> Option<u64> {
        self.events.keys().next().map(|&(t, _)| t)
    }

    /// Number of pending events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// True when nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Drop every pending event for which `keep` returns false.
    pub fn retain(&mut self, mut keep: impl FnMut(&E) -> bool) {
        self.events.retain(|_, e| keep(e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_by_time_then_insertion() {
        let mut q = EventQueue::new();
        q.schedule_at(5, "b");
        q.schedule_at(1, "a");
        q.schedule_at(5, "c");
        assert_eq!(q.pop(), Some((1, "a")));
        assert_eq!(q.pop(), Some((5, "b")));
        assert_eq!(q.pop(), Some((5, "c")));
        assert_eq!(q.pop(), None);
        assert_eq!(q.now_ns(), 5);
    }

    #[test]
    #[should_panic(expected = "in the past")]
    fn scheduling_in_the_past_is_a_bug() {
        let mut q = EventQueue::new();
        q.schedule_at(5, ());
        q.pop();
        q.schedule_at(4, ());
    }
}
