//! The engine's integration tests, one binary: API behaviour, the model-based snapshot
//! isolation proptest, and failure behaviour. The simulated crash sweep is a scenario
//! (`engine-crash` and its variants in `ryu-scenarios`), so the CLI can sweep and
//! replay its seeds; `cargo test -p ryu-scenarios` runs hundreds of them.

mod basics;
mod common;
mod failures;
mod model;
