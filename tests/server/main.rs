//! The root package's integration tests: real `ryu` processes on real sockets, disks
//! and clocks. Each test starts its own nodes (fresh ports, temp directories, `--tick-ms
//! 50`), kills them on drop even when it fails, and prints the tail of every node's log
//! when an assertion fails.
//!
//! - [`failover`]: a 3-node cluster loses its leader to SIGKILL under concurrent
//!   clients; the recorded history must be linearizable.
//! - [`backup`]: a coordinated cluster backup under write load restores, on a new
//!   cluster, to exactly the state at its barrier.
//! - [`garbage`]: bytes that are not RESP on the client port, and not the peer
//!   protocol on the peer port, are refused and the node keeps serving.
//! - [`operations`]: what an operator does through the `ryu` CLI: membership changes
//!   (add, remove, add-learner; refused without a secret), offline backups (create,
//!   list, verify, prune, restore), online backups sent to a follower, `BACKUP
//!   STATUS`, and read-only `MULTI` blocks that read one snapshot.
//! - [`redis_compat`]: what redis-cli users rely on (SET options, INCR, MSET/MGET, DEL
//!   and EXISTS counts, SCAN, MULTI/EXEC, WATCH, AUTH) behaves as in Redis.

// This test drives real processes, sockets, threads, clocks and files: the determinism
// ban of clippy.toml is for the core crates, not for it.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod backup;
mod failover;
mod garbage;
mod harness;
mod operations;
mod redis_compat;
