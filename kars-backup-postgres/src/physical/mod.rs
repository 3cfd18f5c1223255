//! Physical backups of a whole PostgreSQL cluster and restores to any instant.
//!
//! - [`PhysicalSource`]: a base backup with `pg_basebackup` (tar, fast checkpoint, CRC-32C
//!   backup manifest, no WAL: the WAL archive holds it), streamed through the pipeline and
//!   committed like every backup; the manifest's [`PhysicalInfo`](kars_backup_core::PhysicalInfo)
//!   says where it sits in the WAL.
//! - [`restore_to_instant`]: the newest base backup before the target, extracted into a new
//!   data directory while each file is checked against the backup's manifest, the archived WAL replayed to the instant by a scratch
//!   postmaster, verified while paused there, promoted, checked read-write and stopped, ready
//!   for `pg_ctl start`.
//! - [`wal`]: LSNs, segment names, the `recovery_target_time` format.

mod base;
mod extract;
mod manifest_check;
mod restore;
mod scratch;
mod tar_scan;
pub mod wal;

pub use base::{BASE_BACKUP_PREFIX, PhysicalSource};
pub use restore::{
    PhysicalRestoreOptions, PhysicalRestoreReport, RecoveryTarget, fetch_wal_command, pick_base,
    restore_to_instant,
};
