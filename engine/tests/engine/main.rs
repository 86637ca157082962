//! The engine's integration tests, one binary: API behaviour, the model-based snapshot
//! isolation proptest, the simulated crash sweep, and failure behaviour.

mod basics;
mod common;
mod crash;
mod failures;
mod model;
