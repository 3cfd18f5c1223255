//! [`archive_wal`]: what PostgreSQL's `archive_command` runs: the file stored at every
//! destination now ([`store`]), or queued in the asynchronous spool ([`spool_wal`]).

use std::path::Path;

use kars_backup_core::{DynBackupSink, Error, Result};

use super::archive::{ArchiveOptions, ArchiveReport, store, wal_file_name};
use super::spool::spool_wal;

/// Stores one WAL file at every destination: a segment, `.partial`, `.history` or `.backup`
/// file, named as PostgreSQL names it (`path`'s file name).
///
/// The file is read once: hashed (its SHA-256 is part of its key) while it is compressed and
/// encrypted into a spool (in memory up to 8 MiB, a temporary file beyond, whatever the file's
/// size), while the destinations are asked what they hold under its name; then the spool is
/// uploaded to every destination that does not hold it. It returns once every destination has
/// completed its upload (durable: the local sink fsyncs, object stores acknowledge). A
/// destination that holds the same file already is left alone.
///
/// With [`ArchiveOptions::spool`] the file is queued in a local spool instead (see
/// [`SpoolOptions`]).
///
/// # Errors
/// [`Error::PlaintextRefused`] without an encryptor when a destination is off-site and
/// [`ArchiveOptions::plaintext`] does not allow it (before anything is read);
/// [`Error::InvalidInput`] for a file that is not a WAL file or whose cluster cannot be told;
/// [`Error::VerificationFailed`] when a destination holds the same name with other content;
/// storage errors of any destination (the uploads are then aborted: nothing is left under the
/// key).
pub async fn archive_wal(
    sinks: &[DynBackupSink],
    path: &Path,
    options: &ArchiveOptions,
) -> Result<ArchiveReport> {
    let wal = wal_file_name(path)?;
    if sinks.is_empty() {
        return Err(Error::InvalidInput("no destination given".into()));
    }
    let placements: Vec<_> = sinks
        .iter()
        .map(|s| (s.describe(), s.placement()))
        .collect();
    options
        .plaintext
        .check_placements(&wal.name, options.encryptor.is_some(), &placements)?;
    if let Some(spool) = &options.spool {
        return spool_wal(sinks, path, wal, spool, options).await;
    }
    store(sinks, path, wal, options).await
}
