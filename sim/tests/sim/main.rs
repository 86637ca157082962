//! The simulator's own tests: its crash semantics and network faults, pinned.
//! (One integration-test binary per crate keeps link times down.)

mod crash_semantics;
mod network;
