//! The PostgreSQL source of kars-backup.
//!
//! [`PostgresSource`] is a [`kars_backup_core::DatabaseSource`] for one PostgreSQL database,
//! reached by a `postgres://` URL (or `DATABASE_URL`):
//!
//! - **Backup** with `pg_dump`: plain SQL (the runbook's default; the pipeline gzips it into
//!   `kars-postgres-YYYYmmdd-HHMMSS.sql.gz`), custom format (`.dump`, stored as is), or a parallel
//!   directory dump (`--jobs N`) packed into a tar (`.dir.tar`). A snapshot exported over
//!   tokio-postgres is handed to `pg_dump --snapshot`, and the manifest's tables, exact row counts,
//!   database size and server version are read in that same snapshot. `pg_dump`'s major version
//!   is checked against the server's before anything starts.
//! - **Restore**: a new staging database is loaded in parallel (one connection per CPU, or
//!   `--jobs`): the plain SQL of the dump (or `pg_restore --file=-` of an archive) is cut into
//!   pre-data, per-table `COPY … FREEZE` blocks loaded side by side, and indexes built (and
//!   amcheck'd) as soon as their table is in; `--jobs 1`, in-place restores and `--table` use
//!   `psql --single-transaction -v ON_ERROR_STOP=1` or `pg_restore` (`--jobs`, `--table`,
//!   `--clean --if-exists`). [`RestoreMode::Safe`] (default)
//!   loads a new staging database, verifies it and renames it into place, keeping the previous
//!   database as `<db>_pre_restore_<time>` and renaming it back on any failure;
//!   [`RestoreMode::InPlace`] replaces the live database's schemas in one transaction, as the
//!   runbook does. The runbook's own files (`pg_dump | gzip`, `pg_dump -Fc`) restore too.
//! - **The WAL archive** ([`wal`]): `archive_command` and `restore_command` for continuous
//!   archiving and point-in-time recovery, streaming with `pg_receivewal`, the chain's windows
//!   and gaps per cluster and timeline.
//! - **Physical** ([`physical`]): base backups of the whole cluster with `pg_basebackup`
//!   ([`physical::PhysicalSource`]) and restores to any instant into a new data directory with
//!   the archived WAL ([`physical::restore_to_instant`]), verified while replay is paused at the
//!   target, then promoted.
//! - Passwords reach the client programs only through `PGPASSWORD`; URLs are redacted in
//!   descriptions, manifests, errors and logs.
//!
//! | feature | what it adds |
//! |---|---|
//! | `testing` | [`testing::TestCluster`]: a throwaway PostgreSQL cluster for tests, and a rich fixture schema |
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> kars_backup_core::Result<()> {
//! use std::sync::Arc;
//! use kars_backup_core::testing::InMemorySink;
//! use kars_backup_core::{BackupJob, BackupOptions, NoProgress, Repository, RestoreOptions, restore};
//! use kars_backup_postgres::{DumpFormat, PostgresSource};
//!
//! let source = PostgresSource::from_url("postgres://kars@127.0.0.1/assets")?.with_format(DumpFormat::Custom);
//! let repo = Repository::new(Arc::new(InMemorySink::new()));
//! let report = BackupJob::new(Arc::new(source), vec![repo.clone()], BackupOptions::default()).run().await?;
//! println!("{} tables", report.manifest.databases[0].tables.len());
//!
//! let latest = repo.latest().await?.expect("one backup");
//! let copy = PostgresSource::from_url("postgres://kars@127.0.0.1/assets_copy")?;
//! restore(&repo, &latest, &copy, &RestoreOptions::default(), Arc::new(NoProgress)).await?;
//! # Ok(()) }
//! ```

mod amcheck;
mod conn;
mod database;
mod dump;
pub mod error;
mod freeze;
mod loaded;
mod metadata;
mod options;
pub mod physical;
mod restore;
mod sessions;
mod source;
#[cfg(feature = "testing")]
pub mod testing;
mod tools;
mod verify;
pub mod wal;

pub use conn::{ConnInfo, redact_url};
pub use error::{Error, Result};
pub use options::{DumpFormat, DumpOptions, PgRestoreOptions, RestoreMode};
pub use source::{DEFAULT_NAME_PREFIX, ENGINE, PostgresSource};
