//! `ryu-io`: the only door between Ryu's deterministic core and the world.
//!
//! Every core crate (engine, raft, backup, the node state machine, the simulator's
//! scenarios) reaches the disk and the clock only through the traits defined here, and
//! randomness only through a seeded RNG it is handed (see [`rng`]). The production
//! binary hands them [`StdDisk`] and [`SystemClock`]; the simulator hands them its
//! `SimDisk` and a virtual clock, so that a whole cluster, crashes and lying disks
//! included, replays from one seed.
//!
//! The disk surface is deliberately narrow (in the manner of redb's
//! `StorageBackend`): positional reads and writes, `sync_data`, `set_len`, `len`, and a
//! handful of namespace operations. Anything richer is built above it, once, and is then
//! exercised by the simulator.
//!
//! ```
//! use ryu_io::{Disk, StdDisk};
//! use std::path::Path;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let disk = StdDisk::new(dir.path());
//! disk.create_dir_all(Path::new("db")).unwrap();
//! let file = disk.create(Path::new("db/data")).unwrap();
//! file.write_at(0, b"hello").unwrap();
//! file.sync_data().unwrap();
//! disk.sync_dir(Path::new("db")).unwrap();
//! let mut buf = [0u8; 5];
//! file.read_at(0, &mut buf).unwrap();
//! assert_eq!(&buf, b"hello");
//! assert_eq!(disk.list(Path::new("db")).unwrap(), vec!["data".to_string()]);
//! ```

mod clock;
mod disk;
mod error;
mod priority;
pub mod rng;
mod std_disk;

pub use clock::{Clock, ManualClock, SystemClock};
pub use disk::{Disk, DynDisk, DynFile, File, check_relative, create_dir_all_synced};
pub use error::{IoError, IoResult};
pub use priority::{set_thread_io_idle, set_thread_nice};
pub use std_disk::StdDisk;
