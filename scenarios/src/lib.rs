//! ryu-scenarios
