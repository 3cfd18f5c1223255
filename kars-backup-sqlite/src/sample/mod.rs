//! A sample KARS database for tests, examples, the demo and benchmarks: the application's 20
//! tables ([`schema::TABLES`]) with their columns, constraints and foreign keys, as the KARS
//! backend creates them in SQLite ([`SCHEMA`]), in its journal mode (rollback journal,
//! `delete`: KARS never switches to WAL).
//!
//! The data is plausible: companies with unique names, users (the first one an `admin`, then
//! managers and employees) with fake bcrypt password hashes, MFA secrets and backup codes,
//! assets with unique serial numbers and asset tags owned by users, an audit log whose newest
//! entry is a minute old (as a running KARS has), attestation campaigns with their records,
//! passkeys, password-reset and invite tokens, and the settings rows with a fake OIDC client
//! secret, SMTP password and HubSpot token and a base64 logo. Every secret is random, never a
//! real one. The rows are pseudo-random but deterministic for a [`SampleSize`] and a "now"
//! ([`create_kars_database_at`]).

use std::path::Path;

use chrono::{DateTime, Utc};
use rusqlite::Connection;

use crate::error::{Error, Result};

mod data;
pub mod schema;
mod size;

pub use schema::SCHEMA;
pub use size::SampleSize;

/// Creates a new KARS database at `path` with `rows` rows, its newest audit-log entry a minute
/// before now (so the `kars` checks' RPO window holds for a backup taken right after).
///
/// Everything is written in one transaction with prepared statements (`synchronous=OFF` while it
/// runs), so a 300 MB database takes seconds. The database is left in rollback-journal mode, as
/// KARS leaves it.
///
/// # Errors
/// [`Error::Io`] when `path` exists already (it is never overwritten), [`Error::Sqlite`] otherwise.
pub fn create_kars_database(path: &Path, rows: SampleSize) -> Result<()> {
    create_kars_database_at(path, rows, Utc::now())
}

/// [`create_kars_database`] as if it were `now`: the same size and time give the same rows.
///
/// # Errors
/// As [`create_kars_database`].
pub fn create_kars_database_at(path: &Path, rows: SampleSize, now: DateTime<Utc>) -> Result<()> {
    if std::fs::symlink_metadata(path).is_ok() {
        return Err(Error::io(
            "create sample database",
            path,
            std::io::Error::new(std::io::ErrorKind::AlreadyExists, "the file exists already"),
        ));
    }
    let rows = SampleSize {
        companies: rows.companies.max(1),
        users: rows.users.max(1),
        assets: rows.assets.max(1),
        audit_logs: rows.audit_logs.max(1),
    };
    let sql = |e| Error::sqlite("create sample database", path, e);
    let mut conn = Connection::open(path).map_err(sql)?;
    conn.execute_batch(
        "PRAGMA journal_mode = DELETE; PRAGMA synchronous = OFF; PRAGMA foreign_keys = ON;",
    )
    .map_err(sql)?;
    let tx = conn.transaction().map_err(sql)?;
    tx.execute_batch(SCHEMA).map_err(sql)?;
    let mut rng = data::XorShift::new(0x4b41_5253);
    data::insert_all(&tx, &mut rng, &data::Clock { now }, rows).map_err(sql)?;
    tx.commit().map_err(sql)?;
    conn.execute_batch("PRAGMA synchronous = FULL;")
        .map_err(sql)?;
    conn.close().map_err(|(_, e)| sql(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_scale() {
        let small = SampleSize::demo();
        let big = SampleSize::for_bytes(300_000_000);
        assert!(big.assets > 100 * small.assets);
        assert!(small.companies >= 2 && small.users >= 5);
    }
}
