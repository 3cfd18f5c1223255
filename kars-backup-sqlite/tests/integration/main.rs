//! Integration tests of the SQLite source: real database files, a real tokio runtime, the
//! in-memory sink.

mod common;
mod conformance;
mod errors;
mod restore_safety;
mod round_trip;
mod running_app;
mod sample;
mod tar_safety;
mod volume;
