//! ReadIndex (thesis §6.4): a leader serves a linearizable read at its commit index
//! once a quorum confirms, by answering a heartbeat sent after the read arrived,
//! that it was still the leader when the read arrived.
//!
//! Requests queue in arrival order; a quorum acknowledging request `k` confirms
//! every request before `k` too (they were all in flight before its heartbeat).

use std::collections::{BTreeMap, BTreeSet};

use crate::types::{Index, NodeId};

#[derive(Clone, Debug)]
pub struct ReadRequest {
    /// Who asked: the leader itself, or a follower that forwarded it.
    pub from: NodeId,
    pub context: Vec<u8>,
    /// Commit index when the request arrived: the read is served at this index.
    pub index: Index,
    pub acks: BTreeSet<NodeId>,
}

#[derive(Clone, Debug, Default)]
pub struct ReadOnly {
    pending: BTreeMap<Vec<u8>, ReadRequest>,
    queue: Vec<Vec<u8>>,
}

impl ReadOnly {
    /// Queues a request. Duplicate contexts are ignored (the first one wins).
    pub fn add(&mut self, from: NodeId, context: Vec<u8>, index: Index, self_id: NodeId) {
        if self.pending.contains_key(&context) {
            return;
        }
        let mut acks = BTreeSet::new();
        acks.insert(self_id);
        self.queue.push(context.clone());
        self.pending.insert(
            context.clone(),
            ReadRequest {
                from,
                context,
                index,
                acks,
            },
        );
        assert_eq!(self.queue.len(), self.pending.len());
    }

    /// Records that `from` acknowledged the heartbeat carrying `context`; returns
    /// the acknowledgers so far, or `None` for an unknown context.
    pub fn recv_ack(&mut self, from: NodeId, context: &[u8]) -> Option<&BTreeSet<NodeId>> {
        let req = self.pending.get_mut(context)?;
        req.acks.insert(from);
        Some(&req.acks)
    }

    /// Removes and returns every request up to and including `context`.
    pub fn advance(&mut self, context: &[u8]) -> Vec<ReadRequest> {
        let Some(pos) = self.queue.iter().position(|c| c == context) else {
            return Vec::new();
        };
        let done: Vec<Vec<u8>> = self.queue.drain(..=pos).collect();
        let out: Vec<ReadRequest> = done
            .iter()
            .map(|c| self.pending.remove(c).expect("queued request pending"))
            .collect();
        assert_eq!(self.queue.len(), self.pending.len());
        out
    }

    /// The newest pending request's context, carried by the next heartbeat.
    pub fn last_pending(&self) -> Option<&Vec<u8>> {
        self.queue.last()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    #[cfg(test)]
    pub fn pending_count(&self) -> usize {
        self.queue.len()
    }

    /// Drops everything (leadership lost: the requests can never be confirmed).
    pub fn reset(&mut self) {
        self.pending.clear();
        self.queue.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_releases_earlier_requests_too() {
        let mut ro = ReadOnly::default();
        ro.add(NodeId(1), b"a".to_vec(), 5, NodeId(1));
        ro.add(NodeId(2), b"b".to_vec(), 6, NodeId(1));
        ro.add(NodeId(1), b"c".to_vec(), 7, NodeId(1));
        assert_eq!(ro.recv_ack(NodeId(2), b"b").unwrap().len(), 2);
        let done = ro.advance(b"b");
        assert_eq!(done.iter().map(|r| r.index).collect::<Vec<_>>(), vec![5, 6]);
        assert_eq!(ro.pending_count(), 1);
        assert!(ro.recv_ack(NodeId(2), b"zzz").is_none());
    }
}
