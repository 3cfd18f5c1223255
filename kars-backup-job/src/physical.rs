//! Physical restores of PostgreSQL clusters from the destinations a command reads: the base
//! backup and WAL replay of [`kars_backup_postgres::physical`], with the reading's keys.

use kars_backup_core::DynProgress;
use kars_backup_postgres::physical::{
    PhysicalRestoreOptions, PhysicalRestoreReport, fetch_wal_command, pick_base, restore_to_instant,
};

use crate::error::{Error, Result};
use crate::restore::Reading;

/// Restores the cluster into a new data directory as [`restore_to_instant`] does, from the
/// first of the reading's destinations that holds a fitting base backup (its keys decrypt
/// it). An empty `options.restore_command` fetches WAL from that destination's archive
/// ([`fetch_wal_command`]).
///
/// # Errors
/// No destination; none with a base backup for the target (the first one's reason); the
/// restore's errors.
pub async fn restore_physical(
    reading: &Reading,
    options: &PhysicalRestoreOptions,
    progress: DynProgress,
) -> Result<PhysicalRestoreReport> {
    let origins = reading.origins()?;
    if origins.is_empty() {
        return Err(Error::usage("a physical restore needs --from DEST"));
    }
    let mut first_reason = None;
    for (origin, url) in origins.iter().zip(&reading.from) {
        let listing = origin.repo.list().await?;
        if let Err(e) = pick_base(
            listing.entries.iter(),
            options.target,
            options.system_identifier.as_deref(),
        ) {
            first_reason.get_or_insert(e);
            continue;
        }
        let mut options = options.clone();
        if options.restore_command.trim().is_empty() {
            options.restore_command = fetch_wal_command(url);
        }
        return Ok(restore_to_instant(&origin.repo, &options, progress).await?);
    }
    let reason = first_reason.expect("at least one origin was tried");
    Err(Error::Core(reason.into_core("the physical restore")))
}
