//! `ryu-server`: the production shell around the deterministic node.
//!
//! Everything here touches the real world (sockets, threads, the system clock, the
//! OS random source); everything it drives (`ryu-node` and below) does not. The pure
//! codecs (`resp`, `frame`, `wire`) are separate modules so they can be fuzzed and
//! tested without a runtime.

pub mod cli;
pub mod config;
pub mod frame;
pub mod resp;
pub mod server;
pub mod wire;
