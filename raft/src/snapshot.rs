//! InstallSnapshot (§7), streamed in chunks and resumable (thesis §5.3).
//!
//! The payload is opaque bytes the application produces (a backup) and consumes
//! (a restore); the core only moves it. The exchange, for a follower `F` whose
//! next index the leader `L` has compacted away:
//!
//! 1. `L` picks the storage's newest snapshot and sends an offer: a chunk at offset
//!    0 with no data.
//! 2. `F` answers `SnapshotChunkResp { next_offset }`: the bytes of this snapshot
//!    (identified by sender, index and term) it already holds durably, or 0.
//! 3. `L` emits a `SnapshotRequest` in `Ready`; its application reads the payload
//!    from that offset and hands the chunk back (`RawNode::send_snapshot_chunk`),
//!    which sends it to `F`.
//! 4. `F` hands each in-order chunk to its application in `Ready` (to write
//!    durably) and acknowledges the new offset only after that write. Steps 3-4
//!    repeat until a chunk has `done`.
//! 5. On `done`, `F` resets its log to the snapshot (`Ready::snapshot`, for the
//!    application to install from the staged payload) and answers with an ordinary
//!    append response, after which `L` replicates entries again.
//!
//! A lost chunk or acknowledgement stalls the exchange; after a few heartbeat
//! rounds without progress the leader sends the offer again and `F`'s answer
//! resumes the transfer at the acknowledged offset, not at zero. If `F` itself
//! restarts, its application reports the bytes it staged durably through
//! `RawNode::resume_snapshot_receive`, and the same holds.
//!
//! The application must serve identical bytes for one snapshot identity (sender,
//! index, term) for as long as it offers it: that is what makes resuming sound.
//! A `SnapshotRequest` may go stale before it is served (the leader re-offered,
//! or the follower moved on); `send_snapshot_chunk` then returns
//! `StaleSnapshotChunk`, which the application can ignore.

use crate::error::{Error, StorageError};
use crate::progress::ProgressState;
use crate::raft::{IncomingSnapshot, Raft};
use crate::storage::Storage;
use crate::tracker::TrackerConfig;
use crate::types::{
    Index, MessageBody, NodeId, ReceivedChunk, Role, SnapshotChunk, SnapshotMeta, SnapshotRequest,
    Term,
};

/// Heartbeat rounds without an acknowledged chunk before the offer is resent.
const STALLED_HEARTBEATS_MAX: u32 = 3;

impl<S: Storage> Raft<S> {
    /// Leader: moves `to` into the snapshot state and offers the newest snapshot.
    pub(crate) fn start_snapshot(&mut self, to: NodeId) -> bool {
        let Some(pr) = self.tracker.progress.get(&to) else {
            return false;
        };
        if !pr.recent_active {
            // Do not start a large transfer to a node that may be down; a response
            // from it will bring us back here.
            return false;
        }
        let meta = match self.log.storage.snapshot_meta() {
            Ok(meta) => meta,
            Err(StorageError::SnapshotTemporarilyUnavailable) => return false,
            Err(e) => panic!("snapshot meta unavailable: {e}"),
        };
        assert!(
            meta.index + 1 >= self.log.first_index(),
            "snapshot older than the log"
        );
        assert!(meta.index > 0, "compacted log without a snapshot");
        let pr = self.tracker.progress.get_mut(&to).expect("checked above");
        pr.become_snapshot(meta);
        self.send_snapshot_offer(to);
        true
    }

    fn send_snapshot_offer(&mut self, to: NodeId) {
        let pr = self.tracker.progress.get_mut(&to).expect("progress");
        let send = pr.snapshot.as_mut().expect("snapshot state");
        send.requested = None;
        send.stalled_heartbeats = 0;
        let chunk = SnapshotChunk {
            meta: send.meta.clone(),
            offset: 0,
            data: Vec::new(),
            done: false,
        };
        self.send(self.message(to, MessageBody::SnapshotChunk(chunk)));
    }

    /// Leader, every heartbeat round: resend offers of transfers that stalled.
    pub(crate) fn retry_stalled_snapshots(&mut self) {
        let mut stalled = Vec::new();
        for (id, pr) in self.tracker.progress.iter_mut() {
            if let Some(send) = pr.snapshot.as_mut() {
                send.stalled_heartbeats += 1;
                if send.stalled_heartbeats >= STALLED_HEARTBEATS_MAX {
                    stalled.push(*id);
                }
            }
        }
        for id in stalled {
            self.send_snapshot_offer(id);
        }
    }

    pub(crate) fn handle_snapshot_chunk_resp(
        &mut self,
        from: NodeId,
        index: Index,
        term: Term,
        next_offset: u64,
    ) {
        let Some(pr) = self.tracker.progress.get_mut(&from) else {
            return;
        };
        let Some(send) = pr.snapshot.as_mut() else {
            return;
        };
        if send.meta.index != index || send.meta.term != term {
            return; // An answer about an earlier transfer.
        }
        if send.requested == Some(next_offset) {
            return; // Duplicate: that chunk is already requested.
        }
        send.requested = Some(next_offset);
        send.stalled_heartbeats = 0;
        let request = SnapshotRequest {
            to: from,
            meta: send.meta.clone(),
            offset: next_offset,
            max_bytes: self.max_chunk_bytes,
        };
        self.snapshot_requests.push(request);
    }

    /// Leader: the application supplies the chunk a `SnapshotRequest` asked for.
    pub fn send_snapshot_chunk(&mut self, to: NodeId, chunk: SnapshotChunk) -> Result<(), Error> {
        if self.role != Role::Leader {
            return Err(Error::StaleSnapshotChunk);
        }
        let Some(pr) = self.tracker.progress.get(&to) else {
            return Err(Error::StaleSnapshotChunk);
        };
        let Some(send) = pr.snapshot.as_ref() else {
            return Err(Error::StaleSnapshotChunk);
        };
        if send.meta != chunk.meta || send.requested != Some(chunk.offset) {
            return Err(Error::StaleSnapshotChunk);
        }
        assert!(
            chunk.done || !chunk.data.is_empty(),
            "empty chunk that is not the last"
        );
        self.send(self.message(to, MessageBody::SnapshotChunk(chunk)));
        Ok(())
    }

    /// Leader: the application cannot serve the snapshot being sent to `to` (for
    /// example it was replaced); fall back to probing, which picks a new one.
    pub fn abort_snapshot(&mut self, to: NodeId) {
        if let Some(pr) = self.tracker.progress.get_mut(&to)
            && pr.state == ProgressState::Snapshot
        {
            pr.become_probe();
        }
    }

    /// Follower: one chunk (or an offer) from the leader.
    pub(crate) fn handle_snapshot_chunk(&mut self, from: NodeId, chunk: SnapshotChunk) {
        let meta = chunk.meta.clone();
        if meta.index <= self.log.committed {
            // We already have everything it contains.
            let body = MessageBody::AppendResp {
                index: self.log.committed,
                reject: None,
            };
            self.send(self.message(from, body));
            return;
        }
        let same = self.incoming_snapshot.as_ref().is_some_and(|s| {
            s.from == from && s.meta.index == meta.index && s.meta.term == meta.term
        });
        if !same {
            if chunk.offset != 0 {
                self.reply_chunk(from, &meta, 0);
                return;
            }
            self.incoming_snapshot = Some(IncomingSnapshot {
                from,
                meta: meta.clone(),
                received: 0,
            });
        }
        let incoming = self.incoming_snapshot.as_mut().expect("set above");
        if chunk.offset != incoming.received {
            // An offer, a duplicate or a chunk after a gap: say where we are.
            let received = incoming.received;
            self.reply_chunk(from, &meta, received);
            return;
        }
        incoming.received += chunk.data.len() as u64;
        let received = incoming.received;
        let done = chunk.done;
        if !chunk.data.is_empty() || done {
            self.received_chunks.push(ReceivedChunk { from, chunk });
        }
        if !done {
            self.reply_chunk(from, &meta, received);
            return;
        }
        self.incoming_snapshot = None;
        self.finish_snapshot(from, meta);
    }

    /// The last chunk arrived: install, and answer like an append so the leader
    /// resumes replication after the snapshot.
    fn finish_snapshot(&mut self, from: NodeId, meta: SnapshotMeta) {
        let installed = self.restore(meta);
        let index = if installed {
            self.log.last_index()
        } else {
            self.log.committed
        };
        let body = MessageBody::AppendResp {
            index,
            reject: None,
        };
        self.send(self.message(from, body));
    }

    fn reply_chunk(&mut self, to: NodeId, meta: &SnapshotMeta, next_offset: u64) {
        let body = MessageBody::SnapshotChunkResp {
            index: meta.index,
            term: meta.term,
            next_offset,
        };
        self.send(self.message(to, body));
    }

    /// Follower: resets the log to a received snapshot. Returns false if the
    /// snapshot brought nothing new. A snapshot whose membership lacks this node is
    /// still installed: a node being added receives a snapshot taken before the
    /// change that adds it, and learns of its membership from the entries after.
    pub(crate) fn restore(&mut self, meta: SnapshotMeta) -> bool {
        assert_eq!(
            self.role,
            Role::Follower,
            "only followers install snapshots"
        );
        if meta.index <= self.log.committed {
            return false;
        }
        if self.log.match_term(meta.index, meta.term) {
            // Our log already holds the snapshot's last entry, so by Log Matching
            // everything before it: just learn that it is committed.
            self.log.commit_to(meta.index);
            return false;
        }
        let config = TrackerConfig::from_conf_state(&meta.conf_state);
        self.log.restore(meta);
        self.tracker.apply_config(config, self.log.last_index() + 1);
        true
    }
}
