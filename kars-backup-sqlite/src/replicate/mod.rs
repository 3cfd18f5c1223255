//! Continuous replication of an SQLite database in WAL mode, and restores to any instant.
//!
//! - [`Replicator`] ships every committed transaction of a database to one or more
//!   destinations ([`kars_backup_core::DynBackupSink`]): a snapshot, then segments of page
//!   images with each commit's observed time and database checksums. A service runs it in its
//!   own tokio runtime until a cancellation token fires; [`Replicator::status`] gives the lag
//!   and position. The WAL is read directly ([`wal`]) while the replicator's own read
//!   transaction holds it (see `docs/operators/replication.md`); the stored layout is
//!   [`keys`], the encoding [`format`](mod@format). Started again, it continues the stored
//!   chain when the database still holds its end: read from the last segment, or for an
//!   encrypted chain (whose segments it cannot read) from a resume record it keeps beside the
//!   database, `<database>-kars-resume-<crc of the destinations>.json`.
//! - [`rebuild`] rebuilds the database at [`RestorePoint::Latest`] or an instant into a new
//!   file, verifying the chain; [`restore_replica`] does it through the staged, verified
//!   restore (hooks, swap, rollback) of [`kars_backup_core::restore_staged`].
//! - [`catalog`] lists what a destination holds (generations, snapshots, segments) and
//!   [`catalog::window`] sums it up from the listing alone.
//! - [`compact`](fn@compact) merges small segments into larger ones, keeping every commit's
//!   time; [`prune`](fn@prune) keeps the point-in-time window and deletes what is older.
//!
//! Operators' documentation: `docs/operators/replication.md`.

pub(crate) mod capture;
pub mod catalog;
mod compact;
pub mod format;
pub mod keys;
mod lease;
mod prune;
mod replicator;
mod resume;
mod settings;
mod upload;
pub mod wal;
mod watch;

pub use compact::{
    CompactOptions, CompactPlan, CompactReport, Compacted, compact, plan_compaction,
};
pub use lease::LeaseInfo;
pub use prune::{KeepReason, KeptKey, PrunePlan, PruneReport, plan_prune, prune};
pub use replicator::{
    ChainEnd, DestinationStatus, ReplicateOptions, ReplicationStatus, Replicator, StatusHandle,
    parse_interval,
};
mod restore;

pub use settings::ReplicationSettings;

pub use restore::{RebuildReport, ReplicaRestoreReport, RestorePoint, rebuild, restore_replica};
