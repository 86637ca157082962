//! ryu-node
