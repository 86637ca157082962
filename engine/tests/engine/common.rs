//! Shared helpers: opening on a `SimDisk`, reading a whole snapshot, and a disk wrapper
//! that loses power after a budget of operations.

use ryu_engine::{Db, Options};
use ryu_sim::SimDisk;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

pub use ryu_sim::PowerCut;

pub const DIR: &str = "db";

pub fn small_options() -> Options {
    Options {
        cache_pages: 64,
        wal_segment_bytes: 64 << 10,
        checkpoint_after_bytes: 0,
        sync_commits: true,
    }
}

pub fn open(disk: &SimDisk, options: &Options) -> ryu_engine::Result<Db> {
    Db::open(Arc::new(disk.clone()), Path::new(DIR), options.clone())
}

pub type State = BTreeMap<Vec<u8>, Vec<u8>>;

/// Everything visible to a fresh snapshot.
pub fn read_all(db: &Db) -> ryu_engine::Result<State> {
    let r = db.begin_read();
    r.range::<std::ops::RangeFull>(..).collect()
}
