//! Restore: the payload (plain SQL, custom archive, or a tar of a directory dump) is loaded with
//! `psql` or `pg_restore`, either into a new staging database that is verified and swapped in
//! with renames (safe mode), or into the live database in one transaction (in-place mode).
//!
//! - [`payload`]: what the payload is, fed to a program or spooled to a file.
//! - [`load`]: `psql`/`pg_restore` and their options; [`parallel`]: a plain dump loaded over
//!   several connections into a new staging database.
//! - [`admin`]: databases as a whole (exists, free names, create, rename in one transaction).
//! - [`safe`]: the staging database, verified and renamed into place.
//! - [`in_place`]: the runbook's way, into the live database in one transaction.

use kars_backup_core::{IntegrityLevel, PayloadReader, StageContext, StagedRestore};

use crate::database::Database;
use crate::error::Result;
use crate::options::{PgRestoreOptions, RestoreMode};

mod admin;
mod in_place;
mod load;
mod parallel;
mod payload;
mod safe;

pub(crate) use admin::{admin_connect, database_exists};
use in_place::stage_in_place;
use safe::stage_safe;

/// Stages a restore of `payload` into `db` as `options.mode` says; `checks` is the integrity
/// level the verification will use (a parallel load checks indexes early at it).
pub(crate) async fn stage(
    db: &Database,
    options: &PgRestoreOptions,
    checks: Option<IntegrityLevel>,
    payload: PayloadReader,
    context: &StageContext,
) -> Result<Box<dyn StagedRestore>> {
    match options.mode {
        RestoreMode::Safe => Ok(Box::new(
            stage_safe(db, options, checks, payload, context).await?,
        )),
        RestoreMode::InPlace => Ok(Box::new(
            stage_in_place(db, options, payload, context).await?,
        )),
    }
}
