//! Continuous replication of an SQLite database in WAL mode, and restores to any instant.

pub mod format;
pub mod keys;
pub mod wal;
