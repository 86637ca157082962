//! ryu-engine
