//! Physical restores of PostgreSQL clusters from the destinations a command reads: the base
//! backup and WAL replay of [`kars_backup_postgres::physical`], with the reading's keys.

use kars_backup_core::DynProgress;
use kars_backup_postgres::physical::{
    PhysicalRestoreOptions, PhysicalRestoreReport, fetch_wal_command, pick_base, restore_to_instant,
};

use crate::error::{Error, Result};
use crate::restore::Reading;
use crate::wal::{WalCheck, check_wal};

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

/// Verifies a physical backup as [`restore_physical`] restores it, into a scratch data
/// directory that is removed afterwards: a new directory inside `options.pgdata` when it is
/// set, else inside the system's temporary directory. Archiving stays off.
///
/// First the WAL chain of every destination read ([`check_chains`]): a segment missing on the
/// way from any retained base backup to the newest archived one fails the verification,
/// naming it, before anything is restored.
///
/// # Errors
/// A broken WAL chain ([`kars_backup_core::Error::VerificationFailed`]); as
/// [`restore_physical`]; a scratch directory that cannot be made.
pub async fn verify_physical(
    reading: &Reading,
    options: &PhysicalRestoreOptions,
    progress: DynProgress,
) -> Result<PhysicalRestoreReport> {
    let problems: Vec<String> = check_chains(reading)
        .await?
        .iter()
        .flat_map(|c| {
            c.problems()
                .into_iter()
                .map(move |p| format!("{}: {p}", c.destination))
        })
        .collect();
    if !problems.is_empty() {
        return Err(Error::Core(kars_backup_core::Error::VerificationFailed(
            format!("the WAL chain is broken: {}", problems.join("; ")),
        )));
    }
    let parent = if options.pgdata.as_os_str().is_empty() {
        std::env::temp_dir()
    } else {
        options.pgdata.clone()
    };
    let dir = tempfile::Builder::new()
        .prefix("kars-verify-physical-")
        .tempdir_in(&parent)
        .map_err(|e| kars_backup_core::Error::io("create a scratch directory in", &parent, e))?;
    // The cluster's OS user (run as root: another one) must reach the data directory inside.
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711));
    }
    let mut scratch = options.clone();
    scratch.pgdata = dir.path().join("pgdata");
    scratch.keep_archiving = false;
    let report = restore_physical(reading, &scratch, progress).await;
    drop(dir);
    report
}

/// The WAL archive of every destination `reading` reads, checked against its base backups
/// ([`check_wal`]; the reading's keys open encrypted history files). Destinations without WAL
/// are left out.
///
/// # Errors
/// A destination that cannot be opened or listed.
pub async fn check_chains(reading: &Reading) -> Result<Vec<WalCheck>> {
    let mut checks = Vec::new();
    for origin in reading.origins()? {
        let check = check_wal(&origin.repo, origin.repo.decryptor().cloned()).await?;
        if !check.is_empty() {
            checks.push(check);
        }
    }
    Ok(checks)
}
