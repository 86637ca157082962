//! ryu-backup
