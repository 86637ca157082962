//! Integration tests of `ryu-raft`: one test binary, organised by theme.
//!
//! - `cluster`: the in-process cluster harness shared by every test.
//! - `interaction`: scripted scenarios in `testdata/*.txt` (REWRITE=1 to update).
//! - `paper`: scenarios from the Raft paper, citing the sections they check.
//! - `features`: flow control, snapshots, reads, transfer, membership.
//! - `random`: seeded random networks checked for the safety properties.
//! - `disk_log`: the durable log over `SimDisk`: formats, recovery, crash sweep.

mod cluster;
mod disk_log;
mod features;
mod interaction;
mod paper;
mod random;
