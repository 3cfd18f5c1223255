//! The SQLite source of kars-backup.
//!
//! [`SqliteSource`] is a [`kars_backup_core::DatabaseSource`] for one SQLite database file
//! (`/app/data/assets.db`) or a directory of them (the runbook's `/data` volume):
//!
//! - **Backup**: each database is copied with SQLite's online backup API, all pages in one step
//!   (one read transaction, so concurrent writers in other connections or processes cannot tear
//!   it), into a private temporary file, then streamed as a tar entry named like the database. The
//!   archive is what `tar czf` makes: `tar xzf asset-data-….tar.gz && sqlite3 assets.db` works. The
//!   manifest's tables, row counts and `PRAGMA quick_check` result come from that same snapshot.
//! - **Restore**: the archive is extracted safely (regular files and directories only, no absolute
//!   paths, no `..`, no links) into `.kars-restore-*` beside the target, verified there (integrity,
//!   row counts against the manifest, test queries), then swapped in with renames that keep the
//!   previous database as `<db>.pre-restore-<UTC time>` (with its own `-wal`), and rolled back
//!   exactly when something fails afterwards. Runbook archives (`tar czf X -C /data .`, no
//!   manifest) restore too.
//! - **Continuous replication** ([`replicate`]): a [`replicate::Replicator`] ships every
//!   committed transaction of a database in WAL mode to its destinations, each commit with the
//!   time it was seen; [`replicate::rebuild`] and [`replicate::restore_replica`] restore the
//!   latest state or the state at any instant.
//! - [`sample::create_kars_database`] makes a KARS database of any size for tests, the demo and
//!   benchmarks: the application's 20 tables and constraints in its rollback-journal mode, with
//!   plausible data and fake secrets.
//!
//! Errors are [`Error`], converted into [`kars_backup_core::Error`] at the trait boundary.
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> kars_backup_core::Result<()> {
//! use std::sync::Arc;
//! use kars_backup_core::testing::InMemorySink;
//! use kars_backup_core::{BackupJob, BackupOptions, NoProgress, Repository, RestoreOptions, restore};
//! use kars_backup_sqlite::SqliteSource;
//! use kars_backup_sqlite::sample::{SampleSize, create_kars_database};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let live = dir.path().join("assets.db");
//! create_kars_database(&live, SampleSize::demo())?;
//!
//! // Back up: a consistent snapshot, gzip-compressed, committed with its manifest.
//! let repo = Repository::new(Arc::new(InMemorySink::new()));
//! let job = BackupJob::new(Arc::new(SqliteSource::new(&live)), vec![repo.clone()], BackupOptions::default());
//! let report = job.run().await?;
//! assert_eq!(report.manifest.databases[0].name, "assets.db");
//! assert_eq!(report.manifest.databases[0].integrity_check.as_deref(), Some("ok"));
//!
//! // Restore into a new file: staged, verified against the manifest, swapped in.
//! let latest = repo.latest().await?.expect("one backup");
//! let copy = SqliteSource::new(dir.path().join("restored/assets.db"));
//! let restored = restore(&repo, &latest, &copy, &RestoreOptions::default(), Arc::new(NoProgress)).await?;
//! assert!(restored.verification.passed());
//! # Ok(()) }
//! ```

mod archive;
pub mod error;
mod inspect;
pub mod replicate;
mod restore;
pub mod sample;
mod snapshot;
mod source;
mod volume;

pub use error::{Error, Result};
pub use inspect::{SQLITE_HEADER, has_sqlite_header};
pub use source::{
    DEFAULT_LOCK_TIMEOUT, DEFAULT_NAME_PREFIX, ENGINE, SourceMode, SqliteSource, is_volume_manifest,
};
