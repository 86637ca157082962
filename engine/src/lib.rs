//! `ryu-engine`: Ryu's embedded, single-node storage engine.
//!
//! It owns everything about one database directory on a [`ryu_io::Disk`]: snapshot
//! isolated transactions, the group-committed write-ahead log, the paged copy-on-write
//! B+tree that checkpoints write, crash recovery, and the generation pins a backup uses
//! to copy a consistent image while writes go on.
//!
//! # Shape
//!
//! - **MVCC delta over a checkpointed tree.** Commits go to an in-memory ordered map of
//!   key versions (timestamped) and to the WAL. A checkpoint merges the versions up to
//!   its timestamp into a new generation of the B+tree, copy-on-write, and the WAL
//!   below it is deleted. A snapshot reads the newest delta version at or below its
//!   timestamp, else the tree of the generation it pinned.
//! - **Directory:** `data` (two superblocks, then 4 KiB pages; see [`page`]) and
//!   `wal/NNNNNNNNNNNN.log` segments (see [`wal`]). No manifest: the newest valid
//!   superblock names the tree root and the WAL position to replay from.
//! - **Copy-on-write and pins.** A checkpoint writes only pages that no durable or
//!   pinned generation reaches, so the pages of a pinned generation stay intact; pages
//!   a checkpoint replaces are reused only when no pin on an older generation remains.
//! - **Page cache.** A bounded number of pages ([`Options`]), each kept as the bytes
//!   read from the file, validated once and searched in place (`page::Page`), evicted
//!   by CLOCK. A cached page is keyed by its full pointer (number, generation,
//!   checksum), so a page number reused by a later generation is never served for an
//!   older one.
//! - **Failure.** A failed sync poisons the engine (`Error::Poisoned` for writes until
//!   reopen). Running out of space fails the commit that needed a new WAL segment, or
//!   the checkpoint, before anything is committed. Bad bytes are `Error::Corrupted`
//!   with the file and offset.
//! - **Determinism.** No clock, no randomness, no threads: no decision here depends on
//!   time (so `open` takes no clock), and every I/O goes through the `Disk` handed in.
//!   The production binary calls the engine from many threads; the simulator from one,
//!   through the split commit API ([`WriteTxn::commit_begin`], [`Db::flush`],
//!   [`Db::is_durable`]).
//!
//! # Limits
//!
//! Keys up to [`MAX_KEY_BYTES`], values up to [`MAX_VALUE_BYTES`] (no overflow pages
//! yet), one transaction's WAL record up to the segment size ([`Options`]); beyond
//! them `Error::TooLarge`.
//!
//! # For backups
//!
//! [`Db::pin_generation`] returns a [`GenerationPin`]: while it lives, the pinned
//! checkpoint generation's pages are never overwritten and its WAL segments never
//! deleted. [`GenerationPin::files`] lists what makes it up (the superblock slot and
//! tree pages of `data`, the WAL segments from [`GenerationPin::wal_start`]);
//! [`GenerationPin::superblock_image`] is the superblock to write (the live slot may
//! already hold a newer one); [`GenerationPin::pages_written_since`] gives the pages an
//! incremental backup on top of generation `g` needs; [`wal::scan_records`] finds the
//! record boundaries to cut a copied segment at a timestamp. [`Db::apply_at`] applies
//! a batch at an externally chosen timestamp (a Raft index).
//!
//! # Example
//!
//! ```
//! use ryu_engine::{Db, Error, Options};
//! use std::path::Path;
//! use std::sync::Arc;
//!
//! let tmp = tempfile::tempdir().unwrap();
//! let disk: ryu_io::DynDisk = Arc::new(ryu_io::StdDisk::new(tmp.path()));
//! let db = Db::open(disk.clone(), Path::new("db"), Options::default()).unwrap();
//!
//! let mut w = db.begin_write();
//! w.put(b"user/1", b"ada").unwrap();
//! w.put(b"user/2", b"grace").unwrap();
//! let ts = w.commit().unwrap();
//!
//! // A snapshot sees the state as of its start, whatever commits later.
//! let snapshot = db.begin_read();
//! let mut a = db.begin_write();
//! let mut b = db.begin_write();
//! a.delete(b"user/1").unwrap();
//! b.put(b"user/1", b"ada lovelace").unwrap();
//! a.commit().unwrap();
//! assert!(matches!(b.commit(), Err(Error::Conflict { .. }))); // first committer wins
//! assert_eq!(snapshot.get(b"user/1").unwrap(), Some(b"ada".to_vec()));
//! let users: Vec<_> = snapshot.prefix(b"user/").map(|e| e.unwrap().0).collect();
//! assert_eq!(users, vec![b"user/1".to_vec(), b"user/2".to_vec()]);
//! drop(snapshot);
//!
//! // Replicated use: apply a batch at an externally chosen timestamp (a Raft index).
//! db.apply_at(ts + 10, vec![(b"user/3".to_vec(), Some(b"linus".to_vec()))]).unwrap();
//! db.checkpoint().unwrap();
//! drop(db);
//!
//! let db = Db::open(disk, Path::new("db"), Options::default()).unwrap();
//! assert_eq!(db.last_committed_ts(), ts + 10);
//! let r = db.begin_read();
//! assert_eq!(r.get(b"user/1").unwrap(), None);
//! assert_eq!(r.get(b"user/3").unwrap(), Some(b"linus".to_vec()));
//! ```

mod db;
mod error;
pub mod page;
mod store;
mod tree;
pub mod wal;

pub use db::{
    CheckpointInfo, CommitTicket, DATA_FILE, Db, FileExtent, GenerationPin, Options, PageRange,
    Range, ReadTxn, Stats, WAL_DIR, WriteTxn,
};
pub use error::{Error, Result, Ts};
pub use page::{MAX_KEY_BYTES, MAX_VALUE_BYTES, PAGE_SIZE};
pub use store::CacheStats;
pub use wal::Write;
