//! Raft snapshots made of backups: log compaction, and catching up a follower that
//! is too far behind (or a new member) by streaming it a backup.
//!
//! # Making a snapshot
//!
//! Once the log holds more than `compact_after_entries` applied entries, the node
//! starts an ordinary online backup of its own engine (into `snap/` on its own disk)
//! at its applied index `A`. When the backup is final it is packed into one archive
//! file `snap/<A>.snap` (format below, synced), the backup directory is removed, and
//! only then is the Raft log compacted to `A`. So the log never forgets an entry
//! before a durable snapshot covers it; a crash in between leaves an archive the next
//! compaction replaces.
//!
//! # Sending and receiving
//!
//! The leader answers Raft's snapshot requests with byte ranges of the archive. A
//! follower stages the chunks in `recv/snap.part` (synced per chunk, so a transfer
//! survives nothing but is never trusted torn: the archive carries a crc32). When the
//! transfer is complete it unpacks the archive into `recv/unpacked/`, restores it with
//! the backup crate (which verifies every checksum) into a fresh engine directory
//! `db-<A>`, opens it, checks that it reflects entry `A`, keeps the archive as its own
//! `snap/<A>.snap` (it may lead next and have to send it), points `ENGINE` at the new
//! directory (atomic rename), and only then installs the snapshot into the Raft log. On open, an
//! engine that is ahead of the log (a crash between the two) makes the log install
//! the snapshot the engine already holds.
//!
//! # Archive format
//!
//! ```text
//! offset  size  field
//! 0       8     magic "RYUSNAP1"
//! 8       4     u32 LE file count n
//! 12      ..    n times: u32 LE path length, path (UTF-8, '/'-separated, relative to
//!               the backup directory), u64 LE size, the file's bytes
//! end-4   4     u32 LE crc32 (IEEE) of every byte before it
//! ```

use std::path::{Path, PathBuf};

use ryu_backup::{BackupId, BackupJob, BackupOptions, RestoreOptions};
use ryu_engine::Db;
use ryu_io::{Clock, DynDisk, IoError};
use ryu_raft::{Index, ReceivedChunk, SnapshotChunk, SnapshotMeta, SnapshotRequest};

use crate::backups::{Purpose, Running};
use crate::command::{APPLIED_KEY, AppliedState};
use crate::node::{DB_DIR, Node, NodeError, write_file_atomic};

/// Snapshots this node made, as archives.
pub const SNAP_DIR: &str = "snap";
/// Incoming snapshots.
pub const RECV_DIR: &str = "recv";
/// Names the engine directory in use (absent: [`DB_DIR`]).
pub const ENGINE_FILE: &str = "ENGINE";
const PART_FILE: &str = "snap.part";
const UNPACKED: &str = "unpacked";
const SNAP_ID: &str = "snapshot";
const MAGIC: &[u8; 8] = b"RYUSNAP1";

/// A clock for jobs that need none (snapshot backups record no meaningful time).
#[derive(Debug)]
pub(crate) struct NoClock;

impl Clock for NoClock {
    fn monotonic_ns(&self) -> u64 {
        0
    }
    fn wall_unix_ns(&self) -> u64 {
        0
    }
}

fn archive_name(index: Index) -> String {
    format!("{index:020}.snap")
}

fn read_file(disk: &DynDisk, path: &Path) -> Result<Vec<u8>, IoError> {
    let f = disk.open(path)?;
    let mut b = vec![0u8; f.len()? as usize];
    f.read_at(0, &mut b)?;
    Ok(b)
}

/// Every file under `dir`, as (path relative to `dir`, '/'-separated), sorted.
fn list_files(
    disk: &DynDisk,
    dir: &Path,
    prefix: &str,
    out: &mut Vec<String>,
) -> Result<(), IoError> {
    let mut names = disk.list(dir)?;
    names.sort();
    for name in names {
        let rel = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        if disk.is_dir(&dir.join(&name))? {
            list_files(disk, &dir.join(&name), &rel, out)?;
        } else {
            out.push(rel);
        }
    }
    Ok(())
}

/// Pack the backup directory `dir` into one archive (see the module doc).
pub fn pack(disk: &DynDisk, dir: &Path) -> Result<Vec<u8>, IoError> {
    let mut files = Vec::new();
    list_files(disk, dir, "", &mut files)?;
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&(files.len() as u32).to_le_bytes());
    for rel in files {
        let bytes = read_file(disk, &dir.join(&rel))?;
        out.extend_from_slice(&(rel.len() as u32).to_le_bytes());
        out.extend_from_slice(rel.as_bytes());
        out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        out.extend_from_slice(&bytes);
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Parse an archive: its files as (safe relative path, bytes). Never panics.
pub fn unpack(archive: &[u8]) -> Result<Vec<(PathBuf, Vec<u8>)>, String> {
    if archive.len() < MAGIC.len() + 8 || &archive[..8] != MAGIC {
        return Err("not a snapshot archive".into());
    }
    let (body, crc) = archive.split_at(archive.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err("snapshot archive checksum mismatch".into());
    }
    let mut at = 8;
    let mut take = |n: usize| -> Result<&[u8], String> {
        if body.len() - at < n {
            return Err(format!("snapshot archive truncated at byte {at}"));
        }
        at += n;
        Ok(&body[at - n..at])
    };
    let count = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes"));
    let mut files = Vec::new();
    for _ in 0..count {
        let len = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
        let rel = std::str::from_utf8(take(len)?).map_err(|_| "path is not UTF-8".to_string())?;
        let path = ryu_backup::safe_relative(rel).map_err(|e| e.to_string())?;
        let size = u64::from_le_bytes(take(8)?.try_into().expect("8 bytes")) as usize;
        files.push((path, take(size)?.to_vec()));
    }
    Ok(files)
}

impl Node {
    /// Start a snapshot backup if the log holds enough applied entries.
    pub(crate) fn maybe_snapshot(&mut self) {
        let every = self.options.compact_after_entries;
        let forced = self.snapshot_archive_missing;
        if (every == 0 && !forced)
            || self
                .jobs
                .iter()
                .any(|j| matches!(j.purpose, Purpose::Snapshot))
            || self.jobs_out.values().any(|j| j.is_snapshot())
        {
            return;
        }
        let first = self.raw.raft().log.first_index();
        if self.applied.index < first + every && !forced {
            return;
        }
        let dir = self.dir.join(SNAP_DIR);
        let result = (|| -> Result<(), String> {
            // A leftover of an interrupted snapshot job is dead: nothing else writes here.
            let _ = ryu_backup::break_lock(&self.disk, &dir);
            ryu_backup::remove_tree(&self.disk, &dir.join(SNAP_ID)).map_err(|e| e.to_string())?;
            self.disk
                .create_dir_all(&dir)
                .and_then(|()| self.disk.sync_dir(&self.dir))
                .map_err(|e| e.to_string())?;
            let options = BackupOptions {
                id: BackupId::new(SNAP_ID).expect("valid id"),
                ..Default::default()
            };
            let job = BackupJob::start(
                &self.db,
                self.disk.clone(),
                &dir,
                std::sync::Arc::new(NoClock),
                options,
            )
            .map_err(|e| e.to_string())?;
            let run = Running::new(
                Purpose::Snapshot,
                SNAP_ID.to_string(),
                &self.applied,
                job,
                dir.clone(),
                self.db.begin_read(),
                false,
            );
            self.jobs.push(run);
            Ok(())
        })();
        if let Err(e) = result {
            // Not fatal: the log just stays longer; the next apply tries again.
            self.last_snapshot_error = Some(e);
        }
    }

    /// A snapshot backup is final: pack it, then compact the log up to it.
    pub(crate) fn finish_snapshot(&mut self, state: AppliedState) -> Result<(), NodeError> {
        let dir = self.dir.join(SNAP_DIR);
        let archive = pack(&self.disk, &dir.join(SNAP_ID))?;
        let name = archive_name(state.index);
        write_file_atomic(&self.disk, &dir, &name, &archive)?;
        ryu_backup::remove_tree(&self.disk, &dir.join(SNAP_ID))
            .map_err(|e| NodeError::Corrupted(e.to_string()))?;
        // Applied entries are committed and durable in the log: the snapshot may
        // replace them once the engine's copy of them is durable too (without
        // `sync_commits` a crash could otherwise take the engine back below the
        // compaction point, with no log left to replay from).
        self.db.sync()?;
        let meta = SnapshotMeta {
            index: state.index,
            term: state.term,
            conf_state: state.conf.clone(),
        };
        if meta.index > self.raw.raft().log.first_index().saturating_sub(1) {
            self.raw.storage_mut().compact(meta)?;
        }
        self.remove_old_archives(state.index)?;
        self.snapshot_archive_missing = false;
        self.snapshots_made += 1;
        Ok(())
    }

    fn remove_old_archives(&mut self, keep: Index) -> Result<(), NodeError> {
        let dir = self.dir.join(SNAP_DIR);
        let keep_name = archive_name(keep);
        for name in self.disk.list(&dir)? {
            if name.ends_with(".snap") && name != keep_name {
                self.disk.remove(&dir.join(&name))?;
            }
        }
        self.disk.sync_dir(&dir)?;
        Ok(())
    }

    /// Leader: answer Raft's request for a piece of snapshot `req.meta`.
    pub(crate) fn serve_snapshot_request(&mut self, req: SnapshotRequest) {
        let path = self.dir.join(SNAP_DIR).join(archive_name(req.meta.index));
        match read_file(&self.disk, &path) {
            Ok(bytes) if req.offset == 0 && unpack(&bytes).is_err() => {
                // Our own archive is damaged (bit rot): sending it would make every
                // receiver fail forever. Stop sending and report it; the node is
                // reopened and, if it stays damaged, replaced by the operator.
                self.raw.abort_snapshot(req.to);
                self.detected_corruption = Some(format!(
                    "snapshot archive {} fails its checksum",
                    path.display()
                ));
            }
            Ok(bytes) => {
                let start = (req.offset as usize).min(bytes.len());
                let end = (start + req.max_bytes as usize).min(bytes.len());
                let chunk = SnapshotChunk {
                    meta: req.meta.clone(),
                    offset: req.offset,
                    data: bytes[start..end].to_vec(),
                    done: end == bytes.len(),
                };
                let _ = self.raw.send_snapshot_chunk(req.to, chunk);
            }
            Err(e) => {
                self.raw.abort_snapshot(req.to);
                // Only the log's current snapshot counts: an older one's archive
                // was removed on purpose, and Raft will ask for the current one.
                let current = self.raw.raft().log.first_index().saturating_sub(1);
                if e.is_not_found() && req.meta.index >= current {
                    // The log is compacted to an index whose archive is gone: Raft
                    // would ask for it forever. Make a new one at the applied index
                    // (at or above the log's snapshot index); compaction then moves
                    // the log's snapshot to it and Raft offers that instead.
                    self.snapshot_archive_missing = true;
                }
            }
        }
    }

    /// Follower: write received chunks durably before they are acknowledged.
    pub(crate) fn stage_chunks(&mut self, chunks: Vec<ReceivedChunk>) -> Result<(), NodeError> {
        if chunks.is_empty() {
            return Ok(());
        }
        let dir = self.dir.join(RECV_DIR);
        self.disk.create_dir_all(&dir)?;
        self.disk.sync_dir(&self.dir)?;
        let path = dir.join(PART_FILE);
        let f = match self.disk.open(&path) {
            Ok(f) => f,
            Err(e) if e.is_not_found() => {
                let f = self.disk.create(&path)?;
                self.disk.sync_dir(&dir)?;
                f
            }
            Err(e) => return Err(e.into()),
        };
        for rc in chunks {
            let c = rc.chunk;
            if c.offset == 0 {
                f.set_len(0)?;
            }
            f.write_at(c.offset, &c.data)?;
            f.set_len(c.offset + c.data.len() as u64)?;
        }
        f.sync_data()?;
        Ok(())
    }

    /// Follower: the whole snapshot `meta` arrived; make it this node's state.
    pub(crate) fn install_snapshot(&mut self, meta: SnapshotMeta) -> Result<(), NodeError> {
        let recv = self.dir.join(RECV_DIR);
        let archive = read_file(&self.disk, &recv.join(PART_FILE))?;
        let files = unpack(&archive).map_err(NodeError::Corrupted)?;
        let unpacked = recv.join(UNPACKED);
        ryu_backup::remove_tree(&self.disk, &unpacked)
            .map_err(|e| NodeError::Corrupted(e.to_string()))?;
        let backup = unpacked.join(SNAP_ID);
        for (rel, bytes) in &files {
            let path = backup.join(rel);
            let parent = path.parent().expect("inside the backup");
            self.disk.create_dir_all(parent)?;
            let f = self.disk.create(&path)?;
            f.write_at(0, bytes)?;
            f.sync_data()?;
        }
        self.sync_tree(&backup)?;
        // Restore verifies every file and page checksum of the backup.
        let engine_dir = format!("db-{}", meta.index);
        ryu_backup::remove_tree(&self.disk, &self.dir.join(&engine_dir))
            .map_err(|e| NodeError::Corrupted(e.to_string()))?;
        ryu_backup::restore(
            &self.disk,
            &unpacked,
            SNAP_ID,
            &self.disk,
            &self.dir.join(&engine_dir),
            &RestoreOptions::default(),
        )
        .map_err(|e| NodeError::Corrupted(format!("snapshot {}: {e}", meta.index)))?;
        let db = Db::open(
            self.disk.clone(),
            &self.dir.join(&engine_dir),
            self.options.engine.clone(),
        )?;
        let state = read_applied(&db)?.unwrap_or_default();
        if state.index != meta.index || state.term != meta.term {
            return Err(NodeError::Corrupted(format!(
                "snapshot {}/{} holds the state of entry {}/{}",
                meta.term, meta.index, state.term, state.index
            )));
        }
        // Keep the archive as this node's own snapshot before anything points at the
        // new state: once the log records snapshot `A`, this node may lead and must
        // be able to send `A` to others.
        let snap_dir = self.dir.join(SNAP_DIR);
        self.disk.create_dir_all(&snap_dir)?;
        self.disk.sync_dir(&self.dir)?;
        self.disk.rename(
            &recv.join(PART_FILE),
            &snap_dir.join(archive_name(meta.index)),
        )?;
        self.disk.sync_dir(&snap_dir)?;
        self.disk.sync_dir(&recv)?;
        // Everything running on the old engine ends here.
        self.abort_jobs("the node installed a snapshot from the leader");
        write_file_atomic(&self.disk, &self.dir, ENGINE_FILE, engine_dir.as_bytes())?;
        let old_dir = self.engine_dir.clone();
        self.db = db;
        self.engine_dir = engine_dir;
        self.raw.storage_mut().install_snapshot(meta)?;
        self.applied = state;
        self.remove_old_archives(self.applied.index)?;
        // Barriers inside the snapshot: this node must still coordinate (as a future
        // leader) and report (its part failed: it never saw the barrier's moment).
        self.load_barriers()?;
        if old_dir != self.engine_dir {
            ryu_backup::remove_tree(&self.disk, &self.dir.join(&old_dir))
                .map_err(|e| NodeError::Corrupted(e.to_string()))?;
        }
        ryu_backup::remove_tree(&self.disk, &recv)
            .map_err(|e| NodeError::Corrupted(e.to_string()))?;
        self.disk.sync_dir(&self.dir)?;
        self.snapshots_installed += 1;
        Ok(())
    }

    fn sync_tree(&self, dir: &Path) -> Result<(), IoError> {
        for name in self.disk.list(dir)? {
            let p = dir.join(&name);
            if self.disk.is_dir(&p)? {
                self.sync_tree(&p)?;
            }
        }
        self.disk.sync_dir(dir)?;
        if let Some(parent) = dir.parent() {
            self.disk.sync_dir(parent)?;
        }
        Ok(())
    }
}

/// The engine directory in use under `dir`.
pub(crate) fn engine_dir(disk: &DynDisk, dir: &Path) -> Result<String, NodeError> {
    match read_file(disk, &dir.join(ENGINE_FILE)) {
        Ok(b) => {
            let name = String::from_utf8(b)
                .map_err(|_| NodeError::Corrupted(format!("{ENGINE_FILE} is not UTF-8")))?;
            if !name.starts_with("db-") || name.contains('/') {
                return Err(NodeError::Corrupted(format!(
                    "{ENGINE_FILE} names {name:?}"
                )));
            }
            Ok(name)
        }
        Err(e) if e.is_not_found() => Ok(DB_DIR.to_string()),
        Err(e) => Err(e.into()),
    }
}

/// The applied state the engine holds (`None` for a fresh engine).
pub(crate) fn read_applied(db: &Db) -> Result<Option<AppliedState>, NodeError> {
    match db.begin_read().get(APPLIED_KEY)? {
        Some(bytes) => AppliedState::decode(&bytes)
            .map(Some)
            .map_err(|e| NodeError::Corrupted(format!("applied state: {e}"))),
        None => Ok(None),
    }
}

/// Bootstrap node `node_dir` on `disk` from one node's part of a complete cluster
/// backup (`<store>/<id>/node-<k>/<id>`), as the seed of a new cluster with id
/// `new_cluster_id` (as etcd's `snapshot restore`: the restored cluster can never
/// talk to the one it came from). Every member of the new cluster is restored from
/// the same backup, so they all start at the barrier's index with equal state and the
/// membership the backup holds; the directory must not exist or be empty.
pub fn restore_cluster_node(
    store: &DynDisk,
    part_dir: &Path,
    backup_id: &str,
    disk: &DynDisk,
    node_dir: &Path,
    new_cluster_id: u64,
) -> Result<AppliedState, NodeError> {
    let corrupt = |e: ryu_backup::Error| NodeError::Corrupted(e.to_string());
    if disk.exists(node_dir)? && !disk.list(node_dir)?.is_empty() {
        return Err(NodeError::Corrupted(format!(
            "{} is not empty: restore only into a new directory",
            node_dir.display()
        )));
    }
    ryu_io::create_dir_all_synced(&**disk, node_dir)?;
    // The new cluster id first: a node that crashes half restored can never join
    // the old cluster (its directory refuses to open without ENGINE, written last).
    write_file_atomic(
        disk,
        node_dir,
        crate::CLUSTER_FILE,
        &crate::node::encode_cluster_file(new_cluster_id),
    )?;
    let manifest = ryu_backup::verify(
        store,
        part_dir,
        backup_id,
        &ryu_backup::VerifyOptions { deep: false },
    )
    .map_err(corrupt)?;
    if !manifest.is_ok() {
        return Err(NodeError::Corrupted(format!(
            "backup does not verify: {:?}",
            manifest.problems
        )));
    }
    // The engine first, into the directory ENGINE will name.
    let staging = node_dir.join("db-restore");
    ryu_backup::restore(
        store,
        part_dir,
        backup_id,
        disk,
        &staging,
        &RestoreOptions::default(),
    )
    .map_err(corrupt)?;
    let db = Db::open(disk.clone(), &staging, ryu_engine::Options::default())?;
    let state = read_applied(&db)?
        .ok_or_else(|| NodeError::Corrupted("the backup holds no applied state".into()))?;
    drop(db);
    let engine_dir = format!("db-{}", state.index);
    disk.rename(&staging, &node_dir.join(&engine_dir))?;
    disk.sync_dir(node_dir)?;
    // Its own snapshot archive, so it can bring a lagging member up to date.
    let archive = pack(store, &part_dir.join(backup_id))?;
    let snap_dir = node_dir.join(SNAP_DIR);
    disk.create_dir_all(&snap_dir)?;
    disk.sync_dir(node_dir)?;
    write_file_atomic(disk, &snap_dir, &archive_name(state.index), &archive)?;
    // The log starts at the snapshot, in the backup's term.
    let mut log = ryu_raft::DiskLog::open(
        disk.clone(),
        &node_dir.join(crate::RAFT_DIR),
        state.conf.clone(),
        ryu_raft::DiskLogOptions::default(),
    )?;
    log.install_snapshot(SnapshotMeta {
        index: state.index,
        term: state.term,
        conf_state: state.conf.clone(),
    })?;
    log.set_hard_state(ryu_raft::HardState {
        term: state.term,
        vote: None,
        commit: state.index,
    })?;
    drop(log);
    write_file_atomic(disk, node_dir, ENGINE_FILE, engine_dir.as_bytes())?;
    Ok(state)
}
