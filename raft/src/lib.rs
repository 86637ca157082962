//! ryu-raft
