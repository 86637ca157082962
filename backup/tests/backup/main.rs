//! Integration tests of `ryu-backup`: one binary, one module per concern.
//!
//! The simulated sweep lives in `sim`; rerun one seed with
//! `RYU_SEED=N cargo test -p ryu-backup --test backup sim::backup_sweep -- --exact --nocapture`.

mod basics;
mod common;
mod damage;
mod periodic_sync;
mod prune;
mod sim;
