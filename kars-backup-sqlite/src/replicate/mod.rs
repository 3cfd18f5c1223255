//! Continuous replication of an SQLite database in WAL mode, and restores to any instant.

pub(crate) mod capture;
pub mod catalog;
pub mod format;
pub mod keys;
mod lease;
mod replicator;
pub mod wal;

pub use lease::LeaseInfo;
pub use replicator::{
    DestinationStatus, ReplicateOptions, ReplicationStatus, Replicator, StatusHandle,
    parse_interval,
};
mod restore;

pub use restore::{RebuildReport, ReplicaRestoreReport, RestorePoint, rebuild, restore_replica};
