//! [`copy_backup`]: copies a committed backup from one repository to another; the operation
//! itself is core's [`Repository::copy_to`].

use kars_backup_core::{BackupEntry, Repository, Result};

pub use kars_backup_core::copy::{CopyOptions, CopyReport};

/// Copies a committed backup: `from.copy_to(entry, to, options)` ([`Repository::copy_to`]), the
/// archive first, streamed and checksum-verified against the manifest while copying, then the
/// manifest last, with the same commit protocol as a backup (so an interrupted copy is never
/// listed as a backup at the destination).
///
/// # Errors
/// As [`Repository::copy_to`]: [`kars_backup_core::Error::InvalidInput`] for a backup that is
/// not committed; [`kars_backup_core::Error::PlaintextRefused`] (before anything is read) for an
/// unencrypted backup to an off-site destination unless `options.plaintext` allows it;
/// [`kars_backup_core::Error::ChecksumMismatch`] when the source's bytes differ from its
/// manifest (nothing is committed at the destination); the sinks' errors.
pub async fn copy_backup(
    from: &Repository,
    entry: &BackupEntry,
    to: &Repository,
    options: &CopyOptions,
) -> Result<CopyReport> {
    from.copy_to(entry, to, options).await
}
